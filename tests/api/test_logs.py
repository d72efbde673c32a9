"""Log streams, the CloudWatch Logs API subset, `lamina logs`, /metrics and `lamina status`."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import botocore.config
import botocore.exceptions
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import LAMINA
from test_lambda_api import create, mkzip

CHATTY = mkzip({"app.py": """
import sys, time
print("init line")
def handler(event, context):
    print("hello from", context.aws_request_id)
    print("to stderr", file=sys.stderr)
    if event.get("long"):
        print("L" * event["long"])
    if event.get("sleep"):
        sys.stdout.flush()
        print("before sleep", flush=True)
        time.sleep(event["sleep"])
    if event.get("fail"):
        raise RuntimeError("kaput")
    return "ok"
"""})


def logs_client(server):
    keys = dict(l.split(" = ", 1) for l in open(server.credentials).read().splitlines() if " = " in l)
    return boto3.client("logs", endpoint_url=server.endpoint, region_name="us-east-1",
                        config=botocore.config.Config(retries={"max_attempts": 1}),
                        aws_access_key_id=keys["aws_access_key_id"], aws_secret_access_key=keys["aws_secret_access_key"])


def aws(server, *args):
    cmd = [os.path.join(os.path.dirname(sys.executable), "aws"), "--endpoint-url", server.endpoint, "--output", "json", *args]
    return subprocess.run(cmd, env=server.env(), capture_output=True, text=True)


def messages(events):
    return [e["message"] for e in events]


def test_log_groups_streams_events(server, lam):
    logs = logs_client(server)
    create(lam, "chatty", CHATTY)
    r = lam.invoke(FunctionName="chatty", Payload=b"{}")
    rid = r["ResponseMetadata"]["RequestId"]
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/chatty")["logGroups"]
    assert [g["logGroupName"] for g in groups] == ["/aws/lambda/chatty"]
    assert groups[0]["arn"].startswith("arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/chatty")
    streams = logs.describe_log_streams(logGroupName="/aws/lambda/chatty")["logStreams"]
    assert len(streams) == 1 and "[$LATEST]" in streams[0]["logStreamName"]
    ev = logs.get_log_events(logGroupName="/aws/lambda/chatty", logStreamName=streams[0]["logStreamName"],
                             startFromHead=True)["events"]
    text = messages(ev)
    assert text[0].startswith("INIT_START Runtime Version: python:3.11")
    assert "init line\n" in text
    assert f"START RequestId: {rid} Version: $LATEST\n" in text
    assert any(m.startswith(f"hello from {rid}") for m in text)
    assert "to stderr\n" in text
    assert f"END RequestId: {rid}\n" in text
    assert any(m.startswith(f"REPORT RequestId: {rid}\tDuration:") and "Init Duration" in m for m in text)
    assert all(e["timestamp"] > 1_700_000_000_000 for e in ev)
    # Paging forward with tokens.
    page = logs.get_log_events(logGroupName="/aws/lambda/chatty", logStreamName=streams[0]["logStreamName"],
                               startFromHead=True, limit=2)
    nxt = logs.get_log_events(logGroupName="/aws/lambda/chatty", logStreamName=streams[0]["logStreamName"],
                              nextToken=page["nextForwardToken"], limit=2)
    assert messages(page["events"]) + messages(nxt["events"]) == text[:4]
    # Filtering across streams.
    lam.update_function_configuration(FunctionName="chatty", Description="new env")
    lam.invoke(FunctionName="chatty", Payload=json.dumps({"fail": True}))
    f = logs.filter_log_events(logGroupName="/aws/lambda/chatty", filterPattern='"START RequestId"')["events"]
    assert len(f) == 2 and all(e["logStreamName"] and e["eventId"] for e in f)
    f = logs.filter_log_events(logGroupName="/aws/lambda/chatty", filterPattern='"kaput"')["events"]
    assert f and all("kaput" in e["message"] for e in f)
    f = logs.filter_log_events(logGroupName="/aws/lambda/chatty", filterPattern="?END ?REPORT -Init")["events"]
    assert f and all(("END" in e["message"] or "REPORT" in e["message"]) and "Init" not in e["message"] for e in f)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        logs.describe_log_streams(logGroupName="/aws/lambda/missing")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        logs.get_log_events(logGroupName="/aws/lambda/chatty", logStreamName="no/such/stream")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        logs.filter_log_events(logGroupName="/aws/lambda/chatty", filterPattern="{ $.x = 1 }")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    logs.put_retention_policy(logGroupName="/aws/lambda/chatty", retentionInDays=7)
    assert logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/chatty")["logGroups"][0]["retentionInDays"] == 7
    with pytest.raises(botocore.exceptions.ClientError) as e:
        logs.put_retention_policy(logGroupName="/aws/lambda/chatty", retentionInDays=8)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    logs.delete_retention_policy(logGroupName="/aws/lambda/chatty")
    assert "retentionInDays" not in logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/chatty")["logGroups"][0]
    # The AWS CLI.
    r = aws(server, "logs", "filter-log-events", "--log-group-name", "/aws/lambda/chatty", "--filter-pattern", "REPORT")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["events"]) == 2
    r = aws(server, "logs", "describe-log-streams", "--log-group-name", "/aws/lambda/chatty")
    assert r.returncode == 0 and len(json.loads(r.stdout)["logStreams"]) == 2, r.stderr
    r = aws(server, "logs", "get-log-events", "--log-group-name", "/aws/lambda/chatty",
            "--log-stream-name", streams[0]["logStreamName"], "--start-from-head")
    assert r.returncode == 0 and json.loads(r.stdout)["events"], r.stderr


def test_output_is_streamed_and_long_lines_split(server, lam):
    logs = logs_client(server)
    create(lam, "streamer", CHATTY, Timeout=10)
    t = threading.Thread(target=lambda: server.client().invoke(FunctionName="streamer", Payload=json.dumps({"sleep": 3})))
    t.start()
    deadline = time.time() + 2.5
    seen = False
    while time.time() < deadline and not seen:
        try:
            seen = bool(logs.filter_log_events(logGroupName="/aws/lambda/streamer", filterPattern='"before sleep"')["events"])
        except botocore.exceptions.ClientError:
            pass
        time.sleep(0.1)
    t.join()
    assert seen, "a line printed mid-invocation was not visible before the invocation ended"
    lam.invoke(FunctionName="streamer", Payload=json.dumps({"long": 600_000}))
    f = logs.filter_log_events(logGroupName="/aws/lambda/streamer", filterPattern="LLLLLLLLLL")["events"]
    sizes = [len(e["message"].encode()) for e in f]
    assert len(f) == 3 and max(sizes) <= 262_144 - 26 and sum(sizes) == 600_000 + len(f), sizes


def test_lamina_logs_command(server, lam):
    create(lam, "tailme", CHATTY)
    lam.invoke(FunctionName="tailme", Payload=b"{}")
    base = [LAMINA, "logs", "--state-dir", server.state]
    out = subprocess.run(base + ["tailme"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "START RequestId" in out.stdout and "hello from" in out.stdout, out.stderr
    out = subprocess.run(base + ["tailme", "--filter", "REPORT"], capture_output=True, text=True, timeout=30)
    lines = out.stdout.strip().splitlines()
    assert lines and all("REPORT" in l for l in lines)
    out = subprocess.run(base + ["nosuch"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "no log group" in out.stderr
    out = subprocess.run(base + ["tailme", "--since", "5y"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    follow = subprocess.Popen(base + ["tailme", "--follow", "--since", "1s"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        r = lam.invoke(FunctionName="tailme", Payload=b"{}")
        rid = r["ResponseMetadata"]["RequestId"]
        got = []
        deadline = time.time() + 10
        while time.time() < deadline:
            line = follow.stdout.readline()
            got.append(line)
            if f"END RequestId: {rid}" in line:
                break
        assert any(f"START RequestId: {rid}" in l for l in got), got
    finally:
        os.kill(follow.pid, signal.SIGTERM)
        follow.wait(10)


def test_metrics_and_status(server, lam):
    create(lam, "metered", CHATTY)
    for _ in range(3):
        lam.invoke(FunctionName="metered", Payload=b"{}")
    lam.invoke(FunctionName="metered", Payload=json.dumps({"fail": True}))
    text = urllib.request.urlopen(server.endpoint + "/metrics", timeout=10).read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    def sample(fam, suffix="", **labels):
        for s in fams[fam].samples:
            if s.name == fam + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        return None
    assert sample("lamina_invocations", "_total", function="metered", version="$LATEST") == 4
    assert sample("lamina_errors", "_total", function="metered", version="$LATEST") == 1
    assert sample("lamina_cold_starts", "_total", function="metered", version="$LATEST") == 1
    assert sample("lamina_duration_seconds", "_count", function="metered", version="$LATEST") == 4
    assert sample("lamina_init_duration_seconds", "_count", function="metered", version="$LATEST") == 1
    assert sample("lamina_max_memory_used_bytes", function="metered", version="$LATEST") > 1 << 20
    assert sample("lamina_envs", state="frozen") >= 1
    assert sample("lamina_memory_budget_bytes") > 0 and sample("lamina_memory_committed_bytes") >= 128 << 20
    assert "lamina_env_start_failures" in fams and "lamina_throttles" in fams
    # Async queue depth and age, while events wait or run.
    create(lam, "queued", CHATTY, Timeout=10)
    for _ in range(2):
        lam.invoke(FunctionName="queued", InvocationType="Event", Payload=json.dumps({"sleep": 2}))
    text = urllib.request.urlopen(server.endpoint + "/metrics", timeout=10).read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert sample("lamina_async_queue_depth", function="queued", version="$LATEST") >= 1
    assert sample("lamina_async_oldest_event_age_seconds", function="queued", version="$LATEST") >= 0
    port = server.endpoint.rsplit(":", 1)[1]
    out = subprocess.run([LAMINA, "status", "--state-dir", server.state, "--listen", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "metered" in out.stdout and "frozen" in out.stdout and "MiB" in out.stdout
    assert "metered:$LATEST" in out.stdout and "RuntimeError" in out.stdout
