"""Lambda layers through boto3 and the AWS CLI against a real `lamina serve`."""
import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile

import pytest

ROLE = "arn:aws:iam::123456789012:role/lambda-role"
ARN = "arn:aws:lambda:us-east-1:123456789012:layer:"
DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")


def mkzip(files):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for name, content in files.items():
            z.writestr(zipfile.ZipInfo(name), content)
    return b.getvalue()


def publish(lam, name, files=None, **kw):
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": mkzip(files or {"f.txt": name})}, **kw)


def error(exc_info):
    e = exc_info.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


def test_publish_get_list_delete(lam):
    z = mkzip({"python/lib1.py": "X = 1\n"})
    r = lam.publish_layer_version(LayerName="life", Description="first", LicenseInfo="MIT",
                                  CompatibleRuntimes=["python3.11", "python3.12"],
                                  CompatibleArchitectures=["x86_64"], Content={"ZipFile": z})
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert r["LayerArn"] == ARN + "life" and r["LayerVersionArn"] == ARN + "life:1" and r["Version"] == 1
    assert r["Description"] == "first" and r["LicenseInfo"] == "MIT"
    assert r["CompatibleRuntimes"] == ["python3.11", "python3.12"] and r["CompatibleArchitectures"] == ["x86_64"]
    assert DATE.match(r["CreatedDate"]), r["CreatedDate"]
    assert r["Content"]["CodeSha256"] == base64.b64encode(hashlib.sha256(z).digest()).decode()
    assert r["Content"]["CodeSize"] == len(z)
    # Content.Location downloads the ZIP without credentials, like a presigned URL...
    assert urllib.request.urlopen(r["Content"]["Location"], timeout=10).read() == z
    # ...and only with its signature.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(r["Content"]["Location"][:-4] + "0000", timeout=10)
    assert e.value.code == 403

    r2 = publish(lam, "life", {"python/lib1.py": "X = 2\n"})
    assert r2["Version"] == 2 and r2["CompatibleRuntimes"] == [] and "LicenseInfo" not in r2
    g = lam.get_layer_version(LayerName="life", VersionNumber=1)
    assert {k: g[k] for k in ("LayerVersionArn", "Version", "Description", "CreatedDate", "LicenseInfo")} == \
        {k: r[k] for k in ("LayerVersionArn", "Version", "Description", "CreatedDate", "LicenseInfo")}
    assert g["Content"]["CodeSha256"] == r["Content"]["CodeSha256"]
    # LayerName may be the layer's ARN.
    assert lam.get_layer_version(LayerName=ARN + "life", VersionNumber=2)["Version"] == 2
    b = lam.get_layer_version_by_arn(Arn=ARN + "life:2")
    assert b["LayerVersionArn"] == ARN + "life:2" and b["Content"]["CodeSize"] == r2["Content"]["CodeSize"]

    versions = lam.list_layer_versions(LayerName="life")["LayerVersions"]
    assert [v["Version"] for v in versions] == [2, 1]
    assert versions[1]["LicenseInfo"] == "MIT" and "Content" not in versions[1]
    layers = {l["LayerName"]: l for l in lam.list_layers()["Layers"]}
    assert layers["life"]["LayerArn"] == ARN + "life"
    assert layers["life"]["LatestMatchingVersion"]["Version"] == 2

    assert lam.delete_layer_version(LayerName="life", VersionNumber=1)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_layer_version(LayerName="life", VersionNumber=1)
    assert error(e) == ("ResourceNotFoundException", "The resource you requested does not exist.", 404)
    # Deleting is idempotent, also for versions and layers that never existed.
    lam.delete_layer_version(LayerName="life", VersionNumber=1)
    lam.delete_layer_version(LayerName="life", VersionNumber=99)
    lam.delete_layer_version(LayerName="never-was", VersionNumber=1)
    lam.delete_layer_version(LayerName=ARN + "life", VersionNumber=2)
    assert lam.list_layer_versions(LayerName="life")["LayerVersions"] == []
    assert "life" not in [l["LayerName"] for l in lam.list_layers()["Layers"]]
    # Version numbers are never reused.
    assert publish(lam, "life")["Version"] == 3
    lam.delete_layer_version(LayerName="life", VersionNumber=3)


