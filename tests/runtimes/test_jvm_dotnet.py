"""java17 and dotnet beyond the conformance contract (tests/runtimes/test_conformance.py runs every
contract op, the init error cases and the layer case for examples/conformance/{java17,java17-stream,dotnet}).

Here, on the real runtimes (functions created with Runtime=java17 / dotnet, layers published through the
API, a real `lamina serve` as root: envs as uid 993, read-only root, seccomp, Landlock, no network):
- the built layers as `lamina runtime list` shows them and what they hold (jlink image, CDS archive, the
  RIC's JNI client; Mono's AOT images and configuration);
- the Java RIC's error frames; RequestHandler vs RequestStreamHandler serialization (the RIC's Jackson
  drops null members, a stream handler's bytes pass untouched); the JVM heap sized from the memory;
- .NET: the handler shapes the Mono runtime loop accepts (Task<T>, Task, void, Stream in and out, no
  input, a [LambdaSerializer]), its init errors beyond the contract (malformed handler, missing type, a
  bad image with its cause), its error frames;
- examples/hello-java and examples/hello-dotnet as deployed by their function.json;
- AWS's Java RIC as a provided.al2023 function's own bootstrap (examples/java-ric-provided);
- cold and warm invoke times (printed with -s).

Layers come from LAMINA_RUNTIMES_STATE (default target/runtime-state; `make runtimes`), imported into the
test server with `lamina runtime import`, as the conformance suite does.

Run (root): LAMINA_BIN=$PWD/target/debug/lamina .venv/bin/python -m pytest -q tests/runtimes/test_jvm_dotnet.py
"""
import base64
import importlib.util
import io
import json
import os
import re
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("lamina_conformance", Path(__file__).parent / "test_conformance.py")
conf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conf)

ROLE = conf.ROLE
LAMINA = conf.LAMINA

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lamina serve needs root")


@pytest.fixture(scope="module")
def dep():
    s = conf.Server()
    d = conf.Deployments(s)
    yield d
    s.stop()
    subprocess.run(["rm", "-rf", str(d.work)])
    assert s.proc.returncode == 0, f"lamina serve exited {s.proc.returncode}"


def invoke(lam, name, event, tail=False, raw=None):
    kw = {"LogType": "Tail"} if tail else {}
    t = time.time()
    r = lam.invoke(FunctionName=name, Payload=raw if raw is not None else json.dumps(event), **kw)
    ms = (time.time() - t) * 1000
    body = r["Payload"].read()
    logs = base64.b64decode(r["LogResult"]).decode() if "LogResult" in r else ""
    return r, body, logs, ms


def zip_of(files):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o755 if name.endswith("bootstrap") else 0o644) << 16
            z.writestr(info, content)
    return b.getvalue()


def create(dep, name, runtime, code, handler, memory=256, timeout=15):
    dep.runtime(runtime)
    dep.lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                            Code={"ZipFile": code}, MemorySize=memory, Timeout=timeout)
    return name


# ---------------------------------------------------------------------------------------------- layers


def test_layers_are_built_runtimes(dep):
    dep.runtime("java17")
    dep.runtime("dotnet")
    listing = conf.run([LAMINA, "runtime", "list", "--state-dir", dep.server.state]).stdout
    assert re.search(r"^java17\s+built\s+Java 17: AWS's aws-lambda-java-runtime-interface-client-[\d.]+ "
                     r"\(Maven Central\) on a jlink image of the host's OpenJDK 17[\d.]*", listing, re.M), listing
    assert re.search(r"^dotnet\s+built\s+C# on Mono 6\.8[\d.]* \(Debian's mono-runtime", listing, re.M), listing
    layers = Path(dep.server.state) / "runtimes"
    java = layers / "java17"
    m = json.loads((java / "manifest.json").read_text())
    assert m["argv"] == ["/var/runtime/bootstrap"] and m["env"] == {"JAVA_HOME": "/var/lang"}
    assert (java / "lang/bin/java").stat().st_mode & 0o111
    assert (java / "lang/lib/server/classes.jsa").is_file()
    assert list((java / "runtime/lib/jni").glob("libaws-lambda-jni.linux-*.so"))
    assert list((java / "runtime/lib").glob("aws-lambda-java-runtime-interface-client-*.jar"))
    # Self-contained: nothing in the image points into the host's /etc (envs get a generated /etc).
    links = [p for p in (java / "lang").rglob("*") if p.is_symlink()]
    assert not links, links
    dn = layers / "dotnet"
    m = json.loads((dn / "manifest.json").read_text())
    assert m["argv"] == ["/var/runtime/bootstrap"] and not (dn / "lang").exists()
    for f in ["LaminaDotnetRuntime.exe", "LaminaDotnetRuntime.exe.so", "Amazon.Lambda.Core.dll",
              "Amazon.Lambda.Core.dll.so", "etc/mono/config", "etc/mono/4.5/machine.config"]:
        assert (dn / "runtime" / f).is_file(), f
    # Sealed: read-only for everyone but root.
    assert (dn / "runtime/bootstrap").stat().st_mode & 0o777 == 0o555


