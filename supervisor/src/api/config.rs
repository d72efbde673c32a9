//! The configuration members CreateFunction and UpdateFunctionConfiguration share: checked
//! and applied onto a FunctionConfiguration document.

use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::validate;

/// The architecture of this host, the only one its envs can run.
pub const HOST_ARCH: &str = "x86_64";

fn object<'a>(
    b: &'a Map<String, Value>,
    member: &str,
) -> ApiResult<Option<&'a Map<String, Value>>> {
    match b.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(validate::type_error(member, other, "structure")),
    }
}

fn one_of(v: &str, field: &str, allowed: &[&str]) -> ApiResult<()> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(ApiError::validation(
            v,
            field,
            &format!(
                "Member must satisfy enum value set: [{}]",
                allowed.join(", ")
            ),
        ))
    }
}

/// `Architectures`: one of Lambda's; only the host's can run here.
pub fn architectures(b: &Map<String, Value>) -> ApiResult<Option<Value>> {
    match b.get("Architectures") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => {
            if a.len() != 1 {
                return Err(ApiError::validation(
                    &Value::Array(a.clone()).to_string(),
                    "architectures",
                    "Member must have length less than or equal to 1",
                ));
            }
            let arch = a[0].as_str().unwrap_or("");
            one_of(arch, "architectures", &["x86_64", "arm64"])?;
            if arch != HOST_ARCH {
                return Err(ApiError::invalid(format!(
                    "Architecture {arch} cannot run on this lamina host ({HOST_ARCH})."
                )));
            }
            Ok(Some(json!([arch])))
        }
        Some(other) => Err(validate::type_error("Architectures", other, "list")),
    }
}

