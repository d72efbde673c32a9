//! A `provided.al2023` custom runtime built with AWS's `lambda_runtime` crate: lamina's API tests
//! run it as function code (`tests/api/test_lambda_api.py::test_lambda_runtime_crate`).
//!
//! The handler echoes the event with what the runtime read from the Runtime API (request id,
//! deadline) and from the environment (function name). `{"fail": true}` makes it return an error,
//! which `lambda_runtime` reports to `/invocation/{id}/error`.

use std::time::SystemTime;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, ctx) = event.into_parts();
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
