//! The CloudWatch Logs API subset on lamina's endpoint (JSON 1.1, `X-Amz-Target:
//! Logs_20140328.<Operation>`, SigV4 service `logs`): DescribeLogGroups, DescribeLogStreams,
//! GetLogEvents, FilterLogEvents, PutRetentionPolicy, DeleteRetentionPolicy. Enough for boto3's
//! logs client, `aws logs filter-log-events`/`get-log-events` and `aws logs tail` (CLI v2).

use serde_json::{json, Map, Value};

use super::http::{Request, Response};
use super::lambda::Api;
use crate::logs::{LogStore, Pattern};

/// A Logs API error: JSON 1.1 shape `{"__type": ..., "message": ...}`.
struct LogsError {
    status: u16,
    kind: &'static str,
    message: String,
}

type LogsResult<T> = Result<T, LogsError>;

fn invalid(message: impl Into<String>) -> LogsError {
    LogsError {
        status: 400,
        kind: "InvalidParameterException",
        message: message.into(),
    }
}

fn not_found(message: &str) -> LogsError {
    LogsError {
        status: 400,
        kind: "ResourceNotFoundException",
        message: message.into(),
    }
}

fn opt_str<'a>(b: &'a Map<String, Value>, k: &str) -> LogsResult<Option<&'a str>> {
    match b.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{k} must be a string"))),
    }
}

fn opt_i64(b: &Map<String, Value>, k: &str) -> LogsResult<Option<i64>> {
    match b.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| invalid(format!("{k} must be an integer"))),
    }
}

fn opt_bool(b: &Map<String, Value>, k: &str) -> LogsResult<Option<bool>> {
    match b.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(v)) => Ok(Some(*v)),
        Some(_) => Err(invalid(format!("{k} must be a boolean"))),
    }
}

fn limit(b: &Map<String, Value>, max: i64, default: i64) -> LogsResult<usize> {
    match opt_i64(b, "limit")? {
        None => Ok(default as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(format!(
            "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value between 1 and {max}"
        ))),
    }
}

/// An offset pagination token `<prefix><n>`.
fn offset(token: Option<&str>, prefix: &str) -> LogsResult<usize> {
    match token {
        None => Ok(0),
        Some(t) => t
            .strip_prefix(prefix)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| invalid("The specified nextToken is invalid.")),
    }
}

impl Api {
    /// Whether a request is a Logs API call.
    pub fn is_logs_call(req: &Request) -> bool {
        req.header("X-Amz-Target")
            .is_some_and(|t| t.starts_with("Logs_20140328."))
    }

    fn log_group_arn(&self, group: &str) -> String {
        format!(
            "arn:aws:logs:{}:{}:log-group:{group}",
            self.region, self.account
        )
    }

    /// The group a request names (`logGroupName`, or `logGroupIdentifier` as a name or ARN).
    fn group_of(&self, b: &Map<String, Value>) -> LogsResult<String> {
        if let Some(n) = opt_str(b, "logGroupName")? {
            return Ok(n.to_string());
        }
        match opt_str(b, "logGroupIdentifier")? {
            Some(id) if id.starts_with("arn:") => {
                let rest = id
                    .split_once(":log-group:")
                    .map(|(_, r)| r.trim_end_matches(":*"))
                    .ok_or_else(|| invalid("logGroupIdentifier is not a log group ARN"))?;
                Ok(rest.to_string())
            }
            Some(id) => Ok(id.to_string()),
            None => Err(invalid(
                "Either logGroupName or logGroupIdentifier is required",
            )),
        }
    }

