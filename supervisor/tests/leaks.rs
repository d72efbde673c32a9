//! 500 envs in a row from one supervisor: nothing of them is left, and the supervisor's own fd
//! count and RSS do not grow. Needs root.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use lamina::sandbox::rootfs::Base;
use lamina::sandbox::{EnvSpec, Sandbox, SandboxConfig};
use lamina_init::protocol::{ExitStatus, FromInit};

fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn net_namespaces() -> usize {
    // Network namespaces of live processes (each env's dies with it).
    let mut seen = std::collections::HashSet::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Ok(l) = fs::read_link(e.path().join("ns/net")) {
                seen.insert(l);
            }
        }
    }
    seen.len()
}

fn one_env(sb: &Sandbox, spec: &EnvSpec) {
    let env = sb.start(spec).expect("start env");
    match env.recv(Some(Duration::from_secs(10))).expect("recv") {
        Some(FromInit::Exited(ExitStatus::Code(0))) => {}
        other => panic!("unexpected {other:?}"),
    }
    sb.finish(&env, Duration::from_secs(1));
}

#[test]
fn many_envs_in_a_row_leave_nothing_behind() {
    require_root!();
    let _g = common::serial();
    let netns_before = net_namespaces();
    let cfg = SandboxConfig {
        init_binary: Some(common::lamina()),
        ..SandboxConfig::default()
    };
    let sb = Sandbox::new(&cfg).expect("sandbox");
    let spec = EnvSpec {
        code: None,
        layers: Vec::new(),
        base: Base::Host,
        memory_mb: 128,
        tmp_mb: 512,
        pids: 64,
        argv: vec!["/bin/true".into()],
        env: vec!["PATH=/usr/bin:/bin".into()],
        cwd: PathBuf::from("/var/task"),
        runtime_api: false,
        runtime_dir: None,
        lang_dir: None,
        stdout: None,
    };
    // Warm up allocator pools and lazily built state (skeleton) first.
    for _ in 0..20 {
        one_env(&sb, &spec);
    }
    let (fds, rss) = (fd_count(), rss_kib());
    // 500 on real hosts; the emulated cgroup v2 guest runs fewer (its processes start ~50x slower).
    let n: usize = std::env::var("LAMINA_LEAK_ENVS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    for _ in 0..n {
        one_env(&sb, &spec);
    }
    let (fds_after, rss_after) = (fd_count(), rss_kib());
    assert_eq!(fds_after, fds, "fd count grew");
    assert!(
        rss_after <= rss + 1024,
        "RSS grew from {rss} KiB to {rss_after} KiB"
    );
    // Only the instance group is left while the sandbox lives...
    let mut inst_children = sb.cgroups.children(std::path::Path::new(&sb.instance));
    // The instance's own always-frozen group (see Sandbox::new) is not an env.
    inst_children.retain(|c| c != "keep-frozen");
    assert!(
        inst_children.is_empty(),
        "env groups left: {inst_children:?}"
    );
    assert!(common::sandbox_processes().is_empty());
    assert!(
        common::lamina_mounts().is_empty(),
        "{:?}",
        common::lamina_mounts()
    );
    drop(sb);
    // ...and nothing at all once it is gone.
    common::assert_no_leftovers("envs in a row");
    assert!(net_namespaces() <= netns_before, "network namespaces left");
    eprintln!("{n} envs: fds {fds} -> {fds_after}, RSS {rss} -> {rss_after} KiB");
}
