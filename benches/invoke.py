#!/usr/bin/env python3
"""Invoke latency and throughput of `lamina serve` against its peers, measured in the same run.

The function: a static `provided` runtime in C (benches/echo_runtime.c) that echoes each event.
Targets, all driven by the same stdlib client sending the same SigV4-signed Invoke request over
keep-alive HTTP/1.1 (each request signed when it is sent; the peers ignore the signature):
  - floor: a minimal C HTTP/1.1 echo server (benches/echo_server.c) on the same machine;
  - lamina serve: Invoke through Lambda's API (warm: the env is reused; cold: the first invoke of
    a new function, and of a function whose env was reaped);
  - aws-lambda-rie: AWS's runtime interface emulator (built from the Go module proxy, pinned,
    cached in target/bench-tools), running the same bootstrap; cold = process start to the first
    response.
Warm latency: N sequential requests on one connection, in interleaved blocks (drift hits every
target alike). Throughput: C concurrent client processes for a few seconds each. Prints a markdown
table and writes it to benches/results/invoke.md (BENCH_OUT_INVOKE overrides).

Python 3 stdlib only. Environment: LAMINA_BIN, BENCH_N (2000), BENCH_SECONDS (5), BENCH_COLD (30),
BENCH_REAPED (8), BENCH_RIE_COLD (10), BENCH_MEMORY (MemorySize MB, 1769 = one vCPU), RIE_VERSION.
"""
import base64, configparser, datetime, hashlib, hmac, io, json, multiprocessing, os, signal
import shutil, socket, statistics, subprocess, sys, tempfile, time, zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAMINA = os.environ.get("LAMINA_BIN", os.path.join(ROOT, "target/release/lamina"))
OUT = os.environ.get("BENCH_OUT_INVOKE", os.path.join(ROOT, "benches/results/invoke.md"))
N = int(os.environ.get("BENCH_N", "2000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
COLD = int(os.environ.get("BENCH_COLD", "30"))
REAPED = int(os.environ.get("BENCH_REAPED", "8"))
RIE_COLD = int(os.environ.get("BENCH_RIE_COLD", "10"))
MEMORY = int(os.environ.get("BENCH_MEMORY", "1769"))
CONCURRENCY = (1, 4, 16)
BLOCKS = 4  # warm latency: N requests per target in this many interleaved blocks
RIE_MODULE = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"
RIE_VERSION = os.environ.get("RIE_VERSION", "v0.0.0-20261030222936-bef5c4ba774d")
RIE_DIR = os.path.join(ROOT, "target/bench-tools")
REGION = "us-east-1"
PAYLOAD = b'{"bench":"invoke","n":12345,"pad":"0123456789abcdef0123456789abcdef"}'
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


# --- SigV4 (service `lambda`), as botocore signs: host and x-amz-date, hex SHA-256 of the body ---

class Signer:
    def __init__(self, akid, secret, host):
        self.akid, self.secret, self.host = akid, secret, host
        self.day, self.key = None, None

    def _key(self, day):
        if day != self.day:
            k = hmac.new(("AWS4" + self.secret).encode(), day.encode(), hashlib.sha256).digest()
            for part in (REGION, "lambda", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self.day, self.key = day, k
        return self.key

    def request(self, method, path, body=b"", query="", extra=()):
        """The whole request as bytes. `path` is as sent (already percent-encoded); our paths use
        only unreserved characters and `/`, so the canonical (double-encoded) URI equals it."""
        now = time.gmtime()
        amzdate = time.strftime("%Y%m%dT%H%M%SZ", now)
        day = amzdate[:8]
        hdrs = sorted([("host", self.host), ("x-amz-date", amzdate)] +
                      [(k.lower(), v) for k, v in extra])
        signed = ";".join(k for k, _ in hdrs)
        creq = "\n".join([method, path, query, "".join(f"{k}:{v}\n" for k, v in hdrs), signed,
                          hashlib.sha256(body).hexdigest() if body else EMPTY_SHA])
        scope = f"{day}/{REGION}/lambda/aws4_request"
        sts = f"AWS4-HMAC-SHA256\n{amzdate}\n{scope}\n{hashlib.sha256(creq.encode()).hexdigest()}"
        sig = hmac.new(self._key(day), sts.encode(), hashlib.sha256).hexdigest()
        target = path + ("?" + query if query else "")
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host}", f"X-Amz-Date: {amzdate}",
                f"Authorization: AWS4-HMAC-SHA256 Credential={self.akid}/{scope}, "
                f"SignedHeaders={signed}, Signature={sig}"]
        head += [f"{k}: {v}" for k, v in extra]
        head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class FakeSigner(Signer):
    """Signs exactly like Signer (same client cost) for targets that ignore the signature."""
    def __init__(self, host):
        super().__init__("AKIDBENCHFLOOR00000", "floor-secret", host)


# --- a minimal keep-alive HTTP/1.1 client on a raw socket ---

class Conn:
    def __init__(self, port):
        self.port = port
        self.connect()

    def connect(self):
        self.s = socket.create_connection(("127.0.0.1", self.port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.s.close()

    def roundtrip(self, req):
        """Sends one request, returns (status, head bytes, body bytes)."""
        self.s.sendall(req)
        buf = self.buf
        while True:
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            buf += chunk
        head = buf[:i]
        j = head.lower().find(b"\r\ncontent-length:")
        n = 0
        if j >= 0:
            k = head.find(b"\r\n", j + 2)
            n = int(head[j + 17:k if k >= 0 else len(head)])
        end = i + 4 + n
        while len(buf) < end:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            buf += chunk
        self.buf = buf[end:]
        return int(head[9:12]), head, buf[i + 4:end]


class Target:
    """How to build one request for a target (the same shape for every target)."""
    def __init__(self, name, port, signer, path):
        self.name, self.port, self.signer, self.path = name, port, signer, path

    def request(self):
        return self.signer.request("POST", self.path, PAYLOAD)


# --- helpers ---

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.0005)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def layout():
    return "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1/hybrid"


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def stop(proc, timeout=10, group=False):
    """SIGTERM (to the process, or its own process group), wait, SIGKILL if it does not end."""
    if proc is None or proc.poll() is not None:
        return
    try:
        (os.killpg if group else os.kill)(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        (os.killpg if group else os.kill)(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def rie_binary():
    exe = os.path.join(RIE_DIR, "aws-lambda-rie")
    stamp = os.path.join(RIE_DIR, "aws-lambda-rie.version")
    if os.path.exists(exe) and os.path.exists(stamp) and open(stamp).read().strip() == RIE_VERSION:
        return exe, None
    if not shutil.which("go"):
        return None, "go is not installed"
    os.makedirs(RIE_DIR, exist_ok=True)
    env = dict(os.environ, GOBIN=RIE_DIR, GOFLAGS="-mod=mod")
    r = subprocess.run(["go", "install", f"{RIE_MODULE}@{RIE_VERSION}"], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(exe):
        return None, f"go install failed: {r.stderr.strip()[-300:]}"
    with open(stamp, "w") as f:
        f.write(RIE_VERSION + "\n")
    return exe, None


# --- lamina serve ---

class Lamina:
    def __init__(self, work, name, idle_timeout):
        self.state = os.path.join(work, name)
        os.makedirs(self.state)
        self.port = free_port()
        self.log = open(os.path.join(work, name + ".log"), "wb")
        self.proc = subprocess.Popen(
            [LAMINA, "serve", "--listen", f"127.0.0.1:{self.port}", "--state-dir", self.state,
             "--idle-timeout", str(idle_timeout)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, 30, self.proc)
        creds = os.path.join(self.state, "credentials")
        deadline = time.monotonic() + 10
        while not os.path.exists(creds) and time.monotonic() < deadline:
            time.sleep(0.01)
        cp = configparser.ConfigParser()
        cp.read(creds)
        self.signer = Signer(cp["default"]["aws_access_key_id"],
                             cp["default"]["aws_secret_access_key"], f"127.0.0.1:{self.port}")
        self.conn = Conn(self.port)

    def call(self, method, path, body=b"", extra=()):
        st, head, out = self.conn.roundtrip(self.signer.request(method, path, body, extra=extra))
        return st, head, out

    def create(self, name, zipbytes):
        body = json.dumps({
            "FunctionName": name, "Runtime": "provided", "Handler": "bootstrap",
            "Role": "arn:aws:iam::000000000000:role/bench", "MemorySize": MEMORY, "Timeout": 10,
            "Code": {"ZipFile": base64.b64encode(zipbytes).decode()}}).encode()
        st, _, out = self.call("POST", "/2015-03-31/functions", body,
                               extra=[("Content-Type", "application/json")])
        if st != 201:
            raise RuntimeError(f"CreateFunction {name}: {st} {out[:300]!r}")

    def invoke_path(self, name):
        return f"/2015-03-31/functions/{name}/invocations"

    def invoke_tail(self, name):
        """One Invoke with LogType Tail: (ms, Init Duration ms from the REPORT line, or None when
        the invoke was warm)."""
        req = self.signer.request("POST", self.invoke_path(name), PAYLOAD,
                                  extra=[("X-Amz-Log-Type", "Tail")])
        t = time.perf_counter()
        st, head, out = self.conn.roundtrip(req)
        ms = (time.perf_counter() - t) * 1000
        if st != 200 or out != PAYLOAD:
            raise RuntimeError(f"Invoke {name}: {st} {out[:300]!r}")
        logs = b""
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"x-amz-log-result:"):
                logs = base64.b64decode(line.split(b":", 1)[1].strip())
        init = None
        for part in logs.split(b"\t"):
            if part.startswith(b"Init Duration:"):
                init = float(part.split()[2])
        return ms, init

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass
        stop(self.proc, timeout=30)
        self.log.close()


# --- measurements ---

def warm_latency(targets):
    """N sequential requests per target on one connection each, in interleaved blocks."""
    conns = {t.name: Conn(t.port) for t in targets}
    lat = {t.name: [] for t in targets}
    try:
        for t in targets:  # warm-up
            for _ in range(200):
                check(t, conns[t.name].roundtrip(t.request()))
        per = max(1, N // BLOCKS)
        for _ in range(BLOCKS):
            for t in targets:
                c, xs = conns[t.name], lat[t.name]
                for _ in range(per):
                    req = t.request()
                    t0 = time.perf_counter()
                    r = c.roundtrip(req)
                    xs.append((time.perf_counter() - t0) * 1000)
                    check(t, r)
    finally:
        for c in conns.values():
            c.close()
    return lat


def check(t, r):
    st, _, body = r
    if st != 200 or body != PAYLOAD:
        raise RuntimeError(f"{t.name}: unexpected response {st} {body[:200]!r}")


def client_cost():
    """µs the client spends building and signing one request (no I/O)."""
    s = Signer("AKIDEXAMPLE", "secret", "127.0.0.1:9000")
    for _ in range(200):
        s.request("POST", "/2015-03-31/functions/bench/invocations", PAYLOAD)
    t = time.perf_counter()
    for _ in range(5000):
        s.request("POST", "/2015-03-31/functions/bench/invocations", PAYLOAD)
    return (time.perf_counter() - t) / 5000 * 1e6


def _worker(t, start, end, pipe):
    ok = err = 0
    try:
        c = Conn(t.port)
        warmed = False
        while time.time() < start or not warmed:
            st, _, body = c.roundtrip(t.request())
            warmed = warmed or (st == 200 and body == PAYLOAD)
        while True:
            now = time.time()
            if now >= end:
                break
            st, _, body = c.roundtrip(t.request())
            if st == 200 and body == PAYLOAD:
                ok += 1
            else:
                err += 1
        c.close()
        pipe.send((ok, err, None))
    except Exception as e:  # report, don't hang the parent
        pipe.send((ok, err, repr(e)))


def throughput(t, clients):
    """Successful requests/s of `clients` client processes, each with its own connection."""
    ctx = multiprocessing.get_context("fork")
    start = time.time() + 2.0  # warm-up: each client has at least one success before measuring
    end = start + SECONDS
    procs = []
    for _ in range(clients):
        a, b = ctx.Pipe(False)
        p = ctx.Process(target=_worker, args=(t, start, end, b))
        p.start()
        procs.append((p, a))
    ok = err = 0
    problems = []
    for p, a in procs:
        if a.poll(SECONDS + 60):
            o, e, prob = a.recv()
            ok, err = ok + o, err + e
            if prob:
                problems.append(prob)
        else:
            problems.append("client timed out")
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
    late = time.time() - end
    return ok / SECONDS, err, problems, late


def rie_cold(rie, bootstrap, work):
    """ms from starting aws-lambda-rie to the first response (Init included), and warm after."""
    out = []
    for _ in range(RIE_COLD):
        port, rport = free_port(), free_port()
        t0 = time.perf_counter()
        p = subprocess.Popen([rie, "--log-level", "error",
                              "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
                              "--runtime-api-address", f"127.0.0.1:{rport}", bootstrap],
                             cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_port(port, 10, p)
            c = Conn(port)
            r = c.roundtrip(FakeSigner(f"127.0.0.1:{port}").request(
                "POST", "/2015-03-31/functions/function/invocations", PAYLOAD))
            out.append((time.perf_counter() - t0) * 1000)
            c.close()
            if r[0] != 200 or r[2] != PAYLOAD:
                raise RuntimeError(f"aws-lambda-rie cold: {r[0]} {r[2][:200]!r}")
        finally:
            stop(p, group=True)
    return out


def make_zip(bootstrap):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("bootstrap", date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = (0o100755 << 16)
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(bootstrap, "rb") as f:
            z.writestr(info, f.read())
    return b.getvalue()


def main():
    if not os.path.exists(LAMINA):
        print(f"{LAMINA} not found (build it: cargo build --release)", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="lamina-bench-invoke-")
    procs, laminas = [], []
    notes = []
    load_start = loadavg()
    try:
        bootstrap = os.path.join(work, "bootstrap")
        echo = os.path.join(work, "echo_server")
        subprocess.run(["gcc", "-static", "-O2", "-o", bootstrap,
                        os.path.join(ROOT, "benches/echo_runtime.c")], check=True)
        subprocess.run(["gcc", "-O2", "-pthread", "-o", echo,
                        os.path.join(ROOT, "benches/echo_server.c")], check=True)
        zipbytes = make_zip(bootstrap)

        # floor
        fport = free_port()
        fp = subprocess.Popen([echo, str(fport)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, start_new_session=True)
        procs.append(fp)
        wait_port(fport, 10, fp)
        targets = [Target("floor (C echo server)", fport, FakeSigner(f"127.0.0.1:{fport}"), "/echo")]

        # lamina
        lam = Lamina(work, "state", 600)
        laminas.append(lam)
        lam.create("bench", zipbytes)
        for i in range(COLD):
            lam.create(f"bench-cold-{i}", zipbytes)
        ms, cold = lam.invoke_tail("bench")
        targets.append(Target("lamina warm", lam.port, lam.signer, lam.invoke_path("bench")))

        # aws-lambda-rie
        rie, why = rie_binary()
        rie_box = []  # the running RIE process (restarted after a crash)

        def start_rie():
            rport, rapi = free_port(), free_port()
            p = subprocess.Popen(
                [rie, "--log-level", "error", "--runtime-interface-emulator-address",
                 f"127.0.0.1:{rport}", "--runtime-api-address", f"127.0.0.1:{rapi}", bootstrap],
                cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
            procs.append(p)
            rie_box[:] = [p]
            wait_port(rport, 10, p)
            return Target("aws-lambda-rie warm", rport, FakeSigner(f"127.0.0.1:{rport}"),
                          "/2015-03-31/functions/function/invocations")
        if rie:
            targets.append(start_rie())
        else:
            notes.append(f"aws-lambda-rie skipped: {why}")

        cost = client_cost()
        print(f"client cost (build + sign one request, no I/O): {cost:.1f} µs", flush=True)
        print(f"warm latency: {N} sequential requests per target ...", flush=True)
        lat = warm_latency(targets)
        tput = {}
        for t in targets:
            for c in CONCURRENCY:
                is_rie = t.name.startswith("aws-lambda-rie")
                if is_rie and rie_box[0].poll() is not None:
                    t = start_rie()
                rps, err, problems, late = throughput(t, c)
                crashed = is_rie and rie_box[0].poll() is not None
                tput[(t.name, c)] = (rps, err, crashed)
                print(f"throughput {t.name} C={c}: {rps:.0f} req/s, {err} errors"
                      + (f", problems: {problems[:3]}" if problems else ""), flush=True)
                if crashed:
                    notes.append(f"{t.name} C={c}: aws-lambda-rie exited during the run "
                                 f"(exit status {rie_box[0].returncode}); {len(problems)} clients failed")
                elif problems:
                    notes.append(f"{t.name} C={c}: {len(problems)} clients failed: {problems[0]}")

        # lamina cold: first invoke of each new function
        print(f"cold: first invoke of {COLD} new functions ...", flush=True)
        cold_ms, init_ms = [], []
        for i in range(COLD):
            ms, init = lam.invoke_tail(f"bench-cold-{i}")
            if init is None:
                raise RuntimeError(f"bench-cold-{i}: first invoke was not a cold start")
            cold_ms.append(ms)
            init_ms.append(init)
        if init_ms:
            notes.append(f"lamina cold: median Init Duration (lamina's REPORT line: env built, "
                         f"runtime started, until its first /next) {statistics.median(init_ms):.2f} ms "
                         f"of the {statistics.median(cold_ms):.2f} ms request.")
        lam.close()
        laminas.remove(lam)

        # lamina cold after the env was reaped: an instance with --idle-timeout 1
        reaped_ms = []
        if REAPED:
            print(f"cold after reap: {REAPED} rounds with --idle-timeout 1 ...", flush=True)
            lam2 = Lamina(work, "state-reap", 1)
            laminas.append(lam2)
            lam2.create("bench", zipbytes)
            lam2.invoke_tail("bench")
            for _ in range(REAPED):
                time.sleep(2.5)
                ms, init = lam2.invoke_tail("bench")
                if init is not None:
                    reaped_ms.append(ms)
            if len(reaped_ms) < REAPED:
                notes.append(f"cold after reap: {REAPED - len(reaped_ms)} of {REAPED} invokes were warm (not counted)")
            lam2.close()
            laminas.remove(lam2)

        rie_cold_ms = []
        if rie and RIE_COLD:
            stop(rie_box[0], group=True)
            print(f"aws-lambda-rie cold: {RIE_COLD} process starts ...", flush=True)
            rie_cold_ms = rie_cold(rie, bootstrap, work)

        report(targets, lat, tput, cold_ms, reaped_ms, rie_cold_ms, cost, notes, load_start,
               rie is not None)
    finally:
        for l in laminas:
            l.close()
        for p in procs:
            stop(p, group=True)
        shutil.rmtree(work, ignore_errors=True)


def report(targets, lat, tput, cold_ms, reaped_ms, rie_cold_ms, cost, notes, load_start, have_rie):
    names = [t.name for t in targets]
    floor = statistics.median(lat[names[0]])
    rie_name = "aws-lambda-rie warm"
    rie50 = statistics.median(lat[rie_name]) if have_rie else None
    rie_cold50 = statistics.median(rie_cold_ms) if rie_cold_ms else None
    host = os.uname()
    lines = [
        f"Invoke through the HTTP API: a static `provided` echo function (C, MemorySize {MEMORY} MB), "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, kernel {host.release}, "
        f"cgroup layout {layout()}, load average {load_start} at start, {loadavg()} at end.",
        "",
        f"Warm: {N} sequential signed Invoke requests per target on one keep-alive connection "
        f"({BLOCKS} interleaved blocks, after 200 warm-up requests). req/s: C client processes, "
        f"one connection each, {SECONDS:g} s each (after a 2 s warm-up). The client (Python, "
        f"stdlib sockets) signs every request for every target ({cost:.1f} µs per request): "
        f"latency is timed from send to the last response byte (signing is done before), "
        f"req/s includes the signing. The floor row is the client's own cost plus a minimal "
        f"server: at C=16 the 16 Python clients on {os.cpu_count()} CPUs limit it, not the server.",
        "",
        "| target | p50 ms | p99 ms | mean ms | p50 x floor | p50 - floor ms | p50 x rie | "
        + " | ".join(f"req/s C={c} (x floor)" for c in CONCURRENCY) + " |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(CONCURRENCY),
    ]
    for n in names:
        xs = lat[n]
        m = statistics.median(xs)
        cells = []
        for c in CONCURRENCY:
            rps, err, crashed = tput[(n, c)]
            f = tput[(names[0], c)][0]
            cell = f"{rps:.0f} ({rps / f:.2f})"
            if crashed:
                cell = f"crashed ({rps:.0f} ok)"
            elif err:
                cell += f", {err} errors"
            cells.append(cell)
        lines.append(f"| {n} | {m:.3f} | {pct(xs, 99):.3f} | {statistics.mean(xs):.3f} | "
                     f"{m / floor:.2f} | {m - floor:.3f} | "
                     f"{(m / rie50) if rie50 else float('nan'):.2f} | " + " | ".join(cells) + " |")
    for name, xs, base in (("lamina cold (first invoke of a new function)", cold_ms, rie_cold50),
                           ("lamina cold (same function, env reaped)", reaped_ms, rie_cold50),
                           ("aws-lambda-rie cold (process start to first response)", rie_cold_ms, rie_cold50)):
        if not xs:
            continue
        m = statistics.median(xs)
        lines.append(f"| {name}, n={len(xs)} | {m:.2f} | {pct(xs, 99):.2f} | {statistics.mean(xs):.2f} | "
                     f"{m / floor:.0f} | {m - floor:.2f} | {(m / base) if base else float('nan'):.2f} | "
                     + " | ".join("-" for _ in CONCURRENCY) + " |")
    lw = statistics.median(lat["lamina warm"])
    lc = statistics.median(cold_ms) if cold_ms else float("nan")
    lines += ["",
              f"Targets: warm p50 {lw:.3f} ms (target <= 0.3: {'met' if lw <= 0.3 else 'NOT met'}), "
              f"cold p50 {lc:.2f} ms (target <= 10: {'met' if lc <= 10 else 'NOT met'})."]
    if have_rie:
        lines.append("aws-lambda-rie runs one env and serves one invoke at a time: a concurrent "
                     "request is refused (400, counted as an error, not in req/s) or, in the "
                     "version pinned here, can crash it (nil-pointer panic in rapidcore's "
                     "Server.Invoke after `ReserveFailed: AlreadyReserved`): `crashed` above.")
    lines += notes
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    os.makedirs(os.path.dirname(OUT) or ".", exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text)
    print(f"written to {OUT}")


if __name__ == "__main__":
    sys.exit(main())
