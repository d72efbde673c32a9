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

// Asynchronous invocation: Event invokes and the EventInvokeConfig operations.
#[path = "event_invoke.rs"]
mod event_invoke;

/// Largest synchronous Invoke payload.
pub const MAX_SYNC_PAYLOAD: usize = 6_291_456;
/// Largest direct-upload ZIP.
pub const MAX_ZIP: usize = 52_428_800;

pub struct Api {
    pub registry: Arc<Registry>,
    pub scheduler: Arc<Scheduler>,
    pub layers: Arc<crate::layers::Layers>,
    pub keys: HashMap<String, String>,
    pub region: String,
    pub account: String,
    /// The state directory (log files are read from it).
    pub state_dir: std::path::PathBuf,
    /// Event invokes' durable queue and the EventInvokeConfigs.
    pub async_queue: Arc<crate::async_invoke::AsyncQueue>,
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

pub(super) fn query(raw: &str) -> Vec<(String, String)> {
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
        sigv4::verify(&r, &self.keys, &["lambda", "logs"], now_unix(), 900)
            .map(|_| ())
            .map_err(|e| ApiError::new(e.http_status(), e.error_type(), e.message()))
    }

    fn route(&self, req: &Request, request_id: &str) -> ApiResult<Response> {
        if req.method == "GET" && req.raw_path == "/metrics" {
            return Ok(self.metrics());
        }
        // Layer content links carry their own signature (api/layers.rs).
        if let Some(resp) = self.layer_content_download(req) {
            return Ok(resp);
        }
        self.authenticate(req)?;
        if req.method == "POST" && req.raw_path == "/" && Api::is_logs_call(req) {
            return Ok(self.logs_api(req));
        }
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
                self.list_functions(qv("Marker"), qv("MaxItems"), qv("FunctionVersion"))
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
            ("PUT", ["2015-03-31", "functions", name, "code"]) => {
                self.update_function_code(req, name)
            }
            ("PUT", ["2015-03-31", "functions", name, "configuration"]) => {
                self.update_function_configuration(req, name)
            }
            ("POST", ["2015-03-31", "functions", name, "versions"]) => {
                self.publish_version(req, name)
            }
            ("GET", ["2015-03-31", "functions", name, "versions"]) => {
                self.list_versions(name, qv("Marker"), qv("MaxItems"))
            }
            ("POST", ["2015-03-31", "functions", name, "aliases"]) => self.create_alias(req, name),
            ("GET", ["2015-03-31", "functions", name, "aliases"]) => {
                self.list_aliases(name, qv("FunctionVersion"), qv("Marker"), qv("MaxItems"))
            }
            ("GET", ["2015-03-31", "functions", name, "aliases", alias]) => {
                self.get_alias(name, alias)
            }
            ("PUT", ["2015-03-31", "functions", name, "aliases", alias]) => {
                self.update_alias(req, name, alias)
            }
            ("DELETE", ["2015-03-31", "functions", name, "aliases", alias]) => {
                self.delete_alias(name, alias)
            }
            ("GET", ["2024-08-31", "functions", name, "recursion-config"]) => {
                self.get_recursion_config(name)
            }
            ("PUT", ["2024-08-31", "functions", name, "recursion-config"]) => {
                self.put_recursion_config(req, name)
            }
            ("GET", ["2021-07-20", "functions", name, "runtime-management-config"]) => {
                self.get_runtime_management(name, qv("Qualifier"))
            }
            ("PUT", ["2021-07-20", "functions", name, "runtime-management-config"]) => {
                self.put_runtime_management(req, name, qv("Qualifier"))
            }
            ("POST", ["2014-11-13", "functions", name, "invoke-async"]) => {
                self.invoke_async_legacy(req, name, request_id)
            }
            ("POST", ["2015-03-31", "functions", name, "policy"]) => {
                self.add_permission(req, name, qv("Qualifier"))
            }
            ("GET", ["2015-03-31", "functions", name, "policy"]) => {
                self.get_policy(name, qv("Qualifier"))
            }
            ("DELETE", ["2015-03-31", "functions", name, "policy", sid]) => {
                self.remove_permission(name, sid, qv("Qualifier"), qv("RevisionId"))
            }
            ("POST", ["2017-03-31", "tags", arn]) => self.tag_resource(req, arn),
            ("DELETE", ["2017-03-31", "tags", arn]) => {
                let keys: Vec<&str> = q
                    .iter()
                    .filter(|(k, _)| k == "tagKeys")
                    .map(|(_, v)| v.as_str())
                    .collect();
                self.untag_resource(arn, &keys)
            }
            ("GET", ["2017-03-31", "tags", arn]) => self.list_tags(arn),
            ("GET", ["2016-08-19", "account-settings"]) => self.account_settings(),
            ("PUT", ["2017-10-31", "functions", name, "concurrency"]) => {
                self.put_function_concurrency(req, name)
            }
            ("GET", ["2019-09-30", "functions", name, "concurrency"]) => {
                self.get_function_concurrency(name)
            }
            ("DELETE", ["2017-10-31", "functions", name, "concurrency"]) => {
                self.delete_function_concurrency(name)
            }
            ("PUT", ["2019-09-30", "functions", name, "provisioned-concurrency"]) => {
                self.put_provisioned(req, name, qv("Qualifier"))
            }
            ("GET", ["2019-09-30", "functions", name, "provisioned-concurrency"])
                if qv("List") == Some("ALL") =>
            {
                self.list_provisioned(name, qv("Marker"), qv("MaxItems"))
            }
            ("GET", ["2019-09-30", "functions", name, "provisioned-concurrency"]) => {
                self.get_provisioned(name, qv("Qualifier"))
            }
            ("DELETE", ["2019-09-30", "functions", name, "provisioned-concurrency"]) => {
                self.delete_provisioned(name, qv("Qualifier"))
            }
            // Layers (api/layers.rs).
            (_, ["2018-10-31", rest @ ..]) => self.route_layers(req, rest, &q),
            // Asynchronous invocation configuration (event_invoke.rs).
            (_, ["2019-09-25", "functions", name, "event-invoke-config"]) => {
                self.event_invoke_config(req, name, qv("Qualifier"))
            }
            ("GET", ["2019-09-25", "functions", name, "event-invoke-config", "list"]) => {
                self.list_event_invoke_configs(name, qv("Marker"), qv("MaxItems"))
            }
            _ => Err(ApiError::new(
                404,
                "UnknownOperationException",
                format!("Unknown operation {} {}", req.method, req.raw_path),
            )),
        }
    }

    pub fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            self.region, self.account
        )
    }

    /// Parses a function reference (name or ARN, with the qualifier from the name or the
    /// query); returns the bare name and the qualifier.
    pub fn function_ref(
        &self,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<(String, Option<String>)> {
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
        if let Some(q) = qualifier {
            validate::qualifier(q)?;
        }
        let q = r.qualifier.clone().or(qualifier.map(str::to_string));
        Ok((r.name, q))
    }

    /// `Function not found: <arn>[:<qualifier>]`.
    pub fn function_not_found(&self, name: &str, q: Option<&str>) -> ApiError {
        let mut arn = self.arn(name);
        if let Some(q) = q {
            arn = format!("{arn}:{q}");
        }
        ApiError::not_found(format!("Function not found: {arn}"))
    }

    /// Resolves a function reference to a stored version: `$LATEST` without a qualifier, the
    /// version a number names, or an alias's primary version. Returns the qualifier too.
    pub fn resolve(
        &self,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<(Arc<StoredFunction>, Option<String>)> {
        let (name, q) = self.function_ref(raw, qualifier)?;
        let f = self.lookup(&name, q.as_deref(), false)?;
        Ok((f, q))
    }

    /// Looks a qualifier up; with `route`, an alias with a routing configuration picks one of
    /// its versions by weight (as Invoke does).
    pub fn lookup(
        &self,
        name: &str,
        q: Option<&str>,
        route: bool,
    ) -> ApiResult<Arc<StoredFunction>> {
        let not_found = || self.function_not_found(name, q);
        let version = match q {
            None | Some("$LATEST") => "$LATEST".to_string(),
            Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => v.to_string(),
            Some(alias) => {
                let a = self
                    .registry
                    .get_alias(name, alias)
                    .map_err(storage)?
                    .ok_or_else(not_found)?;
                let primary = a["FunctionVersion"]
                    .as_str()
                    .unwrap_or("$LATEST")
                    .to_string();
                match a["RoutingConfig"]["AdditionalVersionWeights"].as_object() {
                    Some(w) if route && !w.is_empty() => {
                        let roll = crate::util::random_unit();
                        let mut acc = 0.0;
                        let mut pick = primary;
                        for (v, weight) in w {
                            acc += weight.as_f64().unwrap_or(0.0);
                            if roll < acc {
                                pick = v.clone();
                                break;
                            }
                        }
                        pick
                    }
                    _ => primary,
                }
            }
        };
        self.registry
            .get_version(name, &version)
            .map_err(storage)?
            .ok_or_else(not_found)
    }

    fn create_function(&self, req: &Request) -> ApiResult<Response> {
        let b = json_body(req)?;
        let b = &b;
        let name_raw = validate::string_max(b, "FunctionName", "functionName", 256)?
            .ok_or_else(|| ApiError::invalid("FunctionName is required"))?;
        let name = validate::new_function_name(name_raw)?;
        if validate::string_max(b, "Role", "role", 2048)?.is_none() {
            return Err(ApiError::invalid("Role is required"));
        }
        let package = validate::string_max(b, "PackageType", "packageType", 10)?.unwrap_or("Zip");
        if package != "Zip" {
            return Err(ApiError::invalid(format!(
                "PackageType {package} is not supported by this lamina; use Zip."
            )));
        }
        if validate::string_max(b, "Runtime", "runtime", 64)?.is_none()
            || validate::string_max(b, "Handler", "handler", 128)?.is_none()
        {
            return Err(ApiError::invalid("Runtime and Handler are mandatory parameters for functions created with deployment packages."));
        }
        let mut config = json!({
            "FunctionName": name,
            "FunctionArn": self.arn(&name),
        });
        super::config::apply(b, &mut config, true)?;
        let arch = super::config::architectures(b)?.unwrap_or(json!([super::config::HOST_ARCH]));
        let layers = self.function_layers(b.get("Layers"))?;
        let tags = validate::tags(b.get("Tags"))?;
        let publish = validate::bool_member(b, "Publish")?.unwrap_or(false);
        let code = b
            .get("Code")
            .and_then(Value::as_object)
            .ok_or_else(|| ApiError::invalid("Code is required"))?;
        let zip = zip_file(code)?;
        if self.registry.get(&name).map_err(storage)?.is_some() {
            return Err(ApiError::conflict(format!(
                "Function already exist: {name}"
            )));
        }
        let (code_hex, _) = self.store_code(&zip)?;
        let extra = json!({
            "CodeSize": zip.len(),
            "LastModified": crate::util::utc_timestamp("+0000"),
            "CodeSha256": code_sha256(&code_hex),
            "Version": "$LATEST",
            "RevisionId": crate::util::uuid4(),
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": arch,
            "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
            if let Some(l) = layers {
                c.insert("Layers".into(), l);
            }
        }
        let f = StoredFunction {
            name: name.clone(),
            version: "$LATEST".into(),
            config,
            code_hex,
        };
        let published = self
            .registry
            .create(&f, &tags, publish)
            .map_err(|e| match e {
                RegistryError::Exists(n) => {
                    ApiError::conflict(format!("Function already exist: {n}"))
                }
                other => storage(other),
            })?;
        // The code is unpacked already, so the function is Active at once; the response reports
        // the creation in progress, as Lambda's does (boto3's waiters then see Active).
        let mut out = published.map_or(f.config, |p| p.config.clone());
        out["State"] = json!("Pending");
        out["StateReason"] = json!("The function is being created.");
        out["StateReasonCode"] = json!("Creating");
        if let Some(o) = out.as_object_mut() {
            o.remove("LastUpdateStatus");
        }
        Ok(Response::json(201, out.to_string().into_bytes()))
    }

    /// Stores a ZIP, mapping bad archives to Lambda's messages.
    pub fn store_code(&self, zip: &[u8]) -> ApiResult<(String, std::path::PathBuf)> {
        self.registry.store_code(zip).map_err(|e| match e {
            RegistryError::Unzip(u) if !u.is_internal() => ApiError::invalid(u.lambda_message()),
            other => storage(other),
        })
    }

    /// A function's `Layers` member (api/layers.rs): at most 5 existing versions, one per
    /// layer; None when there are none.
    pub(super) fn function_layers(&self, layers: Option<&Value>) -> ApiResult<Option<Value>> {
        let l = super::layers::function_layers(&self.layers, layers)?;
        Ok(l.as_deref()
            .filter(|l| !l.is_empty())
            .map(super::layers::config_layers))
    }

    fn get_function(&self, raw: &str, qualifier: Option<&str>, full: bool) -> ApiResult<Response> {
        let (f, q) = self.resolve(raw, qualifier)?;
        let mut config = f.config.clone();
        if let Some(q) = &q {
            config["FunctionArn"] = json!(format!("{}:{q}", self.arn(&f.name)));
        }
        let body = if full {
            let mut out = json!({"Configuration": config, "Code": {"RepositoryType": "S3",
                "Location": format!("file://{}", self.registry.code_blob(&f.code_hex).display())}});
            if let Some(meta) = self.registry.meta(&f.name).map_err(storage)? {
                if !meta.tags.is_empty() {
                    out["Tags"] = Value::Object(meta.tags);
                }
                if let Some(r) = meta.reserved {
                    out["Concurrency"] = json!({ "ReservedConcurrentExecutions": r });
                }
            }
            out
        } else {
            config
        };
        Ok(Response::json(200, body.to_string().into_bytes()))
    }

    fn list_functions(
        &self,
        marker: Option<&str>,
        max_items: Option<&str>,
        function_version: Option<&str>,
    ) -> ApiResult<Response> {
        let max = page_size(max_items, 50)?;
        let all = match function_version {
            None => false,
            Some("ALL") => true,
            Some(v) => {
                return Err(ApiError::validation(
                    v,
                    "functionVersion",
                    "Member must satisfy enum value set: [ALL]",
                ))
            }
        };
        let page = self.registry.list(marker, max + 1).map_err(storage)?;
        let more = page.len() > max;
        let mut items: Vec<Value> = Vec::new();
        for f in page.iter().take(max) {
            if all {
                for v in self
                    .registry
                    .list_versions(&f.name, None, usize::MAX)
                    .map_err(storage)?
                {
                    items.push(list_item(&v, true));
                }
            } else {
                items.push(list_item(f, false));
            }
        }
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
        let (name, q) = self.function_ref(raw, qualifier)?;
        match q.as_deref() {
            Some("$LATEST") => Err(ApiError::invalid(
                "$LATEST version cannot be deleted without deleting the function.",
            )),
            None => {
                if !self.registry.delete(&name).map_err(storage)? {
                    return Err(self.function_not_found(&name, None));
                }
                self.scheduler.retire(&name, None);
                // Its EventInvokeConfigs and queued events go with it.
                self.async_queue
                    .forget(&name, None)
                    .map_err(|e| ApiError::service(format!("storage error: {e}")))?;
                Ok(Response::new(204))
            }
            Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => {
                let gone = self
                    .registry
                    .delete_version(&name, v)
                    .map_err(|e| match e {
                        RegistryError::Conflict(m) => ApiError::conflict(m),
                        other => storage(other),
                    })?;
                if !gone {
                    return Err(self.function_not_found(&name, Some(v)));
                }
                self.scheduler.retire(&name, Some(v));
                self.async_queue
                    .forget(&name, Some(v))
                    .map_err(|e| ApiError::service(format!("storage error: {e}")))?;
                Ok(Response::new(204))
            }
            Some(alias) => {
                if self
                    .registry
                    .get_alias(&name, alias)
                    .map_err(storage)?
                    .is_none()
                {
                    return Err(self.function_not_found(&name, Some(alias)));
                }
                Err(ApiError::invalid(format!(
                    "Qualifier {alias} is an alias; delete it with DeleteAlias."
                )))
            }
        }
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
        let (name, q) = self.function_ref(raw, qualifier)?;
        let f = self.lookup(&name, q.as_deref(), true)?;
        if kind == "Event" {
            Api::check_async_payload(req.body.len())?;
        }
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
        if kind == "DryRun" {
            return Ok(Response::new(204));
        }
        let invoked_arn = match &q {
            Some(q) => format!("{}:{q}", self.arn(&f.name)),
            None => self.arn(&f.name),
        };
        if kind == "Event" {
            return self.invoke_event(&f, q.clone(), invoked_arn, payload, request_id);
        }
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
                .header("X-Amz-Executed-Version", f.version.clone())
                .content_type(content_type),
            Outcome::FunctionError { body } => Response::json(200, body)
                .header("X-Amz-Executed-Version", f.version.clone())
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

impl Api {
    /// InvokeAsync (deprecated, `/2014-11-13/.../invoke-async`): an Event invoke answering
    /// `{"Status": 202}`.
    fn invoke_async_legacy(
        &self,
        req: &Request,
        raw: &str,
        request_id: &str,
    ) -> ApiResult<Response> {
        let (name, q) = self.function_ref(raw, None)?;
        let f = self.lookup(&name, q.as_deref(), false)?;
        Api::check_async_payload(req.body.len())?;
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
        let invoked_arn = match &q {
            Some(q) => format!("{}:{q}", self.arn(&name)),
            None => self.arn(&name),
        };
        self.invoke_event(&f, q, invoked_arn, payload, request_id)?;
        Ok(Response::json(202, b"{\"Status\": 202}".to_vec()))
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

pub fn storage(e: RegistryError) -> ApiError {
    ApiError::service(format!("storage error: {e}"))
}

/// A JSON object request body.
pub fn json_body(req: &Request) -> ApiResult<Map<String, Value>> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::invalid(format!("Could not parse request body into json: {e}")))?;
    match body {
        Value::Object(o) => Ok(o),
        _ => Err(ApiError::invalid(
            "Could not parse request body into json: expected an object",
        )),
    }
}

/// `MaxItems` of a list operation (1-10000), capped at `cap` per page.
pub fn page_size(max_items: Option<&str>, cap: usize) -> ApiResult<usize> {
    match max_items {
        None => Ok(cap),
        Some(m) => match m.parse::<i64>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok((n as usize).min(cap)),
            _ => Err(ApiError::validation(
                m,
                "maxItems",
                "Member must have value between 1 and 10000",
            )),
        },
    }
}

/// Base64 SHA-256 from the hex one.
pub fn code_sha256(code_hex: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(hex::decode(code_hex).unwrap_or_default())
}

/// `Code.ZipFile` decoded, within the direct-upload limit.
pub fn zip_file(code: &Map<String, Value>) -> ApiResult<Vec<u8>> {
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
        .map_err(|_| {
            ApiError::invalid(
                "Could not unzip uploaded file. Please check your file, then try to upload again.",
            )
        })?;
    if zip.len() > MAX_ZIP {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLargeException",
            "Zipped size must be smaller than 52428800 bytes",
        ));
    }
    Ok(zip)
}

/// A FunctionConfiguration as list operations show it (no state members); in version
/// listings `$LATEST`'s ARN is qualified too.
pub fn list_item(f: &StoredFunction, versions: bool) -> Value {
    let mut c = f.config.clone();
    if versions && f.version == "$LATEST" {
        if let Some(arn) = c["FunctionArn"].as_str() {
            c["FunctionArn"] = json!(format!("{arn}:$LATEST"));
        }
    }
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
