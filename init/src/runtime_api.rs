//! The Runtime API 2018-06-01, served by init on [`RUNTIME_API_ADDR`] inside the env when
//! `EnvConfig::runtime_api` is set (LAMBDA_FACTS §1.2-1.5, §9).
//!
//! init relays between the runtime (HTTP/1.1 over loopback) and the supervisor (the control
//! socket): an invocation from the supervisor answers the runtime's pending (or next)
//! `GET /runtime/invocation/next`; the runtime's `POST .../response`, `.../error` and
//! `/runtime/init/error` go back as [`FromRuntime`] messages, their bodies as raw payload
//! datagrams, never re-encoded.
//!
//! Everything here is non-blocking and driven by init's event loop (`serve` in lib.rs). A slow,
//! silent or half-open client only ever holds its own connection's buffers, and those are
//! bounded: request head [`MAX_HEAD`], response body [`MAX_RESPONSE`], error body
//! [`MAX_ERROR_BODY`], and while [`OUT_HIGH_WATER`] bytes of answers wait unread, that
//! connection's further (pipelined) requests wait too.
//!
//! Sections: HTTP requests (pure), the invocation state (pure), answers, connections, the
//! control channel.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};
use serde::Serialize;
use serde_json::json;

use crate::extensions::{ExtError, Extensions, MAX_EXT_BODY};
use crate::protocol::ReportMetrics;
use crate::protocol::{
    FromInit, FromRuntime, InvokeHeader, ToInit, ToRuntime, CHUNK, CONTROL_FD, MAX_MESSAGE,
    MAX_RESPONSE, RUNTIME_API_ADDR,
};
use crate::telemetry::{self, Event as TelemetryEvent, Kind, Lines, Telemetry};
use crate::InitError;

/// Largest request head (request line and header fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one request head.
pub const MAX_HEADERS: usize = 64;
/// Largest body of `POST /runtime/invocation/{id}/error` and `POST /runtime/init/error`.
pub const MAX_ERROR_BODY: usize = 1024 * 1024;
/// Longest line announcing a chunk of a chunked body (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// Connections served at once; more are closed right after accept.
const MAX_CONNECTIONS: usize = 64;
/// While this many bytes of answers wait unread, the connection's next requests wait too.
pub const OUT_HIGH_WATER: usize = 1024 * 1024;
/// Largest invocation payload init accepts from the supervisor (Invoke allows 6 MB).
const MAX_EVENT: u64 = 32 * 1024 * 1024;
/// Token of the Runtime API listener; connections get the tokens above it.
pub const LISTENER: Token = Token(2);

const PREFIX: &str = "/2018-06-01/runtime/";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// HTTP requests

/// A request that breaks HTTP/1.1 framing; the connection is closed after the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("request head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("malformed request head: {0}")]
    BadHead(String),
    #[error("invalid or conflicting Content-Length")]
    BadLength,
    #[error("Transfer-Encoding other than chunked")]
    BadTransferEncoding,
    #[error("malformed chunked body: {0}")]
    BadChunk(&'static str),
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// The parts of a request head the Runtime API uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// Request target without its query.
    pub path: String,
    pub framing: Framing,
    /// The connection stays open after the answer (HTTP/1.1 without `Connection: close`;
    /// HTTP/1.0 connections are always closed).
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub content_type: Option<String>,
    /// `Lambda-Runtime-Function-Error-Type`.
    pub error_type: Option<String>,
    /// `Lambda-Runtime-Function-Response-Mode`.
    pub response_mode: Option<String>,
    /// `Lambda-Extension-Name`.
    pub ext_name: Option<String>,
    /// `Lambda-Extension-Identifier`.
    pub ext_id: Option<String>,
    /// `Lambda-Extension-Function-Error-Type`.
    pub ext_error_type: Option<String>,
}

/// Parses a request head at the start of `buf`: `None` while incomplete, else the head and its
/// length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => Ok(Some((head_of(&req)?, n))),
        Ok(httparse::Status::Complete(_)) => Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        Err(e) => Err(HttpError::BadHead(e.to_string())),
    }
}

/// Whether `buf` holds the blank line that ends a request head (so parsing is only attempted
/// once per head, not once per byte a slow client sends).
fn has_blank_line(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w == b"\n\n") || buf.windows(3).any(|w| w == b"\n\r\n")
}

fn head_of(req: &httparse::Request) -> Result<Head, HttpError> {
    let target = req.path.unwrap_or_default();
    let mut head = Head {
        method: req.method.unwrap_or_default().to_string(),
        path: target.split('?').next().unwrap_or_default().to_string(),
        framing: Framing::Length(0),
        keep_alive: req.version == Some(1),
        expect_continue: false,
        content_type: None,
        error_type: None,
        response_mode: None,
        ext_name: None,
        ext_id: None,
        ext_error_type: None,
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for field in req.headers.iter() {
        let value = String::from_utf8_lossy(field.value);
        let value = value.trim();
        let is = |name: &str| field.name.eq_ignore_ascii_case(name);
        if is("content-length") {
            let n = parse_length(value)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::BadLength);
            }
            length = Some(n);
        } else if is("transfer-encoding") {
            // Only `chunked` makes sense from a runtime; anything else cannot be delimited.
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(HttpError::BadTransferEncoding);
            }
            chunked = true;
        } else if is("connection") {
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                head.keep_alive = false;
            }
        } else if is("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if is("content-type") {
            head.content_type = non_empty(value);
        } else if is("lambda-runtime-function-error-type") {
            head.error_type = non_empty(value);
        } else if is("lambda-runtime-function-response-mode") {
            head.response_mode = non_empty(value);
        } else if is("lambda-extension-name") {
            head.ext_name = non_empty(value);
        } else if is("lambda-extension-identifier") {
            head.ext_id = non_empty(value);
        } else if is("lambda-extension-function-error-type") {
            head.ext_error_type = non_empty(value);
        }
    }
    head.framing = match (chunked, length) {
        // Both at once is how requests get smuggled past proxies: refused (RFC 9112 §6.3).
        (true, Some(_)) => return Err(HttpError::BadLength),
        (true, None) => Framing::Chunked,
        (false, l) => Framing::Length(l.unwrap_or(0)),
    };
    Ok(head)
}

fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

fn parse_length(v: &str) -> Result<u64, HttpError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::BadLength);
    }
    v.parse().map_err(|_| HttpError::BadLength)
}

