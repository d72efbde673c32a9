//! `lamina serve`: the long-running supervisor speaking Lambda's API.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::signal::{SigSet, Signal};

use crate::api::access_log::AccessLogged;
use crate::api::http::Handler;
use crate::api::lambda::Api;
use crate::async_invoke::{self, AsyncQueue};
use crate::cli::Global;
use crate::registry::Registry;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::scheduler::{ConcurrencyConfig, Scheduler};
use crate::secrets::Sealer;

/// `lamina serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the Lambda API.
    #[arg(long, default_value = "127.0.0.1:9000", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// State directory (database, code, logs, credentials).
    #[arg(long, default_value = "/var/lib/lamina", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Region in ARNs and the one SigV4 signatures must name... any region is accepted for
    /// signing; ARNs use this one.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Account id in ARNs.
    #[arg(long, default_value = "000000000000", value_parser = parse_account)]
    pub account_id: String,
    /// Seconds an idle env is kept warm.
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    pub idle_timeout: u64,
    /// Worker threads for API requests (each in-flight invocation holds one).
    #[arg(long, default_value = "64")]
    pub workers: usize,
    /// On SIGTERM, seconds in-flight invocations get to finish before their envs are killed.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    pub drain_timeout: u64,
    /// Key sealing functions' environment variables at rest (32 bytes, mode 0600). Default:
    /// `<state-dir>/key`, created on the first start.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Memory overcommit: the sum of the MemorySize of live envs (idle ones included) stays
    /// within the host's memory budget (MemTotal less 10%, at least 512 MiB) times this ratio;
    /// idle envs are evicted (least recently used first) to make room, and invocations are
    /// throttled when busy envs fill it. Above 1, idle envs that use less than their
    /// MemorySize share the host.
    #[arg(long, default_value = "1.0", value_name = "RATIO", value_parser = parse_ratio)]
    pub memory_overcommit: f64,
    /// Invocations running at once across all functions (Lambda's account concurrency limit).
    /// Default: the memory budget (after overcommit) divided by 128 MB, at most 1000.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency_limit: Option<u64>,
    /// Concurrency reservations must leave to functions without one. Default: 100, or half
    /// the limit when that is below 200.
    #[arg(long, value_name = "N")]
    pub min_unreserved: Option<u64>,
    /// Days log streams are kept, for groups without a retention policy (PutRetentionPolicy).
    #[arg(long, default_value = "30", value_name = "DAYS")]
    pub log_retention_days: u64,
    /// Largest size of one log group; its oldest streams are removed beyond it.
    #[arg(long, default_value = "1024", value_name = "MIB")]
    pub log_group_max_mb: u64,
    /// Asynchronous (Event) invocations: seconds before the first retry after a function
    /// error; the n-th retry waits n times this (Lambda: about 60, then 120).
    #[arg(long, default_value = "60", value_name = "SECONDS", value_parser = parse_delay)]
    pub async_retry_delay: Duration,
    /// Asynchronous (Event) invocations processed at once.
    #[arg(long, default_value = "4", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub async_workers: u16,
    /// Append one JSON line per API request (time, request id, method, path, status, error
    /// type, duration) to this file.
    #[arg(long, env = "LAMINA_ACCESS_LOG", value_name = "FILE")]
    pub access_log: Option<PathBuf>,
}

fn parse_delay(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "'{s}' is not a number of seconds between 0 and 3600"
        )),
    }
}

/// The memory envs may use: MemTotal less 10% (at least 512 MiB) for the host, in MiB.
pub fn memory_budget_mb() -> u64 {
    let total_kb = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(1 << 20);
    let total = total_kb / 1024;
    total.saturating_sub((total / 10).max(512))
}

/// Each env holds a few descriptors in the supervisor (pidfd, control socket, log pipe and
/// file): the soft limit on open files goes up to the hard one, as thousands of envs need.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=1000.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a ratio between 0.1 and 1000")),
    }
}

fn concurrency(args: &ServeArgs) -> ConcurrencyConfig {
    let budget_mb = (memory_budget_mb() as f64 * args.memory_overcommit) as u64;
    let limit = args
        .concurrency_limit
        .unwrap_or_else(|| (budget_mb / 128).clamp(1, 1000));
    let min_unreserved = args
        .min_unreserved
        .unwrap_or(if limit >= 200 { 100 } else { limit / 2 })
        .min(limit);
    ConcurrencyConfig {
        limit,
        min_unreserved,
        memory_budget_bytes: budget_mb << 20,
    }
}

fn parse_account(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.chars().all(|c| c.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not a 12-digit account id"))
    }
}

fn random_string(n: usize, alphabet: &[u8]) -> String {
    crate::util::random_bytes(n)
        .iter()
        .map(|x| alphabet[*x as usize % alphabet.len()] as char)
        .collect()
}

/// Reads `<state>/credentials` (AWS CLI format, profile `default`), creating it with a new admin
/// key on first start (mode 0600).
pub fn admin_credentials(state: &Path) -> std::io::Result<(String, String)> {
    let path = state.join("credentials");
    if !path.exists() {
        let akid = format!(
            "LAMI{}",
            random_string(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        );
        let secret = random_string(
            40,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        );
        let tmp = state.join(".credentials.tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(
            f,
            "[default]\naws_access_key_id = {akid}\naws_secret_access_key = {secret}"
        )?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
    }
    let text = fs::read_to_string(&path)?;
    let get = |k: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(n, _)| n.trim() == k)
            .map(|(_, v)| v.trim().to_string())
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(a), Some(s)) => Ok((a, s)),
        _ => Err(std::io::Error::other(format!(
            "{} has no default key",
            path.display()
        ))),
    }
}

