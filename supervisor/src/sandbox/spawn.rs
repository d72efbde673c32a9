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

/// What the child of `clone_init` needs between clone and exec, prepared by the parent (the
/// child reads it through a pointer: with CLONE_VM it shares the parent's memory).
#[repr(C)]
struct ChildArgs {
    stdio: Option<(RawFd, RawFd)>,
    control: RawFd,
    memfd: RawFd,
    empty: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// The signal mask init starts with (the caller's, restored right before exec).
    sigmask: libc::sigset_t,
}

/// The child's side of `clone_init`: moves stdio and the control socket into place and execs
/// the init image; `_exit(127)` if that fails. Only raw, async-signal-safe syscalls on memory
/// the parent prepared: with CLONE_VM the child runs on the parent's memory (on its own
/// stack) while the parent waits (CLONE_VFORK) until the exec.
///
/// # Safety
/// `a` points to a live `ChildArgs` whose pointers are valid until the exec.
unsafe extern "C" fn child_exec(a: *const ChildArgs) -> ! {
    // SAFETY: per this function's contract; every call is a raw syscall wrapper.
    unsafe {
        let a = &*a;
        if let Some((stdin, out)) = a.stdio {
            libc::dup2(stdin, 0);
            libc::dup2(out, 1);
            libc::dup2(out, 2);
        }
        if a.control == CONTROL_FD {
            libc::fcntl(CONTROL_FD, libc::F_SETFD, 0);
        } else {
            libc::dup2(a.control, CONTROL_FD);
        }
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &a.sigmask as *const libc::sigset_t,
            std::ptr::null_mut::<libc::sigset_t>(),
            8usize,
        );
        libc::syscall(
            libc::SYS_execveat,
            a.memfd,
            a.empty,
            a.argv,
            a.envp,
            libc::AT_EMPTY_PATH,
        );
        libc::syscall(libc::SYS_exit, 127);
        #[allow(clippy::empty_loop)]
        loop {}
    }
}

/// Size of the stack the child of a CLONE_VM clone runs on until its exec.
const CHILD_STACK: usize = 64 * 1024;

/// `clone3(args)`; in the child, `child_exec(child)` on the stack named in `args` (never
/// returns). Returns the raw syscall result in the parent.
///
/// With CLONE_VM the child shares the parent's memory and starts on its own stack, so it
/// must not return into the parent's frames: the child branch calls `child_exec` right after
/// the syscall instruction, in assembly.
///
/// # Safety
/// `args` is a valid `CloneArgs` with a stack for the child; `child` stays valid until the
/// child execs or exits (CLONE_VFORK guarantees it).
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_exec(args: &mut CloneArgs, child: *const ChildArgs) -> libc::c_long {
    let ret: libc::c_long;
    // SAFETY: per this function's contract. The syscall clobbers rcx and r11; in the parent
    // rax holds the result. In the child (rax == 0) the kernel set rsp to the top of the new
    // stack (16-byte aligned), and `call` enters `child_exec` with the ABI's alignment.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child,
            in("r13") child_exec as unsafe extern "C" fn(*const ChildArgs) -> !,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// Clones init into new namespaces (and, on v2, straight into its cgroup) and execs the memfd
/// image as `lamina init` with `control` at fd 3 (and, given `stdio = (stdin, out)`, those as
/// fd 0 and fds 1 and 2). Between clone and exec the child makes only
/// raw, async-signal-safe syscalls on memory prepared here.
///
/// On x86_64 the clone shares the supervisor's memory until the exec (CLONE_VM|CLONE_VFORK,
/// as posix_spawn does): copying the page tables of a large multi-threaded supervisor, the
/// copy-on-write faults that follow and the teardown at exec were a third of the CPU time of
/// an env start. Elsewhere the child gets a copy of the memory.
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

    // Every signal blocked around the clone, so that none runs a handler of the supervisor in
    // the child (which shares its memory); the child restores the caller's mask before exec.
    // SAFETY: sigset_t is plain data; zeroed is a valid value, filled by the calls below.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigfillset/pthread_sigmask on sets we own.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let child = ChildArgs {
        stdio,
        control,
        memfd: image.memfd.as_raw_fd(),
        empty: empty.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        sigmask: old,
    };

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

    #[cfg(target_arch = "x86_64")]
    let ret = {
        // 16-byte aligned stack for the child, alive until it has exec'd (CLONE_VFORK).
        let mut stack = vec![0u128; CHILD_STACK / 16];
        args.flags |= (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
        args.stack = stack.as_mut_ptr() as u64;
        args.stack_size = CHILD_STACK as u64;
        // SAFETY: `args` names a stack of CHILD_STACK bytes that outlives the child's use of
        // it (the parent resumes only once the child exec'd or exited); `child` and what it
        // points to live until then.
        let r = unsafe { clone3_exec(&mut args, &child) };
        drop(stack);
        if r < 0 {
            // The raw syscall returns -errno.
            Err(io::Error::from_raw_os_error(-r as i32))
        } else {
            Ok(r)
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let ret = {
        // SAFETY: clone3 without CLONE_VM gives the child a copy of our memory; the child
        // only runs `child_exec` (raw syscalls on values prepared above) and never returns.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                std::ptr::addr_of_mut!(args),
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if r == 0 {
            // SAFETY: see above.
            unsafe { child_exec(&child) }
        }
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    let ret = ret?;
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
