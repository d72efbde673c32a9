"""Records, for every API test, the requests lamina answered while it ran and whether it passed.

The session sets LAMINA_ACCESS_LOG, so every `lamina serve` the tests start (they inherit the
environment) appends one JSON line per answered request (`lamina serve --access-log`): boto3, the
AWS CLI in subprocesses and raw HTTP alike. lamina writes a request's line before it sends the
response and the tests run one at a time, so the lines appended while a test runs (setup, call,
teardown) are that test's. At the end of the session the results go to target/api-coverage.json
($LAMINA_API_COVERAGE), which tests/tools/coverage_table.py maps to the Lambda model's operations
and renders into the README.

Registered by one line in tests/api/conftest.py: `from coverage_plugin import pytest_configure`.
"""
import collections
import json
import os

import botocore
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NAME = "lamina-api-coverage"


class Recorder:
    def __init__(self):
        target = os.path.join(ROOT, "target")
        os.makedirs(target, exist_ok=True)
        self.access_log = os.path.join(target, "api-access.log")
        self.results = os.environ.get("LAMINA_API_COVERAGE", os.path.join(target, "api-coverage.json"))
        open(self.access_log, "w").close()
        os.environ["LAMINA_ACCESS_LOG"] = self.access_log
        self.requests = {}
        self.outcomes = collections.defaultdict(list)

    def _size(self):
        try:
            return os.path.getsize(self.access_log)
        except OSError:
            return 0

    def _read_from(self, offset):
        with open(self.access_log, "rb") as f:
            f.seek(offset)
            data = f.read()
        seen = collections.Counter()
        # Only complete lines: each is one write, so a line is either whole or not there yet.
        for line in data.split(b"\n")[:-1]:
            r = json.loads(line)
            seen[(r["method"], r["path"], r["query"], r["status"], r["error_type"])] += 1
        return [dict(method=m, path=p, query=q, status=s, error_type=e, count=n)
                for (m, p, q, s, e), n in sorted(seen.items(), key=lambda kv: json.dumps(kv[0]))]

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        start = self._size()
        try:
            return (yield)
        finally:
            self.requests[item.nodeid] = self._read_from(start)

    def pytest_runtest_logreport(self, report):
        self.outcomes[report.nodeid].append(report.outcome)

    def pytest_sessionfinish(self, session):
        tests = {}
        for nodeid, reqs in sorted(self.requests.items()):
            outcomes = self.outcomes.get(nodeid, [])
            tests[nodeid] = {"passed": bool(outcomes) and all(o == "passed" for o in outcomes)
                             and len(outcomes) == 3, "outcomes": outcomes, "requests": reqs}
        out = {"model": {"service": "lambda", "botocore": botocore.__version__}, "tests": tests}
        tmp = self.results + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1, sort_keys=True)
        os.replace(tmp, self.results)


def pytest_configure(config):
    if not config.pluginmanager.has_plugin(NAME):
        config.pluginmanager.register(Recorder(), NAME)
