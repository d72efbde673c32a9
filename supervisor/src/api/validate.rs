//! Lambda's input rules (LAMBDA_FACTS §3.3, §3.11, §4): names, ARNs, ranges, environment.

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};

/// The runtime identifiers Lambda's model knows. The runtimes this lamina can run are those it
/// has sources for (`crate::runtimes::known`, from `rootfs/runtimes/`), which may add names of
/// their own (e.g. `ruby3.1`, the Debian Ruby).
pub const LAMBDA_RUNTIMES: &[&str] = &[
    "nodejs",
    "nodejs4.3",
    "nodejs6.10",
    "nodejs8.10",
    "nodejs10.x",
    "nodejs12.x",
    "nodejs14.x",
    "nodejs16.x",
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "nodejs24.x",
    "java8",
    "java8.al2",
    "java11",
    "java17",
    "java21",
    "java25",
    "python2.7",
    "python3.6",
    "python3.7",
    "python3.8",
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
    "dotnetcore1.0",
    "dotnetcore2.0",
    "dotnetcore2.1",
    "dotnetcore3.1",
    "dotnet6",
    "dotnet8",
    "dotnet10",
    "nodejs4.3-edge",
    "go1.x",
    "ruby2.5",
    "ruby2.7",
    "ruby3.2",
    "ruby3.3",
    "ruby3.4",
    "provided",
    "provided.al2",
    "provided.al2023",
];

/// Environment variable names Lambda reserves (CreateFunction/UpdateFunctionConfiguration
/// reject them).
pub const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

pub const FUNCTION_NAME_PATTERN: &str = "(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:)?(\\d{12}:)?(function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST(\\.PUBLISHED)?|[a-zA-Z0-9-_]+))?";

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// A function reference as clients send it: bare name, partial or full ARN, optional qualifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub qualifier: Option<String>,
    pub region: Option<String>,
    pub account: Option<String>,
}

/// Parses `my-fn`, `my-fn:q`, `123456789012:function:my-fn[:q]`,
/// `arn:aws:lambda:r:123456789012:function:my-fn[:q]`.
pub fn function_ref(raw: &str, field: &str) -> ApiResult<FunctionRef> {
    let bad = || {
        ApiError::validation(
            raw,
            field,
            &format!("Member must satisfy regular expression pattern: {FUNCTION_NAME_PATTERN}"),
        )
    };
    if raw.is_empty() || raw.len() > 256 {
        return Err(ApiError::validation(
            raw,
            field,
            "Member must have length less than or equal to 256",
        ));
    }
    let parts: Vec<&str> = raw.split(':').collect();
    let (region, account, rest): (Option<&str>, Option<&str>, &[&str]) = match parts.as_slice() {
        ["arn", partition, "lambda", region, account, "function", rest @ ..]
            if partition.starts_with("aws") =>
        {
            (Some(*region), Some(*account), rest)
        }
        [account, "function", rest @ ..]
            if account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()) =>
        {
            (None, Some(*account), rest)
        }
        rest => (None, None, rest),
    };
    let (name, qualifier) = match rest {
        [name] => (*name, None),
        [name, q] => (*name, Some(*q)),
        _ => return Err(bad()),
    };
    if name.is_empty() || !name.chars().all(|c| is_name_char(c) || c == '.') {
        return Err(bad());
    }
    if name.len() > 64 {
        return Err(ApiError::validation(
            raw,
            field,
            "Member must have length less than or equal to 64",
        ));
    }
    if let Some(q) = qualifier {
        let ok = q == "$LATEST" || (!q.is_empty() && q.len() <= 128 && q.chars().all(is_name_char));
        if !ok {
            return Err(bad());
        }
    }
    if let Some(a) = account {
        if a.len() != 12 || !a.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
    }
    Ok(FunctionRef {
        name: name.to_string(),
        qualifier: qualifier.map(str::to_string),
        region: region.map(str::to_string),
        account: account.map(str::to_string),
    })
}

