//! The Runtime API inside an env (init's side) and the invocation relay (the supervisor's
//! side): a Python runtime polls init over HTTP while the test drives the env through
//! `ExecutionEnvironment::{send_invoke, recv_event}`. Needs root.
//!
//! The bootstrap is an echo runtime that also obeys commands: an event `{"cmd": ...}` makes it
//! run `steps` (Runtime API requests whose results it records) and then answer with its `/next`
//! headers (`headers`), report and clear every result recorded so far (`report`), stay silent
//! (`none`) or exit.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lamina::sandbox::invoke::EnvEvent;
use lamina::sandbox::rootfs::Base;
use lamina::sandbox::{EnvSpec, ExecutionEnvironment, Sandbox, SandboxConfig};
use lamina_init::protocol::{ExitStatus, InvokeHeader, MAX_RESPONSE};
use serde_json::{json, Value};

use common::{assert_no_leftovers, TempDir};

const BOOTSTRAP: &str = r#"
import http.client, json, os, socket, sys, time, urllib.parse

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
HOST, PORT = API.split(":")
BASE = "/2018-06-01/runtime/"
conn = http.client.HTTPConnection(API)

# MODE=multi: /next on a connection of its own, as a runtime with a connection pool may do.
# It also starts slowly, so that the first invocation arrives before its first /next.
next_conn = http.client.HTTPConnection(API) if os.environ.get("MODE") == "multi" else conn
if next_conn is not conn:
    time.sleep(0.3)

def call(method, path, body=None, headers=None, conn=conn):
    chunked = isinstance(body, list)
    conn.request(method, BASE + path, body=iter(body) if chunked else body,
                 headers=headers or {}, encode_chunked=chunked)
    r = conn.getresponse()
    data = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data

def raw(text):
    s = socket.create_connection((HOST, int(PORT)))
    s.sendall(text.encode("latin-1"))
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
    s.close()
    return [0, {}, out.decode("latin-1")]

# Clients that never finish a request must not hold init up.
silent = socket.create_connection((HOST, int(PORT)))
half = socket.create_connection((HOST, int(PORT)))
half.sendall(("GET " + BASE + "invocation/next HTTP/1.1\r\nHost: x\r\nX-Half: ").encode())

mode = os.environ.get("MODE", "")
if mode.startswith("init_error"):
    headers = {}
    if mode == "init_error":
        headers["Lambda-Runtime-Function-Error-Type"] = "Runtime.ImportModuleError"
    body = json.dumps({"errorMessage": "Unable to import module 'bad'",
                       "errorType": "Runtime.ImportModuleError", "requestId": "", "stackTrace": []})
    status, _, _ = call("POST", "init/error", body, headers)
    sys.exit(1 if status == 202 else 2)

def body_of(spec):
    if isinstance(spec, dict) and "big" in spec:
        return b"x" * spec["big"]
    if isinstance(spec, dict) and "chunks" in spec:
        return [c.encode() for c in spec["chunks"]]
    return spec.encode()

def step(s, rid):
    sub = lambda t: t.replace("{id}", rid).replace("{qid}", urllib.parse.quote(rid, safe=""))
    if s[0] == "RAW":
        return raw(sub(s[1]))
    body = body_of(s[2]) if len(s) > 2 else None
    status, headers, data = call(s[0], sub(s[1]), body, s[3] if len(s) > 3 else None)
    return [status, headers, data.decode("latin-1")]

def serve():
    history = []
    while True:
        status, h, event = call("GET", "invocation/next", conn=next_conn)
        rid = h["lambda-runtime-aws-request-id"]
        try:
            cmd = json.loads(event)
        except ValueError:
            cmd = None
        if not isinstance(cmd, dict) or "cmd" not in cmd:
            call("POST", "invocation/" + rid + "/response", event, {"Content-Type": "application/x-echo"})
            continue
        results = [step(s, rid) for s in cmd.get("steps", [])]
        history += results
        what = cmd["cmd"]
        if what == "exit":
            sys.exit(cmd["code"])
        if what == "headers":
            remaining = int(h["lambda-runtime-deadline-ms"]) - int(time.time() * 1000)
            out = {"status": status, "headers": h, "remaining_ms": remaining, "results": results}
            call("POST", "invocation/" + rid + "/response", json.dumps(out), {"Content-Type": "application/json"})
        elif what == "report":
            call("POST", "invocation/" + rid + "/response", json.dumps(history))
            history = []

