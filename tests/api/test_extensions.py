"""Extensions API, Telemetry API and Logs API inside envs, with extensions written the way AWS's
samples write them (a Python script in extensions/ talking to AWS_LAMBDA_RUNTIME_API with
urllib), shipped as layers, against a real `lamina serve`."""
import glob
import io
import json
import os
import re
import signal
import time
import zipfile

import pytest

ROLE = "arn:aws:iam::123456789012:role/lambda-role"


def mkzip(files):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            executable = name.startswith("extensions/") or name.endswith("bootstrap")
            info.external_attr = (0o755 if executable else 0o644) << 16
            z.writestr(info, content)
    return b.getvalue()


# An external extension: registers for INVOKE and SHUTDOWN, prints every event, leaves a file in
# /tmp for the function, exits on SHUTDOWN.
EXTENSION = r'''#!/usr/bin/env python3
import json
import os
import sys
import urllib.request
from pathlib import Path

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
NAME = Path(__file__).name


def call(path, data=None, headers=None, method="GET"):
    req = urllib.request.Request(f"http://{API}/2020-01-01/extension/{path}", data=data,
                                 headers=headers or {}, method=method)
    with urllib.request.urlopen(req) as r:
        return r.headers, json.loads(r.read())


def main():
    headers, info = call("register", json.dumps({"events": ["INVOKE", "SHUTDOWN"]}).encode(),
                         {"Lambda-Extension-Name": NAME}, "POST")
    ext_id = headers["Lambda-Extension-Identifier"]
    print(f"[{NAME}] registered {json.dumps(info, sort_keys=True)} uid={os.getuid()}", flush=True)
    Path(f"/tmp/{NAME}.registered").write_text(json.dumps(info))
    while True:
        headers, event = call("event/next", headers={"Lambda-Extension-Identifier": ext_id})
        if event["eventType"] == "INVOKE":
            print(f"[{NAME}] INVOKE {event['requestId']} arn={event['invokedFunctionArn']} "
                  f"deadline={event['deadlineMs']} tracing={event['tracing']['type']} "
                  f"event-id={headers['Lambda-Extension-Event-Identifier']}", flush=True)
        elif event["eventType"] == "SHUTDOWN":
            print(f"[{NAME}] SHUTDOWN {event['shutdownReason']} deadline={event['deadlineMs']}", flush=True)
            sys.exit(0)


if __name__ == "__main__":
    main()
'''

# A telemetry extension: subscribes to platform and function events through the Telemetry API
# (and to platform events through the legacy Logs API), listens on sandbox.localdomain, prints
# what it receives.
TELEMETRY_EXTENSION = r'''#!/usr/bin/env python3
import json
import os
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
NAME = Path(__file__).name
PORT = 4243


class Listener(BaseHTTPRequestHandler):
    def do_POST(self):
        batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        tag = "telemetry" if self.path == "/telemetry" else "logsapi"
        for ev in batch:
            print(f"[{tag}] {ev['type']} {json.dumps(ev['record'], sort_keys=True)} time={ev['time']}", flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def call(path, data=None, headers=None, method="GET"):
    req = urllib.request.Request(f"http://{API}/{path}", data=data, headers=headers or {}, method=method)
    with urllib.request.urlopen(req) as r:
        return r.status, r.headers, r.read()


def main():
    server = HTTPServer(("sandbox.localdomain", PORT), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _, headers, _ = call("2020-01-01/extension/register", json.dumps({"events": ["INVOKE", "SHUTDOWN"]}).encode(),
                         {"Lambda-Extension-Name": NAME}, "POST")
    ext_id = headers["Lambda-Extension-Identifier"]
    sub = {"schemaVersion": "2022-12-13", "types": ["platform", "function"],
           "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
           "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{PORT}/telemetry"}}
    status, _, body = call("2022-07-01/telemetry", json.dumps(sub).encode(),
                           {"Lambda-Extension-Identifier": ext_id, "Content-Type": "application/json"}, "PUT")
    print(f"[{NAME}] telemetry subscription {status} {body.decode()}", flush=True)
    legacy = {"schemaVersion": "2021-03-18", "types": ["platform"],
              "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
              "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{PORT}/logs"}}
    status, _, _ = call("2020-08-15/logs", json.dumps(legacy).encode(), {"Lambda-Extension-Identifier": ext_id}, "PUT")
    print(f"[{NAME}] logs subscription {status}", flush=True)
    while True:
        _, _, body = call("2020-01-01/extension/event/next", headers={"Lambda-Extension-Identifier": ext_id})
        event = json.loads(body)
        if event["eventType"] == "SHUTDOWN":
            print(f"[{NAME}] SHUTDOWN {event['shutdownReason']}", flush=True)
            sys.exit(0)


if __name__ == "__main__":
    main()
'''

