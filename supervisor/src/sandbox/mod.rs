//! Execution environments: starting, talking to and tearing down the sandboxes.
//!
//! # The env contract (supervisor side; init's side is in `lamina_init`)
//! 1. `cgroup`: create the env's group under lamina's parent group; set memory (no swap), pids,
//!    CPU and I/O weights. (The CPU quota follows in step 6.)
//! 2. `socketpair`: the control socket (SOCK_SEQPACKET).
//! 3. `clone`: `clone3` with CLONE_NEWNS|NEWPID|NEWIPC|NEWUTS|NEWNET|PIDFD, and on cgroup v2
//!    CLONE_INTO_CGROUP|NEWCGROUP; the child execs the sealed memfd image as `lamina init`.
//! 4. `place` (cgroup v1 only): init's pid written into every controller's group while init
//!    waits on the control socket; init then unshares its cgroup namespace itself.
//! 5. `start`: the Start message (rootfs plan, process spec, precompiled seccomp programs).
//! 6. `started`: init reports the function's process running; the CPU quota is applied (Init
//!    runs unthrottled, as Lambda's Init phase has its CPU boost).
//!
//! Teardown: SIGKILL to init through its pidfd (the PID namespace dies with it), reap, read the
//! group's stats, kill anything left in the group, remove the group.

pub mod cgroup;
pub mod invoke;
pub mod rootfs;
pub mod seccomp;
pub mod spawn;

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lamina_init::protocol::{
    BpfFilter, EnvConfig, FromInit, ProcessSpec, Rlimit, RootfsPlan, ToInit, MAX_MESSAGE,
};
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use cgroup::{Cgroups, Limits, Stats};
use rootfs::{Base, Skeleton};

