//! `lamina init`: PID 1 of every execution environment.
//!
//! The supervisor execs this code (from a sealed memfd copy of the lamina binary) as the first
//! process of a fresh set of namespaces. It builds the root filesystem, starts the function's
//! process confined, reaps every child and reports to the supervisor over the control socket.
//!
//! The env contract, part 1 (init, before the root filesystem):
//! 1. fds above the control socket closed; a new session; umask 0; `oom_score_adj` -1000.
//! 2. SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT blocked and read from a signalfd.
//! 3. the `Start` message read from the control socket (on cgroup v1 it arrives only after the
//!    supervisor has moved init into every controller's group).
//! 4. cgroup v1 only: a new cgroup namespace, rooted at the env's own group.
//! 5. the hostname set in the env's UTS namespace.
//!
//! Part 2 is [`rootfs`], part 3 is [`process`]; `lo` is brought up and, for a Lambda runtime,
//! the [`runtime_api`] listener bound before the function's process starts. External
//! [`extensions`] (executables in /opt/extensions) start before the runtime, confined alike;
//! with extensions, init tees the processes' output (for [`telemetry`]). Then init serves:
//! one mio event loop over the control socket, the signalfd and the Runtime API.

pub mod extensions;
pub mod net;
pub mod process;
pub mod protocol;
pub mod rootfs;
pub mod runtime_api;
pub mod seccomp;
pub mod syscall;
pub mod telemetry;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recv, send, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use protocol::{ExitStatus, FromInit, ToInit, CONTROL_FD, MAX_MESSAGE};
use runtime_api::{Control, Incoming, RuntimeApi};

/// Records how long each setup step took, in microseconds.
pub struct Stopwatch<'a> {
    out: &'a mut Vec<(String, u64)>,
    last: Instant,
}

impl<'a> Stopwatch<'a> {
    pub fn new(out: &'a mut Vec<(String, u64)>) -> Self {
        Stopwatch {
            out,
            last: Instant::now(),
        }
    }

    pub fn lap(&mut self, name: &str) {
        let now = Instant::now();
        self.out
            .push((name.to_string(), (now - self.last).as_micros() as u64));
        self.last = now;
    }
}

