#!/usr/bin/env python3
"""Generate SigV4 test vectors for src/sigv4.rs with botocore.

Every vector is a request captured *on the wire*: the script runs a tiny HTTP/1.1 server on
127.0.0.1:9001 that records the raw request line, the header lines (names as sent, values with the
surrounding optional whitespace removed, as an HTTP server hands them over), and the body. Two
kinds of requests are sent to it:

* real boto3 clients (service ``lambda`` and ``logs``) making real API calls; a ``before-send``
  hook records botocore's prepared request, and the script checks that it agrees with the wire;
* hand-built ``AWSRequest``s signed with ``SigV4Auth`` to reach the corners (header whitespace,
  repeated headers, dot segments, ``UNSIGNED-PAYLOAD``, a signed ``X-Amz-Content-SHA256``, the
  ``Date`` header, a query key without ``=``, ``+`` for a space, ...), sent with botocore's own
  urllib3 session.

botocore's clock is frozen (``botocore.auth.get_current_datetime``) so the signatures are
reproducible; only unsigned headers (User-Agent, amz-sdk-invocation-id) change between runs.
For each vector the canonical request and string to sign botocore computed are recorded too.

Usage: python tests/gen_vectors.py [out.json]   (default: tests/vectors.json next to this file)
Needs: pip install botocore boto3
"""

import base64
import datetime
import http.client
import io
import json
import os
import socket
import sys
import threading
import zipfile
from urllib.parse import urlsplit

import boto3
import botocore
import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.httpsession import URLLib3Session

HOST, PORT = "127.0.0.1", 9001
ENDPOINT = f"http://{HOST}:{PORT}"
AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"
NOW = datetime.datetime(2026, 11, 27, 15, 35, 38)  # naive UTC, as botocore uses it
NOW_UNIX = int(NOW.replace(tzinfo=datetime.timezone.utc).timestamp())

# -- frozen clock and capture of botocore's intermediate strings ---------------------------------

botocore.auth.get_current_datetime = lambda *a, **k: NOW

_signer_log = []
_orig_cr = SigV4Auth.canonical_request
_orig_sts = SigV4Auth.string_to_sign


def _cr(self, request):
    out = _orig_cr(self, request)
    _signer_log.append(("canonical_request", out))
    return out


def _sts(self, request, canonical_request):
    out = _orig_sts(self, request, canonical_request)
    _signer_log.append(("string_to_sign", out))
    return out


SigV4Auth.canonical_request = _cr
SigV4Auth.string_to_sign = _sts

# -- the wire capture server ---------------------------------------------------------------------

_wire = []


def _read_request(conn):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    method, target, _version = lines[0].split(b" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    length = 0
    for name, value in headers:
        if name.lower() == "content-length":
            length = int(value)
        if name.lower() == "transfer-encoding":
            raise RuntimeError("chunked request bodies are not expected")
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    path, _, query = target.decode("latin-1").partition("?")
    return {
        "method": method.decode("latin-1"),
        "path": path,
        "query": query,
        "headers": headers,
        "body": rest[:length],
    }


def _serve(sock):
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            req = _read_request(conn)
            if req is None:
                continue
            _wire.append(req)
            target = next((v for n, v in req["headers"] if n.lower() == "x-amz-target"), None)
            ctype = "application/x-amz-json-1.1" if target else "application/json"
            body = b"{}"
            conn.sendall(
                b"HTTP/1.1 200 OK\r\n"
                + f"Content-Type: {ctype}\r\n".encode()
                + f"Content-Length: {len(body)}\r\n".encode()
                + b"x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\n"
                + b"Connection: close\r\n\r\n"
                + body
            )


def start_server():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, PORT))
    sock.listen(16)
    threading.Thread(target=_serve, args=(sock,), daemon=True).start()
    return sock


# -- vector bookkeeping --------------------------------------------------------------------------

vectors = []


def header(headers, name):
    vals = [v for n, v in headers if n.lower() == name.lower()]
    return vals[0] if vals else None


