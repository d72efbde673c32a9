"""Cold and warm invoke latency per runtime, through the Invoke API of a real `lamina serve`.

For every conformance function (examples/conformance/*: one per runtime and official client),
measured with boto3 on loopback:
- cold: the first invoke of a new function with the same code (created beforehand, not timed),
  so every sample starts a new env; the client's round-trip time and the REPORT line's Init
  Duration;
- warm: back-to-back invokes of the same env.
Writes benches/results/runtimes.md (p50 and p99) next to the cold starts published for Lambda.

Run: make bench-runtimes  (root; LAMINA_BIN, LAMINA_RUNTIMES_STATE as for the conformance suite)
"""

import base64
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "runtimes"))
import test_conformance as tc  # noqa: E402  (Server, Deployments, conformance dirs)

COLD = int(os.environ.get("BENCH_COLD", "10"))
WARM = int(os.environ.get("BENCH_WARM", "50"))

# Lambda's cold starts by runtime. AWS publishes no per-runtime figures; these are a third-party
# compilation (p50, x86_64, hello-world functions): "AWS Lambda: Cold Start Times by Runtime",
# https://hivebook.wiki/wiki/aws-lambda-cold-starts (April 2026). Ruby and Rust are not listed.
LAMBDA_COLD = {
    "python": "150–300 ms",
    "nodejs": "150–300 ms",
    "go": "100–200 ms",
    "java": "1,000–3,000 ms (SnapStart: 90–140 ms)",
    "dotnet": "300–700 ms",
}


def lambda_figure(d, runtime):
    if d.startswith("go"):
        return LAMBDA_COLD["go"]
    for k, v in LAMBDA_COLD.items():
        if runtime.startswith(k) or d.startswith(k):
            return v
    return "unknown (not published)"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    server = tc.Server()
    dep = tc.Deployments(server)
    rows = []
    try:
        for d in tc.conformance_dirs():
            spec = tc.spec_of(d)
            try:
                name = dep.function(d)
            except AssertionError as e:
                rows.append((d, spec["Runtime"], None, str(e).splitlines()[0]))
                continue
            cold, init = [], []
            for i in range(COLD):
                fresh = dep.create(f"{name}-cold{i}", d)
                t = time.perf_counter()
                r = dep.lam.invoke(FunctionName=fresh, Payload=json.dumps({"op": "echo", "data": i}), LogType="Tail")
                r["Payload"].read()
                cold.append((time.perf_counter() - t) * 1000)
                m = re.search(r"Init Duration: ([\d.]+) ms", base64.b64decode(r["LogResult"]).decode())
                if m:
                    init.append(float(m.group(1)))
            warm = []
            # The first invoke starts the env; the timed ones reuse it.
            dep.lam.invoke(FunctionName=name, Payload=json.dumps({"op": "echo", "data": 0}))["Payload"].read()
            for i in range(WARM):
                t = time.perf_counter()
                r = dep.lam.invoke(FunctionName=name, Payload=json.dumps({"op": "echo", "data": i}))
                r["Payload"].read()
                warm.append((time.perf_counter() - t) * 1000)
            rows.append((d, spec["Runtime"], dict(cold=cold, init=init, warm=warm), None))
            print(f"{d}: cold p50 {statistics.median(cold):.1f} ms, warm p50 {statistics.median(warm):.2f} ms",
                  flush=True)
    finally:
        server.stop()
        import shutil
        shutil.rmtree(dep.work, ignore_errors=True)
    lines = [
        "# Invoke latency per runtime",
        "",
        f"`make bench-runtimes` (benches/runtimes.py): one `lamina serve` ({os.path.relpath(tc.LAMINA, REPO)}), "
        f"boto3 on loopback, "
        f"the conformance function of each runtime (`echo` op), {COLD} cold starts (first invoke of a "
        f"freshly created function) and {WARM} warm invokes each. Client round-trip times; Init is the REPORT "
        f"line's Init Duration (env start + runtime Init). Host: {os.cpu_count()} CPUs, shared.",
        "",
        "| function (examples/conformance) | runtime | cold p50 | cold p99 | Init p50 | warm p50 | warm p99 | Lambda cold start (p50) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d, runtime, m, err in rows:
        if m is None:
            lines.append(f"| {d} | {runtime} | not measured: {err} | | | | | {lambda_figure(d, runtime)} |")
            continue
        init = f"{statistics.median(m['init']):.0f} ms" if m["init"] else "-"
        lines.append(
            f"| {d} | {runtime} | {pct(m['cold'], 50):.0f} ms | {pct(m['cold'], 99):.0f} ms | {init} | "
            f"{pct(m['warm'], 50):.1f} ms | {pct(m['warm'], 99):.1f} ms | {lambda_figure(d, runtime)} |")
    lines += [
        "",
        "Lambda's column: AWS publishes no per-runtime cold-start figures. The numbers are a third-party "
        "compilation (p50, x86_64, hello-world functions): \"AWS Lambda: Cold Start Times by Runtime\", "
        "https://hivebook.wiki/wiki/aws-lambda-cold-starts (April 2026); Ruby and Rust are not listed there. "
        "Lambda's figures include fetching the code and placing the env on a fleet; lamina's run on one "
        "machine with the code already unpacked.",
        "",
    ]
    out = REPO / "benches" / "results" / "runtimes.md"
    out.write_text("\n".join(lines))
    print(out.read_text())


if __name__ == "__main__":
    main()