def test_layer_errors(server, lam):
    raw = server.client(parameter_validation=False)
    publish(lam, "errs")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_layer_version(LayerName="errs", VersionNumber=2)
    assert error(e)[1] == "The resource you requested does not exist."
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version(LayerName="no-such-layer", VersionNumber=1)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version_by_arn(Arn=ARN + "errs:5")
    # Another account's or region's layers do not exist here.
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version_by_arn(Arn="arn:aws:lambda:us-east-1:999999999999:layer:errs:1")
    for v in (0, -1):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
            lam.get_layer_version(LayerName="errs", VersionNumber=v)
        assert error(e) == ("InvalidParameterValueException", "Layer Version Cannot be less than 1", 400)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.delete_layer_version(LayerName="errs", VersionNumber=0)
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.get_layer_version_by_arn(Arn=ARN + "errs")
    assert error(e)[0] == "ValidationException" and "at 'arn'" in error(e)[1]

    # Bad names, as a name or in an ARN.
    for bad in ("bad name", "a/b", "x" * 141, "arn:aws:lambda:us-east-1:123456789012:layer:x:1"):
        with pytest.raises(lam.exceptions.ClientError) as e:
            publish(raw, bad)
        assert error(e)[0] == "ValidationException" and "'layerName'" in error(e)[1], (bad, error(e))
        with pytest.raises(lam.exceptions.ClientError) as e:
            lam.list_layer_versions(LayerName=bad)
        assert error(e)[0] == "ValidationException"

    # Bad ZIPs.
    for z, msg in ((b"not a zip", "Could not unzip uploaded file. Please check your file, then try to upload again."),
                   (mkzip({"../escape.txt": "x"}), "Could not unzip uploaded file. Please check your file, then try to upload again."),
                   (b"", "Uploaded file must be a non-empty zip")):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
            raw.publish_layer_version(LayerName="badzip", Content={"ZipFile": z})
        assert error(e) == ("InvalidParameterValueException", msg, 400)
    assert lam.list_layer_versions(LayerName="badzip")["LayerVersions"] == []
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        raw.publish_layer_version(LayerName="badzip", Content={"S3Bucket": "b", "S3Key": "k"})

    # Compatible runtimes and architectures.
    with pytest.raises(lam.exceptions.ClientError) as e:
        publish(lam, "badrt", CompatibleRuntimes=["python3.11", "cobol"])
    code, msg, status = error(e)
    assert (code, status) == ("ValidationException", 400)
    assert msg.startswith("1 validation error detected: Value '[python3.11, cobol]' at 'compatibleRuntimes'"), msg
    with pytest.raises(lam.exceptions.ClientError) as e:
        publish(lam, "badrt", CompatibleRuntimes=["cobol"], CompatibleArchitectures=["sparc"])
    assert error(e)[1].startswith("2 validation errors detected:")
    with pytest.raises(lam.exceptions.ClientError) as e:
        publish(lam, "badrt", CompatibleRuntimes=["python3.11"] * 16)
    assert "Member must have length less than or equal to 15" in error(e)[1]
    with pytest.raises(lam.exceptions.ClientError) as e:
        publish(lam, "badrt", CompatibleArchitectures=["x86_64", "arm64", "x86_64"])
    assert error(e)[0] == "ValidationException"
    with pytest.raises(lam.exceptions.ClientError) as e:
        publish(raw, "badrt", Description="d" * 257)
    assert error(e)[0] == "ValidationException"
    with pytest.raises(lam.exceptions.ClientError) as e:
        publish(raw, "badrt", LicenseInfo="l" * 513)
    assert error(e)[0] == "ValidationException"
    assert lam.list_layer_versions(LayerName="badrt")["LayerVersions"] == []
    assert publish(lam, "badrt", CompatibleRuntimes=["python3.11"] * 15)["Version"] == 1

    # List filters and page sizes.
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.list_layers(CompatibleRuntime="cobol")
    assert error(e)[0] == "ValidationException" and "'compatibleRuntime'" in error(e)[1]
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.list_layer_versions(LayerName="errs", CompatibleArchitecture="sparc")
    assert error(e)[0] == "ValidationException" and "'compatibleArchitecture'" in error(e)[1]
    for bad in (0, 51):
        with pytest.raises(lam.exceptions.ClientError) as e:
            raw.list_layers(MaxItems=bad)
        assert error(e)[0] == "ValidationException"


