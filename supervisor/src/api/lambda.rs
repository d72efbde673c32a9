//! The Lambda operations of `lamina serve`: CreateFunction, GetFunction,
//! GetFunctionConfiguration, ListFunctions, DeleteFunction, Invoke.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::http::{Handler, Request, Response};
use super::sigv4;
use super::validate;
use crate::registry::{Registry, RegistryError, StoredFunction};
use crate::scheduler::{InvokeRequest, Outcome, Scheduler};

/// Largest synchronous Invoke payload.
pub const MAX_SYNC_PAYLOAD: usize = 6_291_456;
/// Largest direct-upload ZIP.
pub const MAX_ZIP: usize = 52_428_800;

pub struct Api {
    pub registry: Arc<Registry>,
    pub scheduler: Arc<Scheduler>,
    pub keys: HashMap<String, String>,
    pub region: String,
    pub account: String,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((
                percent_decode(&k.replace('+', " "))?,
                percent_decode(&v.replace('+', " "))?,
            ))
        })
        .collect()
}

impl Handler for Api {
    fn handle(&self, req: Request) -> Response {
        let id = crate::util::uuid4();
        match self.route(&req, &id) {
            Ok(resp) => resp.header("x-amzn-RequestId", id.clone()),
            Err(e) => {
                if e.status >= 500 {
                    tracing::warn!(request = %id, error = %e.message, "request failed");
                }
                e.response(&id)
            }
        }
    }

    fn abort_in_flight(&self) {
        self.scheduler.kill_all();
    }

    fn reject(&self, status: u16, message: &str) -> Response {
        let t = match status {
            413 => "RequestEntityTooLargeException",
            _ => "InvalidRequestContentException",
        };
        ApiError::new(status, t, message).response(&crate::util::uuid4())
    }
}

impl Api {
    fn authenticate(&self, req: &Request) -> ApiResult<()> {
        let headers: Vec<(&str, &[u8])> = req
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let r = sigv4::Request {
            method: &req.method,
            raw_path: &req.raw_path,
            raw_query: &req.raw_query,
            headers: &headers,
            body: &req.body,
        };
        sigv4::verify(&r, &self.keys, &["lambda"], now_unix(), 900)
            .map(|_| ())
            .map_err(|e| ApiError::new(e.http_status(), e.error_type(), e.message()))
    }

    fn route(&self, req: &Request, request_id: &str) -> ApiResult<Response> {
        self.authenticate(req)?;
        let segs: Vec<String> = req
            .raw_path
            .split('/')
            .skip(1)
            .map(|s| {
                percent_decode(s).ok_or_else(|| {
                    ApiError::new(
                        400,
                        "InvalidRequestContentException",
                        "invalid percent-encoding or UTF-8 in the request path",
                    )
                })
            })
            .collect::<ApiResult<_>>()?;
        let q = query(&req.raw_query);
        let qv = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match (req.method.as_str(), segs.as_slice()) {
            ("POST", ["2015-03-31", "functions"]) => self.create_function(req),
            ("GET", ["2015-03-31", "functions"]) => {
                self.list_functions(qv("Marker"), qv("MaxItems"))
            }
            ("GET", ["2015-03-31", "functions", name]) => {
                self.get_function(name, qv("Qualifier"), true)
            }
            ("GET", ["2015-03-31", "functions", name, "configuration"]) => {
                self.get_function(name, qv("Qualifier"), false)
            }
            ("DELETE", ["2015-03-31", "functions", name]) => {
                self.delete_function(name, qv("Qualifier"))
            }
            ("POST", ["2015-03-31", "functions", name, "invocations"]) => {
                self.invoke(req, name, qv("Qualifier"), request_id)
            }
            _ => Err(ApiError::new(
                404,
                "UnknownOperationException",
                format!("Unknown operation {} {}", req.method, req.raw_path),
            )),
        }
    }

    fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            self.region, self.account
        )
    }

    /// Resolves a function reference to a stored `$LATEST` (versions and aliases come later).
    fn resolve(
        &self,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<(Arc<StoredFunction>, Option<String>)> {
        let r = validate::function_ref(raw, "functionName")?;
        if let (Some(a), Some(b)) = (r.qualifier.as_deref(), qualifier) {
            if a != b {
                return Err(ApiError::invalid("The derived qualifier from the function name does not match the specified qualifier."));
            }
        }
        if let Some(region) = &r.region {
            if region != &self.region {
                return Err(ApiError::not_found(format!(
                    "Functions from '{region}' are not reachable in this region ('{}')",
                    self.region
                )));
            }
        }
        let q = r.qualifier.clone().or(qualifier.map(str::to_string));
        let not_found = || {
            let mut arn = self.arn(&r.name);
            if let Some(q) = &q {
                arn = format!("{arn}:{q}");
            }
            ApiError::not_found(format!("Function not found: {arn}"))
        };
        if let Some(q) = &q {
            if q != "$LATEST" {
                return Err(not_found());
            }
        }
        let f = self
            .registry
            .get(&r.name)
            .map_err(storage)?
            .ok_or_else(not_found)?;
        Ok((f, q))
    }

    fn create_function(&self, req: &Request) -> ApiResult<Response> {
        let body: Value = serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::invalid(format!("Could not parse request body into json: {e}"))
        })?;
        let b = body.as_object().ok_or_else(|| {
            ApiError::invalid("Could not parse request body into json: expected an object")
        })?;
        let name_raw = validate::string_max(b, "FunctionName", "functionName", 256)?
            .ok_or_else(|| ApiError::invalid("FunctionName is required"))?;
        let name = validate::new_function_name(name_raw)?;
        let role = validate::string_max(b, "Role", "role", 2048)?
            .ok_or_else(|| ApiError::invalid("Role is required"))?;
        validate::role(role)?;
        let package = validate::string_max(b, "PackageType", "packageType", 10)?.unwrap_or("Zip");
        if package != "Zip" {
            return Err(ApiError::invalid(format!(
                "PackageType {package} is not supported by this lamina; use Zip."
            )));
        }
        let runtime = validate::string_max(b, "Runtime", "runtime", 64)?
            .ok_or_else(|| ApiError::invalid("Runtime and Handler are mandatory parameters for functions created with deployment packages."))?;
        validate::runtime(runtime)?;
        let handler = validate::string_max(b, "Handler", "handler", 128)?;
        match handler {
            Some(h) => validate::handler(h)?,
            None => return Err(ApiError::invalid("Runtime and Handler are mandatory parameters for functions created with deployment packages.")),
        }
        let description = validate::string_max(b, "Description", "description", 256)?.unwrap_or("");
        let memory = validate::int_in(b, "MemorySize", "memorySize", 128, 10240)?.unwrap_or(128);
        let timeout = validate::int_in(b, "Timeout", "timeout", 1, 900)?.unwrap_or(3);
        let ephemeral = match b.get("EphemeralStorage") {
            None | Some(Value::Null) => 512,
            Some(Value::Object(o)) => {
                validate::int_in(o, "Size", "ephemeralStorage.size", 512, 10240)?.unwrap_or(512)
            }
            Some(other) => {
                return Err(validate::type_error("EphemeralStorage", other, "structure"))
            }
        };
        let env = validate::environment(b.get("Environment"))?;
        if let Some(layers) = b.get("Layers") {
            if layers.as_array().is_some_and(|l| !l.is_empty()) {
                return Err(ApiError::invalid(
                    "Layers are not supported by this lamina yet.",
                ));
            }
        }
        let code = b
            .get("Code")
            .and_then(Value::as_object)
            .ok_or_else(|| ApiError::invalid("Code is required"))?;
        let zip_b64 = match code.get("ZipFile") {
            Some(Value::String(s)) => s,
            Some(other) => return Err(validate::type_error("Code.ZipFile", other, "blob")),
            None if code.contains_key("S3Bucket") || code.contains_key("ImageUri") => {
                return Err(ApiError::invalid(
                    "Only Code.ZipFile is supported by this lamina.",
                ))
            }
            None => return Err(ApiError::invalid("Code.ZipFile is required")),
        };
        let zip = base64::engine::general_purpose::STANDARD
            .decode(zip_b64)
            .map_err(|_| ApiError::invalid("Could not unzip uploaded file. Please check your file, then try to upload again."))?;
        if zip.len() > MAX_ZIP {
            return Err(ApiError::new(
                413,
                "RequestEntityTooLargeException",
                "Zipped size must be smaller than 52428800 bytes",
            ));
        }
        if self.registry.get(&name).map_err(storage)?.is_some() {
            return Err(ApiError::conflict(format!(
                "Function already exist: {name}"
            )));
        }
        let (code_hex, _) = self.registry.store_code(&zip).map_err(|e| match e {
            RegistryError::Unzip(u) if !u.is_internal() => ApiError::invalid(u.lambda_message()),
            other => storage(other),
        })?;
        let sha_b64 = base64::engine::general_purpose::STANDARD
            .encode(hex::decode(&code_hex).unwrap_or_default());
        let config = json!({
            "FunctionName": name,
            "FunctionArn": self.arn(&name),
            "Runtime": runtime,
            "Role": role,
            "Handler": handler,
            "CodeSize": zip.len(),
            "Description": description,
            "Timeout": timeout,
            "MemorySize": memory,
            "LastModified": crate::util::utc_timestamp("+0000"),
            "CodeSha256": sha_b64,
            "Version": "$LATEST",
            "Environment": {"Variables": env},
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": crate::util::uuid4(),
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": ["x86_64"],
            "EphemeralStorage": {"Size": ephemeral},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": format!("/aws/lambda/{name}")},
            "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
        });
        self.registry
            .create(&StoredFunction {
                name: name.clone(),
                config: config.clone(),
                code_hex,
            })
            .map_err(|e| match e {
                RegistryError::Exists(n) => {
                    ApiError::conflict(format!("Function already exist: {n}"))
                }
                other => storage(other),
            })?;
        // The code is unpacked already, so the function is Active at once; the response reports
        // the creation in progress, as Lambda's does (boto3's waiters then see Active).
        let mut out = config;
        out["State"] = json!("Pending");
        out["StateReason"] = json!("The function is being created.");
        out["StateReasonCode"] = json!("Creating");
        if let Some(o) = out.as_object_mut() {
            o.remove("LastUpdateStatus");
        }
        Ok(Response::json(201, out.to_string().into_bytes()))
    }

    fn get_function(&self, raw: &str, qualifier: Option<&str>, full: bool) -> ApiResult<Response> {
        let (f, q) = self.resolve(raw, qualifier)?;
        let mut config = f.config.clone();
        if let Some(q) = q {
            config["FunctionArn"] = json!(format!("{}:{q}", self.arn(&f.name)));
        }
        let body = if full {
            json!({"Configuration": config, "Code": {"RepositoryType": "S3"}})
        } else {
            config
        };
        Ok(Response::json(200, body.to_string().into_bytes()))
    }

    fn list_functions(&self, marker: Option<&str>, max_items: Option<&str>) -> ApiResult<Response> {
        let max = match max_items {
            None => 50,
            Some(m) => match m.parse::<i64>() {
                Ok(n) if (1..=10_000).contains(&n) => (n as usize).min(50),
                _ => {
                    return Err(ApiError::validation(
                        m,
                        "maxItems",
                        "Member must have value between 1 and 10000",
                    ))
                }
            },
        };
        let page = self.registry.list(marker, max + 1).map_err(storage)?;
        let more = page.len() > max;
        let items: Vec<Value> = page
            .iter()
            .take(max)
            .map(|f| {
                let mut c = f.config.clone();
                if let Some(o) = c.as_object_mut() {
                    for k in [
                        "State",
                        "StateReason",
                        "StateReasonCode",
                        "LastUpdateStatus",
                        "LastUpdateStatusReason",
                        "LastUpdateStatusReasonCode",
                    ] {
                        o.remove(k);
                    }
                }
                c
            })
            .collect();
        let mut body = Map::new();
        body.insert("Functions".into(), Value::Array(items));
        if more {
            if let Some(last) = page.get(max - 1) {
                body.insert("NextMarker".into(), json!(last.name));
            }
        }
        Ok(Response::json(
            200,
            Value::Object(body).to_string().into_bytes(),
        ))
    }

    fn delete_function(&self, raw: &str, qualifier: Option<&str>) -> ApiResult<Response> {
        if qualifier == Some("$LATEST") {
            return Err(ApiError::invalid(
                "$LATEST version cannot be deleted without deleting the function.",
            ));
        }
        let (f, _) = self.resolve(raw, qualifier)?;
        self.registry.delete(&f.name).map_err(storage)?;
        self.scheduler.retire(&f.name);
        Ok(Response::new(204))
    }

    fn invoke(
        &self,
        req: &Request,
        raw: &str,
        qualifier: Option<&str>,
        request_id: &str,
    ) -> ApiResult<Response> {
        let kind = req
            .header("X-Amz-Invocation-Type")
            .unwrap_or("RequestResponse");
        if !matches!(kind, "RequestResponse" | "Event" | "DryRun") {
            return Err(ApiError::validation(
                kind,
                "invocationType",
                "Member must satisfy enum value set: [Event, RequestResponse, DryRun]",
            ));
        }
        let log_type = req.header("X-Amz-Log-Type").unwrap_or("None");
        if !matches!(log_type, "None" | "Tail") {
            return Err(ApiError::validation(
                log_type,
                "logType",
                "Member must satisfy enum value set: [None, Tail]",
            ));
        }
        let (f, _) = self.resolve(raw, qualifier)?;
        if req.body.len() > MAX_SYNC_PAYLOAD {
            return Err(ApiError::new(
                413,
                "RequestEntityTooLargeException",
                format!("Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the InvokeFunction operation"),
            ));
        }
        let payload = if req.body.iter().all(u8::is_ascii_whitespace) {
            b"{}".to_vec()
        } else {
            req.body.clone()
        };
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
            return Err(ApiError::new(
                400,
                "InvalidRequestContentException",
                format!("Could not parse request body into json: {e}"),
            ));
        }
        let client_context = match req.header("X-Amz-Client-Context") {
            None => None,
            Some(c) => {
                if c.len() > 3583 {
                    return Err(ApiError::invalid(
                        "Client context must be smaller than 3583 bytes.",
                    ));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(c)
                    .map_err(|_| {
                        ApiError::new(
                            400,
                            "InvalidRequestContentException",
                            "Client context must be a valid Base64-encoded JSON object.",
                        )
                    })?;
                Some(String::from_utf8(bytes).map_err(|_| {
                    ApiError::new(
                        400,
                        "InvalidRequestContentException",
                        "Client context must be a valid Base64-encoded JSON object.",
                    )
                })?)
            }
        };
        match kind {
            "DryRun" => return Ok(Response::new(204)),
            "Event" => {
                return Err(ApiError::invalid(
                    "InvocationType Event is not supported by this lamina yet.",
                ));
            }
            _ => {}
        }
        let invoked_arn = match qualifier {
            Some(q) => format!("{}:{q}", self.arn(&f.name)),
            None if raw.starts_with("arn:") => raw.to_string(),
            None => self.arn(&f.name),
        };
        let outcome = self.scheduler.invoke(
            &f,
            InvokeRequest {
                request_id: request_id.to_string(),
                invoked_arn,
                payload,
                client_context,
                tail: log_type == "Tail",
            },
        );
        let mut resp = match outcome.result {
            Outcome::Response { content_type, body } => Response::json(200, body)
                .header("X-Amz-Executed-Version", "$LATEST")
                .content_type(content_type),
            Outcome::FunctionError { body } => Response::json(200, body)
                .header("X-Amz-Executed-Version", "$LATEST")
                .header("X-Amz-Function-Error", "Unhandled"),
            Outcome::Throttled(reason) => {
                let mut e = ApiError::new(429, "TooManyRequestsException", "Rate Exceeded.");
                e.reason = Some(reason);
                return Err(e);
            }
            Outcome::InvalidRuntime(msg) => {
                return Err(ApiError::new(502, "InvalidRuntimeException", msg))
            }
            Outcome::ServiceError(msg) => return Err(ApiError::service(msg)),
        };
        if let Some(tail) = outcome.log_tail {
            resp = resp.header(
                "X-Amz-Log-Result",
                base64::engine::general_purpose::STANDARD.encode(tail),
            );
        }
        Ok(resp)
    }
}

impl Response {
    /// Replaces the Content-Type (the runtime's, when it gave one).
    pub fn content_type(mut self, ct: Option<String>) -> Response {
        if let Some(ct) = ct {
            self.headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
            self.headers.push(("Content-Type".into(), ct));
        }
        self
    }
}

fn storage(e: RegistryError) -> ApiError {
    ApiError::service(format!("storage error: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_paths() {
        assert_eq!(
            query("Qualifier=%24LATEST&MaxItems=5"),
            vec![
                ("Qualifier".into(), "$LATEST".into()),
                ("MaxItems".into(), "5".into())
            ]
        );
        assert_eq!(
            percent_decode("arn%3Aaws%3Alambda").as_deref(),
            Some("arn:aws:lambda")
        );
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
