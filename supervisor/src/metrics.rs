//! Counters the scheduler keeps per function version and for the host, rendered at `/metrics`
//! in Prometheus' text format (0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Histogram bucket bounds for durations, in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, b) in BUCKETS.iter().enumerate() {
            let n = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Clone, Default)]
struct FunctionStats {
    invocations: u64,
    errors: u64,
    throttles: u64,
    cold_starts: u64,
    duration: Histogram,
    init: Histogram,
    max_memory_bytes: u64,
}

/// What an async queue reports per function version: (depth, age of the oldest event in s).
pub type QueueStats = BTreeMap<(String, String), (u64, f64)>;

#[derive(Debug, Default)]
pub struct Metrics {
    functions: Mutex<BTreeMap<(String, String), FunctionStats>>,
    pub env_start_failures: AtomicU64,
    /// Idle envs destroyed to make room in the memory budget.
    pub evictions: AtomicU64,
    pub starting: AtomicI64,
    pub busy: AtomicI64,
    /// Memory limits of live envs, in bytes.
    pub memory_committed: AtomicU64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One invocation, as the scheduler saw it.
pub struct Invocation<'a> {
    pub function: &'a str,
    pub version: &'a str,
    pub duration_secs: f64,
    pub init_secs: Option<f64>,
    pub error: bool,
    pub memory_bytes: u64,
}

impl Metrics {
    fn with(&self, function: &str, version: &str, f: impl FnOnce(&mut FunctionStats)) {
        let mut m = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        f(m.entry((function.to_string(), version.to_string()))
            .or_default());
    }

    pub fn invocation(&self, i: Invocation<'_>) {
        self.with(i.function, i.version, |s| {
            s.invocations += 1;
            if i.error {
                s.errors += 1;
            }
            s.duration.observe(i.duration_secs);
            if let Some(init) = i.init_secs {
                s.cold_starts += 1;
                s.init.observe(init);
            }
            s.max_memory_bytes = s.max_memory_bytes.max(i.memory_bytes);
        });
    }

    pub fn throttle(&self, function: &str, version: &str) {
        self.with(function, version, |s| s.throttles += 1);
    }