/// The name a new function gets (bare name rules: `[a-zA-Z0-9-_]{1,64}`).
pub fn new_function_name(raw: &str) -> ApiResult<String> {
    let r = function_ref(raw, "functionName")?;
    if r.name.contains('.') || r.qualifier.is_some() {
        return Err(ApiError::validation(
            raw,
            "functionName",
            &format!("Member must satisfy regular expression pattern: {FUNCTION_NAME_PATTERN}"),
        ));
    }
    Ok(r.name)
}

pub fn role(v: &str) -> ApiResult<()> {
    let ok = (|| {
        let rest = v.strip_prefix("arn:")?;
        let (partition, rest) = rest.split_once(':')?;
        if !partition.starts_with("aws") {
            return None;
        }
        let rest = rest.strip_prefix("iam::")?;
        let (account, role) = rest.split_once(":role")?;
        let role = role.strip_prefix('/').unwrap_or(role);
        (account.len() == 12
            && account.chars().all(|c| c.is_ascii_digit())
            && !role.is_empty()
            && role
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_/".contains(c)))
        .then_some(())
    })();
    ok.ok_or_else(|| {
        ApiError::validation(v, "role", "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+")
    })
}

/// An optional integer member within a range.
pub fn int_in(
    body: &Map<String, Value>,
    member: &str,
    field: &str,
    min: i64,
    max: i64,
) -> ApiResult<Option<i64>> {
    match body.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n
                .as_i64()
                .ok_or_else(|| ApiError::invalid(format!("{member} must be an integer")))?;
            if v < min {
                return Err(ApiError::validation(
                    &v.to_string(),
                    field,
                    &format!("Member must have value greater than or equal to {min}"),
                ));
            }
            if v > max {
                return Err(ApiError::validation(
                    &v.to_string(),
                    field,
                    &format!("Member must have value less than or equal to {max}"),
                ));
            }
            Ok(Some(v))
        }
        Some(other) => Err(type_error(member, other, "integer")),
    }
}

/// An optional string member with a maximum length.
pub fn string_max<'a>(
    body: &'a Map<String, Value>,
    member: &str,
    field: &str,
    max: usize,
) -> ApiResult<Option<&'a str>> {
    match body.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().count() > max {
                return Err(ApiError::validation(
                    s,
                    field,
                    &format!("Member must have length less than or equal to {max}"),
                ));
            }
            Ok(Some(s))
        }
        Some(other) => Err(type_error(member, other, "string")),
    }
}

pub fn type_error(member: &str, got: &Value, want: &str) -> ApiError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "structure",
    };
    ApiError::new(
        400,
        "InvalidParameterValueException",
        format!("Could not parse request body into json: {member} must be a {want}, not a {kind}"),
    )
}

/// A `Qualifier` query value: `$LATEST`, a version number or an alias name (1-128).
pub fn qualifier(v: &str) -> ApiResult<()> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && (v == "$LATEST"
            || v == "$LATEST.PUBLISHED"
            || v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '$'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            v,
            "qualifier",
            "Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)",
        ))
    }
}

/// An alias name: `(?!^[0-9]+$)([a-zA-Z0-9-_]+)`, 1-128.
pub fn alias_name(v: &str, field: &str) -> ApiResult<()> {
    if v.is_empty() || v.len() > 128 {
        return Err(ApiError::validation(
            v,
            field,
            "Member must have length between 1 and 128",
        ));
    }
    if v.bytes().all(|b| b.is_ascii_digit()) || !v.chars().all(is_name_char) {
        return Err(ApiError::validation(
            v,
            field,
            "Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)",
        ));
    }
    Ok(())
}

/// A version reference: `$LATEST` or digits.
pub fn function_version(v: &str, field: &str) -> ApiResult<()> {
    if v == "$LATEST" || (!v.is_empty() && v.len() <= 1024 && v.bytes().all(|b| b.is_ascii_digit()))
    {
        Ok(())
    } else {
        Err(ApiError::validation(
            v,
            field,
            "Member must satisfy regular expression pattern: (\\$LATEST|[0-9]+)",
        ))
    }
}