/// Init's own failures (before or outside the function's process).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("control socket: {0}")]
    Control(#[source] io::Error),
    #[error("bad control message: {0}")]
    Message(#[from] serde_json::Error),
    #[error("unexpected control message")]
    Unexpected,
    #[error("signals: {0}")]
    Signals(#[source] io::Error),
    #[error("event loop: {0}")]
    Poll(#[source] io::Error),
    #[error("{0}")]
    Step(String),
}

/// Sends one message to the supervisor.
pub fn tell(msg: &FromInit) -> Result<(), InitError> {
    let bytes = serde_json::to_vec(msg)?;
    send(CONTROL_FD, &bytes, MsgFlags::MSG_NOSIGNAL).map_err(|e| InitError::Control(e.into()))?;
    Ok(())
}

/// Receives one message from the supervisor; `None` when the supervisor is gone.
fn hear(buf: &mut [u8]) -> Result<Option<ToInit>, InitError> {
    loop {
        match recv(CONTROL_FD, buf, MsgFlags::empty()) {
            Ok(0) => return Ok(None),
            Ok(n) => return Ok(Some(serde_json::from_slice(&buf[..n])?)),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(InitError::Control(e.into())),
        }
    }
}

/// Entry point of `lamina init`. Never returns.
pub fn main() -> ! {
    let code = match run() {
        Ok(()) => 0,
        // Already reported to the supervisor, which tells the user.
        Err(InitError::Step(_)) => 1,
        // The supervisor is gone: nobody to tell; ending init ends the env.
        Err(InitError::Control(e))
            if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) =>
        {
            1
        }
        Err(e) => {
            eprintln!("lamina init: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn step_failed(step: &str, error: String, exec_code: Option<i32>) -> InitError {
    let _ = tell(&FromInit::SetupFailed {
        step: step.into(),
        error: error.clone(),
        exec_code,
    });
    InitError::Step(format!("{step}: {error}"))
}

fn run() -> Result<(), InitError> {
    // 1. fds, session, umask, OOM priority
    // SAFETY: plain syscalls on our own process.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            (CONTROL_FD + 1) as u32,
            u32::MAX,
            0u32,
        );
        libc::setsid();
        libc::umask(0);
    }
    let _ = std::fs::write("/proc/self/oom_score_adj", b"-1000");

    // 2. signals
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| InitError::Signals(e.into()))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| InitError::Signals(e.into()))?;

    // 3. the Start message
    let mut buf = vec![0u8; MAX_MESSAGE];
    let cfg = match hear(&mut buf)? {
        Some(ToInit::Start(cfg)) => cfg,
        Some(_) => return Err(InitError::Unexpected),
        None => return Ok(()),
    };
    let mut steps = Vec::new();
    let mut clock_start = Instant::now();

    // 4. cgroup namespace (v1)
    if cfg.unshare_cgroupns {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| step_failed("cgroupns", e.to_string(), None))?;
    }
    // 5. hostname
    nix::unistd::sethostname(&cfg.hostname)
        .map_err(|e| step_failed("hostname", e.to_string(), None))?;
    steps.push((
        "namespaces".to_string(),
        clock_start.elapsed().as_micros() as u64,
    ));

    rootfs::setup(&syscall::Linux, &cfg.rootfs, &mut steps)
        .map_err(|e| step_failed(e.step, format!("{}: {}", e.path.display(), e.source), None))?;

    clock_start = Instant::now();
    net::loopback_up().map_err(|e| step_failed("loopback", e.to_string(), None))?;
    steps.push((
        "loopback".to_string(),
        clock_start.elapsed().as_micros() as u64,
    ));

    // The Runtime API listens before the runtime starts, so that its first request finds it.
    let mut api = if cfg.runtime_api {
        clock_start = Instant::now();
        let api = RuntimeApi::bind(&cfg.process.env)
            .map_err(|e| step_failed("runtime-api", e.to_string(), None))?;
        steps.push((
            "runtime-api".to_string(),
            clock_start.elapsed().as_micros() as u64,
        ));
        Some(api)
    } else {
        None
    };

    // External extensions start before the runtime; their output and the runtime's then go
    // through init. Without any, nothing changes: no pipes, no extra processes.
    let mut runtime_output = None;
    if let Some(api) = api.as_mut() {
        let names = extensions::discover(std::path::Path::new(extensions::EXTENSIONS_DIR));
        if !names.is_empty() {
            clock_start = Instant::now();
            runtime_output = Some(launch_extensions(api, &cfg.process, &names)?);
            steps.push((
                "extensions".to_string(),
                clock_start.elapsed().as_micros() as u64,
            ));
        }
    }

    clock_start = Instant::now();
    let spawned = process::spawn(
        &cfg.process,
        runtime_output.as_ref().map(|f: &OwnedFd| f.as_raw_fd()),
    );
    drop(runtime_output);
    let (pid, landlock) =
        spawned.map_err(|e| step_failed("spawn", e.to_string(), e.exec_code()))?;
    steps.push((
        "spawn".to_string(),
        clock_start.elapsed().as_micros() as u64,
    ));
    tell(&FromInit::Started {
        pid,
        steps,
        landlock,
    })?;

    serve(Pid::from_raw(pid), &sfd, api)
}

/// A pipe whose read end init reads without blocking.
fn output_pipe() -> Result<(OwnedFd, OwnedFd), InitError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| step_failed("extensions", format!("pipe: {e}"), None))?;
    // SAFETY: fcntl on the read end we own; the write end (the processes') stays blocking.
    unsafe {
        let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    Ok((r, w))
}

/// Starts the external extensions `names` (at most [`extensions::MAX_EXTENSIONS`]) with the
/// runtime's confinement and environment; returns the write end of the pipe for the
/// runtime's output.
fn launch_extensions(
    api: &mut RuntimeApi,
    spec: &protocol::ProcessSpec,
    names: &[String],
) -> Result<OwnedFd, InitError> {
    let (fn_r, fn_w) = output_pipe()?;
    if names.len() > extensions::MAX_EXTENSIONS {
        // Init fails as on Lambda (the runtime still starts; the env is then destroyed).
        api.fail_init(
            "Extension.TooManyExtensions",
            format!(
                "{} extensions in {}; at most {} are allowed",
                names.len(),
                extensions::EXTENSIONS_DIR,
                extensions::MAX_EXTENSIONS
            ),
        );
        return Ok(fn_w);
    }
    let (ext_r, ext_w) = output_pipe()?;
    for name in names {
        let mut ext = spec.clone();
        ext.argv = vec![format!("{}/{name}", extensions::EXTENSIONS_DIR)];
        match process::spawn(&ext, Some(ext_w.as_raw_fd() as RawFd)) {
            Ok((pid, _)) => api.launched(pid, name),
            // Logged; Init then goes on without it (it never registers).
            Err(e) => println!("EXTENSION\tName: {name}\tState: LaunchError\tError Type: Extension.LaunchError\t{e}"),
        }
    }
    api.tee(fn_r, ext_r);
    Ok(fn_w)
}