try:
    serve()
except (ConnectionError, http.client.HTTPException):
    os._exit(0)  # init is gone: the env is being torn down
"#;

const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:echo:live";
const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn header(id: &str) -> InvokeHeader {
    InvokeHeader {
        request_id: id.into(),
        deadline_ms: now_ms() + 30_000,
        invoked_function_arn: ARN.into(),
        trace_id: None,
        client_context: None,
        cognito_identity: None,
        payload_len: 0,
    }
}

/// One env running the bootstrap, and the sandbox it lives in.
struct Runtime {
    sb: Sandbox,
    env: ExecutionEnvironment,
    _code: TempDir,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Runtime {
    fn start(mode: &str) -> Runtime {
        let serial = common::serial();
        let code = TempDir::new("rapi");
        code.file("bootstrap.py", BOOTSTRAP, 0o755);
        let sb = Sandbox::new(&SandboxConfig {
            init_binary: Some(common::lamina()),
            ..Default::default()
        })
        .expect("sandbox");
        let spec = EnvSpec {
            code: Some(code.path().to_path_buf()),
            layers: Vec::new(),
            base: Base::Host,
            memory_mb: 512,
            tmp_mb: 512,
            pids: 64,
            argv: vec!["/usr/bin/python3".into(), "/var/task/bootstrap.py".into()],
            env: vec![
                "PATH=/usr/bin:/bin".into(),
                "LANG=C.UTF-8".into(),
                "AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001".into(),
                format!("MODE={mode}"),
            ],
            cwd: PathBuf::from("/var/task"),
            runtime_api: true,
            runtime_dir: None,
            lang_dir: None,
            stdout: None,
        };
        let env = sb.start(&spec).expect("start env");
        Runtime {
            sb,
            env,
            _code: code,
            _serial: serial,
        }
    }

    fn event(&self) -> EnvEvent {
        self.env
            .recv_event(Some(Instant::now() + WAIT))
            .expect("recv_event")
            .expect("an event before the deadline")
    }

    fn ready(&self) {
        let ev = self
            .env
            .wait_ready(Some(Instant::now() + WAIT))
            .expect("wait_ready");
        assert_eq!(ev, Some(EnvEvent::Ready));
    }

    /// Sends an invocation and returns what the env answers.
    fn invoke(&self, header: InvokeHeader, payload: &[u8]) -> EnvEvent {
        self.env.send_invoke(header, payload).expect("send_invoke");
        self.event()
    }

    /// Sends a command; returns the JSON the runtime answered with.
    fn command(&self, id: &str, cmd: Value) -> Value {
        match self.invoke(header(id), cmd.to_string().as_bytes()) {
            EnvEvent::Response {
                request_id, body, ..
            } => {
                assert_eq!(request_id, id);
                serde_json::from_slice(&body).expect("JSON answer")
            }
            other => panic!("expected a response to {id}, got {other:?}"),
        }
    }

    fn end(self, ctx: &str) {
        self.sb.destroy(&self.env);
        let Runtime { sb, _serial, .. } = self;
        drop(sb);
        assert_no_leftovers(ctx);
    }
}

/// Status and `errorType` of one recorded step.
fn outcome(result: &Value) -> (u64, String) {
    let status = result[0].as_u64().unwrap_or(0);
    let body: Value = serde_json::from_str(result[2].as_str().unwrap_or("")).unwrap_or(Value::Null);
    let kind = body["errorType"]
        .as_str()
        .or(body["status"].as_str())
        .unwrap_or("")
        .to_string();
    (status, kind)
}

/// A JSON string of `n` bytes of varied content, with escapes (so it stays valid JSON).
fn big_json_string(n: usize) -> Vec<u8> {
    let mut out = b"\"".to_vec();
    let mut x: u32 = 12345;
    while out.len() < n - 7 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        match (x >> 16) % 40 {
            0 => out.extend_from_slice(b"\\u00e9"),
            1 => out.extend_from_slice(b"\\n"),
            2 => out.extend_from_slice(b"\\\""),
            v => out.push(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [v as usize % 64],
            ),
        }
    }
    out.push(b'"');
    out
}

