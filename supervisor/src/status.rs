//! `lamina logs` (like `aws logs tail`) and `lamina status` (one screen: functions, envs by
//! state, memory, recent errors). Both read the state directory directly (they run as root on
//! the appliance); `status` also reads the running server's `/metrics`.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::logs::{LogStore, Pattern};

/// `lamina logs`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Function name (its log group is its LoggingConfig.LogGroup, by default /aws/lambda/NAME).
    pub function: String,
    /// Keep printing new events as they are written.
    #[arg(long, short)]
    pub follow: bool,
    /// How far back to start: a duration like 30s, 10m, 2h, 1d.
    #[arg(long, default_value = "10m", value_parser = parse_since)]
    pub since: i64,
    /// Print only events matching this filter pattern (terms, "phrases", ?any, -exclude).
    #[arg(long)]
    pub filter: Option<String>,
    /// State directory of `lamina serve`.
    #[arg(long, default_value = "/var/lib/lamina", value_name = "DIR")]
    pub state_dir: PathBuf,
}

/// `lamina status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Address of the running `lamina serve`.
    #[arg(long, default_value = "127.0.0.1:9000", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// State directory of `lamina serve`.
    #[arg(long, default_value = "/var/lib/lamina", value_name = "DIR")]
    pub state_dir: PathBuf,
}

fn parse_since(s: &str) -> Result<i64, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 10m"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" | "" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => {
            return Err(format!(
                "'{s}' is not a duration like 10m (units s, m, h, d, w)"
            ))
        }
    };
    Ok(n.saturating_mul(ms))
}

/// The functions table, read-only: (name, $LATEST configuration, reserved concurrency).
fn functions(state: &Path) -> Vec<(String, Value, Option<i64>)> {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        state.join("lamina.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return Vec::new();
    };
    let Ok(mut stmt) = db.prepare("SELECT name, config, reserved FROM functions ORDER BY name")
    else {
        return Vec::new();
    };
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })
    .map(|rows| {
        rows.flatten()
            .map(|(n, c, r)| (n, serde_json::from_str(&c).unwrap_or(Value::Null), r))
            .collect()
    })
    .unwrap_or_default()
}

fn format_ms(ms: i64) -> String {
    let (y, m, d) = crate::util::civil_from_days(ms.div_euclid(86_400_000));
    let rem = ms.rem_euclid(86_400_000);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        (rem / 60_000) % 60,
        (rem / 1000) % 60,
        rem % 1000
    )
}

pub fn logs(args: LogsArgs) -> u8 {
    let group = functions(&args.state_dir)
        .into_iter()
        .find(|(n, _, _)| *n == args.function)
        .and_then(|(_, c, _)| c["LoggingConfig"]["LogGroup"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("/aws/lambda/{}", args.function));
    let pattern = match Pattern::parse(args.filter.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lamina: --filter: {e}");
            return 2;
        }
    };
    let store = LogStore::new(&args.state_dir);
    let mut since = crate::util::now_ms() - args.since;
    let mut seen: HashSet<String> = HashSet::new();
    let stdout = std::io::stdout();
    loop {
        let Some((events, _)) = store.filter(&group, None, None, Some(since), None, &pattern)
        else {
            eprintln!(
                "lamina: no log group {group} in {}",
                args.state_dir.display()
            );
            return 1;
        };
        let mut out = stdout.lock();
        let mut fresh = HashSet::new();
        for e in &events {
            fresh.insert(e.id.clone());
            if seen.contains(&e.id) {
                continue;
            }
            if write!(out, "{} {} {}", format_ms(e.timestamp), e.stream, e.message).is_err() {
                return 0;
            }
        }
        let _ = out.flush();
        if !args.follow {
            return 0;
        }
        // Next round: from the last event's millisecond, skipping those already printed.
        if let Some(last) = events.last() {
            since = last.timestamp;
            seen = events
                .iter()
                .filter(|e| e.timestamp == last.timestamp)
                .map(|e| e.id.clone())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// GET /metrics from the server (plain HTTP/1.1 on loopback).
fn fetch_metrics(addr: std::net::SocketAddr) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Samples of a metric: labels text -> value.
fn samples(metrics: &str, name: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, v) = l.rsplit_once(' ')?;
            let (n, labels) = match key.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (key, ""),
            };
            (n == name).then(|| (labels.to_string(), v.parse().unwrap_or(0.0)))
        })
        .collect()
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split("\",").find_map(|kv| {
        let (k, v) = kv.split_once("=\"")?;
        (k == key).then(|| v.trim_end_matches('"'))
    })
}

