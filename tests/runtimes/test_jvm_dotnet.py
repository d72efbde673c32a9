"""The java17 and dotnet runtime layers (rootfs/runtimes/{java17,dotnet}) end to end: their build.sh,
the conformance functions (examples/conformance/{java17,java17-stream,dotnet}) deployed with boto3 to a
real `lamina serve` (root, real envs: uid 993, read-only root, seccomp, Landlock, no network) and
invoked for every op of the conformance contract; the layer op runs in a `lamina run` env with the
layer ZIP under /opt; AWS's Java RIC as a provided.al2023 function's own bootstrap.

Until lamina serve resolves runtime layers by name, the built layer is put where this lamina binds a
runtime tree read-only at /var/runtime (<state>/runtimes/python3.11) with a shim `bootstrap` that
execs the layer's bootstrap (java17's lang/ then sits at /var/runtime/java17/lang, not /var/lang).

Run (root): LAMINA_BIN=$PWD/target/debug/lamina .venv/bin/python -m pytest -q tests/runtimes/test_jvm_dotnet.py
"""
import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "api"))
from conftest import LAMINA, Server  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/lambda-role"
BUILD = REPO / "target" / "runtime-layers"
RUNTIMES = {
    "java17": {"handler": "conformance.Handler::handleRequest", "error_type": "java.lang.RuntimeException"},
    "dotnet": {"handler": "Conformance::Conformance.Function::Handler", "error_type": "Exception"},
}

SHIM = """import os
rt = os.environ["LAMINA_TEST_RUNTIME"]
if rt == "java17":
    os.environ["LAMINA_JAVA_HOME"] = "/var/runtime/java17/lang"
boot = "/var/runtime/%s/runtime/bootstrap" % rt
os.execv(boot, [boot])
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lamina serve needs root")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
    return r


def zip_tree(root, extra=None, prefix=""):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in (extra or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o755 if name.endswith("bootstrap") else 0o644) << 16
            z.writestr(info, content)
        if root is not None:
            for p in sorted(Path(root).rglob("*")):
                if p.is_file():
                    info = zipfile.ZipInfo(prefix + str(p.relative_to(root)))
                    info.external_attr = (p.stat().st_mode & 0o777) << 16
                    z.writestr(info, p.read_bytes())
    return b.getvalue()


@pytest.fixture(scope="session")
def layers():
    """Builds both runtime layers (rebuilt each session; Maven's cache makes it offline)."""
    out = {}
    for name in RUNTIMES:
        d = BUILD / name
        t = time.time()
        run(["bash", str(REPO / "rootfs/runtimes" / name / "build.sh"), str(d)],
            env=dict(os.environ, LAMINA_RUNTIME_CACHE=str(BUILD / "cache")))
        manifest = json.loads((d / "manifest.json").read_text())
        assert manifest["name"] == name and manifest["argv"] == ["/var/runtime/bootstrap"]
        assert (d / "runtime" / "bootstrap").stat().st_mode & 0o111
        print(f"{name} layer built in {time.time() - t:.1f}s")
        out[name] = d
    return out


@pytest.fixture(scope="session")
def zips(tmp_path_factory):
    d = tmp_path_factory.mktemp("zips")
    out = {}
    for name in list(RUNTIMES) + ["java17-stream"]:
        ex = REPO / "examples/conformance" / name
        run(["bash", str(ex / "build.sh"), str(d / f"{name}.zip")])
        out[name] = (d / f"{name}.zip").read_bytes()
        if (ex / "build-layer.sh").exists():
            run(["bash", str(ex / "build-layer.sh"), str(d / f"{name}-layer.zip")])
            out[name + "-layer"] = d / f"{name}-layer.zip"
    return out


@pytest.fixture(scope="module")
def srv(layers):
    s = Server()
    slot = Path(s.state) / "runtimes" / "python3.11"
    for name, d in layers.items():
        shutil.copytree(d / "runtime", slot / name / "runtime", symlinks=True)
        if (d / "lang").exists():
            shutil.copytree(d / "lang", slot / name / "lang", symlinks=True)
    boot = slot / "bootstrap"
    boot.chmod(0o755)
    boot.write_text(SHIM)
    yield s
    s.stop()
    assert s.proc.returncode == 0


@pytest.fixture(scope="module")
def lam(srv):
    return srv.client()


def create(lam, name, runtime, code, handler=None, timeout=15, memory=512, env=None):
    variables = {"LAMINA_TEST_RUNTIME": runtime.split("-")[0], **(env or {})}
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                        Handler=handler or RUNTIMES[runtime.split("-")[0]]["handler"],
                        Code={"ZipFile": code}, MemorySize=memory, Timeout=timeout,
                        Environment={"Variables": variables})


