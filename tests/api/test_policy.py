"""AddPermission, GetPolicy, RemovePermission through boto3 and the AWS CLI."""
import json
import os
import subprocess
import sys

import botocore.exceptions
import pytest

from test_lambda_api import create, mkzip

APP = mkzip({"app.py": "def handler(e, c):\n    return 1\n"})
ARN = "arn:aws:lambda:us-east-1:123456789012:function:"


def err(excinfo):
    e = excinfo.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


def test_permissions(server, lam):
    create(lam, "pol", APP)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_policy(FunctionName="pol")
    assert err(e)[0] == "ResourceNotFoundException"
    r = lam.add_permission(FunctionName="pol", StatementId="s3-invoke", Action="lambda:InvokeFunction",
                           Principal="s3.amazonaws.com", SourceArn="arn:aws:s3:::my-bucket",
                           SourceAccount="123456789012")
    st = json.loads(r["Statement"])
    assert st == {"Sid": "s3-invoke", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
                  "Action": "lambda:InvokeFunction", "Resource": ARN + "pol",
                  "Condition": {"ArnLike": {"AWS:SourceArn": "arn:aws:s3:::my-bucket"},
                                "StringEquals": {"AWS:SourceAccount": "123456789012"}}}
    lam.add_permission(FunctionName="pol", StatementId="acct", Action="lambda:GetFunction", Principal="210987654321")
    p = lam.get_policy(FunctionName="pol")
    doc = json.loads(p["Policy"])
    assert doc["Version"] == "2012-10-17" and [s["Sid"] for s in doc["Statement"]] == ["s3-invoke", "acct"]
    assert doc["Statement"][1]["Principal"] == {"AWS": "arn:aws:iam::210987654321:root"}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.add_permission(FunctionName="pol", StatementId="acct", Action="lambda:InvokeFunction", Principal="*")
    assert err(e)[0] == "ResourceConflictException" and "already exists" in err(e)[1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.add_permission(FunctionName="pol", StatementId="x", Action="s3:GetObject", Principal="*")
    assert err(e)[0] == "ValidationException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.add_permission(FunctionName="pol", StatementId="x", Action="lambda:InvokeFunction", Principal="*",
                           RevisionId="stale")
    assert err(e)[0] == "PreconditionFailedException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.add_permission(FunctionName="missing", StatementId="x", Action="lambda:InvokeFunction", Principal="*")
    assert err(e)[0] == "ResourceNotFoundException"
    # Lambda's 20 KB policy limit.
    for i in (1, 2):
        lam.add_permission(FunctionName="pol", StatementId=f"big{i}", Action="lambda:InvokeFunction", Principal="*",
                           SourceArn="arn:aws:s3:::" + "b" * 9000)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.add_permission(FunctionName="pol", StatementId="big3", Action="lambda:InvokeFunction", Principal="*",
                           SourceArn="arn:aws:s3:::" + "b" * 9000)
    assert err(e)[0] == "PolicyLengthExceededException" and err(e)[2] == 400
    for i in (1, 2):
        lam.remove_permission(FunctionName="pol", StatementId=f"big{i}")
    # Per qualifier: a version has its own policy.
    lam.publish_version(FunctionName="pol")
    lam.add_permission(FunctionName="pol", Qualifier="1", StatementId="v1", Action="lambda:InvokeFunction",
                       Principal="events.amazonaws.com")
    assert [s["Sid"] for s in json.loads(lam.get_policy(FunctionName="pol", Qualifier="1")["Policy"])["Statement"]] == ["v1"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_policy(FunctionName="pol", Qualifier="7")
    assert err(e)[0] == "ResourceNotFoundException"
    rev = lam.get_policy(FunctionName="pol")["RevisionId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.remove_permission(FunctionName="pol", StatementId="acct", RevisionId="stale")
    assert err(e)[0] == "PreconditionFailedException"
    lam.remove_permission(FunctionName="pol", StatementId="acct", RevisionId=rev)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.remove_permission(FunctionName="pol", StatementId="acct")
    assert err(e)[0] == "ResourceNotFoundException" and "acct" in err(e)[1]
    aws = [os.path.join(os.path.dirname(sys.executable), "aws"), "--endpoint-url", server.endpoint, "--output", "json"]
    r = subprocess.run(aws + ["lambda", "add-permission", "--function-name", "pol", "--statement-id", "cli",
                              "--action", "lambda:InvokeFunction", "--principal", "sns.amazonaws.com"],
                       env=server.env(), capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(json.loads(r.stdout)["Statement"])["Sid"] == "cli", r.stderr
    r = subprocess.run(aws + ["lambda", "get-policy", "--function-name", "pol"], env=server.env(), capture_output=True, text=True)
    assert r.returncode == 0 and [s["Sid"] for s in json.loads(json.loads(r.stdout)["Policy"])["Statement"]] == ["s3-invoke", "cli"]
    r = subprocess.run(aws + ["lambda", "remove-permission", "--function-name", "pol", "--statement-id", "nope"],
                       env=server.env(), capture_output=True, text=True)
    assert r.returncode != 0 and "ResourceNotFoundException" in r.stderr
    # The policy goes with its version.
    lam.delete_function(FunctionName="pol", Qualifier="1")
    lam.update_function_configuration(FunctionName="pol", Description="v2")
    assert lam.publish_version(FunctionName="pol")["Version"] == "2"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_policy(FunctionName="pol", Qualifier="2")
    assert err(e)[0] == "ResourceNotFoundException"


def test_recursion_and_runtime_management_config(server, lam):
    create(lam, "settings", APP)
    assert lam.get_function_recursion_config(FunctionName="settings")["RecursiveLoop"] == "Terminate"
    assert lam.put_function_recursion_config(FunctionName="settings", RecursiveLoop="Allow")["RecursiveLoop"] == "Allow"
    assert lam.get_function_recursion_config(FunctionName="settings")["RecursiveLoop"] == "Allow"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_function_recursion_config(FunctionName="missing")
    assert err(e)[0] == "ResourceNotFoundException"
    c = lam.get_runtime_management_config(FunctionName="settings")
    assert c["UpdateRuntimeOn"] == "Auto" and c["FunctionArn"] == ARN + "settings"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.put_runtime_management_config(FunctionName="settings", UpdateRuntimeOn="Manual")
    assert err(e)[0] == "InvalidParameterValueException"
    arn = "arn:aws:lambda:us-east-1::runtime:0123456789abcdef0123456789abcdef"
    r = lam.put_runtime_management_config(FunctionName="settings", UpdateRuntimeOn="Manual", RuntimeVersionArn=arn)
    assert (r["UpdateRuntimeOn"], r["RuntimeVersionArn"]) == ("Manual", arn)
    assert lam.get_runtime_management_config(FunctionName="settings")["RuntimeVersionArn"] == arn
    lam.publish_version(FunctionName="settings")
    c = lam.get_runtime_management_config(FunctionName="settings", Qualifier="1")
    assert c["UpdateRuntimeOn"] == "Auto" and c["FunctionArn"] == ARN + "settings:1"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_runtime_management_config(FunctionName="settings", Qualifier="9")
    assert err(e)[0] == "ResourceNotFoundException"


def test_invoke_async_legacy(server, lam):
    import time
    create(lam, "legacy", mkzip({"app.py": "def handler(e, c):\n    print('LEGACY', e['n'])\n    return 1\n"}))
    r = lam.invoke_async(FunctionName="legacy", InvokeArgs=json.dumps({"n": 42}))
    assert r["Status"] == 202
    root = os.path.join(server.state, "logs/aws/lambda/legacy")
    deadline = time.time() + 30
    while time.time() < deadline:
        found = any("LEGACY 42" in open(os.path.join(d, f)).read() for d, _, fs in os.walk(root) for f in fs)
        if found:
            break
        time.sleep(0.2)
    assert found
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.invoke_async(FunctionName="missing", InvokeArgs=b"{}")
    assert err(e)[0] == "ResourceNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.invoke_async(FunctionName="legacy", InvokeArgs=b"not json")
    assert err(e)[2] == 400
