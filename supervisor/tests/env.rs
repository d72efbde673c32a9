//! `lamina run` behaviour: exit statuses, stdio, mounts, options, cleanup. Needs root.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_no_leftovers, run, text, TempDir};

#[test]
fn exit_status_and_signals_pass_through() {
    require_root!();
    let _g = common::serial();
    assert_eq!(
        run(&["run", "--", "/bin/true"], None).status.code(),
        Some(0)
    );
    assert_eq!(
        run(&["run", "--", "/bin/sh", "-c", "exit 42"], None)
            .status
            .code(),
        Some(42)
    );
    assert_eq!(
        run(&["run", "--", "/bin/sh", "-c", "kill -SEGV $$"], None)
            .status
            .code(),
        Some(128 + 11)
    );
    let o = run(&["run", "--", "no-such-command"], None);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    assert_no_leftovers("exit statuses");
}

#[test]
fn stdio_passes_through() {
    require_root!();
    let _g = common::serial();
    let o = run(
        &["run", "--", "/bin/sh", "-c", "cat; echo err >&2"],
        Some(b"hello from stdin"),
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), "hello from stdin");
    assert_eq!(text(&o.stderr), "err\n");
}

#[test]
fn identity_and_environment() {
    require_root!();
    let _g = common::serial();
    let o = run(
        &["run", "--env", "GREETING=hi there", "--env", "PATH=/usr/bin:/bin", "--", "/bin/sh", "-c",
          "id -u; id -g; id -G; pwd; echo \"$GREETING\"; echo $PATH; echo $TZ; hostname; grep -c . /proc/self/status >/dev/null && grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status"],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..8],
        &[
            "993",
            "990",
            "990",
            "/var/task",
            "hi there",
            "/usr/bin:/bin",
            ":UTC",
            "localhost"
        ]
    );
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
}

