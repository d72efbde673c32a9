//! The scheduler: warm envs per function configuration, cold starts, invocations, freezing,
//! idle reaping, and each env's log stream.
//!
//! An invocation takes an idle env of its function's configuration (thawing it) or starts one
//! (Init: until the runtime's first `/next`, at most 10 s), sends the event, waits for the
//! response until the function's timeout, then freezes the env and puts it back. An env that
//! timed out, crashed, ran out of memory or failed its Init is destroyed, never reused.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lamina_init::protocol::{ExitStatus, InvokeHeader};
use serde_json::json;

use crate::layers::Layers;
use crate::registry::{Registry, StoredFunction};
use crate::sandbox::invoke::{EnvEvent, ShutdownReason};
use crate::sandbox::rootfs::Base;
use crate::sandbox::{EnvSpec, ExecutionEnvironment, Sandbox, SandboxError};

/// Lambda's Init phase limit.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct InvokeRequest {
    pub request_id: String,
    pub invoked_arn: String,
    pub payload: Vec<u8>,
    pub client_context: Option<String>,
    pub tail: bool,
}

pub enum Outcome {
    Response {
        content_type: Option<String>,
        body: Vec<u8>,
    },
    FunctionError {
        body: Vec<u8>,
    },
    Throttled(&'static str),
    /// The function's runtime has no built layer (or a broken one): Lambda's
    /// `InvalidRuntimeException` (502).
    InvalidRuntime(String),
    ServiceError(String),
}

pub struct InvokeOutcome {
    pub result: Outcome,
    /// The last 4 KB of the invocation's log, when Tail was asked for.
    pub log_tail: Option<Vec<u8>>,
}

/// One env's log stream: a file under the state dir, fed by the env's stdout/stderr pipe.
pub struct LogStream {
    pub group: String,
    pub name: String,
    file: Mutex<File>,
    /// Output of the current invocation (for `X-Amz-Log-Result`).
    current: Mutex<Vec<u8>>,
    pipe: Mutex<Option<File>>,
    /// The pipe reached its end (every writer gone); it stays open (and registered) until the
    /// stream is dropped, so its fd number cannot be reused while the reader knows it.
    eof: std::sync::atomic::AtomicBool,
    /// The env's output after its last newline (a line is logged once complete).
    partial: Mutex<Vec<u8>>,
    /// The reader thread watching the pipe, and this stream's token there.
    reader: Arc<LogReader>,
    token: usize,
}

/// One thread that keeps every env's output pipe drained (so that a chatty function never
/// blocks on its stdout), whatever the number of envs: an edge-triggered epoll set (mio) of
/// the pipes, each event draining its stream into the log file.
pub struct LogReader {
    registry: mio::Registry,
    streams: Mutex<HashMap<usize, std::sync::Weak<LogStream>>>,
    next: std::sync::atomic::AtomicUsize,
}

impl LogReader {
    pub fn start() -> std::io::Result<Arc<LogReader>> {
        let mut poll = mio::Poll::new()?;
        let reader = Arc::new(LogReader {
            registry: poll.registry().try_clone()?,
            streams: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicUsize::new(1),
        });
        let weak = Arc::downgrade(&reader);
        std::thread::Builder::new()
            .name("log-reader".into())
            .spawn(move || {
                let mut events = mio::Events::with_capacity(256);
                loop {
                    match poll.poll(&mut events, Some(Duration::from_millis(500))) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::error!(%e, "log reader: poll failed");
                            return;
                        }
                    }
                    let Some(r) = weak.upgrade() else { return };
                    for ev in events.iter() {
                        let stream = r
                            .streams
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(&ev.token().0)
                            .and_then(std::sync::Weak::upgrade);
                        if let Some(l) = stream {
                            l.drain();
                        }
                    }
                }
            })?;
        Ok(reader)
    }

    fn add(&self, fd: std::os::fd::RawFd, stream: std::sync::Weak<LogStream>, token: usize) {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, stream);
        if let Err(e) = self.registry.register(
            &mut mio::unix::SourceFd(&fd),
            mio::Token(token),
            mio::Interest::READABLE,
        ) {
            // Still drained at each invocation's start and end.
            tracing::warn!(%e, "log reader: pipe not watched");
        }
    }

    fn remove(&self, fd: std::os::fd::RawFd, token: usize) {
        let _ = self.registry.deregister(&mut mio::unix::SourceFd(&fd));
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
    }

    /// Streams being watched (for tests).
    pub fn watched(&self) -> usize {
        self.streams.lock().map(|s| s.len()).unwrap_or(0)
    }
}

impl LogStream {
    /// Appends text (already line-structured) with a timestamp per line; lines longer than
    /// CloudWatch's event limit become several events, as Lambda splits them.
    pub fn write(&self, text: &[u8]) {
        let ts = crate::util::utc_timestamp("Z");
        let mut out = Vec::with_capacity(text.len() + 32);
        for line in crate::logs::split_lines(text) {
            out.extend_from_slice(ts.as_bytes());
            out.push(b'\t');
            out.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(&out);
        }
        if let Ok(mut c) = self.current.lock() {
            c.extend_from_slice(text);
            if !text.ends_with(b"\n") {
                c.push(b'\n');
            }
            // Keep what Tail can return plus slack.
            if c.len() > 64 * 1024 {
                let cut = c.len() - 8192;
                c.drain(..cut);
            }
        }
    }

    /// Reads whatever the env wrote so far (non-blocking) into the stream.
    pub fn drain(&self) {
        let mut guard = match self.pipe.lock() {
            Ok(g) => g,
            Err(_) => return,
        };
        let Some(p) = guard.as_mut() else { return };
        if self.eof.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match p.read(&mut buf) {
                Ok(0) => {
                    self.eof.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                Ok(n) => self.output(&buf[..n]),
                Err(_) => return,
            }
        }
    }