    pub(super) fn logs_api(&self, req: &Request) -> Response {
        let op = req
            .header("X-Amz-Target")
            .and_then(|t| t.strip_prefix("Logs_20140328."))
            .unwrap_or("")
            .to_string();
        let body: LogsResult<Map<String, Value>> = if req.body.iter().all(u8::is_ascii_whitespace) {
            Ok(Map::new())
        } else {
            match serde_json::from_slice::<Value>(&req.body) {
                Ok(Value::Object(o)) => Ok(o),
                _ => Err(LogsError {
                    status: 400,
                    kind: "SerializationException",
                    message: "could not parse the request body as a JSON object".into(),
                }),
            }
        };
        let store = LogStore::new(&self.state_dir);
        let r = body.and_then(|b| match op.as_str() {
            "DescribeLogGroups" => self.describe_log_groups(&store, &b),
            "DescribeLogStreams" => self.describe_log_streams(&store, &b),
            "GetLogEvents" => self.get_log_events(&store, &b),
            "FilterLogEvents" => self.filter_log_events(&store, &b),
            "PutRetentionPolicy" => self.put_retention(&store, &b),
            "DeleteRetentionPolicy" => {
                let g = self.group_of(&b)?;
                match store.set_retention(&g, None) {
                    Ok(true) => Ok(json!({})),
                    Ok(false) => Err(not_found("The specified log group does not exist.")),
                    Err(e) => Err(LogsError {
                        status: 500,
                        kind: "ServiceUnavailableException",
                        message: e.to_string(),
                    }),
                }
            }
            _ => Err(LogsError {
                status: 400,
                kind: "UnknownOperationException",
                message: format!("lamina does not implement the Logs operation {op}"),
            }),
        });
        match r {
            Ok(v) => Response::json(200, v.to_string().into_bytes())
                .content_type(Some("application/x-amz-json-1.1".into())),
            Err(e) => Response::json(
                e.status,
                json!({"__type": e.kind, "message": e.message})
                    .to_string()
                    .into_bytes(),
            )
            .content_type(Some("application/x-amz-json-1.1".into()))
            .header("x-amzn-ErrorType", e.kind),
        }
    }

    fn describe_log_groups(&self, store: &LogStore, b: &Map<String, Value>) -> LogsResult<Value> {
        let prefix = opt_str(b, "logGroupNamePrefix")?.unwrap_or("");
        let pattern = opt_str(b, "logGroupNamePattern")?;
        let max = limit(b, 50, 50)?;
        let start = offset(opt_str(b, "nextToken")?, "g/")?;
        let all: Vec<_> = store
            .groups(prefix)
            .into_iter()
            .filter(|g| pattern.is_none_or(|p| g.name.contains(p)))
            .collect();
        let page: Vec<Value> = all
            .iter()
            .skip(start)
            .take(max)
            .map(|g| {
                let mut v = json!({
                    "logGroupName": g.name,
                    "creationTime": g.creation_ms,
                    "metricFilterCount": 0,
                    "arn": format!("{}:*", self.log_group_arn(&g.name)),
                    "logGroupArn": self.log_group_arn(&g.name),
                    "storedBytes": g.stored_bytes,
                    "logGroupClass": "STANDARD",
                });
                if let Some(d) = g.retention_days {
                    v["retentionInDays"] = json!(d);
                }
                v
            })
            .collect();
        let mut out = json!({ "logGroups": page });
        if start + max < all.len() {
            out["nextToken"] = json!(format!("g/{}", start + max));
        }
        Ok(out)
    }

    fn describe_log_streams(&self, store: &LogStore, b: &Map<String, Value>) -> LogsResult<Value> {
        let group = self.group_of(b)?;
        let prefix = opt_str(b, "logStreamNamePrefix")?;
        let order = opt_str(b, "orderBy")?.unwrap_or("LogStreamName");
        let descending = opt_bool(b, "descending")?.unwrap_or(false);
        if order != "LogStreamName" && order != "LastEventTime" {
            return Err(invalid(
                "orderBy must be one of LogStreamName, LastEventTime",
            ));
        }
        if order == "LastEventTime" && prefix.is_some() {
            return Err(invalid(
                "Cannot order by LastEventTime with a logStreamNamePrefix.",
            ));
        }
        let max = limit(b, 50, 50)?;
        let start = offset(opt_str(b, "nextToken")?, "s/")?;
        let mut streams: Vec<_> = store
            .streams(&group)
            .ok_or_else(|| not_found("The specified log group does not exist."))?
            .into_iter()
            .filter(|s| prefix.is_none_or(|p| s.name.starts_with(p)))
            .collect();
        if order == "LastEventTime" {
            streams.sort_by_key(|s| s.last_ms.unwrap_or(0));
        }
        if descending {
            streams.reverse();
        }
        let page: Vec<Value> = streams
            .iter()
            .skip(start)
            .take(max)
            .map(|s| {
                let mut v = json!({
                    "logStreamName": s.name,
                    "creationTime": s.creation_ms,
                    "arn": format!("{}:log-stream:{}", self.log_group_arn(&group), s.name),
                    "storedBytes": s.stored_bytes,
                });
                if let (Some(f), Some(l)) = (s.first_ms, s.last_ms) {
                    v["firstEventTimestamp"] = json!(f);
                    v["lastEventTimestamp"] = json!(l);
                    v["lastIngestionTime"] = json!(l);
                }
                v
            })
            .collect();
        let mut out = json!({ "logStreams": page });
        if start + max < streams.len() {
            out["nextToken"] = json!(format!("s/{}", start + max));
        }
        Ok(out)
    }

