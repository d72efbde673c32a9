//! The layer operations of Lambda's API (`/2018-10-31/layers...`): PublishLayerVersion,
//! GetLayerVersion, GetLayerVersionByArn, ListLayers, ListLayerVersions, DeleteLayerVersion,
//! AddLayerVersionPermission, GetLayerVersionPolicy, RemoveLayerVersionPermission; plus the
//! `Layers` member of a function's configuration and the download behind `Content.Location`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use super::error::{ApiError, ApiResult};
use super::http::{Request, Response};
use super::lambda::{Api, MAX_ZIP};
use super::validate;
use crate::layers::{self, Filter, LayerError, LayerRef, LayerVersion, Layers, NewLayerVersion};
use crate::registry::unzip;

/// ListLayers / ListLayerVersions page size (and MaxItems' maximum).
const MAX_ITEMS: i64 = 50;
/// How long a `Content.Location` link works, as Lambda's.
const LOCATION_TTL_SECS: i64 = 600;

const LAYER_NAME_PATTERN: &str = "(arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:\\d{12}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+";
const LAYER_VERSION_ARN_PATTERN: &str = "(arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:\\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+)|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+)";
const ARCHITECTURES: &[&str] = &["x86_64", "arm64"];
const NOT_FOUND: &str = "The resource you requested does not exist.";

/// Maps a store failure to Lambda's error (user errors to 4xx, ours to 500).
pub fn layer_error(e: LayerError) -> ApiError {
    match e {
        LayerError::Unzip(u) if !u.is_internal() => ApiError::invalid(u.lambda_message()),
        LayerError::BadArn(arn) => ApiError::new(
            400,
            "ValidationException",
            format!("1 validation error detected: Value '[{arn}]' at 'layers' failed to satisfy constraint: Member must satisfy constraint: [Member must have length less than or equal to 2048, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: {LAYER_VERSION_ARN_PATTERN}, Member must not be null]"),
        ),
        e @ (LayerError::TooMany
        | LayerError::OtherRegion(_)
        | LayerError::SameLayer(..)
        | LayerError::VersionMissing(_)) => ApiError::invalid(e.to_string()),
        e @ LayerError::StatementExists(_) => ApiError::conflict(e.to_string()),
        e @ LayerError::StatementMissing(_) => ApiError::not_found(e.to_string()),
        e @ LayerError::RevisionMismatch => {
            ApiError::new(412, "PreconditionFailedException", e.to_string())
        }
        other => ApiError::service(format!("layer store: {other}")),
    }
}

/// Validates and resolves a function's `Layers` member (CreateFunction,
/// UpdateFunctionConfiguration): `None` when absent.
pub fn function_layers(store: &Layers, member: Option<&Value>) -> ApiResult<Option<Vec<LayerRef>>> {
    let list = match member {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(validate::type_error("Layers", other, "list")),
    };
    let mut arns = Vec::with_capacity(list.len());
    for v in list {
        match v {
            Value::String(s) => arns.push(s.clone()),
            other => return Err(validate::type_error("Layers[]", other, "string")),
        }
    }
    store.resolve_arns(&arns).map(Some).map_err(layer_error)
}

/// The `Layers` member of a FunctionConfiguration.
pub fn config_layers(refs: &[LayerRef]) -> Value {
    Value::Array(
        refs.iter()
            .map(|r| json!({"Arn": r.arn, "CodeSize": r.code_size}))
            .collect(),
    )
}

fn validation(errors: Vec<String>) -> ApiError {
    let n = errors.len();
    ApiError::new(
        400,
        "ValidationException",
        format!(
            "{n} validation error{} detected: {}",
            if n > 1 { "s" } else { "" },
            errors.join("; ")
        ),
    )
}

fn enum_constraint(values: &[&str]) -> String {
    format!(
        "Member must satisfy enum value set: [{}]",
        values.join(", ")
    )
}