#[test]
fn ready_echo_and_exact_next_headers() {
    require_root!();
    let rt = Runtime::start("");
    rt.ready();

    // Every /next header, exactly.
    let mut h = header("req-hdr-1");
    let deadline = now_ms() + 3_000;
    h.deadline_ms = deadline;
    h.trace_id =
        Some("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".into());
    h.client_context = Some(r#"{"custom":{"k":"v"},"env":{"platform":"edge"}}"#.into());
    h.cognito_identity =
        Some(r#"{"cognitoIdentityId":"id1","cognitoIdentityPoolId":"pool1"}"#.into());
    let cmd = json!({"cmd": "headers"}).to_string();
    let got = match rt.invoke(h.clone(), cmd.as_bytes()) {
        EnvEvent::Response {
            request_id,
            content_type,
            body,
        } => {
            assert_eq!(request_id, "req-hdr-1");
            assert_eq!(content_type.as_deref(), Some("application/json"));
            serde_json::from_slice::<Value>(&body).expect("json")
        }
        other => panic!("{other:?}"),
    };
    let hd = &got["headers"];
    assert_eq!(got["status"], 200);
    assert_eq!(hd["lambda-runtime-aws-request-id"], "req-hdr-1");
    assert_eq!(hd["lambda-runtime-deadline-ms"], deadline.to_string());
    assert_eq!(hd["lambda-runtime-invoked-function-arn"], ARN);
    assert_eq!(
        hd["lambda-runtime-trace-id"],
        h.trace_id.as_deref().unwrap_or("")
    );
    assert_eq!(
        hd["lambda-runtime-client-context"],
        h.client_context.as_deref().unwrap_or("")
    );
    assert_eq!(
        hd["lambda-runtime-cognito-identity"],
        h.cognito_identity.as_deref().unwrap_or("")
    );
    assert_eq!(hd["content-type"], "application/json");
    assert_eq!(hd["content-length"], cmd.len().to_string());
    let remaining = got["remaining_ms"].as_i64().unwrap_or(0);
    assert!(
        (1_000..=3_000).contains(&remaining),
        "remaining {remaining} ms"
    );

    // Optional headers are left out when unset; Content-Type is always there.
    let got = rt.command("req-hdr-2", json!({"cmd": "headers"}));
    let hd = got["headers"].as_object().expect("headers");
    for absent in [
        "lambda-runtime-trace-id",
        "lambda-runtime-client-context",
        "lambda-runtime-cognito-identity",
    ] {
        assert!(!hd.contains_key(absent), "{absent} in {hd:?}");
    }
    assert_eq!(hd["content-type"], "application/json");

    // Echo, small and 5 MB (chunked both ways over the control socket), with the runtime's
    // Content-Type.
    for (i, payload) in [br#"{"hello":"world"}"#.to_vec(), big_json_string(5_000_000)]
        .into_iter()
        .enumerate()
    {
        let id = format!("req-echo-{i}");
        match rt.invoke(header(&id), &payload) {
            EnvEvent::Response {
                request_id,
                content_type,
                body,
            } => {
                assert_eq!(request_id, id);
                assert_eq!(content_type.as_deref(), Some("application/x-echo"));
                assert_eq!(body.len(), payload.len());
                assert!(body == payload, "echoed payload differs");
            }
            other => panic!("{other:?}"),
        }
    }
    rt.end("echo");
}

#[test]
fn request_ids_modes_paths_and_states() {
    require_root!();
    let rt = Runtime::start("");
    rt.ready();
    // Answered through a percent-encoded id; every other attempt is refused.
    let id = "req-a/b 1";
    let steps = json!([
        ["POST", "invocation/not-the-id/response", "x"],
        ["POST", "invocation/{qid}/response", "x", {"Lambda-Runtime-Function-Response-Mode": "buffered"}],
        ["POST", "invocation/{qid}/response", "first", {"Content-Type": "text/plain"}],
        ["POST", "invocation/{qid}/response", "second"],
        ["POST", "invocation/{qid}/error", "{}"],
        ["POST", "init/error", "{}"],
        ["GET", "no/such/path"],
        ["POST", "invocation/next"],
        ["GET", "invocation/{qid}/response"],
        ["RAW", "GET /2018-06-01/runtime/nope HTTP/1.1\r\nHost: x\r\n\r\nPOST /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"],
    ]);
    match rt.invoke(
        header(id),
        json!({"cmd": "none", "steps": steps})
            .to_string()
            .as_bytes(),
    ) {
        EnvEvent::Response {
            request_id,
            content_type,
            body,
        } => {
            assert_eq!(request_id, id);
            assert_eq!(content_type.as_deref(), Some("text/plain"));
            assert_eq!(body, b"first");
        }
        other => panic!("{other:?}"),
    }
    let report = rt.command("req-report", json!({"cmd": "report"}));
    let outcomes: Vec<(u64, String)> = report
        .as_array()
        .expect("results")
        .iter()
        .map(outcome)
        .collect();
    let expect = |s: u64, t: &str| (s, t.to_string());
    assert_eq!(
        &outcomes[..9],
        &[
            expect(400, "InvalidRequestID"),
            expect(400, "InvalidFunctionResponseMode"),
            expect(202, "OK"),
            expect(400, "InvalidRequestID"),
            expect(400, "InvalidRequestID"),
            expect(403, "InvalidStateTransition"),
            expect(404, "NotFound"),
            expect(405, "MethodNotAllowed"),
            expect(405, "MethodNotAllowed"),
        ]
    );
    // Error answers are JSON with errorMessage, errorType and Content-Type: application/json.
    let first = &report[0];
    assert_eq!(first[1]["content-type"], "application/json");
    let body: Value = serde_json::from_str(first[2].as_str().unwrap_or("")).expect("json");
    assert!(body["errorMessage"].is_string());
    // Pipelined requests are answered in order.
    let raw = report[9][2].as_str().unwrap_or("");
    let a = raw.find("HTTP/1.1 404 Not Found").expect(raw);
    let b = raw.find("HTTP/1.1 405 Method Not Allowed").expect(raw);
    assert!(a < b, "{raw}");
    rt.end("request ids");
}

#[test]
fn oversized_responses_get_413() {
    require_root!();
    let rt = Runtime::start("");
    rt.ready();
    let steps = json!([
        ["POST", "invocation/{id}/response", {"big": MAX_RESPONSE + 1}],
        ["POST", "invocation/{id}/response", "late"],
    ]);
    let cmd = json!({"cmd": "none", "steps": steps}).to_string();
    assert_eq!(
        rt.invoke(header("req-big"), cmd.as_bytes()),
        EnvEvent::ResponseTooLarge {
            request_id: "req-big".into()
        }
    );
    // Exactly the limit is fine.
    let steps = json!([["POST", "invocation/{id}/response", {"big": MAX_RESPONSE}]]);
    let cmd = json!({"cmd": "none", "steps": steps}).to_string();
    match rt.invoke(header("req-limit"), cmd.as_bytes()) {
        EnvEvent::Response { body, .. } => assert_eq!(body.len(), MAX_RESPONSE),
        other => panic!("{other:?}"),
    }
    let report = rt.command("req-report", json!({"cmd": "report"}));
    let outcomes: Vec<(u64, String)> = report
        .as_array()
        .expect("results")
        .iter()
        .map(outcome)
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (413, "RequestEntityTooLarge".to_string()),
            (400, "InvalidRequestID".to_string()),
            (202, "OK".to_string()),
        ]
    );
    rt.end("413");
}

#[test]
fn function_errors_with_and_without_type() {
    require_root!();
    let rt = Runtime::start("");
    rt.ready();
    let err =
        r#"{"errorMessage":"boom","errorType":"ValueError","requestId":"req-e1","stackTrace":[]}"#;
    let steps = json!([["POST", "invocation/{id}/error", err, {"Lambda-Runtime-Function-Error-Type": "Function.ValueError", "Content-Type": "application/json"}]]);
    assert_eq!(
        rt.invoke(
            header("req-e1"),
            json!({"cmd": "none", "steps": steps})
                .to_string()
                .as_bytes()
        ),
        EnvEvent::Error {
            request_id: "req-e1".into(),
            error_type: Some("Function.ValueError".into()),
            body: err.as_bytes().to_vec(),
        }
    );
    // As the Python and Node RICs send it: no error-type header.
    let steps = json!([["POST", "invocation/{id}/error", err]]);
    assert_eq!(
        rt.invoke(
            header("req-e2"),
            json!({"cmd": "none", "steps": steps})
                .to_string()
                .as_bytes()
        ),
        EnvEvent::Error {
            request_id: "req-e2".into(),
            error_type: None,
            body: err.as_bytes().to_vec(),
        }
    );
    let report = rt.command("req-report", json!({"cmd": "report"}));
    let outcomes: Vec<(u64, String)> = report
        .as_array()
        .expect("results")
        .iter()
        .map(outcome)
        .collect();
    assert_eq!(
        outcomes,
        vec![(202, "OK".to_string()), (202, "OK".to_string())]
    );
    rt.end("errors");
}

#[test]
fn chunked_responses_with_trailers() {
    require_root!();
    let rt = Runtime::start("");
    rt.ready();
    let streaming = "POST /2018-06-01/runtime/invocation/{id}/response HTTP/1.1\r\nHost: x\r\n\
        Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n\
        Content-Type: text/plain\r\nExpect: 100-continue\r\n\
        Trailer: Lambda-Runtime-Function-Error-Type\r\nConnection: close\r\n\r\n\
        5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nLambda-Runtime-Function-Error-Type: None\r\n\r\n";
    let steps = json!([["RAW", streaming]]);
    let cmd = json!({"cmd": "none", "steps": steps}).to_string();
    match rt.invoke(header("req-c1"), cmd.as_bytes()) {
        EnvEvent::Response {
            content_type, body, ..
        } => {
            assert_eq!(content_type.as_deref(), Some("text/plain"));
            assert_eq!(body, b"hello, world");
        }
        other => panic!("{other:?}"),
    }
    // http.client's own chunked encoding, on the keep-alive connection.
    let steps = json!([["POST", "invocation/{id}/response", {"chunks": ["ab", "", "cd"]}]]);
    let cmd = json!({"cmd": "none", "steps": steps}).to_string();
    match rt.invoke(header("req-c2"), cmd.as_bytes()) {
        EnvEvent::Response { body, .. } => assert_eq!(body, b"abcd"),
        other => panic!("{other:?}"),
    }
    let report = rt.command("req-report", json!({"cmd": "report"}));
    let raw = report[0][2].as_str().unwrap_or("");
    let (cont, ok) = (
        raw.find("HTTP/1.1 100 Continue"),
        raw.find("HTTP/1.1 202 Accepted"),
    );
    assert!(cont.is_some() && cont < ok, "{raw}");
    assert!(raw.ends_with(r#"{"status":"OK"}"#), "{raw}");
    assert_eq!(outcome(&report[1]), (202, "OK".to_string()));
    rt.end("chunked");
}

#[test]
fn init_errors_before_next() {
    require_root!();
    for (mode, error_type) in [
        ("init_error", Some("Runtime.ImportModuleError")),
        ("init_error_untyped", None),
    ] {
        let rt = Runtime::start(mode);
        match rt
            .env
            .wait_ready(Some(Instant::now() + WAIT))
            .expect("wait_ready")
        {
            Some(EnvEvent::InitError {
                error_type: t,
                body,
            }) => {
                assert_eq!(t.as_deref(), error_type);
                let v: Value = serde_json::from_slice(&body).expect("json");
                assert_eq!(v["errorType"], "Runtime.ImportModuleError");
            }
            other => panic!("{mode}: {other:?}"),
        }
        // The runtime exits 1 after a 202 (2 otherwise).
        assert_eq!(rt.event(), EnvEvent::Exited(ExitStatus::Code(1)));
        assert_eq!(rt.event(), EnvEvent::Gone);
        rt.end(mode);
    }
}

#[test]
fn early_invocation_and_runtime_exit() {
    require_root!();
    let rt = Runtime::start("multi");
    // The invocation arrives before the runtime's first /next, and waits for it.
    rt.env
        .send_invoke(header("req-early"), b"\"early\"")
        .expect("send");
    rt.ready();
    match rt.event() {
        EnvEvent::Response {
            request_id, body, ..
        } => assert_eq!(
            (request_id.as_str(), body.as_slice()),
            ("req-early", &b"\"early\""[..])
        ),
        other => panic!("{other:?}"),
    }
    rt.env
        .send_invoke(
            header("req-x"),
            json!({"cmd": "exit", "code": 3}).to_string().as_bytes(),
        )
        .expect("send");
    assert_eq!(rt.event(), EnvEvent::Exited(ExitStatus::Code(3)));
    assert_eq!(rt.event(), EnvEvent::Gone);
    // Nothing more, and a deadline is honoured rather than blocking.
    let t = Instant::now();
    let late = rt
        .env
        .recv_event(Some(Instant::now() + Duration::from_millis(200)));
    assert!(
        matches!(late, Ok(Some(EnvEvent::Gone)) | Ok(None)),
        "{late:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    rt.end("exit");
}