def test_paging_and_filters(lam):
    names = [f"pg-{i:02d}" for i in range(7)]
    for n in names:
        publish(lam, n, CompatibleRuntimes=["python3.12"])
    first = lam.list_layers(MaxItems=3)
    assert len(first["Layers"]) == 3 and "NextMarker" in first
    pages = list(lam.get_paginator("list_layers").paginate(PaginationConfig={"PageSize": 2}))
    assert len(pages) >= 4
    seen = [l["LayerName"] for p in pages for l in p["Layers"]]
    assert [n for n in seen if n.startswith("pg-")] == names and len(seen) == len(set(seen))

    for i in range(5):
        publish(lam, "pgv", {"v": str(i)}, CompatibleRuntimes=["python3.11"] if i % 2 else ["python3.12"],
                CompatibleArchitectures=["arm64"] if i == 4 else ["x86_64"])
    r = lam.list_layer_versions(LayerName="pgv", MaxItems=2)
    assert [v["Version"] for v in r["LayerVersions"]] == [5, 4] and "NextMarker" in r
    r = lam.list_layer_versions(LayerName="pgv", MaxItems=2, Marker=r["NextMarker"])
    assert [v["Version"] for v in r["LayerVersions"]] == [3, 2]
    pages = lam.get_paginator("list_layer_versions").paginate(LayerName="pgv", PaginationConfig={"PageSize": 2})
    assert [v["Version"] for p in pages for v in p["LayerVersions"]] == [5, 4, 3, 2, 1]
    r = lam.list_layer_versions(LayerName="pgv", CompatibleRuntime="python3.11")
    assert [v["Version"] for v in r["LayerVersions"]] == [4, 2]
    r = lam.list_layer_versions(LayerName="pgv", CompatibleArchitecture="arm64")
    assert [v["Version"] for v in r["LayerVersions"]] == [5]
    # ListLayers shows the latest version that matches the filter.
    r = lam.list_layers(CompatibleRuntime="python3.11")["Layers"]
    assert [(l["LayerName"], l["LatestMatchingVersion"]["Version"]) for l in r if l["LayerName"].startswith("pg")] \
        == [("pgv", 4)]
    r = {l["LayerName"]: l["LatestMatchingVersion"]["Version"] for l in lam.list_layers(CompatibleRuntime="python3.12")["Layers"]}
    assert r["pgv"] == 5 and all(r[n] == 1 for n in names)
    assert [l for l in lam.list_layers(CompatibleRuntime="java21")["Layers"] if l["LayerName"].startswith("pg")] == []
    assert lam.list_layer_versions(LayerName="pg-none")["LayerVersions"] == []


def create(lam, name, code, layers, **kw):
    r = lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": code}, Layers=layers, **kw)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    return r


APP = mkzip({"app.py": """
import os
def handler(event, context):
    import mod_a, shared
    tree = sorted(os.path.join(d, f)[len('/opt/'):] for d, _, fs in os.walk('/opt') for f in fs)
    try:
        open('/opt/python/new.py', 'w').write('x')
        writable = True
    except OSError:
        writable = False
    return {"a": mod_a.VALUE, "shared": shared.WHO, "tree": tree,
            "one": open('/opt/data/one.txt').read(), "two": open('/opt/data/two.txt').read(),
            "writable": writable}
"""})


