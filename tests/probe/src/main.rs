//! `lamina-probe`: a hostile function. Run as the function's process inside an env
//! (`lamina run --code DIR -- /var/task/lamina-probe [--host-port N]... [--host-addr IP:PORT]...`),
//! it attempts every escape below and prints one line per attempt:
//!
//! ```text
//! ESCAPE <name> blocked <detail>       the kernel refused, or there was nothing to reach
//! ESCAPE <name> SUCCEEDED <detail>     a hole in the sandbox
//! INFO <detail>                        context, not counted
//! PROBE DONE blocked=<n> succeeded=<m>
//! ```
//!
//! Exit status: 0 when everything was blocked, 1 when something succeeded, 2 on bad arguments,
//! 3 when it refused to run.
//!
//! Static build (for envs whose root has no libc):
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build -p lamina-probe --target
//! x86_64-unknown-linux-gnu`. The ordinary dynamic build works where the env has the host's `/usr`.
//!
//! Safety first: if it runs as root (any of the real, effective or saved uids is 0) or holds any
//! capability, it prints `PROBE REFUSED: running as root` and exits 3 before attempting
//! anything; a broken sandbox must never let it hurt the machine. The attempts that would be
//! destructive if they succeeded are also kept harmless: `sethostname` only with the current
//! name, `reboot` only with `LINUX_REBOOT_CMD_CAD_OFF`, mounts only over `/tmp` (undone),
//! `/proc/sysrq-trigger` only opened (nothing written), `kill(-1, SIGKILL)` only when
//! `kill(-1, 0)` shows there is nobody to kill, and last.
//!
//! Attempts, in order:
//! - identity: leaked fds (anything in /proc/self/fd but 0, 1, 2); uid/gid non-zero;
//!   supplementary groups empty; CapInh/CapPrm/CapEff/CapBnd/CapAmb zero; NoNewPrivs 1;
//!   Seccomp 2.
//! - host files: /etc/shadow, /root, /home, /var/lib/lamina, /run, /etc/hostname (must be the
//!   env's), host-only entries in /etc, /proc/1/root, /proc/kcore, /proc/1/environ, device
//!   nodes in /dev besides null, zero, full, random, urandom, tty, ptmx and pts.
//! - writes outside /tmp: /, /usr, /var/task, /opt, /etc, /etc/passwd, /proc/sys/kernel/hostname,
//!   /proc/sys/vm/drop_caches, /proc/sys/kernel/{core_pattern,modprobe} (opened only),
//!   /proc/sysrq-trigger (opened only), /dev/shm (Landlock), /sys read-only.
//! - mounts and roots: mount tmpfs on /tmp, umount2 /proc, pivot_root, chroot.
//! - namespaces: unshare of each type, setns on /proc/1/ns/*, clone(CLONE_NEWUSER),
//!   clone3(CLONE_NEWUSER).
//! - other processes: ptrace(PTRACE_ATTACH, 1), PTRACE_TRACEME + exec, process_vm_readv(1),
//!   host processes visible in /proc, the lamina binary (/proc/*/exe, a bounded walk of /).
//! - privileges: setuid(0), capset, sethostname.
//! - kernel surface: keyctl, add_key, bpf, perf_event_open, userfaultfd, io_uring_setup,
//!   open_by_handle_at, kexec_load, init_module, finit_module, swapon, reboot, acct,
//!   mknod of a char device, raw and AF_PACKET sockets, TIOCSTI on fd 0.
//! - network: interfaces besides lo, host loopback ports (`--host-port`), host addresses
//!   (`--host-addr`).
//! - signals, last: kill(1, SIGKILL), kill(-1, SIGKILL).

use std::ffi::{CStr, CString};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

// ---- reporting --------------------------------------------------------------------------------

/// Tally of the attempts, printed as they happen.
#[derive(Default)]
struct Report {
    blocked: u32,
    succeeded: u32,
}

impl Report {
    fn blocked(&mut self, name: &str, detail: impl fmt::Display) {
        self.blocked += 1;
        println!("ESCAPE {name} blocked {detail}");
    }

    fn escaped(&mut self, name: &str, detail: impl fmt::Display) {
        self.succeeded += 1;
        println!("ESCAPE {name} SUCCEEDED {detail}");
    }

    fn info(&self, detail: impl fmt::Display) {
        println!("INFO {detail}");
    }

    /// For attempts whose success is the escape: `Err` (the kernel's refusal) is blocked.
    fn refused<T: fmt::Debug>(&mut self, name: &str, res: Result<T, Errno>) {
        match res {
            Ok(v) => self.escaped(name, format!("returned {v:?}")),
            Err(e) => self.blocked(name, e),
        }
    }
}

/// An errno, printed by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Errno(i32);

impl Errno {
    fn last() -> Self {
        Errno(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    fn of(e: &io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::EBADF => "EBADF",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::ENOTDIR => "ENOTDIR",
            libc::EINVAL => "EINVAL",
            libc::ENOTTY => "ENOTTY",
            libc::EROFS => "EROFS",
            libc::ENOSYS => "ENOSYS",
            libc::EAFNOSUPPORT => "EAFNOSUPPORT",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ENETUNREACH => "ENETUNREACH",
            libc::ECONNREFUSED => "ECONNREFUSED",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::EHOSTUNREACH => "EHOSTUNREACH",
            libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            _ => "",
        };
        write!(
            f,
            "{name}({}): {}",
            self.0,
            io::Error::from_raw_os_error(self.0)
        )
    }
}

/// A raw syscall's return value as a result.
fn sys(rc: libc::c_long) -> Result<libc::c_long, Errno> {
    if rc == -1 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn close(fd: libc::c_long) {
    if let Ok(fd) = i32::try_from(fd) {
        // SAFETY: closes an fd this process just obtained and owns.
        unsafe { libc::close(fd) };
    }
}

/// Runs `f` in a forked child and returns the `i32` it produced (the probe is single-threaded,
/// so the child may allocate). Used for attempts that would change the probe's own process.
fn in_child(f: impl FnOnce() -> i32) -> Result<i32, String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", Errno::last()));
    }
    // SAFETY: the probe is single-threaded; the child runs `f` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = Errno::last();
        close(fds[0].into());
        close(fds[1].into());
        return Err(format!("fork: {e}"));
    }
    if pid == 0 {
        let v = f().to_ne_bytes();
        // SAFETY: writes 4 bytes from a live array to our pipe, then leaves without unwinding.
        unsafe {
            libc::write(fds[1], v.as_ptr().cast(), v.len());
            libc::_exit(0);
        }
    }
    close(fds[1].into());
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        // SAFETY: reads into the live remainder of `buf`.
        let n = unsafe { libc::read(fds[0], buf[got..].as_mut_ptr().cast(), 4 - got) };
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    close(fds[0].into());
    let mut status = 0;
    // SAFETY: reaps our own child; `status` is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if got == 4 {
        Ok(i32::from_ne_bytes(buf))
    } else {
        Err(format!("child died (wait status {status:#x})"))
    }
}