/// A list member of strings (`CompatibleRuntimes`, `CompatibleArchitectures`).
fn string_list(b: &Map<String, Value>, member: &str) -> ApiResult<Vec<String>> {
    match b.get(member) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(validate::type_error(
                    &format!("{member}[]"),
                    other,
                    "string",
                )),
            })
            .collect(),
        Some(other) => Err(validate::type_error(member, other, "list")),
    }
}

fn version_number(raw: &str) -> ApiResult<i64> {
    let n: i64 = raw.parse().map_err(|_| {
        ApiError::validation(
            raw,
            "versionNumber",
            "Member must be a number (a layer version)",
        )
    })?;
    if n < 1 {
        return Err(ApiError::invalid("Layer Version Cannot be less than 1"));
    }
    Ok(n)
}

fn max_items(raw: Option<&str>) -> ApiResult<usize> {
    match raw {
        None => Ok(MAX_ITEMS as usize),
        Some(m) => match m.parse::<i64>() {
            Ok(n) if (1..=MAX_ITEMS).contains(&n) => Ok(n as usize),
            Ok(n) if n > MAX_ITEMS => Err(ApiError::validation(
                m,
                "maxItems",
                "Member must have value less than or equal to 50",
            )),
            _ => Err(ApiError::validation(
                m,
                "maxItems",
                "Member must have value greater than or equal to 1",
            )),
        },
    }
}

fn filter<'a>(runtime: Option<&'a str>, arch: Option<&'a str>) -> ApiResult<Filter<'a>> {
    let mut errors = Vec::new();
    if let Some(r) = runtime {
        if !validate::runtime_name_known(r) {
            errors.push(format!(
                "Value '{r}' at 'compatibleRuntime' failed to satisfy constraint: {}",
                enum_constraint(validate::LAMBDA_RUNTIMES)
            ));
        }
    }
    if let Some(a) = arch {
        if !ARCHITECTURES.contains(&a) {
            errors.push(format!(
                "Value '{a}' at 'compatibleArchitecture' failed to satisfy constraint: {}",
                enum_constraint(ARCHITECTURES)
            ));
        }
    }
    if !errors.is_empty() {
        return Err(validation(errors));
    }
    Ok(Filter {
        runtime,
        architecture: arch,
    })
}

fn hex_to_b64(hex: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(hex::decode(hex).unwrap_or_default())
}

/// A layer reference from a path: `Some(name)` when it names a layer of this lamina,
/// `None` when it is another account's or region's (which does not exist here).
struct LayerName {
    name: String,
    ours: bool,
}

impl Api {
    fn layer_name(&self, raw: &str) -> ApiResult<LayerName> {
        let (region, account, name) = layers::parse_layer_name(raw).ok_or_else(|| {
            if raw.len() > 140 {
                ApiError::validation(
                    raw,
                    "layerName",
                    "Member must have length less than or equal to 140",
                )
            } else {
                ApiError::validation(
                    raw,
                    "layerName",
                    &format!(
                        "Member must satisfy regular expression pattern: {LAYER_NAME_PATTERN}"
                    ),
                )
            }
        })?;
        let ours =
            region.is_none_or(|r| r == self.region) && account.is_none_or(|a| a == self.account);
        Ok(LayerName {
            name: name.to_string(),
            ours,
        })
    }

