//! The Telemetry API 2022-07-01 and the legacy Logs API 2020-08-15 (LAMBDA_FACTS §1.8): an
//! extension subscribes to platform events, the function's output lines and the extensions'
//! output lines; init buffers them per subscriber and POSTs them as JSON arrays to the
//! subscriber's HTTP listener inside the env.
//!
//! Buffering follows Lambda: a batch goes out when `maxItems` or `maxBytes` is reached or
//! `timeoutMs` after its oldest event; one batch in flight per subscriber. A subscriber that
//! does not keep up loses events beyond [`QUEUE_CAP`] bytes; the next batch then carries a
//! `platform.logsDropped` event with the counts. Everything is non-blocking, driven by init's
//! event loop; a silent subscriber only ever holds its own bounded queue.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use serde_json::{json, Value};

/// Most bytes of events queued for one subscriber before new ones are dropped.
pub const QUEUE_CAP: usize = 4 * 1024 * 1024;
/// A delivery (connect, send, answer) that takes longer is abandoned, its events dropped.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Platform events of the Init phase kept for subscribers that subscribe during Init.
const BACKLOG_MAX: usize = 1000;
/// Longest output line sent as one event; longer lines are cut.
pub const MAX_LINE: usize = 256 * 1024;

/// Which API a subscription came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Telemetry,
    Logs,
}

/// What an event is, for the subscribers' `types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Platform,
    Function,
    Extension,
}

/// A validated subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub api: Api,
    pub types: Vec<Kind>,
    pub max_items: usize,
    pub max_bytes: usize,
    pub timeout_ms: u64,
    pub port: u16,
    pub path: String,
}

fn range(b: &Value, key: &str, lo: u64, hi: u64, default: u64) -> Result<u64, String> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| (lo..=hi).contains(n))
            .ok_or_else(|| format!("buffering.{key} must be an integer in [{lo}, {hi}]")),
    }
}

/// Validates a `PUT /2022-07-01/telemetry` or `PUT /2020-08-15/logs` body.
pub fn parse_request(api: Api, body: &[u8]) -> Result<Request, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let schemas: &[&str] = match api {
        Api::Telemetry => &["2022-07-01", "2022-12-13", "2025-01-29"],
        Api::Logs => &["2020-08-15", "2021-03-18"],
    };
    match v.get("schemaVersion") {
        Some(Value::String(s)) if schemas.contains(&s.as_str()) => {}
        None if api == Api::Logs => {}
        _ => {
            return Err(format!(
                "schemaVersion must be one of {}",
                schemas.join(", ")
            ))
        }
    }
    let types = v
        .get("types")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
        .ok_or("types must be a non-empty list of platform, function, extension")?;
    let mut kinds = Vec::new();
    for t in types {
        let k = match t.as_str() {
            Some("platform") => Kind::Platform,
            Some("function") => Kind::Function,
            Some("extension") => Kind::Extension,
            _ => return Err(format!("unknown type {t}")),
        };
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let null = Value::Null;
    let b = v.get("buffering").unwrap_or(&null);
    if !b.is_null() && !b.is_object() {
        return Err("buffering must be an object".into());
    }
    let default_items = if api == Api::Telemetry { 1000 } else { 10000 };
    let max_items = range(b, "maxItems", 1000, 10000, default_items)? as usize;
    let max_bytes = range(b, "maxBytes", 262_144, 1_048_576, 262_144)? as usize;
    let timeout_ms = range(b, "timeoutMs", 25, 30_000, 1000)?;
    let d = v
        .get("destination")
        .filter(|d| d.is_object())
        .ok_or("destination is required")?;
    match d.get("protocol").and_then(Value::as_str) {
        Some("HTTP") => {}
        Some("TCP") => return Err("destination.protocol TCP is not supported; use HTTP".into()),
        _ => return Err("destination.protocol must be HTTP".into()),
    }
    let uri = d
        .get("URI")
        .and_then(Value::as_str)
        .ok_or("destination.URI is required")?;
    let (port, path) = parse_uri(uri)?;
    Ok(Request {
        api,
        types: kinds,
        max_items,
        max_bytes,
        timeout_ms,
        port,
        path,
    })
}