def invoke(lam, name, event, tail=False):
    kw = {"LogType": "Tail"} if tail else {}
    t = time.time()
    r = lam.invoke(FunctionName=name, Payload=json.dumps(event), **kw)
    ms = (time.time() - t) * 1000
    body = r["Payload"].read()
    logs = base64.b64decode(r["LogResult"]).decode() if "LogResult" in r else ""
    return r, json.loads(body) if body else None, logs, ms


CONFORMANCE = ["java17", "java17-stream", "dotnet"]


@pytest.fixture(scope="module")
def deployed(lam, zips):
    names = {}
    for rt in CONFORMANCE:
        fn = f"conf-{rt}"
        handler = "conformance.StreamHandler::handleRequest" if rt == "java17-stream" else None
        create(lam, fn, rt, zips[rt], handler=handler, timeout=3)
        names[rt] = fn
    return names


@pytest.mark.parametrize("rt", CONFORMANCE)
def test_echo(lam, deployed, rt):
    for data in [{"a": [1, 2.5, "x", None, True], "b": {"c": "ü"}}, "text", [1, 2, 3], 7]:
        r, out, _, _ = invoke(lam, deployed[rt], {"op": "echo", "data": data})
        assert "FunctionError" not in r, out
        assert out == data


@pytest.mark.parametrize("rt", CONFORMANCE)
def test_context(lam, deployed, rt):
    r, out, logs, _ = invoke(lam, deployed[rt], {"op": "context"}, tail=True)
    assert "FunctionError" not in r, out
    fn = deployed[rt]
    assert out["request_id"] == r["ResponseMetadata"]["RequestId"]
    assert out["function_name"] == fn and out["function_version"] == "$LATEST"
    assert out["invoked_function_arn"] == f"arn:aws:lambda:us-east-1:123456789012:function:{fn}"
    assert out["memory_limit_in_mb"] == 512
    assert 0 < out["remaining_time_ms"] <= 3000
    assert out["log_group_name"] == f"/aws/lambda/{fn}"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", out["log_stream_name"])