/// In a child: 0 if the raw syscall succeeded, its errno otherwise.
fn child_errno(rc: libc::c_long) -> i32 {
    if rc == -1 {
        Errno::last().0
    } else {
        0
    }
}

/// Outcome of an attempt run with [`in_child`] whose success is the escape.
fn child_outcome(r: &mut Report, name: &str, res: Result<i32, String>) {
    match res {
        Ok(0) => r.escaped(name, "the kernel allowed it"),
        Ok(e) => r.blocked(name, Errno(e)),
        Err(e) => r.blocked(name, e),
    }
}

/// After a raw clone/clone3 that might have succeeded: the new process leaves, the parent reaps.
fn reap_if_forked(rc: libc::c_long) {
    if rc == 0 {
        // SAFETY: we are the new process: leave at once.
        unsafe { libc::_exit(0) };
    }
    if rc > 0 {
        // SAFETY: reaps our own child; a null status pointer is allowed.
        unsafe { libc::waitpid(rc as libc::pid_t, std::ptr::null_mut(), 0) };
    }
}

// ---- arguments --------------------------------------------------------------------------------

#[derive(Default)]
struct Args {
    host_ports: Vec<u16>,
    host_addrs: Vec<SocketAddr>,
    /// Entries the walk for a `lamina` file visits at most (default 200,000; the emulated
    /// cgroup v2 guest passes fewer).
    walk_limit: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
        match a.as_str() {
            "--host-port" => {
                let v = value("--host-port")?;
                args.host_ports
                    .push(v.parse().map_err(|_| format!("bad port {v:?}"))?);
            }
            "--host-addr" => {
                let v = value("--host-addr")?;
                args.host_addrs
                    .push(v.parse().map_err(|_| format!("bad IP:PORT {v:?}"))?);
            }
            "--walk-limit" => {
                let v = value("--walk-limit")?;
                args.walk_limit = Some(v.parse().map_err(|_| format!("bad number {v:?}"))?);
            }
            "-h" | "--help" => return Err(
                "usage: lamina-probe [--host-port N]... [--host-addr IP:PORT]... [--walk-limit N]"
                    .into(),
            ),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

// ---- /proc/self/status ------------------------------------------------------------------------

/// The value of `key:` in /proc/self/status.
fn status_field(status: &str, key: &str) -> Option<String> {
    status.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

fn cap_set(status: &str, key: &str) -> Option<u64> {
    status_field(status, key).and_then(|v| u64::from_str_radix(&v, 16).ok())
}

/// linux/capability.h, version 3 (64-bit sets in two 32-bit halves).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capget() -> Result<[CapData; 2], Errno> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: a v3 header and the two data structs v3 expects.
    sys(unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) })?;
    Ok(data)
}

/// Why the probe must not run, if it must not: root, or any capability.
fn refusal() -> Option<String> {
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    // SAFETY: three valid out pointers.
    if unsafe { libc::getresuid(&mut ruid, &mut euid, &mut suid) } != 0 {
        return Some(format!("getresuid: {}", Errno::last()));
    }
    // SAFETY: no arguments.
    if ruid == 0 || euid == 0 || suid == 0 || unsafe { libc::getuid() == 0 || libc::geteuid() == 0 }
    {
        return Some(format!("uids {ruid}/{euid}/{suid}"));
    }
    match capget() {
        Ok(d) if d.iter().any(|d| d.effective != 0 || d.permitted != 0) => {
            return Some("holds capabilities (capget)".into())
        }
        Ok(_) => {}
        Err(e) => return Some(format!("capget: {e}")),
    }
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        for key in ["CapEff", "CapPrm"] {
            if cap_set(&status, key) != Some(0) {
                return Some(format!("{key} {:?}", status_field(&status, key)));
            }
        }
    }
    None
}

// ---- identity ---------------------------------------------------------------------------------

fn leaked_fds(r: &mut Report) {
    let listing = format!("/proc/{}/fd", std::process::id());
    let dir = match fs::read_dir("/proc/self/fd") {
        Ok(d) => d,
        Err(e) => return r.blocked("leaked-fds", format!("cannot list /proc/self/fd: {e}")),
    };
    let mut leaked = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Ok(fd) = name.to_string_lossy().parse::<i32>() else {
            continue;
        };
        let target = fs::read_link(entry.path()).unwrap_or_default();
        if fd <= 2 || target == Path::new(&listing) {
            continue;
        }
        leaked.push(format!("{fd}->{}", target.display()));
    }
    if leaked.is_empty() {
        r.blocked("leaked-fds", "only 0, 1, 2");
    } else {
        r.escaped("leaked-fds", leaked.join(" "));
    }
}

