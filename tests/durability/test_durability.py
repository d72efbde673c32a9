"""Durability: `lamina serve` is SIGKILLed at random moments of a mixed workload, 50 times.

Each round restarts lamina on the same state directory, checks the invariants below through the
API and on disk, runs the workload from a few client threads (each owning its functions), kills
lamina with SIGKILL after a random delay, and notes what each client had acknowledged (a 2xx
answer) and what was in flight. A request in flight at the kill may or may not have happened,
so each function has a set of possible states; after the restart its actual state must be one
of them (and becomes the only one).

Invariants after every restart:
- functions: every listed function is fully there (GetFunction works, State Active, its last
  update not stuck in progress, CodeSha256 names a blob in blobs/sha256 whose SHA-256 it is and an
  unpacked code/<hex> tree); an acknowledged create exists unless acknowledged deleted; an
  unacknowledged one exists completely or not at all; configuration and code are the last
  acknowledged ones (or the in-flight update's); invoking a sample runs that code and config;
- versions: every acknowledged version is there with the code and configuration it was
  published with; at most the in-flight publish added one more (a snapshot of $LATEST);
- async events: every acknowledged event (InvocationType Event, 202) is processed: the sink
  function prints its id into its log stream (logs/aws/lambda/<sink>/...). Processing takes a
  little while, so events acknowledged ASYNC_LAG_ROUNDS rounds ago must be in the logs after each
  restart, and every one at the end;
- no orphans of the dead instance: no run directory other than the live instance's (no mounts
  under it), no cgroup under lamina's parent group other than the live instance's in any
  hierarchy (cgroup v2, or every v1 controller on v1/hybrid hosts), no process in such a group,
  and no process left by the dead lamina (this test is a child subreaper: orphans of the killed
  lamina are re-parented to it, so they are its children).

The servers use their own run directory and cgroup parent, so other lamina instances on the
host neither disturb nor are disturbed by the checks.

Environment: LAMINA_BIN (default target/release/lamina), LAMINA_DURABILITY_KILLS (50),
LAMINA_DURABILITY_SEED (random), LAMINA_DURABILITY_OPS (comma-separated subset of ALL_OPS, for
trying the test against a lamina that lacks some operations; every operation of the mix must be
acknowledged at least once for the test to pass).
"""
import base64
import ctypes
import glob
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import zipfile

import boto3
import botocore.config
import botocore.exceptions
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LAMINA = os.environ.get("LAMINA_BIN", os.path.join(ROOT, "target/release/lamina"))
KILLS = int(os.environ.get("LAMINA_DURABILITY_KILLS", "50"))
SEED = int(os.environ.get("LAMINA_DURABILITY_SEED", str(random.SystemRandom().randrange(1 << 32))))
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
REGION = "us-east-1"

# The workload's operations and their weights.
ALL_OPS = {
    "create_function": 3,
    "update_function_code": 2,
    "update_function_configuration": 2,
    "publish_version": 2,
    "invoke_event": 4,
    "invoke": 2,
    "delete_function": 1,
}
OPS = {op: ALL_OPS[op] for op in os.environ.get("LAMINA_DURABILITY_OPS", ",".join(ALL_OPS)).split(",")}
CLIENTS = 3
MAX_LIVE = 4  # functions per client; at the cap a create becomes a delete
SINKS = ["dur-sink-0", "dur-sink-1"]
ASYNC_LAG_ROUNDS = 5
FINAL_ASYNC_WAIT = 120
MIN_DELAY, MAX_DELAY = 0.05, 2.0  # seconds of workload before the kill

PR_SET_CHILD_SUBREAPER = 36


def mkzip(files):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o644 << 16
            z.writestr(info, content)
    return b.getvalue()


SINK_ZIP = mkzip({"app.py": "def handler(event, context):\n"
                            "    print('EVENT', event.get('event_id'), flush=True)\n"
                            "    return {'ok': True}\n"})


def worker_zip(variant):
    return mkzip({"app.py": f"import os, time\nVARIANT = {variant!r}\n"
                            "def handler(event, context):\n"
                            "    time.sleep(min(float(event.get('sleep', 0)), 1))\n"
                            "    return {'variant': VARIANT, 'gen': os.environ.get('GEN'),\n"
                            "            'version': context.function_version}\n"})


