"""Client of the Runtime API (2018-06-01) over one keep-alive HTTP/1.1 connection.

Like aws-lambda-cpp (which awslambdaric uses): connect timeout 1 s, no read
timeout (the env may be frozen while /next blocks), fixed Content-Length bodies,
any 2xx is success except /init/error which must answer 202; a failed /next,
/response or /error logs aws-lambda-cpp's "[ERROR] [<ms>] LAMBDA_RUNTIME ..." line
and raises RuntimeError, which ends the runtime (exit 1), as awslambdaric does.

Written on the C `_socket` module rather than http.client: http.client pulls in
email, http, socket, ssl, random, datetime, calendar, base64, urllib... before
the handler is imported. On Lambda (whose client is native code) a function's
own email.py or http.py in /var/task is what `import email` finds; here too.
It also keeps those ~30 ms of imports out of every cold start.
"""

import _socket
import sys
import time

_PREFIX = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
XRAY_CAUSE_HEADER = "Lambda-Runtime-Function-XRay-Error-Cause"
# aws-lambda-cpp drops the X-Ray cause header at 1 MiB; lamina's Runtime API takes
# request heads of at most 64 KiB (431 beyond, which would end the runtime), and the
# header only feeds X-Ray: dropped from 32 KiB on.
_XRAY_CAUSE_MAX = 32 * 1024
_USER_AGENT = "aws-lambda-python/%d.%d.%d-lamina" % sys.version_info[:3]
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class LambdaRuntimeClientError(Exception):
    def __init__(self, endpoint, response_code, response_body):
        self.endpoint = endpoint
        self.response_code = response_code
        self.response_body = response_body
        super().__init__(
            "Request to Lambda Runtime '%s' endpoint failed. Reason: '%s'. "
            "Response body: '%s'" % (endpoint, response_code, response_body)
        )


class _Stale(Exception):
    """The server closed a kept-alive connection before answering."""


class Headers(dict):
    """Response headers; get() ignores case."""

    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)


class Invocation(object):
    """What /next handed out: the event body and its headers."""

    def __init__(self, body, headers):
        self.event_body = body
        self.invoke_id = headers.get("Lambda-Runtime-Aws-Request-Id")
        self.x_amzn_trace_id = headers.get("Lambda-Runtime-Trace-Id")
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn")
        self.client_context = headers.get("Lambda-Runtime-Client-Context")
        self.cognito_identity = headers.get("Lambda-Runtime-Cognito-Identity")
        self.tenant_id = headers.get("Lambda-Runtime-Aws-Tenant-Id")
        self.content_type = headers.get("Content-Type")
        try:
            self.deadline_time_in_ms = int(headers.get("Lambda-Runtime-Deadline-Ms"))
        except (TypeError, ValueError):
            self.deadline_time_in_ms = 0


def _fail(log_message, error_message):
    """As aws-lambda-cpp + awslambdaric on a non-2xx answer: an ERROR line on
    stdout, then a RuntimeError that ends the runtime."""
    sys.stdout.write("[ERROR] [%d] LAMBDA_RUNTIME %s\n" % (time.time() * 1000, log_message))
    raise RuntimeError(error_message)


def _quote(segment):
    return "".join(
        chr(b) if b in _UNRESERVED else "%%%02X" % b for b in segment.encode("utf-8")
    )