pub fn serve(global: &Global, args: ServeArgs) -> u8 {
    let t0 = Instant::now();
    // SIGTERM/SIGINT are waited for by one thread; every other thread inherits the mask.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    if let Err(e) = mask.thread_block() {
        eprintln!("lamina: signals: {e}");
        return 1;
    }
    raise_nofile();
    if let Err(e) = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.state_dir)
    {
        eprintln!("lamina: state directory {}: {e}", args.state_dir.display());
        return 1;
    }
    let (akid, secret) = match admin_credentials(&args.state_dir) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("lamina: credentials: {e}");
            return 1;
        }
    };
    if let Err(e) = crate::runtimes::install_embedded(&args.state_dir) {
        eprintln!("lamina: runtimes: {e}");
        return 1;
    }
    let sealer = match &args.key_file {
        Some(k) => Sealer::load(k, false),
        None => Sealer::load(&args.state_dir.join("key"), true),
    };
    let sealer = match sealer {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lamina: {e}");
            return 1;
        }
    };
    let registry = match Registry::open(&args.state_dir, sealer) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("lamina: registry: {e}");
            return 1;
        }
    };
    let layers = match crate::layers::Layers::open(&args.state_dir, &args.region, &args.account_id)
    {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("lamina: layers: {e}");
            return 1;
        }
    };
    let async_queue = match AsyncQueue::open(
        &args.state_dir,
        async_invoke::Settings {
            retry_delay: args.async_retry_delay,
            workers: usize::from(args.async_workers),
            arn_prefix: format!(
                "arn:aws:lambda:{}:{}:function:",
                args.region, args.account_id
            ),
        },
    ) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("lamina: async queue: {e}");
            return 1;
        }
    };
    let cfg = SandboxConfig {
        run_dir: global.run_dir.clone(),
        cgroup_parent: global.cgroup_parent.clone(),
        seccomp_profile: global.seccomp_profile.clone(),
        ..SandboxConfig::default()
    };
    let sandbox = match Sandbox::new(&cfg) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("lamina: {e}");
            return 1;
        }
    };
    let listener = match std::net::TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lamina: listen on {}: {e}", args.listen);
            return 1;
        }
    };
    let scheduler = match Scheduler::new(
        sandbox.clone(),
        registry.clone(),
        layers.clone(),
        args.state_dir.clone(),
        args.region.clone(),
        Duration::from_secs(args.idle_timeout),
        concurrency(&args),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lamina: log reader: {e}");
            return 1;
        }
    };
    // Log retention: by age and size per group, checked every minute.
    {
        let store = crate::logs::LogStore::new(&args.state_dir);
        let (days, max) = (args.log_retention_days, args.log_group_max_mb << 20);
        std::thread::spawn(move || loop {
            let removed = store.enforce_retention(Some(days), Some(max));
            if removed > 0 {
                tracing::info!(removed, "log streams past retention removed");
            }
            std::thread::sleep(Duration::from_secs(60));
        });
    }
    // Provisioned concurrency survives restarts: start its envs again.
    match registry.list_provisioned(None) {
        Ok(all) => {
            for p in all {
                let version = match registry.get_alias(&p.name, &p.qualifier) {
                    Ok(Some(a)) => a["FunctionVersion"].as_str().unwrap_or("").to_string(),
                    _ => p.qualifier.clone(),
                };
                if let Ok(Some(f)) = registry.get_version(&p.name, &version) {
                    scheduler.provision(f, p.qualifier.clone(), p.requested);
                }
            }
        }
        Err(e) => tracing::warn!(%e, "provisioned concurrency not restored"),
    }
    let api = Arc::new(Api {
        registry,
        scheduler: scheduler.clone(),
        layers,
        keys: [(akid, secret)].into_iter().collect(),
        region: args.region.clone(),
        account: args.account_id.clone(),
        state_dir: args.state_dir.clone(),
        async_queue: async_queue.clone(),
    });
    let handler: Arc<dyn Handler> = match &args.access_log {
        None => api.clone(),
        Some(path) => match AccessLogged::open(api.clone(), path) {
            Ok(h) => Arc::new(h),
            Err(e) => {
                eprintln!("lamina: access log {}: {e}", path.display());
                return 1;
            }
        },
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            if let Ok(sig) = mask.wait() {
                tracing::info!(?sig, "stopping");
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
    // Queued Event invocations (from earlier runs too) start being processed.
    api.start_async_workers(stop.clone());
    eprintln!(
        "lamina: serving the Lambda API on http://{} (region {}, state {}, cgroups {}, ready in {} ms)\nlamina: credentials: AWS_SHARED_CREDENTIALS_FILE={}",
        args.listen,
        args.region,
        args.state_dir.display(),
        sandbox.cgroups.layout(),
        t0.elapsed().as_millis(),
        args.state_dir.join("credentials").display()
    );
    let r = crate::api::http::serve(
        listener,
        handler,
        args.workers,
        stop,
        Duration::from_secs(args.drain_timeout),
    );
    // Async invocations in progress get the drain period too; what is left stays queued.
    async_queue.shutdown(Duration::from_secs(args.drain_timeout), &|| {
        scheduler.kill_all()
    });
    // In-flight invocations have finished (the workers were joined); tear every env down.
    scheduler.shutdown();
    drop(api);
    drop(scheduler);
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lamina: API server: {e}");
            1
        }
    }
}