def test_function_with_two_layers(lam):
    l1 = publish(lam, "fn-l1", {"python/mod_a.py": "VALUE = 'from layer 1'\n", "python/shared.py": "WHO = 'layer 1'\n",
                                "data/one.txt": "1", "data/two.txt": "1"}, CompatibleRuntimes=["python3.11"])
    l2 = publish(lam, "fn-l2", {"python/shared.py": "WHO = 'layer 2'\n", "data/two.txt": "2"})
    r = create(lam, "layered", APP, [l1["LayerVersionArn"], l2["LayerVersionArn"]])
    assert r["Layers"] == [{"Arn": l1["LayerVersionArn"], "CodeSize": l1["Content"]["CodeSize"]},
                           {"Arn": l2["LayerVersionArn"], "CodeSize": l2["Content"]["CodeSize"]}]
    assert lam.get_function(FunctionName="layered")["Configuration"]["Layers"] == r["Layers"]
    out = lam.invoke(FunctionName="layered", Payload=b"{}")
    assert "FunctionError" not in out, out["Payload"].read()
    body = json.loads(out["Payload"].read())
    # Both layers under /opt, the later one on top.
    assert body["a"] == "from layer 1" and body["shared"] == "layer 2"
    assert body["one"] == "1" and body["two"] == "2"
    assert body["tree"] == ["data/one.txt", "data/two.txt", "python/mod_a.py", "python/shared.py"]
    assert body["writable"] is False

    # Listed the other way round, layer 1 wins.
    create(lam, "layered-rev", APP, [l2["LayerVersionArn"], l1["LayerVersionArn"]])
    body = json.loads(lam.invoke(FunctionName="layered-rev", Payload=b"{}")["Payload"].read())
    assert body["shared"] == "layer 1" and body["two"] == "1"

    # A single layer (a bind mount rather than an overlay).
    create(lam, "one-layer", mkzip({"app.py": "def handler(e, c):\n    import mod_a\n    return mod_a.VALUE\n"}),
           [l1["LayerVersionArn"]])
    assert json.loads(lam.invoke(FunctionName="one-layer")["Payload"].read()) == "from layer 1"
    for n in ("layered", "layered-rev", "one-layer"):
        lam.delete_function(FunctionName=n)


def test_deleted_layer_version_keeps_working_for_its_functions(lam):
    l = publish(lam, "doomed", {"python/mod_a.py": "VALUE = 'still here'\n", "python/shared.py": "WHO = 'd'\n",
                                "data/one.txt": "x", "data/two.txt": "y"})
    create(lam, "survivor", APP, [l["LayerVersionArn"]])
    lam.delete_layer_version(LayerName="doomed", VersionNumber=1)
    # The first invoke is a cold start after the delete: the content is still there.
    out = lam.invoke(FunctionName="survivor", Payload=b"{}")
    assert "FunctionError" not in out, out["Payload"].read()
    assert json.loads(out["Payload"].read())["a"] == "still here"
    assert lam.get_function_configuration(FunctionName="survivor")["Layers"][0]["Arn"] == l["LayerVersionArn"]
    # New functions cannot use it any more.
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, "latecomer", APP, [l["LayerVersionArn"]])
    assert error(e)[1] == f"Layer version {l['LayerVersionArn']} does not exist."
    lam.delete_function(FunctionName="survivor")