/// Decodes `%XX` escapes (the Node RIC sends the request id through `encodeURIComponent`);
/// `None` for a broken escape or a result that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hi = hex_digit(*b.get(i + 1)?)?;
            let lo = hex_digit(*b.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_digit(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Next,
    Response(String),
    Error(String),
    InitError,
    /// SnapStart's `/runtime/restore/next` and `/runtime/restore/error`: lamina has no
    /// snapshots, so an env is never in the restore state (403 InvalidStateTransition).
    Restore,
    /// A request id that does not percent-decode.
    BadRequestId,
    NotFound,
    /// The path exists for this method only.
    MethodNotAllowed(&'static str),
    /// The Extensions, Telemetry and Logs APIs.
    Extension(ExtRoute),
}

/// Requests of the Extensions API 2020-01-01, Telemetry API 2022-07-01 and Logs API 2020-08-15.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtRoute {
    Register,
    Next,
    InitError,
    ExitError,
    Telemetry,
    Logs,
}

fn extension_route(method: &str, path: &str) -> Route {
    let (allowed, r) = match path {
        "/2020-01-01/extension/register" => ("POST", ExtRoute::Register),
        "/2020-01-01/extension/event/next" => ("GET", ExtRoute::Next),
        "/2020-01-01/extension/init/error" => ("POST", ExtRoute::InitError),
        "/2020-01-01/extension/exit/error" => ("POST", ExtRoute::ExitError),
        "/2022-07-01/telemetry" => ("PUT", ExtRoute::Telemetry),
        "/2020-08-15/logs" => ("PUT", ExtRoute::Logs),
        _ => return Route::NotFound,
    };
    if method == allowed {
        Route::Extension(r)
    } else {
        Route::MethodNotAllowed(allowed)
    }
}

/// Maps a method and path (without query) to a [`Route`].
pub fn route(method: &str, path: &str) -> Route {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return extension_route(method, path);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let (allowed, route) = match segments.as_slice() {
        ["invocation", "next"] => ("GET", Route::Next),
        ["init", "error"] => ("POST", Route::InitError),
        ["restore", "next"] => ("GET", Route::Restore),
        ["restore", "error"] => ("POST", Route::Restore),
        ["invocation", id, "response"] => ("POST", with_id(id, Route::Response)),
        ["invocation", id, "error"] => ("POST", with_id(id, Route::Error)),
        _ => return Route::NotFound,
    };
    if method == allowed {
        route
    } else {
        Route::MethodNotAllowed(allowed)
    }
}

fn with_id(raw: &str, make: fn(String) -> Route) -> Route {
    match percent_decode(raw) {
        Some(id) if !id.is_empty() => make(id),
        _ => Route::BadRequestId,
    }
}

impl Route {
    /// How much of the body is kept; the rest is read and dropped, so that the connection
    /// stays in step and the client reads its answer.
    fn body_limit(&self) -> usize {
        match self {
            Route::Response(_) => MAX_RESPONSE,
            Route::Error(_) | Route::InitError => MAX_ERROR_BODY,
            Route::Extension(ExtRoute::InitError | ExtRoute::ExitError) => MAX_ERROR_BODY,
            Route::Extension(_) => MAX_EXT_BODY,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

/// Incremental decoder of a chunked body (RFC 9112 §7.1), trailers included (read and
/// dropped: the streaming error trailers are for later).
#[derive(Debug, Clone)]
pub struct Chunked {
    state: ChunkState,
    trailer_bytes: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: ChunkState::Size,
            trailer_bytes: 0,
        }
    }
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes what it can of `input`, handing chunk data to `sink`; returns the bytes used.
    /// Unused bytes (a line not complete yet, or what follows the body) stay with the caller.
    pub fn feed(&mut self, input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<usize, HttpError> {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            match self.state {
                ChunkState::Done => return Ok(used),
                ChunkState::Size => {
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err(HttpError::BadChunk("chunk size line too long"));
                        }
                        return Ok(used);
                    };
                    let size = chunk_size(trim_cr(rest.get(..nl).unwrap_or_default()))?;
                    used += nl + 1;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    sink(rest.get(..take).unwrap_or_default());
                    used += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => match rest {
                    [] | [b'\r'] => return Ok(used),
                    [b'\n', ..] => {
                        used += 1;
                        self.state = ChunkState::Size;
                    }
                    [b'\r', b'\n', ..] => {
                        used += 2;
                        self.state = ChunkState::Size;
                    }
                    _ => return Err(HttpError::BadChunk("no line end after chunk data")),
                },
                ChunkState::Trailer => {
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if self.trailer_bytes + rest.len() > MAX_HEAD {
                            return Err(HttpError::BadChunk("trailer section too large"));
                        }
                        return Ok(used);
                    };
                    let line = trim_cr(rest.get(..nl).unwrap_or_default());
                    used += nl + 1;
                    self.trailer_bytes += nl + 1;
                    if self.trailer_bytes > MAX_HEAD {
                        return Err(HttpError::BadChunk("trailer section too large"));
                    }
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    } else if !line.contains(&b':') {
                        return Err(HttpError::BadChunk("malformed trailer field"));
                    }
                }
            }
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The hex size of a chunk, ignoring chunk extensions.
fn chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let bad = HttpError::BadChunk("invalid chunk size");
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = std::str::from_utf8(digits).map_err(|_| bad.clone())?.trim();
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad);
    }
    u64::from_str_radix(digits, 16).map_err(|_| bad)
}

#[derive(Debug, Clone)]
enum BodyFraming {
    Length(u64),
    Chunked(Chunked),
}

/// A request body being read: kept up to `limit` bytes, counted (and dropped) beyond.
#[derive(Debug, Clone)]
pub struct Body {
    framing: BodyFraming,
    limit: usize,
    pub data: Vec<u8>,
    /// The body was longer than the limit (its data is then dropped).
    pub overflow: bool,
}

impl Body {
    pub fn new(framing: Framing, limit: usize) -> Body {
        let (framing, expected) = match framing {
            Framing::Length(n) => (BodyFraming::Length(n), n),
            Framing::Chunked => (BodyFraming::Chunked(Chunked::default()), 0),
        };
        let capacity = usize::try_from(expected).unwrap_or(usize::MAX).min(limit);
        Body {
            framing,
            limit,
            data: Vec::with_capacity(capacity),
            overflow: false,
        }
    }

    /// Reads what it can of `input`; returns the bytes used and whether the body is complete.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, bool), HttpError> {
        let (data, overflow, limit) = (&mut self.data, &mut self.overflow, self.limit);
        let mut sink = |d: &[u8]| {
            if *overflow || data.len() + d.len() > limit {
                *overflow = true;
                *data = Vec::new();
            } else {
                data.extend_from_slice(d);
            }
        };
        match &mut self.framing {
            BodyFraming::Length(left) => {
                let take = input
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                sink(input.get(..take).unwrap_or_default());
                *left -= take as u64;
                Ok((take, *left == 0))
            }
            BodyFraming::Chunked(c) => {
                let used = c.feed(input, &mut sink)?;
                Ok((used, c.is_done()))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The invocation state

/// An invocation from the supervisor, waiting for (or handed to) the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub header: InvokeHeader,
    pub payload: Vec<u8>,
}

/// Why the Runtime API refused a request (status and `errorType` of the JSON answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    InvalidRequestId,
    InvalidResponseMode,
    InvalidStateTransition,
    TooLarge(usize),
    NotFound,
    MethodNotAllowed(&'static str),
    Http(HttpError),
}

impl Refusal {
    fn status(&self) -> u16 {
        match self {
            Refusal::InvalidRequestId | Refusal::InvalidResponseMode => 400,
            Refusal::InvalidStateTransition => 403,
            Refusal::TooLarge(_) => 413,
            Refusal::NotFound => 404,
            Refusal::MethodNotAllowed(_) => 405,
            Refusal::Http(HttpError::HeadTooLarge | HttpError::TooManyHeaders) => 431,
            Refusal::Http(HttpError::BadTransferEncoding) => 501,
            Refusal::Http(_) => 400,
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            Refusal::InvalidRequestId => "InvalidRequestID",
            Refusal::InvalidResponseMode => "InvalidFunctionResponseMode",
            Refusal::InvalidStateTransition => "InvalidStateTransition",
            Refusal::TooLarge(_) => "RequestEntityTooLarge",
            Refusal::NotFound => "NotFound",
            Refusal::MethodNotAllowed(_) => "MethodNotAllowed",
            Refusal::Http(HttpError::HeadTooLarge | HttpError::TooManyHeaders) => {
                "RequestHeaderFieldsTooLarge"
            }
            Refusal::Http(HttpError::BadTransferEncoding) => "NotImplemented",
            Refusal::Http(_) => "BadRequest",
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::InvalidRequestId => {
                "Invalid request ID: not the current invocation, or already answered".into()
            }
            Refusal::InvalidResponseMode => {
                "Invalid Lambda-Runtime-Function-Response-Mode: only 'streaming' is supported"
                    .into()
            }
            Refusal::InvalidStateTransition => {
                "Init errors can only be reported once, before the first invocation/next".into()
            }
            Refusal::TooLarge(limit) => {
                format!("Exceeded maximum allowed payload size ({limit} bytes).")
            }
            Refusal::NotFound => "Unknown Runtime API path".into(),
            Refusal::MethodNotAllowed(m) => format!("Method not allowed (use {m})"),
            Refusal::Http(e) => e.to_string(),
        }
    }
}

/// The answer to a complete request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// 202 `{"status":"OK"}`.
    Accepted,
    Refused(Refusal),
    /// 200 with the invocation (a `/next` that found one waiting).
    Event(Event),
    /// A `/next` that waits for the next invocation.
    Wait,
}

/// What a complete request changes: the answer to the runtime and what to tell the supervisor.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub answer: Answer,
    pub tell: Option<(FromRuntime, Vec<u8>)>,
}