/// `http://sandbox.localdomain:<port>/<path>` (or `sandbox`, `localhost`, `127.0.0.1`):
/// subscribers listen inside the env, never elsewhere.
pub fn parse_uri(uri: &str) -> Result<(u16, String), String> {
    let bad =
        || format!("destination.URI {uri:?} must be http://sandbox.localdomain:<port>/<path>");
    let rest = uri.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    if !["sandbox.localdomain", "sandbox", "localhost", "127.0.0.1"]
        .iter()
        .any(|h| host.eq_ignore_ascii_case(h))
    {
        return Err(bad());
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(bad());
    }
    Ok((port, path.to_string()))
}

/// `2022-10-12T00:03:50.123Z`.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// One event, as the Telemetry API and (when it has one) the Logs API render it.
pub struct Event {
    pub kind: Kind,
    pub telemetry: Option<(String, Value)>,
    pub logs: Option<(String, Value)>,
}

impl Event {
    /// A platform event known to both APIs under the same name and record.
    pub fn platform(name: &str, record: Value, legacy: Option<Value>) -> Event {
        Event {
            kind: Kind::Platform,
            telemetry: Some((name.to_string(), record)),
            logs: legacy.map(|r| (name.to_string(), r)),
        }
    }

    /// An output line: the record is the text.
    pub fn line(kind: Kind, text: &str) -> Event {
        let name = if kind == Kind::Function {
            "function"
        } else {
            "extension"
        };
        Event {
            kind,
            telemetry: Some((name.into(), Value::String(text.into()))),
            logs: Some((name.into(), Value::String(text.into()))),
        }
    }

    fn render(&self, api: Api, time: &str) -> Option<Vec<u8>> {
        let (name, record) = match api {
            Api::Telemetry => self.telemetry.as_ref()?,
            Api::Logs => self.logs.as_ref()?,
        };
        Some(
            json!({"time": time, "type": name, "record": record})
                .to_string()
                .into_bytes(),
        )
    }
}

struct Delivery {
    stream: TcpStream,
    token: Token,
    out: Vec<u8>,
    written: usize,
    inbuf: Vec<u8>,
    since: Instant,
}

enum Progress {
    Pending,
    Done,
    Failed,
}

impl Delivery {
    /// Writes the request and reads the answer as far as possible.
    fn drive(&mut self) -> Progress {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Progress::Failed,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Includes a refused connection, reported at the first write.
                Err(_) => return Progress::Failed,
            }
        }
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return if self.answered() {
                        Progress::Done
                    } else {
                        Progress::Failed
                    }
                }
                Ok(n) => {
                    if self.inbuf.len() < 64 * 1024 {
                        self.inbuf.extend_from_slice(&chunk[..n]);
                    }
                    if self.answered() {
                        return Progress::Done;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Progress::Failed,
            }
        }
    }

    /// A complete answer head (its body does not matter); any status counts as received.
    fn answered(&self) -> bool {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut fields);
        matches!(resp.parse(&self.inbuf), Ok(httparse::Status::Complete(_)))
    }
}

struct Subscriber {
    extension: String,
    req: Request,
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    oldest: Option<Instant>,
    dropped: (u64, u64),
    inflight: Option<Delivery>,
}

impl Subscriber {
    fn wants(&self, kind: Kind) -> bool {
        self.req.types.contains(&kind)
    }

    fn push(&mut self, bytes: Vec<u8>, now: Instant) {
        if self.queued_bytes + bytes.len() > QUEUE_CAP {
            self.dropped.0 += 1;
            self.dropped.1 += bytes.len() as u64;
            return;
        }
        self.queued_bytes += bytes.len();
        self.queue.push_back(bytes);
        self.oldest.get_or_insert(now);
    }

    fn due(&self, now: Instant, force: bool) -> bool {
        if self.inflight.is_some() || (self.queue.is_empty() && self.dropped.0 == 0) {
            return false;
        }
        force
            || self.queue.len() >= self.req.max_items
            || self.queued_bytes >= self.req.max_bytes
            || self
                .oldest
                .is_none_or(|o| now >= o + Duration::from_millis(self.req.timeout_ms))
    }

