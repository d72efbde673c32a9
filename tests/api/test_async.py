"""Asynchronous invocation (InvocationType Event) and the EventInvokeConfig operations, through
boto3 and the AWS CLI against a real `lamina serve`: the durable queue, retries, the maximum
event age, OnSuccess/OnFailure destination records, restarts after SIGKILL and SIGTERM.

What a function received is read from its log stream under the state dir (each handler prints
one `EVENT {...}` line per run)."""
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile

import botocore.exceptions
import pytest

from conftest import LAMINA, Server

ROLE = "arn:aws:iam::123456789012:role/lambda-role"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:"


def mkzip(files):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o644 << 16
            z.writestr(info, content)
    return b.getvalue()


APP = mkzip({"app.py": """
import json, time

def _log(event, context):
    print("EVENT " + json.dumps({"rid": context.aws_request_id, "arn": context.invoked_function_arn,
                                 "event": event, "t": time.time()}), flush=True)

def record(event, context):
    _log(event, context)
    return {"got": event}

def fail(event, context):
    _log(event, context)
    raise ValueError("boom")

def slow(event, context):
    _log(event, context)
    time.sleep(event.get("sleep", 1) if isinstance(event, dict) else 1)
    return "slept"
"""})


def create(lam, name, handler, **kw):
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler=f"app.{handler}",
                        Code={"ZipFile": APP}, **kw)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})


def runs(state, name):
    """Every `EVENT` line the function `name` logged, in log order per stream."""
    out = []
    root = os.path.join(state, "logs/aws/lambda", name)
    for d, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(d, f), errors="replace") as fh:
                # Lines over CloudWatch's event size arrive as several events: join them back.
                pending = None
                for line in fh:
                    msg = line.split("\t", 1)[1] if "\t" in line else line
                    if pending is None and msg.startswith("EVENT "):
                        pending = msg[len("EVENT "):]
                    elif pending is not None:
                        pending = pending.rstrip("\n") + msg
                    else:
                        continue
                    try:
                        out.append(json.loads(pending))
                        pending = None
                    except json.JSONDecodeError:
                        pass
    return sorted(out, key=lambda r: r["t"])


