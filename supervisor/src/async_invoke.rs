//! Asynchronous invocation (`InvocationType: Event`): a durable queue in `lamina.db`, worker
//! threads, retries with backoff, the maximum event age and destinations.
//!
//! The queue has its own tables and its own SQLite connection to the registry's database:
//! - `async_events`: one row per accepted event, from the Invoke that enqueued it (committed
//!   before the 202 is answered) until it completes;
//! - `event_invoke_configs`: `MaximumRetryAttempts`, `MaximumEventAgeInSeconds` and the
//!   destinations, per function and qualifier (`$LATEST` for the unqualified function).
//!
//! Every state change is one transaction: the enqueue; each attempt's outcome (counters and
//! the time of the next try); the completion, which deletes the event and enqueues the
//! destination record for the destination function in the same transaction. An event whose
//! attempt was in progress when lamina stopped (even by SIGKILL) is still in the table and is
//! tried again at the next start: delivery is at least once, as Lambda's is.
//!
//! Retries follow Lambda: a function error (including timeouts and crashes) counts as an
//! attempt; up to `MaximumRetryAttempts` (default 2) retries follow, the n-th after n times the
//! retry delay (Lambda: about 1 then 2 minutes; `lamina serve --async-retry-delay`). Throttles
//! and service errors do not count: they are retried with exponential backoff (1 s doubling up to
//! 5 min), bounded only by `MaximumEventAgeInSeconds` (default 21600). An event older than
//! that is discarded (on-failure destination, condition `EventAgeExceeded`); one whose retries
//! are spent goes to the on-failure destination (`RetriesExhausted`); a success goes to the
//! on-success destination (`Success`).
//!
//! The queue does not know how a function runs: it calls an [`AsyncTarget`] (the API's
//! resolve + scheduler), which also decides whether the function still exists.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Map, Value};

/// Lambda's default `MaximumRetryAttempts`.
pub const DEFAULT_MAX_RETRY: i64 = 2;
/// Lambda's default (and largest) `MaximumEventAgeInSeconds`.
pub const DEFAULT_MAX_AGE: i64 = 21_600;
/// First backoff after a throttle or service error; it doubles up to [`THROTTLE_BACKOFF_MAX`].
pub const THROTTLE_BACKOFF_START: Duration = Duration::from_secs(1);
pub const THROTTLE_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Largest destination record handed to a destination function; a larger one loses its
/// payloads (as Lambda drops them for destinations with smaller limits).
pub const MAX_RECORD: usize = 6_291_456;
/// Longest a worker sleeps before looking at the queue and the stop flag again.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("async queue database: {0}")]
    Db(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, QueueError>;

/// What one delivery of an event to its function came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The function ran and returned `body`.
    Success {
        executed_version: String,
        body: Vec<u8>,
    },
    /// The function ran and failed (error, timeout, crash, failed Init): counts as an attempt.
    FunctionError {
        executed_version: String,
        body: Vec<u8>,
    },
    /// No capacity now: retried with backoff, not counted.
    Throttled(String),
    /// lamina could not run it (env setup, storage): retried with backoff, not counted.
    ServiceError(String),
    /// The function or its qualifier no longer exists: the event is dropped.
    Gone(String),
}

/// One delivery of an event.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    pub function: &'a str,
    /// As invoked (`None`: the unqualified function).
    pub qualifier: Option<&'a str>,
    pub invoked_arn: &'a str,
    pub request_id: &'a str,
    pub payload: &'a [u8],
}

/// Runs an event's function (implemented by the API with its resolve and the scheduler).
pub trait AsyncTarget: Send + Sync {
    fn run(&self, inv: &Invocation<'_>) -> Delivery;
}

/// A stored `FunctionEventInvokeConfig`; unset members are `None` (Lambda's defaults apply).
#[derive(Debug, Clone, PartialEq)]
pub struct EventInvokeConfig {
    pub function: String,
    /// `$LATEST`, a version or an alias.
    pub qualifier: String,
    pub max_retry: Option<i64>,
    pub max_age: Option<i64>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    /// Epoch seconds.
    pub last_modified: f64,
}

/// An event accepted by Invoke.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub request_id: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub invoked_arn: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The first retry after a function error comes after this long, the n-th after n times it.
    pub retry_delay: Duration,
    /// Worker threads (events processed at once).
    pub workers: usize,
    /// `arn:aws:lambda:<region>:<account>:function:` (destination records name the function).
    pub arn_prefix: String,
}