    /// The next batch: a JSON array of at most `max_items` events and about `max_bytes`.
    fn batch(&mut self, now: Instant) -> Vec<u8> {
        let mut body = b"[".to_vec();
        let mut n = 0;
        if self.dropped.0 > 0 {
            let ev = json!({
                "time": timestamp(SystemTime::now()),
                "type": "platform.logsDropped",
                "record": {
                    "reason": "Consumer seems to have fallen behind as it has not acknowledged receipt of logs.",
                    "droppedRecords": self.dropped.0,
                    "droppedBytes": self.dropped.1,
                },
            });
            body.extend_from_slice(ev.to_string().as_bytes());
            n += 1;
            self.dropped = (0, 0);
        }
        while let Some(ev) = self.queue.front() {
            if n > 0 && (n >= self.req.max_items || body.len() + ev.len() > self.req.max_bytes) {
                break;
            }
            if n > 0 {
                body.push(b',');
            }
            if let Some(ev) = self.queue.pop_front() {
                self.queued_bytes -= ev.len();
                body.extend_from_slice(&ev);
            }
            n += 1;
        }
        body.push(b']');
        self.oldest = (!self.queue.is_empty()).then_some(now);
        body
    }
}

/// The subscribers of one env and their deliveries.
#[derive(Default)]
pub struct Telemetry {
    subs: Vec<Subscriber>,
    /// Events of the Init phase, replayed to subscribers that subscribe during Init.
    backlog: Option<Vec<(Event, String)>>,
    /// Send whatever is queued now (shutdown).
    pub force: bool,
}

impl Telemetry {
    /// Keeps the Init phase's events for later subscribers (until [`Telemetry::end_backlog`]).
    pub fn start_backlog(&mut self) {
        self.backlog = Some(Vec::new());
    }

    pub fn end_backlog(&mut self) {
        self.backlog = None;
    }

    /// Whether anyone takes events of this kind (so callers skip building them otherwise).
    pub fn wants(&self, kind: Kind) -> bool {
        self.backlog.is_some() || self.subs.iter().any(|s| s.wants(kind))
    }

    /// Adds (or replaces) extension `extension`'s subscription through `req.api`.
    pub fn subscribe(&mut self, extension: &str, req: Request) {
        let now = Instant::now();
        self.subs
            .retain(|s| !(s.extension == extension && s.req.api == req.api));
        let mut sub = Subscriber {
            extension: extension.to_string(),
            req,
            queue: VecDeque::new(),
            queued_bytes: 0,
            oldest: None,
            dropped: (0, 0),
            inflight: None,
        };
        for (ev, time) in self.backlog.iter().flatten() {
            if sub.wants(ev.kind) {
                if let Some(bytes) = ev.render(sub.req.api, time) {
                    sub.push(bytes, now);
                }
            }
        }
        self.subs.push(sub);
    }

    /// Queues an event for every subscriber that takes it.
    pub fn emit(&mut self, ev: Event) {
        let now = Instant::now();
        let time = timestamp(SystemTime::now());
        for sub in self.subs.iter_mut().filter(|s| s.wants(ev.kind)) {
            if let Some(bytes) = ev.render(sub.req.api, &time) {
                sub.push(bytes, now);
            }
        }
        if let Some(b) = self.backlog.as_mut() {
            if b.len() < BACKLOG_MAX {
                b.push((ev, time));
            }
        }
    }