FUNCTION = mkzip({"app.py": r'''
import json, os, urllib.request, urllib.error

def handler(event, context):
    print("hello from handler", context.aws_request_id)
    regs = sorted(f for f in os.listdir("/tmp") if f.endswith(".registered"))
    return {"registered": {f: json.loads(open("/tmp/" + f).read()) for f in regs},
            "extensions": sorted(os.listdir("/opt/extensions"))}

def api(path, data=None, headers=None, method="GET"):
    req = urllib.request.Request("http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + path, data=data,
                                 headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

# During Init (the runtime imports this module before its first /next): registrations that
# must fail without changing anything.
INIT_ERRORS = {
    "bad_event": api("/2020-01-01/extension/register", b'{"events":["BOGUS"]}',
                     {"Lambda-Extension-Name": "internal"}, "POST"),
    "internal_shutdown": api("/2020-01-01/extension/register", b'{"events":["SHUTDOWN"]}',
                             {"Lambda-Extension-Name": "internal"}, "POST"),
    "no_name": api("/2020-01-01/extension/register", b'{"events":["INVOKE"]}', {}, "POST"),
    "bad_body": api("/2020-01-01/extension/register", b'nope', {"Lambda-Extension-Name": "x"}, "POST"),
}

def errors(event, context):
    ext = {"Lambda-Extension-Identifier": "0f4ab3e6-6d2b-4bd0-9a2c-1c1d2e3f4a5b"}
    sub = json.dumps({"schemaVersion": "2022-12-13", "types": ["platform"],
                      "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:1234/"}}).encode()
    return {
        "init": INIT_ERRORS,
        "late_register": api("/2020-01-01/extension/register", b'{"events":["INVOKE"]}',
                             {"Lambda-Extension-Name": "late"}, "POST"),
        "missing_id": api("/2020-01-01/extension/event/next"),
        "invalid_id": api("/2020-01-01/extension/event/next", headers={"Lambda-Extension-Identifier": "nope"}),
        "unknown_id": api("/2020-01-01/extension/event/next", headers=ext),
        "telemetry_missing_id": api("/2022-07-01/telemetry", sub, {}, "PUT"),
        "telemetry_unknown_id": api("/2022-07-01/telemetry", sub, ext, "PUT"),
        "exit_error_unknown": api("/2020-01-01/extension/exit/error", b"{}", ext, "POST"),
        "wrong_method": api("/2020-01-01/extension/register"),
    }
'''})


def create(lam, name, layers=(), handler="app.handler", **kw):
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler=handler,
                        Code={"ZipFile": FUNCTION}, Layers=list(layers), **kw)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})


def layer(lam, name, files):
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": mkzip(files)})["LayerVersionArn"]


def log_text(server, function):
    text = ""
    for path in sorted(glob.glob(os.path.join(server.state, "logs/aws/lambda", function, "**/*.log"), recursive=True)):
        text += open(path, errors="replace").read()
    return text


def wait_log(server, function, pattern, timeout=15):
    deadline = time.time() + timeout
    while True:
        text = log_text(server, function)
        if re.search(pattern, text) or time.time() > deadline:
            return text
        time.sleep(0.1)


