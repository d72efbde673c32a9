//! Messages between the supervisor and init over the env's control socket
//! (a `SOCK_SEQPACKET` socketpair: one datagram = one message, JSON encoded).
//!
//! The supervisor's end stays in the supervisor; init finds its end at [`CONTROL_FD`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The fd number at which init finds its end of the control socket.
pub const CONTROL_FD: i32 = 3;

/// Largest control message either side sends or accepts.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// One seccomp BPF program: `sock_filter` instructions packed as
/// `code as u64 | (jt as u64) << 16 | (jf as u64) << 24 | (k as u64) << 32`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfFilter(pub Vec<u64>);

impl BpfFilter {
    /// Packs one instruction.
    pub fn pack(code: u16, jt: u8, jf: u8, k: u32) -> u64 {
        u64::from(code) | u64::from(jt) << 16 | u64::from(jf) << 24 | u64::from(k) << 32
    }

    /// Unpacks into the kernel's `sock_filter` layout.
    pub fn to_sock_filters(&self) -> Vec<libc::sock_filter> {
        self.0
            .iter()
            .map(|&w| libc::sock_filter {
                code: (w & 0xffff) as u16,
                jt: ((w >> 16) & 0xff) as u8,
                jf: ((w >> 24) & 0xff) as u8,
                k: (w >> 32) as u32,
            })
            .collect()
    }
}

/// A read-only bind mount of a host path into the env's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// Host path (resolved by the supervisor).
    pub source: PathBuf,
    /// Absolute path inside the env.
    pub target: PathBuf,
}

/// How init composes the env's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsPlan {
    /// Directory (on the host, inside the env's private run dir) where the root is assembled.
    pub mountpoint: PathBuf,
    /// Overlay lowerdirs of `/`, topmost first (the generated skeleton first, then the base).
    pub root_lowers: Vec<PathBuf>,
    /// Host directories bound read-only into the root (e.g. `/usr` for `--base host`).
    pub binds: Vec<Bind>,
    /// Function code, mounted read-only at `/var/task`.
    pub code: Option<PathBuf>,
    /// Layers merged read-only at `/opt`, in the order given (later layers over earlier ones).
    pub layers: Vec<PathBuf>,
    /// Size of the `/tmp` tmpfs in MiB.
    pub tmp_size_mb: u64,
}

/// A resource limit applied to the function's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: i32,
    pub soft: u64,
    pub hard: u64,
}

/// The function's process: what runs as PID 2 and how it is confined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub rlimits: Vec<Rlimit>,
    /// Seccomp programs, installed last, right before exec.
    pub seccomp: Vec<BpfFilter>,
    /// Paths (inside the env) where the process may write besides `/tmp`.
    pub writable: Vec<PathBuf>,
}

/// Everything init needs to build the env and start the function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvConfig {
    pub hostname: String,
    pub rootfs: RootfsPlan,
    pub process: ProcessSpec,
    /// cgroup v1: init was moved into its cgroups after clone and must create its own
    /// cgroup namespace now (on v2, clone3 already did both at once).
    pub unshare_cgroupns: bool,
    /// Serve the Runtime API on [`RUNTIME_API_ADDR`] inside the env (`lamina serve`); the
    /// function's process is then a runtime (bootstrap) that polls it for invocations.
    pub runtime_api: bool,
}

/// Supervisor → init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToInit {
    /// Build the env and start the function's process.
    Start(Box<EnvConfig>),
    /// Forward this signal to the function's process.
    Signal(i32),
    /// Runtime API traffic (only when `EnvConfig::runtime_api` is set).
    Runtime(ToRuntime),
    /// The env is about to be destroyed: extensions registered for SHUTDOWN get the event
    /// (sent only when `FromRuntime::Extensions` announced some); init answers
    /// `FromRuntime::ShutdownDone` once they are done or `deadline_ms` (epoch ms) passed.
    Shutdown { reason: String, deadline_ms: u64 },
    /// An invocation's REPORT figures, for `platform.report` to telemetry subscribers (sent
    /// only to envs with extensions).
    Report(ReportMetrics),
}

