//! Resource limits: pids, memory (OOM), /tmp size, CPU quota. Needs root.

mod common;

use std::fs;

use common::{assert_no_leftovers, run, text, TempDir};

fn stats(d: &TempDir) -> serde_json::Value {
    serde_json::from_slice(&fs::read(d.path().join("stats.json")).expect("stats file"))
        .expect("stats json")
}

#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    require_root!();
    let _g = common::serial();
    let d = TempDir::new("forkbomb");
    let s = d.path().join("stats.json");
    // A classic fork bomb, with a whole vCPU so that it reaches the limit quickly even in the
    // emulated guest; the env is torn down at the timeout.
    let o = run(
        &[
            "run",
            "--memory",
            "1769",
            "--pids",
            "32",
            "--timeout",
            "5",
            "--stats",
            s.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            "b() { b | b & }; b; sleep 100",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(124), "{}", text(&o.stderr));
    let v = stats(&d);
    assert!(v["pids_limit_hits"].as_u64().unwrap() > 0, "{v}");
    assert_no_leftovers("fork bomb");
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    require_root!();
    let _g = common::serial();
    let d = TempDir::new("oom");
    let s = d.path().join("stats.json");
    let o = run(
        &[
            "run",
            "--memory",
            "128",
            "--stats",
            s.to_str().unwrap(),
            "--",
            "/usr/bin/python3",
            "-c",
            "b = []\nwhile True: b.append(bytearray(1 << 20))",
        ],
        None,
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(137), "{err}");
    assert!(
        err.contains("Runtime.OutOfMemory") && err.contains("128 MB"),
        "{err}"
    );
    let v = stats(&d);
    assert!(v["oom_kills"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["memory_peak_bytes"].as_u64().unwrap() <= 128 << 20, "{v}");
    assert_no_leftovers("oom");
}

#[test]
fn filling_tmp_gets_enospc_at_its_size() {
    require_root!();
    let _g = common::serial();
    // /tmp is a tmpfs: its pages count against the env's memory, so give it room.
    let o = run(
        &["run", "--memory", "1024", "--tmp-size", "512", "--", "/bin/sh", "-c",
          "dd if=/dev/zero of=/tmp/fill bs=1M count=600 2>&1 >/dev/null | grep -c 'No space left'; stat -c %s /tmp/fill; echo x > /tmp/more || echo rc=$?"],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "{out}");
    assert_eq!(lines[1].parse::<u64>().unwrap(), 512 << 20, "{out}");
    assert_eq!(lines[2], "rc=1", "{out}");
}

#[test]
fn cpu_hog_is_throttled_to_its_quota() {
    require_root!();
    let _g = common::serial();
    let d = TempDir::new("cpu");
    let s = d.path().join("stats.json");
    let o = run(
        &[
            "run",
            "--memory",
            "256",
            "--timeout",
            "2",
            "--stats",
            s.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            "while :; do :; done",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(124), "{}", text(&o.stderr));
    let v = stats(&d);
    let quota = v["cpu_quota_us"].as_u64().unwrap();
    let periods = v["nr_periods"].as_u64().unwrap();
    let throttled = v["nr_throttled"].as_u64().unwrap();
    let usage = v["cpu_usage_under_quota_usec"].as_u64().unwrap();
    assert_eq!(quota, 100_000 * 256 / 1769);
    assert!(periods >= 5, "{v}");
    // A busy loop hits the quota in (nearly) every period...
    assert!(throttled * 10 >= periods * 8, "{v}");
    // ...and gets no more than the quota per period once the quota applies: one period of slack
    // (the quota starts mid-period) and, per period, one CFS bandwidth slice (5 ms, the
    // granularity at which the kernel hands out and enforces quota, visible under emulation).
    // Unthrottled, the loop would use ~100 ms per period.
    let slice = 5_000;
    assert!(
        usage <= (quota + slice) * (periods + 1),
        "usage {usage} > (quota {quota} + slice) x periods {periods}: {v}"
    );
    assert_no_leftovers("cpu hog");
}
