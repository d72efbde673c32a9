"""Runtime conformance: every function in examples/conformance/<dir>/ through the Invoke API.

One real `lamina serve` (tests/api/conftest.py's Server, root, real envs); boto3 as the client.
Each conformance dir has build.sh OUT_ZIP, build-layer.sh OUT_ZIP and function.json
({"Runtime", "Handler"} and optionally "Expect" (error shape), "InitErrors", "Layer",
"MemorySize"); see examples/conformance/README.md for the contract every handler implements.

The runtime layers come from a shared state dir (LAMINA_RUNTIMES_STATE, default
target/runtime-state, filled by `make runtimes`; a missing layer is built there first), and are
imported into the test server with `lamina runtime import`, as an operator would.

Run: sudo make test-conformance  (or LAMINA_BIN=target/debug/lamina pytest tests/runtimes/test_conformance.py)
"""

import base64
import importlib.util
import json
import os
import re
import subprocess
import tempfile
import uuid
import zipfile
from pathlib import Path

import botocore.exceptions
import pytest

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO / "examples" / "conformance"
SHARED_STATE = Path(os.environ.get("LAMINA_RUNTIMES_STATE", REPO / "target" / "runtime-state"))
ROLE = "arn:aws:iam::123456789012:role/conformance"
ACCOUNT = "123456789012"

_spec = importlib.util.spec_from_file_location("lamina_api_conftest", REPO / "tests" / "api" / "conftest.py")
_api = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_api)
Server = _api.Server
LAMINA = _api.LAMINA

# Error shape per language when function.json has no "Expect": errorType of the language's ordinary
# exception, and the key of the stack trace (None: the runtime sends none).
DEFAULT_EXPECT = [
    ("python", {"errorType": "Exception", "trace": "stackTrace"}),
    ("nodejs", {"errorType": "Error", "trace": "trace"}),
    ("ruby", {"errorType": "Function<RuntimeError>", "trace": "stackTrace"}),
    ("java", {"errorType": "java.lang.RuntimeException", "trace": "stackTrace"}),
    ("dotnet", {"errorType": "Exception", "trace": "stackTrace"}),
]


def conformance_dirs():
    return sorted(d.name for d in CONFORMANCE.iterdir() if (d / "function.json").is_file())


def spec_of(d):
    s = json.loads((CONFORMANCE / d / "function.json").read_text())
    if "Expect" not in s:
        s["Expect"] = next((e for p, e in DEFAULT_EXPECT if s["Runtime"].startswith(p)), {})
    return s


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


class Deployments:
    """Builds ZIPs once per dir, imports runtime layers, creates functions on demand."""

    def __init__(self, server):
        self.server = server
        self.lam = server.client()
        self.work = Path(tempfile.mkdtemp(prefix="lamina-conformance-"))
        self.zips = {}
        self.imported = set()
        self.functions = {}

    def runtime(self, name):
        if name in self.imported:
            return
        layer = SHARED_STATE / "runtimes" / name
        if not (layer / "manifest.json").is_file():
            run([LAMINA, "runtime", "build", name, "--state-dir", str(SHARED_STATE)])
        run([LAMINA, "runtime", "import", str(layer), "--state-dir", self.server.state])
        self.imported.add(name)

    def zip(self, d, script="build.sh"):
        key = (d, script)
        if key not in self.zips:
            out = self.work / f"{d}-{script}.zip"
            run(["bash", str(CONFORMANCE / d / script), str(out)])
            self.zips[key] = out.read_bytes()
        return self.zips[key]

    def create(self, name, d, **over):
        spec = spec_of(d)
        self.runtime(spec["Runtime"])
        args = dict(FunctionName=name, Runtime=spec["Runtime"], Role=ROLE, Handler=spec["Handler"],
                    Code={"ZipFile": self.zip(d)}, MemorySize=spec.get("MemorySize", 256), Timeout=10,
                    Environment={"Variables": {"CONFORMANCE_VAR": "conformance-value"}})
        args.update(over)
        self.lam.create_function(**args)
        return name

    def function(self, d):
        if d not in self.functions:
            self.functions[d] = self.create(f"conf-{safe(d)}", d)
        return self.functions[d]


def safe(d):
    return re.sub(r"[^A-Za-z0-9-]", "-", d)


@pytest.fixture(scope="module")
def dep():
    s = Server()
    deps = Deployments(s)
    yield deps
    s.stop()
    subprocess.run(["rm", "-rf", str(deps.work)])
    assert s.proc.returncode == 0, f"lamina serve exited {s.proc.returncode}"


