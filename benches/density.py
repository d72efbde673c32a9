#!/usr/bin/env python3
"""High density: per-env memory, env start rate, bursts and warm latency at scale, against one
`lamina serve` running a static `provided` function (benches/echo_runtime.c, MemorySize 128 MB).

  (a) per-env overhead: N idle frozen envs (N distinct functions, each invoked once), host memory
      at N = 0, 500, 1000, 2000 (BENCH_DENSITY_N); slope per env of: used memory (MemTotal -
      MemAvailable), kernel memory (Slab + PageTables + KernelStack + Percpu + Shmem), the
      supervisor's RSS, init's PSS and the function's own PSS (the bootstrap process). Overhead
      = used-memory slope - the function's own pages.
  (b) start rate: envs started, used once and torn down per second, sustained: a serve with
      --idle-timeout 0 and BENCH_RATE_FUNCTIONS fresh functions, each invoked once by C client
      connections; the time runs until the last env is destroyed (lamina_envs back to 0).
  (c) burst: 1000 concurrent sync invokes over 100 functions (one connection each, fired
      together), errors other than 429 TooManyRequestsException counted; meanwhile one client
      invokes a warm function in a loop: p50/p99 of those.
  (d) warm p50/p99 of one function with 10 and with 2000 idle envs on the host.

Prints a markdown table and writes benches/results/density.md (BENCH_OUT_DENSITY overrides).
Python 3 stdlib only (the client of benches/invoke.py).
"""
import json, os, re, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import invoke as inv  # noqa: E402

ROOT = inv.ROOT
LAMINA = inv.LAMINA
OUT = os.environ.get("BENCH_OUT_DENSITY", os.path.join(ROOT, "benches/results/density.md"))
NS = [int(x) for x in os.environ.get("BENCH_DENSITY_N", "0,500,1000,2000").split(",")]
RATE_FUNCTIONS = int(os.environ.get("BENCH_RATE_FUNCTIONS", "1500"))
RATE_CLIENTS = int(os.environ.get("BENCH_RATE_CLIENTS", "16"))
BURST = int(os.environ.get("BENCH_BURST", "1000"))
BURST_FUNCTIONS = int(os.environ.get("BENCH_BURST_FUNCTIONS", "100"))
WARM_N = int(os.environ.get("BENCH_WARM_N", "2000"))
OVERCOMMIT = os.environ.get("BENCH_OVERCOMMIT", "16")
MEMORY = 128
OC = ["--memory-overcommit", OVERCOMMIT] if OVERCOMMIT else []
PAYLOAD = inv.PAYLOAD


class Server:
    """One `lamina serve` with its own state dir, and a pool of client connections."""

    def __init__(self, work, name, *extra):
        self.state = os.path.join(work, name)
        os.makedirs(self.state)
        self.port = inv.free_port()
        self.logf = open(os.path.join(work, name + ".log"), "wb")
        self.proc = subprocess.Popen(
            [LAMINA, "serve", "--listen", f"127.0.0.1:{self.port}", "--state-dir", self.state,
             *extra], stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT)
        inv.wait_port(self.port, 30, self.proc)
        import configparser
        creds = os.path.join(self.state, "credentials")
        cp = configparser.ConfigParser()
        cp.read(creds)
        self.akid = cp["default"]["aws_access_key_id"]
        self.secret = cp["default"]["aws_secret_access_key"]
        self.local = threading.local()

    def signer(self):
        s = getattr(self.local, "signer", None)
        if s is None:
            s = self.local.signer = inv.Signer(self.akid, self.secret, f"127.0.0.1:{self.port}")
        return s

    def conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = self.local.conn = inv.Conn(self.port)
        return c

    def call(self, method, path, body=b"", extra=()):
        req = self.signer().request(method, path, body, extra=extra)
        try:
            return self.conn().roundtrip(req)
        except (ConnectionError, OSError):
            self.local.conn = None
            return self.conn().roundtrip(req)

    def create(self, name, zipbytes, memory=MEMORY):
        import base64
        body = json.dumps({
            "FunctionName": name, "Runtime": "provided", "Handler": "bootstrap",
            "Role": "arn:aws:iam::000000000000:role/bench", "MemorySize": memory, "Timeout": 10,
            "Code": {"ZipFile": base64.b64encode(zipbytes).decode()}}).encode()
        st, _, out = self.call("POST", "/2015-03-31/functions", body,
                               extra=[("Content-Type", "application/json")])
        if st != 201:
            raise RuntimeError(f"CreateFunction {name}: {st} {out[:300]!r}")

    def invoke(self, name):
        st, head, out = self.call("POST", f"/2015-03-31/functions/{name}/invocations", PAYLOAD)
        return st, head, out

    def metric(self, name):
        st, _, out = self.call("GET", "/metrics")
        for line in out.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def close(self):
        inv.stop(self.proc, timeout=120)
        self.logf.close()


