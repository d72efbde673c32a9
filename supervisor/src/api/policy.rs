//! Resource-based policies: AddPermission, GetPolicy, RemovePermission.
//!
//! Policies are stored per version or alias (`$LATEST` when unqualified) and returned in
//! Lambda's IAM document format. lamina has a single principal (the admin key of
//! `<state>/credentials`), so they document who may invoke rather than gate it.

use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::http::{Request, Response};
use super::lambda::{json_body, storage, Api};
use super::validate;
use crate::registry::RegistryError;

/// Lambda's limit on a function's policy document.
const MAX_POLICY: usize = 20_480;

/// IAM's form of a principal as AddPermission takes it.
fn principal(p: &str) -> Value {
    if p == "*" {
        json!("*")
    } else if p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()) {
        json!({ "AWS": format!("arn:aws:iam::{p}:root") })
    } else if p.starts_with("arn:") {
        json!({ "AWS": p })
    } else {
        json!({ "Service": p })
    }
}

impl Api {
    /// The function and qualifier (`$LATEST` when none) a policy request names; the version
    /// or alias must exist.
    fn function_policy_target(
        &self,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<(String, String, String)> {
        let (name, q) = self.function_ref(raw, qualifier)?;
        self.lookup(&name, q.as_deref(), false)?;
        let q = q.unwrap_or_else(|| "$LATEST".into());
        let resource = if q == "$LATEST" {
            self.arn(&name)
        } else {
            format!("{}:{q}", self.arn(&name))
        };
        Ok((name, q, resource))
    }

    pub(super) fn add_permission(
        &self,
        req: &Request,
        raw: &str,
        qualifier: Option<&str>,
    ) -> ApiResult<Response> {
        let b = json_body(req)?;
        let (name, q, resource) = self.function_policy_target(raw, qualifier)?;
        let sid = validate::string_max(&b, "StatementId", "statementId", 100)?
            .ok_or_else(|| ApiError::invalid("StatementId is required"))?;
        if sid.is_empty()
            || !sid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ApiError::validation(
                sid,
                "statementId",
                "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)",
            ));
        }
        let action = validate::string_max(&b, "Action", "action", 10_000)?
            .ok_or_else(|| ApiError::invalid("Action is required"))?;
        let action_ok = action == "*"
            || action == "lambda:*"
            || action
                .strip_prefix("lambda:")
                .is_some_and(|a| !a.is_empty() && a.chars().all(|c| c.is_ascii_alphabetic()));
        if !action_ok {
            return Err(ApiError::validation(
                action,
                "action",
                "Member must satisfy regular expression pattern: (lambda:[*]|lambda:[a-zA-Z]+|[*])",
            ));
        }
        let who = validate::string_max(&b, "Principal", "principal", 2048)?
            .ok_or_else(|| ApiError::invalid("Principal is required"))?;
        if who.is_empty() || who.chars().any(char::is_whitespace) {
            return Err(ApiError::validation(
                who,
                "principal",
                "Member must satisfy regular expression pattern: [^\\s]+",
            ));
        }
        let mut condition = Map::new();
        let mut cond = |op: &str, key: &str, v: &str| {
            let e = condition.entry(op.to_string()).or_insert_with(|| json!({}));
            e[key] = json!(v);
        };
        if let Some(a) = validate::string_max(&b, "SourceArn", "sourceArn", 10_000)? {
            if !a.starts_with("arn:") {
                return Err(ApiError::validation(
                    a,
                    "sourceArn",
                    "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1})?:(\\d{12})?:(.*)",
                ));
            }
            cond("ArnLike", "AWS:SourceArn", a);
        }
        if let Some(a) = validate::string_max(&b, "SourceAccount", "sourceAccount", 12)? {
            cond("StringEquals", "AWS:SourceAccount", a);
        }
        if let Some(o) = validate::string_max(&b, "PrincipalOrgID", "principalOrgID", 34)? {
            cond("StringEquals", "aws:PrincipalOrgID", o);
        }
        if let Some(t) = validate::string_max(&b, "EventSourceToken", "eventSourceToken", 256)? {
            cond("StringEquals", "lambda:EventSourceToken", t);
        }
        if let Some(t) = validate::string_max(&b, "FunctionUrlAuthType", "functionUrlAuthType", 8)?
        {
            if t != "NONE" && t != "AWS_IAM" {
                return Err(ApiError::validation(
                    t,
                    "functionUrlAuthType",
                    "Member must satisfy enum value set: [NONE, AWS_IAM]",
                ));
            }
            cond("StringEquals", "lambda:FunctionUrlAuthType", t);
        }
        let revision = validate::string_max(&b, "RevisionId", "revisionId", 64)?;
        let mut statement = json!({
            "Sid": sid,
            "Effect": "Allow",
            "Principal": principal(who),
            "Action": action,
            "Resource": resource,
        });
        if !condition.is_empty() {
            statement["Condition"] = Value::Object(condition);
        }
        let mut refused = None;
        self.registry
            .update_policy(&name, &q, |statements, current| {
                check_revision(revision, current)?;
                if statements.iter().any(|s| s["Sid"] == sid) {
                    return Err(RegistryError::Conflict(format!("The statement id ({sid}) provided already exists. Please provide a new statement id, or remove the existing statement.")));
                }
                statements.push(statement.clone());
                let size = policy_document(statements).to_string().len();
                if size > MAX_POLICY {
                    refused = Some(ApiError::new(
                        400,
                        "PolicyLengthExceededException",
                        format!("The final policy size ({size}) is bigger than the limit ({MAX_POLICY})."),
                    ));
                    return Err(RegistryError::Invalid(String::new()));
                }
                Ok(())
            })
            .map_err(|e| refused.take().unwrap_or_else(|| self.change_error(&name, e)))?;
        Ok(Response::json(
            201,
            json!({ "Statement": statement.to_string() })
                .to_string()
                .into_bytes(),
        ))
    }

    pub(super) fn get_policy(&self, raw: &str, qualifier: Option<&str>) -> ApiResult<Response> {
        let (name, q, _) = self.function_policy_target(raw, qualifier)?;
        let (statements, revision) = self
            .registry
            .policy(&name, &q)
            .map_err(storage)?
            .ok_or_else(|| ApiError::not_found("The resource you requested does not exist."))?;
        Ok(Response::json(
            200,
            json!({ "Policy": policy_document(&statements).to_string(), "RevisionId": revision })
                .to_string()
                .into_bytes(),
        ))
    }

    pub(super) fn remove_permission(
        &self,
        raw: &str,
        sid: &str,
        qualifier: Option<&str>,
        revision: Option<&str>,
    ) -> ApiResult<Response> {
        let (name, q, _) = self.function_policy_target(raw, qualifier)?;
        let mut missing = false;
        self.registry
            .update_policy(&name, &q, |statements, current| {
                check_revision(revision, current)?;
                let before = statements.len();
                statements.retain(|s| s["Sid"] != sid);
                if statements.len() == before {
                    missing = true;
                    return Err(RegistryError::Invalid(String::new()));
                }
                Ok(())
            })
            .map_err(|e| {
                if missing {
                    ApiError::not_found(format!("Statement {sid} is not found in resource policy."))
                } else {
                    self.change_error(&name, e)
                }
            })?;
        Ok(Response::new(204))
    }
}

/// A `RevisionId` precondition on the policy.
fn check_revision(expected: Option<&str>, current: &str) -> Result<(), RegistryError> {
    match expected {
        Some(r) if r != current => Err(RegistryError::Precondition("The Revision Id provided does not match the latest Revision Id. Call the GetPolicy API to retrieve the latest Revision Id".into())),
        _ => Ok(()),
    }
}

fn policy_document(statements: &[Value]) -> Value {
    json!({"Version": "2012-10-17", "Id": "default", "Statement": statements})
}
