//! Asynchronous invocation at the API edge: Invoke with `InvocationType: Event`, the
//! EventInvokeConfig operations (Put, Update, Get, Delete, List under `/2019-09-25/`) and the
//! [`AsyncTarget`] through which the queue runs functions (the API's resolve + scheduler).
//!
//! A child module of `lambda` (it uses `Api::resolve`), kept in its own file.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::super::error::{ApiError, ApiResult};
use super::super::http::{Request, Response};
use super::super::validate;
use super::Api;
use crate::async_invoke::{
    function_arn_parts, AsyncTarget, Delivery, EventInvokeConfig, Invocation, NewEvent, QueueError,
};
use crate::registry::StoredFunction;
use crate::scheduler::{InvokeRequest, Outcome};

/// Largest Event (asynchronous) Invoke payload.
pub const MAX_ASYNC_PAYLOAD: usize = 1_048_576;

const DESTINATION_PATTERN: &str = "^$|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1})?:(\\d{12})?:(.*)";

fn queue_error(e: QueueError) -> ApiError {
    ApiError::service(format!("storage error: {e}"))
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}

/// The function ARN pattern of Lambda's model for destinations (`DestinationArn`), by hand.
fn destination_arn_ok(arn: &str) -> bool {
    if arn.is_empty() {
        return true;
    }
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(_)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let partition_ok = partition
        .strip_prefix("aws")
        .is_some_and(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    let service_ok = !service.is_empty()
        && service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    let region_ok = region.is_empty()
        || (region.split('-').count() >= 3
            && region.ends_with(|c: char| c.is_ascii_digit())
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    let account_ok =
        account.is_empty() || (account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()));
    partition_ok && service_ok && region_ok && account_ok
}

/// Runs queued events through the API (so qualifiers and aliases resolve as for Invoke).
struct ApiTarget(Weak<Api>);

impl AsyncTarget for ApiTarget {
    fn run(&self, inv: &Invocation<'_>) -> Delivery {
        let Some(api) = self.0.upgrade() else {
            return Delivery::ServiceError("lamina is stopping".into());
        };
        // Weighted aliases pick a version per run, as for synchronous invokes.
        let f = match api
            .function_ref(inv.function, inv.qualifier)
            .and_then(|(name, q)| api.lookup(&name, q.as_deref(), true))
        {
            Ok(f) => f,
            Err(e) if e.status == 404 => return Delivery::Gone(e.message),
            Err(e) => return Delivery::ServiceError(e.message),
        };
        let executed_version = executed_version(&f);
        let outcome = api.scheduler.invoke(
            &f,
            InvokeRequest {
                request_id: inv.request_id.to_string(),
                invoked_arn: inv.invoked_arn.to_string(),
                payload: inv.payload.to_vec(),
                client_context: None,
                tail: false,
            },
        );
        match outcome.result {
            Outcome::Response { body, .. } => Delivery::Success {
                executed_version,
                body,
            },
            Outcome::FunctionError { body } => Delivery::FunctionError {
                executed_version,
                body,
            },
            Outcome::Throttled(reason) => Delivery::Throttled(reason.to_string()),
            Outcome::InvalidRuntime(msg) => Delivery::FunctionError {
                executed_version,
                body:
                    serde_json::json!({"errorType": "InvalidRuntimeException", "errorMessage": msg})
                        .to_string()
                        .into_bytes(),
            },
            Outcome::ServiceError(msg) => Delivery::ServiceError(msg),
        }
    }
}

fn executed_version(f: &StoredFunction) -> String {
    f.config["Version"]
        .as_str()
        .unwrap_or("$LATEST")
        .to_string()
}

impl Api {
    /// Starts the async invocation workers (they stop taking events once `stop` is set).
    pub fn start_async_workers(self: &Arc<Api>, stop: Arc<AtomicBool>) {
        self.async_queue
            .start(Arc::new(ApiTarget(Arc::downgrade(self))), stop);
    }

    /// Invoke with `InvocationType: Event`, after the checks every Invoke gets: the event is
    /// committed to the queue before the 202 (whose request id is the one the function sees).
    pub(super) fn invoke_event(
        &self,
        f: &StoredFunction,
        qualifier: Option<String>,
        invoked_arn: String,
        payload: Vec<u8>,
        request_id: &str,
    ) -> ApiResult<Response> {
        self.async_queue
            .enqueue(&NewEvent {
                request_id: request_id.to_string(),
                function: f.name.clone(),
                qualifier,
                invoked_arn,
                payload,
            })
            .map_err(queue_error)?;
        Ok(Response::new(202))
    }

    /// The Event payload limit (checked before the payload is parsed).
    pub(super) fn check_async_payload(len: usize) -> ApiResult<()> {
        if len > MAX_ASYNC_PAYLOAD {
            return Err(ApiError::new(
                413,
                "RequestEntityTooLargeException",
                format!("{len} byte payload is too large for the Event invocation type (limit {MAX_ASYNC_PAYLOAD} bytes)"),
            ));
        }
        Ok(())
    }

    /// PUT/POST/GET/DELETE `/2019-09-25/functions/{name}/event-invoke-config`.
    pub(super) fn event_invoke_config(
        &self,
        req: &Request,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<Response> {
        match req.method.as_str() {
            "PUT" => self.put_event_invoke_config(req, raw, qualifier, false),
            "POST" => self.put_event_invoke_config(req, raw, qualifier, true),
            "GET" => {
                let (name, q) = self.config_key(raw, qualifier)?;
                let c = self
                    .async_queue
                    .get_config(&name, &q)
                    .map_err(queue_error)?
                    .ok_or_else(|| self.no_config(&name, &q))?;
                Ok(Response::json(
                    200,
                    self.config_json(&c).to_string().into_bytes(),
                ))
            }
            "DELETE" => {
                let (name, q) = self.config_key(raw, qualifier)?;
                if !self
                    .async_queue
                    .delete_config(&name, &q)
                    .map_err(queue_error)?
                {
                    return Err(self.no_config(&name, &q));
                }
                Ok(Response::new(204))
            }
            m => Err(ApiError::new(
                404,
                "UnknownOperationException",
                format!("Unknown operation {m} {}", req.raw_path),
            )),
        }
    }

    fn no_config(&self, name: &str, qualifier: &str) -> ApiError {
        ApiError::not_found(format!(
            "The function {}:{qualifier} doesn't have an EventInvokeConfig",
            self.arn(name)
        ))
    }

    /// (function, qualifier key) of a config reference; Get and Delete of a missing function
    /// answer as for a missing config.
    fn config_key(&self, raw: &str, qualifier: Option<&str>) -> ApiResult<(String, String)> {
        match self.resolve(raw, qualifier) {
            Ok((f, q)) => Ok((f.name.clone(), q.unwrap_or_else(|| "$LATEST".into()))),
            Err(e) if e.status == 404 => {
                let r = validate::function_ref(raw, "functionName")?;
                let q = r
                    .qualifier
                    .or(qualifier.map(str::to_string))
                    .unwrap_or_else(|| "$LATEST".into());
                Err(self.no_config(&r.name, &q))
            }
            Err(e) => Err(e),
        }
    }

    fn config_json(&self, c: &EventInvokeConfig) -> Value {
        let mut o = Map::new();
        o.insert("LastModified".into(), json!(c.last_modified));
        o.insert(
            "FunctionArn".into(),
            json!(format!("{}:{}", self.arn(&c.function), c.qualifier)),
        );
        if let Some(n) = c.max_retry {
            o.insert("MaximumRetryAttempts".into(), json!(n));
        }
        if let Some(n) = c.max_age {
            o.insert("MaximumEventAgeInSeconds".into(), json!(n));
        }
        let dest = |d: &Option<String>| match d {
            Some(d) => json!({"Destination": d}),
            None => json!({}),
        };
        o.insert(
            "DestinationConfig".into(),
            json!({"OnSuccess": dest(&c.on_success), "OnFailure": dest(&c.on_failure)}),
        );
        Value::Object(o)
    }

    /// Checks one destination: Lambda's ARN pattern, then a lamina function other than the
    /// source that exists. `None` for an empty one.
    fn destination(
        &self,
        dc: &Map<String, Value>,
        member: &str,
        source: &str,
    ) -> ApiResult<Option<String>> {
        let field = match member {
            "OnSuccess" => "destinationConfig.onSuccess.destination",
            _ => "destinationConfig.onFailure.destination",
        };
        let d = match dc.get(member) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(o)) => match validate::string_max(o, "Destination", field, 350)? {
                None | Some("") => return Ok(None),
                Some(d) => d,
            },
            Some(other) => {
                return Err(validate::type_error(
                    &format!("DestinationConfig.{member}"),
                    other,
                    "structure",
                ))
            }
        };
        if !destination_arn_ok(d) {
            return Err(ApiError::validation(
                d,
                field,
                &format!("Member must satisfy regular expression pattern: {DESTINATION_PATTERN}"),
            ));
        }
        if function_arn_parts(d).is_none() {
            let service = d.split(':').nth(2).unwrap_or("");
            return Err(ApiError::invalid(format!(
                "The destination ARN {d} is a {service} resource; this lamina delivers invocation records only to lamina functions (arn:aws:lambda:{}:{}:function:NAME).",
                self.region, self.account
            )));
        }
        let (f, _) = self
            .resolve(d, None)
            .map_err(|_| ApiError::invalid(format!("The destination ARN {d} is invalid.")))?;
        if f.name == source {
            return Err(ApiError::invalid(
                "You can't specify the function as a destination for itself.",
            ));
        }
        Ok(Some(d.to_string()))
    }

    /// PutFunctionEventInvokeConfig (replaces) and UpdateFunctionEventInvokeConfig (merges).
    fn put_event_invoke_config(
        &self,
        req: &Request,
        raw: &str,
        qualifier: Option<&str>,
        merge: bool,
    ) -> ApiResult<Response> {
        let body: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(&req.body).map_err(|e| {
                ApiError::invalid(format!("Could not parse request body into json: {e}"))
            })?
        };
        let b = body.as_object().ok_or_else(|| {
            ApiError::invalid("Could not parse request body into json: expected an object")
        })?;
        let max_retry = validate::int_in(b, "MaximumRetryAttempts", "maximumRetryAttempts", 0, 2)?;
        let max_age = validate::int_in(
            b,
            "MaximumEventAgeInSeconds",
            "maximumEventAgeInSeconds",
            60,
            21_600,
        )?;
        let dc = match b.get("DestinationConfig") {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(other) => {
                return Err(validate::type_error(
                    "DestinationConfig",
                    other,
                    "structure",
                ))
            }
        };
        if max_retry.is_none() && max_age.is_none() && dc.is_none() {
            return Err(ApiError::invalid(
                "You must specify at least one of error handling or destination setting.",
            ));
        }
        let (f, q) = self.resolve(raw, qualifier)?;
        let q = q.unwrap_or_else(|| "$LATEST".into());
        let dests = match dc {
            None => None,
            Some(dc) => Some((
                self.destination(dc, "OnSuccess", &f.name)?,
                self.destination(dc, "OnFailure", &f.name)?,
            )),
        };
        let now = now_secs();
        let saved = if merge {
            self.async_queue
                .update_config(&f.name, &q, |c| {
                    if max_retry.is_some() {
                        c.max_retry = max_retry;
                    }
                    if max_age.is_some() {
                        c.max_age = max_age;
                    }
                    if let Some((s, fl)) = dests.clone() {
                        c.on_success = s;
                        c.on_failure = fl;
                    }
                    c.last_modified = now;
                })
                .map_err(queue_error)?
                .ok_or_else(|| self.no_config(&f.name, &q))?
        } else {
            let (on_success, on_failure) = dests.unwrap_or((None, None));
            let c = EventInvokeConfig {
                function: f.name.clone(),
                qualifier: q,
                max_retry,
                max_age,
                on_success,
                on_failure,
                last_modified: now,
            };
            self.async_queue.put_config(&c).map_err(queue_error)?;
            c
        };
        Ok(Response::json(
            200,
            self.config_json(&saved).to_string().into_bytes(),
        ))
    }

    /// GET `/2019-09-25/functions/{name}/event-invoke-config/list`.
    pub(super) fn list_event_invoke_configs(
        &self,
        raw: &str,
        marker: Option<&str>,
        max_items: Option<&str>,
    ) -> ApiResult<Response> {
        let max = match max_items {
            None => 50,
            Some(m) => match m.parse::<i64>() {
                Ok(n) if (1..=50).contains(&n) => n as usize,
                Ok(n) if n < 1 => {
                    return Err(ApiError::validation(
                        m,
                        "maxItems",
                        "Member must have value greater than or equal to 1",
                    ))
                }
                _ => {
                    return Err(ApiError::validation(
                        m,
                        "maxItems",
                        "Member must have value less than or equal to 50",
                    ))
                }
            },
        };
        let (f, _) = self.resolve(raw, None)?;
        let page = self
            .async_queue
            .list_configs(&f.name, marker, max + 1)
            .map_err(queue_error)?;
        let more = page.len() > max;
        let items: Vec<Value> = page.iter().take(max).map(|c| self.config_json(c)).collect();
        let mut body = Map::new();
        body.insert("FunctionEventInvokeConfigs".into(), Value::Array(items));
        if more {
            if let Some(last) = page.get(max - 1) {
                body.insert("NextMarker".into(), json!(last.qualifier));
            }
        }
        Ok(Response::json(
            200,
            Value::Object(body).to_string().into_bytes(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_arns() {
        for ok in [
            "",
            "arn:aws:lambda:us-east-1:123456789012:function:f",
            "arn:aws:sqs:us-east-1:123456789012:q",
            "arn:aws:s3:::bucket",
            "arn:aws-cn:sns:cn-north-1:123456789012:t",
        ] {
            assert!(destination_arn_ok(ok), "{ok}");
        }
        for bad in [
            "f",
            "arn:aws:_-/!lambda:us-east-1:123456789012:function:f",
            "arn:gcp:lambda:us-east-1:123456789012:function:f",
            "arn:aws:lambda:us-east-1:12345:function:f",
            "arn:aws:lambda:US-EAST-1:123456789012:function:f",
        ] {
            assert!(!destination_arn_ok(bad), "{bad}");
        }
    }
}
