//! Tags, GetAccountSettings, reserved and provisioned concurrency.

use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::http::{Request, Response};
use super::lambda::{json_body, page_size, storage, Api};
use super::validate;
use crate::registry::{Provisioned, RegistryError};

/// Lambda's code storage quota per region, reported by GetAccountSettings.
const TOTAL_CODE_SIZE: u64 = 80_530_636_800;
const CODE_SIZE_UNZIPPED: u64 = 262_144_000;
const CODE_SIZE_ZIPPED: u64 = 52_428_800;

impl Api {
    /// The function a tagging ARN names: an unqualified function ARN of this account.
    fn tag_target(&self, arn: &str) -> ApiResult<String> {
        if !arn.starts_with("arn:") {
            return Err(ApiError::validation(
                arn,
                "resource",
                "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*):lambda:[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:\\d{12}:(function:[a-zA-Z0-9-_]+(:(\\$LATEST|[a-zA-Z0-9-_]+))?|layer:([a-zA-Z0-9-_]+)|code-signing-config:csc-[a-z0-9]{17}|event-source-mapping:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|capacity-provider:[a-zA-Z0-9-_]+)",
            ));
        }
        let r = validate::function_ref(arn, "resource")?;
        if r.qualifier.is_some() {
            return Err(ApiError::invalid(
                "Tags on function aliases and versions are not supported. Please specify a function ARN.",
            ));
        }
        if r.account.as_deref().is_some_and(|a| a != self.account)
            || r.region.as_deref().is_some_and(|g| g != self.region)
        {
            return Err(self.function_not_found(&r.name, None));
        }
        Ok(r.name)
    }

    pub(super) fn tag_resource(&self, req: &Request, arn: &str) -> ApiResult<Response> {
        let name = self.tag_target(arn)?;
        let b = json_body(req)?;
        let new = validate::tags(b.get("Tags"))?;
        if new.is_empty() {
            return Err(ApiError::invalid("Tags is required"));
        }
        let mut refused = None;
        self.registry
            .update_tags(&name, |tags| {
                for (k, v) in new {
                    tags.insert(k, v);
                }
                if let Err(e) = validate::check_tags(tags) {
                    refused = Some(e);
                    return Err(RegistryError::Invalid(String::new()));
                }
                Ok(())
            })
            .map_err(|e| {
                refused
                    .take()
                    .unwrap_or_else(|| self.change_error(&name, e))
            })?;
        Ok(Response::new(204))
    }

    pub(super) fn untag_resource(&self, arn: &str, keys: &[&str]) -> ApiResult<Response> {
        let name = self.tag_target(arn)?;
        if keys.is_empty() {
            return Err(ApiError::invalid("TagKeys is required"));
        }
        if keys.len() > 50 {
            return Err(ApiError::validation(
                &format!("[{}]", keys.join(", ")),
                "tagKeys",
                "Member must have length less than or equal to 50",
            ));
        }
        self.registry
            .update_tags(&name, |tags| {
                for k in keys {
                    tags.remove(*k);
                }
                Ok(())
            })
            .map_err(|e| self.change_error(&name, e))?;
        Ok(Response::new(204))
    }

    pub(super) fn list_tags(&self, arn: &str) -> ApiResult<Response> {
        let name = self.tag_target(arn)?;
        let meta = self
            .registry
            .meta(&name)
            .map_err(storage)?
            .ok_or_else(|| self.function_not_found(&name, None))?;
        Ok(Response::json(
            200,
            json!({ "Tags": meta.tags }).to_string().into_bytes(),
        ))
    }

    pub(super) fn account_settings(&self) -> ApiResult<Response> {
        let limit = self.scheduler.concurrency_limit();
        let reserved: u64 = self
            .registry
            .all_reserved()
            .map_err(storage)?
            .values()
            .sum();
        let body = json!({
            "AccountLimit": {
                "TotalCodeSize": TOTAL_CODE_SIZE,
                "CodeSizeUnzipped": CODE_SIZE_UNZIPPED,
                "CodeSizeZipped": CODE_SIZE_ZIPPED,
                "ConcurrentExecutions": limit,
                "UnreservedConcurrentExecutions": limit.saturating_sub(reserved),
            },
            "AccountUsage": {
                "TotalCodeSize": self.registry.total_code_size().map_err(storage)?,
                "FunctionCount": self.registry.count().map_err(storage)?,
            },
        });
        Ok(Response::json(200, body.to_string().into_bytes()))
    }

