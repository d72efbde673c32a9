"""lamina's python runtime bootstrap (rootfs/runtimes/python3.11/runtime) against a fake Runtime API.

Each test writes handler files into a temp dir used as LAMBDA_TASK_ROOT (and cwd),
starts a fake Runtime API (2018-06-01) on 127.0.0.1, runs rootfs/runtimes/python3.11/runtime/bootstrap
as a subprocess and checks what the runtime posted and printed.

Run: python3 -m pytest tests/runtimes/test_python_bootstrap.py
"""

import json
import os
import queue
import re
import signal
import struct
import subprocess
import textwrap
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME_DIR = REPO / "rootfs" / "runtimes" / "python3.11" / "runtime"
BOOTSTRAP = RUNTIME_DIR / "bootstrap"
PYTHON = "/usr/bin/python3"
PREFIX = "/2018-06-01/runtime"
MAX_RESPONSE = 6 * 1024 * 1024 + 100

pytestmark = pytest.mark.skipif(not os.access(PYTHON, os.X_OK), reason="needs /usr/bin/python3")


# --------------------------------------------------------------------------------------
# Fake Runtime API
# --------------------------------------------------------------------------------------


class FakeRuntimeAPI:
    """The in-sandbox Runtime API with the status codes of LAMBDA_FACTS 1.2."""

    def __init__(self):
        self.events = queue.Queue()
        self.posts = queue.Queue()  # (kind, request_id, body, headers)
        self.requests = []  # (method, path, client port, headers)
        self.lock = threading.Lock()
        self.current = None
        self.answered = True
        self.next_calls = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, obj=None, headers=(), body=None):
                data = body if body is not None else json.dumps(obj).encode()
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self):
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                with api.lock:
                    api.requests.append((self.command, self.path, self.client_address[1], hdrs))
                return hdrs

            def do_GET(self):
                self._record()
                if self.path != PREFIX + "/invocation/next":
                    return self._reply(404, {"errorMessage": "not found", "errorType": "NotFound"})
                with api.lock:
                    api.next_calls += 1
                    if not api.answered:
                        return self._reply(
                            403, {"errorMessage": "no response yet", "errorType": "InvalidStateTransition"}
                        )
                event = api.events.get()
                if event is None:  # test over
                    return self._reply(
                        500, {"errorMessage": "shutting down", "errorType": "InternalServerError"},
                        headers=[("Content-Type", "application/json")],
                    )
                with api.lock:
                    api.current, api.answered = event["id"], False
                headers = [("Lambda-Runtime-Aws-Request-Id", event["id"]),
                           ("Lambda-Runtime-Deadline-Ms", str(event["deadline"])),
                           ("Lambda-Runtime-Invoked-Function-Arn", event["arn"]),
                           ("Content-Type", event["content_type"])]
                headers += list(event["headers"].items())
                if event["close"]:
                    headers.append(("Connection", "close"))
                    self.close_connection = True
                if not event["chunked"]:
                    return self._reply(200, headers=headers, body=event["body"])
                self.send_response(200)
                for k, v in headers + [("Transfer-Encoding", "chunked")]:
                    self.send_header(k, v)
                self.end_headers()
                half = len(event["body"]) // 2
                for part in (event["body"][:half], event["body"][half:]):
                    if part:
                        self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\nX-Trailer: t\r\n\r\n")

            def do_POST(self):
                hdrs = self._record()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == PREFIX + "/init/error":
                    with api.lock:
                        late = api.next_calls > 0
                    if late:
                        return self._reply(
                            403, {"errorMessage": "init done", "errorType": "InvalidStateTransition"}
                        )
                    api.posts.put(("init_error", "", body, hdrs))
                    return self._reply(202, {"status": "OK"})
                m = re.fullmatch(re.escape(PREFIX) + r"/invocation/([^/]+)/(response|error)", self.path)
                if not m:
                    return self._reply(404, {"errorMessage": "not found", "errorType": "NotFound"})
                rid, kind = unquote(m.group(1)), m.group(2)
                with api.lock:
                    if rid != api.current or api.answered:
                        return self._reply(
                            400, {"errorMessage": "bad id", "errorType": "InvalidRequestID"}
                        )
                    if kind == "response" and len(body) > MAX_RESPONSE:
                        api.answered = True
                        return self._reply(
                            413, {"errorMessage": "too large", "errorType": "RequestEntityTooLarge"}
                        )
                    api.answered = True
                api.posts.put((kind, rid, body, hdrs))
                self._reply(202, {"status": "OK"})

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # the runtime being killed mid-request is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.server.server_address[1]

    def add_event(self, body=b"{}", content_type="application/json", headers=None,
                  request_id=None, deadline_ms=None, arn=None, chunked=False, close=False):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        rid = request_id or str(uuid.uuid4())
        self.events.put({
            "id": rid,
            "body": body,
            "content_type": content_type,
            "headers": headers or {},
            "deadline": deadline_ms or int(time.time() * 1000) + 30000,
            "arn": arn or "arn:aws:lambda:us-east-1:123456789012:function:fn",
            "chunked": chunked,
            "close": close,
        })
        return rid

    def close(self):
        for _ in range(4):
            self.events.put(None)
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------
# Running the bootstrap
# --------------------------------------------------------------------------------------