/// Why an event completed (a destination record's `requestContext.condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// A queued event as stored.
#[derive(Debug, Clone)]
struct StoredEvent {
    id: i64,
    request_id: String,
    function: String,
    qualifier: Option<String>,
    invoked_arn: String,
    payload: Vec<u8>,
    enqueued_ms: i64,
    /// Attempts that ended in a function error.
    attempts: i64,
    /// Times the function was run for this event (`approximateInvokeCount`).
    invokes: i64,
    /// Throttles and service errors since the last run (backoff exponent).
    throttles: i64,
    /// The last run's executed version and response (for an `EventAgeExceeded` record).
    last_version: Option<String>,
    last_error: bool,
    last_body: Option<Vec<u8>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS async_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    function TEXT NOT NULL,
    qualifier TEXT,
    invoked_arn TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    next_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    invokes INTEGER NOT NULL DEFAULT 0,
    throttles INTEGER NOT NULL DEFAULT 0,
    last_version TEXT,
    last_error INTEGER NOT NULL DEFAULT 0,
    last_body BLOB
);
CREATE INDEX IF NOT EXISTS async_events_due ON async_events (next_ms, id);
CREATE INDEX IF NOT EXISTS async_events_function ON async_events (function);
CREATE TABLE IF NOT EXISTS event_invoke_configs (
    function TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    max_retry INTEGER,
    max_age INTEGER,
    on_success TEXT,
    on_failure TEXT,
    last_modified REAL NOT NULL,
    PRIMARY KEY (function, qualifier)
);
";

struct Sched {
    /// Events a worker is processing.
    running: HashSet<i64>,
    stopping: bool,
}

enum Next {
    Due(i64),
    At(i64),
    Empty,
}

type Clock = Box<dyn Fn() -> i64 + Send + Sync>;

pub struct AsyncQueue {
    db: Mutex<Connection>,
    sched: Mutex<Sched>,
    wake: Condvar,
    settings: Settings,
    /// Milliseconds since the epoch (a test clock in unit tests).
    clock: Clock,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Delay before the next try after a throttle or service error (the `n`-th in a row, from 1).
pub fn throttle_backoff(n: i64) -> Duration {
    let shift = (n.max(1) - 1).min(20) as u32;
    THROTTLE_BACKOFF_START
        .saturating_mul(1u32 << shift)
        .min(THROTTLE_BACKOFF_MAX)
}

/// Delay before retry `attempt` (1 = the first retry) after a function error.
pub fn retry_delay(base: Duration, attempt: i64) -> Duration {
    base.saturating_mul(attempt.clamp(1, 1000) as u32)
}

/// `YYYY-MM-DDThh:mm:ss.sssZ` of epoch milliseconds.
fn iso_ms(t: i64) -> String {
    let secs = t.div_euclid(1000);
    let (y, m, d) = crate::util::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        t.rem_euclid(1000)
    )
}

/// `(name, qualifier)` of a lamina function ARN `arn:aws:lambda:<r>:<acct>:function:<name>[:q]`.
pub fn function_arn_parts(arn: &str) -> Option<(String, Option<String>)> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", partition, "lambda", _, _, "function", name] if partition.starts_with("aws") => {
            Some((name.to_string(), None))
        }
        ["arn", partition, "lambda", _, _, "function", name, q] if partition.starts_with("aws") => {
            Some((name.to_string(), Some(q.to_string())))
        }
        _ => None,
    }
}