/// A failed sandbox operation, naming the step.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("run directory {0}: {1}")]
    RunDir(PathBuf, #[source] io::Error),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Skeleton(#[from] rootfs::SkeletonError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("init image (memfd copy of lamina): {0}")]
    Image(#[source] io::Error),
    #[error("socketpair: {0}")]
    Socket(#[source] io::Error),
    #[error("clone3: {0}")]
    Clone(#[source] io::Error),
    #[error("control socket: {0}")]
    Control(#[source] io::Error),
    #[error("control message: {0}")]
    Message(#[from] serde_json::Error),
    #[error("env setup failed at step {step}: {error}")]
    Setup {
        step: String,
        error: String,
        exec_code: Option<i32>,
    },
    #[error("init exited before reporting")]
    InitDied,
}

pub type Result<T> = std::result::Result<T, SandboxError>;

/// Where and how a supervisor runs envs.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Private run directory (each supervisor instance gets a subdirectory).
    pub run_dir: PathBuf,
    /// Where the cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
    /// lamina's parent group, relative to each hierarchy's root.
    pub cgroup_parent: PathBuf,
    /// Seccomp profile (seccompiler JSON); the built-in default when `None`.
    pub seccomp_profile: Option<PathBuf>,
    /// Put env groups straight under the instance group (one-shot `lamina run`).
    pub flat: bool,
    /// The lamina executable that envs run as init (default: this process's own executable;
    /// tests that drive the sandbox in-process point it at the lamina binary).
    pub init_binary: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            run_dir: PathBuf::from("/run/lamina"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: PathBuf::from("lamina"),
            seccomp_profile: None,
            flat: false,
            init_binary: None,
        }
    }
}

/// What to run in an env.
#[derive(Debug)]
pub struct EnvSpec {
    pub code: Option<PathBuf>,
    pub layers: Vec<PathBuf>,
    pub base: Base,
    pub memory_mb: u64,
    pub tmp_mb: u64,
    pub pids: u64,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    /// Serve the Runtime API inside the env (the command is a Lambda runtime's bootstrap).
    pub runtime_api: bool,
    /// A managed runtime's files, bound read-only at /var/runtime.
    pub runtime_dir: Option<PathBuf>,
    /// A runtime's language toolchain, bound read-only at /var/lang.
    pub lang_dir: Option<PathBuf>,
    /// Where the env's stdout and stderr go (stdin is then /dev/null); `None`: lamina's own
    /// stdio, as `lamina run` wants.
    pub stdout: Option<std::os::fd::RawFd>,
}

/// One supervisor's sandbox machinery: its run directory (locked while it lives), cgroup
/// backend, init image, skeletons and compiled seccomp programs.
pub struct Sandbox {
    pub instance: String,
    dir: PathBuf,
    _lock: File,
    image: spawn::InitImage,
    pub cgroups: Box<dyn Cgroups>,
    seccomp: Vec<BpfFilter>,
    skel_host: OnceLock<std::result::Result<Skeleton, String>>,
    skel_dir: OnceLock<std::result::Result<Skeleton, String>>,
    host_cpus: u64,
    next_env: AtomicU64,
    flat: bool,
}

/// A running env.
pub struct ExecutionEnvironment {
    pub id: String,
    pub cgroup: PathBuf,
    /// Host pid of init.
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub control: OwnedFd,
    pub limits: Limits,
    /// Supervisor-side step timings (µs), then init's.
    pub timings: Vec<(String, u64)>,
    pub landlock: bool,
    /// Pid of the function's process inside the env.
    pub function_pid: i32,
    /// CPU time the env had used when its quota was applied (Init runs unthrottled), so that
    /// usage under the quota can be told apart.
    pub cpu_usage_at_quota_usec: std::sync::atomic::AtomicU64,
    /// The env's extensions, as init reported them at the end of Init.
    pub extensions: invoke::ExtensionCounts,
}

fn lock_exclusive(f: &File) -> bool {
    // SAFETY: flock on an fd we own.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn host_cpus() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

impl Sandbox {
    /// Sets up a supervisor instance, first removing what crashed instances left behind.
    pub fn new(cfg: &SandboxConfig) -> Result<Sandbox> {
        let t = Instant::now();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.run_dir)
            .map_err(|e| SandboxError::RunDir(cfg.run_dir.clone(), e))?;
        let cgroups = cgroup::detect(&cfg.cgroup_root, &cfg.cgroup_parent)?;
        reclaim_stale(&cfg.run_dir, cgroups.as_ref());

        // Create the instance dir under a temporary name, lock it, then publish it, so that a
        // concurrent reclaim never sees an unlocked instance.
        let instance = format!("{}-{}", std::process::id(), crate::util::random_hex(4));
        let tmp = cfg.run_dir.join(format!(".{instance}"));
        let dir = cfg.run_dir.join(&instance);
        let rd = |e| SandboxError::RunDir(dir.clone(), e);
        fs::DirBuilder::new().mode(0o700).create(&tmp).map_err(rd)?;
        let lock = File::create(tmp.join("lock")).map_err(rd)?;
        if !lock_exclusive(&lock) {
            return Err(rd(io::Error::last_os_error()));
        }
        fs::rename(&tmp, &dir).map_err(rd)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.join("root"))
            .map_err(rd)?;

        let profile = match &cfg.seccomp_profile {
            Some(p) => fs::read(p).map_err(|e| SandboxError::RunDir(p.clone(), e))?,
            None => seccomp::DEFAULT_PROFILE.to_vec(),
        };
        let seccomp = seccomp::compile(&profile)?;
        let exe = cfg
            .init_binary
            .clone()
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        let image = spawn::InitImage::new(&exe).map_err(SandboxError::Image)?;
        let sb = Sandbox {
            instance,
            dir,
            _lock: lock,
            image,
            cgroups,
            seccomp,
            skel_host: OnceLock::new(),
            skel_dir: OnceLock::new(),
            host_cpus: host_cpus(),
            next_env: AtomicU64::new(1),
            flat: cfg.flat,
        };
        if !sb.flat {
            sb.cgroups.create(Path::new(&sb.instance))?;
            // Keep one (empty) group frozen while the instance lives: the kernel switches its
            // freezer machinery on when the first group freezes and off when the last thaws,
            // which made every per-invocation freeze and thaw cost ~60 µs instead of ~8 µs.
            let keep = Path::new(&sb.instance).join("keep-frozen");
            sb.cgroups.create(&keep)?;
            sb.cgroups.freeze(&keep, true)?;
        }
        tracing::debug!(instance = %sb.instance, layout = sb.cgroups.layout(), us = t.elapsed().as_micros() as u64, "sandbox ready");
        Ok(sb)
    }

    fn skeleton(&self, base: &Base) -> Result<&Skeleton> {
        let (cell, sub) = match base {
            Base::Host => (&self.skel_host, "host"),
            Base::Dir(_) => (&self.skel_dir, "dir"),
        };
        let r = cell.get_or_init(|| {
            let d = self.dir.join(sub);
            fs::create_dir(&d)
                .map_err(|e| rootfs::SkeletonError {
                    path: d.clone(),
                    source: e,
                })
                .and_then(|()| rootfs::build(&d, base))
                .map_err(|e| e.to_string())
        });
        r.as_ref().map_err(|e| SandboxError::Setup {
            step: "skeleton".into(),
            error: e.clone(),
            exec_code: None,
        })
    }

    fn cgroup_path(&self, id: &str) -> PathBuf {
        if self.flat {
            PathBuf::from(&self.instance)
        } else {
            Path::new(&self.instance).join(id)
        }
    }

    /// Starts an env (contract steps 1-6). On error nothing of the env is left.
    pub fn start(&self, spec: &EnvSpec) -> Result<ExecutionEnvironment> {
        let mut timings = Vec::new();
        let mut t = Instant::now();
        let mut lap = |name: &str, timings: &mut Vec<(String, u64)>| {
            let now = Instant::now();
            timings.push((name.to_string(), (now - t).as_micros() as u64));
            t = now;
        };
        let skel = self.skeleton(&spec.base)?;
        let n = self.next_env.fetch_add(1, Ordering::Relaxed);
        let id = format!("e{n}");
        let cg = self.cgroup_path(&id);
        let limits = Limits::for_memory(spec.memory_mb, spec.pids, self.host_cpus);

        // 1. cgroup
        self.cgroups.create(&cg)?;
        let cleanup_cg = |e: SandboxError| {
            self.cgroups.kill_all(&cg);
            let _ = self.cgroups.remove(&cg);
            e
        };
        self.cgroups
            .apply(
                &cg,
                &Limits {
                    cpu_quota_us: None,
                    ..limits
                },
            )
            .map_err(|e| cleanup_cg(e.into()))?;
        lap("cgroup", &mut timings);

        // 2. socketpair
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| cleanup_cg(SandboxError::Socket(e.into())))?;

        // 3. clone
        let into = self
            .cgroups
            .clone_into(&cg)
            .map_err(|e| cleanup_cg(e.into()))?;
        let devnull = match spec.stdout {
            Some(_) => {
                Some(File::open("/dev/null").map_err(|e| cleanup_cg(SandboxError::Clone(e)))?)
            }
            None => None,
        };
        let stdio = match (&devnull, spec.stdout) {
            (Some(n), Some(out)) => Some((n.as_raw_fd(), out)),
            _ => None,
        };
        let spawned = spawn::clone_init(&self.image, theirs.as_raw_fd(), into.as_ref(), stdio)
            .map_err(|e| cleanup_cg(SandboxError::Clone(e)))?;
        drop(devnull);
        drop(theirs);
        drop(into);
        lap("clone", &mut timings);

        let mut env = ExecutionEnvironment {
            id,
            cgroup: cg.clone(),
            pid: spawned.pid,
            pidfd: spawned.pidfd,
            control: ours,
            limits,
            timings: Vec::new(),
            landlock: false,
            function_pid: 0,
            cpu_usage_at_quota_usec: AtomicU64::new(0),
            extensions: invoke::ExtensionCounts::default(),
        };

        // 4. place (v1)
        let v1 = self.cgroups.layout() == "v1";
        if v1 {
            if let Err(e) = self.cgroups.add_task(&cg, env.pid) {
                self.destroy(&env);
                return Err(e.into());
            }
            lap("place", &mut timings);
        }

        // 5. start
        let config = EnvConfig {
            hostname: "localhost".into(),
            rootfs: RootfsPlan {
                mountpoint: self.dir.join("root"),
                root_lowers: skel.root_lowers(&spec.base),
                binds: {
                    let mut b = skel.binds.clone();
                    for (dir, target) in [
                        (&spec.runtime_dir, "/var/runtime"),
                        (&spec.lang_dir, "/var/lang"),
                    ] {
                        if let Some(d) = dir {
                            b.push(lamina_init::protocol::Bind {
                                source: d.clone(),
                                target: PathBuf::from(target),
                            });
                        }
                    }
                    b
                },
                code: spec.code.clone(),
                layers: spec.layers.clone(),
                tmp_size_mb: spec.tmp_mb,
            },
            process: ProcessSpec {
                argv: spec.argv.clone(),
                env: spec.env.clone(),
                cwd: spec.cwd.clone(),
                uid: rootfs::SANDBOX_UID,
                gid: rootfs::SANDBOX_GID,
                rlimits: default_rlimits(),
                seccomp: self.seccomp.clone(),
                writable: Vec::new(),
            },
            unshare_cgroupns: v1,
            runtime_api: spec.runtime_api,
        };
        if let Err(e) = env.send(&ToInit::Start(Box::new(config))) {
            self.destroy(&env);
            return Err(e);
        }

        // 6. started
        match env.recv(None) {
            Ok(Some(FromInit::Started {
                pid,
                steps,
                landlock,
            })) => {
                lap("init", &mut timings);
                env.function_pid = pid;
                env.landlock = landlock;
                // A runtime's Init runs unthrottled until its first /next (Lambda's Init boost):
                // the scheduler applies the quota then, through `apply_cpu_quota`.
                if !spec.runtime_api {
                    if let Err(e) = self.apply_cpu_quota(&env) {
                        self.destroy(&env);
                        return Err(e);
                    }
                }
                lap("cpu-quota", &mut timings);
                timings.extend(steps.into_iter().map(|(n, us)| (format!("init:{n}"), us)));
                env.timings = timings;
                Ok(env)
            }
            Ok(Some(FromInit::SetupFailed {
                step,
                error,
                exec_code,
            })) => {
                self.destroy(&env);
                Err(SandboxError::Setup {
                    step,
                    error,
                    exec_code,
                })
            }
            Ok(_) => {
                self.destroy(&env);
                Err(SandboxError::InitDied)
            }
            Err(e) => {
                self.destroy(&env);
                Err(e)
            }
        }
    }

    /// SIGKILLs every process of every env of this instance.
    pub fn kill_all_envs(&self) {
        self.cgroups.kill_all(Path::new(&self.instance));
    }

    /// Applies the env's CPU quota (MemorySize/1769 vCPUs).
    pub fn apply_cpu_quota(&self, env: &ExecutionEnvironment) -> Result<()> {
        let before = self.cgroups.stats(&env.cgroup).cpu_usage_usec;
        env.cpu_usage_at_quota_usec.store(before, Ordering::Relaxed);
        self.cgroups.set_cpu_quota(
            &env.cgroup,
            env.limits.cpu_quota_us,
            env.limits.cpu_period_us,
        )?;
        Ok(())
    }

    /// Kills an env, reaps init, reads its stats and removes its group. Extensions registered
    /// for SHUTDOWN first get the event and up to [`invoke::SHUTDOWN_GRACE`] (the env is thawed
    /// for it); without such extensions this costs nothing.
    pub fn destroy(&self, env: &ExecutionEnvironment) -> Stats {
        if env.extensions.wants_shutdown() && self.cgroups.freeze(&env.cgroup, false).is_ok() {
            env.shutdown_extensions();
        }
        let _ = spawn::pidfd_kill(&env.pidfd, libc::SIGKILL);
        // A frozen env (cgroup v1 freezer) only dies once thawed.
        let _ = self.cgroups.freeze(&env.cgroup, false);
        let _ = spawn::pidfd_reap(&env.pidfd, true);
        let stats = self.cgroups.stats(&env.cgroup);
        self.cgroups.kill_all(&env.cgroup);
        if let Err(e) = self.cgroups.remove(&env.cgroup) {
            tracing::warn!(env = %env.id, %e, "cgroup removal failed");
        }
        stats
    }

    /// Lets init finish on its own (after it reported the function's exit), then destroys.
    pub fn finish(&self, env: &ExecutionEnvironment, grace: Duration) -> Stats {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match spawn::pidfd_reap(&env.pidfd, false) {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(Duration::from_micros(100)),
            }
        }
        self.destroy(env)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let inst = Path::new(&self.instance);
        self.cgroups.kill_all(inst);
        let _ = self.cgroups.remove(inst);
        // The parent group goes too once no instance uses it (fails harmlessly otherwise).
        self.cgroups.remove_parent_if_empty();
        let _ = remove_tree(&self.dir);
    }
}