fn ids(r: &mut Report) {
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: six valid out pointers.
    unsafe {
        libc::getresuid(&mut ruid, &mut euid, &mut suid);
        libc::getresgid(&mut rgid, &mut egid, &mut sgid);
    }
    let detail = format!("uid {ruid}/{euid}/{suid} gid {rgid}/{egid}/{sgid}");
    if [ruid, euid, suid, rgid, egid, sgid].contains(&0) {
        r.escaped("ids-nonzero", detail);
    } else {
        r.blocked("ids-nonzero", detail);
    }

    let mut groups = [0 as libc::gid_t; 256];
    // SAFETY: `groups` has room for 256 entries.
    let n = unsafe { libc::getgroups(256, groups.as_mut_ptr()) };
    match usize::try_from(n) {
        Ok(0) => r.blocked("supplementary-groups", "none"),
        Ok(n) => r.escaped("supplementary-groups", format!("{:?}", &groups[..n])),
        Err(_) => r.escaped(
            "supplementary-groups",
            format!("getgroups: {}", Errno::last()),
        ),
    }
}

fn status_checks(r: &mut Report) {
    let status = match fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => {
            r.info(format!("/proc/self/status unreadable: {e}"));
            String::new()
        }
    };
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let name = format!("caps:{key}");
        match cap_set(&status, key) {
            Some(0) => r.blocked(&name, "0"),
            Some(v) => r.escaped(&name, format!("{v:016x}")),
            None => r.escaped(&name, "not in /proc/self/status"),
        }
    }

    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointer.
    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    let field = status_field(&status, "NoNewPrivs");
    if nnp == 1 {
        r.blocked("no_new_privs", format!("prctl 1, status {field:?}"));
    } else {
        r.escaped("no_new_privs", format!("prctl {nnp}, status {field:?}"));
    }

    // SAFETY: PR_GET_SECCOMP takes no pointer.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    let field = status_field(&status, "Seccomp");
    let filters = status_field(&status, "Seccomp_filters");
    let detail = format!("prctl {mode}, status {field:?}, filters {filters:?}");
    if mode == 2 || field.as_deref() == Some("2") {
        r.blocked("seccomp-mode", detail);
    } else {
        r.escaped("seccomp-mode", detail);
    }
}

// ---- host files -------------------------------------------------------------------------------

fn unreadable_file(r: &mut Report, path: &str) {
    let name = format!("read:{path}");
    match fs::File::open(path) {
        Ok(mut f) => {
            let mut buf = [0u8; 64];
            match f.read(&mut buf) {
                // Masked with /dev/null: it opens, and there is nothing to read.
                Ok(0) => r.blocked(&name, "masked: read 0 bytes"),
                Ok(n) => r.escaped(&name, format!("read {n} bytes")),
                Err(e) => r.blocked(&name, format!("opened but read failed: {e}")),
            }
        }
        Err(e) => r.blocked(&name, Errno::of(&e)),
    }
}

/// A host directory: absent, unreadable or empty in the env.
fn empty_dir(r: &mut Report, path: &str) {
    let name = format!("list:{path}");
    match fs::read_dir(path) {
        Ok(d) => {
            let entries: Vec<String> = d
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .take(12)
                .collect();
            if entries.is_empty() {
                r.blocked(&name, "empty");
            } else {
                r.escaped(&name, format!("entries {entries:?}"));
            }
        }
        Err(e) => r.blocked(&name, Errno::of(&e)),
    }
}

fn state_dir(r: &mut Report) {
    match fs::symlink_metadata("/var/lib/lamina") {
        Ok(_) => r.escaped("visible:/var/lib/lamina", "exists"),
        Err(e) => r.blocked("visible:/var/lib/lamina", Errno::of(&e)),
    }
}

fn etc_hostname(r: &mut Report) {
    let mut uts = std::mem::MaybeUninit::<libc::utsname>::zeroed();
    // SAFETY: fills a utsname.
    unsafe { libc::uname(uts.as_mut_ptr()) };
    // SAFETY: zero-initialised, then filled by uname; nodename is NUL-terminated.
    let node = unsafe { CStr::from_ptr(uts.assume_init_ref().nodename.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    match fs::read_to_string("/etc/hostname") {
        Ok(s) if s.trim() == node || s.trim().is_empty() => {
            r.blocked("host:/etc/hostname", format!("the env's own ({node:?})"))
        }
        Ok(s) => r.escaped(
            "host:/etc/hostname",
            format!("{:?}, but this env is {node:?}", s.trim()),
        ),
        Err(e) => r.blocked("host:/etc/hostname", Errno::of(&e)),
    }
}

/// Files a host's /etc has and an env's minimal /etc must not.
const HOST_ONLY_ETC: &[&str] = &[
    "shadow",
    "gshadow",
    "sudoers",
    "ssh",
    "machine-id",
    "fstab",
    "crontab",
    "systemd",
    "docker",
    "lamina",
    "sudoers.d",
    "ssl/private",
];

fn etc_minimal(r: &mut Report) {
    let present: Vec<&str> = HOST_ONLY_ETC
        .iter()
        .copied()
        .filter(|f| fs::symlink_metadata(Path::new("/etc").join(f)).is_ok())
        .collect();
    let entries: Vec<String> = fs::read_dir("/etc")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    r.info(format!("/etc holds {} entries: {:?}", entries.len(), {
        let mut e = entries.clone();
        e.sort();
        e.truncate(40);
        e
    }));
    if present.is_empty() {
        r.blocked("host:/etc", "no host-only files");
    } else {
        r.escaped("host:/etc", format!("host files present: {present:?}"));
    }
}

fn proc1_root(r: &mut Report) {
    match fs::read_dir("/proc/1/root/") {
        Ok(d) => {
            let n = d.count();
            r.escaped("proc1-root", format!("listed /proc/1/root: {n} entries"))
        }
        Err(e) => r.blocked("proc1-root", Errno::of(&e)),
    }
}

// ---- writes -----------------------------------------------------------------------------------

/// Creates (and removes) a file in `dir`: must fail everywhere but /tmp.
fn create_in(r: &mut Report, dir: &str) {
    let path = Path::new(dir).join(format!("lamina-probe-{}", std::process::id()));
    let name = format!("write:{dir}");
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(_) => {
            let _ = fs::remove_file(&path);
            r.escaped(&name, format!("created {}", path.display()));
        }
        Err(e) => r.blocked(&name, Errno::of(&e)),
    }
}

/// Opens an existing file for writing (appending, so nothing changes even if it opens).
fn open_for_write(r: &mut Report, path: &str) {
    let name = format!("write:{path}");
    match fs::OpenOptions::new().append(true).open(path) {
        Ok(_) => r.escaped(&name, "opened for writing"),
        Err(e) => r.blocked(&name, Errno::of(&e)),
    }
}

/// Writes `value` to a sysctl file (the current hostname, drop_caches' harmless 1).
fn write_sysctl(r: &mut Report, path: &str, value: &[u8]) {
    use std::io::Write;
    let name = format!("write:{path}");
    match fs::OpenOptions::new().write(true).open(path) {
        Ok(mut f) => match f.write_all(value) {
            Ok(()) => r.escaped(&name, "written"),
            Err(e) => r.escaped(&name, format!("opened for writing (write: {e})")),
        },
        Err(e) => r.blocked(&name, Errno::of(&e)),
    }
}

fn sysrq(r: &mut Report) {
    // Only opened: any byte written would trigger a sysrq action.
    match fs::OpenOptions::new()
        .write(true)
        .open("/proc/sysrq-trigger")
    {
        Ok(_) => r.escaped(
            "write:/proc/sysrq-trigger",
            "opened for writing (nothing written)",
        ),
        Err(e) => r.blocked("write:/proc/sysrq-trigger", Errno::of(&e)),
    }
}

fn landlock_abi() -> Option<i64> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: the version query takes a null attr and size 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (rc >= 1).then_some(rc)
}

