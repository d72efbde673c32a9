"""Updates, versions and aliases through boto3 and the AWS CLI against a real `lamina serve`."""
import base64
import json
import subprocess
import threading
import time

import botocore.exceptions
import pytest

from test_lambda_api import ROLE, create, mkzip

V1 = mkzip({"app.py": """
import os
def handler(event, context):
    return {"code": "v1", "version": context.function_version, "arn": context.invoked_function_arn,
            "env_version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"], "greeting": os.environ.get("GREETING"),
            "memory": context.memory_limit_in_mb}
"""})
V2 = mkzip({"app.py": """
import os, time
def handler(event, context):
    if isinstance(event, dict) and event.get("sleep"):
        time.sleep(event["sleep"])
    return {"code": "v2", "version": context.function_version, "greeting": os.environ.get("GREETING")}
"""})


def err(excinfo):
    e = excinfo.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


def invoke(lam, name, qualifier=None, payload=None):
    args = dict(FunctionName=name, Payload=json.dumps(payload or {}))
    if qualifier:
        args["Qualifier"] = qualifier
    r = lam.invoke(**args)
    return r["ExecutedVersion"], json.loads(r["Payload"].read())


def test_update_code_and_configuration_with_waiters(lam):
    create(lam, "upd", V1, Environment={"Variables": {"GREETING": "hi"}})
    before = lam.get_function(FunctionName="upd")["Configuration"]
    assert invoke(lam, "upd")[1]["code"] == "v1"
    r = lam.update_function_code(FunctionName="upd", ZipFile=V2)
    assert r["LastUpdateStatus"] == "InProgress"
    assert r["CodeSha256"] != before["CodeSha256"] and r["RevisionId"] != before["RevisionId"]
    lam.get_waiter("function_updated_v2").wait(FunctionName="upd", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    lam.get_waiter("function_updated").wait(FunctionName="upd", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    assert invoke(lam, "upd")[1] == {"code": "v2", "version": "$LATEST", "greeting": "hi"}
    r = lam.update_function_configuration(
        FunctionName="upd", MemorySize=256, Timeout=7, Description="d", Handler="app.handler",
        Environment={"Variables": {"GREETING": "hello"}}, EphemeralStorage={"Size": 1024}, Runtime="python3.11")
    assert (r["MemorySize"], r["Timeout"], r["Description"], r["EphemeralStorage"]) == (256, 7, "d", {"Size": 1024})
    lam.get_waiter("function_updated_v2").wait(FunctionName="upd", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    c = lam.get_function_configuration(FunctionName="upd")
    assert c["LastUpdateStatus"] == "Successful" and c["Environment"] == {"Variables": {"GREETING": "hello"}}
    # The warm env of the old configuration is retired: the next invoke sees the new one.
    assert invoke(lam, "upd")[1]["greeting"] == "hello"
    # Environment replaces the whole map.
    lam.update_function_configuration(FunctionName="upd", Environment={"Variables": {}})
    assert invoke(lam, "upd")[1]["greeting"] is None


def test_update_errors(lam):
    create(lam, "upderr", V1)
    rev = lam.get_function(FunctionName="upderr")["Configuration"]["RevisionId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.update_function_code(FunctionName="upderr", ZipFile=V2, RevisionId="not-the-revision")
    assert err(e)[0] == "PreconditionFailedException" and err(e)[2] == 412
    assert "does not match the latest Revision Id" in err(e)[1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.update_function_configuration(FunctionName="upderr", Timeout=5, RevisionId="nope")
    assert err(e)[2] == 412
    # Nothing changed by the refused updates.
    assert lam.get_function(FunctionName="upderr")["Configuration"]["RevisionId"] == rev
    ok = lam.update_function_configuration(FunctionName="upderr", Timeout=5, RevisionId=rev)
    assert ok["Timeout"] == 5
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.update_function_code(FunctionName="upderr", ZipFile=b"not a zip")
    assert err(e)[0] == "InvalidParameterValueException" and "Could not unzip" in err(e)[1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.update_function_code(FunctionName="nosuch", ZipFile=V2)
    assert err(e)[0] == "ResourceNotFoundException" and err(e)[2] == 404
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.update_function_configuration(FunctionName="upderr", MemorySize=20000)
    assert err(e)[0] == "ValidationException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.update_function_configuration(FunctionName="upderr", Environment={"Variables": {"AWS_REGION": "x"}})
    assert err(e)[0] == "InvalidParameterValueException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.update_function_configuration(FunctionName="upderr", Environment={"Variables": {"BIG": "x" * 5000}})
    assert "4KB limit" in err(e)[1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.update_function_configuration(FunctionName="upderr", Runtime="python2.7")
    assert err(e)[0] == "InvalidParameterValueException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.update_function_configuration(FunctionName="upderr", VpcConfig={"SubnetIds": ["subnet-1"]})
    assert "VpcConfig" in err(e)[1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.update_function_code(FunctionName="upderr", ZipFile=V2, Architectures=["arm64"])
    assert err(e)[0] == "InvalidParameterValueException"
    # DryRun validates without changing anything.
    r = lam.update_function_code(FunctionName="upderr", ZipFile=V2, DryRun=True)
    assert r["CodeSha256"] != lam.get_function(FunctionName="upderr")["Configuration"]["CodeSha256"]
    assert lam.get_function(FunctionName="upderr")["Configuration"]["Timeout"] == 5


def test_publish_versions_and_invoke_them(lam):
    create(lam, "ver", V1)
    v1 = lam.publish_version(FunctionName="ver", Description="first")
    assert v1["Version"] == "1" and v1["FunctionArn"].endswith(":function:ver:1") and v1["Description"] == "first"
    # Unchanged $LATEST: the same version again.
    assert lam.publish_version(FunctionName="ver")["Version"] == "1"
    lam.update_function_code(FunctionName="ver", ZipFile=V2)
    cur = lam.get_function(FunctionName="ver")["Configuration"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.publish_version(FunctionName="ver", CodeSha256="AAAA")
    assert err(e)[0] == "InvalidParameterValueException" and "is different from current CodeSHA256" in err(e)[1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.publish_version(FunctionName="ver", RevisionId="stale")
    assert err(e)[0] == "PreconditionFailedException"
    v2 = lam.publish_version(FunctionName="ver", CodeSha256=cur["CodeSha256"], RevisionId=cur["RevisionId"])
    assert v2["Version"] == "2"
    # Versions are immutable snapshots: v1 still runs the old code.
    assert invoke(lam, "ver", "1") == ("1", {"code": "v1", "version": "1", "env_version": "1",
                                            "arn": v1["FunctionArn"], "greeting": None, "memory": "128"})
    assert invoke(lam, "ver", "2")[1]["code"] == "v2"
    assert invoke(lam, "ver")[0] == "$LATEST"
    assert invoke(lam, "arn:aws:lambda:us-east-1:123456789012:function:ver:1")[0] == "1"
    assert lam.get_function(FunctionName="ver", Qualifier="1")["Configuration"]["CodeSha256"] == v1["CodeSha256"]
    listed = lam.list_versions_by_function(FunctionName="ver")["Versions"]
    assert [v["Version"] for v in listed] == ["$LATEST", "1", "2"]
    assert listed[0]["FunctionArn"].endswith(":ver:$LATEST")
    page = lam.list_versions_by_function(FunctionName="ver", MaxItems=2)
    assert [v["Version"] for v in page["Versions"]] == ["$LATEST", "1"]
    rest = lam.list_versions_by_function(FunctionName="ver", Marker=page["NextMarker"])
    assert [v["Version"] for v in rest["Versions"]] == ["2"] and "NextMarker" not in rest
    allv = lam.list_functions(FunctionVersion="ALL")["Functions"]
    assert {f["Version"] for f in allv if f["FunctionName"] == "ver"} == {"$LATEST", "1", "2"}
    # Publish on update, in the same call.
    r = lam.update_function_code(FunctionName="ver", ZipFile=V1, Publish=True)
    assert r["Version"] == "3"
    # Deleting a version; numbers are never reused.
    lam.delete_function(FunctionName="ver", Qualifier="2")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        invoke(lam, "ver", "2")
    assert err(e)[0] == "ResourceNotFoundException" and err(e)[1].endswith(":function:ver:2")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.delete_function(FunctionName="ver", Qualifier="$LATEST")
    assert "$LATEST version cannot be deleted" in err(e)[1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.delete_function(FunctionName="ver", Qualifier="9")
    assert err(e)[0] == "ResourceNotFoundException"
    lam.update_function_configuration(FunctionName="ver", Timeout=4)
    assert lam.publish_version(FunctionName="ver")["Version"] == "4"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.publish_version(FunctionName="nosuch")
    assert err(e)[0] == "ResourceNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.list_versions_by_function(FunctionName="nosuch")
    assert err(e)[0] == "ResourceNotFoundException"
    # Create with Publish gives version 1 at once.
    r = lam.create_function(FunctionName="ver-pub", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": V1}, Publish=True)
    assert r["Version"] == "1"
    lam.delete_function(FunctionName="ver-pub")


def test_aliases_and_errors(lam):
    create(lam, "al", V1)
    lam.publish_version(FunctionName="al")
    lam.update_function_code(FunctionName="al", ZipFile=V2, Publish=True)
    a = lam.create_alias(FunctionName="al", Name="live", FunctionVersion="1", Description="prod")
    assert a["AliasArn"].endswith(":function:al:live") and a["FunctionVersion"] == "1" and a["RevisionId"]
    assert lam.get_alias(FunctionName="al", Name="live")["Description"] == "prod"
    assert invoke(lam, "al", "live")[0] == "1"
    ret = invoke(lam, "al", "live")[1]
    assert ret["arn"].endswith(":al:live") and ret["version"] == "1"
    assert lam.get_function(FunctionName="al", Qualifier="live")["Configuration"]["FunctionArn"].endswith(":al:live")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.create_alias(FunctionName="al", Name="live", FunctionVersion="1")
    assert err(e)[0] == "ResourceConflictException" and "Alias already exists" in err(e)[1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.create_alias(FunctionName="al", Name="123", FunctionVersion="1")
    assert err(e)[0] == "ValidationException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.create_alias(FunctionName="al", Name="x", FunctionVersion="7")
    assert err(e)[0] == "ResourceNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.create_alias(FunctionName="al", Name="x", FunctionVersion="1",
                         RoutingConfig={"AdditionalVersionWeights": {"2": 1.5}})
    assert err(e)[0] == "ValidationException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.create_alias(FunctionName="al", Name="x", FunctionVersion="$LATEST",
                         RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    assert "$LATEST is not supported" in err(e)[1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.create_alias(FunctionName="al", Name="x", FunctionVersion="1",
                         RoutingConfig={"AdditionalVersionWeights": {"2": 0.5, "3": 0.1}})
    assert "cannot be greater than 1" in err(e)[1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.create_alias(FunctionName="al", Name="x", FunctionVersion="1",
                         RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}})
    assert err(e)[0] == "InvalidParameterValueException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_alias(FunctionName="al", Name="nope")
    assert err(e)[0] == "ResourceNotFoundException" and "Alias not found" in err(e)[1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        invoke(lam, "al", "nope")
    assert err(e)[0] == "ResourceNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.update_alias(FunctionName="al", Name="live", FunctionVersion="2", RevisionId="stale")
    assert err(e)[0] == "PreconditionFailedException"
    u = lam.update_alias(FunctionName="al", Name="live", FunctionVersion="2", RevisionId=a["RevisionId"])
    assert u["FunctionVersion"] == "2" and u["RevisionId"] != a["RevisionId"] and u["Description"] == "prod"
    assert invoke(lam, "al", "live")[0] == "2"
    # An alias pins its version: the version cannot be deleted under it.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.delete_function(FunctionName="al", Qualifier="2")
    assert err(e)[0] == "ResourceConflictException" and "live" in err(e)[1]
    lam.create_alias(FunctionName="al", Name="beta", FunctionVersion="$LATEST")
    names = [x["Name"] for x in lam.list_aliases(FunctionName="al")["Aliases"]]
    assert names == ["beta", "live"]
    assert [x["Name"] for x in lam.list_aliases(FunctionName="al", FunctionVersion="2")["Aliases"]] == ["live"]
    page = lam.list_aliases(FunctionName="al", MaxItems=1)
    assert len(page["Aliases"]) == 1 and page["NextMarker"] == "beta"
    lam.delete_alias(FunctionName="al", Name="beta")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.delete_alias(FunctionName="al", Name="beta")
    assert err(e)[0] == "ResourceNotFoundException"
    lam.delete_function(FunctionName="al")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_alias(FunctionName="al", Name="live")
    assert err(e)[0] == "ResourceNotFoundException"


def test_weighted_alias_split_over_10000_invocations(server, lam):
    create(lam, "split", V1)
    lam.publish_version(FunctionName="split")
    lam.update_function_configuration(FunctionName="split", Description="two")
    lam.publish_version(FunctionName="split")
    lam.create_alias(FunctionName="split", Name="canary", FunctionVersion="1",
                     RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}})
    counts = {"1": 0, "2": 0}
    lock = threading.Lock()

    def worker(n):
        c = server.client()
        local = {"1": 0, "2": 0}
        for _ in range(n):
            r = c.invoke(FunctionName="split", Qualifier="canary", Payload=b"{}")
            body = json.loads(r["Payload"].read())
            assert body["version"] == r["ExecutedVersion"]
            local[r["ExecutedVersion"]] += 1
        with lock:
            for k, v in local.items():
                counts[k] += v

    threads = [threading.Thread(target=worker, args=(2500,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = counts["1"] + counts["2"]
    assert total == 10000
    share = counts["2"] / total
    print(f"weighted alias: version 2 ran {counts['2']} of {total} invocations ({share:.2%}, weight 30%)")
    assert abs(share - 0.3) <= 0.03, counts


def test_cli_updates_versions_aliases(server, lam, tmp_path):
    create(lam, "cliv", V1)
    z = tmp_path / "v2.zip"
    z.write_bytes(V2)
    def cli(*args):
        out = subprocess.run([*cli_base(server), *args], env=server.env(), capture_output=True, text=True)
        return out

    r = cli("lambda", "update-function-code", "--function-name", "cliv", "--zip-file", f"fileb://{z}")
    assert r.returncode == 0, r.stderr
    r = cli("lambda", "wait", "function-updated-v2", "--function-name", "cliv")
    assert r.returncode == 0, r.stderr
    r = cli("lambda", "publish-version", "--function-name", "cliv")
    assert r.returncode == 0 and json.loads(r.stdout)["Version"] == "1", r.stderr
    r = cli("lambda", "create-alias", "--function-name", "cliv", "--name", "prod", "--function-version", "1")
    assert r.returncode == 0, r.stderr
    r = cli("lambda", "list-versions-by-function", "--function-name", "cliv")
    assert [v["Version"] for v in json.loads(r.stdout)["Versions"]] == ["$LATEST", "1"]
    r = cli("lambda", "update-function-configuration", "--function-name", "cliv", "--timeout", "9")
    assert r.returncode == 0 and json.loads(r.stdout)["Timeout"] == 9
    out = tmp_path / "out.json"
    r = cli("lambda", "invoke", "--function-name", "cliv", "--qualifier", "prod", str(out))
    assert r.returncode == 0 and json.loads(r.stdout)["ExecutedVersion"] == "1"
    assert json.loads(out.read_text())["code"] == "v2"
    r = cli("lambda", "get-alias", "--function-name", "cliv", "--name", "missing")
    assert r.returncode != 0 and "ResourceNotFoundException" in r.stderr
    r = cli("lambda", "delete-alias", "--function-name", "cliv", "--name", "prod")
    assert r.returncode == 0, r.stderr


def cli_base(server):
    import os
    import sys
    return [os.path.join(os.path.dirname(sys.executable), "aws"), "--endpoint-url", server.endpoint, "--output", "json"]


def test_in_flight_invocation_finishes_on_the_old_configuration(server, lam):
    create(lam, "inflight", V2, Environment={"Variables": {"GREETING": "old"}}, Timeout=10)
    invoke(lam, "inflight")  # one warm env of the old configuration
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", invoke(server.client(), "inflight", payload={"sleep": 2})))
    t.start()
    time.sleep(0.8)
    lam.update_function_configuration(FunctionName="inflight", Environment={"Variables": {"GREETING": "new"}})
    assert invoke(lam, "inflight")[1]["greeting"] == "new"
    t.join()
    assert result["r"][1]["greeting"] == "old"
    # The old env is not reused after it finishes.
    for _ in range(3):
        assert invoke(lam, "inflight")[1]["greeting"] == "new"
