"""Lambda's API through boto3 and the AWS CLI against a real `lamina serve`."""
import base64
import io
import json
import subprocess
import zipfile
import os
import http.client

import botocore.exceptions
import pytest

ROLE = "arn:aws:iam::123456789012:role/lambda-role"


def mkzip(files):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o755 if name.endswith("bootstrap") else 0o644) << 16
            z.writestr(info, content)
    return b.getvalue()


PY_ECHO = mkzip({"app.py": """
import os
calls = 0
def handler(event, context):
    global calls
    calls += 1
    print("invoked", context.aws_request_id)
    with open('/tmp/count', 'a') as f:
        f.write('x')
    return {"event": event, "calls": calls, "tmp": len(open('/tmp/count').read()),
            "name": context.function_name, "version": context.function_version,
            "arn": context.invoked_function_arn, "memory": context.memory_limit_in_mb,
            "group": context.log_group_name, "stream": context.log_stream_name,
            "left": context.get_remaining_time_in_millis(),
            "env": {k: os.environ.get(k) for k in ["GREETING", "AWS_REGION", "_HANDLER", "AWS_LAMBDA_FUNCTION_NAME",
                    "LAMBDA_TASK_ROOT", "AWS_LAMBDA_RUNTIME_API", "TZ", "AWS_EXECUTION_ENV"]}}

def fail(event, context):
    raise ValueError("boom")

def slow(event, context):
    import time
    time.sleep(10)

def crash(event, context):
    os._exit(3)

def big(event, context):
    return "x" * (7 * 1024 * 1024)
"""})

# A custom runtime in shell, using the host's python3 for HTTP (visible in the env read-only).
PROVIDED = mkzip({"bootstrap": """#!/usr/bin/python3
import http.client, os
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
c = http.client.HTTPConnection(api)
while True:
    c.request("GET", "/2018-06-01/runtime/invocation/next")
    r = c.getresponse(); body = r.read()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    c.request("POST", f"/2018-06-01/runtime/invocation/{rid}/response", body=b'{"provided":' + body + b'}',
              headers={"Content-Type": "application/json"})
    c.getresponse().read()
"""})


def create(lam, name, zipbytes, **kw):
    args = dict(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler", Code={"ZipFile": zipbytes})
    args.update(kw)
    r = lam.create_function(**args)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    return r


def test_create_get_list_delete(lam):
    r = create(lam, "crud", PY_ECHO, MemorySize=256, Timeout=5, Description="d",
               Environment={"Variables": {"GREETING": "hi"}}, EphemeralStorage={"Size": 1024})
    assert r["State"] == "Pending" and r["StateReasonCode"] == "Creating"
    assert r["FunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:crud"
    assert len(r["CodeSha256"]) == 44 and r["CodeSize"] == len(PY_ECHO)
    assert r["Version"] == "$LATEST" and r["MemorySize"] == 256 and r["Timeout"] == 5
    g = lam.get_function(FunctionName="crud")
    assert g["Configuration"]["State"] == "Active"
    assert g["Configuration"]["LastUpdateStatus"] == "Successful"
    assert g["Configuration"]["Environment"]["Variables"] == {"GREETING": "hi"}
    assert g["Configuration"]["EphemeralStorage"] == {"Size": 1024}
    c = lam.get_function_configuration(FunctionName="arn:aws:lambda:us-east-1:123456789012:function:crud")
    assert c["FunctionName"] == "crud"
    with pytest.raises(lam.exceptions.ResourceConflictException):
        create(lam, "crud", PY_ECHO)
    lam.delete_function(FunctionName="crud")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_function(FunctionName="crud")
    assert "Function not found: arn:aws:lambda:us-east-1:123456789012:function:crud" in str(e.value)


def test_list_pagination(lam):
    names = [f"page-{i:02d}" for i in range(7)]
    for n in names:
        lam.create_function(FunctionName=n, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": PY_ECHO})
    first = lam.list_functions(MaxItems=3)
    assert len(first["Functions"]) == 3 and "NextMarker" in first
    pages = lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2})
    seen = [f["FunctionName"] for p in pages for f in p["Functions"]]
    assert [n for n in seen if n.startswith("page-")] == names
    assert all("State" not in f for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"])
    for n in names:
        lam.delete_function(FunctionName=n)


def test_validation_errors(server):
    # botocore checks minimums itself; turn that off so that the server's checks are what answers.
    import botocore.config
    lam = server.client(parameter_validation=False)
    cases = [
        (dict(FunctionName="bad name"), "ValidationException"),
        (dict(FunctionName="x" * 65), "ValidationException"),
        (dict(MemorySize=100), "ValidationException"),
        (dict(MemorySize=10241), "ValidationException"),
        (dict(Timeout=901), "ValidationException"),
        (dict(Role="not-a-role"), "ValidationException"),
        (dict(Runtime="cobol"), "ValidationException"),
        (dict(Handler="has space"), "ValidationException"),
        (dict(Description="d" * 257), "ValidationException"),
        (dict(Environment={"Variables": {"AWS_REGION": "x"}}), "InvalidParameterValueException"),
        (dict(Environment={"Variables": {"BIG": "x" * 5000}}), "InvalidParameterValueException"),
        (dict(Code={"ZipFile": b"not a zip"}), "InvalidParameterValueException"),
        (dict(EphemeralStorage={"Size": 20000}), "ValidationException"),
    ]
    for over, code in cases:
        args = dict(FunctionName="valid", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                    Code={"ZipFile": PY_ECHO})
        args.update(over)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.create_function(**args)
        assert e.value.response["Error"]["Code"] == code, (over, e.value.response)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="valid")


def test_zip_traversal_is_refused(lam):
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../etc/evil", "x")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.create_function(FunctionName="evil", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": evil.getvalue()})
    assert "Could not unzip uploaded file" in str(e.value)