    /// Routes `/2018-10-31/layers...` (`segs` starts at `layers`).
    pub(super) fn route_layers(
        &self,
        req: &Request,
        segs: &[&str],
        q: &[(String, String)],
    ) -> ApiResult<Response> {
        let qv = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        match (req.method.as_str(), segs) {
            ("GET", ["layers"]) if qv("find") == Some("LayerVersion") => {
                self.get_layer_version_by_arn(req, qv("Arn").unwrap_or(""))
            }
            ("GET", ["layers"]) => self.list_layers(
                filter(qv("CompatibleRuntime"), qv("CompatibleArchitecture"))?,
                qv("Marker"),
                max_items(qv("MaxItems"))?,
            ),
            ("POST", ["layers", name, "versions"]) => self.publish_layer_version(req, name),
            ("GET", ["layers", name, "versions"]) => self.list_layer_versions(
                name,
                filter(qv("CompatibleRuntime"), qv("CompatibleArchitecture"))?,
                qv("Marker"),
                max_items(qv("MaxItems"))?,
            ),
            ("GET", ["layers", name, "versions", n]) => {
                let l = self.layer_name(name)?;
                let n = version_number(n)?;
                self.answer_version(req, &l, n)
            }
            ("DELETE", ["layers", name, "versions", n]) => {
                let l = self.layer_name(name)?;
                let n = version_number(n)?;
                if l.ours {
                    self.layers.delete(&l.name, n).map_err(layer_error)?;
                }
                Ok(Response::new(204))
            }
            ("POST", ["layers", name, "versions", n, "policy"]) => {
                self.add_layer_version_permission(req, name, n, qv("RevisionId"))
            }
            ("GET", ["layers", name, "versions", n, "policy"]) => {
                self.get_layer_version_policy(name, n)
            }
            ("DELETE", ["layers", name, "versions", n, "policy", sid]) => {
                self.remove_layer_version_permission(name, n, sid, qv("RevisionId"))
            }
            _ => Err(ApiError::new(
                404,
                "UnknownOperationException",
                format!("Unknown operation {} {}", req.method, req.raw_path),
            )),
        }
    }

    fn version_json(&self, req: &Request, v: &LayerVersion, full: bool) -> Value {
        let mut o = Map::new();
        if full {
            o.insert(
                "Content".into(),
                json!({
                    "Location": self.layer_location(req, v),
                    "CodeSha256": hex_to_b64(&v.code_hex),
                    "CodeSize": v.code_size,
                }),
            );
            o.insert("LayerArn".into(), json!(self.layers.layer_arn(&v.name)));
        }
        o.insert(
            "LayerVersionArn".into(),
            json!(self.layers.version_arn(&v.name, v.version)),
        );
        o.insert("Version".into(), json!(v.version));
        o.insert("Description".into(), json!(v.description));
        o.insert("CreatedDate".into(), json!(v.created_date));
        o.insert("CompatibleRuntimes".into(), json!(v.compatible_runtimes));
        o.insert(
            "CompatibleArchitectures".into(),
            json!(v.compatible_architectures),
        );
        if let Some(l) = &v.license_info {
            o.insert("LicenseInfo".into(), json!(l));
        }
        Value::Object(o)
    }

    fn answer_version(&self, req: &Request, l: &LayerName, n: i64) -> ApiResult<Response> {
        let v = if l.ours {
            self.layers.get(&l.name, n).map_err(layer_error)?
        } else {
            None
        };
        let v = v.ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
        Ok(Response::json(
            200,
            self.version_json(req, &v, true).to_string().into_bytes(),
        ))
    }

