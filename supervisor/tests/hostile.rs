//! Hostile-function tests: `lamina run` the probe (`tests/probe`, the `lamina-probe` binary) as a
//! function and require that every escape it attempts is blocked.
//!
//! Needs root (skipped, loudly, otherwise) and a built probe, found at `$LAMINA_PROBE`, else next
//! to the `lamina` binary under test, else at `target/<profile>/lamina-probe`:
//! `cargo build -p lamina-probe && sudo -E cargo test -p lamina --test hostile`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn probe_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("LAMINA_PROBE") {
        return PathBuf::from(p);
    }
    // The static build (`make build`), which also runs over an empty base.
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target");
    let static_probe = root
        .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .join(profile)
        .join("lamina-probe");
    if static_probe.exists() {
        return static_probe;
    }
    let lamina = Path::new(env!("CARGO_BIN_EXE_lamina"));
    let sibling = lamina.with_file_name("lamina-probe");
    if sibling.exists() {
        return sibling;
    }
    root.join(profile).join("lamina-probe")
}

/// A fresh directory holding only the probe, used as the function's code.
struct CodeDir(PathBuf);

impl CodeDir {
    fn with_probe(probe: &Path) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lamina-hostile-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create code dir");
        let target = dir.join("lamina-probe");
        std::fs::copy(probe, &target).unwrap_or_else(|e| {
            panic!(
                "copy probe {}: {e} (build it: cargo build -p lamina-probe, or set LAMINA_PROBE)",
                probe.display()
            )
        });
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        CodeDir(dir)
    }
}

impl Drop for CodeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The host's first non-loopback IPv4 address, if any.
fn host_ipv4() -> Option<Ipv4Addr> {
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list freed below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = ifap;
    while !cur.is_null() && found.is_none() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of at least its family's size.
        if i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        if !ip.is_loopback() {
            found = Some(ip);
        }
    }
    // SAFETY: frees the list getifaddrs returned.
    unsafe { libc::freeifaddrs(ifap) };
    found
}

/// Runs the probe in an env with `extra` `lamina run` options; panics with its whole output
/// unless it exits 0 and reports `succeeded=0`.
fn run_probe(extra: &[&str]) {
    if !is_root() {
        eprintln!(
            "\n!!! SKIPPED: hostile-function tests need root (lamina run creates namespaces,"
        );
        eprintln!("!!! cgroups and mounts); run them with sudo -E cargo test --test hostile.\n");
        return;
    }
    let probe = probe_binary();
    let code = CodeDir::with_probe(&probe);

    // Services on the host side that the env must not reach: its loopback is its own.
    let loopback = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1");
    let mut probe_args = vec![
        "--host-port".to_owned(),
        loopback.local_addr().unwrap().port().to_string(),
    ];
    // The emulated cgroup v2 guest reads the host's / over 9p: walk less of it there.
    if let Ok(limit) = std::env::var("LAMINA_PROBE_WALK_LIMIT") {
        probe_args.extend(["--walk-limit".to_owned(), limit]);
    }
    let outside = host_ipv4().and_then(|ip| TcpListener::bind((ip, 0)).ok());
    if let Some(l) = &outside {
        let addr: SocketAddr = l.local_addr().unwrap();
        probe_args.extend(["--host-addr".to_owned(), addr.to_string()]);
    }

    let output = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .arg("run")
        .arg("--code")
        .arg(&code.0)
        .args(["--timeout", "120"])
        .args(extra)
        .arg("--")
        .arg("/var/task/lamina-probe")
        .args(&probe_args)
        .output()
        .expect("spawn lamina");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let escapes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" SUCCEEDED "))
        .collect();
    let done = stdout.lines().find(|l| l.starts_with("PROBE DONE"));
    let ok = output.status.success()
        && done.is_some_and(|l| l.split_whitespace().any(|w| w == "succeeded=0"));
    assert!(
        ok,
        "probe in `lamina run {}` failed: {}\n--- escapes ---\n{}\n--- probe stdout ---\n{stdout}\n\
         --- stderr ---\n{stderr}",
        extra.join(" "),
        output.status,
        escapes.join("\n"),
    );
    drop((loopback, outside));
}

#[test]
fn hostile_function_is_contained() {
    run_probe(&[]);
}

/// The same probe over an empty custom base: nothing of the host's filesystem at all (the
/// probe is static).
#[test]
fn hostile_function_is_contained_on_an_empty_base() {
    let base = std::env::temp_dir().join(format!("lamina-hostile-base-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("create base dir");
    let b = base.to_string_lossy().into_owned();
    run_probe(&["--base", &b]);
    let _ = std::fs::remove_dir(&base);
}