fn json_or_string(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

impl AsyncQueue {
    /// Opens the queue's tables in `<state>/lamina.db` (creating them if needed).
    pub fn open(state_dir: &Path, settings: Settings) -> Result<Arc<AsyncQueue>> {
        AsyncQueue::open_with_clock(state_dir, settings, Box::new(system_ms))
    }

    fn open_with_clock(
        state_dir: &Path,
        settings: Settings,
        clock: Clock,
    ) -> Result<Arc<AsyncQueue>> {
        let db = Connection::open(state_dir.join("lamina.db"))?;
        db.busy_timeout(Duration::from_secs(10))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        // An acknowledged event survives power loss too, not only a crash of lamina.
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(SCHEMA)?;
        Ok(Arc::new(AsyncQueue {
            db: Mutex::new(db),
            sched: Mutex::new(Sched {
                running: HashSet::new(),
                stopping: false,
            }),
            wake: Condvar::new(),
            settings,
            clock,
            threads: Mutex::new(Vec::new()),
        }))
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sched(&self) -> MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        let _s = self.sched();
        self.wake.notify_all();
    }

    /// Stores an accepted event; it is durable when this returns.
    pub fn enqueue(&self, ev: &NewEvent) -> Result<()> {
        {
            let now = (self.clock)();
            let db = self.db();
            db.execute(
                "INSERT INTO async_events (request_id, function, qualifier, invoked_arn, payload, enqueued_ms, next_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![ev.request_id, ev.function, ev.qualifier, ev.invoked_arn, ev.payload, now],
            )?;
        }
        self.notify();
        Ok(())
    }

    /// Events not yet completed (for status and tests).
    pub fn pending(&self) -> Result<u64> {
        let db = self.db();
        Ok(db.query_row("SELECT count(*) FROM async_events", [], |r| {
            r.get::<_, i64>(0)
        })? as u64)
    }

    /// Waiting events per function and qualifier (`$LATEST` when unqualified): their number and
    /// the age of the oldest, in seconds (for /metrics).
    pub fn depth(&self) -> Result<crate::metrics::QueueStats> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT function, coalesce(qualifier, '$LATEST'), count(*), min(enqueued_ms)
             FROM async_events GROUP BY function, coalesce(qualifier, '$LATEST')",
        )?;
        let now = crate::util::now_ms();
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = crate::metrics::QueueStats::new();
        for row in rows {
            let (f, q, n, oldest) = row?;
            out.insert(
                (f, q),
                (n.max(0) as u64, (now - oldest).max(0) as f64 / 1000.0),
            );
        }
        Ok(out)
    }

    /// Forgets a deleted function's (or, with a qualifier, a deleted version's or alias's)
    /// configurations and pending events, in one transaction.
    pub fn forget(&self, function: &str, qualifier: Option<&str>) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match qualifier {
            None => {
                tx.execute(
                    "DELETE FROM event_invoke_configs WHERE function = ?1",
                    [function],
                )?;
                tx.execute("DELETE FROM async_events WHERE function = ?1", [function])?;
            }
            Some(q) => {
                tx.execute(
                    "DELETE FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2",
                    [function, q],
                )?;
                tx.execute(
                    "DELETE FROM async_events WHERE function = ?1 AND qualifier = ?2",
                    [function, q],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    // ---- event-invoke configurations ----

    fn config_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventInvokeConfig> {
        Ok(EventInvokeConfig {
            function: r.get(0)?,
            qualifier: r.get(1)?,
            max_retry: r.get(2)?,
            max_age: r.get(3)?,
            on_success: r.get(4)?,
            on_failure: r.get(5)?,
            last_modified: r.get(6)?,
        })
    }

    const CONFIG_COLUMNS: &'static str =
        "function, qualifier, max_retry, max_age, on_success, on_failure, last_modified";

    pub fn get_config(&self, function: &str, qualifier: &str) -> Result<Option<EventInvokeConfig>> {
        let db = self.db();
        Ok(db
            .query_row(
                &format!(
                    "SELECT {} FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2",
                    Self::CONFIG_COLUMNS
                ),
                [function, qualifier],
                Self::config_row,
            )
            .optional()?)
    }

    /// Creates or replaces a configuration.
    pub fn put_config(&self, c: &EventInvokeConfig) -> Result<()> {
        let db = self.db();
        db.execute(
            "INSERT OR REPLACE INTO event_invoke_configs
             (function, qualifier, max_retry, max_age, on_success, on_failure, last_modified)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                c.function,
                c.qualifier,
                c.max_retry,
                c.max_age,
                c.on_success,
                c.on_failure,
                c.last_modified
            ],
        )?;
        Ok(())
    }

    /// Changes an existing configuration in one transaction; `None` if there is none.
    pub fn update_config(
        &self,
        function: &str,
        qualifier: &str,
        change: impl FnOnce(&mut EventInvokeConfig),
    ) -> Result<Option<EventInvokeConfig>> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old = tx
            .query_row(
                &format!(
                    "SELECT {} FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2",
                    Self::CONFIG_COLUMNS
                ),
                [function, qualifier],
                Self::config_row,
            )
            .optional()?;
        let Some(mut c) = old else {
            return Ok(None);
        };
        change(&mut c);
        tx.execute(
            "UPDATE event_invoke_configs SET max_retry = ?3, max_age = ?4, on_success = ?5,
             on_failure = ?6, last_modified = ?7 WHERE function = ?1 AND qualifier = ?2",
            params![
                c.function,
                c.qualifier,
                c.max_retry,
                c.max_age,
                c.on_success,
                c.on_failure,
                c.last_modified
            ],
        )?;
        tx.commit()?;
        Ok(Some(c))
    }

    /// Deletes a configuration; false if there was none.
    pub fn delete_config(&self, function: &str, qualifier: &str) -> Result<bool> {
        let db = self.db();
        Ok(db.execute(
            "DELETE FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2",
            [function, qualifier],
        )? > 0)
    }

    /// A function's configurations ordered by qualifier, after `marker`, at most `limit`.
    pub fn list_configs(
        &self,
        function: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventInvokeConfig>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {} FROM event_invoke_configs WHERE function = ?1 AND qualifier > ?2
             ORDER BY qualifier LIMIT ?3",
            Self::CONFIG_COLUMNS
        ))?;
        let rows = stmt.query_map(
            params![function, marker.unwrap_or(""), limit as i64],
            Self::config_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    // ---- processing ----

    /// Starts the worker threads; they stop taking events once `stop` is set.
    pub fn start(self: &Arc<Self>, target: Arc<dyn AsyncTarget>, stop: Arc<AtomicBool>) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..self.settings.workers.max(1) {
            let q = self.clone();
            let target = target.clone();
            let stop = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("async-{i}"))
                .spawn(move || q.worker(target.as_ref(), &stop));
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => tracing::error!(%e, "could not start an async invocation worker"),
            }
        }
    }

    /// Stops taking events, lets the ones in progress finish for at most `grace`, then calls
    /// `abort` (which ends their invocations) and waits for the workers. Events not finished
    /// stay queued for the next start.
    pub fn shutdown(&self, grace: Duration, abort: &dyn Fn()) {
        let deadline = Instant::now() + grace;
        let aborted = {
            let mut s = self.sched();
            s.stopping = true;
            self.wake.notify_all();
            loop {
                if s.running.is_empty() {
                    break false;
                }
                let now = Instant::now();
                if now >= deadline {
                    tracing::warn!(
                        events = s.running.len(),
                        "async invocations still running at the end of the drain: aborting them"
                    );
                    break true;
                }
                s = self
                    .wake
                    .wait_timeout(s, (deadline - now).min(POLL))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        };
        // The workers need the lock to see `stopping` and return.
        if aborted {
            abort();
        }
        let threads: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    fn stopping(&self) -> bool {
        self.sched().stopping
    }

    fn worker(&self, target: &dyn AsyncTarget, stop: &AtomicBool) {
        loop {
            let id = {
                let mut s = self.sched();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        s.stopping = true;
                    }
                    if s.stopping {
                        return;
                    }
                    let now = (self.clock)();
                    let wait = match self.next(now, &s.running) {
                        Ok(Next::Due(id)) => {
                            s.running.insert(id);
                            break id;
                        }
                        Ok(Next::At(t)) => Duration::from_millis((t - now).max(1) as u64),
                        Ok(Next::Empty) => POLL,
                        Err(e) => {
                            tracing::error!(%e, "async queue");
                            POLL
                        }
                    };
                    s = self
                        .wake
                        .wait_timeout(s, wait.min(POLL))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            };
            if let Err(e) = self.process(target, id) {
                tracing::error!(%e, event = id, "async event processing failed; it stays queued");
            }
            let mut s = self.sched();
            s.running.remove(&id);
            self.wake.notify_all();
        }
    }

    /// The next event to process (not already running), or when the next one is due.
    fn next(&self, now: i64, running: &HashSet<i64>) -> Result<Next> {
        let db = self.db();
        let mut stmt = db
            .prepare_cached("SELECT id, next_ms FROM async_events ORDER BY next_ms, id LIMIT ?1")?;
        let rows = stmt.query_map([running.len() as i64 + 1], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (id, next) = row?;
            if running.contains(&id) {
                continue;
            }
            return Ok(if next <= now {
                Next::Due(id)
            } else {
                Next::At(next)
            });
        }
        Ok(Next::Empty)
    }

    /// Processes every event due now, one after the other, in this thread (unit tests; the
    /// workers do the same concurrently). Returns how many were processed.
    #[cfg(test)]
    fn run_due(&self, target: &dyn AsyncTarget) -> Result<usize> {
        let mut n = 0;
        loop {
            let now = (self.clock)();
            let id = match self.next(now, &HashSet::new())? {
                Next::Due(id) => id,
                _ => return Ok(n),
            };
            self.process(target, id)?;
            n += 1;
        }
    }

    fn load(&self, id: i64) -> Result<Option<StoredEvent>> {
        let db = self.db();
        Ok(db
            .query_row(
                "SELECT id, request_id, function, qualifier, invoked_arn, payload, enqueued_ms,
                        attempts, invokes, throttles, last_version, last_error, last_body
                 FROM async_events WHERE id = ?1",
                [id],
                |r| {
                    Ok(StoredEvent {
                        id: r.get(0)?,
                        request_id: r.get(1)?,
                        function: r.get(2)?,
                        qualifier: r.get(3)?,
                        invoked_arn: r.get(4)?,
                        payload: r.get(5)?,
                        enqueued_ms: r.get(6)?,
                        attempts: r.get(7)?,
                        invokes: r.get(8)?,
                        throttles: r.get(9)?,
                        last_version: r.get(10)?,
                        last_error: r.get::<_, i64>(11)? != 0,
                        last_body: r.get(12)?,
                    })
                },
            )
            .optional()?)
    }

    /// The settings that apply to an event of `function` invoked with `qualifier`.
    fn effective(&self, function: &str, qualifier: Option<&str>) -> Result<EffectiveConfig> {
        let c = self.get_config(function, qualifier.unwrap_or("$LATEST"))?;
        Ok(EffectiveConfig {
            max_retry: c
                .as_ref()
                .and_then(|c| c.max_retry)
                .unwrap_or(DEFAULT_MAX_RETRY),
            max_age: c
                .as_ref()
                .and_then(|c| c.max_age)
                .unwrap_or(DEFAULT_MAX_AGE),
            on_success: c
                .as_ref()
                .and_then(|c| c.on_success.clone())
                .filter(|d| !d.is_empty()),
            on_failure: c
                .as_ref()
                .and_then(|c| c.on_failure.clone())
                .filter(|d| !d.is_empty()),
        })
    }

    fn process(&self, target: &dyn AsyncTarget, id: i64) -> Result<()> {
        let Some(ev) = self.load(id)? else {
            return Ok(());
        };
        let cfg = self.effective(&ev.function, ev.qualifier.as_deref())?;
        let deadline = ev
            .enqueued_ms
            .saturating_add(cfg.max_age.saturating_mul(1000));
        if (self.clock)() >= deadline {
            let last = ev.last_body.as_ref().map(|b| {
                (
                    ev.last_version.as_deref().unwrap_or("$LATEST"),
                    b.as_slice(),
                    ev.last_error,
                )
            });
            tracing::info!(request = %ev.request_id, function = %ev.function, "async event too old: discarded");
            return self.complete(
                &ev,
                Condition::EventAgeExceeded,
                cfg.on_failure.as_deref(),
                ev.invokes,
                last,
            );
        }
        let delivery = target.run(&Invocation {
            function: &ev.function,
            qualifier: ev.qualifier.as_deref(),
            invoked_arn: &ev.invoked_arn,
            request_id: &ev.request_id,
            payload: &ev.payload,
        });
        let now = (self.clock)();
        match delivery {
            Delivery::Success {
                executed_version,
                body,
            } => self.complete(
                &ev,
                Condition::Success,
                cfg.on_success.as_deref(),
                ev.invokes + 1,
                Some((&executed_version, &body, false)),
            ),
            Delivery::FunctionError {
                executed_version,
                body,
            } => {
                if self.stopping() {
                    // Most likely ended by the shutdown (its env killed at the end of the
                    // drain): not an attempt; the next start runs it again.
                    return Ok(());
                }
                let attempts = ev.attempts + 1;
                let invokes = ev.invokes + 1;
                if attempts > cfg.max_retry {
                    return self.complete(
                        &ev,
                        Condition::RetriesExhausted,
                        cfg.on_failure.as_deref(),
                        invokes,
                        Some((&executed_version, &body, true)),
                    );
                }
                let next = now
                    .saturating_add(ms(retry_delay(self.settings.retry_delay, attempts)))
                    .min(deadline);
                let db = self.db();
                db.execute(
                    "UPDATE async_events SET attempts = ?2, invokes = ?3, throttles = 0, next_ms = ?4,
                     last_version = ?5, last_error = 1, last_body = ?6 WHERE id = ?1",
                    params![ev.id, attempts, invokes, next, executed_version, body],
                )?;
                Ok(())
            }
            Delivery::Throttled(why) | Delivery::ServiceError(why) => {
                let throttles = ev.throttles + 1;
                tracing::info!(request = %ev.request_id, reason = %why, "async event not run now: backing off");
                let next = now
                    .saturating_add(ms(throttle_backoff(throttles)))
                    .min(deadline);
                let db = self.db();
                db.execute(
                    "UPDATE async_events SET throttles = ?2, next_ms = ?3 WHERE id = ?1",
                    params![ev.id, throttles, next],
                )?;
                Ok(())
            }
            Delivery::Gone(why) => {
                tracing::warn!(request = %ev.request_id, function = %ev.function, reason = %why, "async event's function is gone: dropped");
                let db = self.db();
                db.execute("DELETE FROM async_events WHERE id = ?1", [ev.id])?;
                Ok(())
            }
        }
    }

    /// Lambda's destination record for a completed event.
    fn record(
        &self,
        ev: &StoredEvent,
        condition: Condition,
        invokes: i64,
        response: Option<(&str, &[u8], bool)>,
    ) -> Vec<u8> {
        let version = response
            .map(|(v, _, _)| v.to_string())
            .or_else(|| ev.qualifier.clone())
            .unwrap_or_else(|| "$LATEST".to_string());
        let mut rec = Map::new();
        rec.insert("version".into(), json!("1.0"));
        rec.insert("timestamp".into(), json!(iso_ms((self.clock)())));
        rec.insert(
            "requestContext".into(),
            json!({
                "requestId": ev.request_id,
                "functionArn": format!("{}{}:{version}", self.settings.arn_prefix, ev.function),
                "condition": condition.as_str(),
                "approximateInvokeCount": invokes,
            }),
        );
        rec.insert("requestPayload".into(), json_or_string(&ev.payload));
        if let Some((v, body, error)) = response {
            let mut ctx = json!({"statusCode": 200, "executedVersion": v});
            if error {
                ctx["functionError"] = json!("Unhandled");
            }
            rec.insert("responseContext".into(), ctx);
            rec.insert("responsePayload".into(), json_or_string(body));
        }
        let out = Value::Object(rec.clone()).to_string().into_bytes();
        if out.len() <= MAX_RECORD {
            return out;
        }
        rec.remove("requestPayload");
        rec.remove("responsePayload");
        Value::Object(rec).to_string().into_bytes()
    }

    /// Deletes the event and enqueues its destination record, in one transaction.
    fn complete(
        &self,
        ev: &StoredEvent,
        condition: Condition,
        destination: Option<&str>,
        invokes: i64,
        response: Option<(&str, &[u8], bool)>,
    ) -> Result<()> {
        let dest = destination.and_then(|d| {
            let parts = function_arn_parts(d);
            if parts.is_none() {
                tracing::warn!(destination = %d, "destination is not a function ARN: skipped");
            }
            parts.map(|p| (d, p))
        });
        let record = dest
            .as_ref()
            .map(|_| self.record(ev, condition, invokes, response));
        {
            let now = (self.clock)();
            let mut db = self.db();
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if tx.execute("DELETE FROM async_events WHERE id = ?1", [ev.id])? == 0 {
                // Forgotten meanwhile (its function was deleted).
                return Ok(());
            }
            if let (Some((arn, (name, qualifier))), Some(record)) = (&dest, &record) {
                tx.execute(
                    "INSERT INTO async_events (request_id, function, qualifier, invoked_arn, payload, enqueued_ms, next_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                    params![crate::util::uuid4(), name, qualifier, arn, record, now],
                )?;
            }
            tx.commit()?;
        }
        tracing::debug!(request = %ev.request_id, condition = condition.as_str(), "async event completed");
        if dest.is_some() {
            self.notify();
        }
        Ok(())
    }
}