def test_function_layer_errors(lam):
    a1 = publish(lam, "fe-a")["LayerVersionArn"]
    a2 = publish(lam, "fe-a")["LayerVersionArn"]
    others = [publish(lam, f"fe-{i}")["LayerVersionArn"] for i in range(5)]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, "fe", APP, [a1] + others)
    assert error(e) == ("InvalidParameterValueException", "Cannot reference more than 5 layers.", 400)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, "fe", APP, [a1, a2])
    assert error(e)[1] == ("Two different versions of the same layer are not allowed to be referenced in the same "
                           f"function. {a1} and {a2} are versions of the same layer.")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, "fe", APP, [a1, a1])
    assert "are versions of the same layer" in error(e)[1]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, "fe", APP, [ARN + "fe-a:9"])
    assert error(e)[1] == f"Layer version {ARN}fe-a:9 does not exist."
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, "fe", APP, ["arn:aws:lambda:us-east-1:123456789012:layer:no-such:1"])
    assert "does not exist" in error(e)[1]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, "fe", APP, ["arn:aws:lambda:eu-west-1:123456789012:layer:fe-a:1"])
    assert error(e)[1] == "Layers are not in the same region as the function. Layers are expected to be in region us-east-1."
    with pytest.raises(lam.exceptions.ClientError) as e:
        create(lam, "fe", APP, [ARN + "fe-a"])
    assert error(e)[0] == "ValidationException" and "at 'layers'" in error(e)[1]
    # Nothing was created by the refused requests; five layers are fine.
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="fe")
    r = create(lam, "fe", APP, others)
    assert [l["Arn"] for l in r["Layers"]] == others
    lam.delete_function(FunctionName="fe")


