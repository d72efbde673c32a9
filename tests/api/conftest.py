"""Starts a real `lamina serve` (root, real envs) for the API tests and gives boto3/CLI clients."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import boto3
import botocore.config
import pytest

# (Other suites load this file by path to reuse Server, so its directory may not be on sys.path.)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coverage_plugin import pytest_configure  # noqa: E402,F401  (records each test's requests: README coverage table)

LAMINA = os.environ.get("LAMINA_BIN", os.path.join(os.path.dirname(__file__), "../../target/release/lamina"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, extra=()):
        if os.geteuid() != 0:
            pytest.skip("lamina serve needs root")
        self.state = tempfile.mkdtemp(prefix="lamina-test-api-")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(self.state, "serve.log"), "wb")
        self.proc = subprocess.Popen(
            [LAMINA, "serve", "--listen", f"127.0.0.1:{self.port}", "--state-dir", self.state, "--region", "us-east-1",
             "--account-id", "123456789012", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        else:
            self.proc.kill()
            self.proc.wait()
        if self.proc.poll() is not None:
            log = open(os.path.join(self.state, "serve.log")).read()
            self.stop()
            raise RuntimeError("lamina serve did not start: " + log)
        self.credentials = os.path.join(self.state, "credentials")

    def env(self):
        return dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=self.credentials, AWS_CONFIG_FILE="/dev/null",
                    AWS_DEFAULT_REGION="us-east-1")

    def client(self, parameter_validation=True):
        cfg = botocore.config.Config(retries={"max_attempts": 1}, read_timeout=120,
                                     parameter_validation=parameter_validation)
        keys = dict(l.split(" = ", 1) for l in open(self.credentials).read().splitlines() if " = " in l)
        return boto3.client("lambda", endpoint_url=self.endpoint, region_name="us-east-1", config=cfg,
                            aws_access_key_id=keys["aws_access_key_id"],
                            aws_secret_access_key=keys["aws_secret_access_key"])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
            shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    s.stop()
    assert s.proc.returncode == 0, f"lamina serve exited {s.proc.returncode}"


@pytest.fixture(scope="session")
def lam(server):
    return server.client()
