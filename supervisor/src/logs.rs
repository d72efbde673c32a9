//! The log store: CloudWatch-style log groups and streams, as files under `<state>/logs/`.
//!
//! A group is a directory (`/aws/lambda/NAME` is `logs/aws/lambda/NAME/`) holding a `.group`
//! file (its creation time and retention); a stream is a file `<stream name>.log` below it
//! (stream names contain `/`, e.g. `2026/11/27/[$LATEST]<hex>`), one event per line:
//! `<UTC timestamp>\t<message>`. Files are appended by the scheduler as envs write and read
//! here by the CloudWatch Logs API, `lamina logs` and retention.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// CloudWatch's largest event: 256 KiB less its 26-byte overhead.
pub const MAX_EVENT_BYTES: usize = 262_144 - 26;

/// A log event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub stream: String,
    pub timestamp: i64,
    pub message: String,
    /// Stable id: the stream's position of the event.
    pub id: String,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub creation_ms: i64,
    pub retention_days: Option<u64>,
    pub stored_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub name: String,
    pub creation_ms: i64,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub stored_bytes: u64,
}

pub struct LogStore {
    root: PathBuf,
}

fn mtime_ms(m: &fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses one stored line into (timestamp, message).
fn parse_line(line: &str) -> Option<(i64, &str)> {
    let (ts, msg) = line.split_once('\t')?;
    Some((crate::util::parse_utc_timestamp(ts)?, msg))
}

/// A CloudWatch filter pattern of terms: every term must appear; `"quoted phrases"`; `?a ?b`
/// matches either; `-term` excludes. JSON and space-delimited patterns are refused.
#[derive(Debug, Clone, Default)]
pub struct Pattern {
    all: Vec<String>,
    any: Vec<String>,
    none: Vec<String>,
}

impl Pattern {
    pub fn parse(p: &str) -> Result<Pattern, String> {
        let p = p.trim();
        if p.starts_with('{') || p.starts_with('[') {
            return Err("lamina supports term filter patterns (terms, \"phrases\", ?any, -exclude), not JSON or space-delimited patterns".into());
        }
        let mut out = Pattern::default();
        let mut chars = p.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let Some(&c) = chars.peek() else { break };
            let kind = match c {
                '?' | '-' => {
                    chars.next();
                    c
                }
                _ => ' ',
            };
            let mut term = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    term.push(c);
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    term.push(c);
                    chars.next();
                }
            }
            if term.is_empty() {
                continue;
            }
            match kind {
                '?' => out.any.push(term),
                '-' => out.none.push(term),
                _ => out.all.push(term),
            }
        }
        Ok(out)
    }

    pub fn matches(&self, msg: &str) -> bool {
        self.all.iter().all(|t| msg.contains(t.as_str()))
            && (self.any.is_empty() || self.any.iter().any(|t| msg.contains(t.as_str())))
            && !self.none.iter().any(|t| msg.contains(t.as_str()))
    }
}

impl LogStore {
    pub fn new(state_dir: &Path) -> LogStore {
        LogStore {
            root: state_dir.join("logs"),
        }
    }