class Run:
    def __init__(self, root, handler, env=None, pass_fds=()):
        self.root = root
        self.api = FakeRuntimeAPI()
        full_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "AWS_LAMBDA_RUNTIME_API": self.api.address,
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": str(root),
            "AWS_REGION": "us-east-1",
            "AWS_LAMBDA_FUNCTION_NAME": "fn",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/31/[$LATEST]0123456789abcdef0123456789abcdef",
        }
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v
        self.proc = subprocess.Popen(
            [str(BOOTSTRAP)], cwd=root, env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds,
        )
        self._out, self._err = [], []
        self._readers = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for t in self._readers:
            t.start()

    @staticmethod
    def _drain(stream, sink):
        for chunk in iter(lambda: stream.read1(65536), b""):
            sink.append(chunk)

    def event(self, *args, **kwargs):
        return self.api.add_event(*args, **kwargs)

    def post(self, timeout=20):
        """The next thing the runtime posted: (kind, request id, body bytes, headers)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.api.posts.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None and self.api.posts.empty():
                    time.sleep(0.2)
                    if self.api.posts.empty():
                        raise AssertionError(
                            "runtime exited %s before posting\nstdout: %s\nstderr: %s"
                            % (self.proc.returncode, self.stdout, self.stderr)
                        )
        raise AssertionError("nothing posted\nstdout: %s\nstderr: %s" % (self.stdout, self.stderr))

    def invoke(self, *args, **kwargs):
        rid = self.event(*args, **kwargs)
        kind, got_id, body, headers = self.post()
        assert got_id == rid
        return kind, body, headers

    def wait_exit(self, timeout=20):
        self.proc.wait(timeout)
        for t in self._readers:
            t.join(5)
        return self.proc.returncode

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._readers:
            t.join(5)

    @property
    def stdout(self):
        return b"".join(self._out).decode("utf-8", "replace")

    @property
    def stderr(self):
        return b"".join(self._err).decode("utf-8", "replace")

    def close(self):
        self.stop(signal.SIGKILL)
        self.api.close()


@pytest.fixture
def runtime(tmp_path):
    runs = []

    def start(files, handler="app.handler", env=None, pass_fds=()):
        root = tmp_path / ("task%d" % len(runs))
        root.mkdir()
        for rel, src in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(src).lstrip("\n"))
        run = Run(root, handler, env, pass_fds)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.close()


def ok_body(kind, body, headers):
    assert kind == "response", body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


ECHO = {"app.py": "def handler(event, context):\n    return event\n"}
TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


# --------------------------------------------------------------------------------------
# Invokes
# --------------------------------------------------------------------------------------


def test_echo_and_post_headers(runtime):
    run = runtime(ECHO)
    event = {"hello": "world", "n": [1, 2.5, None, True], "s": "caf\u00e9"}
    kind, body, headers = run.invoke(event)
    assert ok_body(kind, body, headers) == event
    assert body == json.dumps(event).encode()  # ensure_ascii on python3.11
    assert headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in headers and "expect" not in headers
    assert "lambda-runtime-function-error-type" not in headers
    assert headers["user-agent"].startswith("aws-lambda-python/")
    # empty-ish payloads
    assert ok_body(*run.invoke(b"{}")) == {}
    assert ok_body(*run.invoke(b"null")) is None


def test_keep_alive_single_connection(runtime):
    run = runtime(ECHO)
    for i in range(4):
        assert ok_body(*run.invoke({"i": i})) == {"i": i}
    ports = {port for method, path, port, _ in run.api.requests}
    assert len(ports) == 1, run.api.requests


def test_chunked_and_closed_connections(runtime):
    run = runtime(ECHO)
    assert ok_body(*run.invoke({"a": "chunked"}, chunked=True)) == {"a": "chunked"}
    assert ok_body(*run.invoke({"b": "close"}, close=True)) == {"b": "close"}
    assert ok_body(*run.invoke({"c": 1})) == {"c": 1}
    ports = [port for method, path, port, _ in run.api.requests]
    assert len(set(ports)) == 2  # a new connection after "Connection: close"


def test_context_fields(runtime):
    run = runtime({"app.py": """
        def handler(event, context):
            names = ["function_name", "function_version", "invoked_function_arn",
                     "memory_limit_in_mb", "aws_request_id", "log_group_name",
                     "log_stream_name", "tenant_id"]
            out = {n: getattr(context, n) for n in names}
            out["remaining"] = context.get_remaining_time_in_millis()
            out["identity"] = [context.identity.cognito_identity_id,
                               context.identity.cognito_identity_pool_id]
            out["client_context"] = context.client_context
            out["w3c"] = context.w3c()
            out["repr"] = repr(context)
            return out
    """})
    arn = "arn:aws:lambda:us-east-1:123456789012:function:fn:live"
    deadline = int(time.time() * 1000) + 30000
    rid = run.event({}, arn=arn, deadline_ms=deadline)
    kind, got, body, headers = run.post()
    out = ok_body(kind, body, headers)
    assert got == rid
    assert out["function_name"] == "fn"
    assert out["function_version"] == "$LATEST"
    assert out["invoked_function_arn"] == arn
    assert out["memory_limit_in_mb"] == "256"  # a string on Lambda (the env var)
    assert out["aws_request_id"] == rid
    assert out["log_group_name"] == "/aws/lambda/fn"
    assert out["log_stream_name"] == "2024/01/31/[$LATEST]0123456789abcdef0123456789abcdef"
    assert out["tenant_id"] is None
    assert 20000 < out["remaining"] <= 30000
    assert out["identity"] == [None, None]
    assert out["client_context"] is None
    assert out["w3c"] == {}
    assert out["repr"].startswith("LambdaContext([aws_request_id=%s,log_group_name=" % rid)

    # a past deadline gives 0, never negative
    out = ok_body(*run.invoke({}, deadline_ms=int(time.time() * 1000) - 5000))
    assert out["remaining"] == 0


def test_client_context_and_identity(runtime):
    run = runtime({"app.py": """
        def handler(event, context):
            cc = context.client_context
            c = cc.client
            return {
                "client": [c.installation_id, c.app_title, c.app_version_name,
                           c.app_version_code, c.app_package_name],
                "custom": cc.custom, "env": cc.env,
                "identity": [context.identity.cognito_identity_id,
                             context.identity.cognito_identity_pool_id],
                "w3c": context.w3c(),
                "has_w3c_attr": hasattr(cc, "w3c"),
                "tenant": context.tenant_id,
            }
    """})
    client_context = {
        "client": {"installation_id": "inst-1", "app_title": "App", "app_version_name": "1.0",
                   "app_version_code": "100", "app_package_name": "com.example"},
        "custom": {"k": "v"},
        "env": {"platform": "Android"},
        "w3c": {"traceparent": "00-abc-def-01", "baggage": 5, "other": "x"},
    }
    identity = {"cognitoIdentityId": "us-east-1:id", "cognitoIdentityPoolId": "us-east-1:pool"}
    kind, body, headers = run.invoke({}, headers={
        "Lambda-Runtime-Client-Context": json.dumps(client_context),
        "Lambda-Runtime-Cognito-Identity": json.dumps(identity),
        "Lambda-Runtime-Aws-Tenant-Id": "tenant-7",
    })
    out = ok_body(kind, body, headers)
    assert out["client"] == ["inst-1", "App", "1.0", "100", "com.example"]
    assert out["custom"] == {"k": "v"} and out["env"] == {"platform": "Android"}
    assert out["identity"] == ["us-east-1:id", "us-east-1:pool"]
    assert out["w3c"] == {"traceparent": "00-abc-def-01"}
    assert out["has_w3c_attr"] is False
    assert out["tenant"] == "tenant-7"

    # client context without "client": .client is None
    kind, body, headers = run.invoke({}, headers={"Lambda-Runtime-Client-Context": '{"custom": {}}'})
    assert kind == "error"
    err = json.loads(body)
    assert err["errorType"] == "AttributeError"  # 'NoneType' object has no attribute ...

    # a client context that is not JSON
    kind, body, headers = run.invoke({}, headers={"Lambda-Runtime-Client-Context": "{nope"})
    assert kind == "error"
    err = json.loads(body)
    assert err["errorType"] == "Runtime.LambdaContextUnmarshalError"
    assert err["errorMessage"].startswith("Unable to parse Client Context JSON: ")
    assert err["stackTrace"] == []


def test_handler_exception(runtime):
    run = runtime({"app.py": """
        def handler(event, context):
            if event.get("ok"):
                return "fine"
            helper()

        def helper():
            raise ValueError("boom")
    """})
    rid = run.event({})
    kind, got, body, headers = run.post()
    assert kind == "error" and got == rid
    err = json.loads(body)
    assert list(err) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    path = str(run.root / "app.py")
    assert err == {
        "errorMessage": "boom",
        "errorType": "ValueError",
        "requestId": rid,
        "stackTrace": [
            '  File "%s", line 4, in handler\n    helper()\n' % path,
            '  File "%s", line 7, in helper\n    raise ValueError("boom")\n' % path,
        ],
    }
    assert headers["content-type"] == "application/json"
    assert "lambda-runtime-function-error-type" not in headers
    cause = json.loads(headers["lambda-runtime-function-xray-error-cause"])
    assert cause["working_directory"] == str(run.root)
    assert cause["paths"] == [path]
    assert cause["exceptions"] == [{
        "message": "boom", "type": "ValueError",
        "stack": [{"label": "handler", "path": path, "line": 4},
                  {"label": "helper", "path": path, "line": 7}],
    }]
    # the runtime keeps serving
    assert ok_body(*run.invoke({"ok": True})) == "fine"
    nb = "\u00a0"
    expected_log = (
        "[ERROR] ValueError: boom\rTraceback (most recent call last):\r"
        + nb * 2 + 'File "%s", line 4, in handler\r' % path
        + nb * 4 + "helper()\r"
        + nb * 2 + 'File "%s", line 7, in helper\r' % path
        + nb * 4 + 'raise ValueError("boom")\n'
    )
    run.stop()
    assert expected_log in run.stdout


def test_deep_traceback_drops_xray_header(runtime):
    # ~1000 frames: the X-Ray cause would exceed the Runtime API's 64 KiB request head
    run = runtime({"app.py": """
        def handler(event, context):
            return recurse(0)

        def recurse(n):
            return recurse(n + 1)
    """})
    kind, body, headers = run.invoke({})
    assert kind == "error"
    assert "lambda-runtime-function-xray-error-cause" not in headers
    err = json.loads(body)
    assert err["errorType"] == "RecursionError"
    assert err["errorMessage"] == "maximum recursion depth exceeded"
    assert any("Previous line repeated" in s for s in err["stackTrace"])


def test_exception_messages_and_types(runtime):
    run = runtime({"app.py": """
        class MyError(Exception):
            pass

        def handler(event, context):
            kind = event["kind"]
            if kind == "key":
                return {}["missing"]
            if kind == "custom":
                raise MyError("custom", 2)
            if kind == "empty":
                raise Exception()
    """})
    err = json.loads(run.invoke({"kind": "key"})[1])
    assert (err["errorType"], err["errorMessage"]) == ("KeyError", "'missing'")
    err = json.loads(run.invoke({"kind": "custom"})[1])
    assert (err["errorType"], err["errorMessage"]) == ("MyError", "('custom', 2)")
    err = json.loads(run.invoke({"kind": "empty"})[1])
    assert (err["errorType"], err["errorMessage"]) == ("Exception", "")
    run.stop()
    assert "[ERROR] Exception\rTraceback (most recent call last):\r" in run.stdout


def test_marshal_error(runtime):
    run = runtime({"app.py": """
        class Thing:
            pass

        def handler(event, context):
            return {"s": {1, 2}} if event == "set" else Thing()
    """})
    kind, body, headers = run.invoke("set")
    assert kind == "error"
    err = json.loads(body)
    assert err["errorType"] == "Runtime.MarshalError"
    assert err["errorMessage"] == "Unable to marshal response: Object of type set is not JSON serializable"
    assert err["stackTrace"] == []
    cause = json.loads(headers["lambda-runtime-function-xray-error-cause"])
    assert cause["exceptions"][0]["type"] == "LambdaValidationError"
    err = json.loads(run.invoke("thing")[1])
    assert err["errorMessage"] == "Unable to marshal response: Object of type Thing is not JSON serializable"
    run.stop()
    assert ("[ERROR] Runtime.MarshalError: Unable to marshal response: Object of type set is not "
            "JSON serializable\rTraceback (most recent call last):\n") in run.stdout


def test_result_encoding_like_lambda(runtime):
    run = runtime({"app.py": """
        import collections
        from decimal import Decimal

        class Rec:
            def _asdict(self):
                return {"x": 1}

        def handler(event, context):
            if event == "bytes":
                return b"\\x00\\x01raw"
            return {
                "d": Decimal("1.10"),
                "big": Decimal("12345678901234567890.123456789"),
                "exp": Decimal("1E+2"),
                "nan": Decimal("NaN"),
                "b": b"caf\\xc3\\xa9",
                "u": "caf\\u00e9",
                "inf": float("inf"),
                "rec": Rec(),
                "t": (1, 2),
                "trap": "\\x00lamina-raw-0",
            }
    """})
    kind, body, headers = run.invoke("values")
    assert kind == "response" and headers["content-type"] == "application/json"
    assert body == (b'{"d": 1.10, "big": 12345678901234567890.123456789, "exp": 1E+2, "nan": NaN, '
                    b'"b": "caf\\u00e9", "u": "caf\\u00e9", "inf": Infinity, "rec": {"x": 1}, '
                    b'"t": [1, 2], "trap": "\\u0000lamina-raw-0"}')
    kind, body, headers = run.invoke("bytes")
    assert kind == "response"
    assert body == b"\x00\x01raw"
    assert headers["content-type"] == "application/unknown"


def test_event_decoding_by_content_type(runtime):
    run = runtime({"app.py": """
        def handler(event, context):
            return {"type": type(event).__name__,
                    "value": event.decode() if isinstance(event, bytes) else event}
    """})
    out = ok_body(*run.invoke(b'{"a": 1}'))
    assert out == {"type": "dict", "value": {"a": 1}}
    # only exactly application/json is decoded; anything else arrives as bytes
    out = ok_body(*run.invoke(b"raw text", content_type="text/plain"))
    assert out == {"type": "bytes", "value": "raw text"}
    out = ok_body(*run.invoke(b'{"a": 1}', content_type="application/json; charset=utf-8"))
    assert out == {"type": "bytes", "value": '{"a": 1}'}
    kind, body, _ = run.invoke(b"{not json")
    err = json.loads(body)
    assert kind == "error" and err["errorType"] == "Runtime.UnmarshalError"
    assert err["errorMessage"] == (
        "Unable to unmarshal input: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)"
    )


def test_print_reaches_stdout_unbuffered(runtime):
    run = runtime({"app.py": """
        import sys
        print("printed at init")

        def handler(event, context):
            print("printed in handler", event)
            sys.stderr.write("to stderr\\n")
            return "done"
    """})
    assert ok_body(*run.invoke(7)) == "done"
    # SIGKILL: anything still sitting in a userspace buffer would be lost
    run.stop(signal.SIGKILL)
    assert "printed at init\n" in run.stdout
    assert "printed in handler 7\n" in run.stdout
    assert "to stderr\n" in run.stderr


def test_logging_text_format_and_level(runtime):
    files = {"app.py": """
        import logging
        logger = logging.getLogger()
        logger.info("init-info")
        logger.warning("init-warning")

        def handler(event, context):
            logger.debug("debug-msg")
            logger.info("hello %s", "world")
            logging.getLogger("child").error("child-error")
            return "ok"
    """}
    run = runtime(files, env={"AWS_LAMBDA_LOG_LEVEL": "INFO"})
    rid = run.event({})
    kind, _, body, headers = run.post()
    assert ok_body(kind, body, headers) == "ok"
    run.stop(signal.SIGKILL)
    out = run.stdout
    assert re.search(r"(?m)^\[INFO\]\t%s\t\tinit-info$" % TS, out), out
    assert re.search(r"(?m)^\[WARNING\]\t%s\t\tinit-warning$" % TS, out), out
    assert re.search(r"(?m)^\[INFO\]\t%s\t%s\thello world$" % (TS, rid), out), out
    assert re.search(r"(?m)^\[ERROR\]\t%s\t%s\tchild-error$" % (TS, rid), out), out
    assert "debug-msg" not in out

    # no AWS_LAMBDA_LOG_LEVEL: Python's default WARNING level, as on Lambda
    run2 = runtime(files)
    run2.invoke({})
    run2.stop(signal.SIGKILL)
    assert "init-info" not in run2.stdout and "hello world" not in run2.stdout
    assert "\tinit-warning\n" in run2.stdout and "\tchild-error\n" in run2.stdout


def test_log_level_trace_means_debug(runtime):
    run = runtime({"app.py": """
        import logging
        def handler(event, context):
            logging.getLogger().debug("dbg")
            return logging.getLogger().level
    """}, env={"AWS_LAMBDA_LOG_LEVEL": "TRACE"})
    assert ok_body(*run.invoke({})) == 10
    run.stop(signal.SIGKILL)
    assert re.search(r"(?m)^\[DEBUG\]\t%s\t[0-9a-f-]{36}\tdbg$" % TS, run.stdout)


def test_logging_json_format(runtime):
    run = runtime({"app.py": """
        import logging
        def handler(event, context):
            logging.getLogger("mylog").info("json hello", extra={"k": "v"})
            raise RuntimeError("bad")
    """}, env={"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "INFO"})
    rid = run.event({})
    kind, _, body, _ = run.post()
    assert kind == "error"
    run.stop(signal.SIGKILL)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    info = next(r for r in lines if r.get("message") == "json hello")
    assert info["level"] == "INFO" and info["logger"] == "mylog" and info["requestId"] == rid
    assert info["k"] == "v"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["timestamp"])
    err = next(r for r in lines if r.get("errorType") == "RuntimeError")
    assert err["level"] == "ERROR" and err["errorMessage"] == "bad" and err["requestId"] == rid
    assert list(err)[:2] == ["timestamp", "level"]
    assert err["stackTrace"][0].endswith('raise RuntimeError("bad")\n')


def test_telemetry_log_fd_framing(runtime):
    r, w = os.pipe()
    run = runtime({"app.py": """
        import logging, os
        def handler(event, context):
            logging.getLogger().warning("framed")
            print("plain print")
            context.log("via context")
            return "_LAMBDA_TELEMETRY_LOG_FD" in os.environ
    """}, env={"_LAMBDA_TELEMETRY_LOG_FD": str(w)}, pass_fds=(w,))
    os.close(w)
    assert ok_body(*run.invoke({})) is False
    run.stop(signal.SIGKILL)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    frames = []
    while data:
        ftype, length, ts = struct.unpack(">IIQ", data[:16])
        frames.append((ftype, data[16:16 + length].decode()))
        data = data[16 + length:]
        assert abs(ts / 1e6 - time.time()) < 120
    assert frames[0][0] == 0xA55A0003
    assert re.fullmatch(r"\[WARNING\]\t%s\t[0-9a-f-]{36}\tframed\n" % TS, frames[0][1])
    assert frames[1] == (0xA55A0003, "via context")
    assert "plain print" in run.stdout and "framed" not in run.stdout


def test_trace_id_set_per_invoke(runtime):
    run = runtime({"app.py": """
        import os
        def handler(event, context):
            return os.environ.get("_X_AMZN_TRACE_ID")
    """})
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    assert ok_body(*run.invoke({}, headers={"Lambda-Runtime-Trace-Id": trace})) == trace
    assert ok_body(*run.invoke({})) is None
    assert ok_body(*run.invoke({}, headers={"Lambda-Runtime-Trace-Id": "Root=2"})) == "Root=2"


def test_state_persists_across_invokes(runtime):
    marker = Path("/tmp/lamina-py-test-%s" % uuid.uuid4().hex)
    run = runtime({"app.py": """
        import uuid
        counter = 0
        instance = uuid.uuid4().hex

        def handler(event, context):
            global counter
            counter += 1
            with open(event["path"], "a") as f:
                f.write("x")
            with open(event["path"]) as f:
                return {"counter": counter, "tmp": f.read(), "instance": instance}
    """})
    try:
        first = ok_body(*run.invoke({"path": str(marker)}))
        second = ok_body(*run.invoke({"path": str(marker)}))
    finally:
        marker.unlink(missing_ok=True)
    assert (first["counter"], first["tmp"]) == (1, "x")
    assert (second["counter"], second["tmp"]) == (2, "xx")
    assert first["instance"] == second["instance"]


@pytest.mark.parametrize("handler,init_file", [
    ("pkg/mod.handler", True),
    ("pkg.mod.handler", True),
    ("pkg/mod.handler", False),  # namespace package
    ("pkg/sub/deep.handler", True),
])
def test_handler_in_subpackage(runtime, handler, init_file):
    files = {
        "pkg/mod.py": "from . import helper\ndef handler(e, c):\n    return helper.NAME + ':' + __name__\n",
        "pkg/helper.py": "NAME = 'helper'\n",
        "pkg/sub/deep.py": "def handler(e, c):\n    return 'deep:' + __name__\n",
    }
    if init_file:
        files["pkg/__init__.py"] = ""
        files["pkg/sub/__init__.py"] = ""
    run = runtime(files, handler=handler)
    expected = "deep:pkg.sub.deep" if "deep" in handler else "helper:pkg.mod"
    assert ok_body(*run.invoke({})) == expected


SYS_PATH_HANDLER = {"app.py": """
    import os, sys
    def handler(event, context):
        return {"path": sys.path, "PYTHONPATH": os.environ.get("PYTHONPATH"),
                "runtime_dir": os.environ.get("LAMBDA_RUNTIME_DIR"),
                "exec_env": os.environ.get("AWS_EXECUTION_ENV"),
                "version": "%d.%d" % sys.version_info[:2], "cwd": os.getcwd()}