def test_invoke_python(lam):
    create(lam, "py-echo", PY_ECHO, Environment={"Variables": {"GREETING": "hello"}}, MemorySize=192)
    r = lam.invoke(FunctionName="py-echo", Payload=json.dumps({"k": [1, 2]}), LogType="Tail")
    assert r["StatusCode"] == 200 and "FunctionError" not in r
    assert r["ExecutedVersion"] == "$LATEST"
    out = json.loads(r["Payload"].read())
    assert out["event"] == {"k": [1, 2]} and out["calls"] == 1
    assert out["name"] == "py-echo" and out["version"] == "$LATEST" and out["memory"] == "192"
    assert out["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:py-echo"
    assert out["group"] == "/aws/lambda/py-echo" and "[$LATEST]" in out["stream"]
    assert 0 < out["left"] <= 3000
    assert out["env"] == {"GREETING": "hello", "AWS_REGION": "us-east-1", "_HANDLER": "app.handler",
                          "AWS_LAMBDA_FUNCTION_NAME": "py-echo", "LAMBDA_TASK_ROOT": "/var/task",
                          "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001", "TZ": ":UTC",
                          "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11"}
    log = base64.b64decode(r["LogResult"]).decode()
    assert log.startswith("START RequestId: ") and "invoked" in log and "END RequestId:" in log
    assert "REPORT RequestId:" in log and "Init Duration:" in log and "Memory Size: 192 MB" in log
    # Warm: the same env, its globals and /tmp.
    r = lam.invoke(FunctionName="py-echo", Payload=b"")
    out = json.loads(r["Payload"].read())
    assert out["calls"] == 2 and out["tmp"] == 2 and out["event"] == {}


def test_invoke_errors(lam):
    create(lam, "py-fail", PY_ECHO, Handler="app.fail")
    r = lam.invoke(FunctionName="py-fail", Payload=b"{}")
    assert r["FunctionError"] == "Unhandled"
    err = json.loads(r["Payload"].read())
    assert err["errorType"] == "ValueError" and err["errorMessage"] == "boom"
    assert any("app.py" in line for line in err["stackTrace"])

    create(lam, "py-slow", PY_ECHO, Handler="app.slow", Timeout=1)
    r = lam.invoke(FunctionName="py-slow")
    err = json.loads(r["Payload"].read())
    assert r["FunctionError"] == "Unhandled" and err["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in err["errorMessage"]

    create(lam, "py-crash", PY_ECHO, Handler="app.crash")
    r = lam.invoke(FunctionName="py-crash")
    err = json.loads(r["Payload"].read())
    assert err["errorType"] == "Runtime.ExitError" and "exit status 3" in err["errorMessage"]

    create(lam, "py-big", PY_ECHO, Handler="app.big", MemorySize=512)
    r = lam.invoke(FunctionName="py-big")
    err = json.loads(r["Payload"].read())
    assert err["errorType"] == "Function.ResponseSizeTooLarge"

    create(lam, "py-init", mkzip({"app.py": "import no_such_module\n"}))
    r = lam.invoke(FunctionName="py-init")
    err = json.loads(r["Payload"].read())
    assert r["FunctionError"] == "Unhandled" and err["errorType"] == "Runtime.ImportModuleError"

    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.invoke(FunctionName="py-fail", Payload=b"{not json")
    assert e.value.response["Error"]["Code"] == "InvalidRequestContentException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.invoke(FunctionName="py-fail", Payload=b"[" + b"1," * (3 * 1024 * 1024) + b"1]")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="nope")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="py-fail", Qualifier="7")
    r = lam.invoke(FunctionName="py-fail", InvocationType="DryRun")
    assert r["StatusCode"] == 204


def test_invoke_provided_runtime(lam):
    lam.create_function(FunctionName="custom", Runtime="provided.al2023", Role=ROLE, Handler="x",
                        Code={"ZipFile": PROVIDED})
    for i in range(3):
        r = lam.invoke(FunctionName="arn:aws:lambda:us-east-1:123456789012:function:custom", Payload=json.dumps(i))
        assert json.loads(r["Payload"].read()) == {"provided": i}


def test_auth_is_required(server, lam):
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    conn.request("GET", "/2015-03-31/functions")
    r = conn.getresponse()
    assert r.status == 403 and r.getheader("x-amzn-ErrorType") == "MissingAuthenticationTokenException"
    bad = server.client()
    bad._request_signer._credentials.secret_key = "wrong"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.list_functions()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    import boto3
    unknown = boto3.client("lambda", endpoint_url=server.endpoint, region_name="us-east-1",
                           aws_access_key_id="AKIDUNKNOWN", aws_secret_access_key="x")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        unknown.list_functions()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_bad_requests_do_not_break_the_server(server, lam):
    import socket
    # Garbage, a half-open connection and an oversized head; the server keeps answering.
    s1 = socket.create_connection(("127.0.0.1", server.port)); s1.sendall(b"\x00\x01\x02garbage\r\n\r\n")
    s2 = socket.create_connection(("127.0.0.1", server.port)); s2.sendall(b"POST /2015-03-31/functions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    s3 = socket.create_connection(("127.0.0.1", server.port)); s3.sendall(b"GET / HTTP/1.1\r\nX: " + b"a" * 70000)
    assert "Functions" in lam.list_functions()
    for s in (s1, s2, s3):
        s.close()


def test_aws_cli(server, lam, tmp_path):
    z = tmp_path / "f.zip"
    z.write_bytes(PY_ECHO)
    aws = [os.path.join(os.path.dirname(__import__("sys").executable), "aws"),
           "--endpoint-url", server.endpoint, "--region", "us-east-1", "--output", "json"]
    env = server.env()
    out = subprocess.run(aws + ["lambda", "create-function", "--function-name", "cli-fn", "--runtime", "python3.11",
                                "--role", ROLE, "--handler", "app.handler", "--zip-file", f"fileb://{z}"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(aws + ["lambda", "list-functions"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "cli-fn" in out.stdout, out.stderr
    resp = tmp_path / "out.json"
    out = subprocess.run(aws + ["lambda", "invoke", "--function-name", "cli-fn", "--payload", '{"a": 1}', str(resp)],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(resp.read_text())["event"] == {"a": 1}
    out = subprocess.run(aws + ["lambda", "get-function", "--function-name", "nope"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "ResourceNotFoundException" in out.stderr
    out = subprocess.run(aws + ["lambda", "delete-function", "--function-name", "cli-fn"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_awslambdaric_as_custom_runtime(lam, tmp_path):
    """AWS's own Python runtime interface client (PyPI awslambdaric) as the function's runtime."""
    import sys
    pkg = tmp_path / "pkg"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(pkg),
                        "--python-version", "3.11", "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
                        "awslambdaric==4.2.2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    files = {"bootstrap": "#!/bin/sh\nexport PYTHONPATH=/var/task\nexec /usr/bin/python3 -m awslambdaric \"$_HANDLER\"\n",
             "ric_app.py": "def handler(event, context):\n    return {'ric': event, 'id': context.aws_request_id,"
                           " 'left': context.get_remaining_time_in_millis() > 0}\n"
                           "def fail(event, context):\n    raise KeyError('k')\n"}
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o755 if name == "bootstrap" else 0o644) << 16
            z.writestr(info, content)
        for p in pkg.rglob("*"):
            if p.is_file():
                info = zipfile.ZipInfo(str(p.relative_to(pkg)))
                info.external_attr = (p.stat().st_mode & 0o777) << 16
                z.writestr(info, p.read_bytes())
    lam.create_function(FunctionName="ric", Runtime="provided.al2023", Role=ROLE, Handler="ric_app.handler",
                        Code={"ZipFile": b.getvalue()}, MemorySize=256, Timeout=10)
    for i in range(2):
        r = lam.invoke(FunctionName="ric", Payload=json.dumps({"n": i}))
        out = json.loads(r["Payload"].read())
        assert "FunctionError" not in r, out
        assert out["ric"] == {"n": i} and out["left"] is True
    lam.create_function(FunctionName="ric-fail", Runtime="provided.al2023", Role=ROLE, Handler="ric_app.fail",
                        Code={"ZipFile": b.getvalue()}, MemorySize=256, Timeout=10)
    r = lam.invoke(FunctionName="ric-fail")
    err = json.loads(r["Payload"].read())
    assert r["FunctionError"] == "Unhandled" and err["errorType"] == "KeyError"


CONCURRENT = mkzip({"app.py": """
import time, os
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid_ns_inode": os.stat('/proc/self/ns/pid').st_ino, "boot": open('/proc/self/stat').read().split()[21]}

def hog(event, context):
    b = []
    while True:
        b.append(bytearray(1 << 20))
"""})


def test_concurrent_invokes_get_separate_envs(lam):
    import concurrent.futures
    import time
    create(lam, "conc", CONCURRENT, Timeout=10)
    t = time.time()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda i: json.loads(lam.invoke(FunctionName="conc", Payload=json.dumps({"sleep": 1.5}))["Payload"].read()), range(4)))
    elapsed = time.time() - t
    # Four envs ran side by side: not serialized behind one (that would take >= 6 s).
    assert elapsed < 5.5, elapsed
    assert len({o["pid_ns_inode"] for o in outs}) == 4, outs


def test_oom_is_reported(lam):
    create(lam, "oom", CONCURRENT, Handler="app.hog", MemorySize=128, Timeout=20)
    r = lam.invoke(FunctionName="oom")
    err = json.loads(r["Payload"].read())
    assert r["FunctionError"] == "Unhandled" and err["errorType"] == "Runtime.OutOfMemory", err
    # The failed env is not reused: the next invoke starts a fresh one and fails the same way.
    r = lam.invoke(FunctionName="oom")
    assert json.loads(r["Payload"].read())["errorType"] == "Runtime.OutOfMemory"


def test_names_with_invalid_utf8_and_odd_paths(server, lam):
    import http.client
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    keys = dict(l.split(" = ", 1) for l in open(server.credentials).read().splitlines() if " = " in l)
    creds = Credentials(keys["aws_access_key_id"], keys["aws_secret_access_key"])
    for path in ["/2015-03-31/functions/%ff%fe", "/2015-03-31/functions/a%00b", "/2015-03-31/functions/" + "a" * 300,
                 "/2015-03-31/functions/..%2F..%2Fetc", "/2015-03-31/nothing-here"]:
        req = AWSRequest(method="GET", url=server.endpoint + path)
        SigV4Auth(creds, "lambda", "us-east-1").add_auth(req)
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        conn.request("GET", path, headers=dict(req.headers))
        r = conn.getresponse()
        body = r.read()
        assert r.status in (400, 403, 404), (path, r.status, body)
        assert r.getheader("x-amzn-ErrorType"), (path, body)
        json.loads(body)
    assert "Functions" in lam.list_functions()


def test_lambda_runtime_crate(lam):
    # A custom runtime built with AWS's Rust `lambda_runtime` crate (examples/rust-lambda, a static
    # binary built by `make examples`).
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "target/examples/x86_64-unknown-linux-gnu/release/bootstrap")
    assert os.path.exists(path), f"{path} missing: run `make examples`"
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o100755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as f:
            z.writestr(info, f.read())
    lam.create_function(FunctionName="rust-crate", Runtime="provided.al2023", Role=ROLE, Handler="bootstrap",
                        Code={"ZipFile": b.getvalue()}, MemorySize=128, Timeout=10)
    ids = set()
    for i in range(2):
        r = lam.invoke(FunctionName="rust-crate", Payload=json.dumps({"n": i, "s": "é"}))
        out = json.loads(r["Payload"].read())
        assert "FunctionError" not in r, out
        assert out["rust"] == {"n": i, "s": "é"}, out
        assert out["function_name"] == "rust-crate" and out["deadline_ok"] is True, out
        assert out["request_id"] == r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"], (out, r["ResponseMetadata"])
        ids.add(out["request_id"])
    assert len(ids) == 2
    r = lam.invoke(FunctionName="rust-crate", Payload=json.dumps({"fail": True}))
    err = json.loads(r["Payload"].read())
    assert r["FunctionError"] == "Unhandled", err
    rid = r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert err["errorMessage"] == f"rust handler failed on request {rid}", err
    # lambda_runtime names a boxed error by std::any::type_name (not stable across rustc versions),
    # today "&alloc::boxed::Box<dyn core::error::Error + core::marker::Send + core::marker::Sync>".
    assert "Box<dyn core::error::Error" in err["errorType"], err
    # The failed invocation did not break the env: the same runtime answers again.
    r = lam.invoke(FunctionName="rust-crate", Payload=json.dumps({"n": 3}))
    assert "FunctionError" not in r and json.loads(r["Payload"].read())["rust"] == {"n": 3}


def _server_with(extra):
    from conftest import Server
    return Server(extra)


def test_sigterm_drains_in_flight_invocations_then_tears_down():
    """SIGTERM: the in-flight invoke is answered, then the server exits and leaves no env."""
    import threading
    import time
    srv = _server_with(["--drain-timeout", "20"])
    try:
        lam = srv.client()
        create(lam, "drain", CONCURRENT, Timeout=20)
        create(lam, "idle", PY_ECHO)
        lam.invoke(FunctionName="idle")  # a warm, frozen env to tear down
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("r", lam.invoke(FunctionName="drain", Payload=json.dumps({"sleep": 2}))))
        t.start()
        time.sleep(1.0)
        start = time.time()
        srv.proc.send_signal(__import__("signal").SIGTERM)
        t.join(30)
        assert json.loads(result["r"]["Payload"].read())["pid_ns_inode"] > 0
        assert srv.proc.wait(30) == 0
        assert time.time() - start < 10
    finally:
        srv.stop()
    assert not [l for l in open("/proc/self/mountinfo") if "lamina" in l and "/run/lamina/" in l]


def test_drain_is_bounded():
    """An invocation that outlives --drain-timeout is ended, and the server still exits."""
    import threading
    import time
    srv = _server_with(["--drain-timeout", "1"])
    try:
        lam = srv.client()
        create(lam, "longrun", CONCURRENT, Timeout=60)
        result = {}
        def go():
            try:
                result["r"] = lam.invoke(FunctionName="longrun", Payload=json.dumps({"sleep": 50}))
            except Exception as e:  # the connection may close before an answer
                result["e"] = e
        t = threading.Thread(target=go)
        t.start()
        time.sleep(1.5)
        start = time.time()
        srv.proc.send_signal(__import__("signal").SIGTERM)
        assert srv.proc.wait(30) == 0
        assert time.time() - start < 10, time.time() - start
        t.join(30)
        assert not t.is_alive()
    finally:
        srv.stop()
