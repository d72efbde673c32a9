//! The Extensions API 2020-01-01 (LAMBDA_FACTS §1.7, §6): which extensions registered, for
//! which events, and where each one is in its lifecycle.
//!
//! External extensions are the executables in [`EXTENSIONS_DIR`] (from layers); init starts
//! them before the runtime, with the runtime's confinement. An extension registering under a
//! name that init did not start is internal (started by the runtime itself) and may not take
//! SHUTDOWN events. Init ends once the runtime and every extension have called `next` (every
//! started extension must have registered by then, or ended); registration then closes.
//!
//! An invocation ends once the runtime answered it and every extension registered for INVOKE
//! called `next` again; a shutdown once every extension registered for SHUTDOWN did, or ended.
//!
//! Pure state: no I/O. Answers to other connections come back as (token, event) pairs.

use std::collections::VecDeque;
use std::path::Path;

use mio::Token;
use serde::Deserialize;
use serde_json::json;

use crate::protocol::InvokeHeader;

/// Where layers put external extensions.
pub const EXTENSIONS_DIR: &str = "/opt/extensions";
/// Most extensions per function (external and internal together).
pub const MAX_EXTENSIONS: usize = 10;
/// Largest body of a register, subscribe or error request.
pub const MAX_EXT_BODY: usize = 64 * 1024;

/// Why an Extensions API request was refused (403 with `errorType`, as RIE answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtError {
    InvalidName,
    MissingIdentifier,
    InvalidIdentifier,
    UnknownIdentifier,
    RegistrationClosed,
    TooManyExtensions,
    InvalidEventType,
    InvalidState,
    InvalidRequestFormat,
    MissingHeader,
}

impl ExtError {
    pub fn status(self) -> u16 {
        403
    }

    pub fn error_type(self) -> &'static str {
        match self {
            ExtError::InvalidName => "Extension.InvalidExtensionName",
            ExtError::MissingIdentifier => "Extension.MissingExtensionIdentifier",
            ExtError::InvalidIdentifier => "Extension.InvalidExtensionIdentifier",
            ExtError::UnknownIdentifier => "Extension.UnknownExtensionIdentifier",
            ExtError::RegistrationClosed => "Extension.RegistrationClosed",
            ExtError::TooManyExtensions => "Extension.TooManyExtensions",
            ExtError::InvalidEventType => "Extension.InvalidEventType",
            ExtError::InvalidState => "Extension.InvalidExtensionState",
            ExtError::InvalidRequestFormat => "InvalidRequestFormat",
            ExtError::MissingHeader => "Extension.MissingHeader",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            ExtError::InvalidName => "Missing or empty Lambda-Extension-Name header",
            ExtError::MissingIdentifier => "Missing Lambda-Extension-Identifier header",
            ExtError::InvalidIdentifier => "Invalid Lambda-Extension-Identifier",
            ExtError::UnknownIdentifier => "Unknown extension identifier",
            ExtError::RegistrationClosed => "Extension registration is closed (Init is over)",
            ExtError::TooManyExtensions => "Too many extensions registered (at most 10)",
            ExtError::InvalidEventType => {
                "Invalid event type (INVOKE or SHUTDOWN; internal extensions cannot take SHUTDOWN)"
            }
            ExtError::InvalidState => "An extension with this name is already registered",
            ExtError::InvalidRequestFormat => {
                "The request body must be JSON: {\"events\": [\"INVOKE\", \"SHUTDOWN\"]}"
            }
            ExtError::MissingHeader => "Missing Lambda-Extension-Function-Error-Type header",
        }
    }
}

