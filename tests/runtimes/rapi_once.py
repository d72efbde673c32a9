"""Runs inside a `lamina run` env: serves the Runtime API (2018-06-01) on 127.0.0.1:9001 for one
invocation, starts the runtime bootstrap given as argv[1], prints `RESULT <status> <body>` for what the
runtime posted, then stops it. Used where `lamina serve` cannot yet attach layers (the /opt lookup)."""
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EVENT = os.environ.get("RAPI_EVENT", "{}").encode()
done = threading.Event()
result = {}


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/2018-06-01/runtime/invocation/next" or result.get("served"):
            time.sleep(30)
            return self._reply(500)
        result["served"] = True
        deadline = int(time.time() * 1000) + 30000
        self._reply(200, EVENT, [("Content-Type", "application/json"), ("Lambda-Runtime-Aws-Request-Id", "req-1"),
                                 ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                                 ("Lambda-Runtime-Invoked-Function-Arn",
                                  "arn:aws:lambda:us-east-1:123456789012:function:layer"),
                                 ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")])

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._reply(202, b'{"status":"OK"}')
        result["post"] = (self.path.rsplit("/", 1)[-1], body.decode(errors="replace"))
        done.set()


srv = ThreadingHTTPServer(("127.0.0.1", 9001), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
child = subprocess.Popen([sys.argv[1]], env=dict(os.environ, AWS_LAMBDA_RUNTIME_API="127.0.0.1:9001"))
ok = done.wait(60)
child.kill()
child.wait()
if ok:
    kind, body = result["post"]
    print("RESULT", kind, json.dumps(body), flush=True)
else:
    print("RESULT none", flush=True)