def _decode(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class RuntimeClient(object):
    def __init__(self, address):
        self.address = address
        host, _, port = address.rpartition(":")
        self._host, self._port = host.strip("[]") or "127.0.0.1", int(port)
        self._sock = None
        self._buf = b""

    # -- connection ------------------------------------------------------------------

    def _connect(self):
        error = None
        for family, kind, proto, _, addr in _socket.getaddrinfo(
            self._host, self._port, 0, _socket.SOCK_STREAM
        ):
            sock = _socket.socket(family, kind, proto)
            try:
                sock.settimeout(1.0)
                sock.connect(addr)
            except OSError as e:
                sock.close()
                error = e
                continue
            sock.settimeout(None)
            if family in (_socket.AF_INET, _socket.AF_INET6):
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            self._sock, self._buf = sock, b""
            return
        raise error or OSError("cannot resolve %s" % self.address)

    def close(self):
        if self._sock is not None:
            self._sock.close()
        self._sock, self._buf = None, b""

    def _fill(self):
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionResetError("Runtime API closed the connection")
        self._buf += data

    def _read_until(self, marker):
        while True:
            i = self._buf.find(marker)
            if i >= 0:
                out, self._buf = self._buf[:i], self._buf[i + len(marker):]
                return out
            self._fill()

    def _read_exact(self, n):
        while len(self._buf) < n:
            self._fill()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    # -- one exchange --------------------------------------------------------------------

    def _exchange(self, method, path, body, headers):
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % self.address,
                 "User-Agent: %s" % _USER_AGENT, "Accept: */*"]
        lines += ["%s: %s" % kv for kv in headers.items()]
        if body is not None:
            lines.append("Content-Length: %d" % len(body))
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + (body or b"")
        try:
            self._sock.sendall(request)
            if not self._buf:
                self._fill()
        except (ConnectionError, OSError) as e:
            raise _Stale(e)

        head = self._read_until(b"\r\n\r\n").split(b"\r\n")
        parts = head[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ConnectionError("bad status line from Runtime API: %r" % head[0])
        status = int(parts[1])
        resp = Headers()
        for line in head[1:]:
            name, _, value = line.partition(b":")
            resp[name.strip().lower().decode("latin-1")] = _decode(value.strip())

        keep = resp.get("Connection", "").lower() != "close" and parts[0] != b"HTTP/1.0"
        if "chunked" in resp.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self._read_until(b"\r\n"):  # trailers
                        pass
                    break
                chunks.append(self._read_exact(size))
                self._read_until(b"\r\n")
            data = b"".join(chunks)
        elif resp.get("Content-Length") is not None:
            data = self._read_exact(int(resp.get("Content-Length")))
        elif status in (204, 304) or 100 <= status < 200:
            data = b""
        else:  # delimited by the end of the connection
            while True:
                try:
                    self._fill()
                except ConnectionResetError:
                    break
            data, self._buf, keep = self._buf, b"", False
        if not keep:
            self.close()
        return status, resp, data

    def _call(self, method, path, body=None, headers=None):
        for attempt in (1, 2):
            reused = self._sock is not None
            if not reused:
                self._connect()
            try:
                return self._exchange(method, path, body, headers or {})
            except _Stale as e:
                # A kept-alive connection the server had closed: one fresh try.
                self.close()
                if not reused or attempt == 2:
                    raise e.args[0]
            except BaseException:
                self.close()
                raise

    # -- the Runtime API -------------------------------------------------------------------

    def next(self):
        status, headers, body = self._call("GET", _PREFIX + "/invocation/next")
        if not 200 <= status < 300:
            _fail("Failed to get next invocation. Http Response code: %d" % status,
                  "Failed to get next")
        inv = Invocation(body, headers)
        if not inv.invoke_id:
            _fail("Failed to find header Lambda-Runtime-Aws-Request-Id in response",
                  "Failed to get next")
        return inv

    def post_invocation_result(self, invoke_id, payload, content_type):
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        endpoint = "%s/invocation/%s/response" % (_PREFIX, _quote(invoke_id))
        status, _, body = self._call("POST", endpoint, payload, {"Content-Type": content_type})
        if not 200 <= status < 300:
            _fail("Failed to post handler success response. Http response code: %d. %s"
                  % (status, _decode(body)), "Failed to post invocation response")

    def post_invocation_error(self, invoke_id, error_json, xray_cause_json):
        endpoint = "%s/invocation/%s/error" % (_PREFIX, _quote(invoke_id))
        headers = {"Content-Type": "application/json"}
        if xray_cause_json and len(xray_cause_json) < _XRAY_CAUSE_MAX:
            headers[XRAY_CAUSE_HEADER] = xray_cause_json
        status, _, body = self._call("POST", endpoint, error_json.encode("utf-8"), headers)
        if not 200 <= status < 300:
            _fail("HTTP Request for invocation %s was not successful. HTTP response code: %d."
                  % (invoke_id, status), "Failed to post invocation error")

    def post_init_error(self, error_json, error_type):
        endpoint = _PREFIX + "/init/error"
        status, _, body = self._call(
            "POST", endpoint, error_json.encode("utf-8"), {ERROR_TYPE_HEADER: error_type}
        )
        if status != 202:
            raise LambdaRuntimeClientError(endpoint, status, body)