def parallel(n_threads, items, fn):
    """Runs fn(item) over items on n_threads threads; returns the results in order."""
    out = [None] * len(items)
    it = iter(range(len(items)))
    lock = threading.Lock()

    def run():
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                return
            out[i] = fn(items[i])
    ts = [threading.Thread(target=run) for _ in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def meminfo():
    m = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            m[k] = int(v.split()[0]) * 1024
    return m


def rollup(pid):
    """(Rss, Pss) bytes of a process, or None."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            t = f.read()
    except OSError:
        return None
    g = lambda k: int(re.search(rf"^{k}:\s+(\d+)", t, re.M).group(1)) * 1024
    return g("Rss"), g("Pss")


def children(pid):
    """Children of every thread of a process."""
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def status_field(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def snapshot(srv):
    """Host and process memory now (bytes)."""
    subprocess.run(["sync"])
    m = meminfo()
    inits = [c for c in children(srv.proc.pid)]
    init_pss = fn_pss = 0
    n_init = n_fn = 0
    for p in inits:
        r = rollup(p)
        if r:
            init_pss += r[1]
            n_init += 1
        for c in children(p):
            r = rollup(c)
            if r:
                fn_pss += r[1]
                n_fn += 1
    return {
        "used": m["MemTotal"] - m["MemAvailable"],
        "kernel": m["Slab"] + m["PageTables"] + m["KernelStack"] + m.get("Percpu", 0)
        + m["Shmem"],
        "slab": m["Slab"], "pagetables": m["PageTables"], "kstack": m["KernelStack"],
        "percpu": m.get("Percpu", 0), "shmem": m["Shmem"],
        "supervisor": rollup(srv.proc.pid)[0],
        "threads": status_field(srv.proc.pid, "Threads"),
        "init_pss": init_pss, "fn_pss": fn_pss, "n_init": n_init, "n_fn": n_fn,
    }


def slope(xs, ys):
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def pct(xs, p):
    return inv.pct(xs, p) if xs else float("nan")


# --- (a) + (d): idle envs ---

def density(work, zipbytes):
    srv = Server(work, "density", "--idle-timeout", "3600", *OC, "--workers", "64")
    rows, warm = [], {}
    try:
        top = max(max(NS), WARM_N)
        names = [f"d{i:05d}" for i in range(top + 1)]
        t = time.monotonic()
        parallel(4, names, lambda n: srv.create(n, zipbytes))
        create_s = time.monotonic() - t
        hot = names[-1]  # the function whose warm latency is measured
        assert srv.invoke(hot)[0] == 200
        have = 0
        starts = []
        for n in sorted(set(NS + [10, WARM_N])):
            batch = names[have:n]

            def cold(name):
                t0 = time.perf_counter()
                st, _, out = srv.invoke(name)
                if st != 200 or out != PAYLOAD:
                    raise RuntimeError(f"Invoke {name}: {st} {out[:200]!r}")
                return time.perf_counter() - t0
            t = time.monotonic()
            starts += parallel(4, batch, cold)
            have = n
            time.sleep(2)
            if n in NS:
                snaps = [snapshot(srv) for _ in range(3)]
                s = {k: statistics.median(x[k] for x in snaps) for k in snaps[0]}
                s["n"] = n + 1  # + the hot function's env
                rows.append(s)
            if n in (10, WARM_N):
                warm[n] = warm_lat(srv, hot, 2000)
        return rows, warm, create_s, starts
    finally:
        srv.close()


def warm_lat(srv, name, count):
    lat = []
    for _ in range(200):
        srv.invoke(name)
    for _ in range(count):
        t = time.perf_counter()
        st, _, out = srv.invoke(name)
        lat.append((time.perf_counter() - t) * 1000)
        if st != 200:
            raise RuntimeError(f"warm invoke: {st} {out[:200]!r}")
    return lat


# --- (b) start rate ---

def start_rate(work, zipbytes):
    srv = Server(work, "rate", "--idle-timeout", "0", *OC)
    try:
        names = [f"r{i:05d}" for i in range(RATE_FUNCTIONS)]
        parallel(4, names, lambda n: srv.create(n, zipbytes))
        errors = []

        def once(name):
            st, _, out = srv.invoke(name)
            if st != 200 or out != PAYLOAD:
                errors.append((st, out[:200]))
        t = time.monotonic()
        parallel(RATE_CLIENTS, names, once)
        served = time.monotonic() - t
        while True:
            envs = srv.metric("lamina_memory_committed_bytes")
            if not envs:
                break
            time.sleep(0.01)
        total = time.monotonic() - t
        return {"n": len(names), "served_s": served, "total_s": total,
                "rate": len(names) / total, "errors": errors}
    finally:
        srv.close()


# --- (c) burst ---

def burst(work, zipbytes):
    srv = Server(work, "burst", "--idle-timeout", "3600", *OC,
                 "--workers", str(BURST + 16))
    try:
        names = [f"b{i:03d}" for i in range(BURST_FUNCTIONS)]
        parallel(4, names + ["hot"], lambda n: srv.create(n, zipbytes))
        srv.invoke("hot")
        conns = [inv.Conn(srv.port) for _ in range(BURST)]
        reqs = [srv.signer().request("POST", f"/2015-03-31/functions/{names[i % len(names)]}"
                                     "/invocations", PAYLOAD) for i in range(BURST)]
        results = [None] * BURST
        go = threading.Event()
        done = threading.Event()

        def one(i):
            go.wait()
            t = time.perf_counter()
            try:
                st, head, out = conns[i].roundtrip(reqs[i])
                results[i] = (st, out, time.perf_counter() - t)
            except Exception as e:
                results[i] = (0, repr(e).encode(), time.perf_counter() - t)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(BURST)]
        for t in ts:
            t.start()
        hot_lat = []
        hc = inv.Conn(srv.port)
        hs = inv.Signer(srv.akid, srv.secret, f"127.0.0.1:{srv.port}")

        def hot():
            while not done.is_set():
                r = hs.request("POST", "/2015-03-31/functions/hot/invocations", PAYLOAD)
                t = time.perf_counter()
                st, _, _ = hc.roundtrip(r)
                hot_lat.append(((time.perf_counter() - t) * 1000, st))
        ht = threading.Thread(target=hot)
        t0 = time.monotonic()
        go.set()
        ht.start()
        for t in ts:
            t.join()
        wall = time.monotonic() - t0
        done.set()
        ht.join()
        for c in conns + [hc]:
            c.close()
        ok = sum(1 for r in results if r[0] == 200 and r[1] == PAYLOAD)
        throttled = sum(1 for r in results if r[0] == 429 and b"TooManyRequests" in r[1])
        other = [r[:2] for r in results if not (r[0] == 200 and r[1] == PAYLOAD)
                 and not (r[0] == 429 and b"TooManyRequests" in r[1])]
        lats = [r[2] * 1000 for r in results]
        return {"ok": ok, "throttled": throttled, "other": other, "wall_s": wall,
                "p50": pct(lats, 50), "p99": pct(lats, 99),
                "hot": [x for x, st in hot_lat if st == 200],
                "hot_err": sum(1 for _, st in hot_lat if st != 200)}
    finally:
        srv.close()


def main():
    if not os.path.exists(LAMINA):
        print(f"{LAMINA} not found (build it: cargo build --release)", file=sys.stderr)
        return 1
    only = set(sys.argv[1:]) or {"density", "rate", "burst"}
    work = tempfile.mkdtemp(prefix="lamina-bench-density-")
    bootstrap = os.path.join(work, "bootstrap")
    subprocess.run(["gcc", "-static", "-O2", "-o", bootstrap,
                    os.path.join(ROOT, "benches/echo_runtime.c")], check=True)
    zipbytes = inv.make_zip(bootstrap)
    load0 = inv.loadavg()
    res = {}
    try:
        if "density" in only:
            res["density"] = density(work, zipbytes)
        if "rate" in only:
            res["rate"] = start_rate(work, zipbytes)
        if "burst" in only:
            res["burst"] = burst(work, zipbytes)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            subprocess.run(["rm", "-rf", work])
        else:
            print("kept", work)
    report(res, load0)
    return 0


def report(res, load0):
    mib = 1 << 20
    out = [f"# High density: `lamina serve`, static `provided` echo function, MemorySize {MEMORY} MB",
           "",
           f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
           f"{meminfo()['MemTotal'] / (1 << 30):.1f} GiB, kernel {os.uname().release}, cgroup "
           f"layout {inv.layout()}, load average {load0} at start, {inv.loadavg()} at end, "
           f"--memory-overcommit {OVERCOMMIT}.", ""]
    summary = {}
    if "density" in res:
        rows, warm, create_s, starts = res["density"]
        out += ["## Idle envs: host memory", "",
                "| envs | used MiB | kernel MiB (slab, page tables, stacks, percpu, shmem) | "
                "supervisor RSS MiB | threads | init PSS MiB (all) | function PSS MiB (all) |",
                "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            out.append(f"| {r['n']} | {r['used'] / mib:.0f} | {r['kernel'] / mib:.0f} | "
                       f"{r['supervisor'] / mib:.1f} | {r['threads']:.0f} | "
                       f"{r['init_pss'] / mib:.1f} | {r['fn_pss'] / mib:.1f} |")
        xs = [r["n"] for r in rows]
        sl = {k: slope(xs, [r[k] for r in rows]) for k in
              ("used", "kernel", "slab", "pagetables", "kstack", "percpu", "shmem",
               "supervisor", "init_pss", "fn_pss", "threads")}
        overhead = sl["used"] - sl["fn_pss"]
        accounted = sl["kernel"] + sl["supervisor"] + sl["init_pss"]
        summary["density"] = (overhead, accounted, sl, max(xs))
        out += ["", "Per env (least-squares slope over the rows, KiB): "
                + ", ".join(f"{k} {v / 1024:.1f}" for k, v in sl.items() if k != "threads")
                + f", supervisor threads {sl['threads']:.2f}.", "",
                f"Overhead per env beyond the function's own pages: **{overhead / 1024:.0f} KiB** "
                f"(used-memory slope {sl['used'] / 1024:.0f} KiB - function PSS "
                f"{sl['fn_pss'] / 1024:.0f} KiB); accounted parts (kernel + supervisor + init) "
                f"{accounted / 1024:.0f} KiB. Target <= 1024 KiB.", "",
                f"CreateFunction of {len(starts) + 1} functions took {create_s:.1f} s; their "
                f"first (cold) invokes, 4 clients: p50 {pct([s * 1000 for s in starts], 50):.1f} "
                f"ms, p99 {pct([s * 1000 for s in starts], 99):.1f} ms.", ""]
        out += ["## Warm invoke with many idle envs", "",
                "| idle envs | p50 ms | p99 ms |", "|---:|---:|---:|"]
        for n, lat in sorted(warm.items()):
            out.append(f"| {n + 1} | {pct(lat, 50):.3f} | {pct(lat, 99):.3f} |")
        summary["warm"] = {n: (pct(l, 50), pct(l, 99)) for n, l in warm.items()}
        out.append("")
    if "rate" in res:
        r = res["rate"]
        summary["rate"] = r["rate"]
        out += ["## Start rate", "",
                f"{r['n']} functions, each invoked once by {RATE_CLIENTS} client connections "
                f"on a serve with --idle-timeout 0 (each env started, used once, destroyed by "
                f"the reaper): all answered in {r['served_s']:.2f} s, last env destroyed after "
                f"{r['total_s']:.2f} s: **{r['rate']:.0f} envs/s** (target >= 500); "
                f"{len(r['errors'])} errors{': ' + repr(r['errors'][:3]) if r['errors'] else ''}.",
                ""]
    if "burst" in res:
        b = res["burst"]
        summary["burst"] = b
        out += ["## Burst", "",
                f"{BURST} concurrent sync invokes over {BURST_FUNCTIONS} functions (cold), one "
                f"connection each: {b['ok']} answered 200, {b['throttled']} throttled (429 "
                f"TooManyRequestsException), **{len(b['other'])} other errors**"
                f"{': ' + repr(b['other'][:3]) if b['other'] else ''}; all done in "
                f"{b['wall_s']:.2f} s (p50 {b['p50']:.1f} ms, p99 {b['p99']:.1f} ms). A warm "
                f"function invoked in a loop meanwhile: {len(b['hot'])} invokes, p50 "
                f"{pct(b['hot'], 50):.2f} ms, p99 {pct(b['hot'], 99):.2f} ms, "
                f"{b['hot_err']} not 200.", ""]
    text = "\n".join(out)
    print(text)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text + "\n")
    with open(OUT.replace(".md", ".json"), "w") as f:
        json.dump(summary, f, default=str)


if __name__ == "__main__":
    sys.exit(main())