/// An optional boolean member.
pub fn bool_member(body: &Map<String, Value>, member: &str) -> ApiResult<Option<bool>> {
    match body.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(type_error(member, other, "boolean")),
    }
}

/// A `Tags` map: at most 50, keys 1-128, values 0-256, no `aws:` keys.
pub fn tags(v: Option<&Value>) -> ApiResult<Map<String, Value>> {
    let tags = match v {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(o)) => o.clone(),
        Some(other) => return Err(type_error("Tags", other, "map")),
    };
    check_tags(&tags)?;
    Ok(tags)
}

/// The rules every tag set must keep (also after TagResource merges new ones in).
pub fn check_tags(tags: &Map<String, Value>) -> ApiResult<()> {
    if tags.len() > 50 {
        return Err(ApiError::invalid(
            "Number of tags exceeds resource tag limit.",
        ));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(ApiError::validation(
                k,
                "tags",
                "Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]",
            ));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::invalid(format!(
                "Tag keys starting with 'aws:' are reserved for system use: {k}"
            )));
        }
        let Some(s) = v.as_str() else {
            return Err(type_error("Tags value", v, "string"));
        };
        if s.chars().count() > 256 {
            return Err(ApiError::validation(
                s,
                "tags",
                "Map value must satisfy constraint: [Member must have length less than or equal to 256]",
            ));
        }
    }
    Ok(())
}

pub fn handler(v: &str) -> ApiResult<()> {
    if v.len() > 128 {
        return Err(ApiError::validation(
            v,
            "handler",
            "Member must have length less than or equal to 128",
        ));
    }
    if v.is_empty() || v.chars().any(char::is_whitespace) {
        return Err(ApiError::validation(
            v,
            "handler",
            "Member must satisfy regular expression pattern: [^\\s]+",
        ));
    }
    Ok(())
}

/// A runtime name Lambda's model knows or this lamina has a runtime for (`ruby3.1`, `dotnet`):
/// the names layers may declare in CompatibleRuntimes.
pub fn runtime_name_known(v: &str) -> bool {
    LAMBDA_RUNTIMES.contains(&v) || crate::runtimes::is_known(v)
}

