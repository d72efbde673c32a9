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
//! Part 2 is [`rootfs`], part 3 is [`process`]; then `lo` is brought up and init serves.

pub mod net;
pub mod process;
pub mod protocol;
pub mod rootfs;
pub mod seccomp;
pub mod syscall;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recv, send, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use protocol::{ExitStatus, FromInit, ToInit, CONTROL_FD, MAX_MESSAGE};

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
    #[error("{0}")]
    Step(String),
}

fn control() -> BorrowedFd<'static> {
    // SAFETY: fd CONTROL_FD is the control socket, placed there by the supervisor before exec
    // and kept open for the whole life of init.
    unsafe { BorrowedFd::borrow_raw(CONTROL_FD) }
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

    clock_start = Instant::now();
    let (pid, landlock) = process::spawn(&cfg.process)
        .map_err(|e| step_failed("spawn", e.to_string(), e.exec_code()))?;
    steps.push((
        "spawn".to_string(),
        clock_start.elapsed().as_micros() as u64,
    ));
    tell(&FromInit::Started {
        pid,
        steps,
        landlock,
    })?;

    serve(Pid::from_raw(pid), &sfd, &mut buf)
}

/// Reaps children, forwards signals and control messages until the function's process ends.
fn serve(main: Pid, sfd: &SignalFd, buf: &mut [u8]) -> Result<(), InitError> {
    loop {
        let mut fds = [
            PollFd::new(control(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(InitError::Control(e.into())),
        }
        let control_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let signal_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
        if signal_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    if let Some(status) = reap(main) {
                        tell(&FromInit::Exited(status))?;
                        return Ok(());
                    }
                } else {
                    let _ = nix::sys::signal::kill(main, Signal::try_from(sig).ok());
                }
            }
        }
        if control_ready {
            match hear(buf)? {
                None => return Ok(()),
                Some(ToInit::Signal(sig)) => {
                    let _ = nix::sys::signal::kill(main, Signal::try_from(sig).ok());
                }
                Some(ToInit::Start(_)) | Some(ToInit::Runtime(_)) => return Err(InitError::Unexpected),
            }
        }
    }
}

/// Reaps every exited child; returns the main process's status once it has ended.
fn reap(main: Pid) -> Option<ExitStatus> {
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
            Ok(_) => {}
        }
    }
}

/// Wraps a raw fd the caller owns.
pub fn own(fd: i32) -> OwnedFd {
    // SAFETY: the caller transfers ownership of an open fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[allow(dead_code)]
fn raw(fd: &impl AsRawFd) -> i32 {
    fd.as_raw_fd()
}