    fn publish_layer_version(&self, req: &Request, raw_name: &str) -> ApiResult<Response> {
        let l = self.layer_name(raw_name)?;
        if !l.ours {
            return Err(ApiError::invalid(format!(
                "Layers can only be published in this lamina's region ({}) and account ({}).",
                self.region, self.account
            )));
        }
        let body: Value = serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::invalid(format!("Could not parse request body into json: {e}"))
        })?;
        let b = body.as_object().ok_or_else(|| {
            ApiError::invalid("Could not parse request body into json: expected an object")
        })?;
        let description = validate::string_max(b, "Description", "description", 256)?.unwrap_or("");
        let license = validate::string_max(b, "LicenseInfo", "licenseInfo", 512)?;
        let runtimes = string_list(b, "CompatibleRuntimes")?;
        let archs = string_list(b, "CompatibleArchitectures")?;
        let mut errors = Vec::new();
        if runtimes.len() > 15 {
            errors.push(format!("Value '[{}]' at 'compatibleRuntimes' failed to satisfy constraint: Member must have length less than or equal to 15", runtimes.join(", ")));
        } else if runtimes.iter().any(|r| !validate::runtime_name_known(r)) {
            errors.push(format!(
                "Value '[{}]' at 'compatibleRuntimes' failed to satisfy constraint: {}",
                runtimes.join(", "),
                enum_constraint(validate::LAMBDA_RUNTIMES)
            ));
        }
        if archs.len() > 2 {
            errors.push(format!("Value '[{}]' at 'compatibleArchitectures' failed to satisfy constraint: Member must have length less than or equal to 2", archs.join(", ")));
        } else if archs.iter().any(|a| !ARCHITECTURES.contains(&a.as_str())) {
            errors.push(format!("Value '[{}]' at 'compatibleArchitectures' failed to satisfy constraint: Member must satisfy constraint: [{}, Member must not be null]", archs.join(", "), enum_constraint(ARCHITECTURES)));
        }
        if !errors.is_empty() {
            return Err(validation(errors));
        }
        let content = match b.get("Content") {
            Some(Value::Object(c)) => c,
            None | Some(Value::Null) => return Err(ApiError::invalid("Content is required")),
            Some(other) => return Err(validate::type_error("Content", other, "structure")),
        };
        let zip_b64 = match content.get("ZipFile") {
            Some(Value::String(s)) => s,
            Some(other) => return Err(validate::type_error("Content.ZipFile", other, "blob")),
            None if content.contains_key("S3Bucket") => {
                return Err(ApiError::invalid(
                    "Only Content.ZipFile is supported by this lamina.",
                ))
            }
            None => return Err(ApiError::invalid("Content.ZipFile is required")),
        };
        let zip = base64::engine::general_purpose::STANDARD
            .decode(zip_b64)
            .map_err(|_| ApiError::invalid(unzip::MSG_INVALID_ZIP))?;
        if zip.len() > MAX_ZIP {
            return Err(ApiError::new(
                413,
                "RequestEntityTooLargeException",
                format!("Zipped size must be smaller than {MAX_ZIP} bytes"),
            ));
        }
        let v = self
            .layers
            .publish(&NewLayerVersion {
                name: &l.name,
                description,
                license_info: license,
                compatible_runtimes: &runtimes,
                compatible_architectures: &archs,
                zip: &zip,
            })
            .map_err(layer_error)?;
        Ok(Response::json(
            201,
            self.version_json(req, &v, true).to_string().into_bytes(),
        ))
    }

    fn get_layer_version_by_arn(&self, req: &Request, arn: &str) -> ApiResult<Response> {
        let p = layers::parse_version_arn(arn).ok_or_else(|| {
            ApiError::validation(
                arn,
                "arn",
                &format!(
                    "Member must satisfy regular expression pattern: {LAYER_VERSION_ARN_PATTERN}"
                ),
            )
        })?;
        let l = LayerName {
            name: p.name.to_string(),
            ours: p.region == self.region && p.account == self.account,
        };
        self.answer_version(req, &l, p.version)
    }

    fn list_layers(&self, f: Filter<'_>, marker: Option<&str>, max: usize) -> ApiResult<Response> {
        let page = self
            .layers
            .list_layers(f, marker, max + 1)
            .map_err(layer_error)?;
        let more = page.len() > max;
        let items: Vec<Value> = page
            .iter()
            .take(max)
            .map(|v| {
                json!({
                    "LayerName": v.name,
                    "LayerArn": self.layers.layer_arn(&v.name),
                    "LatestMatchingVersion": self.version_json_list(v),
                })
            })
            .collect();
        let mut body = Map::new();
        body.insert("Layers".into(), Value::Array(items));
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

    fn version_json_list(&self, v: &LayerVersion) -> Value {
        let mut o = Map::new();
        o.insert(
            "LayerVersionArn".into(),
            json!(self.layers.version_arn(&v.name, v.version)),
        );
        o.insert("Version".into(), json!(v.version));
        o.insert("Description".into(), json!(v.description));
        o.insert("CreatedDate".into(), json!(v.created_date));
        o.insert("CompatibleRuntimes".into(), json!(v.compatible_runtimes));
        o.insert(
            "CompatibleArchitectures".into(),
            json!(v.compatible_architectures),
        );
        if let Some(l) = &v.license_info {
            o.insert("LicenseInfo".into(), json!(l));
        }
        Value::Object(o)
    }

    fn list_layer_versions(
        &self,
        raw_name: &str,
        f: Filter<'_>,
        marker: Option<&str>,
        max: usize,
    ) -> ApiResult<Response> {
        let l = self.layer_name(raw_name)?;
        let before = match marker {
            None => None,
            Some(m) => Some(
                m.parse::<i64>()
                    .map_err(|_| ApiError::invalid(format!("Invalid marker: {m}")))?,
            ),
        };
        let page = if l.ours {
            self.layers
                .list_versions(&l.name, f, before, max + 1)
                .map_err(layer_error)?
        } else {
            Vec::new()
        };
        let more = page.len() > max;
        let items: Vec<Value> = page
            .iter()
            .take(max)
            .map(|v| self.version_json_list(v))
            .collect();
        let mut body = Map::new();
        body.insert("LayerVersions".into(), Value::Array(items));
        if more {
            if let Some(last) = page.get(max - 1) {
                body.insert("NextMarker".into(), json!(last.version.to_string()));
            }
        }
        Ok(Response::json(
            200,
            Value::Object(body).to_string().into_bytes(),
        ))
    }

    /// The layer version a policy operation names, which must exist.
    fn policy_target(&self, raw_name: &str, raw_version: &str) -> ApiResult<(String, i64)> {
        let l = self.layer_name(raw_name)?;
        let n = version_number(raw_version)?;
        let exists = l.ours && self.layers.get(&l.name, n).map_err(layer_error)?.is_some();
        if !exists {
            return Err(self.version_missing(&l.name, n));
        }
        Ok((l.name, n))
    }

    fn version_missing(&self, name: &str, n: i64) -> ApiError {
        ApiError::not_found(format!(
            "Layer version {} does not exist.",
            self.layers.version_arn(name, n)
        ))
    }

    fn add_layer_version_permission(
        &self,
        req: &Request,
        raw_name: &str,
        raw_version: &str,
        revision: Option<&str>,
    ) -> ApiResult<Response> {
        let body: Value = serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::invalid(format!("Could not parse request body into json: {e}"))
        })?;
        let b = body.as_object().ok_or_else(|| {
            ApiError::invalid("Could not parse request body into json: expected an object")
        })?;
        let sid = validate::string_max(b, "StatementId", "statementId", 100)?
            .ok_or_else(|| ApiError::invalid("StatementId is required"))?;
        if sid.is_empty() || !layers::valid_name(sid) {
            return Err(ApiError::validation(
                sid,
                "statementId",
                "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)",
            ));
        }
        let action = validate::string_max(b, "Action", "action", 22)?
            .ok_or_else(|| ApiError::invalid("Action is required"))?;
        if action != "lambda:GetLayerVersion" {
            return Err(ApiError::validation(
                action,
                "action",
                "Member must satisfy regular expression pattern: lambda:GetLayerVersion",
            ));
        }
        let principal = validate::string_max(b, "Principal", "principal", 10000)?
            .ok_or_else(|| ApiError::invalid("Principal is required"))?;
        let account_principal = |a: &str| a.len() == 12 && a.chars().all(|c| c.is_ascii_digit());
        let principal_json = if principal == "*" {
            json!("*")
        } else if account_principal(principal) {
            json!({"AWS": format!("arn:aws:iam::{principal}:root")})
        } else if principal
            .strip_prefix("arn:aws")
            .and_then(|r| r.split_once(":iam::"))
            .and_then(|(part, r)| r.strip_suffix(":root").map(|a| (part, a)))
            .is_some_and(|(part, a)| {
                part.chars().all(|c| c.is_ascii_alphabetic() || c == '-') && account_principal(a)
            })
        {
            json!({"AWS": principal})
        } else {
            return Err(ApiError::validation(
                principal,
                "principal",
                "Member must satisfy regular expression pattern: \\d{12}|\\*|arn:(aws[a-zA-Z-]*):iam::\\d{12}:root",
            ));
        };
        let org = validate::string_max(b, "OrganizationId", "organizationId", 34)?;
        if let Some(o) = org {
            let ok = o.strip_prefix("o-").is_some_and(|r| {
                (10..=32).contains(&r.len())
                    && r.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            });
            if !ok {
                return Err(ApiError::validation(
                    o,
                    "organizationId",
                    "Member must satisfy regular expression pattern: o-[a-z0-9]{10,32}",
                ));
            }
        }
        let (name, n) = self.policy_target(raw_name, raw_version)?;
        let mut statement = json!({
            "Sid": sid,
            "Effect": "Allow",
            "Principal": principal_json,
            "Action": action,
            "Resource": self.layers.version_arn(&name, n),
        });
        if let Some(o) = org {
            statement["Condition"] = json!({"StringEquals": {"aws:PrincipalOrgID": o}});
        }
        let text = statement.to_string();
        let rev = self
            .layers
            .add_statement(&name, n, sid, &text, revision)
            .map_err(layer_error)?
            .ok_or_else(|| self.version_missing(&name, n))?;
        Ok(Response::json(
            201,
            json!({"Statement": text, "RevisionId": rev})
                .to_string()
                .into_bytes(),
        ))
    }

    fn get_layer_version_policy(&self, raw_name: &str, raw_version: &str) -> ApiResult<Response> {
        let (name, n) = self.policy_target(raw_name, raw_version)?;
        let (statements, revision) = self
            .layers
            .policy(&name, n)
            .map_err(layer_error)?
            .ok_or_else(|| self.version_missing(&name, n))?;
        if statements.is_empty() {
            return Err(ApiError::not_found(
                "No policy is associated with the given resource.",
            ));
        }
        let parsed = statements
            .iter()
            .map(|s| serde_json::from_str::<Value>(&s.json))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::service(format!("stored policy is corrupt: {e}")))?;
        let policy = json!({"Version": "2012-10-17", "Id": "default", "Statement": parsed});
        Ok(Response::json(
            200,
            json!({"Policy": policy.to_string(), "RevisionId": revision})
                .to_string()
                .into_bytes(),
        ))
    }

    fn remove_layer_version_permission(
        &self,
        raw_name: &str,
        raw_version: &str,
        sid: &str,
        revision: Option<&str>,
    ) -> ApiResult<Response> {
        let (name, n) = self.policy_target(raw_name, raw_version)?;
        if !self
            .layers
            .remove_statement(&name, n, sid, revision)
            .map_err(layer_error)?
        {
            return Err(self.version_missing(&name, n));
        }
        Ok(Response::new(204))
    }

    /// The key that signs `Content.Location` links (derived from the admin secret, so links
    /// stay valid across restarts and nobody without the secret can make one).
    fn location_key(&self) -> Vec<u8> {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        let secret = ids
            .first()
            .and_then(|id| self.keys.get(*id))
            .map(String::as_str)
            .unwrap_or("");
        hmac_sha256(secret.as_bytes(), b"lamina layer content location")
    }

    fn location_signature(&self, hex: &str, expires: i64) -> String {
        location_signature(&self.location_key(), hex, expires)
    }

    /// A link to download the layer's ZIP, valid for 10 minutes (the API's own host).
    fn layer_location(&self, req: &Request, v: &LayerVersion) -> String {
        let host = req.header("Host").unwrap_or("localhost");
        let expires = unix_now() + LOCATION_TTL_SECS;
        format!(
            "http://{host}/lamina/layer-content/{}?Expires={expires}&Signature={}",
            v.code_hex,
            self.location_signature(&v.code_hex, expires)
        )
    }

    /// Serves `GET /lamina/layer-content/<hex>?Expires=..&Signature=..` (no SigV4: the link
    /// is the credential, as an S3 presigned URL is). `None` for any other request.
    pub(super) fn layer_content_download(&self, req: &Request) -> Option<Response> {
        let hex = req.raw_path.strip_prefix("/lamina/layer-content/")?;
        if req.method != "GET" {
            return None;
        }
        let forbidden = || {
            ApiError::new(
                403,
                "AccessDeniedException",
                "Request has expired or its signature does not match.",
            )
            .response(&crate::util::uuid4())
        };
        let q = super::lambda::query(&req.raw_query);
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let (Some(expires), Some(sig)) = (get("Expires"), get("Signature")) else {
            return Some(forbidden());
        };
        let Ok(expires) = expires.parse::<i64>() else {
            return Some(forbidden());
        };
        if !location_valid(&self.location_key(), hex, expires, sig, unix_now()) {
            return Some(forbidden());
        }
        match std::fs::read(self.layers.blob_path(hex)) {
            Ok(bytes) => {
                Some(Response::json(200, bytes).content_type(Some("application/zip".to_string())))
            }
            Err(_) => Some(ApiError::not_found(NOT_FOUND).response(&crate::util::uuid4())),
        }
    }
}