pub fn status(args: StatusArgs) -> u8 {
    let fns = functions(&args.state_dir);
    let metrics = fetch_metrics(args.listen);
    let mut out = String::new();
    match &metrics {
        Some(m) => {
            let envs: BTreeMap<String, f64> = samples(m, "lamina_envs")
                .into_iter()
                .filter_map(|(l, v)| Some((label(&l, "state")?.to_string(), v)))
                .collect();
            let g = |n: &str| samples(m, n).first().map(|s| s.1).unwrap_or(0.0);
            out.push_str(&format!(
                "lamina serve at {}: envs starting {} · busy {} · frozen {} · idle {}\nmemory: {:.0} MiB of a {:.0} MiB budget committed · env start failures {}\n",
                args.listen,
                envs.get("starting").copied().unwrap_or(0.0),
                envs.get("busy").copied().unwrap_or(0.0),
                envs.get("frozen").copied().unwrap_or(0.0),
                envs.get("idle").copied().unwrap_or(0.0),
                g("lamina_memory_committed_bytes") / 1048576.0,
                g("lamina_memory_budget_bytes") / 1048576.0,
                g("lamina_env_start_failures_total"),
            ));
        }
        None => out.push_str(&format!(
            "lamina serve at {}: not reachable (showing stored state only)\n",
            args.listen
        )),
    }
    let per = |name: &str| -> BTreeMap<String, f64> {
        let mut acc = BTreeMap::new();
        if let Some(m) = &metrics {
            for (l, v) in samples(m, name) {
                if let Some(f) = label(&l, "function") {
                    *acc.entry(f.to_string()).or_insert(0.0) += v;
                }
            }
        }
        acc
    };
    let (inv, err, thr, run) = (
        per("lamina_invocations_total"),
        per("lamina_errors_total"),
        per("lamina_throttles_total"),
        per("lamina_concurrent_executions"),
    );
    out.push_str(&format!(
        "\n{:<28} {:<16} {:>7} {:>9} {:>11} {:>7} {:>9} {:>8}\n",
        "FUNCTION",
        "RUNTIME",
        "MEMORY",
        "RESERVED",
        "INVOCATIONS",
        "ERRORS",
        "THROTTLES",
        "RUNNING"
    ));
    for (name, c, reserved) in &fns {
        let n = |m: &BTreeMap<String, f64>| m.get(name).copied().unwrap_or(0.0);
        out.push_str(&format!(
            "{:<28} {:<16} {:>5}MB {:>9} {:>11} {:>7} {:>9} {:>8}\n",
            name,
            c["Runtime"].as_str().unwrap_or("-"),
            c["MemorySize"].as_i64().unwrap_or(0),
            reserved
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
            n(&inv),
            n(&err),
            n(&thr),
            n(&run)
        ));
    }
    if fns.is_empty() {
        out.push_str("(no functions)\n");
    }
    out.push_str("\nRecent errors:\n");
    let errors = std::fs::read_to_string(args.state_dir.join("errors.log")).unwrap_or_default();
    let recent: Vec<&str> = errors.lines().rev().take(10).collect();
    if recent.is_empty() {
        out.push_str("(none)\n");
    }
    for l in recent.iter().rev() {
        out.push_str(&l.replace('\t', "  "));
        out.push('\n');
    }
    print!("{out}");
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_metric_samples() {
        assert_eq!(parse_since("10m"), Ok(600_000));
        assert_eq!(parse_since("2h"), Ok(7_200_000));
        assert_eq!(parse_since("30s"), Ok(30_000));
        assert!(parse_since("x").is_err());
        assert!(parse_since("5y").is_err());
        let m = "# HELP x\nlamina_envs{state=\"busy\"} 2\nlamina_invocations_total{function=\"f\",version=\"1\"} 7\n";
        assert_eq!(
            samples(m, "lamina_envs"),
            vec![("state=\"busy\"".to_string(), 2.0)]
        );
        let s = samples(m, "lamina_invocations_total");
        assert_eq!(label(&s[0].0, "function"), Some("f"));
        assert_eq!(label(&s[0].0, "version"), Some("1"));
        assert_eq!(format_ms(86_401_500), "1970-01-02T00:00:01.500Z");
    }
}