impl Outcome {
    fn refused(r: Refusal) -> Outcome {
        Outcome {
            answer: Answer::Refused(r),
            tell: None,
        }
    }

    fn accepted(msg: FromRuntime, payload: Vec<u8>) -> Outcome {
        Outcome {
            answer: Answer::Accepted,
            tell: Some((msg, payload)),
        }
    }
}

/// Where the runtime is in its lifecycle (LAMBDA_FACTS §6), as the Runtime API sees it.
#[derive(Debug, Default)]
pub struct Invocations {
    /// The runtime called `/next` at least once: Init is over.
    initialized: bool,
    /// The runtime reported an Init error.
    init_failed: bool,
    /// Connections whose `/next` waits for an invocation, oldest first.
    waiters: VecDeque<Token>,
    /// An invocation that arrived before the runtime asked for it (the supervisor sends one
    /// at a time per env, so one slot is enough).
    queued: Option<Event>,
    /// The invocation handed out last, and whether it has been answered.
    current: Option<(String, bool)>,
}

impl Invocations {
    /// Handles a complete request from connection `token`.
    pub fn handle(&mut self, token: Token, route: Route, head: &Head, body: Body) -> Outcome {
        match route {
            Route::Next => self.next(token),
            Route::Response(id) => self.response(id, head, body),
            Route::Error(id) => self.error(id, head, body),
            Route::InitError => self.init_error(head, body),
            Route::BadRequestId => Outcome::refused(Refusal::InvalidRequestId),
            Route::Restore => Outcome::refused(Refusal::InvalidStateTransition),
            Route::NotFound => Outcome::refused(Refusal::NotFound),
            Route::MethodNotAllowed(m) => Outcome::refused(Refusal::MethodNotAllowed(m)),
            // Served by `RuntimeApi` before it gets here.
            Route::Extension(_) => Outcome::refused(Refusal::NotFound),
        }
    }

    /// An invocation from the supervisor: handed to the oldest waiting `/next` whose
    /// connection `alive` confirms, else kept for the next `/next`.
    pub fn invoke(
        &mut self,
        event: Event,
        alive: impl Fn(Token) -> bool,
    ) -> Option<(Token, Event)> {
        while let Some(token) = self.waiters.pop_front() {
            if alive(token) {
                self.hand_out(&event);
                return Some((token, event));
            }
        }
        if self.queued.replace(event).is_some() {
            eprintln!(
                "lamina init: an invocation arrived while another waited; the older is dropped"
            );
        }
        None
    }

    /// Forgets a connection that closed while its `/next` waited.
    pub fn forget(&mut self, token: Token) {
        self.waiters.retain(|t| *t != token);
    }

    fn next(&mut self, token: Token) -> Outcome {
        // The first `/next` ends Init (LAMBDA_FACTS §6).
        let tell = (!self.initialized).then(|| (FromRuntime::Ready, Vec::new()));
        self.initialized = true;
        let answer = match self.queued.take() {
            Some(event) => {
                self.hand_out(&event);
                Answer::Event(event)
            }
            None => {
                self.waiters.push_back(token);
                Answer::Wait
            }
        };
        Outcome { answer, tell }
    }

    fn hand_out(&mut self, event: &Event) {
        self.current = Some((event.header.request_id.clone(), false));
    }

    /// The id must be the one `/next` handed out last, not answered yet.
    fn check(&self, id: &str) -> Result<(), Refusal> {
        match &self.current {
            Some((current, false)) if current == id => Ok(()),
            _ => Err(Refusal::InvalidRequestId),
        }
    }

    fn answer(&mut self) {
        if let Some((_, answered)) = &mut self.current {
            *answered = true;
        }
    }

    fn response(&mut self, id: String, head: &Head, body: Body) -> Outcome {
        if let Err(r) = self.check(&id) {
            return Outcome::refused(r);
        }
        if head
            .response_mode
            .as_deref()
            .is_some_and(|m| m != "streaming")
        {
            return Outcome::refused(Refusal::InvalidResponseMode);
        }
        // A response over the limit still ends the invocation (`Function.ResponseSizeTooLarge`).
        self.answer();
        if body.overflow {
            return Outcome {
                answer: Answer::Refused(Refusal::TooLarge(MAX_RESPONSE)),
                tell: Some((FromRuntime::ResponseTooLarge { request_id: id }, Vec::new())),
            };
        }
        let msg = FromRuntime::Response {
            request_id: id,
            content_type: head.content_type.clone(),
            payload_len: body.data.len() as u64,
        };
        Outcome::accepted(msg, body.data)
    }

    fn error(&mut self, id: String, head: &Head, body: Body) -> Outcome {
        if let Err(r) = self.check(&id) {
            return Outcome::refused(r);
        }
        if body.overflow {
            return Outcome::refused(Refusal::TooLarge(MAX_ERROR_BODY));
        }
        self.answer();
        let msg = FromRuntime::Error {
            request_id: id,
            error_type: head.error_type.clone(),
            payload_len: body.data.len() as u64,
        };
        Outcome::accepted(msg, body.data)
    }

    fn init_error(&mut self, head: &Head, body: Body) -> Outcome {
        if self.initialized || self.init_failed {
            return Outcome::refused(Refusal::InvalidStateTransition);
        }
        if body.overflow {
            return Outcome::refused(Refusal::TooLarge(MAX_ERROR_BODY));
        }
        self.init_failed = true;
        let msg = FromRuntime::InitError {
            error_type: head.error_type.clone(),
            payload_len: body.data.len() as u64,
        };
        Outcome::accepted(msg, body.data)
    }
}

// ---------------------------------------------------------------------------------------------
// Answers

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "Error",
    }
}

/// A header field value with the characters that would end the field (CR, LF, NUL, other
/// controls) turned into spaces: values come from the Invoke caller (client context).
fn field_value(v: &str) -> Cow<'_, str> {
    if v.chars().any(|c| c.is_control() && c != '\t') {
        Cow::Owned(
            v.chars()
                .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(v)
    }
}

fn render(status: u16, fields: &[(&str, &str)], body: &[u8], keep_alive: bool) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in fields {
        head.push_str(&format!("{name}: {}\r\n", field_value(value)));
    }
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    out
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "errorMessage")]
    error_message: &'a str,
    #[serde(rename = "errorType")]
    error_type: &'a str,
}

fn render_refusal(r: &Refusal, keep_alive: bool) -> Vec<u8> {
    let message = r.message();
    let body = serde_json::to_vec(&ErrorBody {
        error_message: &message,
        error_type: r.error_type(),
    })
    .unwrap_or_default();
    let mut fields = vec![("Content-Type", "application/json")];
    if let Refusal::MethodNotAllowed(allow) = r {
        fields.push(("Allow", allow));
    }
    render(r.status(), &fields, &body, keep_alive)
}

/// The `/next` answer (LAMBDA_FACTS §1.3): always `Content-Type: application/json` (the Python
/// RIC decodes the event only then, and crashes without any Content-Type); the optional
/// headers only when not empty.
fn render_event(event: &Event, keep_alive: bool) -> Vec<u8> {
    let h = &event.header;
    let deadline = h.deadline_ms.to_string();
    let mut fields = vec![
        ("Content-Type", "application/json"),
        ("Lambda-Runtime-Aws-Request-Id", h.request_id.as_str()),
        ("Lambda-Runtime-Deadline-Ms", deadline.as_str()),
        (
            "Lambda-Runtime-Invoked-Function-Arn",
            h.invoked_function_arn.as_str(),
        ),
    ];
    for (name, value) in [
        ("Lambda-Runtime-Trace-Id", &h.trace_id),
        ("Lambda-Runtime-Client-Context", &h.client_context),
        ("Lambda-Runtime-Cognito-Identity", &h.cognito_identity),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            fields.push((name, v));
        }
    }
    render(200, &fields, &event.payload, keep_alive)
}