/// The figures of an invocation's REPORT line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportMetrics {
    pub request_id: String,
    /// `success`, `error`, `timeout` or `failure`.
    pub status: String,
    pub duration_us: u64,
    pub billed_duration_ms: u64,
    pub memory_size_mb: u64,
    pub max_memory_used_mb: u64,
    pub init_duration_us: Option<u64>,
}

/// How the function's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// Init → supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromInit {
    /// The env is built and the function's process was started.
    Started {
        /// PID of the function's process inside the env.
        pid: i32,
        /// Microseconds init spent on each setup step, in order.
        steps: Vec<(String, u64)>,
        /// Whether the kernel enforces the Landlock ruleset (false: kernel without Landlock).
        landlock: bool,
    },
    /// A setup step failed; init exits after sending this. `exec_code` is 127 (command not
    /// found) or 126 (not executable) when the command itself could not be executed.
    SetupFailed {
        step: String,
        error: String,
        exec_code: Option<i32>,
    },
    /// The function's process ended; init exits after sending this.
    Exited(ExitStatus),
    /// Runtime API traffic (only when `EnvConfig::runtime_api` is set).
    Runtime(FromRuntime),
}

// ---------------------------------------------------------------------------------------------
// Invocations (`lamina serve`): the Runtime API 2018-06-01 that init serves inside the env.
//
// A message that carries a payload is one JSON datagram whose `payload_len` announces the bytes
// that follow as raw datagrams of at most [`CHUNK`] bytes each (so payloads are never
// re-encoded, and a 6 MB payload fits in any socket buffer).

/// Largest raw payload datagram.
pub const CHUNK: usize = 64 * 1024;

/// The Runtime API listens here inside every env (`AWS_LAMBDA_RUNTIME_API`).
pub const RUNTIME_API_ADDR: &str = "127.0.0.1:9001";

/// Maximum size of a function response (6 MiB + 100 B, as Lambda).
pub const MAX_RESPONSE: usize = 6 * 1024 * 1024 + 100;

/// An event for the runtime's pending (or next) `GET /runtime/invocation/next`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeHeader {
    pub request_id: String,
    /// Absolute deadline, Unix epoch milliseconds (`Lambda-Runtime-Deadline-Ms`).
    pub deadline_ms: u64,
    pub invoked_function_arn: String,
    pub trace_id: Option<String>,
    /// JSON text of the decoded `X-Amz-Client-Context`.
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    pub payload_len: u64,
}

/// Supervisor → init, once the env runs a Runtime API client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToRuntime {
    /// An invocation; `payload_len` raw bytes follow.
    Invoke(InvokeHeader),
}

/// Init → supervisor: what the runtime did through the Runtime API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromRuntime {
    /// The runtime called `/runtime/invocation/next` for the first time: Init is over.
    Ready,
    /// `POST /runtime/init/error`; `payload_len` raw bytes (the error body) follow.
    InitError {
        error_type: Option<String>,
        payload_len: u64,
    },
    /// `POST /runtime/invocation/{id}/response`; `payload_len` raw bytes follow.
    Response {
        request_id: String,
        content_type: Option<String>,
        payload_len: u64,
    },
    /// `POST /runtime/invocation/{id}/error`; `payload_len` raw bytes follow.
    Error {
        request_id: String,
        error_type: Option<String>,
        payload_len: u64,
    },
    /// The runtime tried to send a response over the size limit (it got 413).
    ResponseTooLarge { request_id: String },
    /// Sent right before `Ready` when extensions registered during Init: how many, and how
    /// many of them take INVOKE and SHUTDOWN events. Without it an env has no extensions.
    Extensions {
        count: u32,
        invoke: u32,
        shutdown: u32,
    },
    /// The runtime answered `request_id` and every extension registered for INVOKE called
    /// `/extension/event/next` again: the invocation is over (only with INVOKE extensions).
    InvokeDone { request_id: String },
    /// Every extension registered for SHUTDOWN is done with it (after `ToInit::Shutdown`).
    ShutdownDone,
}
