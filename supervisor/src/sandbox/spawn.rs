//! Starting init: the sealed memfd image of lamina and `clone3` into fresh namespaces.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use lamina_init::protocol::CONTROL_FD;

/// A sealed in-memory copy of the lamina executable, made once per supervisor process. Every
/// env execs it as `lamina init`, so no host path of lamina is visible inside and nothing
/// inside can write it.
pub struct InitImage {
    memfd: OwnedFd,
}

impl InitImage {
    pub fn new(exe: &std::path::Path) -> io::Result<InitImage> {
        let name = c"lamina";
        // SAFETY: memfd_create with a valid name and flags; the fd is owned right away.
        let fd = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut exe = File::open(exe)?;
        let mut out = File::from(memfd.try_clone()?);
        io::copy(&mut exe, &mut out)?;
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on our own memfd.
        if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(InitImage { memfd })
    }
}

/// Kernel `struct clone_args` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Namespaces of every env: mount, PID, IPC, UTS, network and (with CLONE_INTO_CGROUP, or
/// unshared by init on v1 once it is in its groups) cgroup.
pub const NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWNET) as u64;

/// A started init.
pub struct Spawned {
    /// Host pid of init.
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// Clones init into new namespaces (and, on v2, straight into its cgroup) and execs the memfd
/// image as `lamina init` with `control` at fd 3 (and, given `stdio = (stdin, out)`, those as
/// fd 0 and fds 1 and 2). Between clone and exec the child makes only
/// raw, async-signal-safe syscalls on memory prepared here.
pub fn clone_init(
    image: &InitImage,
    control: RawFd,
    cgroup: Option<&OwnedFd>,
    stdio: Option<(RawFd, RawFd)>,
) -> io::Result<Spawned> {
    let argv_store = [
        CString::new("lamina").map_err(io::Error::other)?,
        CString::new("init").map_err(io::Error::other)?,
    ];
    let argv: [*const libc::c_char; 3] = [
        argv_store[0].as_ptr(),
        argv_store[1].as_ptr(),
        std::ptr::null(),
    ];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let empty = c"";
    let memfd = image.memfd.as_raw_fd();

    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: NAMESPACES | libc::CLONE_PIDFD as u64,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP | libc::CLONE_NEWCGROUP as u64;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without CLONE_VM gives the child a copy of our memory; the child only
    // makes raw syscalls (fcntl/dup2, execveat, _exit) on values prepared above, which are
    // async-signal-safe, and never returns into Rust code.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    if ret == 0 {
        // Child.
        // SAFETY: see above; only async-signal-safe syscalls, ending in execveat or _exit.
        unsafe {
            if let Some((stdin, out)) = stdio {
                libc::dup2(stdin, 0);
                libc::dup2(out, 1);
                libc::dup2(out, 2);
            }
            if control == CONTROL_FD {
                libc::fcntl(CONTROL_FD, libc::F_SETFD, 0);
            } else {
                libc::dup2(control, CONTROL_FD);
            }
            libc::syscall(
                libc::SYS_execveat,
                memfd,
                empty.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            libc::_exit(127);
        }
    }
    // SAFETY: the kernel stored a new pidfd that we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned {
        pid: ret as i32,
        pidfd,
    })
}

/// Sends a signal through a pidfd (no pid reuse race).
pub fn pidfd_kill(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with a pidfd we own and no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// Reaps init through its pidfd. `block`: wait for it to exit; otherwise `Ok(None)` while it
/// still runs.
pub fn pidfd_reap(pidfd: &OwnedFd, block: bool) -> io::Result<Option<i32>> {
    // SAFETY: siginfo_t is plain data; zeroed is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: waitid(P_PIDFD) on a pidfd we own, writing into `info`.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                flags,
            )
        };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(Some(-1)),
            _ => return Err(e),
        }
    }
    // SAFETY: waitid filled in si_pid/si_status (zero si_pid means nothing exited yet).
    let pid = unsafe { info.si_pid() };
    if pid == 0 {
        return Ok(None);
    }
    // SAFETY: as above.
    Ok(Some(unsafe { info.si_status() }))
}
