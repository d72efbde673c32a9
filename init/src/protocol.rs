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
}

/// Supervisor → init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToInit {
    /// Build the env and start the function's process.
    Start(Box<EnvConfig>),
    /// Forward this signal to the function's process.
    Signal(i32),
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
}