struct EffectiveConfig {
    max_retry: i64,
    max_age: i64,
    on_success: Option<String>,
    on_failure: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    /// A target that answers from a script and records what it ran.
    struct Scripted {
        answers: Mutex<Vec<Delivery>>,
        runs: Mutex<Vec<(String, String, Vec<u8>)>>,
    }

    impl Scripted {
        fn new(mut answers: Vec<Delivery>) -> Scripted {
            answers.reverse();
            Scripted {
                answers: Mutex::new(answers),
                runs: Mutex::new(Vec::new()),
            }
        }
        fn runs(&self) -> Vec<(String, String, Vec<u8>)> {
            self.runs.lock().unwrap().clone()
        }
    }

    impl AsyncTarget for Scripted {
        fn run(&self, inv: &Invocation<'_>) -> Delivery {
            self.runs.lock().unwrap().push((
                inv.function.to_string(),
                inv.request_id.to_string(),
                inv.payload.to_vec(),
            ));
            self.answers
                .lock()
                .unwrap()
                .pop()
                .unwrap_or(Delivery::Success {
                    executed_version: "$LATEST".into(),
                    body: b"null".to_vec(),
                })
        }
    }

    fn fail() -> Delivery {
        Delivery::FunctionError {
            executed_version: "$LATEST".into(),
            body: br#"{"errorType":"ValueError","errorMessage":"boom"}"#.to_vec(),
        }
    }

