//! The seccomp profile of every function process: compiled once by the supervisor, installed by
//! init (`lamina_init::seccomp::install`) right before it execs the function.
//!
//! The policy is `seccomp-profiles/default.json` (seccompiler's JSON format), which is the
//! contract and is commented entry by entry. It holds two filters, both installed:
//! - `allowlist`: the syscalls ordinary programs and language runtimes need; anything else fails
//!   with `EPERM`. `socket`, `socketpair`, `clone`, `ioctl`, `mknod`/`mknodat` and
//!   `personality` are allowed only for some argument values.
//! - `clone3`: `clone3` fails with `ENOSYS`. Its flags are in memory, where seccomp cannot read
//!   them, so the namespace flags could not be refused; libcs and Go then fall back to
//!   `clone(2)`, whose flags the allowlist checks.
//!
//! [`DENIED`] lists the syscalls the allowlist must never contain, with the reason for each; a
//! unit test holds the profile to it.
//!
//! The profile is written for x86_64. On other architectures the names that do not exist there
//! (the legacy `open`, `stat`, `fork`, ...) are dropped from the allowlist, which only narrows
//! it; a name unknown on x86_64 is an error.

use std::collections::BTreeMap;

use lamina_init::protocol::BpfFilter;
use seccompiler::TargetArch;
use serde_json::Value;

/// The default profile, as shipped in the source tree.
pub const DEFAULT_PROFILE: &[u8] = include_bytes!("../../../seccomp-profiles/default.json");

/// BPF_MAXINSNS: the kernel refuses longer seccomp programs.
pub const MAX_INSTRUCTIONS: usize = 4096;