"""}


def test_sys_path_like_lambda(runtime):
    files = dict(SYS_PATH_HANDLER)
    files["vendor/vendored.py"] = "X = 1\n"
    run = runtime(files)
    (run.root / "extra.pth").write_text(str(run.root / "vendor") + "\n")
    out = ok_body(*run.invoke({}))
    opt_site = "/opt/python/lib/python%s/site-packages" % out["version"]
    root = str(run.root)
    assert out["path"][:4] == [root, opt_site, "/opt/python", str(RUNTIME_DIR)]
    assert str(run.root / "vendor") in out["path"]  # .pth files in the task root
    # /opt dirs that don't exist are appended again by site.addsitedir (as on Lambda)
    assert out["path"][-2:] == [opt_site, "/opt/python"]
    assert out["PYTHONPATH"] == str(RUNTIME_DIR)
    assert out["runtime_dir"] == str(RUNTIME_DIR)
    assert out["exec_env"] == "AWS_Lambda_python%s" % out["version"]
    assert out["cwd"] == root


def test_user_pythonpath_replaces_layer_paths(runtime, tmp_path):
    libdir = tmp_path / "lib"
    libdir.mkdir()
    (libdir / "userlib.py").write_text("VALUE = 'from PYTHONPATH'\n")
    files = dict(SYS_PATH_HANDLER)
    files["app.py"] = SYS_PATH_HANDLER["app.py"].replace(
        'return {"path"', 'import userlib\n        return {"lib": userlib.VALUE, "path"')
    run = runtime(files, env={"PYTHONPATH": str(libdir), "LAMBDA_RUNTIME_DIR": "/var/runtime"})
    out = ok_body(*run.invoke({}))
    assert out["lib"] == "from PYTHONPATH"
    assert out["path"][0] == str(run.root)
    assert str(libdir) in out["path"]
    assert not any(p.startswith("/opt/") for p in out["path"])
    assert out["PYTHONPATH"] == str(libdir)
    assert out["runtime_dir"] == "/var/runtime"


@pytest.mark.parametrize("handler", ["app.handler", "email.handler", "http.handler"])
def test_task_root_modules_shadow_stdlib(runtime, handler):
    # /var/task is first on sys.path and, as with Lambda's native client, the runtime
    # has not imported email/http/socket/... itself: a function's email.py is found.
    run = runtime({
        "app.py": "import email\ndef handler(e, c):\n    return email.WHO\n",
        "email.py": "WHO = 'mine'\ndef handler(e, c):\n    return 'email.py'\n",
        "http.py": "def handler(e, c):\n    return 'http.py'\n",
    }, handler=handler)
    expected = {"app.handler": "mine", "email.handler": "email.py", "http.handler": "http.py"}
    assert ok_body(*run.invoke({})) == expected[handler]


def test_runtime_imports_little_before_the_handler(runtime):
    run = runtime({"app.py": """
        import sys
        PRE = sorted(m for m in ("email", "http", "socket", "ssl", "urllib", "datetime",
                                 "random", "calendar", "base64", "selectors") if m in sys.modules)
        def handler(e, c):
            return PRE
    """})
    assert ok_body(*run.invoke({})) == []


def test_rejected_response_ends_runtime(runtime):
    # the Runtime API answers 413: like awslambdaric, log aws-lambda-cpp's line and exit 1
    run = runtime({"app.py": "def handler(e, c):\n    return 'x' * (7 * 1024 * 1024)\n"})
    run.event({})
    assert run.wait_exit() == 1
    assert run.api.posts.empty()
    assert re.fullmatch(
        r"\[ERROR\] \[\d+\] LAMBDA_RUNTIME Failed to post handler success response\. "
        r"Http response code: 413\. \{.*RequestEntityTooLarge.*\}\n", run.stdout)
    assert run.stderr.rstrip().endswith("RuntimeError: Failed to post invocation response")


def test_handler_sys_exit_ends_runtime(runtime):
    run = runtime({"app.py": "import sys\ndef handler(e, c):\n    sys.exit(3)\n"})
    run.event({})
    assert run.wait_exit() == 3
    assert run.api.posts.empty()


def test_exec_wrapper(runtime, tmp_path):
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text('#!/bin/sh\nexport WRAPPED="$1|$2"\nexec "$@"\n')
    wrapper.chmod(0o755)
    run = runtime({"app.py": """
        import os
        def handler(e, c):
            return os.environ.get("WRAPPED")
    """}, env={"AWS_LAMBDA_EXEC_WRAPPER": str(wrapper)})
    assert ok_body(*run.invoke({})) == "%s|%s" % (PYTHON, RUNTIME_DIR / "bootstrap.py")

    missing = runtime(ECHO, env={"AWS_LAMBDA_EXEC_WRAPPER": "/nonexistent/wrapper"})
    assert missing.wait_exit() == 127
    assert missing.stdout == "/nonexistent/wrapper: does not exist\n"


# --------------------------------------------------------------------------------------
# Init errors
# --------------------------------------------------------------------------------------


def _init_error(run):
    kind, rid, body, headers = run.post()
    assert kind == "init_error" and rid == ""
    assert run.wait_exit() == 1
    assert run.api.next_calls == 0  # the handler is loaded before the first /next
    err = json.loads(body)
    assert list(err) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert err["requestId"] == ""
    assert headers["lambda-runtime-function-error-type"] == err["errorType"]
    out = run.stdout
    assert re.search(r"(?m)^\[WARNING\]\t%s\t\tLAMBDA_WARNING: Unhandled exception\. " % TS, out)
    head = "[ERROR] %s: %s\rTraceback (most recent call last):" % (err["errorType"], err["errorMessage"])
    assert head in out, out
    return err


@pytest.mark.parametrize("files,handler,etype,message", [
    ({}, "nosuch.handler", "Runtime.ImportModuleError",
     "Unable to import module 'nosuch': No module named 'nosuch'"),
    ({"app.py": "import requests_lamina_missing\ndef handler(e, c): pass\n"}, "app.handler",
     "Runtime.ImportModuleError",
     "Unable to import module 'app': No module named 'requests_lamina_missing'"),
    ({"pkg/__init__.py": ""}, "pkg/nomod.handler", "Runtime.ImportModuleError",
     "Unable to import module 'pkg/nomod': No module named 'pkg.nomod'"),
    (ECHO, "app.nothere", "Runtime.HandlerNotFound", "Handler 'nothere' missing on module 'app'"),
    (ECHO, "app", "Runtime.MalformedHandlerName",
     "Bad handler 'app': not enough values to unpack (expected 2, got 1)"),
    (ECHO, "sys.handler", "Runtime.BuiltInModuleConflict",
     "Cannot use built-in module sys as a handler module"),
])
def test_init_errors(runtime, files, handler, etype, message):
    run = runtime(files, handler=handler)
    err = _init_error(run)
    assert (err["errorType"], err["errorMessage"], err["stackTrace"]) == (etype, message, [])
    assert run.stdout.endswith(
        "[ERROR] %s: %s\rTraceback (most recent call last):\n" % (etype, message))


def test_init_syntax_error(runtime):
    run = runtime({"app.py": "import os\n\nx = = 1\ndef handler(e, c): pass\n"})
    err = _init_error(run)
    assert err["errorType"] == "Runtime.UserCodeSyntaxError"
    assert err["errorMessage"] == "Syntax error in module 'app': invalid syntax (app.py, line 3)"
    assert err["stackTrace"] == ['  File "%s" Line 3\n    x = = 1\n' % (run.root / "app.py")]
    assert run.stdout.endswith(
        "Traceback (most recent call last):\r\u00a0\u00a0File \"%s\" Line 3\r"
        "\u00a0\u00a0\u00a0\u00a0x = = 1\n" % (run.root / "app.py"))


def test_init_exception_at_import(runtime):
    run = runtime({"app.py": "import os\nraise RuntimeError('init boom')\n"})
    err = _init_error(run)
    assert (err["errorType"], err["errorMessage"]) == ("RuntimeError", "init boom")
    stack = err["stackTrace"]
    # as on Lambda: starts at importlib.import_module, ends in the function's module
    assert re.fullmatch(r'  File ".*/importlib/__init__\.py", line \d+, in import_module\n.*',
                        stack[0], re.S), stack
    assert stack[-1] == '  File "%s", line 2, in <module>\n    raise RuntimeError(\'init boom\')\n' % (
        run.root / "app.py")
    assert not any("lambda_runtime_lamina" in s for s in stack)


def test_init_error_logs_respect_json_format(runtime):
    run = runtime({}, handler="nosuch.handler", env={"AWS_LAMBDA_LOG_FORMAT": "JSON"})
    kind, _, body, _ = run.post()
    assert kind == "init_error"
    assert run.wait_exit() == 1
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert records[0]["level"] == "WARNING"
    assert records[0]["message"].startswith("LAMBDA_WARNING: Unhandled exception.")
    assert records[1]["level"] == "ERROR"
    assert records[1]["errorType"] == "Runtime.ImportModuleError"
    assert records[1]["requestId"] == ""