#[test]
fn code_and_layers_are_read_only_and_layered_in_order() {
    require_root!();
    let _g = common::serial();
    let code = TempDir::new("code");
    code.file("main.sh", "echo code-ran\n", 0o755);
    let l1 = TempDir::new("l1");
    l1.file("bin/tool", "#!/bin/sh\necho from-l1\n", 0o755);
    l1.file("shared.txt", "l1\n", 0o644);
    l1.file("only1.txt", "one\n", 0o644);
    let l2 = TempDir::new("l2");
    l2.file("shared.txt", "l2\n", 0o644);
    let script = "sh /var/task/main.sh; cat /opt/shared.txt /opt/only1.txt; tool; \
                  touch /var/task/x 2>/dev/null && echo task-writable; \
                  touch /opt/x 2>/dev/null && echo opt-writable; \
                  touch /usr/x 2>/dev/null && echo usr-writable; \
                  touch /x 2>/dev/null && echo root-writable; \
                  echo ok > /tmp/x && cat /tmp/x";
    let o = run(
        &[
            "run",
            "--code",
            code.path().to_str().unwrap(),
            "--layer",
            l1.path().to_str().unwrap(),
            "--layer",
            l2.path().to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "code-ran\nl2\none\nfrom-l1\nok\n");
    assert!(!code.path().join("x").exists());
}

#[test]
fn host_base_hides_the_host() {
    require_root!();
    let _g = common::serial();
    let o = run(
        &["run", "--", "/bin/sh", "-c",
          "ls -a /; ls /etc; for d in /root /home /var/lib /run /mnt /srv /etc/shadow /etc/hostname.host; do [ -e $d ] && echo VISIBLE $d; done; true"],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(!out.contains("VISIBLE"), "{out}");
    for forbidden in ["shadow", "sudoers", "ssh"] {
        assert!(
            !out.lines().any(|l| l == forbidden),
            "/etc/{forbidden} visible: {out}"
        );
    }
}

#[test]
fn custom_base_directory() {
    require_root!();
    let _g = common::serial();
    // A static binary in a base tree of its own: nothing of the host is needed.
    let src = TempDir::new("src");
    let c = src.file("hello.c", "#include <stdio.h>\n#include <unistd.h>\nint main(){printf(\"static hello uid=%d\\n\", getuid());return access(\"/usr/bin/sh\",F_OK)==0?3:0;}\n", 0o644);
    let base = TempDir::new("base");
    fs::create_dir_all(base.path().join("bin")).unwrap();
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(base.path().join("bin/hello"))
        .arg(&c)
        .status()
        .expect("gcc");
    assert!(st.success());
    let o = run(
        &[
            "run",
            "--base",
            base.path().to_str().unwrap(),
            "--",
            "/bin/hello",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "static hello uid=993\n");
}

#[test]
fn invalid_options_fail_early_with_one_line() {
    require_root!();
    let _g = common::serial();
    let cases: &[&[&str]] = &[
        &["run", "--memory", "127", "--", "true"],
        &["run", "--memory", "10241", "--", "true"],
        &["run", "--memory", "lots", "--", "true"],
        &["run", "--tmp-size", "511", "--", "true"],
        &["run", "--timeout", "0", "--", "true"],
        &["run", "--timeout", "-3", "--", "true"],
        &["run", "--env", "NOEQUALS", "--", "true"],
        &["run", "--env", "9X=1", "--", "true"],
        &["run", "--pids", "0", "--", "true"],
        &["run", "--code", "/nonexistent/dir", "--", "true"],
        &["run", "--base", "/etc/passwd", "--", "true"],
        &[
            "run", "--layer", "/", "--layer", "/", "--layer", "/", "--layer", "/", "--layer", "/",
            "--layer", "/", "--", "true",
        ],
        &["run"],
    ];
    for args in cases {
        let o = run(args, None);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("lamina: "), "{args:?}: {err}");
    }
    assert_no_leftovers("invalid options");
}

#[test]
fn timeout_kills_the_whole_env() {
    require_root!();
    let _g = common::serial();
    let t = Instant::now();
    let o = run(
        &[
            "run",
            "--timeout",
            "1",
            "--",
            "/bin/sh",
            "-c",
            "sleep 100 & sleep 100 & wait",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(124));
    assert!(
        text(&o.stderr).contains("Sandbox.Timedout"),
        "{}",
        text(&o.stderr)
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_no_leftovers("timeout");
}

#[test]
fn sigterm_is_forwarded_and_the_env_cleaned_up() {
    require_root!();
    let _g = common::serial();
    let mut child = Command::new(common::lamina())
        .args([
            "run",
            "--",
            "/bin/sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // SAFETY: kill() on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(3));
    assert_no_leftovers("sigterm");
}

#[test]
fn state_of_a_killed_lamina_is_reclaimed_by_the_next() {
    require_root!();
    let _g = common::serial();
    let mut child = Command::new(common::lamina())
        .args(["run", "--", "/bin/sh", "-c", "echo ready; sleep 1000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    child.kill().unwrap(); // SIGKILL: no cleanup by that lamina.
    child.wait().unwrap();
    assert!(
        !common::lamina_cgroups().is_empty(),
        "a killed lamina leaves its groups behind"
    );
    // The next lamina start removes them (init noticed its supervisor's death and ended the env).
    assert_eq!(
        run(&["run", "--", "/bin/true"], None).status.code(),
        Some(0)
    );
    assert_no_leftovers("after reclaim");
}

#[test]
fn stats_file_reports_limits() {
    require_root!();
    let _g = common::serial();
    let d = TempDir::new("stats");
    let stats = d.path().join("stats.json");
    let o = run(
        &[
            "run",
            "--memory",
            "256",
            "--pids",
            "77",
            "--stats",
            stats.to_str().unwrap(),
            "--",
            "/bin/true",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&stats).unwrap()).unwrap();
    assert_eq!(v["memory_limit_bytes"], 256u64 << 20);
    assert_eq!(v["pids_limit"], 77);
    assert_eq!(v["cpu_quota_us"], 100_000u64 * 256 / 1769);
    let layout = v["layout"].as_str().unwrap();
    assert!(layout == "v1" || layout == "v2");
    if let Ok(want) = std::env::var("LAMINA_CGROUP_LAYOUT") {
        if want == "v2-guest" {
            assert_eq!(layout, "v2", "the v2 guest must exercise the v2 backend");
        }
    }
}