/// Syscalls the default allowlist must not contain, and why.
pub const DENIED: &[(&str, &str)] = &[
    // Mounts and the filesystem tree.
    (
        "mount",
        "mounts are init's job; a mount could hide or replace the env's files",
    ),
    ("umount2", "could uncover what init mounted over"),
    ("pivot_root", "changes the root"),
    ("chroot", "changes the root (chroot escapes)"),
    ("fsopen", "new mount API"),
    ("fsconfig", "new mount API"),
    ("fsmount", "new mount API"),
    ("fspick", "new mount API"),
    ("move_mount", "new mount API"),
    ("open_tree", "new mount API (clones mount trees)"),
    ("mount_setattr", "new mount API (changes mount flags)"),
    (
        "open_by_handle_at",
        "opens files by handle, bypassing the path (the shocker escape)",
    ),
    (
        "name_to_handle_at",
        "companion of open_by_handle_at; leaks inode handles",
    ),
    ("quotactl", "disk quotas of host filesystems"),
    ("quotactl_fd", "disk quotas of host filesystems"),
    ("swapon", "host swap"),
    ("swapoff", "host swap"),
    ("uselib", "obsolete a.out loader, historical exploit target"),
    ("fanotify_init", "filesystem-wide event monitoring"),
    ("fanotify_mark", "useless without fanotify_init"),
    (
        "sysfs",
        "obsolete filesystem-type query; no runtime needs it",
    ),
    ("ustat", "obsolete; glibc dropped its wrapper in 2.28"),
    ("_sysctl", "removed from the kernel in 5.5"),
    // Namespaces and other processes.
    (
        "unshare",
        "new namespaces (a user namespace unlocks most of the kernel's attack surface)",
    ),
    ("setns", "joins other namespaces"),
    (
        "ptrace",
        "reads and writes other processes (and PTRACE_TRACEME tricks)",
    ),
    ("process_vm_readv", "reads another process's memory"),
    ("process_vm_writev", "writes another process's memory"),
    ("process_madvise", "acts on another process's memory"),
    ("process_mrelease", "acts on another process's memory"),
    ("pidfd_getfd", "steals another process's file descriptors"),
    (
        "kcmp",
        "compares kernel objects of other processes (KASLR/info leaks)",
    ),
    // Kernel and machine state.
    ("kexec_load", "loads a new kernel"),
    ("kexec_file_load", "loads a new kernel"),
    ("init_module", "loads a kernel module"),
    ("finit_module", "loads a kernel module"),
    ("delete_module", "unloads a kernel module"),
    ("create_module", "obsolete module call"),
    ("get_kernel_syms", "obsolete module call"),
    ("query_module", "obsolete module call"),
    ("reboot", "reboots the machine"),
    ("acct", "process accounting to a file"),
    ("syslog", "kernel log (KASLR leaks)"),
    ("vhangup", "hangs up the terminal"),
    ("iopl", "raw I/O port access"),
    ("ioperm", "raw I/O port access"),
    (
        "modify_ldt",
        "16-bit segments; historical exploit target, no runtime needs it",
    ),
    ("lookup_dcookie", "profiling interface, removed in 6.8"),
    ("nfsservctl", "removed NFS daemon interface"),
    ("sethostname", "the hostname is set by init"),
    ("setdomainname", "the domain name is set by init"),
    ("settimeofday", "the host clock"),
    ("clock_settime", "the host clock"),
    ("clock_adjtime", "the host clock"),
    (
        "adjtimex",
        "the host clock (also when only reading: use clock_gettime)",
    ),
    // Kernel attack surface without a use in functions.
    ("bpf", "eBPF programs and maps"),
    (
        "perf_event_open",
        "performance counters (side channels, a history of exploits)",
    ),
    ("userfaultfd", "makes kernel races reliably exploitable"),
    (
        "io_uring_setup",
        "io_uring: large attack surface, bypasses seccomp for its operations",
    ),
    ("io_uring_enter", "io_uring"),
    ("io_uring_register", "io_uring"),
    ("keyctl", "kernel keyrings are not namespaced"),
    ("add_key", "kernel keyrings are not namespaced"),
    ("request_key", "kernel keyrings are not namespaced"),
    ("lsm_set_self_attr", "changes own LSM attributes"),
    (
        "memfd_secret",
        "memory hidden from the kernel; no runtime needs it",
    ),
    (
        "cachestat",
        "page cache state of shared files (side channel); no runtime needs it",
    ),
    // NUMA placement: shared host resource; runtimes only read it (get_mempolicy).
    ("mbind", "NUMA placement of memory"),
    ("set_mempolicy", "NUMA placement of memory"),
    ("set_mempolicy_home_node", "NUMA placement of memory"),
    (
        "migrate_pages",
        "moves another process's pages between NUMA nodes",
    ),
    (
        "move_pages",
        "moves pages between NUMA nodes (also of other processes)",
    ),
    // Unimplemented entry points.
    ("epoll_ctl_old", "never implemented"),
    ("epoll_wait_old", "never implemented"),
    ("getpmsg", "never implemented"),
    ("putpmsg", "never implemented"),
    ("afs_syscall", "never implemented"),
    ("tuxcall", "never implemented"),
    ("security", "never implemented"),
    ("vserver", "never implemented"),
];

/// Compiling a seccomp profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The architecture lamina runs on has no seccompiler backend.
    #[error("no seccomp support for architecture {arch}")]
    Arch {
        arch: String,
        #[source]
        source: seccompiler::BackendError,
    },
    /// The profile is not JSON (or not an object of filters).
    #[error("seccomp profile is not valid JSON")]
    Parse(#[source] serde_json::Error),
    /// A filter whose match action is not `allow` names a syscall unknown on this architecture:
    /// dropping it would widen the policy.
    #[error("seccomp filter {filter:?} names {syscall:?}, unknown on {arch}")]
    UnknownSyscall {
        filter: String,
        syscall: String,
        arch: String,
    },
    /// seccompiler refused the profile (unknown syscall name, bad condition, too long, ...).
    #[error("cannot compile seccomp profile for {arch}")]
    Compile {
        arch: String,
        #[source]
        source: seccompiler::Error,
    },
    /// The profile holds no filter at all.
    #[error("seccomp profile has no filters")]
    Empty,
    /// A compiled program is longer than the kernel accepts.
    #[error("seccomp filter {filter:?} has {len} instructions, more than {MAX_INSTRUCTIONS}")]
    TooLong { filter: String, len: usize },
}