fn location_signature(key: &[u8], hex: &str, expires: i64) -> String {
    hex::encode(hmac_sha256(key, format!("{hex}\n{expires}").as_bytes()))
}

/// Whether a `Content.Location` link is genuine and unexpired (and names a blob, nothing else).
fn location_valid(key: &[u8], hex: &str, expires: i64, sig: &str, now: i64) -> bool {
    let valid_hex = hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
    let expected = location_signature(key, hex, expires);
    let sig_ok: bool = subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), sig.as_bytes()).into();
    valid_hex && sig_ok && expires >= now
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC accepts keys of any length.
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_and_page_sizes() {
        assert_eq!(version_number("3").unwrap(), 3);
        assert_eq!(
            version_number("0").unwrap_err().message,
            "Layer Version Cannot be less than 1"
        );
        assert_eq!(
            version_number("-1").unwrap_err().error_type,
            "InvalidParameterValueException"
        );
        assert_eq!(
            version_number("x").unwrap_err().error_type,
            "ValidationException"
        );
        assert_eq!(max_items(None).unwrap(), 50);
        assert_eq!(max_items(Some("7")).unwrap(), 7);
        assert!(max_items(Some("51")).is_err());
        assert!(max_items(Some("0")).is_err());
        assert!(filter(Some("python3.11"), Some("arm64")).is_ok());
        let e = filter(Some("cobol"), Some("sparc")).unwrap_err();
        assert!(
            e.message
                .starts_with("2 validation errors detected: Value 'cobol' at 'compatibleRuntime'"),
            "{}",
            e.message
        );
    }

    #[test]
    fn location_links() {
        let hex = "ab".repeat(32);
        let sig = location_signature(b"k", &hex, 1000);
        assert!(location_valid(b"k", &hex, 1000, &sig, 1000));
        assert!(!location_valid(b"k", &hex, 1000, &sig, 1001), "expired");
        assert!(!location_valid(b"k", &hex, 1001, &sig, 900), "other expiry");
        assert!(
            !location_valid(b"other", &hex, 1000, &sig, 900),
            "other key"
        );
        assert!(
            !location_valid(b"k", &hex, 1000, &sig[1..], 900),
            "short signature"
        );
        let evil = "../../../../etc/passwd";
        let sig = location_signature(b"k", evil, 1000);
        assert!(
            !location_valid(b"k", evil, 1000, &sig, 900),
            "not a blob name"
        );
    }

    #[test]
    fn store_errors_map_to_lambda_errors() {
        let e = layer_error(LayerError::TooMany);
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "Cannot reference more than 5 layers.")
        );
        assert_eq!(
            layer_error(LayerError::BadArn("x".into())).error_type,
            "ValidationException"
        );
        assert_eq!(layer_error(LayerError::RevisionMismatch).status, 412);
        assert_eq!(
            layer_error(LayerError::StatementExists("s".into())).status,
            409
        );
        assert_eq!(
            layer_error(LayerError::Io("/x".into(), std::io::Error::other("disk"))).status,
            500
        );
    }
}