fn render_answer(answer: Answer, keep_alive: bool) -> Option<Vec<u8>> {
    match answer {
        Answer::Accepted => Some(render(
            202,
            &[("Content-Type", "application/json")],
            br#"{"status":"OK"}"#,
            keep_alive,
        )),
        Answer::Refused(r) => Some(render_refusal(&r, keep_alive)),
        Answer::Event(e) => Some(render_event(&e, keep_alive)),
        Answer::Wait => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

/// A request whose head was read.
struct Pending {
    head: Head,
    route: Route,
    body: Body,
}

enum Phase {
    Head,
    Body(Box<Pending>),
    /// A `/next` waits for an invocation; later requests stay unread until it is answered.
    AwaitingEvent {
        keep_alive: bool,
    },
}

struct Conn {
    stream: TcpStream,
    inbuf: Vec<u8>,
    /// How far `inbuf` was searched for the end of a request head.
    scanned: usize,
    out: Vec<u8>,
    written: usize,
    phase: Phase,
    /// Close once `out` is written (`Connection: close`, or a request that broke framing).
    closing: bool,
    /// The client shut its side down.
    eof: bool,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            inbuf: Vec::new(),
            scanned: 0,
            out: Vec::new(),
            written: 0,
            phase: Phase::Head,
            closing: false,
            eof: false,
        }
    }

    fn unwritten(&self) -> usize {
        self.out.len() - self.written
    }

    fn queue(&mut self, bytes: Vec<u8>, keep_alive: bool) {
        if self.out.is_empty() {
            self.out = bytes;
        } else {
            self.out.extend_from_slice(&bytes);
        }
        self.closing |= !keep_alive;
    }

    fn refuse(&mut self, e: HttpError) {
        self.queue(render_refusal(&Refusal::Http(e), false), false);
    }

    /// The next request head, once complete.
    fn take_head(&mut self) -> Result<Option<Head>, HttpError> {
        let from = self.scanned.saturating_sub(3);
        let complete = has_blank_line(self.inbuf.get(from..).unwrap_or_default());
        self.scanned = self.inbuf.len();
        if !complete {
            if self.inbuf.len() > MAX_HEAD {
                return Err(HttpError::HeadTooLarge);
            }
            return Ok(None);
        }
        match parse_head(&self.inbuf)? {
            Some((head, n)) => {
                self.inbuf.drain(..n);
                self.scanned = 0;
                Ok(Some(head))
            }
            None => Ok(None),
        }
    }

    /// Writes what it can; an error means the client is gone.
    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            match self
                .stream
                .write(self.out.get(self.written..).unwrap_or_default())
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out = Vec::new();
        self.written = 0;
        Ok(())
    }

    /// Whether more input is worth reading now (bounded buffers; answers read first).
    fn wants_input(&self) -> bool {
        !self.closing
            && !self.eof
            && self.inbuf.len() <= MAX_HEAD
            && self.unwritten() <= OUT_HIGH_WATER
    }

    /// Reads once; `false` when nothing is there now.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            return match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    Ok(true)
                }
                Ok(n) => {
                    self.inbuf
                        .extend_from_slice(chunk.get(..n).unwrap_or_default());
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }
}

/// The Runtime API server: its listener, connections and the invocation state.
pub struct RuntimeApi {
    listener: TcpListener,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    invocations: Invocations,
    exts: Extensions,
    telemetry: Telemetry,
    /// The runtime's and the extensions' output, teed by init (only with extensions).
    outputs: Vec<Output>,
    /// Connections answered from elsewhere (an event), to drive once the current one is done.
    wake: Vec<Token>,
    init_started: Instant,
    init_type: String,
    /// The invocation running and when it started (for `platform.runtimeDone`).
    invoke_started: Option<(String, Instant)>,
    shutdown: Option<PendingShutdown>,
    /// An Init failure found before serving (error type, message).
    init_failure: Option<(String, String)>,
}

/// A pipe carrying a process's stdout and stderr to init.
struct Output {
    fd: Option<OwnedFd>,
    token: Token,
    kind: Kind,
    lines: Lines,
}

/// A `ToInit::Shutdown` in progress: telemetry is flushed first (until `release`), then the
/// extensions get SHUTDOWN.
struct PendingShutdown {
    reason: String,
    deadline_ms: u64,
    release: Instant,
    sent: bool,
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64 / 10.0).round() / 100.0
}

fn render_error(status: u16, error_type: &str, message: &str, keep_alive: bool) -> Vec<u8> {
    let body = serde_json::to_vec(&ErrorBody {
        error_message: message,
        error_type,
    })
    .unwrap_or_default();
    render(
        status,
        &[("Content-Type", "application/json")],
        &body,
        keep_alive,
    )
}

fn render_ext_refusal(e: ExtError, keep_alive: bool) -> Vec<u8> {
    render_error(e.status(), e.error_type(), e.message(), keep_alive)
}

fn render_ext_event(event: &[u8], keep_alive: bool) -> Vec<u8> {
    let id = crate::extensions::uuid();
    render(
        200,
        &[
            ("Content-Type", "application/json"),
            ("Lambda-Extension-Event-Identifier", &id),
        ],
        event,
        keep_alive,
    )
}

/// Writes all of `data` to init's stdout (the env's log pipe to the supervisor).
fn write_stdout(mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a live slice to fd 1.
        let n = unsafe { libc::write(1, data.as_ptr().cast(), data.len()) };
        if n > 0 {
            data = data.get(n as usize..).unwrap_or_default();
        } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        } else {
            // The supervisor is gone: nobody reads the log any more.
            return;
        }
    }
}