    /// Function output: complete lines are logged, the rest waits for its newline.
    fn output(&self, data: &[u8]) {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        partial.extend_from_slice(data);
        let cut = match partial.iter().rposition(|&b| b == b'\n') {
            Some(last_nl) => Some(last_nl + 1),
            // A line that never ends is logged in event-sized pieces, not held in memory.
            None if partial.len() >= crate::logs::MAX_EVENT_BYTES => {
                let piece = crate::logs::MAX_EVENT_BYTES - 1;
                Some(partial.len() - partial.len() % piece)
            }
            None => None,
        };
        if let Some(cut) = cut {
            let lines: Vec<u8> = partial.drain(..cut).collect();
            drop(partial);
            self.write(&lines);
        }
    }

    /// Logs output still waiting for a newline (at the end of an invocation).
    fn flush_partial(&self) {
        let rest: Vec<u8> =
            std::mem::take(&mut *self.partial.lock().unwrap_or_else(|e| e.into_inner()));
        if !rest.is_empty() {
            self.write(&rest);
        }
    }

    fn begin(&self) {
        self.drain();
        if let Ok(mut c) = self.current.lock() {
            c.clear();
        }
    }

    fn tail(&self) -> Vec<u8> {
        let c = self.current.lock().map(|c| c.clone()).unwrap_or_default();
        let start = c.len().saturating_sub(4096);
        c[start..].to_vec()
    }
}

impl Drop for LogStream {
    /// What the env wrote last (e.g. extensions handling SHUTDOWN right before the env was
    /// destroyed) is still in the pipe: logged before the stream goes.
    fn drop(&mut self) {
        self.drain();
        self.flush_partial();
        // Unwatched before the pipe closes (with the fields, after this), so that its fd
        // number is never known to the reader while another stream may reuse it.
        if let Some(p) = self.pipe.get_mut().ok().and_then(|p| p.as_ref()) {
            self.reader.remove(p.as_raw_fd(), self.token);
        }
    }
}

struct WarmEnv {
    env: ExecutionEnvironment,
    log: Arc<LogStream>,
    idle_since: Instant,
    /// The qualifier whose provisioned concurrency this env belongs to (never reaped idle).
    pinned: Option<String>,
}

/// Concurrency limits (Lambda's account limit and reserved concurrency).
#[derive(Debug, Clone, Copy)]
pub struct ConcurrencyConfig {
    /// Invocations running at once across all functions.
    pub limit: u64,
    /// What reservations must leave to the functions without one.
    pub min_unreserved: u64,
    /// The sum of the MemorySize of live envs (starting, busy or idle) stays within this
    /// (the host's memory budget times the overcommit ratio): idle envs are evicted, least
    /// recently used first, to make room; when busy ones fill it, invocations are throttled.
    pub memory_budget_bytes: u64,
}

#[derive(Default)]
struct Running {
    /// In-flight invocations per function.
    per_function: HashMap<String, u64>,
    /// In-flight invocations of functions without reserved concurrency.
    unreserved: u64,
    reserved: HashMap<String, u64>,
}

/// A provisioned concurrency setting being kept up.
struct Provision {
    /// Warm-pool key of the version it provisions.
    key: String,
    requested: u64,
    /// Pinned envs alive (idle or busy).
    allocated: u64,
    failure: Option<String>,
}

/// An invocation's concurrency slot, given back on drop.
struct Slot<'a> {
    s: &'a Scheduler,
    name: String,
    reserved: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut r = self.s.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = r.per_function.get_mut(&self.name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                r.per_function.remove(&self.name);
            }
        }
        if !self.reserved {
            r.unreserved = r.unreserved.saturating_sub(1);
        }
    }
}

pub struct Scheduler {
    me: std::sync::Weak<Scheduler>,
    sandbox: Arc<Sandbox>,
    registry: Arc<Registry>,
    layers: Arc<Layers>,
    state_dir: PathBuf,
    region: String,
    idle: Mutex<HashMap<String, Vec<WarmEnv>>>,
    idle_timeout: Duration,
    concurrency: ConcurrencyConfig,
    running: Mutex<Running>,
    pub metrics: crate::metrics::Metrics,
    /// Busy pinned envs per `key\0qualifier`.
    busy_pinned: Mutex<HashMap<String, u64>>,
    /// Provisioned concurrency, keyed `name\0qualifier`.
    provisioned: Mutex<HashMap<String, Provision>>,
    /// Drains every env's output pipe.
    pub log_reader: Arc<LogReader>,
}

fn error_body(error_type: &str, message: String) -> Vec<u8> {
    json!({"errorType": error_type, "errorMessage": message})
        .to_string()
        .into_bytes()
}