/// /dev/shm is a writable tmpfs that only Landlock denies.
fn dev_shm(r: &mut Report) {
    let Some(abi) = landlock_abi() else {
        r.info("landlock unsupported");
        let path = format!("/dev/shm/lamina-probe-{}", std::process::id());
        if fs::write(&path, b"x").is_ok() {
            let _ = fs::remove_file(&path);
            r.info("/dev/shm is writable (no Landlock to deny it)");
        }
        return;
    };
    r.info(format!("landlock ABI {abi}"));
    create_in(r, "/dev/shm");
}

fn sys_readonly(r: &mut Report) {
    let path = cstr("/sys");
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a valid path and a statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return r.blocked("sys-readonly", format!("/sys: {}", Errno::last()));
    }
    // SAFETY: filled by statvfs above.
    let st = unsafe { st.assume_init() };
    let empty = fs::read_dir("/sys").map(|d| d.count() == 0).unwrap_or(true);
    if empty {
        r.blocked("sys-readonly", "/sys absent or empty");
    } else if st.f_flag & libc::ST_RDONLY != 0 {
        r.blocked("sys-readonly", "/sys mounted read-only");
    } else {
        r.escaped("sys-readonly", "/sys mounted read-write");
    }
}

/// Device nodes an env's minimal /dev may hold: null, zero, full, random, urandom, tty, ptmx
/// and the pseudo-terminals under /dev/pts (major 136).
fn allowed_device(major: u32, minor: u32) -> bool {
    matches!(
        (major, minor),
        (1, 3) | (1, 5) | (1, 7) | (1, 8) | (1, 9) | (5, 0) | (5, 2)
    ) || major == 136
}

/// Any other device node (disks, /dev/mem, /dev/kmsg, ...) reachable under /dev.
fn dev_nodes(r: &mut Report) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut found = Vec::new();
    let mut stack = vec![(PathBuf::from("/dev"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() && depth < 3 {
                stack.push((entry.path(), depth + 1));
            } else if ft.is_char_device() || ft.is_block_device() {
                let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
                if ft.is_block_device() || !allowed_device(major, minor) {
                    found.push(format!("{}({major}:{minor})", entry.path().display()));
                }
            }
        }
    }
    if found.is_empty() {
        r.blocked(
            "dev-nodes",
            "only null, zero, full, random, urandom, tty, ptmx, pts",
        );
    } else {
        found.sort();
        r.escaped("dev-nodes", found.join(" "));
    }
}

/// /tmp must work, or every "blocked" above could just mean a broken env.
fn tmp_writable(r: &Report) {
    let path = format!("/tmp/lamina-probe-{}", std::process::id());
    match fs::write(&path, b"x") {
        Ok(()) => {
            let _ = fs::remove_file(&path);
            r.info("/tmp writable");
        }
        Err(e) => r.info(format!("/tmp NOT writable: {e}")),
    }
}

// ---- mounts and roots -------------------------------------------------------------------------

fn mount_tmp(r: &mut Report) {
    let (src, target, fstype) = (cstr("probe"), cstr("/tmp"), cstr("tmpfs"));
    // SAFETY: valid strings, no data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        // SAFETY: undoes the mount just made.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        r.escaped("mount-tmpfs", "mounted a tmpfs over /tmp (undone)");
    } else {
        r.blocked("mount-tmpfs", Errno::last());
    }
}

fn umount_proc(r: &mut Report) {
    let target = cstr("/proc");
    // SAFETY: a valid path.
    let rc = unsafe { libc::umount2(target.as_ptr(), 0) };
    r.refused("umount2:/proc", sys(rc.into()));
}

fn pivot_root(r: &mut Report) {
    let (new, old) = (cstr("/tmp"), cstr("/tmp"));
    // SAFETY: valid paths.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, new.as_ptr(), old.as_ptr()) };
    r.refused("pivot_root", sys(rc));
}