    /// When the event loop must wake up next for a flush or a stuck delivery.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.subs
            .iter()
            .filter_map(|s| match &s.inflight {
                Some(d) => Some(d.since + DELIVERY_TIMEOUT),
                None if s.due(now, self.force) => Some(now),
                None => s
                    .oldest
                    .map(|o| o + Duration::from_millis(s.req.timeout_ms)),
            })
            .min()
            .map(|t| t.saturating_duration_since(now))
    }

    /// Whether nothing is queued or in flight.
    pub fn idle(&self) -> bool {
        self.subs
            .iter()
            .all(|s| s.inflight.is_none() && s.queue.is_empty())
    }

    /// Starts due deliveries and abandons stuck ones; `token` hands out tokens.
    pub fn tick(&mut self, registry: &Registry, token: &mut impl FnMut() -> Token) {
        let now = Instant::now();
        for sub in &mut self.subs {
            if let Some(d) = &mut sub.inflight {
                if now >= d.since + DELIVERY_TIMEOUT {
                    let _ = registry.deregister(&mut d.stream);
                    sub.inflight = None;
                }
            }
            if !sub.due(now, self.force) {
                continue;
            }
            let body = sub.batch(now);
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: sandbox.localdomain:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                sub.req.path,
                sub.req.port,
                body.len()
            );
            let mut out = head.into_bytes();
            out.extend_from_slice(&body);
            let addr = SocketAddr::from(([127, 0, 0, 1], sub.req.port));
            let Ok(mut stream) = TcpStream::connect(addr) else {
                continue;
            };
            let t = token();
            if registry
                .register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            sub.inflight = Some(Delivery {
                stream,
                token: t,
                out,
                written: 0,
                inbuf: Vec::new(),
                since: now,
            });
        }
    }

    /// Drives the delivery behind `token`; `false` if no delivery has it.
    pub fn ready(&mut self, token: Token, registry: &Registry) -> bool {
        let Some(sub) = self
            .subs
            .iter_mut()
            .find(|s| s.inflight.as_ref().is_some_and(|d| d.token == token))
        else {
            return false;
        };
        if let Some(d) = &mut sub.inflight {
            match d.drive() {
                Progress::Pending => {}
                Progress::Done | Progress::Failed => {
                    let _ = registry.deregister(&mut d.stream);
                    sub.inflight = None;
                }
            }
        }
        true
    }
}

