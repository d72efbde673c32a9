#!/usr/bin/env python3
"""Cold start of a static binary: lamina run vs. its peers, measured in the same run.

Peers: the unshare floor (`unshare -m -u -i -p -n -f`), bubblewrap (`bwrap --unshare-all` with /proc,
/dev and a read-only /usr), and crun (an OCI bundle with the same static binary) where it runs here.
Runs are interleaved (one of each per round) so that drift hits every tool alike. Prints a table
with median, p99 and ratios, the median cost of each lamina setup step, and writes both to a file.
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, time

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "200"))
LAMINA = os.environ.get("LAMINA_BIN", "target/release/lamina")
OUT = os.environ.get("BENCH_OUT", "benches/results/coldstart.md")

def sh(*a, **kw):
    return subprocess.run(a, check=True, **kw)

def main():
    work = tempfile.mkdtemp(prefix="lamina-bench-")
    try:
        base = os.path.join(work, "base")
        os.makedirs(base)
        hello = os.path.join(base, "hello")
        sh("gcc", "-static", "-O2", "-o", hello, "benches/hello.c")
        peers = {
            "unshare (floor)": ["unshare", "-m", "-u", "-i", "-p", "-n", "-f", hello],
            "bwrap": ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
                      "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/lib", "/lib",
                      "--proc", "/proc", "--dev", "/dev", "--ro-bind", base, "/app", "/app/hello"],
            "lamina run --base DIR": [LAMINA, "run", "--base", base, "--", "/hello"],
            "lamina run (host base)": [LAMINA, "run", "--code", base, "--", "/var/task/hello"],
        }
        crun = crun_bundle(work, hello)
        if crun:
            peers["crun run"] = crun
        for name, cmd in list(peers.items()):
            r = subprocess.run(cmd, capture_output=True, timeout=30)
            if r.returncode != 0 or r.stdout != b"hello\n":
                print(f"skipping {name}: it does not run here ({r.returncode}: {r.stderr.decode(errors='replace').strip()[:200]})")
                del peers[name]
        times = {n: [] for n in peers}
        steps = {}
        for i in range(ROUNDS):
            for name, cmd in peers.items():
                c = cmd
                if name.startswith("crun"):
                    c = cmd[:-1] + [f"bench-{os.getpid()}-{i}"]
                if name == "lamina run --base DIR" and i % 10 == 0:
                    # Every 10th run also collects the per-step timings (a separate run, untimed).
                    r = subprocess.run([LAMINA, "run", "--timings", "--base", base, "--", "/hello"], capture_output=True)
                    for line in r.stderr.decode().splitlines():
                        p = line.split()
                        if len(p) == 5 and p[1] == "timing":
                            steps.setdefault(p[2], []).append(int(p[3]))
                t = time.perf_counter()
                subprocess.run(c, stdout=subprocess.DEVNULL)
                times[name].append((time.perf_counter() - t) * 1000)
        report(times, steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)

def crun_bundle(work, hello):
    if not shutil.which("crun"):
        return None
    b = os.path.join(work, "bundle")
    os.makedirs(os.path.join(b, "rootfs"))
    shutil.copy(hello, os.path.join(b, "rootfs", "hello"))
    sh("crun", "spec", cwd=b)
    with open(os.path.join(b, "config.json")) as f:
        spec = json.load(f)
    spec["process"]["args"] = ["/hello"]
    spec["process"]["terminal"] = False
    spec["root"]["readonly"] = True
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(spec, f)
    return ["crun", "run", "--bundle", b, "ID"]

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def report(times, steps):
    floor = statistics.median(times["unshare (floor)"])
    bw = statistics.median(times["bwrap"]) if "bwrap" in times else None
    host = os.uname()
    lines = [f"Cold start of a static binary, {ROUNDS} interleaved rounds, {time.strftime('%Y-%m-%d')}, "
             f"{os.cpu_count()} CPUs, kernel {host.release}, cgroup layout {layout()}", "",
             "| tool | median ms | p99 ms | x floor | x bwrap |", "|---|---:|---:|---:|---:|"]
    for name, xs in times.items():
        m = statistics.median(xs)
        lines.append(f"| {name} | {m:.2f} | {pct(xs, 99):.2f} | {m / floor:.2f} | {m / bw:.2f} |" if bw else
                     f"| {name} | {m:.2f} | {pct(xs, 99):.2f} | {m / floor:.2f} | - |")
    if steps:
        lines += ["", "lamina run --base DIR, median cost of each step (µs; init:* run inside the env):", "",
                  "| step | median µs | p99 µs |", "|---|---:|---:|"]
        for name, xs in steps.items():
            lines.append(f"| {name} | {statistics.median(xs):.0f} | {pct(xs, 99):.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text)
    print(f"written to {OUT}")

def layout():
    return "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1/hybrid"

if __name__ == "__main__":
    sys.exit(main())
