//! Invocations over an env's control socket: the supervisor's side of the Runtime API relay.
//!
//! Blocking helpers for a scheduler worker thread that owns one env at a time. A message
//! with a payload is one JSON datagram announcing `payload_len`, then raw datagrams of at most
//! [`CHUNK`] bytes (see `lamina_init::protocol`). init never blocks on its own sends (it queues
//! them), so a blocking send here always progresses while init reads.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lamina_init::protocol::{
    ExitStatus, FromInit, FromRuntime, InvokeHeader, ReportMetrics, ToInit, ToRuntime, CHUNK,
    MAX_MESSAGE, MAX_RESPONSE,
};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::MsgFlags;

use super::ExecutionEnvironment;

/// The raw datagrams of a payload follow its message at once; a gap this long means init
/// stopped mid-message.
const PAYLOAD_GAP: Duration = Duration::from_secs(10);

/// Largest payload accepted from init (responses are capped at [`MAX_RESPONSE`] inside).
const MAX_PAYLOAD: u64 = 2 * MAX_RESPONSE as u64;

/// How long extensions registered for SHUTDOWN get before the env is killed (Lambda: 2,000 ms
/// with external extensions).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(2000);

/// Why an env is destroyed, as extensions see it in their SHUTDOWN event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ShutdownReason {
    Spindown = 0,
    Timeout = 1,
    Failure = 2,
}

/// The env's extensions (from `FromRuntime::Extensions`; all zero without any) and the
/// reason the env will be destroyed for.
#[derive(Debug, Default)]
pub struct ExtensionCounts {
    pub count: AtomicU32,
    pub invoke: AtomicU32,
    pub shutdown: AtomicU32,
    reason: AtomicU8,
}

impl ExtensionCounts {
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    pub fn wants_invoke(&self) -> bool {
        self.invoke.load(Ordering::Relaxed) > 0
    }

    pub fn wants_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed) > 0
    }

    /// Records why the env will be destroyed (default: spindown).
    pub fn set_reason(&self, r: ShutdownReason) {
        self.reason.store(r as u8, Ordering::Relaxed);
    }

    fn reason(&self) -> &'static str {
        match self.reason.load(Ordering::Relaxed) {
            1 => "timeout",
            2 => "failure",
            _ => "spindown",
        }
    }
}