type Result<T> = std::result::Result<T, SeccompError>;

/// Compiles the default profile for the running architecture.
pub fn compile_default() -> Result<Vec<BpfFilter>> {
    compile(DEFAULT_PROFILE)
}

/// Compiles a profile in seccompiler's JSON format for the running architecture. Returns one
/// program per filter, sorted by filter name (for the default profile: `allowlist`, `clone3`),
/// in the order they are to be installed.
pub fn compile(json: &[u8]) -> Result<Vec<BpfFilter>> {
    Ok(compile_named(json, std::env::consts::ARCH)?
        .into_values()
        .collect())
}

/// Compiles `json` for `arch` (a `std::env::consts::ARCH` value), keyed by filter name.
fn compile_named(json: &[u8], arch: &str) -> Result<BTreeMap<String, BpfFilter>> {
    let target = TargetArch::try_from(arch).map_err(|source| SeccompError::Arch {
        arch: arch.to_owned(),
        source,
    })?;
    let compile_err = |source| SeccompError::Compile {
        arch: arch.to_owned(),
        source,
    };

    let json = if target == TargetArch::x86_64 {
        json.to_vec()
    } else {
        let mut profile: Value = serde_json::from_slice(json).map_err(SeccompError::Parse)?;
        drop_unknown_syscalls(&mut profile, target, arch)?;
        serde_json::to_vec(&profile).map_err(SeccompError::Parse)?
    };

    let programs = seccompiler::compile_from_json(json.as_slice(), target).map_err(compile_err)?;
    if programs.is_empty() {
        return Err(SeccompError::Empty);
    }
    programs
        .into_iter()
        .map(|(name, program)| {
            if program.len() > MAX_INSTRUCTIONS {
                return Err(SeccompError::TooLong {
                    filter: name,
                    len: program.len(),
                });
            }
            let packed = program
                .iter()
                .map(|i| BpfFilter::pack(i.code, i.jt, i.jf, i.k))
                .collect();
            Ok((name, BpfFilter(packed)))
        })
        .collect()
}

/// Removes the rules naming syscalls that `target` does not have from the allowlists (filters
/// whose match action is `allow`). Such a name elsewhere is an error.
fn drop_unknown_syscalls(profile: &mut Value, target: TargetArch, arch: &str) -> Result<()> {
    let Some(filters) = profile.as_object_mut() else {
        return Ok(()); // seccompiler reports the malformed profile.
    };
    for (filter_name, filter) in filters.iter_mut() {
        let allows = filter.get("match_action") == Some(&Value::from("allow"));
        let Some(rules) = filter.get_mut("filter").and_then(Value::as_array_mut) else {
            continue;
        };
        let mut kept = Vec::with_capacity(rules.len());
        for rule in rules.drain(..) {
            let known = match rule.get("syscall").and_then(Value::as_str) {
                Some(name) if !syscall_exists(name, target) => {
                    if !allows {
                        return Err(SeccompError::UnknownSyscall {
                            filter: filter_name.clone(),
                            syscall: name.to_owned(),
                            arch: arch.to_owned(),
                        });
                    }
                    false
                }
                _ => true,
            };
            if known {
                kept.push(rule);
            }
        }
        *rules = kept;
    }
    Ok(())
}