/// Splits output into lines for telemetry; keeps an incomplete last line until it completes
/// (or grows past [`MAX_LINE`]).
#[derive(Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    pub fn feed(&mut self, data: &[u8], out: &mut dyn FnMut(&str)) {
        self.partial.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let line = &self.partial[start..start + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            out(&String::from_utf8_lossy(line));
            start += nl + 1;
        }
        self.partial.drain(..start);
        while self.partial.len() > MAX_LINE {
            let cut: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
            out(&String::from_utf8_lossy(&cut));
        }
    }

    /// What is left without its newline (the process ended).
    pub fn finish(&mut self, out: &mut dyn FnMut(&str)) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            out(&String::from_utf8_lossy(&rest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_validated_with_lambdas_ranges() {
        let ok = br#"{"schemaVersion":"2022-12-13","types":["platform","function"],
            "buffering":{"maxItems":1000,"maxBytes":262144,"timeoutMs":25},
            "destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:4243/t"}}"#;
        let r = parse_request(Api::Telemetry, ok).unwrap();
        assert_eq!(r.types, vec![Kind::Platform, Kind::Function]);
        assert_eq!((r.max_items, r.max_bytes, r.timeout_ms), (1000, 262144, 25));
        assert_eq!((r.port, r.path.as_str()), (4243, "/t"));
        let minimal = br#"{"schemaVersion":"2022-07-01","types":["extension"],
            "destination":{"protocol":"HTTP","URI":"http://sandbox:9/"}}"#;
        let r = parse_request(Api::Telemetry, minimal).unwrap();
        assert_eq!(
            (r.max_items, r.max_bytes, r.timeout_ms),
            (1000, 262144, 1000)
        );
        // Logs API: its own schema versions and defaults.
        let logs = br#"{"types":["platform"],"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:1234"}}"#;
        let r = parse_request(Api::Logs, logs).unwrap();
        assert_eq!((r.max_items, r.path.as_str()), (10000, "/"));
        for bad in [
            &br#"nope"#[..],
            br#"{"types":["platform"],"destination":{"protocol":"HTTP","URI":"http://sandbox:1/"}}"#,
            br#"{"schemaVersion":"2022-07-01","types":[],"destination":{"protocol":"HTTP","URI":"http://sandbox:1/"}}"#,
            br#"{"schemaVersion":"2022-07-01","types":["bogus"],"destination":{"protocol":"HTTP","URI":"http://sandbox:1/"}}"#,
            br#"{"schemaVersion":"2022-07-01","types":["platform"],"buffering":{"maxItems":5},"destination":{"protocol":"HTTP","URI":"http://sandbox:1/"}}"#,
            br#"{"schemaVersion":"2022-07-01","types":["platform"],"buffering":{"timeoutMs":30001},"destination":{"protocol":"HTTP","URI":"http://sandbox:1/"}}"#,
            br#"{"schemaVersion":"2022-07-01","types":["platform"],"buffering":{"maxBytes":100},"destination":{"protocol":"HTTP","URI":"http://sandbox:1/"}}"#,
            br#"{"schemaVersion":"2022-07-01","types":["platform"],"destination":{"protocol":"TCP","URI":"http://sandbox:1/"}}"#,
            br#"{"schemaVersion":"2022-07-01","types":["platform"],"destination":{"protocol":"HTTP","URI":"http://example.com:1/"}}"#,
            br#"{"schemaVersion":"2022-07-01","types":["platform"],"destination":{"protocol":"HTTP","URI":"https://sandbox:1/"}}"#,
            br#"{"schemaVersion":"2022-07-01","types":["platform"],"destination":{"protocol":"HTTP","URI":"http://sandbox:0/"}}"#,
            br#"{"schemaVersion":"2022-07-01","types":["platform"]}"#,
        ] {
            assert!(
                parse_request(Api::Telemetry, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn timestamps_are_utc_iso8601() {
        let t = UNIX_EPOCH + Duration::from_millis(1_665_533_030_123);
        assert_eq!(timestamp(t), "2022-10-12T00:03:50.123Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn lines_split_on_newlines_and_are_bounded() {
        let mut l = Lines::default();
        let mut got = Vec::new();
        l.feed(b"one\r\ntw", &mut |s| got.push(s.to_string()));
        l.feed(b"o\nthree", &mut |s| got.push(s.to_string()));
        assert_eq!(got, ["one", "two"]);
        l.finish(&mut |s| got.push(s.to_string()));
        assert_eq!(got, ["one", "two", "three"]);
        let mut got = Vec::new();
        l.feed(&vec![b'x'; MAX_LINE + 5], &mut |s| got.push(s.len()));
        assert_eq!(got, [MAX_LINE]);
    }

    #[test]
    fn batches_follow_buffering_and_count_drops() {
        let req = parse_request(
            Api::Telemetry,
            br#"{"schemaVersion":"2022-12-13","types":["platform","function"],"buffering":{"maxItems":1000,"timeoutMs":25},"destination":{"protocol":"HTTP","URI":"http://sandbox:9/"}}"#,
        )
        .unwrap();
        let mut t = Telemetry::default();
        t.start_backlog();
        t.emit(Event::platform(
            "platform.initStart",
            json!({"phase":"init"}),
            None,
        ));
        t.subscribe("ext", req);
        t.end_backlog();
        assert!(!t.wants(Kind::Extension));
        assert!(t.wants(Kind::Function));
        t.emit(Event::line(Kind::Function, "hello"));
        t.emit(Event::line(Kind::Extension, "not subscribed"));
        let now = Instant::now();
        let sub = &mut t.subs[0];
        assert_eq!(sub.queue.len(), 2);
        assert!(!sub.due(now, false), "timeoutMs not reached");
        assert!(sub.due(now + Duration::from_millis(30), false));
        assert!(sub.due(now, true));
        let batch: Value = serde_json::from_slice(&sub.batch(now)).unwrap();
        assert_eq!(batch[0]["type"], "platform.initStart");
        assert_eq!(batch[1]["type"], "function");
        assert_eq!(batch[1]["record"], "hello");
        assert!(sub.queue.is_empty());
        // Past the cap, events are dropped and reported once.
        let big = vec![b'x'; QUEUE_CAP / 2 + 1];
        sub.push(big.clone(), now);
        sub.push(big.clone(), now);
        assert_eq!(sub.dropped, (1, big.len() as u64));
        let _ = sub.queue.pop_front();
        sub.queued_bytes = 0;
        let batch: Value = serde_json::from_slice(&sub.batch(now)).unwrap();
        assert_eq!(batch[0]["type"], "platform.logsDropped");
        assert_eq!(batch[0]["record"]["droppedRecords"], 1);
        assert_eq!(sub.dropped, (0, 0));
        // maxItems splits batches.
        for i in 0..1500 {
            sub.push(format!("{i}").into_bytes(), now);
        }
        assert!(sub.due(now, false));
        let batch: Value = serde_json::from_slice(&sub.batch(now)).unwrap();
        assert_eq!(batch.as_array().unwrap().len(), 1000);
        assert_eq!(sub.queue.len(), 500);
    }
}