    fn unqualified_function(&self, raw: &str) -> ApiResult<String> {
        let (name, q) = self.function_ref(raw, None)?;
        if q.is_some() {
            return Err(ApiError::invalid(
                "Concurrency settings apply to the whole function; remove the qualifier.",
            ));
        }
        if self.registry.get(&name).map_err(storage)?.is_none() {
            return Err(self.function_not_found(&name, None));
        }
        Ok(name)
    }

    pub(super) fn put_function_concurrency(&self, req: &Request, raw: &str) -> ApiResult<Response> {
        let name = self.unqualified_function(raw)?;
        let b = json_body(req)?;
        let n = validate::int_in(
            &b,
            "ReservedConcurrentExecutions",
            "reservedConcurrentExecutions",
            0,
            i64::MAX,
        )?
        .ok_or_else(|| ApiError::invalid("ReservedConcurrentExecutions is required"))?
            as u64;
        let limit = self.scheduler.concurrency_limit();
        let floor = self.scheduler.min_unreserved();
        let provisioned: u64 = self
            .registry
            .list_provisioned(Some(&name))
            .map_err(storage)?
            .iter()
            .map(|p| p.requested)
            .sum();
        if n < provisioned {
            return Err(ApiError::invalid(format!(
                "Specified ReservedConcurrentExecutions for function is less than the function's total provisioned concurrency ({provisioned})."
            )));
        }
        self.registry
            .set_reserved(&name, Some(n), |others| {
                if others + n + floor > limit {
                    return Err(RegistryError::Invalid(format!("Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{floor}].")));
                }
                Ok(())
            })
            .map_err(|e| self.change_error(&name, e))?;
        self.scheduler.set_reserved(&name, Some(n));
        Ok(Response::json(
            200,
            json!({ "ReservedConcurrentExecutions": n })
                .to_string()
                .into_bytes(),
        ))
    }

    pub(super) fn get_function_concurrency(&self, raw: &str) -> ApiResult<Response> {
        let name = self.unqualified_function(raw)?;
        let meta = self
            .registry
            .meta(&name)
            .map_err(storage)?
            .ok_or_else(|| self.function_not_found(&name, None))?;
        let body = match meta.reserved {
            Some(n) => json!({ "ReservedConcurrentExecutions": n }),
            None => json!({}),
        };
        Ok(Response::json(200, body.to_string().into_bytes()))
    }

    pub(super) fn delete_function_concurrency(&self, raw: &str) -> ApiResult<Response> {
        let name = self.unqualified_function(raw)?;
        self.registry
            .set_reserved(&name, None, |_| Ok(()))
            .map_err(|e| self.change_error(&name, e))?;
        self.scheduler.set_reserved(&name, None);
        Ok(Response::new(204))
    }

