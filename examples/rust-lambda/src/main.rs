//! A `provided.al2023` custom runtime built with AWS's `lambda_runtime` crate: lamina's API tests
//! run it as function code (`tests/api/test_lambda_api.py::test_lambda_runtime_crate`).
//!
//! The handler echoes the event with what the runtime read from the Runtime API (request id,
//! deadline) and from the environment (function name). `{"fail": true}` makes it return an error,
//! which `lambda_runtime` reports to `/invocation/{id}/error`.
//!
//! An event with an `"op"` is lamina's runtime conformance contract instead
//! (examples/conformance/README.md); examples/conformance/rust builds this crate.

use std::time::{Duration, SystemTime};

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

/// The conformance ops (`{"op": ...}`), answered from lambda_runtime's context.
fn conformance(op: &str, payload: &Value, ctx: &lambda_runtime::Context) -> Result<Value, Error> {
    let s = |k: &str| {
        payload
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Ok(match op {
        "echo" => payload.get("data").cloned().unwrap_or(Value::Null),
        "context" => {
            let c = &ctx.env_config;
            let left = ctx
                .deadline()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            json!({
                "request_id": ctx.request_id,
                "function_name": c.function_name,
                "function_version": c.version,
                "invoked_function_arn": ctx.invoked_function_arn,
                "memory_limit_in_mb": c.memory,
                "remaining_time_ms": left.as_millis() as u64,
                "log_group_name": c.log_group,
                "log_stream_name": c.log_stream,
            })
        }
        "env" => {
            let mut out = serde_json::Map::new();
            for n in payload["names"].as_array().into_iter().flatten() {
                let n = n.as_str().unwrap_or("");
                out.insert(
                    n.to_string(),
                    std::env::var(n).map_or(Value::Null, Value::String),
                );
            }
            Value::Object(out)
        }
        "error" => return Err(s("message").into()),
        "sleep" => {
            std::thread::sleep(Duration::from_millis(payload["ms"].as_u64().unwrap_or(0)));
            json!("slept")
        }
        "print" => {
            println!("{}", s("text"));
            eprintln!("{}", s("text"));
            json!("printed")
        }
        "tmp_write" => {
            std::fs::write("/tmp/conformance.txt", s("data"))?;
            json!("written")
        }
        "tmp_read" => {
            std::fs::read_to_string("/tmp/conformance.txt").map_or(Value::Null, Value::String)
        }
        "layer" => {
            // Layer executables are in /opt/bin, on PATH as Lambda sets it.
            let out = std::process::Command::new("lamina-layer").output()?;
            json!(String::from_utf8_lossy(&out.stdout).trim())
        }
        other => return Err(format!("unknown op {other}").into()),
    })
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, ctx) = event.into_parts();
    if let Some(op) = payload.get("op").and_then(Value::as_str) {
        return conformance(op, &payload, &ctx);
    }
    if payload.get("fail") == Some(&Value::Bool(true)) {
        return Err(format!("rust handler failed on request {}", ctx.request_id).into());
    }
    Ok(json!({
        "rust": payload,
        "request_id": ctx.request_id,
        "function_name": ctx.env_config.function_name,
        "deadline_ok": ctx.deadline() > SystemTime::now(),
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