/// A failed exchange with init.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("control socket send: {0}")]
    Send(#[source] io::Error),
    #[error("control socket receive: {0}")]
    Receive(#[source] io::Error),
    #[error("control message: {0}")]
    Message(#[from] serde_json::Error),
    #[error("unexpected message from init: {0}")]
    Unexpected(String),
    #[error("payload of {0} bytes is over the limit")]
    PayloadTooLarge(u64),
    #[error("payload datagrams overran the announced {0} bytes")]
    PayloadOverrun(u64),
    #[error("payload stopped after {got} of {expected} bytes")]
    PayloadStalled { got: u64, expected: u64 },
}

pub type Result<T> = std::result::Result<T, InvokeError>;

/// What an env reports while it serves invocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvEvent {
    /// The runtime called `/next` for the first time: Init is over.
    Ready,
    /// `POST /runtime/init/error`.
    InitError {
        error_type: Option<String>,
        body: Vec<u8>,
    },
    /// `POST /runtime/invocation/{id}/response`.
    Response {
        request_id: String,
        content_type: Option<String>,
        body: Vec<u8>,
    },
    /// `POST /runtime/invocation/{id}/error`.
    Error {
        request_id: String,
        error_type: Option<String>,
        body: Vec<u8>,
    },
    /// The runtime's response was over 6 MiB + 100 B (it got 413).
    ResponseTooLarge { request_id: String },
    /// The invocation and every extension's part in it are over (envs with INVOKE extensions).
    InvokeDone { request_id: String },
    /// Extensions are done with SHUTDOWN.
    ShutdownDone,
    /// The runtime (the function's process) ended; init ends too.
    Exited(ExitStatus),
    /// init closed the control socket.
    Gone,
}

fn poll_timeout(deadline: Option<Instant>) -> PollTimeout {
    match deadline {
        None => PollTimeout::NONE,
        Some(d) => {
            let ms = d.saturating_duration_since(Instant::now()).as_millis();
            PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
        }
    }
}

impl ExecutionEnvironment {
    /// Sends an invocation: its header (with `payload_len` set here) and the payload.
    pub fn send_invoke(&self, mut header: InvokeHeader, payload: &[u8]) -> Result<()> {
        header.payload_len = payload.len() as u64;
        let msg = serde_json::to_vec(&ToInit::Runtime(ToRuntime::Invoke(header)))?;
        self.send_datagram(&msg)?;
        for chunk in payload.chunks(CHUNK) {
            self.send_datagram(chunk)?;
        }
        Ok(())
    }

    /// The next event from the env; `None` once `deadline` has passed.
    pub fn recv_event(&self, deadline: Option<Instant>) -> Result<Option<EnvEvent>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let runtime = loop {
            let n = match self.recv_datagram(&mut buf, deadline)? {
                None => return Ok(None),
                Some(0) => return Ok(Some(EnvEvent::Gone)),
                Some(n) => n,
            };
            let msg: FromInit = serde_json::from_slice(buf.get(..n).unwrap_or_default())?;
            match msg {
                FromInit::Exited(status) => return Ok(Some(EnvEvent::Exited(status))),
                // Comes right before Ready: recorded on the env, not an event of its own.
                FromInit::Runtime(FromRuntime::Extensions {
                    count,
                    invoke,
                    shutdown,
                }) => {
                    self.extensions.count.store(count, Ordering::Relaxed);
                    self.extensions.invoke.store(invoke, Ordering::Relaxed);
                    self.extensions.shutdown.store(shutdown, Ordering::Relaxed);
                }
                FromInit::Runtime(r) => break r,
                other => return Err(InvokeError::Unexpected(format!("{other:?}"))),
            }
        };
        let len = match &runtime {
            FromRuntime::InitError { payload_len, .. }
            | FromRuntime::Response { payload_len, .. }
            | FromRuntime::Error { payload_len, .. } => *payload_len,
            _ => 0,
        };
        let Some(body) = self.recv_payload(len, &mut buf)? else {
            return Ok(Some(EnvEvent::Gone));
        };
        Ok(Some(match runtime {
            FromRuntime::Ready => EnvEvent::Ready,
            FromRuntime::InitError { error_type, .. } => EnvEvent::InitError { error_type, body },
            FromRuntime::Response {
                request_id,
                content_type,
                ..
            } => EnvEvent::Response {
                request_id,
                content_type,
                body,
            },
            FromRuntime::Error {
                request_id,
                error_type,
                ..
            } => EnvEvent::Error {
                request_id,
                error_type,
                body,
            },
            FromRuntime::ResponseTooLarge { request_id } => {
                EnvEvent::ResponseTooLarge { request_id }
            }
            FromRuntime::InvokeDone { request_id } => EnvEvent::InvokeDone { request_id },
            FromRuntime::ShutdownDone => EnvEvent::ShutdownDone,
            FromRuntime::Extensions { .. } => {
                return Err(InvokeError::Unexpected("Extensions".into()))
            }
        }))
    }

    /// After the runtime answered `request_id`: waits (until `deadline`) for the extensions
    /// registered for INVOKE to be done with it. `true` when the invocation is over (at once
    /// without such extensions), `false` when the deadline passed or the env broke.
    pub fn wait_invoke_done(&self, request_id: &str, deadline: Instant) -> bool {
        if !self.extensions.wants_invoke() {
            return true;
        }
        loop {
            match self.recv_event(Some(deadline)) {
                Ok(Some(EnvEvent::InvokeDone { request_id: id })) if id == request_id => {
                    return true
                }
                Ok(Some(EnvEvent::Exited(_) | EnvEvent::Gone)) | Ok(None) | Err(_) => return false,
                Ok(Some(_)) => {}
            }
        }
    }

    /// Sends an invocation's REPORT figures for telemetry (envs with extensions only).
    pub fn send_report(&self, m: ReportMetrics) {
        if self.extensions.any() {
            if let Ok(msg) = serde_json::to_vec(&ToInit::Report(m)) {
                let _ = self.send_datagram(&msg);
            }
        }
    }

    /// Gives extensions registered for SHUTDOWN their event and waits, at most
    /// [`SHUTDOWN_GRACE`], until they are done (the env must be thawed).
    pub fn shutdown_extensions(&self) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let deadline_ms = (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            + SHUTDOWN_GRACE)
            .as_millis() as u64;
        let msg = ToInit::Shutdown {
            reason: self.extensions.reason().to_string(),
            deadline_ms,
        };
        let Ok(bytes) = serde_json::to_vec(&msg) else {
            return;
        };
        if self.send_datagram(&bytes).is_err() {
            return;
        }
        loop {
            match self.recv_event(Some(deadline)) {
                Ok(Some(EnvEvent::ShutdownDone | EnvEvent::Exited(_) | EnvEvent::Gone))
                | Ok(None)
                | Err(_) => return,
                Ok(Some(_)) => {}
            }
        }
    }

    /// Waits for the end of Init: `Ready`, `InitError`, `Exited` or `Gone`; `None` once
    /// `deadline` has passed.
    pub fn wait_ready(&self, deadline: Option<Instant>) -> Result<Option<EnvEvent>> {
        match self.recv_event(deadline)? {
            Some(
                e @ (EnvEvent::Ready
                | EnvEvent::InitError { .. }
                | EnvEvent::Exited(_)
                | EnvEvent::Gone),
            ) => Ok(Some(e)),
            Some(other) => Err(InvokeError::Unexpected(format!("{other:?} before Ready"))),
            None => Ok(None),
        }
    }

    fn send_datagram(&self, datagram: &[u8]) -> Result<()> {
        let fd = self.control.as_raw_fd();
        loop {
            match nix::sys::socket::send(fd, datagram, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => {}
                // Only if someone made the socket non-blocking: wait for room.
                Err(Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(self.control.as_fd(), PollFlags::POLLOUT)];
                    match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(e) => return Err(InvokeError::Send(e.into())),
                    }
                }
                Err(e) => return Err(InvokeError::Send(e.into())),
            }
        }
    }

    /// One datagram; `Some(0)` when init is gone, `None` once `deadline` has passed.
    fn recv_datagram(&self, buf: &mut [u8], deadline: Option<Instant>) -> Result<Option<usize>> {
        loop {
            let mut fds = [PollFd::new(self.control.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, poll_timeout(deadline)) {
                Ok(0) if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(None),
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(InvokeError::Receive(e.into())),
            }
            let flags = MsgFlags::MSG_DONTWAIT;
            match nix::sys::socket::recv(self.control.as_raw_fd(), buf, flags) {
                Ok(n) => return Ok(Some(n)),
                Err(Errno::ECONNRESET) => return Ok(Some(0)),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(InvokeError::Receive(e.into())),
            }
        }
    }

    /// The `len` payload bytes that follow a message; `None` when init went away meanwhile.
    fn recv_payload(&self, len: u64, buf: &mut [u8]) -> Result<Option<Vec<u8>>> {
        if len > MAX_PAYLOAD {
            return Err(InvokeError::PayloadTooLarge(len));
        }
        let mut body = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        while (body.len() as u64) < len {
            let gap = Some(Instant::now() + PAYLOAD_GAP);
            let n = match self.recv_datagram(buf, gap)? {
                None => {
                    return Err(InvokeError::PayloadStalled {
                        got: body.len() as u64,
                        expected: len,
                    })
                }
                Some(0) => return Ok(None),
                Some(n) => n,
            };
            if (body.len() + n) as u64 > len {
                return Err(InvokeError::PayloadOverrun(len));
            }
            body.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        Ok(Some(body))
    }
}