/// Checks the configuration members present in `b` and writes them into `c`. With `creating`,
/// defaults fill the members `b` leaves out.
pub fn apply(b: &Map<String, Value>, c: &mut Value, creating: bool) -> ApiResult<()> {
    if let Some(role) = validate::string_max(b, "Role", "role", 2048)? {
        validate::role(role)?;
        c["Role"] = json!(role);
    }
    if let Some(runtime) = validate::string_max(b, "Runtime", "runtime", 64)? {
        validate::runtime(runtime)?;
        c["Runtime"] = json!(runtime);
    }
    if let Some(h) = validate::string_max(b, "Handler", "handler", 128)? {
        validate::handler(h)?;
        c["Handler"] = json!(h);
    }
    if let Some(d) = validate::string_max(b, "Description", "description", 256)? {
        c["Description"] = json!(d);
    } else if creating {
        c["Description"] = json!("");
    }
    if let Some(m) = validate::int_in(b, "MemorySize", "memorySize", 128, 10240)? {
        c["MemorySize"] = json!(m);
    } else if creating {
        c["MemorySize"] = json!(128);
    }
    if let Some(t) = validate::int_in(b, "Timeout", "timeout", 1, 900)? {
        c["Timeout"] = json!(t);
    } else if creating {
        c["Timeout"] = json!(3);
    }
    if let Some(o) = object(b, "EphemeralStorage")? {
        let size = validate::int_in(o, "Size", "ephemeralStorage.size", 512, 10240)?
            .ok_or_else(|| ApiError::invalid("EphemeralStorage.Size is required"))?;
        c["EphemeralStorage"] = json!({ "Size": size });
    } else if creating {
        c["EphemeralStorage"] = json!({"Size": 512});
    }
    if b.contains_key("Environment") || creating {
        let env = validate::environment(b.get("Environment"))?;
        c["Environment"] = json!({ "Variables": env });
    }
    if let Some(o) = object(b, "TracingConfig")? {
        let mode =
            validate::string_max(o, "Mode", "tracingConfig.mode", 16)?.unwrap_or("PassThrough");
        one_of(mode, "tracingConfig.mode", &["Active", "PassThrough"])?;
        c["TracingConfig"] = json!({ "Mode": mode });
    } else if creating {
        c["TracingConfig"] = json!({"Mode": "PassThrough"});
    }
    let name = c["FunctionName"].as_str().unwrap_or("").to_string();
    if let Some(o) = object(b, "LoggingConfig")? {
        let mut lc = c["LoggingConfig"].as_object().cloned().unwrap_or_default();
        if let Some(f) = validate::string_max(o, "LogFormat", "loggingConfig.logFormat", 8)? {
            one_of(f, "loggingConfig.logFormat", &["JSON", "Text"])?;
            lc.insert("LogFormat".into(), json!(f));
        }
        if let Some(l) = validate::string_max(
            o,
            "ApplicationLogLevel",
            "loggingConfig.applicationLogLevel",
            8,
        )? {
            one_of(
                l,
                "loggingConfig.applicationLogLevel",
                &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"],
            )?;
            lc.insert("ApplicationLogLevel".into(), json!(l));
        }
        if let Some(l) =
            validate::string_max(o, "SystemLogLevel", "loggingConfig.systemLogLevel", 8)?
        {
            one_of(
                l,
                "loggingConfig.systemLogLevel",
                &["DEBUG", "INFO", "WARN"],
            )?;
            lc.insert("SystemLogLevel".into(), json!(l));
        }
        if let Some(g) = validate::string_max(o, "LogGroup", "loggingConfig.logGroup", 512)? {
            if g.is_empty()
                || !g
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-/#".contains(ch))
            {
                return Err(ApiError::validation(
                    g,
                    "loggingConfig.logGroup",
                    "Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+",
                ));
            }
            lc.insert("LogGroup".into(), json!(g));
        }
        if lc.get("LogFormat").and_then(Value::as_str) == Some("Text")
            && (lc.contains_key("ApplicationLogLevel") || lc.contains_key("SystemLogLevel"))
        {
            return Err(ApiError::invalid(
                "Log levels can only be set when LogFormat is JSON.",
            ));
        }
        lc.entry("LogFormat").or_insert(json!("Text"));
        lc.entry("LogGroup")
            .or_insert(json!(format!("/aws/lambda/{name}")));
        c["LoggingConfig"] = Value::Object(lc);
    } else if creating {
        c["LoggingConfig"] =
            json!({"LogFormat": "Text", "LogGroup": format!("/aws/lambda/{name}")});
    }
    if let Some(o) = object(b, "VpcConfig")? {
        let used = ["SubnetIds", "SecurityGroupIds"].iter().any(|k| {
            o.get(*k)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        });
        if used {
            return Err(ApiError::invalid(
                "VpcConfig is not supported by lamina: execution environments have loopback networking only.",
            ));
        }
    }
    if let Some(Value::Array(a)) = b.get("FileSystemConfigs") {
        if !a.is_empty() {
            return Err(ApiError::invalid(
                "FileSystemConfigs (EFS) are not supported by lamina.",
            ));
        }
    }
    if let Some(o) = object(b, "DeadLetterConfig")? {
        if o.get("TargetArn")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::invalid(
                "DeadLetterConfig targets (SQS, SNS) are not supported by lamina; use an OnFailure destination (PutFunctionEventInvokeConfig) pointing at a lamina function.",
            ));
        }
    }
    if let Some(k) = validate::string_max(b, "KMSKeyArn", "kMSKeyArn", 2048)? {
        if !k.is_empty() {
            return Err(ApiError::invalid(
                "KMSKeyArn is not supported by lamina: environment variables are sealed with lamina's own key (lamina serve --key-file).",
            ));
        }
    }
    if let Some(o) = object(b, "SnapStart")? {
        let apply_on =
            validate::string_max(o, "ApplyOn", "snapStart.applyOn", 16)?.unwrap_or("None");
        one_of(
            apply_on,
            "snapStart.applyOn",
            &["PublishedVersions", "None"],
        )?;
        if apply_on != "None" {
            return Err(ApiError::invalid("SnapStart is not supported by lamina."));
        }
    }
    if object(b, "ImageConfig")?.is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::invalid(
            "ImageConfig applies to functions of PackageType Image, which this lamina does not run.",
        ));
    }
    Ok(())
}