fn chroot(r: &mut Report) {
    // Keep a handle on the current root to go back if chroot works.
    let root = fs::File::open("/");
    let dir = cstr("/tmp");
    // SAFETY: a valid path.
    let rc = unsafe { libc::chroot(dir.as_ptr()) };
    if rc != 0 {
        return r.blocked("chroot", Errno::last());
    }
    if let Ok(root) = root {
        let dot = cstr(".");
        // SAFETY: back to the old root through the fd opened before.
        unsafe {
            libc::fchdir(std::os::fd::AsRawFd::as_raw_fd(&root));
            libc::chroot(dot.as_ptr());
            libc::chdir(cstr("/").as_ptr());
        }
    }
    r.escaped("chroot", "chroot(/tmp) allowed");
}

// ---- namespaces -------------------------------------------------------------------------------

const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER),
    ("CLONE_NEWNS", libc::CLONE_NEWNS),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
    ("CLONE_NEWPID", libc::CLONE_NEWPID),
    ("CLONE_NEWNET", libc::CLONE_NEWNET),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
    ("CLONE_NEWTIME", 0x80),
];

fn unshare_each(r: &mut Report) {
    for (name, flag) in NAMESPACES {
        // SAFETY: (in the child) integer argument only.
        let res = in_child(|| child_errno(unsafe { libc::syscall(libc::SYS_unshare, *flag) }));
        child_outcome(r, &format!("unshare:{name}"), res);
    }
}

fn setns_pid1(r: &mut Report) {
    let entries = match fs::read_dir("/proc/1/ns") {
        Ok(d) => d,
        Err(e) => return r.blocked("setns:/proc/1/ns", Errno::of(&e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        return r.blocked("setns:/proc/1/ns", "no entries");
    }
    for ns in names {
        let name = format!("setns:/proc/1/ns/{ns}");
        let path = cstr(&format!("/proc/1/ns/{ns}"));
        // SAFETY: a valid path.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            r.blocked(&name, format!("open: {}", Errno::last()));
            continue;
        }
        // SAFETY: (in the child) setns on an fd we own.
        let res = in_child(|| child_errno(unsafe { libc::syscall(libc::SYS_setns, fd, 0) }));
        close(fd.into());
        child_outcome(r, &name, res);
    }
}

fn clone_newuser(r: &mut Report) {
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: fork-like clone (null stack); the new process leaves at once.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    reap_if_forked(rc);
    r.refused(
        "clone:CLONE_NEWUSER",
        sys(rc).map(|_| "new process in a user namespace"),
    );
}

fn clone3_newuser(r: &mut Report) {
    // struct clone_args, CLONE_ARGS_SIZE_VER0: flags, pidfd, child_tid, parent_tid, exit_signal,
    // stack, stack_size, tls.
    let mut args = [0u64; 8];
    args[0] = libc::CLONE_NEWUSER as u64;
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: a valid clone_args of the size passed; the new process leaves at once.
    let rc = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 64usize) };
    reap_if_forked(rc);
    r.refused(
        "clone3:CLONE_NEWUSER",
        sys(rc).map(|_| "new process in a user namespace"),
    );
}

// ---- other processes --------------------------------------------------------------------------

fn ptrace_attach_init(r: &mut Report) {
    // SAFETY: integer arguments only.
    let rc = unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_ATTACH, 1, 0usize, 0usize) };
    if rc == 0 {
        // SAFETY: lets pid 1 go again.
        unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_DETACH, 1, 0usize, 0usize) };
    }
    r.refused("ptrace:attach-pid1", sys(rc));
}

fn ptrace_traceme_exec(r: &mut Report) {
    // SAFETY: the probe is single-threaded; the child only makes syscalls and leaves.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return r.blocked("ptrace:traceme-exec", format!("fork: {}", Errno::last()));
    }
    if pid == 0 {
        // SAFETY: integer arguments only.
        let rc =
            unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0usize, 0usize) };
        if rc != 0 {
            // SAFETY: leaves the child with the errno as status.
            unsafe { libc::_exit(Errno::last().0.clamp(1, 125)) };
        }
        let prog = cstr("/proc/self/exe");
        // An argument the probe refuses: even untraced, the new image would exit at once.
        let (arg0, arg1) = (cstr("lamina-probe"), cstr("--traceme-child"));
        let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
        // SAFETY: valid NUL-terminated program and argv; stops with SIGTRAP under trace.
        unsafe {
            libc::execv(prog.as_ptr(), argv.as_ptr());
            libc::_exit(126);
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child, including trace stops.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    if libc::WIFSTOPPED(status) {
        // SAFETY: ends the traced child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &mut status, libc::__WALL);
        }
        return r.escaped("ptrace:traceme-exec", "traced child stopped at exec");
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(126) => r.escaped("ptrace:traceme-exec", "TRACEME allowed (exec failed)"),
        Some(e) => r.blocked("ptrace:traceme-exec", Errno(e)),
        None => r.blocked(
            "ptrace:traceme-exec",
            format!("child wait status {status:#x}"),
        ),
    }
}

fn process_vm_readv_init(r: &mut Report) {
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: 0x40_0000 as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one local iovec pointing at `buf`; the remote one is only read by the kernel.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_process_vm_readv,
            1,
            &local,
            1usize,
            &remote,
            1usize,
            0usize,
        )
    };
    match sys(rc) {
        Ok(n) => r.escaped("process_vm_readv:pid1", format!("read {n} bytes")),
        // EFAULT: access was granted, only the guessed address was wrong.
        Err(e) if e.0 == libc::EFAULT => r.escaped(
            "process_vm_readv:pid1",
            "access granted (EFAULT at the guessed address)",
        ),
        Err(e) => r.blocked("process_vm_readv:pid1", e),
    }
}