const CONTROL: Token = Token(0);
const SIGNALS: Token = Token(1);

/// Reaps children, forwards signals and control messages, and serves the Runtime API (when
/// `api` is set) until the function's process ends.
///
/// One edge-triggered mio loop: every source is read until it would block. Messages to the
/// supervisor are queued and sent without blocking (see [`Control`]); only the final `Exited`
/// waits until everything before it is sent.
fn serve(main: Pid, sfd: &SignalFd, mut api: Option<RuntimeApi>) -> Result<(), InitError> {
    let mut poll = Poll::new().map_err(InitError::Poll)?;
    let registry = poll.registry().try_clone().map_err(InitError::Poll)?;
    let both = Interest::READABLE | Interest::WRITABLE;
    registry
        .register(&mut SourceFd(&CONTROL_FD), CONTROL, both)
        .map_err(InitError::Poll)?;
    registry
        .register(&mut SourceFd(&sfd.as_raw_fd()), SIGNALS, Interest::READABLE)
        .map_err(InitError::Poll)?;
    let mut control = Control::default();
    if let Some(api) = api.as_mut() {
        api.register(&registry).map_err(InitError::Poll)?;
        api.report_init_failure(&mut control)?;
    }
    let mut events = Events::with_capacity(64);
    loop {
        let timeout = api.as_ref().and_then(RuntimeApi::timeout);
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(InitError::Poll(e)),
        }
        for event in events.iter() {
            match event.token() {
                SIGNALS => {
                    let mut others = Vec::new();
                    let main_status = signals(main, sfd, &mut others);
                    if let Some(api) = api.as_mut() {
                        for pid in others {
                            api.child_exited(pid, &registry, &mut control)?;
                        }
                    }
                    if let Some(status) = main_status {
                        // Output and requests the runtime sent before it exited come first.
                        if let Some(api) = api.as_mut() {
                            api.drain_outputs();
                            api.drain(&registry, &mut control)?;
                        }
                        control.push(&FromInit::Exited(status), Vec::new())?;
                        return control.flush(true);
                    }
                }
                CONTROL => loop {
                    match control.receive()? {
                        None => break,
                        Some(Incoming::Closed) => return Ok(()),
                        Some(Incoming::Message(ToInit::Signal(sig))) => forward(main, sig),
                        Some(Incoming::Message(ToInit::Shutdown {
                            reason,
                            deadline_ms,
                        })) => match api.as_mut() {
                            Some(api) => {
                                api.shutdown(reason, deadline_ms, &registry, &mut control)?
                            }
                            None => return Err(InitError::Unexpected),
                        },
                        Some(Incoming::Message(ToInit::Report(m))) => {
                            if let Some(api) = api.as_mut() {
                                api.report(m);
                            }
                        }
                        Some(Incoming::Invoke(ev)) => match api.as_mut() {
                            Some(api) => api.invoke(ev, &registry, &mut control)?,
                            None => return Err(InitError::Unexpected),
                        },
                        Some(Incoming::Message(_)) => return Err(InitError::Unexpected),
                    }
                },
                token => {
                    if let Some(api) = api.as_mut() {
                        api.ready(token, &registry, &mut control)?;
                    }
                }
            }
        }
        if let Some(api) = api.as_mut() {
            api.tick(&registry, &mut control)?;
        }
        control.flush(false)?;
    }
}

/// Reads the pending signals: reaps on SIGCHLD, forwards the others to the function's process.
/// Returns the function's status once it has ended; other children that ended go to `others`.
fn signals(main: Pid, sfd: &SignalFd, others: &mut Vec<i32>) -> Option<ExitStatus> {
    while let Ok(Some(info)) = sfd.read_signal() {
        let sig = info.ssi_signo as i32;
        if sig == libc::SIGCHLD {
            if let Some(status) = reap(main, others) {
                return Some(status);
            }
        } else {
            forward(main, sig);
        }
    }
    None
}

fn forward(main: Pid, sig: i32) {
    let _ = nix::sys::signal::kill(main, Signal::try_from(sig).ok());
}

/// Reaps every exited child; returns the main process's status once it has ended.
fn reap(main: Pid, others: &mut Vec<i32>) -> Option<ExitStatus> {
    let mut main_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => {
                main_status = Some(ExitStatus::Code(code))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => {
                main_status = Some(ExitStatus::Signal(sig as i32))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return main_status,
            Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) => {
                others.push(pid.as_raw())
            }
            Ok(_) => {}
        }
    }
}

/// Wraps a raw fd the caller owns.
pub fn own(fd: i32) -> OwnedFd {
    // SAFETY: the caller transfers ownership of an open fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
