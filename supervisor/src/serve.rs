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

use crate::api::lambda::Api;
use crate::cli::Global;
use crate::registry::Registry;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::scheduler::Scheduler;

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
    let registry = match Registry::open(&args.state_dir) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("lamina: registry: {e}");
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
    let scheduler = Scheduler::new(
        sandbox.clone(),
        registry.clone(),
        args.state_dir.clone(),
        args.region.clone(),
        Duration::from_secs(args.idle_timeout),
    );
    let api = Arc::new(Api {
        registry,
        scheduler: scheduler.clone(),
        keys: [(akid, secret)].into_iter().collect(),
        region: args.region.clone(),
        account: args.account_id.clone(),
    });
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
        api.clone(),
        args.workers,
        stop,
        Duration::from_secs(args.drain_timeout),
    );
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