    fn queue(dir: &Path, clock: Arc<AtomicI64>) -> Arc<AsyncQueue> {
        AsyncQueue::open_with_clock(
            dir,
            Settings {
                retry_delay: Duration::from_secs(60),
                workers: 1,
                arn_prefix: "arn:aws:lambda:us-east-1:123456789012:function:".into(),
            },
            Box::new(move || clock.load(Ordering::SeqCst)),
        )
        .unwrap()
    }

    fn event(function: &str, id: &str) -> NewEvent {
        NewEvent {
            request_id: id.into(),
            function: function.into(),
            qualifier: None,
            invoked_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function}"),
            payload: br#"{"n":1}"#.to_vec(),
        }
    }

    fn config(function: &str) -> EventInvokeConfig {
        EventInvokeConfig {
            function: function.into(),
            qualifier: "$LATEST".into(),
            max_retry: None,
            max_age: None,
            on_success: Some("arn:aws:lambda:us-east-1:123456789012:function:ok".into()),
            on_failure: Some("arn:aws:lambda:us-east-1:123456789012:function:bad".into()),
            last_modified: 1.5,
        }
    }

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn retries_follow_lambdas_schedule_then_go_to_on_failure() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicI64::new(T0));
        let q = queue(d.path(), clock.clone());
        q.put_config(&config("f")).unwrap();
        q.enqueue(&event("f", "req-1")).unwrap();
        let t = Scripted::new(vec![fail(), fail(), fail()]);
        assert_eq!(q.run_due(&t).unwrap(), 1);
        // The first retry comes one delay later, the second two delays after that.
        clock.store(T0 + 59_999, Ordering::SeqCst);
        assert_eq!(q.run_due(&t).unwrap(), 0);
        clock.store(T0 + 60_000, Ordering::SeqCst);
        assert_eq!(q.run_due(&t).unwrap(), 1);
        clock.store(T0 + 60_000 + 119_999, Ordering::SeqCst);
        assert_eq!(q.run_due(&t).unwrap(), 0);
        clock.store(T0 + 180_000, Ordering::SeqCst);
        // The third attempt fails: the record goes to the on-failure function, which runs next.
        assert_eq!(q.run_due(&t).unwrap(), 2);
        let runs = t.runs();
        assert_eq!(runs.len(), 4);
        assert!(runs[..3].iter().all(|r| r.0 == "f" && r.1 == "req-1"));
        assert_eq!(runs[3].0, "bad");
        let rec: Value = serde_json::from_slice(&runs[3].2).unwrap();
        assert_eq!(rec["version"], "1.0");
        assert_eq!(rec["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(rec["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(rec["requestContext"]["requestId"], "req-1");
        assert_eq!(
            rec["requestContext"]["functionArn"],
            "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST"
        );
        assert_eq!(rec["requestPayload"], json!({"n": 1}));
        assert_eq!(rec["responseContext"]["functionError"], "Unhandled");
        assert_eq!(rec["responsePayload"]["errorMessage"], "boom");
        assert_eq!(rec["timestamp"], "2023-11-14T22:16:20.000Z");
        assert_eq!(q.pending().unwrap(), 0);
    }

    #[test]
    fn max_retry_zero_and_success_destination() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicI64::new(T0));
        let q = queue(d.path(), clock.clone());
        let mut c = config("f");
        c.max_retry = Some(0);
        q.put_config(&c).unwrap();
        q.enqueue(&event("f", "a")).unwrap();
        let t = Scripted::new(vec![fail()]);
        assert_eq!(q.run_due(&t).unwrap(), 2);
        let runs = t.runs();
        assert_eq!(runs[1].0, "bad");
        q.enqueue(&event("f", "b")).unwrap();
        let t = Scripted::new(vec![Delivery::Success {
            executed_version: "$LATEST".into(),
            body: b"\"hi\"".to_vec(),
        }]);
        assert_eq!(q.run_due(&t).unwrap(), 2);
        let rec: Value = serde_json::from_slice(&t.runs()[1].2).unwrap();
        assert_eq!(t.runs()[1].0, "ok");
        assert_eq!(rec["requestContext"]["condition"], "Success");
        assert_eq!(rec["responsePayload"], "hi");
        assert!(rec["responseContext"].get("functionError").is_none());
    }

    #[test]
    fn throttles_do_not_count_and_old_events_expire() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicI64::new(T0));
        let q = queue(d.path(), clock.clone());
        let mut c = config("f");
        c.max_age = Some(60);
        q.put_config(&c).unwrap();
        q.enqueue(&event("f", "old")).unwrap();
        let t = Scripted::new(
            (0..10)
                .map(|_| Delivery::Throttled("Rate Exceeded.".into()))
                .collect(),
        );
        // 1 s, 2 s, 4 s, ... apart; never counted as attempts.
        let mut at = T0;
        let mut tries = 0;
        while at < T0 + 60_000 {
            clock.store(at, Ordering::SeqCst);
            tries += q.run_due(&t).unwrap();
            at += 500;
        }
        assert_eq!(tries, 6, "tries at 0, 1, 3, 7, 15, 31 s");
        // At the maximum age the event goes to the on-failure destination, never run.
        clock.store(T0 + 60_000, Ordering::SeqCst);
        assert_eq!(q.run_due(&t).unwrap(), 2);
        let runs = t.runs();
        assert_eq!(runs.len(), 7);
        let rec: Value = serde_json::from_slice(&runs[6].2).unwrap();
        assert_eq!(rec["requestContext"]["condition"], "EventAgeExceeded");
        assert_eq!(rec["requestContext"]["approximateInvokeCount"], 0);
        assert!(rec.get("responseContext").is_none());
        assert_eq!(throttle_backoff(30), THROTTLE_BACKOFF_MAX);
    }

    #[test]
    fn retry_waits_are_capped_at_the_maximum_age() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicI64::new(T0));
        let q = queue(d.path(), clock.clone());
        let mut c = config("f");
        c.max_age = Some(90);
        q.put_config(&c).unwrap();
        q.enqueue(&event("f", "e")).unwrap();
        let t = Scripted::new(vec![fail(), fail()]);
        assert_eq!(q.run_due(&t).unwrap(), 1);
        clock.store(T0 + 60_000, Ordering::SeqCst);
        assert_eq!(q.run_due(&t).unwrap(), 1);
        // The second retry would be at 180 s; the event expires at 90 s instead.
        clock.store(T0 + 90_000, Ordering::SeqCst);
        assert_eq!(q.run_due(&t).unwrap(), 2);
        let rec: Value = serde_json::from_slice(&t.runs()[2].2).unwrap();
        assert_eq!(rec["requestContext"]["condition"], "EventAgeExceeded");
        assert_eq!(rec["requestContext"]["approximateInvokeCount"], 2);
        assert_eq!(rec["responseContext"]["functionError"], "Unhandled");
    }

    #[test]
    fn events_and_configs_survive_reopen_and_are_forgotten_with_their_function() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicI64::new(T0));
        let q = queue(d.path(), clock.clone());
        q.put_config(&config("f")).unwrap();
        q.enqueue(&event("f", "1")).unwrap();
        q.enqueue(&event("g", "2")).unwrap();
        assert!(
            q.enqueue(&event("g", "2")).is_err(),
            "request ids are unique"
        );
        drop(q);
        let q = queue(d.path(), clock.clone());
        assert_eq!(q.pending().unwrap(), 2);
        assert_eq!(q.get_config("f", "$LATEST").unwrap(), Some(config("f")));
        let u = q
            .update_config("f", "$LATEST", |c| c.max_retry = Some(1))
            .unwrap()
            .unwrap();
        assert_eq!(u.max_retry, Some(1));
        assert_eq!(u.on_success, config("f").on_success);
        assert!(q.update_config("f", "v1", |_| {}).unwrap().is_none());
        q.forget("f", None).unwrap();
        assert_eq!(q.pending().unwrap(), 1);
        assert!(q.get_config("f", "$LATEST").unwrap().is_none());
        // A gone function's event is dropped without a destination.
        let t = Scripted::new(vec![Delivery::Gone("Function not found".into())]);
        assert_eq!(q.run_due(&t).unwrap(), 1);
        assert_eq!(q.pending().unwrap(), 0);
    }

    /// Blocks each run until released, then fails (as an env killed by the shutdown does).
    struct Blocking {
        started: AtomicBool,
        release: Arc<AtomicBool>,
    }

    impl AsyncTarget for Blocking {
        fn run(&self, _: &Invocation<'_>) -> Delivery {
            self.started.store(true, Ordering::SeqCst);
            while !self.release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            fail()
        }
    }

    #[test]
    fn shutdown_aborts_after_the_grace_and_keeps_the_event() {
        let d = tempfile::tempdir().unwrap();
        let q = AsyncQueue::open(
            d.path(),
            Settings {
                retry_delay: Duration::from_secs(60),
                workers: 3,
                arn_prefix: String::new(),
            },
        )
        .unwrap();
        let release = Arc::new(AtomicBool::new(false));
        let target = Arc::new(Blocking {
            started: AtomicBool::new(false),
            release: release.clone(),
        });
        q.start(target.clone(), Arc::new(AtomicBool::new(false)));
        q.enqueue(&event("f", "x")).unwrap();
        let t = Instant::now();
        while !target.started.load(Ordering::SeqCst) {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(10));
        }
        let t = Instant::now();
        q.shutdown(Duration::from_millis(300), &|| {
            release.store(true, Ordering::SeqCst)
        });
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(t.elapsed() < Duration::from_secs(5));
        // The failure came from the shutdown: not an attempt, the event stays for the next start.
        let ev = q.load(1).unwrap().unwrap();
        assert_eq!((ev.attempts, ev.invokes), (0, 0));
        assert_eq!(q.pending().unwrap(), 1);
    }

    #[test]
    fn idle_workers_stop_at_shutdown() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicI64::new(T0));
        let q = queue(d.path(), clock);
        q.start(
            Arc::new(Scripted::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        q.shutdown(Duration::from_secs(30), &|| panic!("nothing to abort"));
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn arns_and_timestamps() {
        assert_eq!(
            function_arn_parts("arn:aws:lambda:us-east-1:123456789012:function:f:prod"),
            Some(("f".into(), Some("prod".into())))
        );
        assert_eq!(
            function_arn_parts("arn:aws:lambda:us-east-1:123456789012:function:f"),
            Some(("f".into(), None))
        );
        assert_eq!(
            function_arn_parts("arn:aws:sqs:us-east-1:123456789012:q"),
            None
        );
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            retry_delay(Duration::from_secs(60), 2),
            Duration::from_secs(120)
        );
    }
}