    fn get_log_events(&self, store: &LogStore, b: &Map<String, Value>) -> LogsResult<Value> {
        let group = self.group_of(b)?;
        let stream =
            opt_str(b, "logStreamName")?.ok_or_else(|| invalid("logStreamName is required"))?;
        let start = opt_i64(b, "startTime")?;
        let end = opt_i64(b, "endTime")?;
        let max = limit(b, 10_000, 10_000)?;
        let from_head = opt_bool(b, "startFromHead")?.unwrap_or(false);
        if store.streams(&group).is_none() {
            return Err(not_found("The specified log group does not exist."));
        }
        let events: Vec<_> = store
            .read_stream(&group, stream)
            .ok_or_else(|| not_found("The specified log stream does not exist."))?
            .into_iter()
            .filter(|e| {
                start.is_none_or(|s| e.timestamp >= s) && end.is_none_or(|x| e.timestamp < x)
            })
            .collect();
        // Tokens: `f/<index>` reads forward from index, `b/<index>` backward up to it.
        let (lo, hi) = match opt_str(b, "nextToken")? {
            Some(t) if t.starts_with("f/") => {
                let i = offset(Some(t), "f/")?.min(events.len());
                (i, (i + max).min(events.len()))
            }
            Some(t) if t.starts_with("b/") => {
                let i = offset(Some(t), "b/")?.min(events.len());
                (i.saturating_sub(max), i)
            }
            Some(_) => return Err(invalid("The specified nextToken is invalid.")),
            None if from_head => (0, max.min(events.len())),
            None => (events.len().saturating_sub(max), events.len()),
        };
        let page: Vec<Value> = events[lo..hi]
            .iter()
            .map(|e| json!({"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.timestamp}))
            .collect();
        Ok(json!({
            "events": page,
            "nextForwardToken": format!("f/{hi}"),
            "nextBackwardToken": format!("b/{lo}"),
        }))
    }

    fn filter_log_events(&self, store: &LogStore, b: &Map<String, Value>) -> LogsResult<Value> {
        let group = self.group_of(b)?;
        let names: Option<Vec<String>> = match b.get("logStreamNames") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| invalid("logStreamNames must be strings"))?,
            ),
            Some(_) => return Err(invalid("logStreamNames must be a list")),
        };
        let prefix = opt_str(b, "logStreamNamePrefix")?;
        if names.is_some() && prefix.is_some() {
            return Err(invalid(
                "You cannot specify both logStreamNames and logStreamNamePrefix.",
            ));
        }
        let pattern =
            Pattern::parse(opt_str(b, "filterPattern")?.unwrap_or("")).map_err(invalid)?;
        let max = limit(b, 10_000, 10_000)?;
        let start = offset(opt_str(b, "nextToken")?, "e/")?;
        let (events, searched) = store
            .filter(
                &group,
                names.as_deref(),
                prefix,
                opt_i64(b, "startTime")?,
                opt_i64(b, "endTime")?,
                &pattern,
            )
            .ok_or_else(|| not_found("The specified log group does not exist."))?;
        let page: Vec<Value> = events
            .iter()
            .skip(start)
            .take(max)
            .map(|e| {
                json!({"logStreamName": e.stream, "timestamp": e.timestamp, "message": e.message,
                       "ingestionTime": e.timestamp, "eventId": e.id})
            })
            .collect();
        let mut out = json!({
            "events": page,
            "searchedLogStreams": searched.iter().map(|s| json!({"logStreamName": s, "searchedCompletely": true})).collect::<Vec<_>>(),
        });
        if start + max < events.len() {
            out["nextToken"] = json!(format!("e/{}", start + max));
        }
        Ok(out)
    }

    fn put_retention(&self, store: &LogStore, b: &Map<String, Value>) -> LogsResult<Value> {
        let group = self.group_of(b)?;
        const DAYS: &[i64] = &[
            1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
            2922, 3288, 3653,
        ];
        let days =
            opt_i64(b, "retentionInDays")?.ok_or_else(|| invalid("retentionInDays is required"))?;
        if !DAYS.contains(&days) {
            return Err(invalid(format!(
                "1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: {DAYS:?}"
            )));
        }
        match store.set_retention(&group, Some(days as u64)) {
            Ok(true) => {
                store.enforce_retention(None, None);
                Ok(json!({}))
            }
            Ok(false) => Err(not_found("The specified log group does not exist.")),
            Err(e) => Err(LogsError {
                status: 500,
                kind: "ServiceUnavailableException",
                message: e.to_string(),
            }),
        }
    }
}