def invoke(lam, name, payload, tail=False):
    r = lam.invoke(FunctionName=name, Payload=json.dumps(payload), LogType="Tail" if tail else "None")
    body = json.loads(r["Payload"].read() or b"null")
    return r, body


def ok(lam, name, payload, tail=False):
    r, body = invoke(lam, name, payload, tail)
    assert "FunctionError" not in r, body
    return r, body


DIRS = conformance_dirs()


@pytest.mark.parametrize("d", DIRS)
def test_echo(dep, d):
    name = dep.function(d)
    for data in [{"a": [1, 2.5, None, True], "s": "é ✓"}, "plain string", 42, [], None]:
        _, body = ok(dep.lam, name, {"op": "echo", "data": data})
        assert body == data


@pytest.mark.parametrize("d", DIRS)
def test_context(dep, d):
    name = dep.function(d)
    r, c = ok(dep.lam, name, {"op": "context"})
    assert c["request_id"] == r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"], c
    assert c["function_name"] == name
    assert c["function_version"] == "$LATEST"
    assert c["invoked_function_arn"] == f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
    assert c["memory_limit_in_mb"] == spec_of(d).get("MemorySize", 256)
    assert isinstance(c["remaining_time_ms"], (int, float)) and 0 < c["remaining_time_ms"] <= 10000, c
    assert c["log_group_name"] == f"/aws/lambda/{name}"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", c["log_stream_name"]), c


@pytest.mark.parametrize("d", DIRS)
def test_env(dep, d):
    name = dep.function(d)
    names = ["CONFORMANCE_VAR", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_REGION",
             "LAMBDA_TASK_ROOT", "AWS_LAMBDA_RUNTIME_API", "_HANDLER", "TZ", "LAMINA_NOT_SET"]
    _, env = ok(dep.lam, name, {"op": "env", "names": names})
    expected = {
        "CONFORMANCE_VAR": "conformance-value",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec_of(d).get("MemorySize", 256)),
        "AWS_REGION": "us-east-1",
        "LAMBDA_TASK_ROOT": "/var/task",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "_HANDLER": spec_of(d)["Handler"],
        "TZ": ":UTC",
        "LAMINA_NOT_SET": None,
    }
    if spec_of(d)["Expect"].get("omitsNullMembers"):
        # The runtime's serializer drops null object members (AWS's Java RIC: Jackson NON_NULL), so
        # the unset variable is absent rather than null.
        del expected["LAMINA_NOT_SET"]
    assert env == expected


@pytest.mark.parametrize("d", DIRS)
def test_handler_error(dep, d):
    name = dep.function(d)
    msg = f"conformance failure {uuid.uuid4().hex[:8]}"
    r, err = invoke(dep.lam, name, {"op": "error", "message": msg})
    assert r["FunctionError"] == "Unhandled", err
    expect = spec_of(d)["Expect"]
    assert err["errorMessage"] == msg, err
    if "errorType" in expect:
        assert err["errorType"] == expect["errorType"], err
    if "errorTypeContains" in expect:
        assert expect["errorTypeContains"] in err["errorType"], err
    trace = expect.get("trace")
    if trace:
        assert isinstance(err.get(trace), list) and err[trace], err
        assert all(isinstance(line, str) for line in err[trace]), err
    # The env survives a handler error: the next invocation is answered.
    _, body = ok(dep.lam, name, {"op": "echo", "data": "after error"})
    assert body == "after error"


@pytest.mark.parametrize("d", DIRS)
def test_stdout_and_stderr_reach_the_log_stream(dep, d):
    name = dep.function(d)
    text = f"conformance-log-{uuid.uuid4().hex}"
    r, body = ok(dep.lam, name, {"op": "print", "text": text}, tail=True)
    assert body == "printed"
    log = base64.b64decode(r["LogResult"]).decode("utf-8", "replace")
    assert log.count(text) >= 2, log
    assert "START RequestId:" in log and "REPORT RequestId:" in log, log


@pytest.mark.parametrize("d", DIRS)
def test_tmp_persists_across_warm_invokes(dep, d):
    name = dep.function(d)
    data = f"kept-{uuid.uuid4().hex}"
    _, body = ok(dep.lam, name, {"op": "tmp_write", "data": data})
    assert body == "written"
    _, body = ok(dep.lam, name, {"op": "tmp_read"})
    assert body == data