fn pids() -> Vec<i32> {
    let mut pids: Vec<i32> = fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// Process names that only a host (or another env) has.
const HOST_DAEMONS: &[&str] = &[
    "systemd",
    "init",
    "sshd",
    "kthreadd",
    "cron",
    "crond",
    "dockerd",
    "containerd",
    "dbus-daemon",
    "rsyslogd",
    "agetty",
    "udevd",
];

fn host_processes(r: &mut Report) {
    let me = std::process::id() as i32;
    let seen: Vec<(i32, String)> = pids().into_iter().map(|p| (p, comm(p))).collect();
    r.info(format!(
        "{} pids seen: {:?}",
        seen.len(),
        &seen[..seen.len().min(30)]
    ));
    let foreign: Vec<&(i32, String)> = seen
        .iter()
        .filter(|(pid, comm)| {
            let daemon = HOST_DAEMONS.contains(&comm.as_str())
                || comm.starts_with("systemd")
                || comm.starts_with("kworker");
            daemon || (*pid != 1 && *pid != me)
        })
        .collect();
    if seen.is_empty() {
        r.blocked("host-processes", "/proc lists no processes");
    } else if foreign.is_empty() {
        r.blocked("host-processes", format!("only the env's own: {seen:?}"));
    } else {
        r.escaped(
            "host-processes",
            format!(
                "{} foreign of {} visible: {:?}",
                foreign.len(),
                seen.len(),
                &foreign[..foreign.len().min(30)]
            ),
        );
    }
}

fn lamina_exe(r: &mut Report) {
    match fs::read_link("/proc/1/exe") {
        Ok(t) => r.escaped("exe:/proc/1/exe", format!("-> {}", t.display())),
        Err(e) => r.blocked("exe:/proc/1/exe", Errno::of(&e)),
    }
    let me = std::process::id() as i32;
    let found: Vec<String> = pids()
        .into_iter()
        .filter(|&p| p != me)
        .filter_map(|p| {
            let t = fs::read_link(format!("/proc/{p}/exe")).ok()?;
            let name = t.file_name()?.to_string_lossy().into_owned();
            (name.starts_with("lamina") && name != "lamina-probe")
                .then(|| format!("{p}->{}", t.display()))
        })
        .collect();
    if found.is_empty() {
        r.blocked("exe:/proc/*/exe", "no lamina executable readable");
    } else {
        r.escaped("exe:/proc/*/exe", found.join(" "));
    }
}

/// Bounded walk of `/` (skipping /proc, /sys, /dev) for a file named `lamina`.
fn lamina_on_disk(r: &mut Report, max_entries: usize) {
    const MAX_DEPTH: usize = 12;
    let mut stack: Vec<(PathBuf, usize)> = vec![(PathBuf::from("/"), 0)];
    let (mut seen, mut found) = (0usize, Vec::new());
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > max_entries {
                break;
            }
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                let skip = ["/proc", "/sys", "/dev"]
                    .iter()
                    .any(|s| path == Path::new(s));
                if !skip && depth < MAX_DEPTH {
                    stack.push((path, depth + 1));
                }
            } else if entry.file_name().as_bytes() == b"lamina" {
                found.push(path.display().to_string());
            }
        }
    }
    if found.is_empty() {
        r.blocked("lamina-on-disk", format!("not found in {seen} entries"));
    } else {
        r.escaped("lamina-on-disk", found.join(" "));
    }
}

// ---- privileges -------------------------------------------------------------------------------

fn setuid_root(r: &mut Report) {
    // SAFETY: integer argument only (in a child, so a success changes nothing here).
    let res = in_child(|| child_errno(unsafe { libc::syscall(libc::SYS_setuid, 0) }));
    child_outcome(r, "setuid:0", res);
}

fn capset_raise(r: &mut Report) {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let all = CapData {
        effective: u32::MAX,
        permitted: u32::MAX,
        inheritable: u32::MAX,
    };
    let data = [all, all];
    // SAFETY: a v3 header and two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    r.refused("capset:raise-all", sys(rc));
}

fn sethostname_same(r: &mut Report) {
    let mut uts = std::mem::MaybeUninit::<libc::utsname>::zeroed();
    // SAFETY: fills a utsname.
    unsafe { libc::uname(uts.as_mut_ptr()) };
    // SAFETY: zero-initialised then filled; nodename is NUL-terminated.
    let node = unsafe { CStr::from_ptr(uts.assume_init_ref().nodename.as_ptr()) }.to_owned();
    // SAFETY: the current name, with its length: even if allowed, nothing changes.
    let rc = unsafe { libc::sethostname(node.as_ptr(), node.as_bytes().len()) };
    r.refused("sethostname", sys(rc.into()));
}

// ---- kernel surface ---------------------------------------------------------------------------

fn keyrings(r: &mut Report) {
    const KEYCTL_GET_KEYRING_ID: libc::c_int = 0;
    const KEY_SPEC_SESSION_KEYRING: libc::c_int = -3;
    const KEY_SPEC_PROCESS_KEYRING: libc::c_int = -2;
    // SAFETY: integer arguments only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING,
            0,
        )
    };
    r.refused("keyctl", sys(rc));
    let (ty, desc) = (cstr("user"), cstr("lamina-probe"));
    let payload = b"x";
    // SAFETY: valid strings and a one-byte payload.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_PROCESS_KEYRING,
        )
    };
    r.refused("add_key", sys(rc));
}

fn bpf_map(r: &mut Report) {
    const BPF_MAP_CREATE: libc::c_int = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    // union bpf_attr for MAP_CREATE: map_type, key_size, value_size, max_entries (rest zero).
    let mut attr = [0u32; 32];
    attr[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 4, 1]);
    // SAFETY: a zero-padded bpf_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if rc >= 0 {
        close(rc);
    }
    r.refused("bpf", sys(rc));
}

fn perf_event(r: &mut Report) {
    // struct perf_event_attr: type (u32), size (u32), config (u64), ..., flags (u64) at 40.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&0u64.to_ne_bytes()); // PERF_COUNT_SW_CPU_CLOCK
    let flags: u64 = (1 << 5) | (1 << 6); // exclude_kernel | exclude_hv: allowed unprivileged
    attr[40..48].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: a zeroed perf_event_attr of the size it declares; pid 0 = self, any cpu.
    let rc = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0usize) };
    if rc >= 0 {
        close(rc);
    }
    r.refused("perf_event_open", sys(rc));
}

