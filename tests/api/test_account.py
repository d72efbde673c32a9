"""Tags, account settings, concurrency (reserved, provisioned, throttling) and secrets at rest."""
import json
import os
import subprocess
import sys
import threading
import time

import botocore.exceptions
import pytest

from conftest import LAMINA, Server
from test_lambda_api import ROLE, create, mkzip

SLEEPY = mkzip({"app.py": """
import os, time
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"init": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"), "version": context.function_version,
            "secret": os.environ.get("SECRET"), "pid": os.getpid()}
"""})

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"


def err(excinfo):
    e = excinfo.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


def aws(server, *args):
    cmd = [os.path.join(os.path.dirname(sys.executable), "aws"), "--endpoint-url", server.endpoint,
           "--output", "json", *args]
    return subprocess.run(cmd, env=server.env(), capture_output=True, text=True)


def test_tags(server, lam):
    create(lam, "tagged", SLEEPY, Tags={"team": "edge"})
    assert lam.list_tags(Resource=ARN + "tagged")["Tags"] == {"team": "edge"}
    lam.tag_resource(Resource=ARN + "tagged", Tags={"env": "prod", "team": "core"})
    assert lam.list_tags(Resource=ARN + "tagged")["Tags"] == {"team": "core", "env": "prod"}
    assert lam.get_function(FunctionName="tagged")["Tags"] == {"team": "core", "env": "prod"}
    lam.untag_resource(Resource=ARN + "tagged", TagKeys=["team", "absent"])
    assert lam.list_tags(Resource=ARN + "tagged")["Tags"] == {"env": "prod"}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.tag_resource(Resource=ARN + "tagged:1", Tags={"a": "b"})
    assert "Tags on function aliases and versions are not supported" in err(e)[1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.tag_resource(Resource=ARN + "tagged", Tags={f"k{i}": "v" for i in range(50)})
    assert err(e)[1] == "Number of tags exceeds resource tag limit."
    assert lam.list_tags(Resource=ARN + "tagged")["Tags"] == {"env": "prod"}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.tag_resource(Resource=ARN + "tagged", Tags={"aws:x": "y"})
    assert err(e)[0] == "InvalidParameterValueException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.list_tags(Resource=ARN + "missing")
    assert err(e)[0] == "ResourceNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.tag_resource(Resource="tagged", Tags={"a": "b"})
    assert err(e)[0] == "ValidationException"
    r = aws(server, "lambda", "tag-resource", "--resource", ARN + "tagged", "--tags", "cli=yes")
    assert r.returncode == 0, r.stderr
    r = aws(server, "lambda", "list-tags", "--resource", ARN + "tagged")
    assert json.loads(r.stdout)["Tags"] == {"env": "prod", "cli": "yes"}
    r = aws(server, "lambda", "untag-resource", "--resource", ARN + "tagged", "--tag-keys", "cli", "env")
    assert r.returncode == 0, r.stderr
    assert lam.list_tags(Resource=ARN + "tagged")["Tags"] == {}


def test_account_settings(server, lam):
    create(lam, "acct", SLEEPY)
    s = lam.get_account_settings()
    assert s["AccountLimit"]["CodeSizeZipped"] == 52428800
    assert s["AccountLimit"]["ConcurrentExecutions"] >= 1
    assert s["AccountUsage"]["FunctionCount"] >= 1 and s["AccountUsage"]["TotalCodeSize"] >= len(SLEEPY)
    r = aws(server, "lambda", "get-account-settings")
    assert r.returncode == 0 and "AccountLimit" in json.loads(r.stdout)


def test_reserved_concurrency_and_account_limit():
    srv = Server(["--concurrency-limit", "4", "--min-unreserved", "1"])
    try:
        lam = srv.client()
        create(lam, "res", SLEEPY, Timeout=10)
        create(lam, "other", SLEEPY, Timeout=10)
        assert lam.get_function_concurrency(FunctionName="res").get("ReservedConcurrentExecutions") is None
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.put_function_concurrency(FunctionName="res", ReservedConcurrentExecutions=4)
        assert "UnreservedConcurrentExecution below its minimum value of [1]" in err(e)[1]
        assert lam.put_function_concurrency(FunctionName="res", ReservedConcurrentExecutions=0)[
            "ReservedConcurrentExecutions"] == 0
        assert lam.get_function(FunctionName="res")["Concurrency"] == {"ReservedConcurrentExecutions": 0}
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.invoke(FunctionName="res", Payload=b"{}")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert e.value.response["Error"]["Code"] == "TooManyRequestsException"
        assert e.value.response.get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded"
        lam.put_function_concurrency(FunctionName="res", ReservedConcurrentExecutions=1)
        s = lam.get_account_settings()["AccountLimit"]
        assert (s["ConcurrentExecutions"], s["UnreservedConcurrentExecutions"]) == (4, 3)
        # One in flight: the second is throttled by the reservation.
        t = threading.Thread(target=lambda: srv.client().invoke(FunctionName="res", Payload=json.dumps({"sleep": 2})))
        t.start()
        time.sleep(1.0)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.invoke(FunctionName="res", Payload=b"{}")
        assert e.value.response.get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded"
        t.join()
        assert lam.invoke(FunctionName="res", Payload=b"{}")["StatusCode"] == 200
        # The unreserved pool is 3: a fourth concurrent invoke of another function is throttled.
        threads = [threading.Thread(target=lambda: srv.client().invoke(FunctionName="other", Payload=json.dumps({"sleep": 3})))
                   for _ in range(3)]
        for th in threads:
            th.start()
        time.sleep(2.0)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.invoke(FunctionName="other", Payload=b"{}")
        assert e.value.response.get("Reason") == "ConcurrentInvocationLimitExceeded"
        for th in threads:
            th.join()
        lam.delete_function_concurrency(FunctionName="res")
        assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="res")
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.put_function_concurrency(FunctionName="missing", ReservedConcurrentExecutions=1)
        assert err(e)[0] == "ResourceNotFoundException"
        r = aws(srv, "lambda", "put-function-concurrency", "--function-name", "res",
                "--reserved-concurrent-executions", "2")
        assert r.returncode == 0 and json.loads(r.stdout)["ReservedConcurrentExecutions"] == 2, r.stderr
    finally:
        srv.stop()