@pytest.mark.parametrize("d", DIRS)
def test_timeout(dep, d):
    name = dep.create(f"conf-{safe(d)}-timeout", d, Timeout=1)
    r, err = invoke(dep.lam, name, {"op": "sleep", "ms": 3000})
    assert r["FunctionError"] == "Unhandled", err
    assert err["errorType"] == "Sandbox.Timedout", err
    assert "Task timed out after 1.00 seconds" in err["errorMessage"], err
    # A short sleep in a fresh env completes.
    _, body = ok(dep.lam, name, {"op": "sleep", "ms": 10})
    assert body == "slept"


INIT_CASES = ["bad_handler", "missing_module", "syntax_error"]


@pytest.mark.parametrize("case", INIT_CASES)
@pytest.mark.parametrize("d", DIRS)
def test_init_error(dep, d, case):
    spec = spec_of(d)
    c = spec.get("InitErrors", {}).get(case)
    if c is None:
        pytest.skip(f"{d}: no {case} init error for this runtime (function.json InitErrors)")
    over = {}
    if "Handler" in c:
        over["Handler"] = c["Handler"]
    if "files" in c:
        src = zipfile.ZipFile(__import__("io").BytesIO(dep.zip(d)))
        out = __import__("io").BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for info in src.infolist():
                if info.filename not in c["files"]:
                    z.writestr(info, src.read(info))
            # A file is replaced by text (mode 644), by {"content", "mode"}, or removed (null).
            for fname, content in c["files"].items():
                if content is None:
                    continue
                mode = 0o644
                if isinstance(content, dict):
                    mode, content = int(content["mode"], 8), content["content"]
                info = zipfile.ZipInfo(fname)
                info.external_attr = mode << 16
                z.writestr(info, content)
        over["Code"] = {"ZipFile": out.getvalue()}
    name = dep.create(f"conf-{safe(d)}-{case.replace('_', '-')}", d, **over)
    for _ in range(2):  # a failed Init fails every invocation, each in a fresh env
        r, err = invoke(dep.lam, name, {"op": "echo", "data": 1})
        assert r["FunctionError"] == "Unhandled", err
        # errorType null: the runtime reports none (AWS's Java RIC for a missing handler method).
        assert err.get("errorType") == c["errorType"], err
        assert err.get("errorMessage"), err
        assert c.get("errorMessageContains", "") in err["errorMessage"], err


@pytest.mark.parametrize("d", DIRS)
def test_layer_under_opt(dep, d):
    spec = spec_of(d)
    layer_zip = dep.zip(d, "build-layer.sh")
    v = dep.lam.publish_layer_version(LayerName=f"conf-{safe(d)}", Content={"ZipFile": layer_zip},
                                      CompatibleRuntimes=[spec["Runtime"]])
    name = dep.create(f"conf-{safe(d)}-layer", d, Layers=[v["LayerVersionArn"]])
    _, body = ok(dep.lam, name, {"op": "layer"})
    assert body == spec.get("Layer", f"layer:{spec['Runtime']}")


def test_unbuilt_runtime_fails_with_the_command_that_builds_it():
    """A runtime lamina knows but whose layer is not in the state dir: CreateFunction accepts it,
    Invoke answers InvalidRuntimeException (502) naming `lamina runtime build`."""
    s = Server()
    try:
        lam = s.client()
        b = __import__("io").BytesIO()
        with zipfile.ZipFile(b, "w") as z:
            z.writestr("lambda_function.rb", "def h(event:, context:) = 1\n")
        lam.create_function(FunctionName="unbuilt", Runtime="ruby3.1", Role=ROLE, Handler="lambda_function.h",
                            Code={"ZipFile": b.getvalue()})
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.invoke(FunctionName="unbuilt")
        err = e.value.response
        assert err["Error"]["Code"] == "InvalidRuntimeException", err
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 502
        assert "lamina runtime build ruby3.1" in err["Error"]["Message"], err
        # python3.11 and the provided runtimes are there out of the box.
        listing = run([LAMINA, "runtime", "list", "--state-dir", s.state]).stdout
        assert re.search(r"^python3\.11\s+built", listing, re.M), listing
        assert re.search(r"^provided\.al2023\s+built", listing, re.M), listing
        assert re.search(r"^ruby3\.1\s+not built", listing, re.M), listing
    finally:
        s.stop()
