//! `lamina run`: one command in one fresh execution environment.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use lamina_init::protocol::{ExitStatus, FromInit, ToInit};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::cli::Global;
use crate::sandbox::cgroup::Stats;
use crate::sandbox::rootfs::Base;
use crate::sandbox::{EnvSpec, Sandbox, SandboxConfig, SandboxError};

/// Exit codes of `lamina run` besides the command's own.
pub mod exit {
    /// Invalid arguments.
    pub const USAGE: u8 = 2;
    /// The timeout killed the env.
    pub const TIMEOUT: u8 = 124;
    /// lamina could not build the env.
    pub const SETUP: u8 = 125;
    /// OOM-killed: 128 + SIGKILL.
    pub const OOM: u8 = 137;
}

fn parse_memory(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of MB"))?;
    if !(128..=10240).contains(&v) {
        return Err(format!("{v} MB is outside 128-10240"));
    }
    Ok(v)
}

fn parse_tmp(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of MB"))?;
    if !(512..=10240).contains(&v) {
        return Err(format!("{v} MB is outside 512-10240"));
    }
    Ok(v)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > 86_400.0 {
        return Err(format!("{s} seconds is outside (0, 86400]"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_pids(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if !(1..=4_194_304).contains(&v) {
        return Err(format!("{v} is outside 1-4194304"));
    }
    Ok(v)
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE"))?;
    let mut chars = k.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "'{k}' is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_dir(s: &str) -> Result<PathBuf, String> {
    let p = std::fs::canonicalize(s).map_err(|e| format!("{s}: {e}"))?;
    if !p.is_dir() {
        return Err(format!("{s} is not a directory"));
    }
    Ok(p)
}

fn parse_base(s: &str) -> Result<Base, String> {
    if s == "host" {
        return Ok(Base::Host);
    }
    parse_dir(s).map(Base::Dir)
}

/// `lamina run [OPTIONS] -- CMD [ARGS...]`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Function code, mounted read-only at /var/task (the working directory).
    #[arg(long, value_name = "DIR", value_parser = parse_dir)]
    pub code: Option<PathBuf>,
    /// A layer merged read-only under /opt; repeatable (at most 5), later layers over earlier.
    #[arg(long = "layer", value_name = "DIR", value_parser = parse_dir)]
    pub layers: Vec<PathBuf>,
    /// Root filesystem under everything: a directory, or `host` for a minimal read-only root
    /// composed from the host's /usr, /bin, /sbin, /lib* and a generated /etc.
    #[arg(long, value_name = "DIR|host", default_value = "host", value_parser = parse_base)]
    pub base: Base,
    /// Memory in MB (128-10240); CPU, CPU weight and I/O weight follow it.
    #[arg(long, value_name = "MB", default_value = "128", value_parser = parse_memory)]
    pub memory: u64,
    /// Size of /tmp in MB (512-10240).
    #[arg(long = "tmp-size", value_name = "MB", default_value = "512", value_parser = parse_tmp)]
    pub tmp_size: u64,
    /// Kill the whole env after this many seconds (exit 124).
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Environment variable for the command; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Maximum number of processes and threads in the env.
    #[arg(long, value_name = "N", default_value = "1024", value_parser = parse_pids)]
    pub pids: u64,
    /// Write the env's resource usage (JSON) to this file when it ends.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
    /// Print how long each setup step took to stderr.
    #[arg(long)]
    pub timings: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The function's environment: Lambda's defaults, then the user's variables.
pub fn function_env(user: &[(String, String)]) -> Vec<String> {
    let mut env: Vec<(String, String)> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin:/opt/bin"),
        ("LANG", "C.UTF-8"),
        ("TZ", ":UTC"),
        ("LD_LIBRARY_PATH", "/var/task:/var/task/lib:/opt/lib"),
        ("LAMBDA_TASK_ROOT", "/var/task"),
        ("PWD", "/var/task"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in user {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[derive(serde::Serialize)]
struct StatsFile<'a> {
    layout: &'a str,
    landlock: bool,
    memory_limit_bytes: u64,
    cpu_quota_us: Option<u64>,
    cpu_period_us: u64,
    pids_limit: u64,
    timed_out: bool,
    /// CPU time used once the quota applied (the setup before it runs unthrottled).
    cpu_usage_under_quota_usec: u64,
    #[serde(flatten)]
    stats: Stats,
    timings_us: Vec<(String, u64)>,
}

enum Outcome {
    Exited(ExitStatus),
    TimedOut,
    /// Killed after a forwarded signal had no effect within the grace period.
    Killed(i32),
    InitGone,
}

/// Runs the command; returns the process exit code.
pub fn run(global: &Global, args: RunArgs) -> u8 {
    if args.layers.len() > 5 {
        eprintln!("lamina: at most 5 layers (got {})", args.layers.len());
        return exit::USAGE;
    }
    // Signals to lamina are read from a signalfd and forwarded into the env.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    let sfd = match mask
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lamina: signalfd: {e}");
            return exit::SETUP;
        }
    };
    let cfg = SandboxConfig {
        run_dir: global.run_dir.clone(),
        cgroup_parent: global.cgroup_parent.clone(),
        seccomp_profile: global.seccomp_profile.clone(),
        flat: true,
        ..SandboxConfig::default()
    };
    let t0 = Instant::now();
    let sandbox = match Sandbox::new(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lamina: {e}");
            return exit::SETUP;
        }
    };
    let sandbox_us = t0.elapsed().as_micros() as u64;
    let spec = EnvSpec {
        code: args.code.clone(),
        layers: args.layers.clone(),
        base: args.base.clone(),
        memory_mb: args.memory,
        tmp_mb: args.tmp_size,
        pids: args.pids,
        argv: args.command.clone(),
        env: function_env(&args.env),
        cwd: PathBuf::from("/var/task"),
        runtime_api: false,
        runtime_dir: None,
        lang_dir: None,
        stdout: None,
    };
    let env = match sandbox.start(&spec) {
        Ok(env) => env,
        Err(SandboxError::Setup {
            step,
            error,
            exec_code: Some(code),
        }) => {
            eprintln!("lamina: {}: {error} ({step})", args.command[0]);
            return code as u8;
        }
        Err(e) => {
            eprintln!("lamina: {e}");
            return exit::SETUP;
        }
    };
    let started = Instant::now();
    let outcome = wait(&env, &sfd, args.timeout);
    let run_us = started.elapsed().as_micros() as u64;
    let t_down = Instant::now();
    let stats = match outcome {
        Outcome::Exited(_) => sandbox.finish(&env, Duration::from_secs(1)),
        _ => sandbox.destroy(&env),
    };
    let mut timings = vec![("sandbox".to_string(), sandbox_us)];
    timings.extend(env.timings.iter().cloned());
    timings.push(("run".to_string(), run_us));
    timings.push(("teardown".to_string(), t_down.elapsed().as_micros() as u64));
    if args.timings {
        for (name, us) in &timings {
            eprintln!("lamina: timing {name} {us} us");
        }
    }
    if let Some(path) = &args.stats {
        let f = StatsFile {
            layout: sandbox.cgroups.layout(),
            landlock: env.landlock,
            memory_limit_bytes: env.limits.memory_bytes,
            cpu_quota_us: env.limits.cpu_quota_us,
            cpu_period_us: env.limits.cpu_period_us,
            pids_limit: env.limits.pids,
            timed_out: matches!(outcome, Outcome::TimedOut),
            cpu_usage_under_quota_usec: stats.cpu_usage_usec.saturating_sub(
                env.cpu_usage_at_quota_usec
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            stats,
            timings_us: timings,
        };
        if let Err(e) = serde_json::to_vec_pretty(&f)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(path, b))
        {
            eprintln!("lamina: write {}: {e}", path.display());
        }
    }
    let t_drop = Instant::now();
    drop(sandbox);
    if args.timings {
        eprintln!(
            "lamina: timing sandbox-drop {} us",
            t_drop.elapsed().as_micros()
        );
    }
    report(&args, outcome, &stats)
}

fn report(args: &RunArgs, outcome: Outcome, stats: &Stats) -> u8 {
    match outcome {
        Outcome::TimedOut => {
            let secs = args.timeout.map_or(0.0, |t| t.as_secs_f64());
            eprintln!("lamina: Sandbox.Timedout: Task timed out after {secs:.2} seconds");
            exit::TIMEOUT
        }
        _ if stats.oom_kills > 0 => {
            eprintln!(
                "lamina: Runtime.OutOfMemory: Runtime exited with error: signal: killed (memory limit {} MB reached)",
                args.memory
            );
            exit::OOM
        }
        Outcome::Exited(ExitStatus::Code(c)) => c.clamp(0, 255) as u8,
        Outcome::Exited(ExitStatus::Signal(s)) => (128 + s).clamp(0, 255) as u8,
        Outcome::Killed(sig) => {
            eprintln!("lamina: the env was killed after signal {sig} had no effect");
            (128 + sig) as u8
        }
        Outcome::InitGone => {
            eprintln!("lamina: Sandbox.Failure: the env's init ended unexpectedly");
            exit::SETUP
        }
    }
}

/// Waits for the command to end, the timeout, or init's death; forwards SIGINT/SIGTERM/SIGHUP
/// (a second signal, or 2 s without effect, kills the env).
fn wait(
    env: &crate::sandbox::ExecutionEnvironment,
    sfd: &SignalFd,
    timeout: Option<Duration>,
) -> Outcome {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut kill_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let next = [deadline, kill_at].into_iter().flatten().min();
        if let Some(d) = next {
            if now >= d {
                return if Some(d) == deadline {
                    Outcome::TimedOut
                } else {
                    Outcome::Killed(libc::SIGTERM)
                };
            }
        }
        let ms = next.map(|d| (d - now).as_millis().clamp(1, i32::MAX as u128) as i32);
        let mut fds = [
            PollFd::new(env.control.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(env.pidfd.as_fd(), PollFlags::POLLIN),
        ];
        let to = ms.map_or(PollTimeout::NONE, |m| {
            PollTimeout::try_from(m).unwrap_or(PollTimeout::MAX)
        });
        match nix::poll::poll(&mut fds, to) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return Outcome::InitGone,
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        let (control, signal, pid) = (ready(0), ready(1), ready(2));
        if signal {
            while let Ok(Some(_)) = sfd.read_signal() {
                if kill_at.is_some() {
                    return Outcome::Killed(libc::SIGTERM);
                }
                let _ = env.send(&ToInit::Signal(libc::SIGTERM));
                kill_at = Some(Instant::now() + Duration::from_secs(2));
            }
        }
        if control {
            match env.recv(Some(Duration::ZERO)) {
                Ok(Some(FromInit::Exited(status))) => return Outcome::Exited(status),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Outcome::InitGone,
            }
        } else if pid {
            return Outcome::InitGone;
        }
    }
}