    /// The function and qualifier of a provisioned concurrency request: the qualifier must be a
    /// published version or an alias of one.
    fn provisioned_target(
        &self,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<(String, String)> {
        let (name, q) = self.function_ref(raw, qualifier)?;
        let Some(q) = q else {
            return Err(ApiError::invalid(
                "The function resource provided must be an alias or a published version.",
            ));
        };
        if q == "$LATEST" {
            return Err(ApiError::invalid(
                "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
            ));
        }
        let f = self.lookup(&name, Some(&q), false)?;
        if f.version == "$LATEST" {
            return Err(ApiError::invalid(
                "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
            ));
        }
        Ok((name, q))
    }

    fn provisioned_body(&self, p: &Provisioned) -> Value {
        let (allocated, status, reason) = self.scheduler.provisioned_status(&p.name, &p.qualifier);
        let mut out = json!({
            "RequestedProvisionedConcurrentExecutions": p.requested,
            "AvailableProvisionedConcurrentExecutions": allocated,
            "AllocatedProvisionedConcurrentExecutions": allocated,
            "Status": status,
            "LastModified": p.last_modified,
        });
        if let Some(r) = reason {
            out["StatusReason"] = json!(r);
        }
        out
    }

    pub(super) fn put_provisioned(
        &self,
        req: &Request,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<Response> {
        let (name, q) = self.provisioned_target(raw, qualifier)?;
        let b = json_body(req)?;
        let n = validate::int_in(
            &b,
            "ProvisionedConcurrentExecutions",
            "provisionedConcurrentExecutions",
            1,
            i64::MAX,
        )?
        .ok_or_else(|| ApiError::invalid("ProvisionedConcurrentExecutions is required"))?
            as u64;
        let limit = self.scheduler.concurrency_limit();
        let floor = self.scheduler.min_unreserved();
        let p = self
            .registry
            .put_provisioned(&name, &q, n, |reserved, others| {
                match reserved {
                    Some(r) if others + n > r => Err(RegistryError::Invalid(format!("Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function ({r})."))),
                    None if others + n + floor > limit => Err(RegistryError::Invalid(format!("Requested Provisioned Concurrency exceeds the account's UnreservedConcurrentExecution minimum value of [{floor}]."))),
                    _ => Ok(()),
                }
            })
            .map_err(|e| self.change_error(&name, e))?;
        let f = self.lookup(&name, Some(&q), false)?;
        self.scheduler.provision(f, q.clone(), n);
        let mut body = self.provisioned_body(&p);
        if body["Status"] == "READY" && p.requested > 0 {
            body["Status"] = json!("IN_PROGRESS");
        }
        Ok(Response::json(202, body.to_string().into_bytes()))
    }

    fn provisioned_not_found() -> ApiError {
        ApiError::new(
            404,
            "ProvisionedConcurrencyConfigNotFoundException",
            "No Provisioned Concurrency Config found for this function",
        )
    }

    pub(super) fn get_provisioned(
        &self,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<Response> {
        let (name, q) = self.function_ref(raw, qualifier)?;
        let q = q.ok_or_else(|| ApiError::invalid("Qualifier is required"))?;
        if self.registry.get(&name).map_err(storage)?.is_none() {
            return Err(self.function_not_found(&name, None));
        }
        let p = self
            .registry
            .list_provisioned(Some(&name))
            .map_err(storage)?
            .into_iter()
            .find(|p| p.qualifier == q)
            .ok_or_else(Api::provisioned_not_found)?;
        Ok(Response::json(
            200,
            self.provisioned_body(&p).to_string().into_bytes(),
        ))
    }

    pub(super) fn delete_provisioned(
        &self,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<Response> {
        let (name, q) = self.function_ref(raw, qualifier)?;
        let q = q.ok_or_else(|| ApiError::invalid("Qualifier is required"))?;
        if self.registry.get(&name).map_err(storage)?.is_none() {
            return Err(self.function_not_found(&name, None));
        }
        if !self
            .registry
            .delete_provisioned(&name, &q)
            .map_err(storage)?
        {
            return Err(Api::provisioned_not_found());
        }
        self.scheduler.forget_provisioned(&name, &q);
        Ok(Response::new(204))
    }

    pub(super) fn list_provisioned(
        &self,
        raw: &str,
        marker: Option<&str>,
        max_items: Option<&str>,
    ) -> ApiResult<Response> {
        let (name, _) = self.function_ref(raw, None)?;
        let max = page_size(max_items, 50)?;
        if self.registry.get(&name).map_err(storage)?.is_none() {
            return Err(self.function_not_found(&name, None));
        }
        let all = self
            .registry
            .list_provisioned(Some(&name))
            .map_err(storage)?;
        let rest: Vec<&Provisioned> = all
            .iter()
            .filter(|p| marker.is_none_or(|m| p.qualifier.as_str() > m))
            .collect();
        let mut items = Vec::new();
        for p in rest.iter().take(max) {
            let mut b = self.provisioned_body(p);
            b["FunctionArn"] = json!(format!("{}:{}", self.arn(&p.name), p.qualifier));
            items.push(b);
        }
        let mut body = Map::new();
        body.insert("ProvisionedConcurrencyConfigs".into(), Value::Array(items));
        if rest.len() > max {
            if let Some(last) = rest.get(max - 1) {
                body.insert("NextMarker".into(), json!(last.qualifier));
            }
        }
        Ok(Response::json(
            200,
            Value::Object(body).to_string().into_bytes(),
        ))
    }
}

impl Api {
    pub(super) fn get_recursion_config(&self, raw: &str) -> ApiResult<Response> {
        let name = self.unqualified_function(raw)?;
        let s = self
            .registry
            .settings(&name)
            .map_err(storage)?
            .unwrap_or_default();
        let loop_ = s
            .get("RecursiveLoop")
            .cloned()
            .unwrap_or(json!("Terminate"));
        Ok(Response::json(
            200,
            json!({ "RecursiveLoop": loop_ }).to_string().into_bytes(),
        ))
    }

    pub(super) fn put_recursion_config(&self, req: &Request, raw: &str) -> ApiResult<Response> {
        let name = self.unqualified_function(raw)?;
        let b = json_body(req)?;
        let v = validate::string_max(&b, "RecursiveLoop", "recursiveLoop", 16)?
            .ok_or_else(|| ApiError::invalid("RecursiveLoop is required"))?;
        if v != "Allow" && v != "Terminate" {
            return Err(ApiError::validation(
                v,
                "recursiveLoop",
                "Member must satisfy enum value set: [Allow, Terminate]",
            ));
        }
        self.registry
            .update_settings(&name, |s| {
                s.insert("RecursiveLoop".into(), json!(v));
                Ok(())
            })
            .map_err(|e| self.change_error(&name, e))?;
        Ok(Response::json(
            200,
            json!({ "RecursiveLoop": v }).to_string().into_bytes(),
        ))
    }

    /// The qualifier of a runtime management request (`$LATEST`, a version or an alias) and
    /// the function ARN it answers with.
    fn runtime_management_target(
        &self,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<(String, String, String)> {
        let (name, q) = self.function_ref(raw, qualifier)?;
        self.lookup(&name, q.as_deref(), false)?;
        let arn = match &q {
            Some(q) => format!("{}:{q}", self.arn(&name)),
            None => self.arn(&name),
        };
        Ok((name, q.unwrap_or_else(|| "$LATEST".into()), arn))
    }

    pub(super) fn get_runtime_management(
        &self,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<Response> {
        let (name, q, arn) = self.runtime_management_target(raw, qualifier)?;
        let s = self
            .registry
            .settings(&name)
            .map_err(storage)?
            .unwrap_or_default();
        let mut out = s
            .get(&format!("RuntimeManagement:{q}"))
            .cloned()
            .unwrap_or(json!({"UpdateRuntimeOn": "Auto"}));
        out["FunctionArn"] = json!(arn);
        Ok(Response::json(200, out.to_string().into_bytes()))
    }

    pub(super) fn put_runtime_management(
        &self,
        req: &Request,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<Response> {
        let (name, q, arn) = self.runtime_management_target(raw, qualifier)?;
        let b = json_body(req)?;
        let on = validate::string_max(&b, "UpdateRuntimeOn", "updateRuntimeOn", 16)?
            .ok_or_else(|| ApiError::invalid("UpdateRuntimeOn is required"))?;
        if !["Auto", "Manual", "FunctionUpdate"].contains(&on) {
            return Err(ApiError::validation(
                on,
                "updateRuntimeOn",
                "Member must satisfy enum value set: [Auto, Manual, FunctionUpdate]",
            ));
        }
        let version = validate::string_max(&b, "RuntimeVersionArn", "runtimeVersionArn", 2048)?;
        match (on, version) {
            ("Manual", None) => {
                return Err(ApiError::invalid(
                    "RuntimeVersionArn must be specified when UpdateRuntimeOn is Manual.",
                ))
            }
            ("Manual", Some(v)) if !v.starts_with("arn:") || !v.contains(":runtime") => {
                return Err(ApiError::validation(
                    v,
                    "runtimeVersionArn",
                    "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*):lambda:[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}::runtime:.+",
                ))
            }
            (o, Some(_)) if o != "Manual" => {
                return Err(ApiError::invalid(
                    "RuntimeVersionArn can only be specified when UpdateRuntimeOn is Manual.",
                ))
            }
            _ => {}
        }
        let mut config = json!({ "UpdateRuntimeOn": on });
        if let Some(v) = version {
            config["RuntimeVersionArn"] = json!(v);
        }
        let stored = config.clone();
        self.registry
            .update_settings(&name, |s| {
                s.insert(format!("RuntimeManagement:{q}"), stored);
                Ok(())
            })
            .map_err(|e| self.change_error(&name, e))?;
        config["FunctionArn"] = json!(arn);
        Ok(Response::json(200, config.to_string().into_bytes()))
    }
}