def metric(srv, name):
    import urllib.request
    text = urllib.request.urlopen(srv.endpoint + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_memory_budget_evicts_idle_envs_then_throttles():
    # The budget (MemTotal less 10%, at least 512 MiB, times --memory-overcommit) is set to
    # hold two envs of 10240 MB and not three.
    total_mb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:")) // 1024
    host_mb = total_mb - max(total_mb // 10, 512)
    ratio = 2.5 * 10240 / host_mb
    srv = Server(["--memory-overcommit", f"{ratio:.6f}"])
    try:
        lam = srv.client()
        budget = metric(srv, "lamina_memory_budget_bytes")
        assert 2 * 10240 << 20 <= budget < 3 * 10240 << 20
        # The default account limit follows the budget after overcommit.
        assert lam.get_account_settings()["AccountLimit"]["ConcurrentExecutions"] == min(1000, int(budget) // (128 << 20))
        for n in ("m1", "m2", "m3"):
            create(lam, n, SLEEPY, MemorySize=10240, Timeout=10)
        pids = {n: json.loads(lam.invoke(FunctionName=n, Payload=b"{}")["Payload"].read())["pid"] for n in ("m1", "m2")}
        assert metric(srv, "lamina_memory_committed_bytes") == 2 * 10240 << 20
        # A third env fits only once the least recently used idle one (m1's) is evicted.
        assert lam.invoke(FunctionName="m3", Payload=b"{}")["StatusCode"] == 200
        assert metric(srv, "lamina_env_evictions_total") == 1
        assert metric(srv, "lamina_memory_committed_bytes") == 2 * 10240 << 20
        r = json.loads(lam.invoke(FunctionName="m2", Payload=b"{}")["Payload"].read())
        assert r["init"] == "on-demand" and r["pid"] == pids["m2"]  # still warm
        # Busy envs fill the budget: a new env cannot start, and the invoke is throttled.
        threads = [threading.Thread(target=lambda n=n: srv.client().invoke(FunctionName=n, Payload=json.dumps({"sleep": 3})))
                   for n in ("m2", "m3")]
        for th in threads:
            th.start()
        time.sleep(1.5)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.invoke(FunctionName="m1", Payload=b"{}")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert e.value.response["Error"]["Code"] == "TooManyRequestsException"
        assert e.value.response.get("Reason") == "ConcurrentInvocationLimitExceeded"
        for th in threads:
            th.join()
        assert metric(srv, "lamina_memory_committed_bytes") == 2 * 10240 << 20
        assert lam.invoke(FunctionName="m1", Payload=b"{}")["StatusCode"] == 200
        assert metric(srv, "lamina_env_evictions_total") == 2
    finally:
        srv.stop()


def test_memory_overcommit_is_validated():
    for bad in ("0", "-1", "nan", "abc"):
        r = subprocess.run([LAMINA, "serve", f"--memory-overcommit={bad}"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "memory-overcommit" in r.stderr, r.stderr


def wait_ready(lam, name, q, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        c = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=q)
        if c["Status"] == "READY":
            return c
        assert c["Status"] == "IN_PROGRESS", c
        time.sleep(0.2)
    raise AssertionError("provisioned concurrency never READY")


def restart(srv):
    """Stops the server (SIGTERM) and starts it again on the same state dir and port."""
    import signal
    import socket
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(30) == 0
    srv.proc = subprocess.Popen(srv.proc.args, stdout=srv.log, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", srv.port), timeout=0.2).close()
            return
        except OSError:
            assert time.time() < deadline, "lamina serve did not restart"
            time.sleep(0.05)


def test_provisioned_concurrency_survives_restart():
    srv = Server(["--concurrency-limit", "50"])
    try:
        lam = srv.client()
        create(lam, "prov", SLEEPY)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.put_provisioned_concurrency_config(FunctionName="prov", Qualifier="$LATEST",
                                                   ProvisionedConcurrentExecutions=1)
        assert "unpublished" in err(e)[1]
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.get_provisioned_concurrency_config(FunctionName="prov", Qualifier="1")
        assert err(e)[0] in ("ResourceNotFoundException", "ProvisionedConcurrencyConfigNotFoundException")
        lam.publish_version(FunctionName="prov")
        lam.create_alias(FunctionName="prov", Name="live", FunctionVersion="1")
        r = lam.put_provisioned_concurrency_config(FunctionName="prov", Qualifier="live",
                                                   ProvisionedConcurrentExecutions=2)
        assert r["Status"] == "IN_PROGRESS" and r["RequestedProvisionedConcurrentExecutions"] == 2
        c = wait_ready(lam, "prov", "live")
        assert c["AllocatedProvisionedConcurrentExecutions"] == 2
        out = json.loads(lam.invoke(FunctionName="prov", Qualifier="live", Payload=b"{}")["Payload"].read())
        assert out["init"] == "provisioned-concurrency" and out["version"] == "1"
        # Unqualified invokes do not use them.
        out = json.loads(lam.invoke(FunctionName="prov", Payload=b"{}")["Payload"].read())
        assert out["init"] == "on-demand"
        listed = lam.list_provisioned_concurrency_configs(FunctionName="prov")["ProvisionedConcurrencyConfigs"]
        assert [x["FunctionArn"].rsplit(":", 1)[1] for x in listed] == ["live"]
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.get_provisioned_concurrency_config(FunctionName="prov", Qualifier="1")
        assert err(e)[0] == "ProvisionedConcurrencyConfigNotFoundException" and err(e)[2] == 404
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.put_function_concurrency(FunctionName="prov", ReservedConcurrentExecutions=1)
        assert "provisioned concurrency" in err(e)[1]
        # The setting survives a restart: its envs are started again.
        restart(srv)
        c = wait_ready(lam, "prov", "live")
        assert c["AllocatedProvisionedConcurrentExecutions"] == 2
        out = json.loads(lam.invoke(FunctionName="prov", Qualifier="live", Payload=b"{}")["Payload"].read())
        assert out["init"] == "provisioned-concurrency"
        r = aws(srv, "lambda", "delete-provisioned-concurrency-config", "--function-name", "prov", "--qualifier", "live")
        assert r.returncode == 0, r.stderr
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.delete_provisioned_concurrency_config(FunctionName="prov", Qualifier="live")
        assert err(e)[0] == "ProvisionedConcurrencyConfigNotFoundException"
    finally:
        srv.stop()


def test_environment_variables_are_sealed_at_rest(server, lam):
    secret = "s3cr3t-" + os.urandom(8).hex()
    create(lam, "sealed", SLEEPY, Environment={"Variables": {"SECRET": secret}})
    lam.update_function_configuration(FunctionName="sealed", Environment={"Variables": {"SECRET": secret, "BB": "c"}})
    lam.publish_version(FunctionName="sealed")
    out = json.loads(lam.invoke(FunctionName="sealed", Qualifier="1", Payload=b"{}")["Payload"].read())
    assert out["secret"] == secret
    assert lam.get_function_configuration(FunctionName="sealed")["Environment"]["Variables"]["SECRET"] == secret
    # Not in any file of the state dir (database, WAL, logs, code), nor in any process's argv.
    r = subprocess.run(["grep", "-r", "-l", "-a", secret, server.state], capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                assert secret.encode() not in open(f"/proc/{pid}/cmdline", "rb").read()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
    key = os.path.join(server.state, "key")
    assert oct(os.stat(key).st_mode & 0o777) == "0o600" and os.path.getsize(key) == 32


def test_key_file_option(tmp_path):
    key = tmp_path / "k"
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o644)
    r = subprocess.run([os.environ.get("LAMINA_BIN", os.path.join(os.path.dirname(__file__), "../../target/release/lamina")),
                        "serve", "--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:1", "--key-file", str(key)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "readable by others" in r.stderr
    os.chmod(key, 0o600)
    srv = Server(["--key-file", str(key)])
    try:
        lam = srv.client()
        create(lam, "keyed", SLEEPY, Environment={"Variables": {"SECRET": "v"}})
        assert not os.path.exists(os.path.join(srv.state, "key"))
        out = json.loads(lam.invoke(FunctionName="keyed", Payload=b"{}")["Payload"].read())
        assert out["secret"] == "v"
    finally:
        srv.stop()
