#!/usr/bin/env python3
"""The README's Lambda API coverage table, generated from the API tests' results.

The API tests (tests/api, with tests/api/coverage_plugin.py) record every request lamina answered
during each test (`lamina serve --access-log`) and whether the test passed, in
target/api-coverage.json. This tool maps each request to its operation in botocore's Lambda model
(method + path template + literal query keys), and renders one row per operation of the model:

    implemented and tested  a passing test made a call of it that lamina answered with a 2xx, or
                            with a 4xx error of the operation itself (not UnknownOperation, not a
                            signature/authentication error raised before the operation ran)
    not yet                 otherwise

Usage:
    coverage_table.py --write   rewrite README.md between the coverage markers
    coverage_table.py --check   exit 1 (with a diff) when README.md's table differs from the results
    coverage_table.py           print the section
"""
import argparse
import datetime
import difflib
import json
import os
import re
import sys
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RESULTS = os.path.join(ROOT, "target", "api-coverage.json")
README = os.path.join(ROOT, "README.md")
BEGIN, END = "<!-- coverage:begin -->", "<!-- coverage:end -->"
DATE_PREFIX = "Generated on "

# Errors answered before an operation runs: they say nothing about the operation being implemented.
NOT_THE_OPERATION = {
    "UnknownOperationException",
    "MissingAuthenticationTokenException",
    "IncompleteSignatureException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
}


def service_model():
    import botocore.session
    return botocore.session.get_session().get_service_model("lambda")


class Operations:
    """Maps (method, raw path, raw query) to the model's operation name."""

    def __init__(self, model=None):
        model = model or service_model()
        self.names = sorted(model.operation_names)
        self.api_version = model.api_version
        self.routes = []
        for name in self.names:
            http = model.operation_model(name).http
            uri, _, q = http["requestUri"].partition("?")
            segs = uri.strip("/").split("/")
            literal_query = dict(urllib.parse.parse_qsl(q, keep_blank_values=True))
            self.routes.append((http["method"], segs, literal_query, name))

    def match(self, method, path, query=""):
        segs = path.strip("/").split("/")
        q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        best = None
        for m, tsegs, lq, name in self.routes:
            if m != method or len(tsegs) != len(segs):
                continue
            if not all(t.startswith("{") or t == s for t, s in zip(tsegs, segs)):
                continue
            if any(q.get(k) != v for k, v in lq.items()):
                continue
            # The most specific template wins: more literal segments, then more literal query keys.
            score = (sum(not t.startswith("{") for t in tsegs), len(lq))
            if best is None or score > best[0]:
                best = (score, name)
        return best[1] if best else None


def classify(status, error_type):
    """'success', 'error' (a 4xx of the operation), 'server_error', or None (not the operation)."""
    if 200 <= status < 400:
        return "success"
    if status >= 500:
        return "server_error"
    if error_type in NOT_THE_OPERATION:
        return None
    return "error"


def summarize(results, ops):
    """Per operation: the passing tests with successes, the error types and the tests with errors."""
    rows = {n: {"success_tests": set(), "error_tests": set(), "error_types": set()} for n in ops.names}
    for test, r in results["tests"].items():
        if not r["passed"]:
            continue
        for req in r["requests"]:
            name = ops.match(req["method"], req["path"], req.get("query", ""))
            if name is None:
                continue
            kind = classify(req["status"], req.get("error_type"))
            if kind == "success":
                rows[name]["success_tests"].add(test)
            elif kind == "error":
                rows[name]["error_tests"].add(test)
                rows[name]["error_types"].add(req.get("error_type") or str(req["status"]))
    return rows


def short(test):
    return test.rsplit("::", 1)[-1]


def tests_cell(tests, limit=4):
    names = sorted({short(t) for t in tests})
    cell = ", ".join(f"`{n}`" for n in names[:limit])
    if len(names) > limit:
        cell += f" +{len(names) - limit} more"
    return cell


def render(results, ops, date):
    rows = summarize(results, ops)
    done = [n for n in ops.names if rows[n]["success_tests"] or rows[n]["error_tests"]]
    out = [
        "Generated from the API tests' results, not by hand: every request `lamina serve` answered "
        "during `make test-api` (boto3, the AWS CLI and raw HTTP), mapped to its operation in "
        f"botocore's Lambda model {ops.api_version} (botocore {results['model']['botocore']}). "
        "`make test-api` fails when this table differs from what its run produced; `make coverage` "
        "rewrites it.",
        "",
        f"{DATE_PREFIX}{date} by `make coverage`. {len(done)} of {len(ops.names)} operations "
        "implemented and tested.",
        "",
        "| Operation | Status | Success cases | Error cases | Tests |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n in ops.names:
        r = rows[n]
        if n in done:
            status = "implemented and tested"
            n_ok = len(r["success_tests"])
            ok = f"{n_ok} test{'s' if n_ok != 1 else ''}" if n_ok else "none"
            err = ", ".join(sorted(r["error_types"])) if r["error_types"] else "none"
            tests = tests_cell(r["success_tests"] | r["error_tests"])
        else:
            status, ok, err, tests = "not yet", "", "", ""
        out.append(f"| {n} | {status} | {ok} | {err} | {tests} |")
    return "\n".join(out) + "\n"


def readme_section(text):
    m = re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), text, re.S)
    if not m:
        sys.exit(f"coverage_table: {README} has no {BEGIN} ... {END} section")
    return m


def without_date(section):
    return [l for l in section.splitlines() if not l.startswith(DATE_PREFIX)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=RESULTS)
    ap.add_argument("--readme", default=README)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true")
    g.add_argument("--check", action="store_true")
    a = ap.parse_args()
    try:
        results = json.load(open(a.results))
    except FileNotFoundError:
        sys.exit(f"coverage_table: {a.results} not found: run the API tests first (make test-api)")
    failed = sorted(t for t, r in results["tests"].items() if not r["passed"])
    ops = Operations()
    text = open(a.readme).read() if (a.write or a.check) else ""
    if a.check:
        m = readme_section(text)
        date_lines = [l for l in m.group(1).splitlines() if l.startswith(DATE_PREFIX)]
        date = date_lines[0][len(DATE_PREFIX):].split(" ", 1)[0] if date_lines else "?"
        want = render(results, ops, date)
        if without_date(m.group(1)) != without_date(want):
            diff = difflib.unified_diff(m.group(1).splitlines(), want.splitlines(), "README.md (committed)",
                                        "this run's results", lineterm="")
            print("\n".join(diff))
            print("coverage_table: README.md's Lambda API coverage table differs from this run's results; "
                  "run `make coverage` (or tests/tools/coverage_table.py --write) and commit README.md",
                  file=sys.stderr)
            if failed:
                print(f"coverage_table: {len(failed)} tests failed: " + ", ".join(failed), file=sys.stderr)
            sys.exit(1)
        print(f"coverage_table: README.md matches this run ({results['model']['botocore']})")
        return
    section = render(results, ops, datetime.date.today().isoformat())
    if failed:
        print(f"coverage_table: warning: {len(failed)} failed tests do not count: " + ", ".join(failed),
              file=sys.stderr)
    if a.write:
        m = readme_section(text)
        open(a.readme, "w").write(text[:m.start(1)] + section + text[m.end(1):])
        print(f"coverage_table: wrote {a.readme}")
    else:
        sys.stdout.write(section)


if __name__ == "__main__":
    main()