fn userfaultfd(r: &mut Report) {
    const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    // SAFETY: integer argument only.
    let rc = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY) };
    if rc >= 0 {
        close(rc);
    }
    r.refused("userfaultfd", sys(rc));
}

fn io_uring(r: &mut Report) {
    let mut params = [0u8; 120]; // struct io_uring_params
                                 // SAFETY: a zeroed, writable io_uring_params.
    let rc = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if rc >= 0 {
        close(rc);
    }
    r.refused("io_uring_setup", sys(rc));
}

fn open_by_handle(r: &mut Report) {
    let root = match fs::File::open("/") {
        Ok(f) => f,
        Err(e) => return r.blocked("open_by_handle_at", format!("open /: {e}")),
    };
    // struct file_handle { u32 handle_bytes; int handle_type; u8 f_handle[8]; }: a guessed
    // ext4/tmpfs inode handle (inode 2, generation 0), as in the "shocker" escape.
    let mut handle = [0u8; 16];
    handle[0..4].copy_from_slice(&8u32.to_ne_bytes());
    handle[4..8].copy_from_slice(&1i32.to_ne_bytes()); // FILEID_INO32_GEN
    handle[8..12].copy_from_slice(&2u32.to_ne_bytes());
    // SAFETY: a valid mount fd and a file_handle of the size it declares.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            std::os::fd::AsRawFd::as_raw_fd(&root),
            handle.as_mut_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if rc >= 0 {
        close(rc);
    }
    r.refused("open_by_handle_at", sys(rc));
}

fn modules_and_kexec(r: &mut Report) {
    // SAFETY: no segments: a no-op at worst (it needs CAP_SYS_BOOT, which the probe lacks).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0usize,
            0usize,
            std::ptr::null::<u8>(),
            0usize,
        )
    };
    r.refused("kexec_load", sys(rc));

    let empty = cstr("");
    // SAFETY: a null image of length 0 and an empty parameter string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            std::ptr::null::<u8>(),
            0usize,
            empty.as_ptr(),
        )
    };
    r.refused("init_module", sys(rc));

    let module = fs::File::open("/proc/self/exe");
    let fd = module
        .as_ref()
        .map(std::os::fd::AsRawFd::as_raw_fd)
        .unwrap_or(-1);
    // SAFETY: an fd we own (not a module: the kernel would refuse it after the checks).
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, fd, empty.as_ptr(), 0) };
    r.refused("finit_module", sys(rc));
}

fn swapon(r: &mut Report) {
    let path = cstr(&format!("/tmp/lamina-probe-swap-{}", std::process::id()));
    // SAFETY: a valid (absent) path.
    let rc = unsafe { libc::syscall(libc::SYS_swapon, path.as_ptr(), 0) };
    r.refused("swapon", sys(rc));
}

fn reboot_cad_off(r: &mut Report) {
    // SAFETY: CAD_OFF only changes what Ctrl-Alt-Del does.
    let rc = unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_CAD_OFF) };
    r.refused("reboot:CAD_OFF", sys(rc.into()));
}

fn acct(r: &mut Report) {
    let path = format!("/tmp/lamina-probe-acct-{}", std::process::id());
    let _ = fs::write(&path, b"");
    let c = cstr(&path);
    // SAFETY: a valid path.
    let rc = unsafe { libc::acct(c.as_ptr()) };
    if rc == 0 {
        // SAFETY: turns accounting off again.
        unsafe { libc::acct(std::ptr::null()) };
    }
    let _ = fs::remove_file(&path);
    r.refused("acct", sys(rc.into()));
}

fn mknod_chardev(r: &mut Report) {
    let path = format!("/tmp/lamina-probe-null-{}", std::process::id());
    let c = cstr(&path);
    let dev = libc::makedev(1, 3);
    // SAFETY: a valid path and integer arguments.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, dev) };
    if rc == 0 {
        let _ = fs::remove_file(&path);
    }
    r.refused("mknod:char-1:3", sys(rc.into()));
}

fn raw_sockets(r: &mut Report) {
    let eth_p_all = i32::from((libc::ETH_P_ALL as u16).to_be());
    for (name, domain, ty, proto) in [
        (
            "socket:AF_INET-SOCK_RAW",
            libc::AF_INET,
            libc::SOCK_RAW,
            libc::IPPROTO_ICMP,
        ),
        (
            "socket:AF_INET6-SOCK_RAW",
            libc::AF_INET6,
            libc::SOCK_RAW,
            libc::IPPROTO_ICMPV6,
        ),
        (
            "socket:AF_PACKET",
            libc::AF_PACKET,
            libc::SOCK_RAW,
            eth_p_all,
        ),
    ] {
        // SAFETY: integer arguments only.
        let rc = unsafe { libc::syscall(libc::SYS_socket, domain, ty, proto) };
        if rc >= 0 {
            close(rc);
        }
        r.refused(name, sys(rc));
    }
}

fn tiocsti(r: &mut Report) {
    // A NUL byte: if this were allowed on a real terminal, the least harmful input there is.
    let c: u8 = 0;
    // SAFETY: fd 0 and a pointer to one byte.
    let rc = unsafe { libc::ioctl(0, libc::TIOCSTI, &c) };
    match sys(rc.into()) {
        Ok(_) => r.escaped("ioctl:TIOCSTI", "pushed a byte into fd 0's terminal"),
        Err(e) if e.0 == libc::ENOTTY => r.blocked(
            "ioctl:TIOCSTI",
            format!("{e} (fd 0 is no terminal; not refused by seccomp)"),
        ),
        Err(e) => r.blocked("ioctl:TIOCSTI", e),
    }
}

// ---- network ----------------------------------------------------------------------------------