def record(name, description, region, service, akid=AKID, secret=SECRET, prepared=None):
    """Turn the last wire capture and signer log into a vector."""
    assert len(_wire) == 1, f"{name}: expected one request on the wire, saw {len(_wire)}"
    w = _wire.pop()
    crs = [v for k, v in _signer_log if k == "canonical_request"]
    stss = [v for k, v in _signer_log if k == "string_to_sign"]
    assert len(crs) == 1 and len(stss) == 1, f"{name}: signer ran {len(crs)} times"
    _signer_log.clear()
    auth = header(w["headers"], "Authorization")
    assert auth and auth.startswith("AWS4-HMAC-SHA256 "), f"{name}: no SigV4 Authorization"
    if prepared is not None:
        # The prepared request botocore handed to urllib3 must be what went on the wire.
        pauth = prepared.headers["Authorization"]
        if isinstance(pauth, bytes):
            pauth = pauth.decode("latin-1")
        assert pauth == auth, (name, pauth, auth)
        assert prepared.url.endswith(w["path"] + ("?" + w["query"] if w["query"] else "")), (w["path"],
            name,
            prepared.url,
        )
        body = prepared.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        if hasattr(body, "read"):
            body = w["body"]
        assert body == w["body"], name
    vectors.append(
        {
            "name": name,
            "description": description,
            "method": w["method"],
            "path": w["path"],
            "query": w["query"],
            "headers": [[n, v] for n, v in w["headers"]],
            "body_b64": base64.b64encode(w["body"]).decode(),
            "access_key_id": akid,
            "secret_access_key": secret,
            "region": region,
            "service": service,
            "now": NOW_UNIX,
            "authorization": auth,
            "botocore_canonical_request": crs[0],
            "botocore_string_to_sign": stss[0],
        }
    )


# -- real boto3 clients --------------------------------------------------------------------------


