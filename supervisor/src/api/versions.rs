//! Changing functions: UpdateFunctionCode, UpdateFunctionConfiguration, PublishVersion,
//! ListVersionsByFunction and the alias operations.
//!
//! Only `$LATEST` changes; every change is one registry transaction that checks its
//! preconditions (RevisionId, CodeSha256) against the state it changes. Warm envs of the old
//! code or configuration are retired; invocations in flight finish on the old one.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::http::{Request, Response};
use super::lambda::{code_sha256, json_body, list_item, page_size, storage, zip_file, Api};
use super::validate;
use crate::registry::{RegistryError, StoredFunction};

const REVISION_MISMATCH: &str = "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id";

fn precondition(message: impl Into<String>) -> ApiError {
    ApiError::new(412, "PreconditionFailedException", message)
}

/// Checks an optional `RevisionId` member against the current one.
fn check_revision(expected: Option<&str>, current: &str) -> Result<(), RegistryError> {
    match expected {
        Some(r) if r != current => Err(RegistryError::Precondition(REVISION_MISMATCH.into())),
        _ => Ok(()),
    }
}

/// A configuration as Update* answer it: the change accepted and being applied.
fn updating(f: &StoredFunction) -> Vec<u8> {
    let mut c = f.config.clone();
    c["LastUpdateStatus"] = json!("InProgress");
    c["LastUpdateStatusReason"] = json!("The function is being created.");
    c["LastUpdateStatusReasonCode"] = json!("Creating");
    c.to_string().into_bytes()
}

impl Api {
    /// Maps a registry refusal of a change of function `name`.
    pub(super) fn change_error(&self, name: &str, e: RegistryError) -> ApiError {
        match e {
            RegistryError::NotFound(what) if what == name => self.function_not_found(name, None),
            RegistryError::NotFound(what) => ApiError::not_found(format!(
                "Function not found: arn:aws:lambda:{}:{}:function:{what}",
                self.region, self.account
            )),
            RegistryError::Precondition(m) => precondition(m),
            RegistryError::Conflict(m) => ApiError::conflict(m),
            RegistryError::Invalid(m) => ApiError::invalid(m),
            other => storage(other),
        }
    }

    /// The bare name of a function reference that must not carry a qualifier (the
    /// operations that act on `$LATEST` or on the function as a whole).
    fn unqualified(&self, raw: &str) -> ApiResult<String> {
        let (name, q) = self.function_ref(raw, None)?;
        match q.as_deref() {
            None | Some("$LATEST") => Ok(name),
            Some(_) => Err(ApiError::invalid(
                "This operation applies to $LATEST only; remove the qualifier from the function name.",
            )),
        }
    }