# ------------------------------------------------------------------------------------------------ java


def test_java_error_frames_and_message(dep):
    name = dep.create("java-err", "java17")
    msg = 'boom "quoted"\nline2 ü'
    r, body, _, _ = invoke(dep.lam, name, {"op": "error", "message": msg})
    out = json.loads(body)
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "java.lang.RuntimeException" and out["errorMessage"] == msg
    # The Java RIC's frames: "class.method(File.java:line)", the handler's own frame first.
    assert re.fullmatch(r"conformance\.Handler\.handleRequest\(Handler\.java:\d+\)", out["stackTrace"][0]), out


def test_java_request_handler_drops_nulls_stream_handler_keeps_bytes(dep):
    """RequestHandler output goes through the RIC's Jackson (null members dropped, numbers re-rendered);
    a RequestStreamHandler's output bytes reach the caller as written."""
    pojo = dep.create("java-pojo", "java17")
    stream = dep.create("java-stream", "java17-stream")
    data = {"k": None, "n": [1, None, {"z": None}], "big": 123456789012345678901234567890}
    _, body, _, _ = invoke(dep.lam, pojo, {"op": "echo", "data": data})
    assert json.loads(body) == {"n": [1, None, {}], "big": 123456789012345678901234567890}
    _, body, _, _ = invoke(dep.lam, stream, {"op": "echo", "data": data})
    assert json.loads(body) == data
    # Gson's compact rendering, byte for byte.
    assert body == b'{"k":null,"n":[1,null,{"z":null}],"big":123456789012345678901234567890}'
    # A stream handler's error is the same RuntimeException with the stream handler's frame.
    r, body, _, _ = invoke(dep.lam, stream, {"op": "error", "message": "s"})
    out = json.loads(body)
    assert r["FunctionError"] == "Unhandled" and out["errorType"] == "java.lang.RuntimeException"
    assert any(f.startswith("conformance.StreamHandler.handle(") for f in out["stackTrace"]), out


JAVA_PROBE = """package probe;
import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.lang.management.ManagementFactory;
import java.util.LinkedHashMap;
import java.util.Map;
public class Probe implements RequestHandler<Map<String, Object>, Map<String, Object>> {
    public Map<String, Object> handleRequest(Map<String, Object> e, Context c) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("maxHeap", Runtime.getRuntime().maxMemory());
        out.put("args", ManagementFactory.getRuntimeMXBean().getInputArguments());
        out.put("javaHome", System.getProperty("java.home"));
        out.put("version", System.getProperty("java.version"));
        out.put("user", System.getProperty("user.name"));
        return out;
    }
}
"""


def test_java_jvm_flags_follow_the_memory_size(dep, tmp_path):
    """AWS's java17 flags, with the heap at 85% of the function's memory, on /var/lang's JVM."""
    core = next((REPO / "examples/conformance/java17/target/deps").glob("aws-lambda-java-core-*.jar"), None)
    if core is None:
        dep.zip("java17")  # its build.sh fetches aws-lambda-java-core into target/deps
        core = next((REPO / "examples/conformance/java17/target/deps").glob("aws-lambda-java-core-*.jar"))
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe/Probe.java").write_text(JAVA_PROBE)
    javac = os.environ.get("JAVA17_HOME", "/usr/lib/jvm/java-17-openjdk-amd64") + "/bin/javac"
    conf.run([javac, "--release", "17", "-cp", str(core), "-d", str(tmp_path / "out"), str(tmp_path / "probe/Probe.java")])
    code = zip_of({"probe/Probe.class": (tmp_path / "out/probe/Probe.class").read_bytes()})
    for mem in (256, 1024):
        name = create(dep, f"java-heap-{mem}", "java17", code, "probe.Probe::handleRequest", memory=mem)
        r, body, _, _ = invoke(dep.lam, name, {})
        out = json.loads(body)
        assert "FunctionError" not in r, out
        assert f"-XX:MaxHeapSize={mem * 1024 * 85 // 100}k" in out["args"], out
        for flag in ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto"]:
            assert flag in out["args"], out
        assert out["javaHome"] == "/var/lang" and out["version"].startswith("17"), out
        # Runtime.maxMemory() is the heap minus one survivor space: within the limit, near it.
        assert mem * 1024 * 1024 * 0.70 < out["maxHeap"] <= mem * 1024 * 1024 * 0.85, out