def client(service, token=None):
    session = boto3.session.Session(
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
        aws_session_token=token,
        region_name=REGION,
    )
    c = session.client(
        service,
        endpoint_url=ENDPOINT,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    holder = {}

    def before_send(request, **kwargs):
        holder["prepared"] = request
        return None  # let it go to the wire capture server

    c.meta.events.register("before-send", before_send)
    return c, holder


def boto_vectors():
    fn_arn = "arn:aws:lambda:us-east-1:123456789012:function:my-fn"

    c, h = client("lambda")
    c.invoke(FunctionName=fn_arn, Qualifier="$LATEST", Payload=b'{"x": 1}')
    record("boto3_invoke_arn_qualifier", "Invoke, full ARN as FunctionName, ?Qualifier=$LATEST",
           REGION, "lambda", prepared=h["prepared"])

    client_context = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    c.invoke(FunctionName="my-fn", ClientContext=client_context, LogType="Tail",
             InvocationType="RequestResponse", Payload=b"{}")
    record("boto3_invoke_client_context_tail", "Invoke with ClientContext and LogType=Tail",
           REGION, "lambda", prepared=h["prepared"])

    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr(zipfile.ZipInfo("handler.py", (2020, 1, 1, 0, 0, 0)),
                   "def handler(event, context):\n    return event\n")
    c.create_function(
        FunctionName="my-fn",
        Runtime="python3.12",
        Role="arn:aws:iam::123456789012:role/lambda-role",
        Handler="handler.handler",
        Code={"ZipFile": zbuf.getvalue()},
        Description="caf\u00e9 \u2713",
        Environment={"Variables": {"A": "1"}},
        Tags={"team": "platform"},
    )
    record("boto3_create_function_zip", "CreateFunction, ZIP as base64 in a JSON body",
           REGION, "lambda", prepared=h["prepared"])

    c.list_functions(MaxItems=5)
    record("boto3_list_functions_max_items", "ListFunctions with MaxItems (GET, empty body)",
           REGION, "lambda", prepared=h["prepared"])

    c.get_layer_version_by_arn(Arn="arn:aws:lambda:us-east-1:123456789012:layer:my-layer:3")
    record("boto3_get_layer_version_by_arn", "GetLayerVersionByArn: ?find=LayerVersion&Arn=...",
           REGION, "lambda", prepared=h["prepared"])

    c.list_provisioned_concurrency_configs(FunctionName="my-fn", MaxItems=5)
    record("boto3_list_provisioned_concurrency", "ListProvisionedConcurrencyConfigs: ?List=ALL",
           REGION, "lambda", prepared=h["prepared"])

    c.untag_resource(Resource=fn_arn, TagKeys=["team", "cost center", "a~b/c"])
    record("boto3_untag_resource_repeated_keys",
           "UntagResource: repeated tagKeys, one with a space, one with ~ and /",
           REGION, "lambda", prepared=h["prepared"])

    c.invoke(FunctionName="my-fn", Payload='{"msg": "h\u00e9llo \u2713 \U0001F680"}'.encode())
    record("boto3_invoke_unicode_body", "Invoke with raw UTF-8 (multi-byte) in the body",
           REGION, "lambda", prepared=h["prepared"])

    c.delete_function(FunctionName="my-fn", Qualifier="7")
    record("boto3_delete_function", "DeleteFunction: DELETE with a query and no body",
           REGION, "lambda", prepared=h["prepared"])

    ct, ht = client("lambda", token="FQoGZXIvYXdzEXAMPLE//////////wEaDEXAMPLETOKEN+/=")
    ct.invoke(FunctionName=fn_arn, Qualifier="prod", Payload=b'{"x":1}')
    record("boto3_invoke_session_token", "Invoke with session credentials (X-Amz-Security-Token)",
           REGION, "lambda", prepared=ht["prepared"])

    ceu = boto3.session.Session(aws_access_key_id=AKID, aws_secret_access_key=SECRET,
                                region_name="eu-west-3").client(
        "lambda", endpoint_url=ENDPOINT, config=Config(retries={"max_attempts": 1}))
    ceu.get_function(FunctionName="my-fn")
    record("boto3_get_function_eu_west_3", "GetFunction signed for region eu-west-3",
           "eu-west-3", "lambda")

    cl, hl = client("logs")
    cl.put_log_events(
        logGroupName="/aws/lambda/my-fn",
        logStreamName="2026/11/27/[$LATEST]0123456789abcdef",
        logEvents=[{"timestamp": NOW_UNIX * 1000, "message": "START RequestId: 1 Version: $LATEST"}],
    )
    record("boto3_logs_put_log_events", "CloudWatch Logs (JSON 1.1, X-Amz-Target), service logs",
           REGION, "logs", prepared=hl["prepared"])

    cl.filter_log_events(logGroupName="/aws/lambda/my-fn", limit=10)
    record("boto3_logs_filter_log_events", "CloudWatch Logs FilterLogEvents", REGION, "logs",
           prepared=hl["prepared"])


# -- hand-built requests signed with SigV4Auth ---------------------------------------------------

_http = URLLib3Session()


def signed(name, description, method, url, headers=(), body=b"", params=None, service="lambda",
           region=REGION, token=None, context=None, via_http_client=False):
    req = AWSRequest(method=method, url=url, data=body, params=params)
    for n, v in headers:
        req.headers[n] = v  # HTTPHeaders: assigning twice keeps both (repeated header)
    if context:
        req.context.update(context)
    SigV4Auth(Credentials(AKID, SECRET, token), service, region).add_auth(req)
    if not via_http_client:
        prepared = req.prepare()
        _http.send(prepared)
        record(name, description, region, service, prepared=prepared)
        return
    # botocore's prepare() folds the request headers into a dict, so a header that was signed
    # twice is *sent* once (the last value wins) and the signature can never verify. To put a
    # repeated header on the wire as signed, write the request with http.client ourselves.
    parts = urlsplit(req.url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    conn = http.client.HTTPConnection(HOST, PORT)
    conn.putrequest(method, target, skip_accept_encoding=True)
    for n, v in req.headers.items():
        conn.putheader(n, v)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    conn.getresponse().read()
    conn.close()
    record(name, description, region, service)


def sigv4auth_vectors():
    base = ENDPOINT
    signed("raw_get_root", "GET / with no query and an empty body", "GET", base + "/")
    signed(
        "raw_header_whitespace_and_repeats",
        "header value with internal space/tab runs and surrounding spaces; a header sent twice; "
        "mixed-case header names. Written with http.client: botocore's prepare() would send only "
        "the last value of the repeated header although it signed both",
        "POST",
        base + "/2015-03-31/functions/my-fn/invocations",
        headers=[
            ("X-Amz-Meta-Spaces", "  a   b \t\t c   d  "),
            ("x-AMZ-meta-Repeat", "first  value"),
            ("X-Amz-Meta-Repeat", " second"),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        body=b'{"k":"v"}',
        via_http_client=True,
    )
    signed(
        "raw_path_dot_segments",
        "path with ./, ../ and // that botocore normalises before signing",
        "GET",
        base + "/2015-03-31/./functions//my-fn/../other-fn/configuration/",
    )
    signed(
        "raw_path_reserved_chars",
        "path with %3A, %2F, %24, %20, %25, ~ and unreserved punctuation",
        "GET",
        base + "/2015-03-31/functions/a%3Ab%2Fc%24d%20e%25f~g-h_i.j/policy",
    )
    signed(
        "raw_query_key_without_equals",
        "raw query string (not params): a key without '=', an empty value, repeated key, "
        "unsorted",
        "GET",
        base + "/2018-10-31/layers?zeta=1&acl&empty=&List=ALL&List=ALL&Marker=abc%2Fdef%3D%3D",
    )
    signed(
        "raw_query_params_plus_for_space",
        "AWSRequest params: urllib's urlencode puts '+' for a space on the wire, while botocore "
        "signs %20, so a verifier must decode '+' in the query as a space",
        "GET",
        base + "/2015-03-31/functions/",
        params=[("FunctionVersion", "ALL"), ("Marker", "a b+c/d~e"), ("MaxItems", "10")],
    )
    signed(
        "raw_unsigned_payload",
        "payload signing disabled: X-Amz-Content-SHA256: UNSIGNED-PAYLOAD is added and signed",
        "PUT",
        base + "/2015-03-31/functions/my-fn/code",
        headers=[("Content-Type", "application/json")],
        body=b'{"ZipFile":"UEsDBA=="}',
        context={"payload_signing_enabled": False},
    )
    body = b'{"Payload":"signed with an explicit content hash"}'
    import hashlib

    signed(
        "raw_content_sha256_header",
        "explicit X-Amz-Content-SHA256 (hex) header: botocore uses it as the payload hash",
        "POST",
        base + "/2015-03-31/functions/my-fn/invocations",
        headers=[("X-Amz-Content-SHA256", hashlib.sha256(body).hexdigest())],
        body=body,
    )
    signed(
        "raw_date_header",
        "a Date header present before signing: botocore rewrites it (RFC 2822, -0000) and sends "
        "no X-Amz-Date; the string to sign still uses the ISO basic timestamp",
        "GET",
        base + "/2015-03-31/functions/my-fn",
        headers=[("Date", "Thu, 01 Jan 1970 00:00:00 GMT")],
    )
    signed(
        "raw_host_header_override",
        "explicit Host header without a port (as behind a proxy on :443)",
        "GET",
        base + "/2015-03-31/functions/my-fn",
        headers=[("Host", "lambda.us-east-1.amazonaws.com")],
    )
    signed(
        "raw_binary_body",
        "binary body with every byte value",
        "POST",
        base + "/2015-03-31/functions/my-fn/invocations",
        body=bytes(range(256)),
    )
    signed(
        "raw_session_token_logs",
        "session token, service logs",
        "POST",
        base + "/",
        headers=[("X-Amz-Target", "Logs_20140328.DescribeLogGroups"),
                 ("Content-Type", "application/x-amz-json-1.1")],
        body=b"{}",
        service="logs",
        token="SESSIONTOKEN",
    )


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                             "vectors.json")
    sock = start_server()
    try:
        boto_vectors()
        sigv4auth_vectors()
    finally:
        sock.close()
    doc = {
        "generator": "tests/gen_vectors.py",
        "botocore_version": botocore.__version__,
        "boto3_version": boto3.__version__,
        "note": "headers are [name, value] as received on the wire (value OWS-trimmed, "
                "latin-1); body is base64; now is the unix time botocore signed at",
        "vectors": vectors,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(vectors)} vectors to {out}")


if __name__ == "__main__":
    main()