pub fn runtime(v: &str) -> ApiResult<()> {
    let supported = crate::runtimes::is_known(v);
    if !LAMBDA_RUNTIMES.contains(&v) && !supported {
        return Err(ApiError::validation(
            v,
            "runtime",
            &format!(
                "Member must satisfy enum value set: [{}]",
                LAMBDA_RUNTIMES.join(", ")
            ),
        ));
    }
    if !supported {
        return Err(ApiError::invalid(format!(
            "The runtime parameter of {v} is not supported by this lamina. Supported runtimes: {}.",
            crate::runtimes::known().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// `Environment.Variables`: names `[a-zA-Z]([a-zA-Z0-9_])+`, no reserved names, at most 4 KB
/// measured as the JSON of the map. Returns the map.
pub fn environment(env: Option<&Value>) -> ApiResult<Map<String, Value>> {
    let vars = match env {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(o)) => match o.get("Variables") {
            None | Some(Value::Null) => return Ok(Map::new()),
            Some(Value::Object(v)) => v.clone(),
            Some(other) => return Err(type_error("Environment.Variables", other, "map")),
        },
        Some(other) => return Err(type_error("Environment", other, "structure")),
    };
    for (k, v) in &vars {
        let mut cs = k.chars();
        let ok = cs.next().is_some_and(|c| c.is_ascii_alphabetic())
            && k.len() >= 2
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(ApiError::validation(
                k,
                "environment.variables",
                "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]",
            ));
        }
        if !v.is_string() {
            return Err(type_error(
                &format!("Environment.Variables.{k}"),
                v,
                "string",
            ));
        }
        if RESERVED_ENV.contains(&k.as_str()) {
            return Err(ApiError::invalid(format!(
                "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {k}"
            )));
        }
    }
    let measured = Value::Object(vars.clone()).to_string();
    if measured.len() > 4096 {
        return Err(ApiError::invalid(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {measured}"
        )));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runtime_names_layers_may_declare() {
        // Lambda's own names and the runtimes this lamina adds (rootfs/runtimes/*).
        for ok in [
            "python3.12",
            "java21",
            "dotnet8",
            "java17",
            "dotnet",
            "ruby3.1",
        ] {
            assert!(runtime_name_known(ok), "{ok}");
        }
        for bad in ["cobol", "", "dotnet9", "Python3.11"] {
            assert!(!runtime_name_known(bad), "{bad}");
        }
    }

    #[test]
    fn function_refs() {
        let r = function_ref("my-fn", "functionName").unwrap();
        assert_eq!((r.name.as_str(), r.qualifier.as_deref()), ("my-fn", None));
        let r = function_ref(
            "arn:aws:lambda:us-east-1:123456789012:function:my-fn:prod",
            "functionName",
        )
        .unwrap();
        assert_eq!(
            (r.name.as_str(), r.qualifier.as_deref(), r.region.as_deref()),
            ("my-fn", Some("prod"), Some("us-east-1"))
        );
        let r = function_ref("123456789012:function:f:$LATEST", "functionName").unwrap();
        assert_eq!(
            (r.name.as_str(), r.qualifier.as_deref()),
            ("f", Some("$LATEST"))
        );
        for bad in [
            "",
            "a b",
            "a/b",
            "f:q:x",
            "arn:aws:lambda:us-east-1:123:function:f",
            "f:bad qual",
            "é",
        ] {
            assert_eq!(
                function_ref(bad, "functionName").unwrap_err().error_type,
                "ValidationException",
                "{bad}"
            );
        }
        assert!(function_ref(&"a".repeat(65), "functionName").is_err());
        assert!(new_function_name("f.x").is_err());
    }

    #[test]
    fn roles() {
        role("arn:aws:iam::123456789012:role/lambda-role").unwrap();
        role("arn:aws:iam::123456789012:role/path/x").unwrap();
        for bad in [
            "",
            "role",
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:iam::123456789012:role/",
        ] {
            assert!(role(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_and_types() {
        let b = json!({"MemorySize": 127, "Timeout": "3", "Description": "x".repeat(257)});
        let b = b.as_object().unwrap();
        let e = int_in(b, "MemorySize", "memorySize", 128, 10240).unwrap_err();
        assert_eq!(e.message, "1 validation error detected: Value '127' at 'memorySize' failed to satisfy constraint: Member must have value greater than or equal to 128");
        assert_eq!(
            int_in(b, "Timeout", "timeout", 1, 900)
                .unwrap_err()
                .error_type,
            "InvalidParameterValueException"
        );
        assert!(string_max(b, "Description", "description", 256).is_err());
        assert_eq!(int_in(b, "Missing", "m", 1, 2).unwrap(), None);
    }

    #[test]
    fn environment_rules() {
        assert!(environment(Some(&json!({"Variables": {"A1": "x", "b_2": "y"}}))).is_ok());
        assert!(environment(Some(&json!({"Variables": {"1A": "x"}}))).is_err());
        assert!(environment(Some(&json!({"Variables": {"A": "x"}}))).is_err());
        let e = environment(Some(&json!({"Variables": {"AWS_REGION": "x"}}))).unwrap_err();
        assert!(e.message.contains("reserved keys"), "{}", e.message);
        let e = environment(Some(&json!({"Variables": {"BIG": "x".repeat(5000)}}))).unwrap_err();
        assert!(e.message.contains("exceeded the 4KB limit"));
        assert!(environment(Some(&json!({"Variables": {"N": 1}}))).is_err());
    }

    #[test]
    fn runtimes() {
        runtime("python3.11").unwrap();
        assert_eq!(
            runtime("cobol").unwrap_err().error_type,
            "ValidationException"
        );
        assert_eq!(
            runtime("nodejs8.10").unwrap_err().error_type,
            "InvalidParameterValueException"
        );
    }
}
