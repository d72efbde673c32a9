//! Starting the function's process, confined (the env contract, part 3).
//!
//! In the forked child, in this order:
//! 1. `setsid`: a new session, no controlling terminal.
//! 2. signals: an empty signal mask and default dispositions.
//! 3. `oom_score_adj` 0 (init itself runs at -1000 so the OOM killer picks the function).
//! 4. rlimits.
//! 5. `chdir` to the working directory; stdout and stderr onto the output pipe, if any.
//! 6. Landlock ruleset prepared (read and execute everywhere, write under /tmp and the terminal
//!    and null-like devices), while still root so every path can be opened.
//! 7. bounding set emptied, `setgroups([])`, `setresgid`, `setresuid` to the sandbox user; every
//!    capability set (effective, permitted, inheritable, ambient) is then empty.
//! 8. `no_new_privs`.
//! 9. Landlock enforced (best effort: kernels without Landlock are reported, not fatal).
//! 10. every fd but 0, 1, 2 (and the exec-error pipe, which is close-on-exec) closed.
//! 11. seccomp filters installed: the last step.
//! 12. `execve`.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::protocol::{BpfFilter, ProcessSpec};

/// Why the function's process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("command {0:?} not found")]
    NotFound(String),
    #[error("invalid argument or environment string (contains NUL)")]
    Nul,
    #[error("pipe: {0}")]
    Pipe(io::Error),
    #[error("fork: {0}")]
    Fork(io::Error),
    #[error("{step} in the function's process: {source}")]
    Child { step: String, source: io::Error },
}

impl SpawnError {
    /// Whether the command itself was missing or not executable (exit 127/126 in `lamina run`).
    pub fn exec_code(&self) -> Option<i32> {
        match self {
            SpawnError::NotFound(_) => Some(127),
            SpawnError::Child { step, source } if step == "execve" => match source.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => Some(127),
                _ => Some(126),
            },
            _ => None,
        }
    }
}

/// Child-side step codes written to the exec-error pipe.
/// First byte of a failure record on the exec-error pipe.
const FAILED: u8 = 0xEE;

const STEPS: &[&str] = &[
    "setsid",
    "signals",
    "oom_score_adj",
    "rlimits",
    "chdir",
    "dup2",
    "landlock",
    "capabilities",
    "setgroups",
    "setresgid",
    "setresuid",
    "no_new_privs",
    "close_range",
    "seccomp",
    "execve",
];

fn step_no(name: &str) -> u32 {
    STEPS.iter().position(|s| *s == name).unwrap_or(0) as u32
}

fn cstring(s: &[u8]) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError::Nul)
}

/// Finds the program like execvp does, with the function's PATH, before forking.
pub fn resolve_program(argv0: &str, env: &[String]) -> Option<PathBuf> {
    if argv0.contains('/') {
        return Some(PathBuf::from(argv0));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(argv0))
        .find(|p| std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(false))
}

/// The Landlock rules: read/execute everywhere, full access under /tmp (and `writable`),
/// read/write on the terminal and null-like devices. Prepared while still root.
fn landlock_ruleset(writable: &[PathBuf]) -> Result<RulesetCreated, landlock::RulesetError> {
    let abi = ABI::V6;
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let dev_rw = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
    let mut rules: Vec<(PathBuf, landlock::BitFlags<AccessFs>)> =
        vec![("/".into(), read), ("/tmp".into(), all)];
    rules.extend(writable.iter().map(|w| (w.clone(), all)));
    for d in [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/tty",
        "/dev/ptmx",
        "/dev/pts",
    ] {
        rules.push((d.into(), dev_rw));
    }
    Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)?
        .create()?
        .add_rules(rules.into_iter().filter_map(|(path, access)| {
            // A path missing from this env has nothing to grant.
            PathFd::new(path)
                .ok()
                .map(|fd| Ok::<_, landlock::RulesetError>(PathBeneath::new(fd, access)))
        }))
}

/// Everything prepared before fork so that the child allocates as little as possible.
struct Prepared {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    seccomp: Vec<Vec<libc::sock_filter>>,
}

/// Starts the function's process (or an extension, with the same confinement); returns its
/// pid and whether Landlock is enforced once it has exec'd, or the step that failed. With
/// `output`, the process's stdout and stderr go to that fd instead of init's.
pub fn spawn(spec: &ProcessSpec, output: Option<RawFd>) -> Result<(i32, bool), SpawnError> {
    let argv0 = spec
        .argv
        .first()
        .ok_or_else(|| SpawnError::NotFound(String::new()))?;
    let program =
        resolve_program(argv0, &spec.env).ok_or_else(|| SpawnError::NotFound(argv0.clone()))?;
    let prepared = Prepared {
        program: cstring(program.as_os_str().as_bytes())?,
        argv: spec
            .argv
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<Result<_, _>>()?,
        env: spec
            .env
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<Result<_, _>>()?,
        cwd: cstring(spec.cwd.as_os_str().as_bytes())?,
        seccomp: spec
            .seccomp
            .iter()
            .map(BpfFilter::to_sock_filters)
            .collect(),
    };
    let (rd, wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Pipe(e.into()))?;

    // SAFETY: init is single-threaded, so the child may use the allocator; it only runs
    // `child()`, which ends in execve or _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| SpawnError::Fork(e.into()))? {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let (step, err) = child(spec, &prepared, wr.as_raw_fd(), output);
            let mut msg = [FAILED; 9];
            msg[1..5].copy_from_slice(&step_no(step).to_ne_bytes());
            msg[5..].copy_from_slice(&err.to_ne_bytes());
            // SAFETY: writing a stack buffer to our own pipe fd, then exiting without running
            // destructors or atexit handlers of the parent's state.
            unsafe {
                libc::write(wr.as_raw_fd(), msg.as_ptr().cast(), msg.len());
                libc::_exit(127);
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            // The child writes one status byte (Landlock enforced or not) before exec, and a
            // 9-byte failure record if a step fails; exec closes the pipe.
            let mut buf = Vec::with_capacity(10);
            std::fs::File::from(rd)
                .read_to_end(&mut buf)
                .map_err(SpawnError::Pipe)?;
            match buf.as_slice() {
                [status] => Ok((child.as_raw(), *status == 1)),
                [.., FAILED, a, b, c, d, e, f, g, h] => {
                    let _ = nix::sys::wait::waitpid(child, None);
                    let step = u32::from_ne_bytes([*a, *b, *c, *d]) as usize;
                    let errno = i32::from_ne_bytes([*e, *f, *g, *h]);
                    Err(SpawnError::Child {
                        step: STEPS.get(step).unwrap_or(&"unknown").to_string(),
                        source: io::Error::from_raw_os_error(errno),
                    })
                }
                _ => {
                    let _ = nix::sys::wait::waitpid(child, None);
                    Err(SpawnError::Child {
                        step: "unknown".into(),
                        source: io::Error::from_raw_os_error(libc::EPROTO),
                    })
                }
            }
        }
    }
}