    pub(super) fn update_function_code(&self, req: &Request, raw: &str) -> ApiResult<Response> {
        let b = json_body(req)?;
        let name = self.unqualified(raw)?;
        if b.get("ImageUri").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(
                "Please don't provide ImageUri when updating a function with packageType Zip.",
            ));
        }
        let zip = zip_file(&b)?;
        let arch = super::config::architectures(&b)?;
        let publish = validate::bool_member(&b, "Publish")?.unwrap_or(false);
        let dry_run = validate::bool_member(&b, "DryRun")?.unwrap_or(false);
        let revision = validate::string_max(&b, "RevisionId", "revisionId", 64)?;
        if dry_run && publish {
            return Err(ApiError::invalid("DryRun and Publish cannot both be set."));
        }
        let (code_hex, _) = self.store_code(&zip)?;
        let change = |f: &mut StoredFunction| -> Result<(), RegistryError> {
            check_revision(revision, f.revision())?;
            f.config["CodeSha256"] = json!(code_sha256(&code_hex));
            f.config["CodeSize"] = json!(zip.len());
            if let Some(a) = &arch {
                f.config["Architectures"] = a.clone();
            }
            f.code_hex = code_hex.clone();
            Ok(())
        };
        if dry_run {
            let mut f = (*self
                .registry
                .get(&name)
                .map_err(storage)?
                .ok_or_else(|| self.function_not_found(&name, None))?)
            .clone();
            change(&mut f).map_err(|e| self.change_error(&name, e))?;
            return Ok(Response::json(200, f.config.to_string().into_bytes()));
        }
        let (latest, published) = self
            .registry
            .update_latest(&name, publish, change)
            .map_err(|e| self.change_error(&name, e))?;
        self.scheduler.retire(&name, Some("$LATEST"));
        let shown = published.unwrap_or(latest);
        Ok(Response::json(200, updating(&shown)))
    }

    pub(super) fn update_function_configuration(
        &self,
        req: &Request,
        raw: &str,
    ) -> ApiResult<Response> {
        let b = json_body(req)?;
        let name = self.unqualified(raw)?;
        let revision = validate::string_max(&b, "RevisionId", "revisionId", 64)?;
        // Check what can be checked without the current state first.
        let mut probe = json!({"FunctionName": name});
        super::config::apply(&b, &mut probe, false)?;
        let layers = if b.contains_key("Layers") {
            Some(self.function_layers(b.get("Layers"))?)
        } else {
            None
        };
        let mut refused = None;
        let (latest, _) = self
            .registry
            .update_latest(&name, false, |f| {
                check_revision(revision, f.revision())?;
                if let Err(e) = super::config::apply(&b, &mut f.config, false) {
                    refused = Some(e);
                    return Err(RegistryError::Invalid(String::new()));
                }
                match &layers {
                    Some(Some(l)) => f.config["Layers"] = l.clone(),
                    Some(None) => {
                        if let Some(o) = f.config.as_object_mut() {
                            o.remove("Layers");
                        }
                    }
                    None => {}
                }
                Ok(())
            })
            .map_err(|e| {
                refused
                    .take()
                    .unwrap_or_else(|| self.change_error(&name, e))
            })?;
        self.scheduler.retire(&name, Some("$LATEST"));
        Ok(Response::json(200, updating(&latest)))
    }

    pub(super) fn publish_version(&self, req: &Request, raw: &str) -> ApiResult<Response> {
        let b = json_body(req)?;
        let name = self.unqualified(raw)?;
        let sha = validate::string_max(&b, "CodeSha256", "codeSha256", 64)?;
        let description = validate::string_max(&b, "Description", "description", 256)?;
        let revision = validate::string_max(&b, "RevisionId", "revisionId", 64)?;
        let v = self
            .registry
            .publish(&name, description, |latest| {
                let current = latest.config["CodeSha256"].as_str().unwrap_or("");
                if let Some(s) = sha {
                    if s != current {
                        return Err(RegistryError::Invalid(format!("CodeSHA256 ({s}) is different from current CodeSHA256 in $LATEST ({current}). Please try again with the CodeSHA256 in $LATEST.")));
                    }
                }
                check_revision(revision, latest.revision())
            })
            .map_err(|e| self.change_error(&name, e))?;
        Ok(Response::json(201, v.config.to_string().into_bytes()))
    }

    pub(super) fn list_versions(
        &self,
        raw: &str,
        marker: Option<&str>,
        max_items: Option<&str>,
    ) -> ApiResult<Response> {
        let name = self.unqualified(raw)?;
        let max = page_size(max_items, 50)?;
        if self.registry.get(&name).map_err(storage)?.is_none() {
            return Err(self.function_not_found(&name, None));
        }
        let page = self
            .registry
            .list_versions(&name, marker, max + 1)
            .map_err(storage)?;
        let mut body = Map::new();
        body.insert(
            "Versions".into(),
            Value::Array(page.iter().take(max).map(|v| list_item(v, true)).collect()),
        );
        if page.len() > max {
            if let Some(last) = page.get(max - 1) {
                body.insert("NextMarker".into(), json!(last.version));
            }
        }
        Ok(Response::json(
            200,
            Value::Object(body).to_string().into_bytes(),
        ))
    }

    fn alias_arn(&self, name: &str, alias: &str) -> String {
        format!("{}:{alias}", self.arn(name))
    }

    /// `RoutingConfig` checked against the primary version; returns it normalized and the
    /// versions it routes to.
    fn routing(&self, v: Option<&Value>, primary: &str) -> ApiResult<(Option<Value>, Vec<String>)> {
        let weights = match v {
            None | Some(Value::Null) => return Ok((None, Vec::new())),
            Some(Value::Object(o)) => match o.get("AdditionalVersionWeights") {
                None | Some(Value::Null) => return Ok((None, Vec::new())),
                Some(Value::Object(w)) => w.clone(),
                Some(other) => {
                    return Err(validate::type_error(
                        "RoutingConfig.AdditionalVersionWeights",
                        other,
                        "map",
                    ))
                }
            },
            Some(other) => return Err(validate::type_error("RoutingConfig", other, "structure")),
        };
        if weights.is_empty() {
            return Ok((None, Vec::new()));
        }
        if weights.len() > 1 {
            return Err(ApiError::invalid(
                "Number of items in AdditionalVersionWeights cannot be greater than 1",
            ));
        }
        let mut versions = Vec::new();
        for (version, w) in &weights {
            if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::validation(
                    &Value::Object(weights.clone()).to_string(),
                    "routingConfig.additionalVersionWeights",
                    "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [0-9]+]",
                ));
            }
            let ok = w.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x));
            if !ok {
                return Err(ApiError::validation(
                    &Value::Object(weights.clone()).to_string(),
                    "routingConfig.additionalVersionWeights",
                    "Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member must have value greater than or equal to 0.0]",
                ));
            }
            if primary == "$LATEST" {
                return Err(ApiError::invalid(
                    "$LATEST is not supported for an alias pointing to more than 1 version",
                ));
            }
            if version == primary {
                return Err(ApiError::invalid(format!("Invalid function version {version}. Function version {version} is already included in routing configuration.")));
            }
            versions.push(version.clone());
        }
        Ok((
            Some(json!({ "AdditionalVersionWeights": weights })),
            versions,
        ))
    }

    pub(super) fn create_alias(&self, req: &Request, raw: &str) -> ApiResult<Response> {
        let b = json_body(req)?;
        let name = self.unqualified(raw)?;
        let alias = validate::string_max(&b, "Name", "name", 128)?
            .ok_or_else(|| ApiError::invalid("Name is required"))?;
        validate::alias_name(alias, "name")?;
        let version = validate::string_max(&b, "FunctionVersion", "functionVersion", 1024)?
            .ok_or_else(|| ApiError::invalid("FunctionVersion is required"))?;
        validate::function_version(version, "functionVersion")?;
        let description =
            validate::string_max(&b, "Description", "description", 256)?.unwrap_or("");
        let (routing, mut needs) = self.routing(b.get("RoutingConfig"), version)?;
        needs.push(version.to_string());
        let mut config = json!({
            "AliasArn": self.alias_arn(&name, alias),
            "Name": alias,
            "FunctionVersion": version,
            "Description": description,
            "RevisionId": crate::util::uuid4(),
        });
        if let Some(r) = routing {
            config["RoutingConfig"] = r;
        }
        let needs: Vec<&str> = needs.iter().map(String::as_str).collect();
        self.registry
            .create_alias(&name, alias, &config, &needs)
            .map_err(|e| match e {
                RegistryError::Exists(_) => ApiError::conflict(format!(
                    "Alias already exists: {}",
                    self.alias_arn(&name, alias)
                )),
                other => self.change_error(&name, other),
            })?;
        Ok(Response::json(201, config.to_string().into_bytes()))
    }

    /// An alias of an existing function (404 for either missing).
    fn alias(&self, name: &str, alias: &str) -> ApiResult<Arc<Value>> {
        if self.registry.get(name).map_err(storage)?.is_none() {
            return Err(self.function_not_found(name, None));
        }
        self.registry
            .get_alias(name, alias)
            .map_err(storage)?
            .ok_or_else(|| {
                ApiError::not_found(format!("Alias not found: {}", self.alias_arn(name, alias)))
            })
    }

    pub(super) fn get_alias(&self, raw: &str, alias: &str) -> ApiResult<Response> {
        let name = self.unqualified(raw)?;
        let a = self.alias(&name, alias)?;
        Ok(Response::json(200, a.to_string().into_bytes()))
    }

    pub(super) fn update_alias(
        &self,
        req: &Request,
        raw: &str,
        alias: &str,
    ) -> ApiResult<Response> {
        let b = json_body(req)?;
        let name = self.unqualified(raw)?;
        self.alias(&name, alias)?;
        let version = validate::string_max(&b, "FunctionVersion", "functionVersion", 1024)?;
        if let Some(v) = version {
            validate::function_version(v, "functionVersion")?;
        }
        let description = validate::string_max(&b, "Description", "description", 256)?;
        let revision = validate::string_max(&b, "RevisionId", "revisionId", 64)?;
        let mut refused = None;
        let a = self
            .registry
            .update_alias(&name, alias, |c| {
                check_revision(revision, c["RevisionId"].as_str().unwrap_or(""))?;
                if let Some(v) = version {
                    c["FunctionVersion"] = json!(v);
                }
                if let Some(d) = description {
                    c["Description"] = json!(d);
                }
                let primary = c["FunctionVersion"]
                    .as_str()
                    .unwrap_or("$LATEST")
                    .to_string();
                let current = c.get("RoutingConfig").cloned();
                let routing_in = if b.contains_key("RoutingConfig") {
                    b.get("RoutingConfig")
                } else {
                    current.as_ref()
                };
                let (routing, mut needs) = match self.routing(routing_in, &primary) {
                    Ok(r) => r,
                    Err(e) => {
                        refused = Some(e);
                        return Err(RegistryError::Invalid(String::new()));
                    }
                };
                match routing {
                    Some(r) => c["RoutingConfig"] = r,
                    None => {
                        if let Some(o) = c.as_object_mut() {
                            o.remove("RoutingConfig");
                        }
                    }
                }
                needs.push(primary);
                Ok(needs)
            })
            .map_err(|e| {
                refused.take().unwrap_or_else(|| match e {
                    RegistryError::NotFound(a) if a == alias => ApiError::not_found(format!(
                        "Alias not found: {}",
                        self.alias_arn(&name, alias)
                    )),
                    other => self.change_error(&name, other),
                })
            })?;
        Ok(Response::json(200, a.to_string().into_bytes()))
    }

    pub(super) fn delete_alias(&self, raw: &str, alias: &str) -> ApiResult<Response> {
        let name = self.unqualified(raw)?;
        self.alias(&name, alias)?;
        self.registry.delete_alias(&name, alias).map_err(storage)?;
        self.scheduler.forget_provisioned(&name, alias);
        self.async_queue
            .forget(&name, Some(alias))
            .map_err(|e| ApiError::service(format!("storage error: {e}")))?;
        Ok(Response::new(204))
    }

    pub(super) fn list_aliases(
        &self,
        raw: &str,
        version: Option<&str>,
        marker: Option<&str>,
        max_items: Option<&str>,
    ) -> ApiResult<Response> {
        let name = self.unqualified(raw)?;
        if let Some(v) = version {
            validate::function_version(v, "functionVersion")?;
        }
        let max = page_size(max_items, 50)?;
        if self.registry.get(&name).map_err(storage)?.is_none() {
            return Err(self.function_not_found(&name, None));
        }
        let page = self
            .registry
            .list_aliases(&name, version, marker, max + 1)
            .map_err(storage)?;
        let mut body = Map::new();
        body.insert(
            "Aliases".into(),
            Value::Array(page.iter().take(max).cloned().collect()),
        );
        if page.len() > max {
            if let Some(last) = page.get(max - 1) {
                body.insert("NextMarker".into(), last["Name"].clone());
            }
        }
        Ok(Response::json(
            200,
            Value::Object(body).to_string().into_bytes(),
        ))
    }
}