def wait_for(cond, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def error_of(fn):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn()
    return e.value.response


@pytest.fixture(scope="module")
def srv():
    s = Server(["--async-retry-delay", "1"])
    yield s
    s.stop()
    assert s.proc.returncode == 0, f"lamina serve exited {s.proc.returncode}"


@pytest.fixture(scope="module")
def lam(srv):
    return srv.client()


@pytest.fixture(scope="module")
def loose(srv):
    """A client without botocore's own (minimum-only) parameter checks."""
    return srv.client(parameter_validation=False)


def test_event_invoke_answers_202_and_runs_with_its_request_id(srv, lam):
    create(lam, "ev-echo", "record")
    r = lam.invoke(FunctionName="ev-echo", InvocationType="Event", Payload=json.dumps({"k": "v"}))
    assert r["StatusCode"] == 202
    assert r["Payload"].read() == b""
    rid = r["ResponseMetadata"]["RequestId"]
    got = wait_for(lambda: [x for x in runs(srv.state, "ev-echo") if x["rid"] == rid], what="the event")
    assert got[0]["event"] == {"k": "v"}
    assert got[0]["arn"] == ARN + "ev-echo"
    # By ARN with a qualifier, and an empty payload (delivered as {}).
    r = lam.invoke(FunctionName=ARN + "ev-echo:$LATEST", InvocationType="Event")
    assert r["StatusCode"] == 202
    rid2 = r["ResponseMetadata"]["RequestId"]
    got = wait_for(lambda: [x for x in runs(srv.state, "ev-echo") if x["rid"] == rid2], what="the second event")
    assert got[0]["event"] == {} and got[0]["arn"] == ARN + "ev-echo:$LATEST"
    # A success without destinations is not retried.
    time.sleep(2)
    assert [x["rid"] for x in runs(srv.state, "ev-echo")].count(rid) == 1


def test_event_invoke_errors_and_dry_run(srv, lam):
    create(lam, "ev-errs", "record")
    e = error_of(lambda: lam.invoke(FunctionName="ev-missing", InvocationType="Event", Payload=b"{}"))
    assert e["Error"]["Code"] == "ResourceNotFoundException"
    assert e["ResponseMetadata"]["HTTPStatusCode"] == 404
    e = error_of(lambda: lam.invoke(FunctionName="ev-errs", Qualifier="7", InvocationType="Event"))
    assert e["Error"]["Code"] == "ResourceNotFoundException"
    e = error_of(lambda: lam.invoke(FunctionName="ev-errs", InvocationType="Event", Payload=b"{not json"))
    assert e["Error"]["Code"] == "InvalidRequestContentException"
    # Lambda's Event payload limit is 1 MB (the synchronous one is 6 MB).
    too_big = b'"' + b"x" * (1024 * 1024 - 1) + b'"'
    assert len(too_big) == 1024 * 1024 + 1
    e = error_of(lambda: lam.invoke(FunctionName="ev-errs", InvocationType="Event", Payload=too_big))
    assert e["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert e["Error"]["Code"] == "RequestEntityTooLargeException"
    assert e["Error"]["Message"] == \
        "1048577 byte payload is too large for the Event invocation type (limit 1048576 bytes)"
    just_fits = too_big[:-2] + b'"'
    r = lam.invoke(FunctionName="ev-errs", InvocationType="Event", Payload=just_fits)
    assert r["StatusCode"] == 202
    big_rid = r["ResponseMetadata"]["RequestId"]
    # DryRun: checks existence first, runs nothing.
    e = error_of(lambda: lam.invoke(FunctionName="ev-missing", InvocationType="DryRun"))
    assert e["Error"]["Code"] == "ResourceNotFoundException"
    r = lam.invoke(FunctionName="ev-errs", InvocationType="DryRun", Payload=b'{"dry": true}')
    assert r["StatusCode"] == 204
    got = wait_for(lambda: [x for x in runs(srv.state, "ev-errs") if x["rid"] == big_rid], what="the 1 MB event")
    assert len(got[0]["event"]) == 1024 * 1024 - 2
    time.sleep(1)
    assert not [x for x in runs(srv.state, "ev-errs") if x["event"] == {"dry": True}]
    # Nothing of the refused invokes was queued or run.
    assert len(runs(srv.state, "ev-errs")) == 1


def test_retries_then_on_failure_record(srv, lam):
    create(lam, "ev-fail", "fail")
    create(lam, "ev-sink", "record")
    c = lam.put_function_event_invoke_config(
        FunctionName="ev-fail", MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": ARN + "ev-sink"}})
    assert c["MaximumRetryAttempts"] == 1
    r = lam.invoke(FunctionName="ev-fail", InvocationType="Event", Payload=json.dumps({"n": 1}))
    rid = r["ResponseMetadata"]["RequestId"]
    recs = wait_for(lambda: [x for x in runs(srv.state, "ev-sink")
                             if x["event"].get("requestContext", {}).get("requestId") == rid], what="the record")
    rec = recs[0]["event"]
    assert rec["version"] == "1.0"
    assert rec["timestamp"].endswith("Z") and rec["timestamp"][10] == "T"
    assert rec["requestContext"] == {"requestId": rid, "functionArn": ARN + "ev-fail:$LATEST",
                                     "condition": "RetriesExhausted", "approximateInvokeCount": 2}
    assert rec["requestPayload"] == {"n": 1}
    assert rec["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert rec["responsePayload"]["errorType"] == "ValueError"
    assert rec["responsePayload"]["errorMessage"] == "boom"
    # The record is an async invoke of the destination, with its own request id.
    assert recs[0]["rid"] != rid and recs[0]["arn"] == ARN + "ev-sink"
    attempts = [x for x in runs(srv.state, "ev-fail") if x["rid"] == rid]
    assert len(attempts) == 2
    assert attempts[1]["t"] - attempts[0]["t"] >= 0.9, "the retry waits --async-retry-delay"


def test_default_is_two_retries_with_growing_delays(srv, lam):
    create(lam, "ev-fail3", "fail")
    r = lam.invoke(FunctionName="ev-fail3", InvocationType="Event", Payload=b"[1]")
    rid = r["ResponseMetadata"]["RequestId"]
    attempts = wait_for(lambda: (lambda a: a if len(a) >= 3 else None)(
        [x for x in runs(srv.state, "ev-fail3") if x["rid"] == rid]), what="three attempts")
    assert [a["event"] for a in attempts] == [[1], [1], [1]]
    gap1 = attempts[1]["t"] - attempts[0]["t"]
    gap2 = attempts[2]["t"] - attempts[1]["t"]
    assert gap1 >= 0.9 and gap2 >= 1.9, (gap1, gap2)
    time.sleep(4)
    assert len([x for x in runs(srv.state, "ev-fail3") if x["rid"] == rid]) == 3


def test_zero_retries_and_on_success_record(srv, lam):
    create(lam, "ev-once", "fail")
    create(lam, "ev-ok", "record")
    create(lam, "ev-sink2", "record")
    lam.put_function_event_invoke_config(FunctionName="ev-once", MaximumRetryAttempts=0)
    rid = lam.invoke(FunctionName="ev-once", InvocationType="Event")["ResponseMetadata"]["RequestId"]
    wait_for(lambda: [x for x in runs(srv.state, "ev-once") if x["rid"] == rid])
    time.sleep(2.5)
    assert len([x for x in runs(srv.state, "ev-once") if x["rid"] == rid]) == 1

    lam.put_function_event_invoke_config(
        FunctionName="ev-ok", DestinationConfig={"OnSuccess": {"Destination": ARN + "ev-sink2:$LATEST"}})
    rid = lam.invoke(FunctionName="ev-ok", InvocationType="Event",
                     Payload=json.dumps({"hello": "world"}))["ResponseMetadata"]["RequestId"]
    recs = wait_for(lambda: [x for x in runs(srv.state, "ev-sink2")
                             if x["event"].get("requestContext", {}).get("requestId") == rid], what="the record")
    rec = recs[0]["event"]
    assert recs[0]["arn"] == ARN + "ev-sink2:$LATEST"
    assert rec["requestContext"]["condition"] == "Success"
    assert rec["requestContext"]["approximateInvokeCount"] == 1
    assert rec["requestContext"]["functionArn"] == ARN + "ev-ok:$LATEST"
    assert rec["requestPayload"] == {"hello": "world"}
    assert rec["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert rec["responsePayload"] == {"got": {"hello": "world"}}
    # A synchronous invoke does not go to destinations.
    sync = lam.invoke(FunctionName="ev-ok", Payload=b'{"sync": 1}')
    assert json.loads(sync["Payload"].read()) == {"got": {"sync": 1}}
    time.sleep(1.5)
    assert not [x for x in runs(srv.state, "ev-sink2") if x["event"].get("requestPayload") == {"sync": 1}]


def test_event_invoke_config_operations(srv, lam, loose):
    create(lam, "cfg-fn", "record")
    create(lam, "cfg-dest", "record")
    name = "cfg-fn"
    missing = error_of(lambda: lam.get_function_event_invoke_config(FunctionName=name))
    assert missing["Error"]["Code"] == "ResourceNotFoundException"
    assert missing["Error"]["Message"] == f"The function {ARN}{name}:$LATEST doesn't have an EventInvokeConfig"
    assert lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"] == []

    before = time.time()
    put = lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1, MaximumEventAgeInSeconds=3600,
        DestinationConfig={"OnFailure": {"Destination": ARN + "cfg-dest"}})
    assert put["FunctionArn"] == ARN + name + ":$LATEST"
    assert put["MaximumRetryAttempts"] == 1 and put["MaximumEventAgeInSeconds"] == 3600
    assert put["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {"Destination": ARN + "cfg-dest"}}
    assert abs(put["LastModified"].timestamp() - before) < 5
    got = lam.get_function_event_invoke_config(FunctionName=name)
    for k in ("FunctionArn", "MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig", "LastModified"):
        assert got[k] == put[k], k
    # The same config by ARN and by explicit $LATEST.
    assert lam.get_function_event_invoke_config(FunctionName=ARN + name)["FunctionArn"] == put["FunctionArn"]
    assert lam.get_function_event_invoke_config(FunctionName=name, Qualifier="$LATEST")["MaximumRetryAttempts"] == 1

    # Update merges.
    up = lam.update_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=120)
    assert up["MaximumEventAgeInSeconds"] == 120 and up["MaximumRetryAttempts"] == 1
    assert up["DestinationConfig"]["OnFailure"] == {"Destination": ARN + "cfg-dest"}
    up = lam.update_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": ARN + "cfg-dest"}})
    assert up["DestinationConfig"] == {"OnSuccess": {"Destination": ARN + "cfg-dest"}, "OnFailure": {}}
    assert up["MaximumRetryAttempts"] == 1
    # Put replaces: what it leaves out is gone.
    put = lam.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=60)
    assert "MaximumRetryAttempts" not in put and put["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    assert "MaximumRetryAttempts" not in lam.get_function_event_invoke_config(FunctionName=name)

    listed = lam.list_function_event_invoke_configs(FunctionName=name, MaxItems=1)
    assert [c["FunctionArn"] for c in listed["FunctionEventInvokeConfigs"]] == [ARN + name + ":$LATEST"]
    assert "NextMarker" not in listed
    pages = lam.get_paginator("list_function_event_invoke_configs").paginate(FunctionName=name)
    assert sum(len(p["FunctionEventInvokeConfigs"]) for p in pages) == 1

    # Errors.
    def code(fn, expect_status=400):
        e = error_of(fn)
        assert e["ResponseMetadata"]["HTTPStatusCode"] == expect_status, e
        return e["Error"]["Code"], e["Error"]["Message"]

    c, m = code(lambda: loose.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=3))
    assert c == "ValidationException" and "maximumRetryAttempts" in m and "less than or equal to 2" in m
    c, m = code(lambda: loose.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=-1))
    assert c == "ValidationException" and "greater than or equal to 0" in m
    c, m = code(lambda: loose.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=59))
    assert c == "ValidationException" and "maximumEventAgeInSeconds" in m
    c, m = code(lambda: loose.update_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=21601))
    assert c == "ValidationException"
    c, m = code(lambda: lam.put_function_event_invoke_config(FunctionName=name))
    assert c == "InvalidParameterValueException" and "at least one" in m
    c, m = code(lambda: lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:123456789012:q"}}))
    assert c == "InvalidParameterValueException" and "only to lamina functions" in m
    c, m = code(lambda: lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": "arn:aws:sns:us-east-1:123456789012:t"}}))
    assert c == "InvalidParameterValueException"
    c, m = code(lambda: lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnFailure": {"Destination": "not-an-arn"}}))
    assert c == "ValidationException" and "destinationConfig.onFailure.destination" in m
    c, m = code(lambda: lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnFailure": {"Destination": ARN + "no-such-fn"}}))
    assert (c, m) == ("InvalidParameterValueException", f"The destination ARN {ARN}no-such-fn is invalid.")
    c, m = code(lambda: lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnFailure": {"Destination": ARN + name}}))
    assert c == "InvalidParameterValueException" and "destination for itself" in m
    c, _ = code(lambda: lam.put_function_event_invoke_config(FunctionName="no-such-fn", MaximumRetryAttempts=1), 404)
    assert c == "ResourceNotFoundException"
    c, _ = code(lambda: lam.put_function_event_invoke_config(FunctionName=name, Qualifier="7", MaximumRetryAttempts=1), 404)
    assert c == "ResourceNotFoundException"
    c, _ = code(lambda: lam.list_function_event_invoke_configs(FunctionName="no-such-fn"), 404)
    assert c == "ResourceNotFoundException"
    c, m = code(lambda: loose.list_function_event_invoke_configs(FunctionName=name, MaxItems=51))
    assert c == "ValidationException" and "maxItems" in m
    c, _ = code(lambda: lam.get_function_event_invoke_config(FunctionName="no such"))
    assert c == "ValidationException"
    # The failed calls changed nothing.
    got = lam.get_function_event_invoke_config(FunctionName=name)
    assert got["MaximumEventAgeInSeconds"] == 60 and "MaximumRetryAttempts" not in got

    lam.delete_function_event_invoke_config(FunctionName=name)
    c, _ = code(lambda: lam.delete_function_event_invoke_config(FunctionName=name), 404)
    assert c == "ResourceNotFoundException"
    c, _ = code(lambda: lam.get_function_event_invoke_config(FunctionName=name), 404)
    assert c == "ResourceNotFoundException"
    c, _ = code(lambda: lam.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0), 404)
    assert c == "ResourceNotFoundException"


def test_deleting_a_function_drops_its_configs_and_queued_events(srv, lam):
    create(lam, "ev-gone", "slow")
    lam.put_function_event_invoke_config(FunctionName="ev-gone", MaximumRetryAttempts=0)
    # Occupy every worker with long events, so that the later ones wait in the queue.
    rids = [lam.invoke(FunctionName="ev-gone", InvocationType="Event", Payload=json.dumps({"sleep": 3, "i": i}))
            ["ResponseMetadata"]["RequestId"] for i in range(8)]
    wait_for(lambda: len(runs(srv.state, "ev-gone")) >= 4, what="the first four runs")
    db = sqlite3.connect(f"file:{os.path.join(srv.state, 'lamina.db')}?mode=ro", uri=True)
    queued = db.execute("SELECT count(*) FROM async_events WHERE function = 'ev-gone'").fetchone()[0]
    assert queued >= 4, queued
    lam.delete_function(FunctionName="ev-gone")
    assert db.execute("SELECT count(*) FROM async_events WHERE function = 'ev-gone'").fetchone()[0] == 0
    db.close()
    create(lam, "ev-gone", "record")
    e = error_of(lambda: lam.get_function_event_invoke_config(FunctionName="ev-gone"))
    assert e["Error"]["Code"] == "ResourceNotFoundException"
    started = {x["rid"] for x in runs(srv.state, "ev-gone")}
    time.sleep(5)
    # The new function with the same name never gets the old function's queued events.
    later = [x for x in runs(srv.state, "ev-gone") if x["rid"] not in started]
    assert not [x for x in later if x["rid"] in rids], later


def test_aws_cli(srv, lam, tmp_path):
    create(lam, "cli-async", "record")
    aws = [os.path.join(os.path.dirname(sys.executable), "aws"),
           "--endpoint-url", srv.endpoint, "--region", "us-east-1", "--output", "json"]
    env = srv.env()

    def run(*args):
        return subprocess.run(aws + ["lambda", *args], env=env, capture_output=True, text=True)

    out = run("put-function-event-invoke-config", "--function-name", "cli-async",
              "--maximum-retry-attempts", "0", "--maximum-event-age-in-seconds", "300")
    assert out.returncode == 0, out.stderr
    c = json.loads(out.stdout)
    assert c["MaximumRetryAttempts"] == 0 and c["FunctionArn"] == ARN + "cli-async:$LATEST"
    out = run("get-function-event-invoke-config", "--function-name", "cli-async")
    assert out.returncode == 0 and json.loads(out.stdout)["MaximumEventAgeInSeconds"] == 300, out.stderr
    out = run("list-function-event-invoke-configs", "--function-name", "cli-async")
    assert out.returncode == 0 and len(json.loads(out.stdout)["FunctionEventInvokeConfigs"]) == 1, out.stderr
    out = run("update-function-event-invoke-config", "--function-name", "cli-async",
              "--maximum-retry-attempts", "5")
    assert out.returncode != 0 and "ValidationException" in out.stderr
    out = run("put-function-event-invoke-config", "--function-name", "cli-async",
              "--destination-config", '{"OnFailure":{"Destination":"arn:aws:sqs:us-east-1:123456789012:q"}}')
    assert out.returncode != 0 and "InvalidParameterValueException" in out.stderr

    resp = tmp_path / "out.json"
    out = run("invoke", "--function-name", "cli-async", "--invocation-type", "Event",
              "--payload", '{"from": "cli"}', str(resp))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["StatusCode"] == 202
    assert resp.read_bytes() == b""
    wait_for(lambda: [x for x in runs(srv.state, "cli-async") if x["event"] == {"from": "cli"}], what="the CLI event")
    out = run("invoke", "--function-name", "cli-missing", "--invocation-type", "Event", str(resp))
    assert out.returncode != 0 and "ResourceNotFoundException" in out.stderr

    out = run("delete-function-event-invoke-config", "--function-name", "cli-async")
    assert out.returncode == 0, out.stderr
    out = run("get-function-event-invoke-config", "--function-name", "cli-async")
    assert out.returncode != 0 and "ResourceNotFoundException" in out.stderr


class RestartableServer(Server):
    """A `lamina serve` that can be killed and started again on the same state dir and port."""

    def __init__(self, extra=()):
        self.extra = list(extra)
        super().__init__(self.extra)

    def start_again(self):
        assert self.proc.poll() is not None
        self.log = open(os.path.join(self.state, "serve.log"), "ab")
        self.proc = subprocess.Popen(
            [LAMINA, "serve", "--listen", f"127.0.0.1:{self.port}", "--state-dir", self.state, "--region", "us-east-1",
             "--account-id", "123456789012", *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        import socket
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert self.proc.poll() is None, open(os.path.join(self.state, "serve.log")).read()
                time.sleep(0.05)
        raise RuntimeError("lamina serve did not restart")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()


def test_events_survive_sigkill_and_sigterm_and_old_events_expire():
    """Accepted events are processed after a SIGKILL (at least once) and after a SIGTERM; a
    pending retry survives the restarts and still ends at MaximumEventAgeInSeconds."""
    srv = RestartableServer(["--async-retry-delay", "100", "--async-workers", "2", "--drain-timeout", "5"])
    try:
        lam = srv.client()
        create(lam, "rs-fail", "fail")
        create(lam, "rs-sink", "record")
        create(lam, "rs-slow", "slow")
        lam.put_function_event_invoke_config(
            FunctionName="rs-fail", MaximumEventAgeInSeconds=60,
            DestinationConfig={"OnFailure": {"Destination": ARN + "rs-sink"}})
        t0 = time.time()
        old = lam.invoke(FunctionName="rs-fail", InvocationType="Event", Payload=b'{"old": 1}')["ResponseMetadata"]["RequestId"]
        wait_for(lambda: [x for x in runs(srv.state, "rs-fail") if x["rid"] == old], what="the first attempt")

        # Phase 1: SIGKILL while events run and wait.
        rids = [lam.invoke(FunctionName="rs-slow", InvocationType="Event", Payload=json.dumps({"sleep": 1, "i": i}))
                ["ResponseMetadata"]["RequestId"] for i in range(8)]
        wait_for(lambda: len(runs(srv.state, "rs-slow")) >= 2, what="events in progress")
        srv.kill9()
        srv.start_again()
        lam = srv.client()
        wait_for(lambda: set(rids) <= {x["rid"] for x in runs(srv.state, "rs-slow")}, timeout=60,
                 what="every event after the SIGKILL")

        # Phase 2: SIGTERM with events queued: the server drains and exits 0; the rest runs after.
        rids2 = [lam.invoke(FunctionName="rs-slow", InvocationType="Event", Payload=json.dumps({"sleep": 1, "j": i}))
                 ["ResponseMetadata"]["RequestId"] for i in range(6)]
        wait_for(lambda: {x["rid"] for x in runs(srv.state, "rs-slow")} & set(rids2), what="phase 2 started")
        stop = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        assert time.time() - stop < 10
        srv.log.close()
        srv.start_again()
        lam = srv.client()
        wait_for(lambda: set(rids2) <= {x["rid"] for x in runs(srv.state, "rs-slow")}, timeout=60,
                 what="every event after the SIGTERM")

        # The old event's retry (due at +100 s) is cut at its maximum age (60 s), after restarts.
        recs = wait_for(lambda: [x for x in runs(srv.state, "rs-sink")
                                 if x["event"].get("requestContext", {}).get("requestId") == old],
                        timeout=max(5, 90 - (time.time() - t0)), what="the EventAgeExceeded record")
        assert recs[0]["t"] - t0 >= 59, recs[0]["t"] - t0
        rec = recs[0]["event"]
        assert rec["requestContext"]["condition"] == "EventAgeExceeded"
        assert rec["requestContext"]["approximateInvokeCount"] == 1
        assert rec["requestPayload"] == {"old": 1}
        assert rec["responseContext"]["functionError"] == "Unhandled"
        assert len([x for x in runs(srv.state, "rs-fail") if x["rid"] == old]) == 1
        db = sqlite3.connect(f"file:{os.path.join(srv.state, 'lamina.db')}?mode=ro", uri=True)
        assert db.execute("SELECT count(*) FROM async_events").fetchone()[0] == 0
        db.close()
    finally:
        srv.stop()


def test_no_acknowledged_event_is_lost_across_random_sigkills():
    """Event invokes arrive continuously; lamina is SIGKILLed at random moments and restarted on
    the same state dir. Every invoke that was answered 202 runs (at least once) in the end."""
    import random
    import threading
    srv = RestartableServer(["--async-retry-delay", "1", "--async-workers", "2"])
    try:
        create(srv.client(), "chaos", "record")
        acked = []
        for rnd in range(3):
            lam = srv.client()
            stop = threading.Event()

            def invoker():
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        r = lam.invoke(FunctionName="chaos", InvocationType="Event",
                                       Payload=json.dumps({"round": rnd, "i": i}))
                    except Exception:  # the server died under this request: not acknowledged
                        continue
                    assert r["StatusCode"] == 202
                    acked.append(r["ResponseMetadata"]["RequestId"])

            threads = [threading.Thread(target=invoker) for _ in range(2)]
            for t in threads:
                t.start()
            time.sleep(random.uniform(0.5, 2.5))
            srv.kill9()
            stop.set()
            for t in threads:
                t.join(30)
            srv.start_again()
        assert len(acked) > 20, len(acked)
        wait_for(lambda: set(acked) <= {x["rid"] for x in runs(srv.state, "chaos")}, timeout=120,
                 what=f"all {len(acked)} acknowledged events")
        print(f"{len(acked)} acknowledged events, {len(runs(srv.state, 'chaos'))} runs")

        def queued():
            db = sqlite3.connect(f"file:{os.path.join(srv.state, 'lamina.db')}?mode=ro", uri=True)
            try:
                return db.execute("SELECT count(*) FROM async_events").fetchone()[0]
            finally:
                db.close()
        wait_for(lambda: queued() == 0, what="an empty queue")
    finally:
        srv.stop()
