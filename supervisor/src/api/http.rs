//! A small HTTP/1.1 server on a mio reactor. The reactor thread only accepts, reads, parses and
//! writes; complete requests go to a pool of worker threads (SQLite, unzip and invocations
//! block), whose responses come back through a channel and a mio `Waker`.
//!
//! Limits: request head 64 KiB; body [`MAX_BODY`]; a connection that sends nothing for
//! [`IDLE`] is closed, so slow or half-open clients never pin resources.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

/// Largest request head.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest request body (CreateFunction's limit: 70,167,211 bytes).
pub const MAX_BODY: usize = 70_167_211;
/// Idle connections are closed after this long.
pub const IDLE: Duration = Duration::from_secs(60);

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path as sent (percent-encoded), without the query.
    pub raw_path: String,
    /// Query as sent (after `?`), possibly empty.
    pub raw_query: String,
    /// Headers as sent (names in original case).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub peer: Option<SocketAddr>,
}

impl Request {
    /// First header with this name (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// A response to send.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn serialize(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (n, v) in &self.headers {
            let _ = write!(out, "{n}: {v}\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// What the server calls for every complete request (on a worker thread).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> Response;
    /// A request that could not even be parsed (bad head, oversized body...).
    fn reject(&self, status: u16, message: &str) -> Response;
    /// Shutdown's drain period ended with requests still in flight: make them end now.
    fn abort_in_flight(&self) {}
}

struct Conn {
    stream: TcpStream,
    peer: Option<SocketAddr>,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    written: usize,
    busy: bool,
    close_after_write: bool,
    /// The client shut down its sending side.
    eof: bool,
    last_active: Instant,
}

enum Parsed {
    Incomplete,
    Done(Request, usize, bool),
    Bad(u16, &'static str),
}

fn parse(buf: &[u8], peer: Option<SocketAddr>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Parsed::Bad(431, "request head too large")
            } else {
                Parsed::Incomplete
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad(431, "too many headers"),
        Err(_) => return Parsed::Bad(400, "malformed HTTP request"),
    };
    if head_len > MAX_HEAD {
        return Parsed::Bad(431, "request head too large");
    }
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("/");
    let (raw_path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let keep_alive = req.version == Some(1)
        && !req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
        });
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    if headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
    {
        return Parsed::Bad(
            411,
            "chunked request bodies are not supported; send Content-Length",
        );
    }
    let len = match headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        None => 0,
        Some((_, v)) => match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
        {
            Some(n) => n,
            None => return Parsed::Bad(400, "invalid Content-Length"),
        },
    };
    if len > MAX_BODY {
        return Parsed::Bad(413, "request body too large");
    }
    if buf.len() < head_len + len {
        return Parsed::Incomplete;
    }
    let body = buf[head_len..head_len + len].to_vec();
    Parsed::Done(
        Request {
            method,
            raw_path,
            raw_query,
            headers,
            body,
            peer,
        },
        head_len + len,
        keep_alive,
    )
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// Serves until `stop` is set (checked at least every 100 ms), then drains: no new connections
/// or requests, in-flight requests are answered for at most `drain`, after which the handler is
/// told to abort them.
pub fn serve(
    listener: std::net::TcpListener,
    handler: Arc<dyn Handler>,
    workers: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    drain: Duration,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);

    let (job_tx, job_rx) = mpsc::channel::<(usize, Request)>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<(usize, Response, bool)>();
    let mut threads = Vec::new();
    for _ in 0..workers.max(1) {
        threads.push(spawn_worker(
            job_rx.clone(),
            done_tx.clone(),
            handler.clone(),
            waker.clone(),
        ));
    }
    drop(done_tx);

    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next = 2usize;
    let mut events = Events::with_capacity(1024);
    let mut last_sweep = Instant::now();
    let mut drain_until: Option<Instant> = None;
    loop {
        if drain_until.is_none() && stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = poll.registry().deregister(&mut listener);
            drain_until = Some(Instant::now() + drain);
            // Idle connections close now; busy ones close once answered.
            conns.retain(|_, c| {
                c.eof = true;
                c.busy || !c.outbuf.is_empty()
            });
        }
        if let Some(until) = drain_until {
            let in_flight = conns.values().any(|c| c.busy || !c.outbuf.is_empty());
            if !in_flight {
                break;
            }
            if Instant::now() >= until {
                tracing::warn!("drain period over with requests in flight: aborting them");
                handler.abort_in_flight();
                break;
            }
        }
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, peer)) => {
                            let id = next;
                            next += 1;
                            let _ = stream.set_nodelay(true);
                            if poll
                                .registry()
                                .register(&mut stream, Token(id), Interest::READABLE)
                                .is_ok()
                            {
                                conns.insert(
                                    id,
                                    Conn {
                                        stream,
                                        peer: Some(peer),
                                        inbuf: Vec::new(),
                                        outbuf: Vec::new(),
                                        written: 0,
                                        busy: false,
                                        close_after_write: false,
                                        eof: false,
                                        last_active: Instant::now(),
                                    },
                                );
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                },
                WAKER => {}
                Token(id) => {
                    let close = match conns.get_mut(&id) {
                        Some(c) => on_ready(
                            c,
                            id,
                            ev.is_readable(),
                            ev.is_writable(),
                            &job_tx,
                            handler.as_ref(),
                        ),
                        None => false,
                    };
                    if close {
                        if let Some(mut c) = conns.remove(&id) {
                            let _ = poll.registry().deregister(&mut c.stream);
                        }
                    }
                }
            }
        }
        while let Ok((id, resp, keep_alive)) = done_rx.try_recv() {
            let mut close = false;
            if let Some(c) = conns.get_mut(&id) {
                c.busy = false;
                c.outbuf = resp.serialize(keep_alive);
                c.written = 0;
                c.close_after_write = !keep_alive || c.eof;
                close = flush(c);
                if !close && c.written < c.outbuf.len() {
                    let _ = poll.registry().reregister(
                        &mut c.stream,
                        Token(id),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                } else if !close {
                    // Pipelined requests already buffered.
                    close = advance(c, id, &job_tx, handler.as_ref());
                }
            }
            if close {
                if let Some(mut c) = conns.remove(&id) {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
            }
        }
        if drain_until.is_some() {
            continue;
        }
        if last_sweep.elapsed() > Duration::from_secs(1) {
            last_sweep = Instant::now();
            let stale: Vec<usize> = conns
                .iter()
                .filter(|(_, c)| !c.busy && c.last_active.elapsed() > IDLE)
                .map(|(id, _)| *id)
                .collect();
            for id in stale {
                if let Some(mut c) = conns.remove(&id) {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
            }
        }
    }
    drop(job_tx);
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn spawn_worker(
    jobs: Arc<Mutex<Receiver<(usize, Request)>>>,
    done: Sender<(usize, Response, bool)>,
    handler: Arc<dyn Handler>,
    waker: Arc<Waker>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((id, req)) = job else { return };
        let keep_alive = !req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let resp = handler.handle(req);
        if done.send((id, resp, keep_alive)).is_err() {
            return;
        }
        let _ = waker.wake();
    })
}