    /// Forgets a deleted function.
    pub fn forget(&self, function: &str) {
        let mut m = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|(f, _), _| f != function);
    }

    /// Renders everything in Prometheus' text format. `running` gives in-flight invocations
    /// per function; `frozen` the idle (frozen) envs; `queues` the async queues.
    pub fn render(
        &self,
        running: &BTreeMap<String, u64>,
        frozen: u64,
        budget_bytes: u64,
        queues: &QueueStats,
    ) -> String {
        let m = self.functions.lock().map(|m| m.clone()).unwrap_or_default();
        let mut out = String::new();
        type Counter = (&'static str, &'static str, fn(&FunctionStats) -> u64);
        let counters: [Counter; 4] = [
            ("lamina_invocations_total", "Invocations.", |s| {
                s.invocations
            }),
            (
                "lamina_errors_total",
                "Invocations that ended in a function error.",
                |s| s.errors,
            ),
            (
                "lamina_throttles_total",
                "Invocations refused by concurrency limits.",
                |s| s.throttles,
            ),
            (
                "lamina_cold_starts_total",
                "Invocations that started an env.",
                |s| s.cold_starts,
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((f, v), s) in &m {
                let _ = writeln!(
                    out,
                    "{name}{{function=\"{}\",version=\"{}\"}} {}",
                    escape(f),
                    escape(v),
                    get(s)
                );
            }
        }
        let _ = writeln!(out, "# HELP lamina_duration_seconds Invocation duration.\n# TYPE lamina_duration_seconds histogram");
        for ((f, v), s) in &m {
            s.duration.render(
                &mut out,
                "lamina_duration_seconds",
                &format!("function=\"{}\",version=\"{}\"", escape(f), escape(v)),
            );
        }
        let _ = writeln!(out, "# HELP lamina_init_duration_seconds Init phase duration of cold starts.\n# TYPE lamina_init_duration_seconds histogram");
        for ((f, v), s) in &m {
            if s.init.count > 0 {
                s.init.render(
                    &mut out,
                    "lamina_init_duration_seconds",
                    &format!("function=\"{}\",version=\"{}\"", escape(f), escape(v)),
                );
            }
        }
        let _ = writeln!(out, "# HELP lamina_max_memory_used_bytes Largest peak memory of an invocation.\n# TYPE lamina_max_memory_used_bytes gauge");
        for ((f, v), s) in &m {
            let _ = writeln!(
                out,
                "lamina_max_memory_used_bytes{{function=\"{}\",version=\"{}\"}} {}",
                escape(f),
                escape(v),
                s.max_memory_bytes
            );
        }
        let _ = writeln!(out, "# HELP lamina_concurrent_executions Invocations in flight.\n# TYPE lamina_concurrent_executions gauge");
        for (f, n) in running {
            let _ = writeln!(
                out,
                "lamina_concurrent_executions{{function=\"{}\"}} {n}",
                escape(f)
            );
        }
        let _ = writeln!(out, "# HELP lamina_async_queue_depth Asynchronous events waiting.\n# TYPE lamina_async_queue_depth gauge");
        for ((f, v), (depth, _)) in queues {
            let _ = writeln!(
                out,
                "lamina_async_queue_depth{{function=\"{}\",version=\"{}\"}} {depth}",
                escape(f),
                escape(v)
            );
        }
        let _ = writeln!(out, "# HELP lamina_async_oldest_event_age_seconds Age of the oldest waiting event.\n# TYPE lamina_async_oldest_event_age_seconds gauge");
        for ((f, v), (_, age)) in queues {
            let _ = writeln!(
                out,
                "lamina_async_oldest_event_age_seconds{{function=\"{}\",version=\"{}\"}} {age}",
                escape(f),
                escape(v)
            );
        }
        let starting = self.starting.load(Ordering::Relaxed).max(0);
        let busy = self.busy.load(Ordering::Relaxed).max(0);
        let _ = writeln!(out, "# HELP lamina_envs Execution environments by state (idle envs are kept frozen).\n# TYPE lamina_envs gauge");
        for (state, n) in [
            ("starting", starting as u64),
            ("idle", 0),
            ("frozen", frozen),
            ("busy", busy as u64),
        ] {
            let _ = writeln!(out, "lamina_envs{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP lamina_memory_budget_bytes Memory the host gives envs.\n# TYPE lamina_memory_budget_bytes gauge\nlamina_memory_budget_bytes {budget_bytes}");
        let _ = writeln!(out, "# HELP lamina_memory_committed_bytes Memory limits of live envs.\n# TYPE lamina_memory_committed_bytes gauge\nlamina_memory_committed_bytes {}", self.memory_committed.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP lamina_env_evictions_total Idle envs destroyed to make room in the memory budget.\n# TYPE lamina_env_evictions_total counter\nlamina_env_evictions_total {}", self.evictions.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP lamina_env_start_failures_total Envs that failed to start (lamina's side, not the function's).\n# TYPE lamina_env_start_failures_total counter\nlamina_env_start_failures_total {}", self.env_start_failures.load(Ordering::Relaxed));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.invocation(Invocation {
            function: "f",
            version: "$LATEST",
            duration_secs: 0.003,
            init_secs: Some(0.05),
            error: false,
            memory_bytes: 40 << 20,
        });
        m.invocation(Invocation {
            function: "f",
            version: "$LATEST",
            duration_secs: 2.0,
            init_secs: None,
            error: true,
            memory_bytes: 10 << 20,
        });
        m.throttle("f", "$LATEST");
        let text = m.render(&BTreeMap::new(), 3, 1 << 30, &QueueStats::new());
        assert!(text.contains("lamina_invocations_total{function=\"f\",version=\"$LATEST\"} 2"));
        assert!(text.contains("lamina_errors_total{function=\"f\",version=\"$LATEST\"} 1"));
        assert!(text.contains("lamina_throttles_total{function=\"f\",version=\"$LATEST\"} 1"));
        assert!(text.contains(
            "lamina_duration_seconds_bucket{function=\"f\",version=\"$LATEST\",le=\"0.005\"} 1"
        ));
        assert!(
            text.contains("lamina_duration_seconds_count{function=\"f\",version=\"$LATEST\"} 2")
        );
        assert!(text
            .contains("lamina_max_memory_used_bytes{function=\"f\",version=\"$LATEST\"} 41943040"));
        assert!(text.contains("lamina_envs{state=\"frozen\"} 3"));
        m.forget("f");
        assert!(!m
            .render(&BTreeMap::new(), 0, 0, &QueueStats::new())
            .contains("function=\"f\""));
    }
}