@pytest.mark.parametrize("rt", CONFORMANCE)
def test_env(lam, deployed, rt):
    names = ["AWS_LAMBDA_FUNCTION_NAME", "_HANDLER", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_RUNTIME_API", "TZ",
             "LAMINA_NOT_SET"]
    r, out, _, _ = invoke(lam, deployed[rt], {"op": "env", "names": names})
    assert "FunctionError" not in r, out
    assert out["AWS_LAMBDA_FUNCTION_NAME"] == deployed[rt]
    assert out["LAMBDA_TASK_ROOT"] == "/var/task" and out["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    # AWS's Java RIC serializes a Map without its null values: a missing key is the null.
    assert out["TZ"] == ":UTC" and out.get("LAMINA_NOT_SET") is None
    assert out["_HANDLER"] and "::" in out["_HANDLER"]


@pytest.mark.parametrize("rt", CONFORMANCE)
def test_error(lam, deployed, rt):
    r, out, _, _ = invoke(lam, deployed[rt], {"op": "error", "message": "boom \"quoted\"\nline2"})
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == RUNTIMES[rt.split("-")[0]]["error_type"]
    assert out["errorMessage"] == "boom \"quoted\"\nline2"
    assert isinstance(out["stackTrace"], list) and out["stackTrace"]
    if rt.startswith("java17"):
        # The Java RIC's frames: "class.method(File.java:line)".
        assert re.fullmatch(r"conformance\.\w+\.\w+\(\w+\.java:\d+\)", out["stackTrace"][0])
    else:
        # .NET's: "at Namespace.Class.Method (params) ... in file:line", one per line, trimmed.
        assert out["stackTrace"][0].startswith("at Conformance.Function.Handler ")
        assert not any("System.Reflection" in l for l in out["stackTrace"])
    # The env survives a handled error: the next invoke works.
    r, out, _, _ = invoke(lam, deployed[rt], {"op": "echo", "data": 1})
    assert "FunctionError" not in r and out == 1


@pytest.mark.parametrize("rt", CONFORMANCE)
def test_print_goes_to_the_log_stream(lam, deployed, rt):
    marker = f"marker-{rt}-{time.time()}"
    r, out, logs, _ = invoke(lam, deployed[rt], {"op": "print", "text": marker}, tail=True)
    assert "FunctionError" not in r and out == "printed"
    assert logs.count(marker) == 2, logs


@pytest.mark.parametrize("rt", CONFORMANCE)
def test_tmp_persists_across_warm_invokes(lam, deployed, rt):
    data = f"tmp-{rt}-{time.time()}"
    r, out, _, _ = invoke(lam, deployed[rt], {"op": "tmp_write", "data": data})
    assert "FunctionError" not in r and out == "written", out
    r, out, _, _ = invoke(lam, deployed[rt], {"op": "tmp_read"})
    assert "FunctionError" not in r and out == data


@pytest.mark.parametrize("rt", CONFORMANCE)
def test_timeout_then_fresh_env(lam, deployed, rt):
    invoke(lam, deployed[rt], {"op": "tmp_write", "data": "before-timeout"})
    r, out, _, _ = invoke(lam, deployed[rt], {"op": "sleep", "ms": 5000})
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Sandbox.Timedout" and "Task timed out after 3.00 seconds" in out["errorMessage"]
    r, out, _, _ = invoke(lam, deployed[rt], {"op": "sleep", "ms": 10})
    assert "FunctionError" not in r and out == "slept"
    # The timed-out env was destroyed: the new one starts with an empty /tmp.
    r, out, _, _ = invoke(lam, deployed[rt], {"op": "tmp_read"})
    assert out is None


def test_java_init_errors(lam, zips):
    create(lam, "java-no-class", "java17", zips["java17"], handler="conformance.Nope::handleRequest")
    r, out, _, _ = invoke(lam, "java-no-class", {})
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "java.lang.ClassNotFoundException" and "conformance.Nope" in out["errorMessage"]
    create(lam, "java-no-method", "java17", zips["java17"], handler="conformance.Handler::nope")
    r, out, _, _ = invoke(lam, "java-no-method", {})
    assert r["FunctionError"] == "Unhandled" and "nope" in out["errorMessage"], out
    # A class file that is not one (Java's "syntax error": the code cannot be loaded).
    z = zipfile.ZipFile(io.BytesIO(zips["java17"]))
    files = {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
    files["conformance/Handler.class"] = b"not a class file"
    create(lam, "java-bad-class", "java17", zip_tree(None, files))
    r, out, _, _ = invoke(lam, "java-bad-class", {})
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "java.lang.ClassFormatError", out


def test_dotnet_init_errors(lam, zips):
    cases = [
        ("Conformance::Conformance.Function", "Invalid lambda function handler"),
        ("Nope::Conformance.Function::Handler", "Could not find the specified handler assembly with the file name 'Nope'"),
        ("Conformance::Conformance.Nope::Handler", "Unable to load type 'Conformance.Nope' from assembly 'Conformance'"),
        ("Conformance::Conformance.Function::Nope", "Found no methods matching method name 'Nope'"),
    ]
    for i, (handler, message) in enumerate(cases):
        create(lam, f"dotnet-init-{i}", "dotnet", zips["dotnet"], handler=handler)
        r, out, _, _ = invoke(lam, f"dotnet-init-{i}", {})
        assert r["FunctionError"] == "Unhandled"
        assert out["errorType"] == "LambdaValidationException" and message in out["errorMessage"], out
    # A bad assembly: bytes that are not a .NET image.
    create(lam, "dotnet-bad-asm", "dotnet", zip_tree(None, {"Conformance.dll": b"MZ not an assembly"}))
    r, out, _, _ = invoke(lam, "dotnet-bad-asm", {})
    assert r["FunctionError"] == "Unhandled" and out["errorType"] == "LambdaValidationException"
    assert out["errorMessage"] == "Unable to load assembly 'Conformance'." and out["cause"]["errorType"] == "BadImageFormatException"


@pytest.mark.parametrize("rt", ["java17", "dotnet"])
def test_layer_code_under_opt(layers, zips, rt, tmp_path):
    """The layer op in a `lamina run` env: layer ZIP unpacked and merged at /opt, runtime and code at
    /var/task, a one-shot Runtime API in the env."""
    code = tmp_path / "code"
    with zipfile.ZipFile(io.BytesIO(zips[rt])) as z:
        z.extractall(code)
    shutil.copytree(layers[rt] / "runtime", code / "runtime", symlinks=True)
    env = ["--env", f"_HANDLER={RUNTIMES[rt]['handler']}", "--env", 'RAPI_EVENT={"op":"layer"}',
           "--env", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=512"]
    if (layers[rt] / "lang").exists():
        shutil.copytree(layers[rt] / "lang", code / "lang", symlinks=True)
        env += ["--env", "LAMINA_JAVA_HOME=/var/task/lang"]
    shutil.copy(Path(__file__).parent / "rapi_once.py", code / "rapi_once.py")
    layer = tmp_path / "layer"
    with zipfile.ZipFile(zips[rt + "-layer"]) as z:
        z.extractall(layer)
    for p in [code, layer, *code.rglob("*"), *layer.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o555 if p.is_dir() or os.access(p, os.X_OK) else p.stat().st_mode | 0o444)
    r = subprocess.run([LAMINA, "run", "--code", str(code), "--layer", str(layer), "--memory", "512",
                        "--timeout", "60", *env, "--", "/usr/bin/python3", "/var/task/rapi_once.py",
                        "/var/task/runtime/bootstrap"], capture_output=True, text=True, timeout=120)
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert line, r.stdout + r.stderr
    kind, body = line[0].split(" ", 2)[1:]
    assert kind == "response", body
    assert json.loads(json.loads(body)) == f"layer:{rt}"


def test_java_ric_as_provided_bootstrap(lam):
    """examples/java-ric-provided: AWS's RIC jars and a jlinked JRE in a provided.al2023 ZIP; the RIC
    unpacks its own JNI library to /tmp and loads it there."""
    ex = REPO / "examples/java-ric-provided"
    with tempfile.TemporaryDirectory() as d:
        run(["bash", str(ex / "build.sh"), f"{d}/fn.zip"])
        code = Path(f"{d}/fn.zip").read_bytes()
    lam.create_function(FunctionName="java-ric-provided", Runtime="provided.al2023", Role=ROLE,
                        Handler="example.Hello::handleRequest", Code={"ZipFile": code}, MemorySize=512, Timeout=15)
    for i in range(2):
        r, out, _, _ = invoke(lam, "java-ric-provided", {"name": f"n{i}"})
        assert "FunctionError" not in r, out
        assert out == {"greeting": f"hello n{i}", "function": "java-ric-provided"}


@pytest.mark.parametrize("rt", ["java17", "dotnet"])
def test_cold_and_warm_times(lam, zips, rt):
    """Measures (and bounds loosely) a cold and a warm invoke; the figures are printed (-s)."""
    create(lam, f"timing-{rt}", rt, zips[rt])
    _, out, _, cold = invoke(lam, f"timing-{rt}", {"op": "echo", "data": 1})
    assert out == 1
    warm = []
    for _ in range(5):
        _, out, _, ms = invoke(lam, f"timing-{rt}", {"op": "echo", "data": 2})
        assert out == 2
        warm.append(ms)
    warm.sort()
    print(f"\n{rt}: cold invoke {cold:.0f} ms, warm invoke median {warm[2]:.1f} ms")
    assert cold < 20000 and warm[2] < 1000