/// Lambda's recorded limits (NOFILE 1024; stack 8 MiB soft), no core dumps. The process
/// count is limited per env by the pids controller (RLIMIT_NPROC would count the sandbox uid
/// across every env on the host).
pub fn default_rlimits() -> Vec<Rlimit> {
    vec![
        Rlimit {
            resource: libc::RLIMIT_NOFILE as i32,
            soft: 1024,
            hard: 1024,
        },
        Rlimit {
            resource: libc::RLIMIT_CORE as i32,
            soft: 0,
            hard: 0,
        },
        Rlimit {
            resource: libc::RLIMIT_STACK as i32,
            soft: 8 << 20,
            hard: libc::RLIM_INFINITY,
        },
    ]
}

impl ExecutionEnvironment {
    pub fn send(&self, msg: &ToInit) -> Result<()> {
        let bytes = serde_json::to_vec(msg)?;
        nix::sys::socket::send(self.control.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL)
            .map_err(|e| SandboxError::Control(e.into()))?;
        Ok(())
    }

    /// Receives one message; `Ok(None)` when init is gone or the timeout passed.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Option<FromInit>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let ms = d.saturating_duration_since(Instant::now()).as_millis();
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [PollFd::new(self.control.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, left) {
                Ok(0) if deadline.is_some() => return Ok(None),
                Ok(0) => continue,
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(SandboxError::Control(e.into())),
            }
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        match nix::sys::socket::recv(self.control.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(serde_json::from_slice(&buf[..n])?)),
            Err(e) => Err(SandboxError::Control(e.into())),
        }
    }
}

/// Removes a directory tree that may contain read-only directories.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes what crashed supervisors left: instance dirs whose lock nobody holds, and groups
/// under lamina's parent group without a live instance.
fn reclaim_stale(run_dir: &Path, cgroups: &dyn Cgroups) {
    // Groups first: an instance publishes its run dir before creating groups, so every group
    // listed here belongs to a run dir the listing below sees.
    let groups = cgroups.children(Path::new(""));
    let mut live = Vec::new();
    if let Ok(rd) = fs::read_dir(run_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let lock = e.path().join("lock");
            let held = match File::open(&lock) {
                Ok(f) => !lock_exclusive(&f),
                Err(_) => false,
            };
            if held {
                live.push(name);
            } else {
                tracing::info!(instance = %name, "removing state of a dead lamina instance");
                let _ = remove_tree(&e.path());
            }
        }
    }
    for child in groups {
        if !live.contains(&child) {
            let rel = Path::new(&child);
            tracing::info!(group = %child, "removing cgroup of a dead lamina instance");
            cgroups.kill_all(rel);
            if let Err(e) = cgroups.remove(rel) {
                tracing::warn!(group = %child, %e, "could not remove stale cgroup");
            }
        }
    }
}