/// Whether seccompiler knows `name` on `target` (its syscall tables are not public, so ask it to
/// compile a one-rule filter).
fn syscall_exists(name: &str, target: TargetArch) -> bool {
    let probe = serde_json::json!({
        "probe": {
            "mismatch_action": "allow",
            "match_action": {"errno": 1},
            "filter": [{"syscall": name}],
        }
    });
    seccompiler::compile_from_json(probe.to_string().as_bytes(), target).is_ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::ffi::CString;
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::path::{Path, PathBuf};

    use super::*;

    fn profile() -> Value {
        serde_json::from_slice(DEFAULT_PROFILE).expect("default.json is JSON")
    }

    fn rules(profile: &Value, filter: &str) -> Vec<Value> {
        profile[filter]["filter"]
            .as_array()
            .unwrap_or_else(|| panic!("filter {filter} has rules"))
            .clone()
    }

    fn allowed_names(profile: &Value) -> BTreeSet<String> {
        rules(profile, "allowlist")
            .iter()
            .map(|r| r["syscall"].as_str().expect("syscall name").to_owned())
            .collect()
    }

    #[test]
    fn default_profile_compiles_to_two_programs_within_bpf_maxinsns() {
        let named = compile_named(DEFAULT_PROFILE, "x86_64").expect("compiles");
        assert_eq!(
            named.keys().map(String::as_str).collect::<Vec<_>>(),
            ["allowlist", "clone3"]
        );
        for (name, program) in &named {
            assert!(!program.0.is_empty(), "{name} is empty");
            assert!(
                program.0.len() <= MAX_INSTRUCTIONS,
                "{name}: {} instructions",
                program.0.len()
            );
        }
        let filters = compile_default().expect("compiles for this machine");
        assert_eq!(filters.len(), 2);
    }

    #[test]
    fn compile_is_deterministic() {
        assert_eq!(compile_default().unwrap(), compile_default().unwrap());
        let named = compile_named(DEFAULT_PROFILE, std::env::consts::ARCH).unwrap();
        assert_eq!(
            compile_default().unwrap(),
            named.into_values().collect::<Vec<_>>()
        );
    }

    #[test]
    fn profile_shape_and_actions() {
        let p = profile();
        let filters = p.as_object().unwrap();
        assert_eq!(filters.len(), 2);
        assert_eq!(
            p["allowlist"]["mismatch_action"],
            serde_json::json!({"errno": 1})
        );
        assert_eq!(p["allowlist"]["match_action"], "allow");
        assert_eq!(p["clone3"]["mismatch_action"], "allow");
        assert_eq!(
            p["clone3"]["match_action"],
            serde_json::json!({"errno": 38})
        );
        let clone3: Vec<_> = rules(&p, "clone3")
            .iter()
            .map(|r| r["syscall"].clone())
            .collect();
        assert_eq!(clone3, ["clone3"]);
        // Both filters must agree that clone3 reaches the second one (see the comment there).
        assert!(allowed_names(&p).contains("clone3"));
    }

    #[test]
    fn denied_syscalls_are_not_in_the_allowlist() {
        let allowed = allowed_names(&profile());
        let leaked: Vec<_> = DENIED
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| allowed.contains(*name))
            .collect();
        assert!(leaked.is_empty(), "allowlist contains denied {leaked:?}");
    }

    #[test]
    fn denied_names_are_real_x86_64_syscalls() {
        // A typo in DENIED would make the test above vacuous for that entry.
        for (name, _) in DENIED {
            assert!(syscall_exists(name, TargetArch::x86_64), "{name} unknown");
        }
        let unique: BTreeSet<_> = DENIED.iter().map(|(n, _)| n).collect();
        assert_eq!(unique.len(), DENIED.len(), "duplicate in DENIED");
    }

    #[test]
    fn every_rule_and_condition_is_commented() {
        let p = profile();
        for filter in ["allowlist", "clone3"] {
            for rule in rules(&p, filter) {
                assert!(
                    rule["comment"].as_str().is_some_and(|c| !c.is_empty()),
                    "{rule}"
                );
                for cond in rule["args"].as_array().into_iter().flatten() {
                    assert!(cond["comment"].as_str().is_some(), "{rule}");
                }
            }
        }
    }

    #[test]
    fn no_syscall_is_both_unconditional_and_conditional() {
        // seccompiler drops an unconditional rule when the same syscall also has conditional
        // ones, so mixing both would silently narrow the entry.
        let rules = rules(&profile(), "allowlist");
        let with_args: BTreeSet<_> = rules
            .iter()
            .filter(|r| r.get("args").is_some())
            .map(|r| r["syscall"].as_str().unwrap())
            .collect();
        let without: BTreeSet<_> = rules
            .iter()
            .filter(|r| r.get("args").is_none())
            .map(|r| r["syscall"].as_str().unwrap())
            .collect();
        let both: Vec<_> = with_args.intersection(&without).collect();
        assert!(both.is_empty(), "{both:?}");
        assert!(with_args.contains("socket") && with_args.contains("clone"));
        assert!(with_args.contains("ioctl") && with_args.contains("mknodat"));
    }

    #[test]
    fn aarch64_drops_legacy_names_but_keeps_the_clone3_filter() {
        let named = compile_named(DEFAULT_PROFILE, "aarch64").expect("compiles for aarch64");
        assert_eq!(named.len(), 2);
        assert!(named["allowlist"].0.len() <= MAX_INSTRUCTIONS);
        let x86 = compile_named(DEFAULT_PROFILE, "x86_64").unwrap();
        assert!(named["allowlist"].0.len() < x86["allowlist"].0.len());
    }

    #[test]
    fn unknown_name_in_a_deny_filter_is_an_error_off_x86_64() {
        let json = br#"{"d": {"mismatch_action": "allow", "match_action": {"errno": 1},
            "filter": [{"syscall": "open"}]}}"#;
        assert!(matches!(
            compile_named(json, "aarch64"),
            Err(SeccompError::UnknownSyscall { .. })
        ));
    }

    #[test]
    fn bad_profiles_are_errors() {
        assert!(matches!(compile(b"{"), Err(SeccompError::Compile { .. })));
        assert!(matches!(compile(b"{}"), Err(SeccompError::Empty)));
        let typo = br#"{"a": {"mismatch_action": {"errno": 1}, "match_action": "allow",
            "filter": [{"syscall": "reed"}]}}"#;
        assert!(matches!(compile(typo), Err(SeccompError::Compile { .. })));
        assert!(matches!(
            compile_named(DEFAULT_PROFILE, "sparc64"),
            Err(SeccompError::Arch { .. })
        ));
    }

    // ---- the profile in the kernel --------------------------------------------------------

    /// Runs `checks` in a forked child, after installing the default profile there, and returns
    /// what the child reported (one line per failed check). youki's `test_in_child_process`:
    /// seccomp cannot be undone, so it must not touch the test harness's process.
    fn in_confined_child(checks: fn(&Path) -> Vec<String>) -> Vec<String> {
        let filters = compile_default().expect("default profile compiles");
        let dir = scratch_dir();
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 returned two fresh fds that nothing else owns.
        let (reader, writer) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

        // SAFETY: fork has no memory-safety preconditions; the child only runs this test's code
        // and leaves with _exit, never returning into the harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            drop(reader);
            let report = child_main(&filters, &dir, checks);
            let bytes = report.as_bytes();
            let mut off = 0;
            while off < bytes.len() {
                // SAFETY: writes from a live slice to an fd this process owns.
                let n = unsafe {
                    libc::write(
                        std::os::fd::AsRawFd::as_raw_fd(&writer),
                        bytes[off..].as_ptr().cast(),
                        bytes.len() - off,
                    )
                };
                if n <= 0 {
                    break;
                }
                off += n as usize;
            }
            // SAFETY: ends the child without running the harness's atexit handlers or unwinding.
            unsafe { libc::_exit(if report.is_empty() { 0 } else { 1 }) };
        }
        drop(writer);
        let mut report = String::new();
        std::fs::File::from(reader)
            .read_to_string(&mut report)
            .expect("read child report");
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        let _ = std::fs::remove_dir_all(&dir);
        let mut failures: Vec<String> = report.lines().map(str::to_owned).collect();
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) && failures.is_empty() {
            failures.push(format!("child ended with wait status {status:#x}"));
        }
        failures
    }

    fn child_main(filters: &[BpfFilter], dir: &Path, checks: fn(&Path) -> Vec<String>) -> String {
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return format!("PR_SET_NO_NEW_PRIVS: {}\n", std::io::Error::last_os_error());
        }
        if let Err(e) = lamina_init::seccomp::install(filters) {
            return format!("install: {e}\n");
        }
        let mut out = String::new();
        for line in checks(dir) {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    fn scratch_dir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lamina-seccomp-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// `rc` is the return of a raw syscall: expects -1 with `want`.
    fn expect_errno(what: &str, rc: libc::c_long, want: i32, out: &mut Vec<String>) {
        let got = errno();
        if rc != -1 || got != want {
            out.push(format!(
                "{what}: expected errno {want}, got rc={rc} errno={got} ({})",
                std::io::Error::from_raw_os_error(got)
            ));
        }
    }

    fn expect_ok(what: &str, ok: bool, out: &mut Vec<String>) {
        if !ok {
            out.push(format!(
                "{what}: failed: {}",
                std::io::Error::last_os_error()
            ));
        }
    }

    fn cstr(p: &Path) -> CString {
        CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
    }

    /// Leaves a process created by a syscall that should have been refused, or reaps it.
    fn reap_if_forked(rc: libc::c_long) {
        if rc == 0 {
            // SAFETY: we are the unexpected grandchild: leave at once.
            unsafe { libc::_exit(0) };
        }
        if rc > 0 {
            // SAFETY: reaps our own child; a null status pointer is allowed.
            unsafe { libc::waitpid(rc as libc::pid_t, std::ptr::null_mut(), 0) };
        }
    }

    fn denied_checks(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let eperm = libc::EPERM;

        // A target that does not exist: unfiltered, mount fails with ENOENT (not EPERM) even as
        // root, so a broken filter cannot mount anything on the test machine.
        let target = cstr(&dir.join("absent"));
        // SAFETY: valid NUL-terminated strings and a null data pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount,
                c"none".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0 as libc::c_ulong,
                std::ptr::null::<libc::c_void>(),
            )
        };
        expect_errno("mount", rc, eperm, &mut out);

        // struct clone_args, CLONE_ARGS_SIZE_VER0 = 64 bytes: flags = 0, exit_signal = SIGCHLD.
        let mut args = [0u64; 8];
        args[4] = libc::SIGCHLD as u64;
        // SAFETY: `args` is a valid clone_args of the size passed; if the kernel did run it,
        // the new process leaves at once (reap_if_forked).
        let rc = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 64usize) };
        reap_if_forked(rc);
        expect_errno("clone3", rc, libc::ENOSYS, &mut out);

        let flags = (libc::CLONE_NEWNET | libc::SIGCHLD) as libc::c_ulong;
        // SAFETY: fork-like clone (null stack = share the current one, copy-on-write); if it ran,
        // the new process leaves at once.
        let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
        reap_if_forked(rc);
        expect_errno("clone(CLONE_NEWNET|SIGCHLD)", rc, eperm, &mut out);

        let packet = (
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        );
        for (what, (domain, ty, proto)) in [
            ("socket(AF_PACKET, SOCK_RAW)", packet),
            (
                "socket(AF_INET, SOCK_RAW)",
                (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
            ),
            (
                "socket(AF_INET6, SOCK_RAW)",
                (libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6),
            ),
            (
                "socket(AF_NETLINK, NETLINK_AUDIT)",
                (libc::AF_NETLINK, libc::SOCK_RAW, 9),
            ),
            (
                "socket(AF_VSOCK, SOCK_STREAM)",
                (libc::AF_VSOCK, libc::SOCK_STREAM, 0),
            ),
        ] {
            // SAFETY: integer arguments only.
            let rc = unsafe { libc::syscall(libc::SYS_socket, domain, ty, proto) };
            expect_errno(what, rc, eperm, &mut out);
        }

        // On /dev/null rather than fd 0: the filter ignores the fd, and a broken filter must not
        // push input into the terminal running the tests (unfiltered, /dev/null gives ENOTTY).
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        let c = b'x';
        for (what, req) in [
            ("ioctl(TIOCSTI)", libc::TIOCSTI),
            ("ioctl(TIOCLINUX)", 0x541C),
        ] {
            // SAFETY: a valid fd and a pointer to one byte.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_ioctl,
                    std::os::fd::AsRawFd::as_raw_fd(&null),
                    req as libc::c_ulong,
                    &c as *const u8,
                )
            };
            expect_errno(what, rc, eperm, &mut out);
        }
        // The kernel reads cmd as 32 bits: high bits must not smuggle TIOCSTI past the filter.
        // SAFETY: as above.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_ioctl,
                std::os::fd::AsRawFd::as_raw_fd(&null),
                (1u64 << 32) | libc::TIOCSTI,
                &c as *const u8,
            )
        };
        expect_errno("ioctl(1<<32 | TIOCSTI)", rc, eperm, &mut out);

        let node = cstr(&dir.join("null"));
        let dev = libc::makedev(1, 3);
        // SAFETY: a valid path and integer arguments.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mknodat,
                libc::AT_FDCWD,
                node.as_ptr(),
                libc::S_IFCHR | 0o666,
                dev,
            )
        };
        expect_errno("mknodat(S_IFCHR)", rc, eperm, &mut out);
        // SAFETY: as above.
        let rc =
            unsafe { libc::syscall(libc::SYS_mknod, node.as_ptr(), libc::S_IFBLK | 0o666, dev) };
        expect_errno("mknod(S_IFBLK)", rc, eperm, &mut out);

        let mut params = [0u8; 120]; // struct io_uring_params
                                     // SAFETY: a writable buffer of the size of io_uring_params.
        let rc = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
        if rc >= 0 {
            // SAFETY: closes the fd the call should never have returned.
            unsafe { libc::close(rc as i32) };
        }
        expect_errno("io_uring_setup", rc, eperm, &mut out);

        // An invalid command: unfiltered, bpf answers EINVAL (root) rather than EPERM.
        // SAFETY: a null attr with size 0 is never dereferenced.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, -1i32, std::ptr::null::<u8>(), 0u32) };
        expect_errno("bpf", rc, eperm, &mut out);

        // Pid 0 never exists: unfiltered, the answer is ESRCH, and nothing gets stopped.
        // SAFETY: integer arguments only.
        let rc = unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_ATTACH, 0, 0usize, 0usize) };
        expect_errno("ptrace(PTRACE_ATTACH)", rc, eperm, &mut out);

        // SAFETY: integer argument only.
        let rc = unsafe { libc::syscall(libc::SYS_personality, 0x0040000u64) };
        expect_errno("personality(ADDR_NO_RANDOMIZE)", rc, eperm, &mut out);

        // Unfiltered, setns on a non-namespace fd answers EINVAL.
        // SAFETY: integer arguments only.
        let rc = unsafe { libc::syscall(libc::SYS_setns, 0, 0) };
        expect_errno("setns", rc, eperm, &mut out);

        // The x32 ABI (syscall number | 0x40000000) passes the arch check but no allowlist entry.
        // SAFETY: x32 getpid takes no arguments.
        let rc = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
        expect_errno("x32 getpid", rc, eperm, &mut out);

        // Last: had it succeeded, the checks after it would run without capabilities.
        // SAFETY: integer argument only.
        let rc = unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) };
        expect_errno("unshare(CLONE_NEWUSER)", rc, eperm, &mut out);

        out
    }

    fn allowed_checks(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();

        match std::thread::spawn(|| 6 * 7).join() {
            Ok(42) => {}
            other => out.push(format!("thread spawn/join: {other:?}")),
        }

        // SAFETY: the forked child only calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: leaves the grandchild at once.
            unsafe { libc::_exit(7) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        let waited = pid > 0 && unsafe { libc::waitpid(pid, &mut status, 0) } == pid;
        expect_ok(
            "fork + waitpid",
            waited && libc::WEXITSTATUS(status) == 7,
            &mut out,
        );

        let flags = libc::SIGCHLD as libc::c_ulong;
        // SAFETY: fork-like clone; the new process leaves at once.
        let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
        reap_if_forked(rc);
        expect_ok("clone(SIGCHLD)", rc > 0, &mut out);

        // posix_spawn: glibc tries clone3, gets ENOSYS, falls back to clone.
        match std::process::Command::new("/bin/true").status() {
            Ok(s) if s.success() => {}
            other => out.push(format!("Command /bin/true: {other:?}")),
        }

        for (what, domain, ty, proto) in [
            (
                "socket(AF_INET, SOCK_STREAM)",
                libc::AF_INET,
                libc::SOCK_STREAM,
                0,
            ),
            (
                "socket(AF_INET6, SOCK_DGRAM|CLOEXEC)",
                libc::AF_INET6,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                0,
            ),
            (
                "socket(AF_UNIX, SOCK_DGRAM)",
                libc::AF_UNIX,
                libc::SOCK_DGRAM,
                0,
            ),
            (
                "socket(AF_UNIX, SOCK_SEQPACKET)",
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET,
                0,
            ),
            (
                "socket(AF_NETLINK, NETLINK_ROUTE)",
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                0,
            ),
        ] {
            // SAFETY: integer arguments only.
            let fd = unsafe { libc::socket(domain, ty, proto) };
            expect_ok(what, fd >= 0, &mut out);
            if fd >= 0 {
                // SAFETY: closes the fd just created.
                unsafe { libc::close(fd) };
            }
        }

        let file = dir.join("file");
        let rw = std::fs::write(&file, b"hello")
            .and_then(|()| std::fs::read(&file))
            .map(|data| data == b"hello");
        if !matches!(rw, Ok(true)) {
            out.push(format!("write/read temp file: {rw:?}"));
        }

        let fifo = cstr(&dir.join("fifo"));
        // SAFETY: a valid path and integer arguments.
        let rc = unsafe { libc::mknod(fifo.as_ptr(), libc::S_IFIFO | 0o600, 0) };
        expect_ok("mknod(S_IFIFO)", rc == 0, &mut out);
        let regular = cstr(&dir.join("regular"));
        // SAFETY: as above.
        let rc = unsafe { libc::mknodat(libc::AT_FDCWD, regular.as_ptr(), 0o600, 0) };
        expect_ok("mknodat(regular, type 0)", rc == 0, &mut out);

        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        // SAFETY: FIONCLEX on a valid fd takes no argument.
        let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&null), libc::FIONCLEX) };
        expect_ok("ioctl(FIONCLEX)", rc == 0, &mut out);

        // SAFETY: the query form of personality changes nothing.
        let rc = unsafe { libc::personality(0xffff_ffff) };
        expect_ok("personality(query)", rc >= 0, &mut out);

        let mut buf = [0u8; 16];
        // SAFETY: fills a valid 16-byte buffer.
        let rc = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        expect_ok("getrandom", rc == 16, &mut out);

        out
    }

    #[test]
    fn kernel_refuses_denied_syscalls_in_a_confined_child() {
        let failures = in_confined_child(denied_checks);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn ordinary_programs_still_work_in_a_confined_child() {
        let failures = in_confined_child(allowed_checks);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