# ---------------------------------------------------------------------------------------------- dotnet

DOTNET_SHAPES = """using System;
using System.IO;
using System.Text;
using System.Threading.Tasks;
using System.Collections.Generic;
using Amazon.Lambda.Core;

namespace Shapes
{
    public class Upper : ILambdaSerializer
    {
        public T Deserialize<T>(Stream s) { return (T)(object)new StreamReader(s).ReadToEnd(); }
        public void Serialize<T>(T v, Stream s) { var b = Encoding.UTF8.GetBytes(v.ToString().ToUpperInvariant()); s.Write(b, 0, b.Length); }
    }

    public class F
    {
        static int calls;
        public async Task<Dictionary<string, object>> Async(Dictionary<string, object> input, ILambdaContext ctx)
        {
            await Task.Delay(20);
            return new Dictionary<string, object> { { "got", input["x"] }, { "fn", ctx.FunctionName } };
        }
        public async Task NoResult(Dictionary<string, object> input) { await Task.Delay(1); }
        public void Void() { calls++; }
        public Stream Raw(Stream input)
        {
            var text = new StreamReader(input).ReadToEnd();
            return new MemoryStream(Encoding.UTF8.GetBytes("raw:" + text));
        }
        public int Count() { return ++calls; }
        [LambdaSerializer(typeof(Upper))]
        public string Shout(string input) { return input; }
        public object Nested(Dictionary<string, object> input)
        {
            try { throw new InvalidOperationException("inner"); }
            catch (Exception e) { throw new ApplicationException("outer", e); }
        }
    }
}
"""


@pytest.fixture(scope="module")
def dotnet_shapes(dep, tmp_path_factory):
    d = tmp_path_factory.mktemp("dotnet-shapes")
    core = Path(dep.server.state) / "runtimes/dotnet/runtime/Amazon.Lambda.Core.dll"
    dep.runtime("dotnet")
    (d / "Shapes.cs").write_text(DOTNET_SHAPES)
    conf.run(["mcs", "-nologo", "-debug", "-target:library", f"-out:{d}/Shapes.dll", f"-r:{core}", str(d / "Shapes.cs")])
    return zip_of({"Shapes.dll": (d / "Shapes.dll").read_bytes(), "Shapes.dll.mdb": (d / "Shapes.dll.mdb").read_bytes()})


@pytest.mark.parametrize("method,event,expected", [
    ("Async", {"x": [1, "a"]}, {"got": [1, "a"], "fn": "dn-Async"}),
    ("NoResult", {}, None),
    ("Void", {}, None),
    ("Count", {}, 1),
])
def test_dotnet_handler_shapes(dep, dotnet_shapes, method, event, expected):
    name = create(dep, f"dn-{method}", "dotnet", dotnet_shapes, f"Shapes::Shapes.F::{method}")
    r, body, _, _ = invoke(dep.lam, name, event)
    assert "FunctionError" not in r, body
    assert (json.loads(body) if body else None) == expected


def test_dotnet_stream_and_custom_serializer(dep, dotnet_shapes):
    raw = create(dep, "dn-raw", "dotnet", dotnet_shapes, "Shapes::Shapes.F::Raw")
    _, body, _, _ = invoke(dep.lam, raw, None, raw=b'{"not": "parsed" }')
    assert body == b'raw:{"not": "parsed" }'
    shout = create(dep, "dn-shout", "dotnet", dotnet_shapes, "Shapes::Shapes.F::Shout")
    _, body, _, _ = invoke(dep.lam, shout, None, raw=b'"quiet"')
    assert body == b'"QUIET"'