def test_external_extension_gets_invoke_and_shutdown_events(server, lam):
    arn = layer(lam, "ext-sample", {"extensions/sample-ext": EXTENSION})
    create(lam, "with-ext", [arn])
    ids = []
    for _ in range(3):
        r = lam.invoke(FunctionName="with-ext", Payload=b"{}")
        assert "FunctionError" not in r, r["Payload"].read()
        out = json.loads(r["Payload"].read())
        ids.append(r["ResponseMetadata"]["RequestId"])
        # Init waited for the extension: it had registered before the handler ran.
        assert out["extensions"] == ["sample-ext"]
        assert out["registered"] == {"sample-ext.registered": {
            "functionName": "with-ext", "functionVersion": "$LATEST", "handler": "app.handler"}}
    text = log_text(server, "with-ext")
    assert text.count("[sample-ext] registered") == 1, text
    assert "uid=0" not in text, "the extension runs as the sandbox user"
    fn_arn = "arn:aws:lambda:us-east-1:123456789012:function:with-ext"
    for rid in ids:
        m = re.search(rf"\[sample-ext\] INVOKE {rid} arn={fn_arn} deadline=(\d+) tracing=X-Amzn-Trace-Id "
                      r"event-id=[0-9a-f-]{36}", text)
        assert m, (rid, text)
        assert abs(int(m.group(1)) / 1000 - time.time()) < 120
        # The extension's line precedes the invocation's END (the invocation waits for it).
        assert text.index(m.group(0)) < text.index(f"END RequestId: {rid}")
    assert "SHUTDOWN" not in text
    # An update retires the warm env: the extension gets SHUTDOWN (spindown) and exits.
    lam.update_function_configuration(FunctionName="with-ext", Description="changed")
    lam.get_waiter("function_updated_v2").wait(FunctionName="with-ext", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    text = wait_log(server, "with-ext", r"\[sample-ext\] SHUTDOWN spindown deadline=\d+")
    assert re.search(r"\[sample-ext\] SHUTDOWN spindown deadline=\d+", text), text
    # The next invocation starts a new env, whose extension registers again.
    r = lam.invoke(FunctionName="with-ext", Payload=b"{}")
    assert "FunctionError" not in r
    rid = r["ResponseMetadata"]["RequestId"]
    text = wait_log(server, "with-ext", rf"INVOKE {rid}")
    assert f"[sample-ext] INVOKE {rid}" in text
    lam.delete_function(FunctionName="with-ext")
    text = wait_log(server, "with-ext", r"(SHUTDOWN spindown[^\n]*\n(.|\n)*){2}")
    assert text.count("[sample-ext] SHUTDOWN spindown") == 2, text


def test_telemetry_extension_receives_platform_and_function_events(server, lam):
    arn = layer(lam, "telemetry-sample", {"extensions/telemetry-ext": TELEMETRY_EXTENSION})
    create(lam, "with-telemetry", [arn], MemorySize=256)
    ids = []
    for _ in range(2):
        r = lam.invoke(FunctionName="with-telemetry", Payload=b"{}")
        assert "FunctionError" not in r, r["Payload"].read()
        ids.append(r["ResponseMetadata"]["RequestId"])
    # Deleting the function destroys the env: telemetry is flushed, then SHUTDOWN.
    lam.delete_function(FunctionName="with-telemetry")
    text = wait_log(server, "with-telemetry", r"\[telemetry-ext\] SHUTDOWN")
    assert "[telemetry-ext] telemetry subscription 200 OK" in text, text
    assert "[telemetry-ext] logs subscription 200" in text, text
    assert "[telemetry-ext] SHUTDOWN spindown" in text, text
    events = []
    for line in text.splitlines():
        m = re.search(r"\[(telemetry|logsapi)\] (\S+) (\{.*\}|\".*\") time=(\S+)$", line)
        if m:
            events.append((m.group(1), m.group(2), json.loads(m.group(3)), m.group(4)))
    tel = [(t, r) for api, t, r, _ in events if api == "telemetry"]
    types = [t for t, _ in tel]
    # Init events, replayed to the subscriber that subscribed during Init.
    assert types.index("platform.initStart") < types.index("platform.initRuntimeDone") < types.index("platform.initReport")
    init_start = dict(tel)["platform.initStart"]
    assert init_start["functionName"] == "with-telemetry" and init_start["phase"] == "init"
    assert dict(tel)["platform.initReport"]["metrics"]["durationMs"] > 0
    for i, rid in enumerate(ids):
        mine = [(t, r) for t, r in tel if isinstance(r, dict) and r.get("requestId") == rid or
                t == "function" and rid in r]
        got = [t for t, _ in mine]
        assert got == ["platform.start", "function", "platform.runtimeDone", "platform.report"], (rid, got, text)
        rec = dict(mine)
        assert rec["platform.start"]["version"] == "$LATEST"
        assert rec["platform.start"]["tracing"]["type"] == "X-Amzn-Trace-Id"
        assert rec["function"] == f"hello from handler {rid}"
        assert rec["platform.runtimeDone"]["status"] == "success"
        assert rec["platform.runtimeDone"]["metrics"]["producedBytes"] > 0
        report = rec["platform.report"]
        assert report["status"] == "success"
        metrics = report["metrics"]
        assert metrics["memorySizeMB"] == 256
        assert metrics["billedDurationMs"] >= metrics["durationMs"] > 0
        assert 0 < metrics["maxMemoryUsedMB"] <= 256
        assert ("initDurationMs" in metrics) == (i == 0), metrics
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", t) for *_, t in events)
    # The legacy Logs API: platform events under their old names, no function lines (not asked).
    legacy = [(t, r) for api, t, r, _ in events if api == "logsapi"]
    assert [t for t, r in legacy if r.get("requestId") == ids[0]] == ["platform.start", "platform.end", "platform.report"]
    assert "function" not in [t for t, _ in legacy]
    # The REPORT line of the log stream agrees with platform.report.
    assert re.search(rf"REPORT RequestId: {ids[0]}\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\tMemory Size: 256 MB", text)


def test_extension_api_errors(server, lam):
    arn = layer(lam, "ext-errors", {"extensions/sample-ext": EXTENSION})
    create(lam, "ext-errors", [arn], handler="app.errors")
    r = lam.invoke(FunctionName="ext-errors", Payload=b"{}")
    assert "FunctionError" not in r
    out = json.loads(r["Payload"].read())

    def check(got, status, error_type):
        assert got[0] == status and got[1]["errorType"] == error_type, got
        assert got[1]["errorMessage"]

    check(out["init"]["bad_event"], 403, "Extension.InvalidEventType")
    check(out["init"]["internal_shutdown"], 403, "Extension.InvalidEventType")
    check(out["init"]["no_name"], 403, "Extension.InvalidExtensionName")
    check(out["init"]["bad_body"], 403, "InvalidRequestFormat")
    check(out["late_register"], 403, "Extension.RegistrationClosed")
    check(out["missing_id"], 403, "Extension.MissingExtensionIdentifier")
    check(out["invalid_id"], 403, "Extension.InvalidExtensionIdentifier")
    check(out["unknown_id"], 403, "Extension.UnknownExtensionIdentifier")
    check(out["telemetry_missing_id"], 403, "Extension.MissingExtensionIdentifier")
    check(out["telemetry_unknown_id"], 403, "Extension.UnknownExtensionIdentifier")
    check(out["exit_error_unknown"], 403, "Extension.UnknownExtensionIdentifier")
    check(out["wrong_method"], 405, "MethodNotAllowed")
    # The external extension still works after all that.
    rid = r["ResponseMetadata"]["RequestId"]
    assert f"[sample-ext] INVOKE {rid}" in wait_log(server, "ext-errors", f"INVOKE {rid}")
    lam.delete_function(FunctionName="ext-errors")


def test_too_many_extensions_fail_init(server, lam):
    files = {f"extensions/ext-{i:02d}": EXTENSION for i in range(11)}
    arn = layer(lam, "too-many", files)
    create(lam, "too-many-ext", [arn])
    r = lam.invoke(FunctionName="too-many-ext", Payload=b"{}")
    assert r["FunctionError"] == "Unhandled"
    err = json.loads(r["Payload"].read())
    assert err["errorType"] == "Extension.TooManyExtensions", err
    text = wait_log(server, "too-many-ext", r"INIT_REPORT")
    assert re.search(r"INIT_REPORT Init Duration: [\d.]+ ms\tPhase: init\tStatus: error\tError Type: Extension.TooManyExtensions", text), text
    # No extension ever ran.
    assert "[ext-" not in text
    lam.delete_function(FunctionName="too-many-ext")


def test_extension_that_never_calls_next_does_not_hang_invocations(server, lam):
    """An extension that takes INVOKE but never asks again holds the invocation up to the
    function's timeout only; the answer is the runtime's, and the env is replaced."""
    slow = EXTENSION.replace('print(f"[{NAME}] INVOKE', 'time.sleep(3600); print(f"[{NAME}] INVOKE').replace(
        "import json\n", "import json\nimport time\n", 1)
    arn = layer(lam, "ext-stuck", {"extensions/stuck-ext": slow})
    create(lam, "ext-stuck", [arn], Timeout=2)
    t = time.time()
    r = lam.invoke(FunctionName="ext-stuck", Payload=b"{}")
    assert "FunctionError" not in r, r["Payload"].read()
    assert time.time() - t < 15
    r2 = lam.invoke(FunctionName="ext-stuck", Payload=b"{}")
    assert "FunctionError" not in r2
    text = log_text(server, "ext-stuck")
    assert text.count("[stuck-ext] registered") == 2, text
    lam.delete_function(FunctionName="ext-stuck")


def test_server_stop_sends_shutdown():
    from conftest import Server
    srv = Server()
    try:
        lam = srv.client()
        arn = layer(lam, "ext-stop", {"extensions/sample-ext": EXTENSION})
        create(lam, "stop-ext", [arn])
        r = lam.invoke(FunctionName="stop-ext", Payload=b"{}")
        assert "FunctionError" not in r
        t = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        assert time.time() - t < 10
        text = log_text(srv, "stop-ext")
        assert re.search(r"\[sample-ext\] SHUTDOWN spindown deadline=\d+", text), text
    finally:
        srv.stop()


def test_functions_without_extensions_are_unchanged(server, lam):
    """No /opt/extensions: no extension API state leaks into the runtime's env, and the Runtime
    API still refuses extension calls that lack an identifier."""
    create(lam, "no-ext", handler="app.errors")
    r = lam.invoke(FunctionName="no-ext", Payload=b"{}")
    out = json.loads(r["Payload"].read())
    assert out["late_register"][1]["errorType"] == "Extension.RegistrationClosed"
    lam.delete_function(FunctionName="no-ext")