fn interfaces(r: &mut Report) {
    let names: Vec<String> = match fs::read_to_string("/proc/net/dev") {
        Ok(s) => s
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
            .collect(),
        Err(_) => getifaddrs_names(),
    };
    let others: Vec<&String> = names.iter().filter(|n| n.as_str() != "lo").collect();
    if others.is_empty() {
        r.blocked("net-interfaces", format!("only {names:?}"));
    } else {
        r.escaped("net-interfaces", format!("{names:?}"));
    }
}

fn getifaddrs_names() -> Vec<String> {
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return Vec::new();
    }
    let mut names = Vec::new();
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        if !names.contains(&name) {
            names.push(name);
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees the list getifaddrs returned.
    unsafe { libc::freeifaddrs(ifap) };
    names
}

fn connect(r: &mut Report, name: &str, addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => r.escaped(name, format!("connected to {addr}")),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            r.blocked(name, format!("{addr}: timed out"))
        }
        Err(e) => r.blocked(name, format!("{addr}: {}", Errno::of(&e))),
    }
}

fn host_services(r: &mut Report, args: &Args) {
    for port in &args.host_ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], *port));
        connect(r, &format!("host-loopback:{port}"), addr);
    }
    for addr in &args.host_addrs {
        connect(r, &format!("host-addr:{addr}"), *addr);
    }
}

// ---- signals, last ----------------------------------------------------------------------------

fn kill_init(r: &mut Report) {
    // SAFETY: integer arguments only.
    let rc = unsafe { libc::kill(1, libc::SIGKILL) };
    r.refused("kill:pid1", sys(rc.into()));
}

/// Real uid of `pid`, from /proc/<pid>/status.
fn uid_of(pid: i32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, "Uid")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn kill_all(r: &mut Report) {
    // kill(-1, 0) delivers nothing and answers ESRCH when there is no process besides init and
    // the probe (it answers 0 when there are others, even if none may be signalled). Only then
    // is the real SIGKILL sent, harmless by construction.
    // SAFETY: integer arguments only.
    if unsafe { libc::kill(-1, 0) } == 0 {
        // SAFETY: no arguments.
        let my_uid = unsafe { libc::getuid() };
        let me = std::process::id() as i32;
        let same_uid: Vec<i32> = pids()
            .into_iter()
            .filter(|&p| p != 1 && p != me && uid_of(p) == Some(my_uid))
            .collect();
        return if same_uid.is_empty() {
            r.blocked(
                "kill:-1",
                "other processes visible, none of this uid (SIGKILL not sent)",
            )
        } else {
            r.escaped(
                "kill:-1",
                format!("would SIGKILL pids {same_uid:?} of this uid (not sent)"),
            )
        };
    }
    let first = Errno::last();
    // SAFETY: integer arguments only; kill(-1, 0) just found nobody to kill.
    let rc = unsafe { libc::kill(-1, libc::SIGKILL) };
    match sys(rc.into()) {
        Ok(_) => r.escaped("kill:-1", "SIGKILL delivered to other processes"),
        Err(e) => r.blocked(
            "kill:-1",
            format!("kill(-1, 0): {first}; kill(-1, SIGKILL): {e}"),
        ),
    }
}

// ---- main -------------------------------------------------------------------------------------

fn main() -> ExitCode {
    if let Some(why) = refusal() {
        println!("PROBE REFUSED: running as root ({why})");
        return ExitCode::from(3);
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lamina-probe: {e}");
            return ExitCode::from(2);
        }
    };
    let r = &mut Report::default();
    tmp_writable(r);

    leaked_fds(r);
    ids(r);
    status_checks(r);

    unreadable_file(r, "/etc/shadow");
    empty_dir(r, "/root");
    empty_dir(r, "/home");
    state_dir(r);
    empty_dir(r, "/run");
    etc_hostname(r);
    etc_minimal(r);
    proc1_root(r);
    unreadable_file(r, "/proc/kcore");
    unreadable_file(r, "/proc/1/environ");
    dev_nodes(r);

    for dir in ["/", "/usr", "/var/task", "/opt", "/etc"] {
        create_in(r, dir);
    }
    open_for_write(r, "/etc/passwd");
    open_for_write(r, "/proc/sys/kernel/core_pattern");
    open_for_write(r, "/proc/sys/kernel/modprobe");
    let mut uts = std::mem::MaybeUninit::<libc::utsname>::zeroed();
    // SAFETY: fills a utsname.
    unsafe { libc::uname(uts.as_mut_ptr()) };
    // SAFETY: zero-initialised then filled; nodename is NUL-terminated.
    let node = unsafe { CStr::from_ptr(uts.assume_init_ref().nodename.as_ptr()) }.to_owned();
    write_sysctl(r, "/proc/sys/kernel/hostname", node.as_bytes());
    write_sysctl(r, "/proc/sys/vm/drop_caches", b"1");
    sysrq(r);
    dev_shm(r);
    sys_readonly(r);

    mount_tmp(r);
    umount_proc(r);
    pivot_root(r);
    chroot(r);

    unshare_each(r);
    setns_pid1(r);
    clone_newuser(r);
    clone3_newuser(r);

    ptrace_attach_init(r);
    ptrace_traceme_exec(r);
    process_vm_readv_init(r);
    host_processes(r);
    lamina_exe(r);
    lamina_on_disk(r, args.walk_limit.unwrap_or(200_000));

    setuid_root(r);
    capset_raise(r);
    sethostname_same(r);

    keyrings(r);
    bpf_map(r);
    perf_event(r);
    userfaultfd(r);
    io_uring(r);
    open_by_handle(r);
    modules_and_kexec(r);
    swapon(r);
    reboot_cad_off(r);
    acct(r);
    mknod_chardev(r);
    raw_sockets(r);
    tiocsti(r);

    interfaces(r);
    host_services(r, &args);

    kill_init(r);
    kill_all(r);

    println!("PROBE DONE blocked={} succeeded={}", r.blocked, r.succeeded);
    if r.succeeded == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