/// Writes what it can; true when the connection should close.
fn flush(c: &mut Conn) -> bool {
    while c.written < c.outbuf.len() {
        match c.stream.write(&c.outbuf[c.written..]) {
            Ok(0) => return true,
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
    c.last_active = Instant::now();
    c.outbuf.clear();
    c.written = 0;
    c.close_after_write
}

/// Parses the next buffered request, if complete, and hands it to a worker.
fn advance(
    c: &mut Conn,
    id: usize,
    jobs: &Sender<(usize, Request)>,
    handler: &dyn Handler,
) -> bool {
    if c.busy || c.inbuf.is_empty() {
        return false;
    }
    match parse(&c.inbuf, c.peer) {
        Parsed::Incomplete => false,
        Parsed::Done(req, used, keep_alive) => {
            c.inbuf.drain(..used);
            c.busy = true;
            let mut req = req;
            if !keep_alive {
                req.headers.push(("connection".into(), b"close".to_vec()));
            }
            jobs.send((id, req)).is_err()
        }
        Parsed::Bad(status, msg) => {
            c.inbuf.clear();
            c.outbuf = handler.reject(status, msg).serialize(false);
            c.written = 0;
            c.close_after_write = true;
            flush(c)
        }
    }
}

/// Handles readiness; true when the connection should close.
fn on_ready(
    c: &mut Conn,
    id: usize,
    readable: bool,
    writable: bool,
    jobs: &Sender<(usize, Request)>,
    handler: &dyn Handler,
) -> bool {
    if writable && !c.outbuf.is_empty() && flush(c) {
        return true;
    }
    if readable {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    // The client finished sending; answer what is in flight, then close.
                    c.eof = true;
                    return !c.busy;
                }
                Ok(n) => {
                    c.last_active = Instant::now();
                    c.inbuf.extend_from_slice(&buf[..n]);
                    if c.inbuf.len() > MAX_HEAD + MAX_BODY {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }
    advance(c, id, jobs, handler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_head_query_and_body() {
        let raw = b"POST /2015-03-31/functions/f/invocations?Qualifier=%24LATEST HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
        match parse(raw, None) {
            Parsed::Done(r, used, ka) => {
                assert_eq!(r.raw_path, "/2015-03-31/functions/f/invocations");
                assert_eq!(r.raw_query, "Qualifier=%24LATEST");
                assert_eq!(r.body, b"{}");
                assert_eq!(used, raw.len());
                assert!(ka);
            }
            _ => panic!("not parsed"),
        }
    }

    #[test]
    fn incomplete_and_bad_requests() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n", None),
            Parsed::Incomplete
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", None),
            Parsed::Incomplete
        ));
        assert!(matches!(
            parse(b"\x00\x01garbage\r\n\r\n", None),
            Parsed::Bad(400, _)
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", None),
            Parsed::Bad(400, _)
        ));
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(parse(big.as_bytes(), None), Parsed::Bad(413, _)));
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert!(matches!(parse(&huge, None), Parsed::Bad(431, _)));
    }
}