def sha_b64(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Violation(AssertionError):
    pass


class Lamina:
    """`lamina serve` on a persistent state dir, restartable, with its own run dir and cgroup parent."""

    def __init__(self):
        tag = os.urandom(4).hex()
        self.state = tempfile.mkdtemp(prefix="lamina-durability-")
        self.run_dir = f"/run/lamina-durability-{tag}"
        self.cgroup_parent = f"lamina-durability-{tag}"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.state, "serve.log")
        self.proc = None
        self.keys = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if k != "LAMINA_ACCESS_LOG"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [LAMINA, "--run-dir", self.run_dir, "--cgroup-parent", self.cgroup_parent, "serve",
                 "--listen", f"127.0.0.1:{self.port}", "--state-dir", self.state, "--region", REGION,
                 "--account-id", "123456789012"], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Violation(f"lamina serve exited {self.proc.returncode} at start:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.01)
        else:
            raise Violation("lamina serve did not start listening:\n" + self.log_tail())
        if self.keys is None:
            text = open(os.path.join(self.state, "credentials")).read()
            self.keys = dict(l.split(" = ", 1) for l in text.splitlines() if " = " in l)

    def kill(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def client(self, session=None):
        cfg = botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=60,
                                     max_pool_connections=4)
        return (session or boto3.session.Session()).client(
            "lambda", endpoint_url=self.endpoint, region_name=REGION, config=cfg,
            aws_access_key_id=self.keys["aws_access_key_id"],
            aws_secret_access_key=self.keys["aws_secret_access_key"])

    def log_tail(self, n=40):
        try:
            return "".join(open(self.log_path, errors="replace").readlines()[-n:])
        except OSError:
            return ""

    def live_instance(self):
        return [d for d in os.listdir(self.run_dir) if d.startswith(f"{self.proc.pid}-")]

    def cgroup_parents(self):
        """lamina's parent group in every hierarchy it uses (as sandbox/cgroup.rs `detect`)."""
        root = "/sys/fs/cgroup"
        if os.path.exists(os.path.join(root, "cgroup.controllers")):
            return [os.path.join(root, self.cgroup_parent)]
        out = []
        for c in ["memory", "cpu", "cpuacct", "pids", "freezer", "blkio"]:
            real = os.path.realpath(os.path.join(root, c))
            if os.path.isdir(real) and os.path.join(real, self.cgroup_parent) not in out:
                out.append(os.path.join(real, self.cgroup_parent))
        return out


# What a function looks like: exists, CodeSha256, Description, GEN env var, Timeout, and its
# published versions {number: (CodeSha256, Description, GEN, Timeout)}.
ABSENT = {"exists": False}


def snapshot(s):
    return (s["sha"], s["desc"], s["gen"], s["timeout"])


class Fn:
    def __init__(self, name):
        self.name = name
        self.states = [ABSENT]  # the possible states; exactly one while no request is in doubt
        self.in_flight_publish = False

    @property
    def state(self):
        assert len(self.states) == 1, (self.name, self.states)
        return self.states[0]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {op: 0 for op in OPS}
        self.in_doubt = {op: 0 for op in OPS}
        self.client_errors = {}
        self.server_errors = []

    def add(self, kind, op, detail=None):
        with self.lock:
            if kind == "acked":
                self.acked[op] += 1
            elif kind == "in_doubt":
                self.in_doubt[op] += 1
            elif kind == "client_error":
                self.client_errors.setdefault(op, {}).setdefault(detail, 0)
                self.client_errors[op][detail] += 1
            else:
                self.server_errors.append((op, detail))


class Workload:
    def __init__(self, srv, rng):
        self.srv = srv
        self.rng = rng
        self.fns = {}  # name -> Fn (every function ever created, deleted ones too)
        self.owned = [[] for _ in range(CLIENTS)]
        self.seq = [0] * CLIENTS
        self.variants = {sha_b64(SINK_ZIP): "sink"}  # CodeSha256 -> variant
        self.events = {}  # acknowledged event id -> round
        self.events_lock = threading.Lock()
        self.stats = Stats()
        self.round = 0
        self.sessions = [boto3.session.Session() for _ in range(CLIENTS + 1)]

    # --- one client thread -------------------------------------------------------------------
    def run_client(self, i, stop, rng):
        lam = self.srv.client(self.sessions[i])
        while not stop.is_set():
            op = rng.choices(list(OPS), weights=list(OPS.values()))[0]
            if not self.step(i, lam, op, rng):
                stop.wait()  # lamina is gone: wait for the round to end

    def live(self, i):
        return [f for f in self.owned[i] if f.states[0]["exists"]]

    def step(self, i, lam, op, rng):
        """One operation; False when lamina did not answer."""
        if op == "invoke_event":
            eid = str(uuid.uuid4())
            ok = self.call(op, None, None, lambda: lam.invoke(
                FunctionName=rng.choice(SINKS), InvocationType="Event",
                Payload=json.dumps({"event_id": eid}).encode()))
            if ok == "acked":
                with self.events_lock:
                    self.events[eid] = self.round
            return ok != "no_answer"
        live = self.live(i)
        if op == "create_function" and len(live) >= MAX_LIVE and "delete_function" in OPS:
            op = "delete_function"
        if op == "create_function":
            self.seq[i] += 1
            name = f"dur-c{i}-{self.seq[i]}"
            variant = f"{name}-v0"
            code = worker_zip(variant)
            self.variants[sha_b64(code)] = variant
            f = Fn(name)
            self.fns[name] = f
            self.owned[i].append(f)
            after = {"exists": True, "sha": sha_b64(code), "desc": "gen 0", "gen": "0", "timeout": 5,
                     "versions": {}}
            ok = self.call(op, f, after, lambda: lam.create_function(
                FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                Code={"ZipFile": code}, Description="gen 0", Timeout=5,
                Environment={"Variables": {"GEN": "0"}}))
            return ok != "no_answer"
        if not live:
            return True
        f = rng.choice(live)
        s = f.state
        if op == "update_function_code":
            variant = f"{f.name}-v{rng.randrange(1 << 30)}"
            code = worker_zip(variant)
            self.variants[sha_b64(code)] = variant
            after = dict(s, sha=sha_b64(code))
            call = lambda: lam.update_function_code(FunctionName=f.name, ZipFile=code)  # noqa: E731
        elif op == "update_function_configuration":
            gen = str(rng.randrange(1, 1 << 30))
            timeout = rng.choice([3, 5, 7])
            after = dict(s, desc=f"gen {gen}", gen=gen, timeout=timeout)
            call = lambda: lam.update_function_configuration(  # noqa: E731
                FunctionName=f.name, Description=f"gen {gen}", Timeout=timeout,
                Environment={"Variables": {"GEN": gen}})
        elif op == "publish_version":
            # In doubt, the versions actually there are checked separately (see verify).
            after = s
            f.in_flight_publish = True
            r = {}

            def call():
                r.update(lam.publish_version(FunctionName=f.name))
            ok = self.call(op, f, after, call)
            if ok == "acked":
                f.in_flight_publish = False
                v = r["Version"]
                got = (r["CodeSha256"], r.get("Description", ""), r.get("Environment", {}).get("Variables", {}).get("GEN"),
                       r["Timeout"])
                if got != snapshot(s):
                    self.stats.add("server_error", op, f"{f.name}: version {v} is {got}, $LATEST was {snapshot(s)}")
                versions = dict(s["versions"])
                if v in versions and versions[v] != got:
                    self.stats.add("server_error", op, f"{f.name}: version {v} changed: {versions[v]} -> {got}")
                versions[v] = got
                f.states = [dict(s, versions=versions)]
            elif ok == "rejected":
                f.in_flight_publish = False
            return ok != "no_answer"
        elif op == "invoke":
            r = {}

            def call():
                r.update(lam.invoke(FunctionName=f.name, Payload=json.dumps({"sleep": rng.choice([0, 0, 0.3])})))
            ok = self.call(op, None, None, call)
            if ok == "acked" and "FunctionError" in r:
                self.stats.add("server_error", op, f"{f.name}: {r['Payload'].read()[:300]!r}")
            return ok != "no_answer"
        elif op == "delete_function":
            after = ABSENT
            call = lambda: lam.delete_function(FunctionName=f.name)  # noqa: E731
        else:
            raise AssertionError(op)
        return self.call(op, f, after, call) != "no_answer"

    def call(self, op, f, after, fn):
        """Runs one request: 'acked', 'rejected' (a 4xx: nothing happened) or 'no_answer'."""
        before = f.states[0] if f else None
        try:
            fn()
        except botocore.exceptions.ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = e.response.get("Error", {}).get("Code", "")
            if status >= 500:
                # A failure, reported as such at the end; whether it changed anything is unknown.
                self.stats.add("server_error", op, f"{status} {code}: {e}")
                if f:
                    f.states = [before, after]
                return "server_error"
            self.stats.add("client_error", op, code)
            return "rejected"
        except (botocore.exceptions.BotoCoreError, OSError):
            # No answer (lamina was killed): the request may or may not have happened.
            self.stats.add("in_doubt", op)
            if f:
                f.states = [before, after]
            return "no_answer"
        self.stats.add("acked", op)
        if f:
            f.states = [after]
        return "acked"


def observe_function(srv, lam, name, violations):
    """The function's state as lamina reports it, checking that it is complete."""
    try:
        g = lam.get_function(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        return ABSENT
    deadline = time.time() + 10
    while g["Configuration"].get("LastUpdateStatus") == "InProgress" and time.time() < deadline:
        time.sleep(0.1)
        g = lam.get_function(FunctionName=name)
    c = g["Configuration"]
    if c.get("State") != "Active" or c.get("LastUpdateStatus") != "Successful":
        violations.append(f"{name}: State {c.get('State')}, LastUpdateStatus {c.get('LastUpdateStatus')} "
                          f"({c.get('LastUpdateStatusReason')})")
    check_code(srv, name, c["CodeSha256"], violations)
    s = {"exists": True, "sha": c["CodeSha256"], "desc": c.get("Description", ""),
         "gen": c.get("Environment", {}).get("Variables", {}).get("GEN"), "timeout": c["Timeout"], "versions": {}}
    if "publish_version" in OPS:
        for p in lam.get_paginator("list_versions_by_function").paginate(FunctionName=name):
            for v in p["Versions"]:
                if v["Version"] == "$LATEST":
                    continue
                vc = lam.get_function(FunctionName=name, Qualifier=v["Version"])["Configuration"]
                check_code(srv, f"{name}:{v['Version']}", vc["CodeSha256"], violations)
                s["versions"][v["Version"]] = (vc["CodeSha256"], vc.get("Description", ""),
                                               vc.get("Environment", {}).get("Variables", {}).get("GEN"),
                                               vc["Timeout"])
    return s


def check_code(srv, what, code_sha, violations):
    hexd = base64.b64decode(code_sha).hex()
    blob = os.path.join(srv.state, "blobs", "sha256", hexd)
    try:
        data = open(blob, "rb").read()
    except OSError as e:
        violations.append(f"{what}: blob of CodeSha256 {code_sha}: {e}")
        return
    if sha_b64(data) != code_sha:
        violations.append(f"{what}: blob {blob} does not hash to CodeSha256 {code_sha}")
    if not os.path.isfile(os.path.join(srv.state, "code", hexd, "app.py")):
        violations.append(f"{what}: unpacked code/{hexd}/app.py missing")


def matches(fn, observed):
    """Whether `observed` is one of the function's possible states (versions: see the module doc)."""
    for cand in fn.states:
        if cand == observed:
            return True
        if not (cand["exists"] and observed["exists"]):
            continue
        if {k: v for k, v in cand.items() if k != "versions"} != {k: v for k, v in observed.items() if k != "versions"}:
            continue
        extra = {v: c for v, c in observed["versions"].items() if v not in cand["versions"]}
        kept = all(observed["versions"].get(v) == c for v, c in cand["versions"].items())
        if kept and fn.in_flight_publish and len(extra) == 1 and list(extra.values())[0] == snapshot(cand):
            return True
    return False


def verify(srv, w, rng, rnd, final=False):
    """The invariants through the API and on disk; returns a list of violations."""
    v = []
    lam = srv.client(w.sessions[CLIENTS])
    listed = [f["FunctionName"] for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"]]
    unknown = set(listed) - set(w.fns) - set(SINKS)
    if unknown:
        v.append(f"functions nobody created: {sorted(unknown)}")
    for name in SINKS:
        if name not in listed or not observe_function(srv, lam, name, v)["exists"]:
            v.append(f"sink {name} missing")
    for name, f in w.fns.items():
        if f.states == [ABSENT] and name not in listed:
            continue  # deleted (or never created) and still gone: nothing more to ask
        obs = observe_function(srv, lam, name, v)
        if obs["exists"] != (name in listed):
            v.append(f"{name}: GetFunction {'finds' if obs['exists'] else 'does not find'} it but "
                     f"ListFunctions {'lists' if name in listed else 'does not list'} it")
        if not matches(f, obs):
            v.append(f"{name}: state {obs} is none of the possible {f.states} "
                     f"(publish in flight: {f.in_flight_publish})")
        f.states = [obs]
        f.in_flight_publish = False
    # The code and configuration really run: invoke a sample ($LATEST and a version).
    existing = [f for f in w.fns.values() if f.state["exists"]]
    for f in rng.sample(existing, min(len(existing), 2)):
        s = f.state
        targets = [("$LATEST", snapshot(s))]
        if s["versions"]:
            ver = rng.choice(sorted(s["versions"]))
            targets.append((ver, s["versions"][ver]))
        for q, (sha, _desc, gen, _timeout) in targets:
            r = lam.invoke(FunctionName=f.name, Qualifier=q, Payload=b'{}')
            body = json.loads(r["Payload"].read())
            want = {"variant": w.variants.get(sha), "gen": gen, "version": q}
            if r.get("FunctionError") or body != want:
                v.append(f"invoke {f.name}:{q}: {body} (FunctionError {r.get('FunctionError')}), want {want}")
    v += check_async(srv, w, rnd, final)
    v += check_orphans(srv)
    return v


def processed_events(srv):
    seen = set()
    for name in SINKS:
        for path in glob.glob(os.path.join(srv.state, "logs", "aws", "lambda", name, "**", "*.log"), recursive=True):
            seen.update(re.findall(r"EVENT ([0-9a-f-]{36})", open(path, errors="replace").read()))
    return seen


def check_async(srv, w, rnd, final):
    if final:
        deadline = time.time() + FINAL_ASYNC_WAIT
        while time.time() < deadline and set(w.events) - processed_events(srv):
            time.sleep(0.5)
        due = set(w.events)
    else:
        due = {e for e, r in w.events.items() if r <= rnd - ASYNC_LAG_ROUNDS}
    lost = due - processed_events(srv)
    if lost:
        return [f"{len(lost)} of {len(due)} acknowledged async events not processed"
                f"{'' if final else f' {ASYNC_LAG_ROUNDS} rounds later'}: {sorted(lost)[:5]}"]
    return []


def pids_of_group_tree(d):
    out = []
    for dirpath, _dirs, files in os.walk(d):
        if "cgroup.procs" in files:
            try:
                out += [int(p) for p in open(os.path.join(dirpath, "cgroup.procs")).read().split()]
            except OSError:
                pass
    return out


def proc_stat(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return rest[0], int(rest[1])  # state, ppid


def cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


class Reaper(threading.Thread):
    """Reaps the processes the killed lamina leaves to us (its subreaper), as PID 1 would for a
    lamina run by init: a zombie still pins its cgroup, so reclaim could not remove it otherwise.
    Never reaps lamina serve itself (its Popen does)."""

    def __init__(self, srv):
        super().__init__(daemon=True)
        self.srv = srv
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
            if info is None or (self.srv.proc is not None and info.si_pid == self.srv.proc.pid):
                self.done.wait(0.005)
                continue
            try:
                os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                pass


def orphans(srv):
    """Our live children other than lamina serve: what a dead lamina left running."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        st = proc_stat(pid)
        if st is None or st[1] != me or st[0] == "Z" or (srv.proc is not None and pid == srv.proc.pid):
            continue
        out.append(pid)
    return out


def mount_points():
    out = []
    for line in open("/proc/self/mountinfo"):
        mp = line.split()[4]
        out.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mp))
    return out


def check_orphans(srv):
    v = []
    live = srv.live_instance()
    if len(live) != 1:
        v.append(f"live instance dirs for pid {srv.proc.pid}: {live}")
    others = [d for d in os.listdir(srv.run_dir) if d not in live]
    if others:
        v.append(f"run dir entries of dead instances: {others}")
    for mp in mount_points():
        if mp.startswith(srv.run_dir + "/") and not any(mp.startswith(f"{srv.run_dir}/{l}/") for l in live):
            v.append(f"mount of a dead instance: {mp}")
    for parent in srv.cgroup_parents():
        if not os.path.isdir(parent):
            v.append(f"cgroup parent {parent} missing")
            continue
        for child in os.listdir(parent):
            d = os.path.join(parent, child)
            if os.path.isdir(d) and child not in live:
                v.append(f"cgroup of a dead instance: {d} (processes {pids_of_group_tree(d)})")
    # Processes in a group of ours outside the live instance (all hierarchies, from /proc).
    prefix = f"/{srv.cgroup_parent}/"
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            lines = open(f"/proc/{d}/cgroup").read().splitlines()
        except OSError:
            continue
        for l in lines:
            path = l.split(":", 2)[2]
            if path.startswith(prefix) and not any(path.startswith(f"{prefix}{x}/") or path == f"{prefix}{x}"
                                                   for x in live):
                v.append(f"process {d} ({cmdline(d)}) in {l}")
                break
    # Processes the dead lamina left (re-parented to us, the subreaper); envs not yet placed in
    # their groups end on their own when their control socket closes: give them a moment.
    deadline = time.time() + 3
    left = orphans(srv)
    while left and time.time() < deadline:
        time.sleep(0.05)
        left = orphans(srv)
    for pid in left:
        v.append(f"orphan process {pid} of a dead lamina: {cmdline(pid)}")
    return v


def cleanup(srv):
    """Should a check have failed: ends what is left in our groups (by pid) and removes them."""
    if srv.proc and srv.proc.poll() is None:
        srv.kill()
    parents = srv.cgroup_parents()
    deadline = time.time() + 10
    while any(os.path.isdir(p) for p in parents) and time.time() < deadline:
        for parent in parents:
            for d, _dirs, files in os.walk(parent):
                if "freezer.state" in files:  # a frozen task dies only once thawed
                    try:
                        with open(os.path.join(d, "freezer.state"), "w") as f:
                            f.write("THAWED")
                    except OSError:
                        pass
        for parent in parents:
            for p in pids_of_group_tree(parent):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.02)
        for parent in parents:
            for d, _dirs, _files in sorted(os.walk(parent), key=lambda t: -len(t[0])):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
    if not any(mp.startswith(srv.run_dir + "/") for mp in mount_points()):
        shutil.rmtree(srv.run_dir, ignore_errors=True)
    shutil.rmtree(srv.state, ignore_errors=True)


def test_sigkill_during_mixed_workload():
    if os.geteuid() != 0:
        pytest.skip("lamina serve needs root")
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    rng = random.Random(SEED)
    srv = Lamina()
    w = Workload(srv, rng)
    reaper = Reaper(srv)
    reaper.start()
    t0 = time.time()
    print(f"\ndurability: seed {SEED} (LAMINA_DURABILITY_SEED), {KILLS} kills, ops {list(OPS)}, state {srv.state}")
    try:
        srv.start()
        lam = srv.client(w.sessions[CLIENTS])
        for name in SINKS:
            lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": SINK_ZIP}, Timeout=10)
        for rnd in range(1, KILLS + 1):
            w.round = rnd
            stop = threading.Event()
            threads = [threading.Thread(target=w.run_client, args=(i, stop, random.Random(rng.random())))
                       for i in range(CLIENTS)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(MIN_DELAY, MAX_DELAY))
            if srv.proc.poll() is not None:
                raise Violation(f"round {rnd}: lamina serve died on its own ({srv.proc.returncode}):\n{srv.log_tail()}")
            srv.kill()
            stop.set()
            for t in threads:
                t.join()
            srv.start()
            violations = verify(srv, w, rng, rnd, final=rnd == KILLS)
            if w.stats.server_errors:
                violations += [f"5xx or wrong answer to {op}: {d}" for op, d in w.stats.server_errors]
            if violations:
                raise Violation(f"after kill {rnd} (seed {SEED}):\n  " + "\n  ".join(violations)
                                + f"\nlamina log:\n{srv.log_tail()}")
        code = srv.stop()
        assert code == 0, f"lamina serve exited {code} on SIGTERM:\n{srv.log_tail()}"
        left = [p for p in srv.cgroup_parents() if os.path.exists(p)]
        assert not left, f"cgroup parents left after a clean stop: {left}"
        assert os.listdir(srv.run_dir) == [], f"run dir not empty after a clean stop: {os.listdir(srv.run_dir)}"
    finally:
        elapsed = time.time() - t0
        s = w.stats
        print(f"durability: {w.round} kills in {elapsed:.1f} s; acknowledged {s.acked}; in doubt at a kill "
              f"{s.in_doubt}; 4xx {s.client_errors}; async events acknowledged {len(w.events)}; "
              f"functions created {len(w.fns)}")
        cleanup(srv)
        reaper.done.set()
        reaper.join()
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    never = [op for op in OPS if s.acked[op] == 0]
    assert not never, (f"operations never acknowledged: {never} (4xx answers: "
                       f"{ {op: s.client_errors.get(op) for op in never} }); is each implemented?")