/// A fresh random UUID (version 4), as Lambda's identifiers look.
pub fn uuid() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom fills the buffer we own; a short read leaves zeros (still unique
    // enough for identifiers inside one env, which is all these are).
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The executables in `dir`, sorted by name (the order Lambda starts them in).
pub fn discover(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter(|e| {
            std::fs::metadata(e.path())
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[derive(Debug)]
struct Ext {
    name: String,
    id: String,
    invoke: bool,
    shutdown: bool,
    /// Called `next` at least once (its Init is over).
    ready: bool,
    /// The connection whose `next` waits.
    waiting: Option<Token>,
    /// Events not handed out yet.
    queue: VecDeque<Vec<u8>>,
    /// Holds an event and has not called `next` since.
    busy: bool,
    /// Its process ended.
    gone: bool,
    /// Was sent SHUTDOWN.
    shut: bool,
}

#[derive(Debug)]
struct Launched {
    pid: i32,
    name: String,
    alive: bool,
}

/// A successful registration.
#[derive(Debug, PartialEq, Eq)]
pub struct Registered {
    pub id: String,
    /// `{"functionName","functionVersion","handler"}`.
    pub body: Vec<u8>,
}

/// What `FromRuntime::Extensions` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub count: u32,
    pub invoke: u32,
    pub shutdown: u32,
}

#[derive(Deserialize)]
struct RegisterBody {
    events: Vec<String>,
}

/// Extensions of one env.
#[derive(Debug, Default)]
pub struct Extensions {
    exts: Vec<Ext>,
    launched: Vec<Launched>,
    runtime_ready: bool,
    /// Registration closed: Init is over.
    closed: bool,
    /// The invocation running, and whether the runtime answered it.
    invoke: Option<(String, bool)>,
    shutting_down: bool,
    shutdown_told: bool,
    pub function_name: String,
    pub function_version: String,
    pub handler: String,
}

impl Extensions {
    /// Takes the register answer's fields from the runtime's environment.
    pub fn new(env: &[String]) -> Extensions {
        let var = |k: &str| {
            env.iter()
                .find_map(|e| e.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .unwrap_or_default()
                .to_string()
        };
        Extensions {
            function_name: var("AWS_LAMBDA_FUNCTION_NAME"),
            function_version: var("AWS_LAMBDA_FUNCTION_VERSION"),
            handler: var("_HANDLER"),
            ..Extensions::default()
        }
    }

    /// An external extension init started.
    pub fn launched(&mut self, pid: i32, name: &str) {
        self.launched.push(Launched {
            pid,
            name: name.to_string(),
            alive: true,
        });
    }

    /// Whether registration is closed (Init is over).
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Whether any extension was started or registered (else the runtime alone is the env).
    pub fn active(&self) -> bool {
        !self.launched.is_empty() || !self.exts.is_empty()
    }

    pub fn counts(&self) -> Counts {
        let live = || self.exts.iter().filter(|e| !e.gone);
        Counts {
            count: live().count() as u32,
            invoke: live().filter(|e| e.invoke).count() as u32,
            shutdown: live().filter(|e| e.shutdown).count() as u32,
        }
    }

    /// `POST /2020-01-01/extension/register`.
    pub fn register(&mut self, name: Option<&str>, body: &[u8]) -> Result<Registered, ExtError> {
        let name = name
            .filter(|n| !n.is_empty())
            .ok_or(ExtError::InvalidName)?;
        if self.closed {
            return Err(ExtError::RegistrationClosed);
        }
        let req: RegisterBody =
            serde_json::from_slice(body).map_err(|_| ExtError::InvalidRequestFormat)?;
        let (mut invoke, mut shutdown) = (false, false);
        for ev in &req.events {
            match ev.as_str() {
                "INVOKE" => invoke = true,
                "SHUTDOWN" => shutdown = true,
                _ => return Err(ExtError::InvalidEventType),
            }
        }
        if self.exts.iter().any(|e| e.name == name) {
            return Err(ExtError::InvalidState);
        }
        let external = self.launched.iter().any(|l| l.name == name);
        if shutdown && !external {
            return Err(ExtError::InvalidEventType);
        }
        if self.exts.len() >= MAX_EXTENSIONS {
            return Err(ExtError::TooManyExtensions);
        }
        let id = uuid();
        self.exts.push(Ext {
            name: name.to_string(),
            id: id.clone(),
            invoke,
            shutdown,
            ready: false,
            waiting: None,
            queue: VecDeque::new(),
            busy: false,
            gone: false,
            shut: false,
        });
        let body = json!({
            "functionName": self.function_name,
            "functionVersion": self.function_version,
            "handler": self.handler,
        })
        .to_string()
        .into_bytes();
        Ok(Registered { id, body })
    }

    fn find(&mut self, id: Option<&str>) -> Result<&mut Ext, ExtError> {
        let id = id
            .filter(|i| !i.is_empty())
            .ok_or(ExtError::MissingIdentifier)?;
        if !is_uuid(id) {
            return Err(ExtError::InvalidIdentifier);
        }
        self.exts
            .iter_mut()
            .find(|e| e.id == id)
            .ok_or(ExtError::UnknownIdentifier)
    }

    /// The name of the extension behind an identifier (Telemetry and Logs API subscriptions).
    pub fn identify(&mut self, id: Option<&str>) -> Result<String, ExtError> {
        self.find(id).map(|e| e.name.clone())
    }

    /// `GET /2020-01-01/extension/event/next` from connection `token`: the next event now, or
    /// `None` when the request waits.
    pub fn next(&mut self, id: Option<&str>, token: Token) -> Result<Option<Vec<u8>>, ExtError> {
        let ext = self.find(id)?;
        ext.ready = true;
        ext.busy = false;
        match ext.queue.pop_front() {
            Some(ev) => {
                ext.busy = true;
                Ok(Some(ev))
            }
            None => {
                ext.waiting = Some(token);
                Ok(None)
            }
        }
    }

    /// `POST /2020-01-01/extension/{init,exit}/error`: the extension and its error type.
    pub fn error(
        &mut self,
        id: Option<&str>,
        error_type: Option<&str>,
    ) -> Result<String, ExtError> {
        let name = self.find(id)?.name.clone();
        error_type
            .filter(|t| !t.is_empty())
            .ok_or(ExtError::MissingHeader)?;
        Ok(name)
    }

    /// Forgets a connection that closed while its `next` waited.
    pub fn forget(&mut self, token: Token) {
        for e in &mut self.exts {
            if e.waiting == Some(token) {
                e.waiting = None;
            }
        }
    }

    /// Whether `token` is an extension's waiting `next`.
    pub fn is_waiting(&self, token: Token) -> bool {
        self.exts.iter().any(|e| e.waiting == Some(token))
    }

    fn deliver(ext: &mut Ext, event: Vec<u8>, out: &mut Vec<(Token, Vec<u8>)>) {
        match ext.waiting.take() {
            Some(t) if ext.queue.is_empty() => {
                ext.busy = true;
                out.push((t, event));
            }
            waiting => {
                ext.waiting = waiting;
                ext.queue.push_back(event);
            }
        }
    }

    /// An invocation: INVOKE events for the extensions registered for them.
    pub fn invoke(&mut self, h: &InvokeHeader) -> Vec<(Token, Vec<u8>)> {
        let mut out = Vec::new();
        if !self.exts.iter().any(|e| e.invoke && !e.gone) {
            return out;
        }
        self.invoke = Some((h.request_id.clone(), false));
        let mut event = json!({
            "eventType": "INVOKE",
            "deadlineMs": h.deadline_ms,
            "requestId": h.request_id,
            "invokedFunctionArn": h.invoked_function_arn,
        });
        if let Some(t) = &h.trace_id {
            event["tracing"] = json!({"type": "X-Amzn-Trace-Id", "value": t});
        }
        let bytes = event.to_string().into_bytes();
        for e in self.exts.iter_mut().filter(|e| e.invoke && !e.gone) {
            Extensions::deliver(e, bytes.clone(), &mut out);
        }
        out
    }

    /// The runtime answered an invocation (response, error or a too-large response).
    pub fn runtime_answered(&mut self, request_id: &str) {
        if let Some((id, answered)) = &mut self.invoke {
            if id == request_id {
                *answered = true;
            }
        }
    }

    /// The request id of an invocation that is now over (once).
    pub fn take_invoke_done(&mut self) -> Option<String> {
        match &self.invoke {
            Some((_, true))
                if self
                    .exts
                    .iter()
                    .all(|e| e.gone || !e.invoke || (!e.busy && e.queue.is_empty())) =>
            {
                self.invoke.take().map(|(id, _)| id)
            }
            _ => None,
        }
    }

    /// The runtime called `/runtime/invocation/next` for the first time.
    pub fn runtime_ready(&mut self) {
        self.runtime_ready = true;
    }

    /// Init is over (once): registration closes; the counts to report.
    pub fn take_ready(&mut self) -> Option<Counts> {
        let complete = self.runtime_ready
            && self
                .launched
                .iter()
                .all(|l| !l.alive || self.exts.iter().any(|e| e.name == l.name))
            && self.exts.iter().all(|e| e.ready || e.gone);
        if self.closed || !complete {
            return None;
        }
        self.closed = true;
        Some(self.counts())
    }

    /// The env is being destroyed: SHUTDOWN events for the extensions registered for them.
    pub fn shutdown(&mut self, reason: &str, deadline_ms: u64) -> Vec<(Token, Vec<u8>)> {
        self.shutting_down = true;
        let bytes = json!({
            "eventType": "SHUTDOWN",
            "shutdownReason": reason,
            "deadlineMs": deadline_ms,
        })
        .to_string()
        .into_bytes();
        let mut out = Vec::new();
        for e in self.exts.iter_mut().filter(|e| e.shutdown && !e.gone) {
            e.shut = true;
            Extensions::deliver(e, bytes.clone(), &mut out);
        }
        out
    }

    /// Every extension registered for SHUTDOWN handled it (once).
    pub fn take_shutdown_done(&mut self) -> bool {
        let done = self.shutting_down
            && !self.shutdown_told
            && self
                .exts
                .iter()
                .all(|e| e.gone || !e.shutdown || (e.shut && !e.busy && e.queue.is_empty()));
        if done {
            self.shutdown_told = true;
        }
        done
    }

    /// A child of init ended: if it was an extension, it no longer holds anything up.
    pub fn exited(&mut self, pid: i32) {
        for l in self.launched.iter_mut().filter(|l| l.pid == pid) {
            l.alive = false;
            for e in self.exts.iter_mut().filter(|e| e.name == l.name) {
                e.gone = true;
                e.waiting = None;
                e.queue.clear();
                e.busy = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exts() -> Extensions {
        Extensions::new(&[
            "AWS_LAMBDA_FUNCTION_NAME=f".into(),
            "AWS_LAMBDA_FUNCTION_VERSION=$LATEST".into(),
            "_HANDLER=h.handler".into(),
        ])
    }

    fn header(id: &str) -> InvokeHeader {
        InvokeHeader {
            request_id: id.into(),
            deadline_ms: 99,
            invoked_function_arn: "arn:f".into(),
            trace_id: Some("Root=1-2-3".into()),
            client_context: None,
            cognito_identity: None,
            payload_len: 0,
        }
    }

    fn event(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn uuids_look_like_uuids() {
        let (a, b) = (uuid(), uuid());
        assert!(is_uuid(&a) && is_uuid(&b) && a != b);
        assert_eq!(&a[14..15], "4");
        assert!(!is_uuid("not-a-uuid"));
    }

    #[test]
    fn registration_is_validated() {
        let mut x = exts();
        x.launched(7, "ext-a");
        let body = br#"{"events":["INVOKE","SHUTDOWN"]}"#;
        assert_eq!(x.register(None, body), Err(ExtError::InvalidName));
        assert_eq!(x.register(Some(""), body), Err(ExtError::InvalidName));
        assert_eq!(
            x.register(Some("ext-a"), b"nope"),
            Err(ExtError::InvalidRequestFormat)
        );
        assert_eq!(
            x.register(Some("ext-a"), br#"{"events":["BOOM"]}"#),
            Err(ExtError::InvalidEventType)
        );
        // Internal extensions (not started by init) cannot take SHUTDOWN.
        assert_eq!(
            x.register(Some("internal"), body),
            Err(ExtError::InvalidEventType)
        );
        let r = x.register(Some("ext-a"), body).unwrap();
        assert!(is_uuid(&r.id));
        assert_eq!(
            event(&r.body),
            json!({"functionName":"f","functionVersion":"$LATEST","handler":"h.handler"})
        );
        assert_eq!(x.register(Some("ext-a"), body), Err(ExtError::InvalidState));
        for i in 0..9 {
            let name = format!("in{i}");
            assert!(x.register(Some(&name), br#"{"events":["INVOKE"]}"#).is_ok());
        }
        assert_eq!(
            x.register(Some("one-more"), br#"{"events":[]}"#),
            Err(ExtError::TooManyExtensions)
        );
        // Identifiers.
        assert_eq!(x.next(None, Token(5)), Err(ExtError::MissingIdentifier));
        assert_eq!(
            x.next(Some("xyz"), Token(5)),
            Err(ExtError::InvalidIdentifier)
        );
        assert_eq!(
            x.next(Some(&uuid()), Token(5)),
            Err(ExtError::UnknownIdentifier)
        );
        assert_eq!(x.error(Some(&r.id), None), Err(ExtError::MissingHeader));
        assert_eq!(
            x.error(Some(&r.id), Some("Extension.Bad")).as_deref(),
            Ok("ext-a")
        );
    }

    #[test]
    fn init_waits_for_runtime_and_every_extension() {
        let mut x = exts();
        x.launched(7, "a");
        x.launched(8, "b");
        assert!(x.active());
        let a = x.register(Some("a"), br#"{"events":["INVOKE"]}"#).unwrap();
        x.runtime_ready();
        assert_eq!(x.take_ready(), None, "b has not registered");
        assert_eq!(x.next(Some(&a.id), Token(10)), Ok(None));
        assert_eq!(x.take_ready(), None);
        // b dies without registering: it no longer holds Init up.
        x.exited(8);
        let c = x.take_ready().unwrap();
        assert_eq!(
            c,
            Counts {
                count: 1,
                invoke: 1,
                shutdown: 0
            }
        );
        assert_eq!(x.take_ready(), None, "once");
        assert_eq!(
            x.register(Some("late"), br#"{"events":[]}"#),
            Err(ExtError::RegistrationClosed)
        );
    }

    #[test]
    fn invocations_end_when_runtime_and_extensions_are_done() {
        let mut x = exts();
        x.launched(7, "a");
        let a = x
            .register(Some("a"), br#"{"events":["INVOKE","SHUTDOWN"]}"#)
            .unwrap();
        let b = x.register(Some("b"), br#"{"events":["INVOKE"]}"#).unwrap();
        assert_eq!(x.next(Some(&a.id), Token(10)), Ok(None));
        assert!(x.is_waiting(Token(10)));
        x.runtime_ready();
        // b has not called next yet.
        assert_eq!(x.take_ready(), None);
        assert_eq!(x.next(Some(&b.id), Token(11)), Ok(None));
        assert!(x.take_ready().is_some());

        let out = x.invoke(&header("r1"));
        assert_eq!(out.len(), 2);
        let ev = event(&out[0].1);
        assert_eq!(out[0].0, Token(10));
        assert_eq!(ev["eventType"], "INVOKE");
        assert_eq!(ev["requestId"], "r1");
        assert_eq!(ev["deadlineMs"], 99);
        assert_eq!(ev["invokedFunctionArn"], "arn:f");
        assert_eq!(ev["tracing"]["value"], "Root=1-2-3");
        assert_eq!(x.take_invoke_done(), None);
        x.runtime_answered("r1");
        assert_eq!(x.take_invoke_done(), None, "extensions still busy");
        assert_eq!(x.next(Some(&a.id), Token(10)), Ok(None));
        assert_eq!(x.take_invoke_done(), None);
        // b's connection closed and it came back on another one.
        x.forget(Token(11));
        assert_eq!(x.next(Some(&b.id), Token(12)), Ok(None));
        assert_eq!(x.take_invoke_done().as_deref(), Some("r1"));
        assert_eq!(x.take_invoke_done(), None, "once");

        // An invocation while b is not waiting: queued for its next call.
        x.forget(Token(12));
        let out = x.invoke(&header("r2"));
        assert_eq!(out.len(), 1);
        x.runtime_answered("r2");
        assert_eq!(x.take_invoke_done(), None);
        let got = x.next(Some(&b.id), Token(13)).unwrap().unwrap();
        assert_eq!(event(&got)["requestId"], "r2");
        assert_eq!(x.take_invoke_done(), None);
        assert_eq!(x.next(Some(&a.id), Token(10)), Ok(None));
        assert_eq!(x.next(Some(&b.id), Token(13)), Ok(None));
        assert_eq!(x.take_invoke_done().as_deref(), Some("r2"));

        // Shutdown goes to `a` only; done once it calls next again or ends.
        assert!(!x.take_shutdown_done());
        let out = x.shutdown("spindown", 1234);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Token(10));
        let ev = event(&out[0].1);
        assert_eq!(
            ev,
            json!({"eventType":"SHUTDOWN","shutdownReason":"spindown","deadlineMs":1234})
        );
        assert!(!x.take_shutdown_done());
        x.exited(7);
        assert!(x.take_shutdown_done());
        assert!(!x.take_shutdown_done(), "once");
    }

    #[test]
    fn an_env_without_extensions_is_inactive() {
        let mut x = exts();
        assert!(!x.active());
        x.runtime_ready();
        assert_eq!(
            x.take_ready(),
            Some(Counts {
                count: 0,
                invoke: 0,
                shutdown: 0
            })
        );
        assert!(x.invoke(&header("r")).is_empty());
        x.runtime_answered("r");
        assert_eq!(x.take_invoke_done(), None);
    }
}