/// Whether this kernel offers Landlock.
pub fn landlock_supported() -> bool {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attr and size 0 only queries the ABI.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    v >= 1
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The child's side: returns only on failure, with the failed step and errno.
fn child(
    spec: &ProcessSpec,
    p: &Prepared,
    err_fd: RawFd,
    output: Option<RawFd>,
) -> (&'static str, i32) {
    // SAFETY: setsid, sigemptyset, sigprocmask and signal are plain calls on our own process
    // with arguments valid for the duration of each call.
    unsafe {
        // 1. setsid
        if libc::setsid() < 0 {
            return ("setsid", errno());
        }
        // 2. signals
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) < 0 {
            return ("signals", errno());
        }
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
    // 3. oom_score_adj
    if std::fs::write("/proc/self/oom_score_adj", b"0").is_err() {
        return ("oom_score_adj", errno());
    }
    // 4. rlimits
    for r in &spec.rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: `lim` is a valid rlimit struct.
        if unsafe { libc::setrlimit(r.resource as _, &lim) } < 0 {
            return ("rlimits", errno());
        }
    }
    // 5. chdir
    // SAFETY: `cwd` is a valid C string.
    if unsafe { libc::chdir(p.cwd.as_ptr()) } < 0 {
        return ("chdir", errno());
    }
    if let Some(fd) = output {
        // SAFETY: dup2 of an fd we hold onto stdout and stderr.
        if unsafe { libc::dup2(fd, 1) } < 0 || unsafe { libc::dup2(fd, 2) } < 0 {
            return ("dup2", errno());
        }
    }
    // 6. landlock (prepared)
    let ruleset = match landlock_ruleset(&spec.writable) {
        Ok(rs) => Some(rs),
        Err(_) if !landlock_supported() => None,
        Err(_) => return ("landlock", libc::EINVAL),
    };
    // 7. capabilities and ids
    for cap in 0..=63 {
        // SAFETY: PR_CAPBSET_DROP on a cap number; EINVAL past the last cap is ignored.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0
            && errno() != libc::EINVAL
        {
            return ("capabilities", errno());
        }
    }
    // SAFETY: setgroups with an empty list.
    if unsafe { libc::setgroups(0, std::ptr::null()) } < 0 {
        return ("setgroups", errno());
    }
    // SAFETY: plain id changes.
    if unsafe { libc::setresgid(spec.gid, spec.gid, spec.gid) } < 0 {
        return ("setresgid", errno());
    }
    // SAFETY: plain id change; without keepcaps the kernel clears permitted/effective/ambient.
    if unsafe { libc::setresuid(spec.uid, spec.uid, spec.uid) } < 0 {
        return ("setresuid", errno());
    }
    if caps::clear(None, caps::CapSet::Inheritable).is_err()
        || caps::clear(None, caps::CapSet::Ambient).is_err()
        || caps::clear(None, caps::CapSet::Effective).is_err()
        || caps::clear(None, caps::CapSet::Permitted).is_err()
    {
        return ("capabilities", errno());
    }
    // 8. no_new_privs
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return ("no_new_privs", errno());
    }
    // 9. landlock enforced
    let mut enforced = false;
    if let Some(rs) = ruleset {
        match rs.restrict_self() {
            Ok(st) => enforced = st.ruleset != RulesetStatus::NotEnforced,
            Err(_) => return ("landlock", errno()),
        }
    }
    let status = [u8::from(enforced)];
    // SAFETY: writing one byte from a stack buffer to our pipe fd.
    unsafe { libc::write(err_fd, status.as_ptr().cast(), 1) };
    // 10. close_range
    // SAFETY: closing fd ranges of our own process; err_fd is close-on-exec and kept.
    unsafe {
        if err_fd > 3 && libc::syscall(libc::SYS_close_range, 3u32, (err_fd - 1) as u32, 0u32) < 0 {
            return ("close_range", errno());
        }
        if libc::syscall(libc::SYS_close_range, (err_fd + 1) as u32, u32::MAX, 0u32) < 0 {
            return ("close_range", errno());
        }
    }
    // 11. seccomp
    if let Err(e) = crate::seccomp::install_prepared(&p.seccomp) {
        return ("seccomp", e.raw_os_error().unwrap_or(libc::EINVAL));
    }
    // 12. execve
    let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = p.env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: program, argv and envp are valid NUL-terminated arrays of C strings.
    unsafe { libc::execve(p.program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    ("execve", errno())
}