def test_layer_version_policy(lam):
    publish(lam, "pol")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_layer_version_policy(LayerName="pol", VersionNumber=1)
    assert error(e)[1] == "No policy is associated with the given resource."
    r = lam.add_layer_version_permission(LayerName="pol", VersionNumber=1, StatementId="s1",
                                         Action="lambda:GetLayerVersion", Principal="*")
    assert json.loads(r["Statement"]) == {"Sid": "s1", "Effect": "Allow", "Principal": "*",
                                          "Action": "lambda:GetLayerVersion", "Resource": ARN + "pol:1"}
    rev1 = r["RevisionId"]
    with pytest.raises(lam.exceptions.ResourceConflictException) as e:
        lam.add_layer_version_permission(LayerName="pol", VersionNumber=1, StatementId="s1",
                                         Action="lambda:GetLayerVersion", Principal="*")
    assert "The statement id (s1) provided already exists" in error(e)[1]
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.add_layer_version_permission(LayerName="pol", VersionNumber=1, StatementId="s2",
                                         Action="lambda:GetLayerVersion", Principal="*", RevisionId="nope")
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.add_layer_version_permission(LayerName="pol", VersionNumber=1, StatementId="s2", Action="*", Principal="*")
    assert error(e)[0] == "ValidationException" and "'action'" in error(e)[1]
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.add_layer_version_permission(LayerName="pol", VersionNumber=1, StatementId="s2",
                                         Action="lambda:GetLayerVersion", Principal="someone")
    assert error(e)[0] == "ValidationException"
    r = lam.add_layer_version_permission(LayerName="pol", VersionNumber=1, StatementId="s2",
                                         Action="lambda:GetLayerVersion", Principal="210987654321",
                                         OrganizationId="o-abcdefghij", RevisionId=rev1)
    s2 = json.loads(r["Statement"])
    assert s2["Principal"] == {"AWS": "arn:aws:iam::210987654321:root"}
    assert s2["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}}
    p = lam.get_layer_version_policy(LayerName="pol", VersionNumber=1)
    assert p["RevisionId"] == r["RevisionId"]
    policy = json.loads(p["Policy"])
    assert policy["Version"] == "2012-10-17" and [s["Sid"] for s in policy["Statement"]] == ["s1", "s2"]
    for call in (lambda: lam.get_layer_version_policy(LayerName="pol", VersionNumber=2),
                 lambda: lam.remove_layer_version_permission(LayerName="pol", VersionNumber=2, StatementId="s1"),
                 lambda: lam.add_layer_version_permission(LayerName="pol", VersionNumber=2, StatementId="s1",
                                                          Action="lambda:GetLayerVersion", Principal="*")):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
            call()
        assert error(e)[1] == f"Layer version {ARN}pol:2 does not exist."
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.remove_layer_version_permission(LayerName="pol", VersionNumber=1, StatementId="zz")
    assert error(e)[1] == "Statement zz is not found in resource policy."
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.remove_layer_version_permission(LayerName="pol", VersionNumber=1, StatementId="s1", RevisionId=rev1)
    lam.remove_layer_version_permission(LayerName="pol", VersionNumber=1, StatementId="s1")
    policy = json.loads(lam.get_layer_version_policy(LayerName="pol", VersionNumber=1)["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["s2"]


def test_aws_cli(server, lam, tmp_path):
    z = tmp_path / "layer.zip"
    z.write_bytes(mkzip({"python/cli_mod.py": "X = 1\n"}))
    aws = [os.path.join(os.path.dirname(sys.executable), "aws"),
           "--endpoint-url", server.endpoint, "--region", "us-east-1", "--output", "json"]
    env = server.env()

    def run(*args):
        return subprocess.run(aws + ["lambda", *args], env=env, capture_output=True, text=True)

    out = run("publish-layer-version", "--layer-name", "cli-layer", "--zip-file", f"fileb://{z}",
              "--compatible-runtimes", "python3.11", "python3.12", "--compatible-architectures", "x86_64",
              "--description", "from the CLI", "--license-info", "Apache-2.0")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["LayerVersionArn"] == ARN + "cli-layer:1" and r["Content"]["CodeSize"] == len(z.read_bytes())
    out = run("list-layers", "--compatible-runtime", "python3.12")
    assert out.returncode == 0, out.stderr
    assert [l["LayerName"] for l in json.loads(out.stdout)["Layers"] if l["LayerName"] == "cli-layer"] == ["cli-layer"]
    out = run("list-layer-versions", "--layer-name", "cli-layer")
    assert out.returncode == 0 and json.loads(out.stdout)["LayerVersions"][0]["Description"] == "from the CLI"
    out = run("get-layer-version", "--layer-name", "cli-layer", "--version-number", "1")
    assert out.returncode == 0 and json.loads(out.stdout)["LicenseInfo"] == "Apache-2.0"
    out = run("get-layer-version-by-arn", "--arn", ARN + "cli-layer:1")
    assert out.returncode == 0, out.stderr
    out = run("publish-layer-version", "--layer-name", "cli-layer", "--zip-file", f"fileb://{z}",
              "--compatible-runtimes", "cobol")
    assert out.returncode != 0 and "ValidationException" in out.stderr
    out = run("add-layer-version-permission", "--layer-name", "cli-layer", "--version-number", "1",
              "--statement-id", "everyone", "--action", "lambda:GetLayerVersion", "--principal", "*")
    assert out.returncode == 0, out.stderr
    assert json.loads(json.loads(out.stdout)["Statement"])["Sid"] == "everyone"
    out = run("get-layer-version-policy", "--layer-name", "cli-layer", "--version-number", "1")
    assert out.returncode == 0 and "everyone" in json.loads(out.stdout)["Policy"], out.stderr
    out = run("remove-layer-version-permission", "--layer-name", "cli-layer", "--version-number", "1",
              "--statement-id", "everyone")
    assert out.returncode == 0, out.stderr
    out = run("get-layer-version-policy", "--layer-name", "cli-layer", "--version-number", "1")
    assert out.returncode != 0 and "ResourceNotFoundException" in out.stderr
    out = run("delete-layer-version", "--layer-name", "cli-layer", "--version-number", "1")
    assert out.returncode == 0, out.stderr
    out = run("get-layer-version", "--layer-name", "cli-layer", "--version-number", "1")
    assert out.returncode != 0 and "ResourceNotFoundException" in out.stderr