impl Scheduler {
    pub fn new(
        sandbox: Arc<Sandbox>,
        registry: Arc<Registry>,
        layers: Arc<Layers>,
        state_dir: PathBuf,
        region: String,
        idle_timeout: Duration,
        concurrency: ConcurrencyConfig,
    ) -> std::io::Result<Arc<Scheduler>> {
        let log_reader = LogReader::start()?;
        let reserved = registry.all_reserved().unwrap_or_default();
        let s = Arc::new_cyclic(|me| Scheduler {
            me: me.clone(),
            sandbox,
            registry,
            layers,
            state_dir,
            region,
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
            concurrency,
            running: Mutex::new(Running {
                reserved,
                ..Running::default()
            }),
            provisioned: Mutex::new(HashMap::new()),
            busy_pinned: Mutex::new(HashMap::new()),
            metrics: crate::metrics::Metrics::default(),
            log_reader,
        });
        let weak = Arc::downgrade(&s);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            match weak.upgrade() {
                Some(s) => s.reap_idle(),
                None => return,
            }
        });
        Ok(s)
    }

    fn key(f: &StoredFunction) -> String {
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}",
            f.name,
            f.version,
            f.code_hex,
            f.config["RevisionId"].as_str().unwrap_or("")
        )
    }

    /// Destroys an env, counting its memory out of the committed total.
    fn destroy_env(&self, env: &ExecutionEnvironment) {
        self.sandbox.destroy(env);
        self.release_memory(env.limits.memory_bytes);
    }

    fn release_memory(&self, bytes: u64) {
        let _ = self.metrics.memory_committed.fetch_update(
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
            |c| Some(c.saturating_sub(bytes)),
        );
    }

    /// The memory budget in bytes (after overcommit).
    pub fn memory_budget(&self) -> u64 {
        self.concurrency.memory_budget_bytes
    }

    /// Commits `bytes` of the memory budget for a new env, evicting idle envs (least recently
    /// used first; provisioned ones are kept) while it does not fit. `false`: busy, starting
    /// and provisioned envs fill the budget (the invocation is throttled).
    fn reserve_memory(&self, bytes: u64) -> bool {
        use std::sync::atomic::Ordering;
        let budget = self.concurrency.memory_budget_bytes;
        loop {
            let fits = self
                .metrics
                .memory_committed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    (c.saturating_add(bytes) <= budget).then_some(c + bytes)
                })
                .is_ok();
            if fits {
                return true;
            }
            let victim = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                let oldest = idle
                    .iter()
                    .flat_map(|(k, v)| v.iter().enumerate().map(move |(i, w)| (k, i, w)))
                    .filter(|(_, _, w)| w.pinned.is_none())
                    .min_by_key(|(_, _, w)| w.idle_since)
                    .map(|(k, i, _)| (k.clone(), i));
                match oldest {
                    Some((k, i)) => {
                        let envs = idle.get_mut(&k);
                        let w = envs.map(|v| v.remove(i));
                        if idle.get(&k).is_some_and(Vec::is_empty) {
                            idle.remove(&k);
                        }
                        w
                    }
                    None => None,
                }
            };
            match victim {
                Some(w) => {
                    self.metrics.evictions.fetch_add(1, Ordering::Relaxed);
                    self.destroy_env(&w.env);
                }
                None => return false,
            }
        }
    }

    /// In-flight invocations per function.
    pub fn running_all(&self) -> std::collections::BTreeMap<String, u64> {
        let r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        r.per_function
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Appends a failed invocation to `<state>/errors.log` (what `lamina status` shows);
    /// the file is rotated at 1 MiB.
    fn record_error(&self, f: &StoredFunction, request_id: &str, body: &[u8]) {
        let t = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["errorType"].as_str().map(str::to_string))
            .unwrap_or_else(|| "Unhandled".into());
        let path = self.state_dir.join("errors.log");
        if fs::metadata(&path).is_ok_and(|m| m.len() > 1 << 20) {
            let _ = fs::rename(&path, self.state_dir.join("errors.log.1"));
        }
        if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(&path) {
            let _ = writeln!(
                file,
                "{}\t{}:{}\t{}\t{}",
                crate::util::utc_timestamp("Z"),
                f.name,
                f.version,
                request_id,
                t.replace(['\t', '\n'], " ")
            );
        }
    }

    pub fn concurrency_limit(&self) -> u64 {
        self.concurrency.limit
    }

    pub fn min_unreserved(&self) -> u64 {
        self.concurrency.min_unreserved
    }

    /// Records a function's reserved concurrency (None: it uses the unreserved pool).
    pub fn set_reserved(&self, name: &str, reserved: Option<u64>) {
        let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match reserved {
            Some(n) => r.reserved.insert(name.to_string(), n),
            None => r.reserved.remove(name),
        };
    }

    /// Takes a concurrency slot for one invocation, or says why not (Lambda's throttle reason).
    fn acquire(&self, name: &str) -> Result<Slot<'_>, &'static str> {
        let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let running = r.per_function.get(name).copied().unwrap_or(0);
        let reserved = r.reserved.get(name).copied();
        match reserved {
            Some(limit) if running >= limit => {
                return Err("ReservedFunctionConcurrentInvocationLimitExceeded")
            }
            Some(_) => {}
            None => {
                let total_reserved: u64 = r.reserved.values().sum();
                let pool = self.concurrency.limit.saturating_sub(total_reserved);
                if r.unreserved >= pool {
                    return Err("ConcurrentInvocationLimitExceeded");
                }
                r.unreserved += 1;
            }
        }
        *r.per_function.entry(name.to_string()).or_default() += 1;
        Ok(Slot {
            s: self,
            name: name.to_string(),
            reserved: reserved.is_some(),
        })
    }

    /// In-flight invocations of a function.
    pub fn running(&self, name: &str) -> u64 {
        let r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        r.per_function.get(name).copied().unwrap_or(0)
    }

    /// Keeps `n` envs of version `f` started and warm for `qualifier` (provisioned
    /// concurrency), starting or stopping envs in the background.
    pub fn provision(&self, f: Arc<StoredFunction>, qualifier: String, n: u64) {
        let id = format!("{}\u{0}{qualifier}", f.name);
        let key = Scheduler::key(&f);
        let surplus: Vec<WarmEnv> = {
            let mut p = self.provisioned.lock().unwrap_or_else(|e| e.into_inner());
            let entry = p.entry(id.clone()).or_insert(Provision {
                key: key.clone(),
                requested: n,
                allocated: 0,
                failure: None,
            });
            entry.requested = n;
            entry.failure = None;
            if entry.key != key {
                // The qualifier now names another version: start over.
                entry.key = key.clone();
                entry.allocated = 0;
            }
            let extra = entry.allocated.saturating_sub(n);
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            if extra > 0 {
                if let Some(envs) = idle.get_mut(&key) {
                    while (out.len() as u64) < extra {
                        match envs
                            .iter()
                            .position(|w| w.pinned.as_deref() == Some(&qualifier))
                        {
                            Some(i) => out.push(envs.swap_remove(i)),
                            None => break,
                        }
                    }
                }
                entry.allocated -= out.len() as u64;
            }
            out
        };
        for w in surplus {
            self.destroy_env(&w.env);
        }
        self.fill(f, qualifier);
    }

    /// Starts pinned envs until the provisioned setting of `f`/`qualifier` has its count.
    fn fill(&self, f: Arc<StoredFunction>, qualifier: String) {
        let id = format!("{}\u{0}{qualifier}", f.name);
        let key = Scheduler::key(&f);
        let weak = self.me.clone();
        std::thread::spawn(move || loop {
            let Some(s) = weak.upgrade() else { return };
            {
                let mut p = s.provisioned.lock().unwrap_or_else(|e| e.into_inner());
                match p.get_mut(&id) {
                    Some(e) if e.key == key && e.allocated < e.requested && e.failure.is_none() => {
                        // Counted before the start so concurrent fillers do not overshoot.
                        e.allocated += 1;
                    }
                    _ => return,
                }
            }
            match s.cold_start(&f, "provisioned-concurrency") {
                Ok((w, _)) => {
                    let frozen = s.sandbox.cgroups.freeze(&w.env.cgroup, true).is_ok();
                    let still = {
                        let p = s.provisioned.lock().unwrap_or_else(|e| e.into_inner());
                        p.get(&id).is_some_and(|e| e.key == key)
                    };
                    if frozen && still {
                        let mut idle = s.idle.lock().unwrap_or_else(|e| e.into_inner());
                        idle.entry(key.clone()).or_default().push(WarmEnv {
                            pinned: Some(qualifier.clone()),
                            idle_since: Instant::now(),
                            ..w
                        });
                    } else {
                        s.destroy_env(&w.env);
                        s.unpin(&f.name, &qualifier, &key);
                    }
                }
                Err(o) => {
                    let why = match o {
                        Outcome::FunctionError { body } => {
                            String::from_utf8_lossy(&body).into_owned()
                        }
                        Outcome::ServiceError(m) => m,
                        Outcome::Throttled(_) => {
                            "busy envs fill lamina's memory budget (--memory-overcommit)".into()
                        }
                        _ => "the env did not start".into(),
                    };
                    let mut p = s.provisioned.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(e) = p.get_mut(&id) {
                        e.allocated = e.allocated.saturating_sub(1);
                        e.failure = Some(format!("FUNCTION_ERROR_INIT_FAILURE: {why}"));
                    }
                    return;
                }
            }
        });
    }

    /// A pinned env of `name`/`qualifier` is gone: count it out and start a replacement.
    fn unpin(&self, name: &str, qualifier: &str, key: &str) {
        let refill = {
            let mut p = self.provisioned.lock().unwrap_or_else(|e| e.into_inner());
            match p.get_mut(&format!("{name}\u{0}{qualifier}")) {
                Some(e) if e.key == key => {
                    e.allocated = e.allocated.saturating_sub(1);
                    e.failure.is_none()
                }
                _ => false,
            }
        };
        let version = key.split('\u{0}').nth(1).unwrap_or("");
        if refill {
            if let Ok(Some(f)) = self.registry.get_version(name, version) {
                if Scheduler::key(&f) == key {
                    self.fill(f, qualifier.to_string());
                }
            }
        }
    }

    /// (allocated, Status, StatusReason) of a provisioned concurrency setting.
    pub fn provisioned_status(
        &self,
        name: &str,
        qualifier: &str,
    ) -> (u64, &'static str, Option<String>) {
        let p = self.provisioned.lock().unwrap_or_else(|e| e.into_inner());
        match p.get(&format!("{name}\u{0}{qualifier}")) {
            None => (0, "IN_PROGRESS", None),
            Some(e) => {
                let ready = e.allocated.min(e.requested);
                if let Some(f) = &e.failure {
                    (ready, "FAILED", Some(f.clone()))
                } else if e.allocated >= e.requested
                    && !self.pinned_starting(&e.key, qualifier, e.allocated)
                {
                    (ready, "READY", None)
                } else {
                    (
                        self.pinned_ready(&e.key, qualifier).min(e.requested),
                        "IN_PROGRESS",
                        None,
                    )
                }
            }
        }
    }

    /// Pinned envs of a pool that finished Init (idle ones; busy ones count as ready too).
    fn pinned_ready(&self, key: &str, qualifier: &str) -> u64 {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get(key)
            .map(|v| {
                v.iter()
                    .filter(|w| w.pinned.as_deref() == Some(qualifier))
                    .count() as u64
            })
            .unwrap_or(0)
    }

    /// Whether some of `allocated` pinned envs are still starting (not idle and not busy).
    fn pinned_starting(&self, key: &str, qualifier: &str, allocated: u64) -> bool {
        let idle = self.pinned_ready(key, qualifier);
        let busy = self
            .busy_pinned
            .lock()
            .map(|b| {
                b.get(&format!("{key}\u{0}{qualifier}"))
                    .copied()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        idle + busy < allocated
    }

    fn busy_pinned_add(&self, key: &str, qualifier: &str, delta: i64) {
        let mut b = self.busy_pinned.lock().unwrap_or_else(|e| e.into_inner());
        let id = format!("{key}\u{0}{qualifier}");
        let n = b.entry(id.clone()).or_default();
        *n = (*n as i64 + delta).max(0) as u64;
        if *n == 0 {
            b.remove(&id);
        }
    }

    /// Stops keeping envs for a provisioned setting (deleted).
    pub fn forget_provisioned(&self, name: &str, qualifier: &str) {
        let removed = {
            let mut p = self.provisioned.lock().unwrap_or_else(|e| e.into_inner());
            p.remove(&format!("{name}\u{0}{qualifier}"))
        };
        let Some(e) = removed else { return };
        let gone: Vec<WarmEnv> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            match idle.get_mut(&e.key) {
                Some(envs) => {
                    let (pinned, keep): (Vec<WarmEnv>, Vec<WarmEnv>) = envs
                        .drain(..)
                        .partition(|w| w.pinned.as_deref() == Some(qualifier));
                    *envs = keep;
                    pinned
                }
                None => Vec::new(),
            }
        };
        for w in gone {
            self.destroy_env(&w.env);
        }
    }

    fn reap_idle(&self) {
        let expired: Vec<WarmEnv> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            for envs in idle.values_mut() {
                let (old, keep): (Vec<WarmEnv>, Vec<WarmEnv>) = envs.drain(..).partition(|w| {
                    w.pinned.is_none() && w.idle_since.elapsed() > self.idle_timeout
                });
                *envs = keep;
                out.extend(old);
            }
            idle.retain(|_, v| !v.is_empty());
            out
        };
        for w in expired {
            self.destroy_env(&w.env);
        }
    }

    /// Destroys every idle env of a function, or of one of its versions (deleted or changed);
    /// busy ones are destroyed when their invocation ends (their configuration is then stale).
    pub fn retire(&self, name: &str, version: Option<&str>) {
        let gone: Vec<WarmEnv> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<String> = idle
                .keys()
                .filter(|k| {
                    let mut parts = k.split('\u{0}');
                    parts.next() == Some(name) && version.is_none_or(|v| parts.next() == Some(v))
                })
                .cloned()
                .collect();
            keys.into_iter()
                .flat_map(|k| idle.remove(&k).unwrap_or_default())
                .collect()
        };
        if version.is_none() {
            let mut p = self.provisioned.lock().unwrap_or_else(|e| e.into_inner());
            p.retain(|k, _| k.split('\u{0}').next() != Some(name));
        }
        for w in gone {
            self.destroy_env(&w.env);
        }
    }

    /// Kills the processes of every env of this instance, busy ones included (the end of a
    /// shutdown's drain period): their invocations end as failed and their envs are destroyed.
    pub fn kill_all(&self) {
        self.sandbox.kill_all_envs();
    }

    /// Destroys every idle env (shutdown).
    pub fn shutdown(&self) {
        let all: Vec<WarmEnv> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.drain().flat_map(|(_, v)| v).collect()
        };
        for w in all {
            self.destroy_env(&w.env);
        }
    }

    /// The runtime process's environment: defaults, then the runtime layer's own variables,
    /// then the function's, then Lambda's reserved ones.
    fn env_vars(
        &self,
        f: &StoredFunction,
        log: &LogStream,
        runtime_env: &std::collections::BTreeMap<String, String>,
        init_type: &str,
    ) -> Vec<String> {
        let c = &f.config;
        let runtime = c["Runtime"].as_str().unwrap_or("provided");
        let mut vars: Vec<(String, String)> = vec![
            ("PATH".into(), "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin".into()),
            ("LD_LIBRARY_PATH".into(), "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib".into()),
            ("LANG".into(), "en_US.UTF-8".into()),
            ("TZ".into(), ":UTC".into()),
        ];
        for (k, v) in runtime_env {
            vars.retain(|(n, _)| n != k);
            vars.push((k.clone(), v.clone()));
        }
        if let Some(env) = c["Environment"]["Variables"].as_object() {
            for (k, v) in env {
                vars.retain(|(n, _)| n != k);
                vars.push((k.clone(), v.as_str().unwrap_or("").to_string()));
            }
        }
        let mut reserved = vec![
            ("_HANDLER", c["Handler"].as_str().unwrap_or("").to_string()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_DEFAULT_REGION", self.region.clone()),
            ("AWS_LAMBDA_FUNCTION_NAME", f.name.clone()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                c["MemorySize"].as_i64().unwrap_or(128).to_string(),
            ),
            ("AWS_LAMBDA_FUNCTION_VERSION", f.version.clone()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", init_type.to_string()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", log.group.clone()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", log.name.clone()),
            (
                "AWS_LAMBDA_RUNTIME_API",
                lamina_init::protocol::RUNTIME_API_ADDR.to_string(),
            ),
            ("LAMBDA_TASK_ROOT", "/var/task".to_string()),
            ("LAMBDA_RUNTIME_DIR", "/var/runtime".to_string()),
        ];
        if !runtime.starts_with("provided") {
            reserved.push(("AWS_EXECUTION_ENV", format!("AWS_Lambda_{runtime}")));
        }
        for (k, v) in reserved {
            vars.retain(|(n, _)| n != k);
            vars.push((k.to_string(), v));
        }
        vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    fn new_log(&self, f: &StoredFunction) -> std::io::Result<(Arc<LogStream>, OwnedFd)> {
        let group = f.config["LoggingConfig"]["LogGroup"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("/aws/lambda/{}", f.name));
        let day = crate::util::utc_timestamp("Z");
        let name = format!(
            "{}/{}/{}/[{}]{}",
            &day[0..4],
            &day[5..7],
            &day[8..10],
            f.version,
            crate::util::random_hex(16)
        );
        let path = crate::logs::LogStore::new(&self.state_dir)
            .ensure_group(&group)?
            .join(format!("{name}.log"));
        if let Some(p) = path.parent() {
            fs::create_dir_all(p)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        // The env's end blocks normally; ours is read without blocking.
        // SAFETY: fcntl on the write end we own.
        unsafe {
            let fl = libc::fcntl(w.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(w.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        let token = self
            .log_reader
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = File::from(r);
        let rfd = r.as_raw_fd();
        let log = Arc::new(LogStream {
            group,
            name,
            file: Mutex::new(file),
            current: Mutex::new(Vec::new()),
            pipe: Mutex::new(Some(r)),
            eof: std::sync::atomic::AtomicBool::new(false),
            partial: Mutex::new(Vec::new()),
            reader: self.log_reader.clone(),
            token,
        });
        self.log_reader.add(rfd, Arc::downgrade(&log), token);
        Ok((log, w))
    }

    fn cold_start(
        &self,
        f: &StoredFunction,
        init_type: &str,
    ) -> Result<(WarmEnv, Duration), Outcome> {
        let t0 = Instant::now();
        struct Starting<'a>(&'a crate::metrics::Metrics);
        impl Drop for Starting<'_> {
            fn drop(&mut self) {
                self.0
                    .starting
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.metrics
            .starting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _starting = Starting(&self.metrics);
        let c = &f.config;
        let runtime = c["Runtime"].as_str().unwrap_or("provided");
        // The runtime's layer: its manifest says what runs, with which extra environment.
        let rt = match crate::runtimes::resolve(&self.state_dir, runtime) {
            Ok(r) => r,
            Err(e @ crate::runtimes::RuntimeError::NotBuilt(_)) => {
                return Err(Outcome::InvalidRuntime(e.to_string()))
            }
            Err(e) => {
                tracing::warn!(runtime, %e, "runtime layer unusable");
                return Err(Outcome::InvalidRuntime(format!(
                    "The runtime {runtime} is unusable on this lamina ({e}); rebuild it with `lamina runtime build {runtime}`"
                )));
            }
        };
        let memory_bytes = c["MemorySize"].as_u64().unwrap_or(128) << 20;
        if !self.reserve_memory(memory_bytes) {
            return Err(Outcome::Throttled("ConcurrentInvocationLimitExceeded"));
        }
        // Given back unless the env starts (then its destruction gives it back).
        struct Reserved<'a>(&'a Scheduler, u64);
        impl Drop for Reserved<'_> {
            fn drop(&mut self) {
                self.0.release_memory(self.1);
            }
        }
        let reserved = Reserved(self, memory_bytes);
        let (log, log_w) = self
            .new_log(f)
            .map_err(|e| Outcome::ServiceError(format!("log stream: {e}")))?;
        log.write(init_start_line(runtime, &self.region).as_bytes());
        let spec = EnvSpec {
            code: Some(self.registry.code_dir(&f.code_hex)),
            // The function's layers at /opt, in order (the last one on top).
            layers: self
                .layers
                .function_layer_dirs(c)
                .map_err(|e| Outcome::ServiceError(format!("layers: {e}")))?,
            base: Base::Host,
            memory_mb: c["MemorySize"].as_u64().unwrap_or(128),
            tmp_mb: c["EphemeralStorage"]["Size"].as_u64().unwrap_or(512),
            pids: 1024,
            argv: rt.manifest.argv.clone(),
            env: self.env_vars(f, &log, &rt.manifest.env, init_type),
            cwd: PathBuf::from("/var/task"),
            runtime_api: true,
            runtime_dir: rt.runtime_dir,
            lang_dir: rt.lang_dir,
            stdout: Some(log_w.as_raw_fd()),
        };
        let started = self.sandbox.start(&spec);
        drop(log_w);
        let env = match started {
            Ok(env) => env,
            Err(SandboxError::Setup {
                step,
                error,
                exec_code: Some(_),
            }) => {
                log.write(format!("Error: {error} ({step})\n").as_bytes());
                return Err(Outcome::FunctionError {
                    body: error_body(
                        "Runtime.InvalidEntrypoint",
                        format!("RequestId: Error: {error}"),
                    ),
                });
            }
            Err(e) => {
                self.metrics
                    .env_start_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(Outcome::ServiceError(format!("starting an env: {e}")));
            }
        };
        // The reservation now belongs to the env (its limit is the function's MemorySize).
        std::mem::forget(reserved);
        if env.limits.memory_bytes != memory_bytes {
            self.release_memory(memory_bytes);
            self.metrics
                .memory_committed
                .fetch_add(env.limits.memory_bytes, std::sync::atomic::Ordering::AcqRel);
        }
        tracing::debug!(env = %env.id, timings = ?env.timings, "env started");
        let w = WarmEnv {
            env,
            log,
            idle_since: Instant::now(),
            pinned: None,
        };
        match w.env.wait_ready(Some(t0 + INIT_TIMEOUT)) {
            Ok(Some(EnvEvent::Ready)) => match self.sandbox.apply_cpu_quota(&w.env) {
                Ok(()) => Ok((w, t0.elapsed())),
                Err(e) => {
                    self.destroy_env(&w.env);
                    Err(Outcome::ServiceError(format!("cpu quota: {e}")))
                }
            },
            other => {
                let init_ms = t0.elapsed().as_secs_f64() * 1000.0;
                let (etype, body) = match other {
                    Ok(Some(EnvEvent::InitError { error_type, body })) => {
                        let t = error_type.unwrap_or_else(|| "Runtime.Unknown".into());
                        (t, body)
                    }
                    Ok(Some(EnvEvent::Exited(st))) => {
                        let msg = exit_message(st);
                        (
                            "Runtime.ExitError".to_string(),
                            error_body("Runtime.ExitError", format!("RequestId: Error: {msg}")),
                        )
                    }
                    Ok(None) => (
                        "Sandbox.Timedout".to_string(),
                        error_body(
                            "Sandbox.Timedout",
                            "Error: Init timed out after 10.00 seconds".into(),
                        ),
                    ),
                    _ => (
                        "Runtime.Unknown".to_string(),
                        error_body(
                            "Runtime.Unknown",
                            "Error: the runtime failed during Init".into(),
                        ),
                    ),
                };
                w.log.drain();
                w.log.write(format!("INIT_REPORT Init Duration: {init_ms:.2} ms\tPhase: init\tStatus: error\tError Type: {etype}\n").as_bytes());
                self.destroy_env(&w.env);
                Err(Outcome::FunctionError { body })
            }
        }
    }

    /// Runs one synchronous invocation.
    pub fn invoke(&self, f: &StoredFunction, req: InvokeRequest) -> InvokeOutcome {
        let _slot = match self.acquire(&f.name) {
            Ok(s) => s,
            Err(reason) => {
                self.metrics.throttle(&f.name, &f.version);
                return InvokeOutcome {
                    result: Outcome::Throttled(reason),
                    log_tail: None,
                };
            }
        };
        let key = Scheduler::key(f);
        let warm = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.get_mut(&key).and_then(Vec::pop)
        };
        if let Some(q) = warm.as_ref().and_then(|w| w.pinned.clone()) {
            self.busy_pinned_add(&key, &q, 1);
        }
        let (w, init) = match warm {
            Some(w) => {
                if let Err(e) = self.sandbox.cgroups.freeze(&w.env.cgroup, false) {
                    self.destroy_env(&w.env);
                    return InvokeOutcome {
                        result: Outcome::ServiceError(format!("thaw: {e}")),
                        log_tail: None,
                    };
                }
                (w, None)
            }
            None => match self.cold_start(f, "on-demand") {
                Ok((w, d)) => (w, Some(d)),
                Err(Outcome::Throttled(reason)) => {
                    self.metrics.throttle(&f.name, &f.version);
                    return InvokeOutcome {
                        result: Outcome::Throttled(reason),
                        log_tail: None,
                    };
                }
                Err(o) => {
                    let body = match &o {
                        Outcome::FunctionError { body } => body.clone(),
                        Outcome::ServiceError(m) => error_body("ServiceException", m.clone()),
                        Outcome::InvalidRuntime(m) => {
                            error_body("InvalidRuntimeException", m.clone())
                        }
                        _ => Vec::new(),
                    };
                    self.record_error(f, &req.request_id, &body);
                    self.metrics.invocation(crate::metrics::Invocation {
                        function: &f.name,
                        version: &f.version,
                        duration_secs: 0.0,
                        init_secs: None,
                        error: true,
                        memory_bytes: 0,
                    });
                    return InvokeOutcome {
                        result: o,
                        log_tail: None,
                    };
                }
            },
        };
        let timeout = Duration::from_secs(f.config["Timeout"].as_u64().unwrap_or(3));
        self.metrics
            .busy
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let start = Instant::now();
        let deadline_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            + timeout;
        w.log.begin();
        w.log.write(
            format!(
                "START RequestId: {} Version: {}\n",
                req.request_id, f.version
            )
            .as_bytes(),
        );
        let header = InvokeHeader {
            request_id: req.request_id.clone(),
            deadline_ms: deadline_ms.as_millis() as u64,
            invoked_function_arn: req.invoked_arn.clone(),
            trace_id: Some(format!(
                "Root=1-{:08x}-{};Parent={};Sampled=0",
                deadline_ms.as_secs() as u32,
                crate::util::random_hex(12),
                crate::util::random_hex(8)
            )),
            client_context: req.client_context.clone(),
            cognito_identity: None,
            payload_len: 0,
        };
        let mut reuse = true;
        let result = match w.env.send_invoke(header, &req.payload) {
            Err(e) => {
                reuse = false;
                Outcome::ServiceError(format!("sending the event: {e}"))
            }
            Ok(()) => loop {
                match w.env.recv_event(Some(start + timeout)) {
                    Ok(Some(EnvEvent::Response {
                        request_id,
                        content_type,
                        body,
                    })) if request_id == req.request_id => {
                        break Outcome::Response { content_type, body };
                    }
                    Ok(Some(EnvEvent::Error {
                        request_id, body, ..
                    })) if request_id == req.request_id => {
                        break Outcome::FunctionError { body };
                    }
                    Ok(Some(EnvEvent::ResponseTooLarge { .. })) => {
                        reuse = false;
                        break Outcome::FunctionError {
                            body: error_body("Function.ResponseSizeTooLarge", "Response payload size exceeded maximum allowed payload size (6291556 bytes).".into()),
                        };
                    }
                    Ok(Some(EnvEvent::Exited(st))) => {
                        reuse = false;
                        let stats = self.sandbox.cgroups.stats(&w.env.cgroup);
                        if stats.oom_kills > 0 {
                            break Outcome::FunctionError {
                                body: error_body("Runtime.OutOfMemory", format!("RequestId: {} Error: Runtime exited with error: signal: killed", req.request_id)),
                            };
                        }
                        break Outcome::FunctionError {
                            body: error_body(
                                "Runtime.ExitError",
                                format!(
                                    "RequestId: {} Error: {}",
                                    req.request_id,
                                    exit_message(st)
                                ),
                            ),
                        };
                    }
                    Ok(Some(EnvEvent::Gone)) | Err(_) => {
                        reuse = false;
                        break Outcome::FunctionError {
                            body: error_body("Runtime.ExitError", format!("RequestId: {} Error: Runtime exited without providing a reason", req.request_id)),
                        };
                    }
                    Ok(None) => {
                        reuse = false;
                        w.env.extensions.set_reason(ShutdownReason::Timeout);
                        w.log.write(
                            format!(
                                "{} {} Task timed out after {:.2} seconds\n",
                                crate::util::utc_timestamp("Z"),
                                req.request_id,
                                timeout.as_secs_f64()
                            )
                            .as_bytes(),
                        );
                        break Outcome::FunctionError {
                            body: error_body(
                                "Sandbox.Timedout",
                                format!(
                                    "RequestId: {} Error: Task timed out after {:.2} seconds",
                                    req.request_id,
                                    timeout.as_secs_f64()
                                ),
                            ),
                        };
                    }
                    Ok(Some(_)) => continue,
                }
            },
        };
        let duration = start.elapsed();
        // Extensions registered for INVOKE finish their part (within the function's timeout)
        // before the env is reused; at once without any.
        if reuse && !w.env.wait_invoke_done(&req.request_id, start + timeout) {
            reuse = false;
            w.env.extensions.set_reason(ShutdownReason::Timeout);
        }
        let memory_peak = self.sandbox.cgroups.memory_peak(&w.env.cgroup);
        w.log.drain();
        w.log.flush_partial();
        let ms = duration.as_secs_f64() * 1000.0;
        // END and REPORT in one write.
        let mut report = format!(
            "END RequestId: {}\nREPORT RequestId: {}\tDuration: {ms:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t",
            req.request_id,
            req.request_id,
            ms.ceil() as u64,
            w.env.limits.memory_bytes >> 20,
            memory_peak.div_ceil(1 << 20),
        );
        if let Some(d) = init {
            report.push_str(&format!(
                "Init Duration: {:.2} ms\t",
                d.as_secs_f64() * 1000.0
            ));
        }
        report.push('\n');
        w.log.write(report.as_bytes());
        if w.env.extensions.any() {
            w.env.send_report(lamina_init::protocol::ReportMetrics {
                request_id: req.request_id.clone(),
                status: match &result {
                    Outcome::Response { .. } => "success",
                    Outcome::FunctionError { .. } if reuse => "error",
                    _ => "failure",
                }
                .into(),
                duration_us: duration.as_micros() as u64,
                billed_duration_ms: ms.ceil() as u64,
                memory_size_mb: w.env.limits.memory_bytes >> 20,
                max_memory_used_mb: memory_peak.div_ceil(1 << 20),
                init_duration_us: init.map(|d| d.as_micros() as u64),
            });
        }
        let log_tail = req.tail.then(|| w.log.tail());
        self.metrics
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let failed = match &result {
            Outcome::FunctionError { body } => {
                self.record_error(f, &req.request_id, body);
                true
            }
            Outcome::ServiceError(m) => {
                self.record_error(
                    f,
                    &req.request_id,
                    &error_body("ServiceException", m.clone()),
                );
                true
            }
            _ => false,
        };
        self.metrics.invocation(crate::metrics::Invocation {
            function: &f.name,
            version: &f.version,
            duration_secs: duration.as_secs_f64(),
            init_secs: init.map(|d| d.as_secs_f64()),
            error: failed,
            memory_bytes: memory_peak,
        });
        // An env whose version changed meanwhile (an update) is not reused.
        let current = matches!(
            self.registry.get_version(&f.name, &f.version),
            Ok(Some(now)) if now.revision() == f.revision() && now.code_hex == f.code_hex
        );
        if let Some(q) = &w.pinned {
            self.busy_pinned_add(&key, q, -1);
        }
        if reuse && current && self.sandbox.cgroups.freeze(&w.env.cgroup, true).is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.entry(key).or_default().push(WarmEnv {
                idle_since: Instant::now(),
                ..w
            });
        } else {
            if let Some(q) = &w.pinned {
                self.unpin(&f.name, q, &key);
            }
            self.destroy_env(&w.env);
        }
        InvokeOutcome { result, log_tail }
    }

    /// Idle envs per function (for status and tests).
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

/// Lambda's first platform line of a cold start: `INIT_START Runtime Version: ...`.
fn init_start_line(runtime: &str, region: &str) -> String {
    let (lang, ver) = match runtime.find(|c: char| c.is_ascii_digit() || c == '.') {
        Some(i) => (&runtime[..i], runtime[i..].trim_start_matches('.')),
        None => (runtime, ""),
    };
    let build = format!("lamina{}", env!("CARGO_PKG_VERSION").replace('.', ""));
    let version = if ver.is_empty() {
        build
    } else {
        format!("{ver}.{build}")
    };
    let id = crate::api::sigv4::sha256_hex(format!("{runtime} {version}").as_bytes());
    format!("INIT_START Runtime Version: {lang}:{version}\tRuntime Version ARN: arn:aws:lambda:{region}::runtime:{id}\n")
}

fn exit_message(st: ExitStatus) -> String {
    match st {
        ExitStatus::Code(0) => "Runtime exited without providing a reason".to_string(),
        ExitStatus::Code(c) => format!("Runtime exited with error: exit status {c}"),
        ExitStatus::Signal(s) => {
            let name = match s {
                9 => "killed",
                11 => "segmentation fault",
                6 => "aborted",
                15 => "terminated",
                _ => "",
            };
            if name.is_empty() {
                format!("Runtime exited with error: signal {s}")
            } else {
                format!("Runtime exited with error: signal: {name}")
            }
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}