    /// The directory of a group (None for names that could leave the store).
    pub fn group_dir(&self, group: &str) -> Option<PathBuf> {
        let rel = group.trim_start_matches('/');
        if rel.is_empty()
            || rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return None;
        }
        Some(self.root.join(rel))
    }

    /// Creates a group if it does not exist; returns its directory.
    pub fn ensure_group(&self, group: &str) -> std::io::Result<PathBuf> {
        let dir = self
            .group_dir(group)
            .ok_or_else(|| std::io::Error::other(format!("bad log group name {group}")))?;
        let marker = dir.join(".group");
        if !marker.exists() {
            fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!(".group.tmp-{}", crate::util::random_hex(4)));
            let mut f = fs::File::create(&tmp)?;
            f.write_all(
                json!({"name": group, "creationTime": crate::util::now_ms()})
                    .to_string()
                    .as_bytes(),
            )?;
            f.sync_all()?;
            // A concurrent creator may have won: keep its marker.
            if fs::hard_link(&tmp, &marker).is_err() && !marker.exists() {
                fs::rename(&tmp, &marker)?;
            }
            let _ = fs::remove_file(&tmp);
        }
        Ok(dir)
    }

    fn read_marker(dir: &Path) -> Option<Value> {
        serde_json::from_slice(&fs::read(dir.join(".group")).ok()?).ok()
    }

    /// Sets (or clears) a group's retention in days.
    pub fn set_retention(&self, group: &str, days: Option<u64>) -> std::io::Result<bool> {
        let Some(dir) = self.group_dir(group) else {
            return Ok(false);
        };
        let Some(mut m) = LogStore::read_marker(&dir) else {
            return Ok(false);
        };
        match days {
            Some(d) => m["retentionInDays"] = json!(d),
            None => {
                if let Some(o) = m.as_object_mut() {
                    o.remove("retentionInDays");
                }
            }
        }
        let tmp = dir.join(format!(".group.tmp-{}", crate::util::random_hex(4)));
        fs::write(&tmp, m.to_string())?;
        fs::rename(&tmp, dir.join(".group"))?;
        Ok(true)
    }

    fn walk_groups(dir: &Path, out: &mut Vec<PathBuf>) {
        if dir.join(".group").is_file() {
            out.push(dir.to_path_buf());
            return;
        }
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    LogStore::walk_groups(&e.path(), out);
                }
            }
        }
    }

    fn walk_streams(base: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => LogStore::walk_streams(base, &p, out),
                    Ok(t) if t.is_file() => {
                        if let Some(rel) = p
                            .strip_prefix(base)
                            .ok()
                            .and_then(|r| r.to_str())
                            .and_then(|r| r.strip_suffix(".log"))
                        {
                            out.push((rel.to_string(), p.clone()));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Groups whose name starts with `prefix`, by name.
    pub fn groups(&self, prefix: &str) -> Vec<Group> {
        let mut dirs = Vec::new();
        LogStore::walk_groups(&self.root, &mut dirs);
        let mut out: Vec<Group> = dirs
            .into_iter()
            .filter_map(|d| {
                let m = LogStore::read_marker(&d)?;
                let name = m["name"].as_str()?.to_string();
                if !name.starts_with(prefix) {
                    return None;
                }
                let mut streams = Vec::new();
                LogStore::walk_streams(&d, &d, &mut streams);
                let stored_bytes = streams
                    .iter()
                    .filter_map(|(_, p)| fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum();
                Some(Group {
                    name,
                    creation_ms: m["creationTime"].as_i64().unwrap_or(0),
                    retention_days: m["retentionInDays"].as_u64(),
                    stored_bytes,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Streams of a group (None: no such group), by name.
    pub fn streams(&self, group: &str) -> Option<Vec<Stream>> {
        let dir = self.group_dir(group)?;
        LogStore::read_marker(&dir)?;
        let mut files = Vec::new();
        LogStore::walk_streams(&dir, &dir, &mut files);
        let mut out: Vec<Stream> = files
            .into_iter()
            .filter_map(|(name, path)| {
                let meta = fs::metadata(&path).ok()?;
                let text = fs::read_to_string(&path).unwrap_or_default();
                let first = text.lines().find_map(|l| parse_line(l).map(|e| e.0));
                let last = text.lines().rev().find_map(|l| parse_line(l).map(|e| e.0));
                Some(Stream {
                    name,
                    creation_ms: first.unwrap_or_else(|| mtime_ms(&meta)),
                    first_ms: first,
                    last_ms: last,
                    stored_bytes: meta.len(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Some(out)
    }

    /// The events of one stream, oldest first (None: no such stream).
    pub fn read_stream(&self, group: &str, stream: &str) -> Option<Vec<Event>> {
        let dir = self.group_dir(group)?;
        if stream
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return None;
        }
        let text = fs::read(dir.join(format!("{stream}.log"))).ok()?;
        let text = String::from_utf8_lossy(&text);
        let mut out = Vec::new();
        let mut offset = 0usize;
        for line in text.split_inclusive('\n') {
            let here = offset;
            offset += line.len();
            let Some(l) = line.strip_suffix('\n') else {
                // A line still being written.
                break;
            };
            if let Some((ts, msg)) = parse_line(l) {
                out.push(Event {
                    stream: stream.to_string(),
                    timestamp: ts,
                    message: format!("{msg}\n"),
                    id: format!("{ts:020}{here:016}"),
                });
            }
        }
        Some(out)
    }

    /// Events of a group in `[start, end)` matching `pattern`, from the named streams or those
    /// with `prefix`, ordered by time (None: no such group).
    pub fn filter(
        &self,
        group: &str,
        names: Option<&[String]>,
        prefix: Option<&str>,
        start: Option<i64>,
        end: Option<i64>,
        pattern: &Pattern,
    ) -> Option<(Vec<Event>, Vec<String>)> {
        let streams = self.streams(group)?;
        let mut searched = Vec::new();
        let mut events = Vec::new();
        for s in streams {
            if names.is_some_and(|n| !n.contains(&s.name))
                || prefix.is_some_and(|p| !s.name.starts_with(p))
            {
                continue;
            }
            if start.is_some_and(|st| s.last_ms.is_some_and(|l| l < st)) {
                continue;
            }
            for e in self.read_stream(group, &s.name).unwrap_or_default() {
                if start.is_some_and(|st| e.timestamp < st)
                    || end.is_some_and(|en| e.timestamp >= en)
                {
                    continue;
                }
                if pattern.matches(&e.message) {
                    events.push(e);
                }
            }
            searched.push(s.name);
        }
        events
            .sort_by(|a, b| (a.timestamp, &a.stream, &a.id).cmp(&(b.timestamp, &b.stream, &b.id)));
        Some((events, searched))
    }

    /// Deletes streams older than their group's retention (or `default_days`) and, per group,
    /// the oldest streams while the group holds more than `max_bytes`. Returns streams removed.
    pub fn enforce_retention(&self, default_days: Option<u64>, max_bytes: Option<u64>) -> usize {
        let now = crate::util::now_ms();
        let mut removed = 0;
        for g in self.groups("") {
            let Some(dir) = self.group_dir(&g.name) else {
                continue;
            };
            let mut files = Vec::new();
            LogStore::walk_streams(&dir, &dir, &mut files);
            let mut aged: Vec<(i64, u64, PathBuf)> = files
                .into_iter()
                .filter_map(|(_, p)| {
                    let m = fs::metadata(&p).ok()?;
                    Some((mtime_ms(&m), m.len(), p))
                })
                .collect();
            aged.sort();
            let days = g.retention_days.or(default_days);
            let mut total: u64 = aged.iter().map(|a| a.1).sum();
            for (mtime, len, path) in aged {
                let too_old = days.is_some_and(|d| now - mtime > d as i64 * 86_400_000);
                let too_big = max_bytes.is_some_and(|m| total > m);
                if (too_old || too_big) && fs::remove_file(&path).is_ok() {
                    total -= len;
                    removed += 1;
                    // Empty date directories go too.
                    let mut parent = path.parent().map(Path::to_path_buf);
                    while let Some(p) = parent {
                        if p == dir || fs::remove_dir(&p).is_err() {
                            break;
                        }
                        parent = p.parent().map(Path::to_path_buf);
                    }
                }
            }
        }
        removed
    }
}

/// Splits text into log lines as Lambda does: at newlines, and lines longer than CloudWatch's
/// event limit into several events (each stored with its own newline, within the limit).
pub fn split_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        let mut rest = line;
        while rest.len() > MAX_EVENT_BYTES {
            let (a, b) = rest.split_at(MAX_EVENT_BYTES - 1);
            out.push(a);
            rest = b;
        }
        if !rest.is_empty() {
            out.push(rest);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = Pattern::parse("ERROR \"request id\" -debug").unwrap();
        assert!(p.matches("ERROR for request id 7"));
        assert!(!p.matches("ERROR for request id 7 debug"));
        assert!(!p.matches("ERROR only"));
        let any = Pattern::parse("?timeout ?OOM").unwrap();
        assert!(any.matches("Task timeout") && any.matches("OOM") && !any.matches("fine"));
        assert!(Pattern::parse("").unwrap().matches("anything"));
        assert!(Pattern::parse("{ $.x = 1 }").is_err());
    }

    #[test]
    fn groups_streams_events_retention() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::new(d.path());
        let g = s.ensure_group("/aws/lambda/f").unwrap();
        s.ensure_group("/aws/lambda/f").unwrap();
        fs::create_dir_all(g.join("2026/11/27")).unwrap();
        fs::write(
            g.join("2026/11/27/[$LATEST]aa.log"),
            "2026-11-27T10:00:00.000Z\tSTART one\n2026-11-27T10:00:02.000Z\thello\n",
        )
        .unwrap();
        fs::write(
            g.join("2026/11/27/[1]bb.log"),
            "2026-11-27T10:00:01.000Z\tother\n2026-11-27T10:00:03.000Z\tpartial",
        )
        .unwrap();
        let groups = s.groups("/aws/lambda/");
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].name, "/aws/lambda/f");
        assert!(s.groups("/other").is_empty());
        let streams = s.streams("/aws/lambda/f").unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].name, "2026/11/27/[$LATEST]aa");
        assert_eq!(
            streams[0].last_ms,
            parse_line("2026-11-27T10:00:02.000Z\tx").map(|e| e.0)
        );
        let (events, searched) = s
            .filter("/aws/lambda/f", None, None, None, None, &Pattern::default())
            .unwrap();
        assert_eq!(searched.len(), 2);
        let msgs: Vec<&str> = events.iter().map(|e| e.message.trim_end()).collect();
        assert_eq!(msgs, ["START one", "other", "hello"]);
        assert!(s.read_stream("/aws/lambda/f", "../../x").is_none());
        assert!(s.streams("/aws/lambda/none").is_none());
        assert!(s.group_dir("/aws/../etc").is_none());
        assert!(s.set_retention("/aws/lambda/f", Some(1)).unwrap());
        assert_eq!(s.groups("")[0].retention_days, Some(1));
        // Size cap: keeps the newest stream only.
        assert_eq!(s.enforce_retention(None, Some(100)), 1);
        assert_eq!(s.streams("/aws/lambda/f").unwrap().len(), 1);
    }

    #[test]
    fn streams_older_than_retention_go() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::new(d.path());
        let g = s.ensure_group("/aws/lambda/old").unwrap();
        let old = g.join("old.log");
        let new = g.join("new.log");
        fs::write(&old, "2026-01-01T00:00:00.000Z\tancient\n").unwrap();
        fs::write(&new, "2026-11-27T00:00:00.000Z\tfresh\n").unwrap();
        let ten_days = std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 86_400);
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(ten_days)
            .unwrap();
        // The default keeps both; the group's own 7-day policy removes the old one.
        assert_eq!(s.enforce_retention(Some(30), None), 0);
        s.set_retention("/aws/lambda/old", Some(7)).unwrap();
        assert_eq!(s.enforce_retention(Some(30), None), 1);
        assert!(!old.exists() && new.exists());
    }

    #[test]
    fn long_lines_split() {
        let long = vec![b'x'; MAX_EVENT_BYTES * 2 + 5];
        let mut text = long.clone();
        text.push(b'\n');
        text.extend_from_slice(b"short\n");
        let parts = split_lines(&text);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0].len(), MAX_EVENT_BYTES - 1);
        assert_eq!(parts[2].len(), 8);
        assert_eq!(parts[3], b"short\n");
    }
}