def test_dotnet_error_frames_and_cause(dep, dotnet_shapes):
    name = dep.create("dotnet-err", "dotnet")
    r, body, _, _ = invoke(dep.lam, name, {"op": "error", "message": 'boom "q"\nline2'})
    out = json.loads(body)
    assert r["FunctionError"] == "Unhandled" and out["errorType"] == "Exception"
    assert out["errorMessage"] == 'boom "q"\nline2'
    # .NET's frames, one per entry, trimmed, without the reflection frames of the runtime loop.
    assert out["stackTrace"][0].startswith("at Conformance.Function.Handler "), out
    assert not any("System.Reflection" in f or "LaminaDotnetRuntime" in f for f in out["stackTrace"]), out
    nested = create(dep, "dn-nested", "dotnet", dotnet_shapes, "Shapes::Shapes.F::Nested")
    r, body, _, _ = invoke(dep.lam, nested, {})
    out = json.loads(body)
    assert out["errorType"] == "ApplicationException" and out["errorMessage"] == "outer", out
    assert out["cause"]["errorType"] == "InvalidOperationException" and out["cause"]["errorMessage"] == "inner", out


@pytest.mark.parametrize("case,handler,message", [
    ("malformed", "Conformance::Conformance.Function", "Invalid lambda function handler"),
    ("no-type", "Conformance::Conformance.Nope::Handler",
     "Unable to load type 'Conformance.Nope' from assembly 'Conformance'"),
])
def test_dotnet_init_errors_beyond_the_contract(dep, case, handler, message):
    name = dep.create(f"dn-init-{case}", "dotnet", Handler=handler)
    r, body, _, _ = invoke(dep.lam, name, {})
    out = json.loads(body)
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "LambdaValidationException" and message in out["errorMessage"], out


def test_dotnet_bad_image_reports_its_cause(dep):
    name = create(dep, "dn-bad-image", "dotnet", zip_of({"Conformance.dll": b"MZ not an assembly"}),
                  "Conformance::Conformance.Function::Handler")
    r, body, logs, _ = invoke(dep.lam, name, {}, tail=True)
    out = json.loads(body)
    assert r["FunctionError"] == "Unhandled" and out["errorType"] == "LambdaValidationException"
    assert out["errorMessage"] == "Unable to load assembly 'Conformance'."
    assert out["cause"]["errorType"] == "BadImageFormatException", out


# -------------------------------------------------------------------------------------------- examples


@pytest.mark.parametrize("ex,greeting", [
    ("hello-java", r"Hello, lamina! \(java 17\.[\d.]+\)"),
    ("hello-dotnet", r"Hello, lamina! \(C# on Mono [\d.]+\)"),
], ids=["hello-java", "hello-dotnet"])
def test_hello_examples(dep, ex, greeting, tmp_path):
    spec = json.loads((REPO / "examples" / ex / "function.json").read_text())
    conf.run(["bash", str(REPO / "examples" / ex / "build.sh"), str(tmp_path / "fn.zip")])
    name = create(dep, ex, spec["Runtime"], (tmp_path / "fn.zip").read_bytes(), spec["Handler"])
    r, body, logs, _ = invoke(dep.lam, name, {"name": "lamina"}, tail=True)
    assert "FunctionError" not in r, body
    assert re.fullmatch(greeting, json.loads(body)), body
    assert f"hello from {name}" in logs, logs


def test_java_ric_as_provided_bootstrap(dep):
    """examples/java-ric-provided: AWS's RIC jars and a jlinked JRE in a provided.al2023 ZIP; the RIC
    unpacks its own JNI library to /tmp and loads it there."""
    ex = REPO / "examples/java-ric-provided"
    with tempfile.TemporaryDirectory() as d:
        conf.run(["bash", str(ex / "build.sh"), f"{d}/fn.zip"])
        code = Path(f"{d}/fn.zip").read_bytes()
    name = create(dep, "java-ric-provided", "provided.al2023", code, "example.Hello::handleRequest", memory=512)
    for i in range(2):
        r, body, _, _ = invoke(dep.lam, name, {"name": f"n{i}"})
        assert "FunctionError" not in r, body
        assert json.loads(body) == {"greeting": f"hello n{i}", "function": "java-ric-provided"}


# -------------------------------------------------------------------------------------------- timings


@pytest.mark.parametrize("d", ["java17", "dotnet"])
def test_cold_and_warm_times(dep, d):
    """Measures (and bounds loosely) a cold and a warm invoke; the figures are printed (-s)."""
    name = dep.create(f"timing-{d}", d)
    _, body, _, cold = invoke(dep.lam, name, {"op": "echo", "data": 1})
    assert json.loads(body) == 1
    warm = []
    for _ in range(5):
        _, body, _, ms = invoke(dep.lam, name, {"op": "echo", "data": 2})
        assert json.loads(body) == 2
        warm.append(ms)
    warm.sort()
    print(f"\n{d}: cold invoke {cold:.0f} ms, warm invoke median {warm[2]:.1f} ms")
    assert cold < 20000 and warm[2] < 1000