impl RuntimeApi {
    /// Binds [`RUNTIME_API_ADDR`]; done before the runtime starts, so that it finds the API.
    /// `env` is the runtime's environment (function name, version, handler, init type).
    pub fn bind(env: &[String]) -> io::Result<RuntimeApi> {
        let addr: SocketAddr = RUNTIME_API_ADDR.parse().map_err(io::Error::other)?;
        let init_type = env
            .iter()
            .find_map(|e| e.strip_prefix("AWS_LAMBDA_INITIALIZATION_TYPE="))
            .unwrap_or("on-demand")
            .to_string();
        let exts = Extensions::new(env);
        let mut telemetry = Telemetry::default();
        telemetry.start_backlog();
        telemetry.emit(TelemetryEvent::platform(
            "platform.initStart",
            json!({
                "initializationType": init_type,
                "phase": "init",
                "functionName": exts.function_name,
                "functionVersion": exts.function_version,
            }),
            None,
        ));
        Ok(RuntimeApi {
            listener: TcpListener::bind(addr)?,
            conns: HashMap::new(),
            next_token: LISTENER.0 + 1,
            invocations: Invocations::default(),
            exts,
            telemetry,
            outputs: Vec::new(),
            wake: Vec::new(),
            init_started: Instant::now(),
            init_type,
            invoke_started: None,
            shutdown: None,
            init_failure: None,
        })
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.listener, LISTENER, Interest::READABLE)?;
        for o in &self.outputs {
            if let Some(fd) = &o.fd {
                registry.register(
                    &mut mio::unix::SourceFd(&fd.as_raw_fd()),
                    o.token,
                    Interest::READABLE,
                )?;
            }
        }
        Ok(())
    }

    /// Init fails before it began (e.g. too many extensions); reported once serving starts.
    pub fn fail_init(&mut self, error_type: &str, message: String) {
        self.init_failure = Some((error_type.to_string(), message));
    }

    /// Reports the failure recorded by [`RuntimeApi::fail_init`], as an Init error.
    pub fn report_init_failure(&mut self, ctl: &mut Control) -> Result<(), InitError> {
        if let Some((t, m)) = self.init_failure.take() {
            write_stdout(format!("EXTENSION\tError Type: {t}\t{m}\n").as_bytes());
            let body = json!({"errorMessage": m, "errorType": t})
                .to_string()
                .into_bytes();
            let msg = FromRuntime::InitError {
                error_type: Some(t),
                payload_len: body.len() as u64,
            };
            ctl.push(&FromInit::Runtime(msg), body)?;
        }
        Ok(())
    }

    /// An external extension init started.
    pub fn launched(&mut self, pid: i32, name: &str) {
        self.exts.launched(pid, name);
    }

    /// The read ends (non-blocking) of the pipes that carry the function's (runtime's) and
    /// the extensions' output; init copies it to its own stdout and to telemetry subscribers.
    pub fn tee(&mut self, function: OwnedFd, extensions: OwnedFd) {
        for (fd, kind) in [(function, Kind::Function), (extensions, Kind::Extension)] {
            let token = Token(self.next_token);
            self.next_token += 1;
            self.outputs.push(Output {
                fd: Some(fd),
                token,
                kind,
                lines: Lines::default(),
            });
        }
    }

    /// Copies what the processes wrote so far (before an answer that ends an invocation, and
    /// before init reports the runtime's exit, so that the log keeps its order).
    pub fn drain_outputs(&mut self) {
        for i in 0..self.outputs.len() {
            self.read_output(i);
        }
    }

    fn read_output(&mut self, i: usize) {
        let tel = &mut self.telemetry;
        let Some(out) = self.outputs.get_mut(i) else {
            return;
        };
        let Some(fd) = out.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into a live buffer from a pipe fd we own.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            let kind = out.kind;
            let wanted = tel.wants(kind);
            let mut emit = |line: &str| tel.emit(TelemetryEvent::line(kind, line));
            if n == 0 {
                // Every writer is gone; the fd leaves epoll as it closes.
                out.fd = None;
                if wanted {
                    out.lines.finish(&mut emit);
                }
                return;
            }
            let data = buf.get(..n as usize).unwrap_or_default();
            write_stdout(data);
            if wanted {
                out.lines.feed(data, &mut emit);
            }
        }
    }

    /// A child of init ended (an extension, or a process of the runtime's).
    pub fn child_exited(
        &mut self,
        pid: i32,
        registry: &Registry,
        ctl: &mut Control,
    ) -> Result<(), InitError> {
        self.exts.exited(pid);
        self.settle(ctl)?;
        self.wake_all(registry, ctl)
    }

    /// The supervisor destroys the env: telemetry is flushed, then extensions registered for
    /// SHUTDOWN get the event (see [`PendingShutdown`]).
    pub fn shutdown(
        &mut self,
        reason: String,
        deadline_ms: u64,
        registry: &Registry,
        ctl: &mut Control,
    ) -> Result<(), InitError> {
        self.telemetry.force = true;
        let left = Duration::from_millis(deadline_ms.saturating_sub(epoch_ms()));
        self.shutdown = Some(PendingShutdown {
            reason,
            deadline_ms,
            release: Instant::now() + (left / 4).min(Duration::from_millis(500)),
            sent: false,
        });
        self.tick(registry, ctl)
    }

    /// An invocation's REPORT: `platform.report` for telemetry subscribers.
    pub fn report(&mut self, m: ReportMetrics) {
        if !self.telemetry.wants(Kind::Platform) {
            return;
        }
        let mut metrics = json!({
            "durationMs": m.duration_us as f64 / 1000.0,
            "billedDurationMs": m.billed_duration_ms,
            "memorySizeMB": m.memory_size_mb,
            "maxMemoryUsedMB": m.max_memory_used_mb,
        });
        if let Some(i) = m.init_duration_us {
            metrics["initDurationMs"] = json!(i as f64 / 1000.0);
        }
        self.telemetry.emit(TelemetryEvent::platform(
            "platform.report",
            json!({"requestId": m.request_id, "status": m.status, "metrics": metrics}),
            Some(json!({"requestId": m.request_id, "metrics": metrics})),
        ));
    }

    /// How long the event loop may sleep (telemetry flushes, a shutdown's next step).
    pub fn timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let shutdown = self
            .shutdown
            .as_ref()
            .filter(|s| !s.sent)
            .map(|s| s.release.saturating_duration_since(now));
        match (self.telemetry.timeout(now), shutdown) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timed work: telemetry deliveries, a shutdown's SHUTDOWN events.
    pub fn tick(&mut self, registry: &Registry, ctl: &mut Control) -> Result<(), InitError> {
        let next = &mut self.next_token;
        self.telemetry.tick(registry, &mut || {
            let t = Token(*next);
            *next += 1;
            t
        });
        if let Some(s) = self.shutdown.as_mut() {
            if !s.sent && (self.telemetry.idle() || Instant::now() >= s.release) {
                s.sent = true;
                let events = self.exts.shutdown(&s.reason, s.deadline_ms);
                for (t, ev) in events {
                    self.deliver(t, &ev);
                }
            }
        }
        self.settle(ctl)?;
        self.wake_all(registry, ctl)
    }

    /// Answers an extension's waiting `next` with an event.
    fn deliver(&mut self, token: Token, event: &[u8]) {
        if let Some(conn) = self.conns.get_mut(&token) {
            if let Phase::AwaitingEvent { keep_alive } = conn.phase {
                conn.queue(render_ext_event(event, keep_alive), keep_alive);
                conn.phase = Phase::Head;
                self.wake.push(token);
            }
        }
    }

    fn wake_all(&mut self, registry: &Registry, ctl: &mut Control) -> Result<(), InitError> {
        while let Some(t) = self.wake.pop() {
            self.resume(t, registry, ctl)?;
        }
        Ok(())
    }

    /// Reports what the extensions' state makes due: the end of Init (registration closes),
    /// of an invocation, of a shutdown.
    fn settle(&mut self, ctl: &mut Control) -> Result<(), InitError> {
        if let Some(c) = self.exts.take_ready() {
            if c.count > 0 {
                let msg = FromRuntime::Extensions {
                    count: c.count,
                    invoke: c.invoke,
                    shutdown: c.shutdown,
                };
                ctl.push(&FromInit::Runtime(msg), Vec::new())?;
            }
            ctl.push(&FromInit::Runtime(FromRuntime::Ready), Vec::new())?;
            if self.telemetry.wants(Kind::Platform) {
                let d = ms(self.init_started.elapsed());
                let it = self.init_type.clone();
                self.telemetry.emit(TelemetryEvent::platform(
                    "platform.initReport",
                    json!({"initializationType": it, "phase": "init", "status": "success",
                        "metrics": {"durationMs": d}}),
                    None,
                ));
            }
            self.telemetry.end_backlog();
        }
        if let Some(request_id) = self.exts.take_invoke_done() {
            ctl.push(
                &FromInit::Runtime(FromRuntime::InvokeDone { request_id }),
                Vec::new(),
            )?;
        }
        if self.exts.take_shutdown_done() {
            ctl.push(&FromInit::Runtime(FromRuntime::ShutdownDone), Vec::new())?;
        }
        Ok(())
    }

    /// What the runtime's request changed, beyond the runtime's own state.
    fn runtime_told(&mut self, msg: &FromRuntime) {
        let answered = match msg {
            FromRuntime::Ready => {
                self.exts.runtime_ready();
                if self.telemetry.wants(Kind::Platform) {
                    let it = self.init_type.clone();
                    self.telemetry.emit(TelemetryEvent::platform(
                        "platform.initRuntimeDone",
                        json!({"initializationType": it, "phase": "init", "status": "success"}),
                        None,
                    ));
                }
                return;
            }
            FromRuntime::Response {
                request_id,
                payload_len,
                ..
            } => Some((request_id, "success", *payload_len)),
            FromRuntime::Error { request_id, .. } => Some((request_id, "error", 0)),
            FromRuntime::ResponseTooLarge { request_id } => Some((request_id, "failure", 0)),
            _ => None,
        };
        let Some((id, status, bytes)) = answered else {
            return;
        };
        self.exts.runtime_answered(id);
        let started = self.invoke_started.take();
        if self.telemetry.wants(Kind::Platform) {
            let d = started.map(|(_, t)| ms(t.elapsed())).unwrap_or(0.0);
            self.telemetry.emit(TelemetryEvent::platform(
                "platform.runtimeDone",
                json!({"requestId": id, "status": status,
                    "metrics": {"durationMs": d, "producedBytes": bytes}}),
                None,
            ));
            if let Some(ev) = self.telemetry_end(id) {
                self.telemetry.emit(ev);
            }
        }
    }

    /// The Logs API's `platform.end` (the Telemetry API has no such event).
    fn telemetry_end(&self, id: &str) -> Option<TelemetryEvent> {
        Some(TelemetryEvent {
            kind: Kind::Platform,
            telemetry: None,
            logs: Some(("platform.end".into(), json!({"requestId": id}))),
        })
    }

    /// An extension's `next`; what it printed before asking lands in the log first.
    fn ext_next(&mut self, head: &Head, token: Token) -> Result<Option<Vec<u8>>, ExtError> {
        self.drain_outputs();
        self.exts.next(head.ext_id.as_deref(), token)
    }

    /// Serves an Extensions, Telemetry or Logs API request; `None` when a `next` waits.
    fn extension_request(
        &mut self,
        token: Token,
        r: ExtRoute,
        head: &Head,
        body: Body,
        ctl: &mut Control,
    ) -> Result<Option<Vec<u8>>, InitError> {
        let ka = head.keep_alive;
        if body.overflow {
            return Ok(Some(render_refusal(&Refusal::TooLarge(body.limit), ka)));
        }
        let answer = match r {
            ExtRoute::Register => match self.exts.register(head.ext_name.as_deref(), &body.data) {
                Ok(reg) => render(
                    200,
                    &[
                        ("Content-Type", "application/json"),
                        ("Lambda-Extension-Identifier", &reg.id),
                    ],
                    &reg.body,
                    ka,
                ),
                Err(e) => render_ext_refusal(e, ka),
            },
            ExtRoute::Next => match self.ext_next(head, token) {
                Ok(event) => {
                    self.settle(ctl)?;
                    match event {
                        Some(ev) => render_ext_event(&ev, ka),
                        None => return Ok(None),
                    }
                }
                Err(e) => render_ext_refusal(e, ka),
            },
            ExtRoute::InitError | ExtRoute::ExitError => {
                let t = head.ext_error_type.as_deref();
                match self.exts.error(head.ext_id.as_deref(), t) {
                    Ok(name) => {
                        let t = t.unwrap_or_default();
                        let phase = if r == ExtRoute::InitError {
                            "init"
                        } else {
                            "exit"
                        };
                        write_stdout(
                            format!(
                                "EXTENSION	Name: {name}	State: {phase} error	Error Type: {t}
"
                            )
                            .as_bytes(),
                        );
                        // An extension that fails its Init fails the env's Init.
                        if r == ExtRoute::InitError && !self.exts.closed() {
                            let msg = FromRuntime::InitError {
                                error_type: Some(t.to_string()),
                                payload_len: body.data.len() as u64,
                            };
                            ctl.push(&FromInit::Runtime(msg), body.data)?;
                        }
                        render_answer(Answer::Accepted, ka).unwrap_or_default()
                    }
                    Err(e) => render_ext_refusal(e, ka),
                }
            }
            ExtRoute::Telemetry | ExtRoute::Logs => {
                let api = if r == ExtRoute::Telemetry {
                    telemetry::Api::Telemetry
                } else {
                    telemetry::Api::Logs
                };
                match self.exts.identify(head.ext_id.as_deref()) {
                    Err(e) => render_ext_refusal(e, ka),
                    Ok(name) => match telemetry::parse_request(api, &body.data) {
                        Ok(req) => {
                            self.telemetry.subscribe(&name, req);
                            render(200, &[("Content-Type", "text/plain")], b"OK", ka)
                        }
                        Err(msg) => render_error(400, "ValidationError", &msg, ka),
                    },
                }
            }
        };
        Ok(Some(answer))
    }

    /// Handles readiness of the listener or of one of the connections.
    pub fn ready(
        &mut self,
        token: Token,
        registry: &Registry,
        ctl: &mut Control,
    ) -> Result<(), InitError> {
        if token == LISTENER {
            self.accept(registry, ctl)?;
        } else if let Some(i) = self.outputs.iter().position(|o| o.token == token) {
            self.read_output(i);
        } else if !self.telemetry.ready(token, registry) {
            self.resume(token, registry, ctl)?;
        }
        self.wake_all(registry, ctl)
    }

    /// An invocation from the supervisor.
    pub fn invoke(
        &mut self,
        event: Event,
        registry: &Registry,
        ctl: &mut Control,
    ) -> Result<(), InitError> {
        let conns = &self.conns;
        let alive = |t: Token| {
            conns
                .get(&t)
                .is_some_and(|c| matches!(c.phase, Phase::AwaitingEvent { .. }))
        };
        // The extensions' part is set up first: the runtime may answer as soon as it has the
        // event, even before this function returns.
        let ext_events = if self.exts.active() {
            let h = &event.header;
            self.invoke_started = Some((h.request_id.clone(), Instant::now()));
            if self.telemetry.wants(Kind::Platform) {
                let mut record = json!({"requestId": h.request_id,
                    "version": self.exts.function_version});
                let legacy = record.clone();
                if let Some(t) = &h.trace_id {
                    record["tracing"] = json!({"type": "X-Amzn-Trace-Id", "value": t});
                }
                self.telemetry.emit(TelemetryEvent::platform(
                    "platform.start",
                    record,
                    Some(legacy),
                ));
            }
            self.exts.invoke(h)
        } else {
            Vec::new()
        };
        if let Some((token, event)) = self.invocations.invoke(event, alive) {
            if let Some(conn) = self.conns.get_mut(&token) {
                if let Phase::AwaitingEvent { keep_alive } = conn.phase {
                    conn.queue(render_event(&event, keep_alive), keep_alive);
                    conn.phase = Phase::Head;
                }
            }
            self.resume(token, registry, ctl)?;
        }
        for (t, ev) in ext_events {
            self.deliver(t, &ev);
        }
        self.wake_all(registry, ctl)
    }

    /// Serves what the runtime sent before it exited (a response posted right before exit),
    /// so that init reports it before the exit.
    pub fn drain(&mut self, registry: &Registry, ctl: &mut Control) -> Result<(), InitError> {
        self.accept(registry, ctl)?;
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            self.resume(token, registry, ctl)?;
        }
        Ok(())
    }

    fn accept(&mut self, registry: &Registry, ctl: &mut Control) -> Result<(), InitError> {
        loop {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("lamina init: Runtime API accept: {e}");
                    return Ok(());
                }
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                continue;
            }
            // Answers go out in one write each; no reason to let Nagle hold them.
            let _ = stream.set_nodelay(true);
            let token = Token(self.next_token);
            self.next_token += 1;
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.register(&mut stream, token, interest) {
                eprintln!("lamina init: Runtime API register: {e}");
                continue;
            }
            self.conns.insert(token, Conn::new(stream));
            self.resume(token, registry, ctl)?;
        }
    }

    /// Drives one connection; closes it when it is done with.
    fn resume(
        &mut self,
        token: Token,
        registry: &Registry,
        ctl: &mut Control,
    ) -> Result<(), InitError> {
        let Some(mut conn) = self.conns.remove(&token) else {
            return Ok(());
        };
        if self.drive(token, &mut conn, ctl)? {
            self.conns.insert(token, conn);
        } else {
            let _ = registry.deregister(&mut conn.stream);
            self.invocations.forget(token);
            self.exts.forget(token);
        }
        Ok(())
    }

    /// Serves a connection as far as it goes without blocking: handles buffered requests,
    /// writes answers, reads more. `false` once the connection is done with.
    fn drive(
        &mut self,
        token: Token,
        conn: &mut Conn,
        ctl: &mut Control,
    ) -> Result<bool, InitError> {
        loop {
            self.process(token, conn, ctl)?;
            if conn.flush().is_err() {
                return Ok(false);
            }
            if conn.closing && conn.unwritten() == 0 {
                return Ok(false);
            }
            if conn.eof {
                // Nothing more will come: a partial request never completes and a waiting
                // `/next` has nobody to answer; only answers already due are still written.
                let waiting = matches!(conn.phase, Phase::AwaitingEvent { .. });
                return Ok(conn.unwritten() > 0 && !waiting);
            }
            if !conn.wants_input() {
                return Ok(true);
            }
            match conn.fill() {
                Ok(true) => {}
                Ok(false) => return Ok(true),
                Err(_) => return Ok(false),
            }
        }
    }

    /// Handles the requests buffered on a connection, in order (pipelining-safe: one request
    /// at a time, and none while a `/next` waits).
    fn process(
        &mut self,
        token: Token,
        conn: &mut Conn,
        ctl: &mut Control,
    ) -> Result<(), InitError> {
        while !conn.closing && conn.unwritten() <= OUT_HIGH_WATER {
            match std::mem::replace(&mut conn.phase, Phase::Head) {
                Phase::AwaitingEvent { keep_alive } => {
                    conn.phase = Phase::AwaitingEvent { keep_alive };
                    return Ok(());
                }
                Phase::Head => match conn.take_head() {
                    Ok(None) => return Ok(()),
                    Ok(Some(head)) => {
                        let route = route(&head.method, &head.path);
                        // curl waits a second for this before sending a large body.
                        if head.expect_continue && head.framing != Framing::Length(0) {
                            conn.out.extend_from_slice(CONTINUE);
                        }
                        let body = Body::new(head.framing, route.body_limit());
                        conn.phase = Phase::Body(Box::new(Pending { head, route, body }));
                    }
                    Err(e) => {
                        conn.refuse(e);
                        return Ok(());
                    }
                },
                Phase::Body(mut pending) => {
                    let (used, done) = match pending.body.feed(&conn.inbuf) {
                        Ok(r) => r,
                        Err(e) => {
                            conn.refuse(e);
                            return Ok(());
                        }
                    };
                    conn.inbuf.drain(..used);
                    if !done {
                        conn.phase = Phase::Body(pending);
                        return Ok(());
                    }
                    let Pending { head, route, body } = *pending;
                    if let Route::Extension(r) = route {
                        match self.extension_request(token, r, &head, body, ctl)? {
                            Some(bytes) => conn.queue(bytes, head.keep_alive),
                            None => {
                                conn.phase = Phase::AwaitingEvent {
                                    keep_alive: head.keep_alive,
                                }
                            }
                        }
                        continue;
                    }
                    if !self.outputs.is_empty()
                        && matches!(route, Route::Response(_) | Route::Error(_))
                    {
                        self.drain_outputs();
                    }
                    let outcome = self.invocations.handle(token, route, &head, body);
                    if let Some((msg, payload)) = outcome.tell {
                        self.runtime_told(&msg);
                        // `Ready` waits for the extensions (see `settle`).
                        if msg != FromRuntime::Ready {
                            ctl.push(&FromInit::Runtime(msg), payload)?;
                        }
                        self.settle(ctl)?;
                    }
                    match render_answer(outcome.answer, head.keep_alive) {
                        Some(bytes) => conn.queue(bytes, head.keep_alive),
                        None => {
                            conn.phase = Phase::AwaitingEvent {
                                keep_alive: head.keep_alive,
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The control channel

/// A complete message from the supervisor.
#[derive(Debug)]
pub enum Incoming {
    Message(ToInit),
    /// `ToRuntime::Invoke` with its payload reassembled.
    Invoke(Event),
    /// The supervisor closed the socket.
    Closed,
}

/// A datagram waiting to be sent: a JSON message, or the next [`CHUNK`] of a payload.
enum Outgoing {
    Message(Vec<u8>),
    Payload(Vec<u8>, usize),
}

/// init's end of the control socket inside the event loop: reads without blocking and
/// reassembles payloads; queues what it sends, so that a supervisor busy sending a large
/// invocation never deadlocks against init sending a large response.
pub struct Control {
    buf: Vec<u8>,
    inbound: Option<(InvokeHeader, Vec<u8>, usize)>,
    outbox: VecDeque<Outgoing>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            buf: vec![0u8; MAX_MESSAGE.max(CHUNK)],
            inbound: None,
            outbox: VecDeque::new(),
        }
    }
}

impl Control {
    /// The next complete message; `None` when nothing more can be read now.
    pub fn receive(&mut self) -> Result<Option<Incoming>, InitError> {
        loop {
            let n = match recv(CONTROL_FD, &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Ok(Some(Incoming::Closed)),
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(InitError::Control(e.into())),
            };
            let data = self.buf.get(..n).unwrap_or_default();
            if let Some((_, payload, len)) = &mut self.inbound {
                if payload.len() + n > *len {
                    return Err(InitError::Unexpected);
                }
                payload.extend_from_slice(data);
                if payload.len() == *len {
                    if let Some((header, payload, _)) = self.inbound.take() {
                        return Ok(Some(Incoming::Invoke(Event { header, payload })));
                    }
                }
                continue;
            }
            match serde_json::from_slice(data)? {
                ToInit::Runtime(ToRuntime::Invoke(header)) => {
                    let len = usize::try_from(header.payload_len)
                        .ok()
                        .filter(|_| header.payload_len <= MAX_EVENT)
                        .ok_or(InitError::Unexpected)?;
                    if len == 0 {
                        let payload = Vec::new();
                        return Ok(Some(Incoming::Invoke(Event { header, payload })));
                    }
                    self.inbound = Some((header, Vec::with_capacity(len), len));
                }
                msg => return Ok(Some(Incoming::Message(msg))),
            }
        }
    }

    /// Queues a message and its payload (sent as raw datagrams of at most [`CHUNK`] bytes).
    pub fn push(&mut self, msg: &FromInit, payload: Vec<u8>) -> Result<(), InitError> {
        self.outbox
            .push_back(Outgoing::Message(serde_json::to_vec(msg)?));
        if !payload.is_empty() {
            self.outbox.push_back(Outgoing::Payload(payload, 0));
        }
        Ok(())
    }

    /// Sends what is queued, until the socket is full (or, with `block`, until all is sent).
    pub fn flush(&mut self, block: bool) -> Result<(), InitError> {
        let mut flags = MsgFlags::MSG_NOSIGNAL;
        if !block {
            flags |= MsgFlags::MSG_DONTWAIT;
        }
        while let Some(front) = self.outbox.front_mut() {
            let datagram = match front {
                Outgoing::Message(m) => m.as_slice(),
                Outgoing::Payload(p, at) => {
                    let end = p.len().min(*at + CHUNK);
                    p.get(*at..end).unwrap_or_default()
                }
            };
            match send(CONTROL_FD, datagram, flags) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(InitError::Control(e.into())),
            }
            // A datagram goes whole or not at all.
            let done = match front {
                Outgoing::Message(_) => true,
                Outgoing::Payload(p, at) => {
                    *at = p.len().min(*at + CHUNK);
                    *at == p.len()
                }
            };
            if done {
                self.outbox.pop_front();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, path: &str) -> Head {
        Head {
            method: method.into(),
            path: path.into(),
            framing: Framing::Length(0),
            keep_alive: true,
            expect_continue: false,
            content_type: None,
            error_type: None,
            response_mode: None,
            ext_name: None,
            ext_id: None,
            ext_error_type: None,
        }
    }

    fn body(data: &[u8], limit: usize) -> Body {
        let mut b = Body::new(Framing::Length(data.len() as u64), limit);
        assert_eq!(b.feed(data), Ok((data.len(), true)));
        b
    }

    fn event(id: &str) -> Event {
        Event {
            header: InvokeHeader {
                request_id: id.into(),
                deadline_ms: 1,
                invoked_function_arn: "arn".into(),
                trace_id: None,
                client_context: None,
                cognito_identity: None,
                payload_len: 2,
            },
            payload: b"{}".to_vec(),
        }
    }

    #[test]
    fn request_ids_are_percent_decoded() {
        assert_eq!(percent_decode("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%E2%9c%93").as_deref(), Some("✓"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("cut%4"), None);
        assert_eq!(percent_decode("%FF"), None);
        let p = "/2018-06-01/runtime/invocation/req%2D1/response";
        assert_eq!(route("POST", p), Route::Response("req-1".into()));
        let p = "/2018-06-01/runtime/invocation/%zz/error";
        assert_eq!(route("POST", p), Route::BadRequestId);
        assert_eq!(route("GET", p), Route::MethodNotAllowed("POST"));
        assert_eq!(
            route("GET", "/2018-06-01/runtime/restore/next"),
            Route::Restore
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/restore/error"),
            Route::Restore
        );
        let p = "/2018-06-01/runtime/invocation/next";
        assert_eq!(route("GET", p), Route::Next);
        assert_eq!(route("POST", p), Route::MethodNotAllowed("GET"));
        assert_eq!(
            route("POST", "/2018-06-01/runtime/init/error"),
            Route::InitError
        );
        assert_eq!(route("GET", "/2018-06-01/runtime/nope"), Route::NotFound);
        assert_eq!(
            route("GET", "/2020-01-01/extension/register"),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(
            route("POST", "/2020-01-01/extension/register"),
            Route::Extension(ExtRoute::Register)
        );
        assert_eq!(
            route("GET", "/2020-01-01/extension/event/next"),
            Route::Extension(ExtRoute::Next)
        );
        assert_eq!(
            route("PUT", "/2022-07-01/telemetry"),
            Route::Extension(ExtRoute::Telemetry)
        );
        assert_eq!(
            route("PUT", "/2020-08-15/logs"),
            Route::Extension(ExtRoute::Logs)
        );
        assert_eq!(route("GET", "/2020-01-01/nope"), Route::NotFound);
        let raw = b"GET /2018-06-01/runtime/invocation/next?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let (h, n) = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            (h.path.as_str(), n),
            ("/2018-06-01/runtime/invocation/next", raw.len())
        );
    }

    #[test]
    fn chunked_bodies_with_trailers_decode_in_any_split() {
        let wire: &[u8] = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\
            Lambda-Runtime-Function-Error-Type: X\r\nOther: y\r\n\r\nGET /next";
        let body_end = wire.len() - b"GET /next".len();
        // Whole, then fed one byte at a time as a slow client would send it.
        for step in [wire.len(), 1] {
            let mut b = Body::new(Framing::Chunked, 100);
            let mut buf = Vec::new();
            let mut consumed = 0;
            let mut done = false;
            for piece in wire.chunks(step) {
                buf.extend_from_slice(piece);
                let (used, d) = b.feed(&buf).unwrap();
                buf.drain(..used);
                consumed += used;
                done = d;
                if done {
                    break;
                }
            }
            assert!(done);
            assert_eq!(consumed, body_end, "the next request stays unread");
            assert_eq!(b.data, b"hello world");
            assert!(!b.overflow);
        }
        // Over the limit: counted and dropped, still delimited.
        let mut b = Body::new(Framing::Chunked, 4);
        assert_eq!(b.feed(wire), Ok((body_end, true)));
        assert!(b.overflow && b.data.is_empty());
        // Broken framing.
        let mut b = Body::new(Framing::Chunked, 100);
        assert!(b.feed(b"zz\r\n").is_err());
        let mut b = Body::new(Framing::Chunked, 100);
        assert!(b.feed(b"2\r\nabXY").is_err());
        let mut b = Body::new(Framing::Chunked, 100);
        assert!(b.feed(b"+5\r\n").is_err());
    }

    #[test]
    fn request_heads_are_bounded_and_framed() {
        // No end of head within 64 KiB.
        let mut big = b"GET /x HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse_head(&big), Err(HttpError::HeadTooLarge));
        assert_eq!(parse_head(&big[..1000]), Ok(None));
        // Too many fields.
        let mut many = b"GET /x HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many), Err(HttpError::TooManyHeaders));
        assert_eq!(Refusal::Http(HttpError::TooManyHeaders).status(), 431);
        // Framing.
        let h = |s: &str| parse_head(s.as_bytes()).map(|r| r.map(|(h, _)| h));
        let x = h("POST /x HTTP/1.1\r\nContent-Length: 12\r\nConnection: close\r\n\r\n");
        let x = x.unwrap().unwrap();
        assert_eq!((x.framing, x.keep_alive), (Framing::Length(12), false));
        let x = h("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        let x = x.unwrap().unwrap();
        assert_eq!(
            (x.framing, x.keep_alive, x.expect_continue),
            (Framing::Chunked, true, true)
        );
        let both = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(h(both), Err(HttpError::BadLength));
        let two = "POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(h(two), Err(HttpError::BadLength));
        let neg = "POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(h(neg), Err(HttpError::BadLength));
        let gz = "POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(h(gz), Err(HttpError::BadTransferEncoding));
        let old = h("GET /x HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!old.keep_alive);
    }

    #[test]
    fn invocation_state_follows_the_lifecycle() {
        let mut inv = Invocations::default();
        let (a, b) = (Token(10), Token(11));
        let next = route("GET", "/2018-06-01/runtime/invocation/next");
        let h = head("GET", "");
        // Init error before the first /next is accepted once.
        let o = inv.handle(a, Route::InitError, &h, body(b"{}", MAX_ERROR_BODY));
        assert_eq!(o.answer, Answer::Accepted);
        let o = inv.handle(a, Route::InitError, &h, body(b"{}", MAX_ERROR_BODY));
        assert_eq!(o.answer, Answer::Refused(Refusal::InvalidStateTransition));
        // First /next: Ready, and it waits.
        let o = inv.handle(a, next.clone(), &h, body(b"", 0));
        assert_eq!(
            (o.answer, o.tell),
            (Answer::Wait, Some((FromRuntime::Ready, vec![])))
        );
        // The invocation goes to the waiter that is still alive.
        let got = inv.invoke(event("r1"), |t| t == a);
        assert_eq!(got.map(|(t, _)| t), Some(a));
        let resp = Route::Response("r1".into());
        let o = inv.handle(
            a,
            Route::Response("r0".into()),
            &h,
            body(b"x", MAX_RESPONSE),
        );
        assert_eq!(o.answer, Answer::Refused(Refusal::InvalidRequestId));
        let mut streaming = head("POST", "");
        streaming.response_mode = Some("buffered".into());
        let o = inv.handle(a, resp.clone(), &streaming, body(b"x", MAX_RESPONSE));
        assert_eq!(o.answer, Answer::Refused(Refusal::InvalidResponseMode));
        let o = inv.handle(a, resp.clone(), &h, body(b"x", MAX_RESPONSE));
        assert_eq!(o.answer, Answer::Accepted);
        let o = inv.handle(a, resp, &h, body(b"x", MAX_RESPONSE));
        assert_eq!(o.answer, Answer::Refused(Refusal::InvalidRequestId));
        // An invocation before /next is queued, then handed out; a too-large response.
        assert_eq!(inv.invoke(event("r2"), |_| true), None);
        let o = inv.handle(b, next, &h, body(b"", 0));
        assert!(matches!(o.answer, Answer::Event(e) if e.header.request_id == "r2"));
        assert_eq!(o.tell, None);
        let o = inv.handle(b, Route::Response("r2".into()), &h, body(b"xyz", 2));
        assert_eq!(o.answer, Answer::Refused(Refusal::TooLarge(MAX_RESPONSE)));
        let too_large = FromRuntime::ResponseTooLarge {
            request_id: "r2".into(),
        };
        assert_eq!(o.tell, Some((too_large, vec![])));
    }
}
