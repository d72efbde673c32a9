#!/usr/bin/env python3
"""One table of every benchmark's figures, from the results the benchmarks of this `make bench`
run just wrote (benches/results/{coldstart,invoke,runtimes,density}.md and density.json), with
the peers measured in the same run. Prints it and writes benches/results/summary.md."""
import json, os, re, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = os.path.join(ROOT, "benches/results")
OUT = os.environ.get("BENCH_OUT_SUMMARY", os.path.join(RES, "summary.md"))


def table_rows(name):
    """{first cell: [cells]} of every markdown table row in results/<name>.md."""
    path = os.path.join(RES, name)
    rows = {}
    if not os.path.exists(path):
        return rows, None
    text = open(path).read()
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|--") and not line.startswith("|:"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return rows, text


def find(rows, prefix):
    for k, v in rows.items():
        if k.startswith(prefix):
            return v
    return None


def num(s):
    m = re.match(r"[-\d.]+", s or "")
    return float(m.group()) if m else None


def main():
    out = []
    cs, cs_text = table_rows("coldstart.md")
    iv, _ = table_rows("invoke.md")
    rt, _ = table_rows("runtimes.md")
    dens = {}
    dj = os.path.join(RES, "density.json")
    if os.path.exists(dj):
        dens = json.load(open(dj))
    rows = []  # (issue, figure, lamina, peers, target, verdict)

    def verdict(ok):
        return "n/a" if ok is None else ("met" if ok else "**not met**")

    if cs:
        floor = find(cs, "unshare")
        bwrap = find(cs, "bwrap")
        crun = find(cs, "crun")
        host = find(cs, "lamina run (host")
        if host and floor:
            l, f = num(host[0]), num(floor[0])
            b = num(bwrap[0]) if bwrap else None
            peers = f"unshare {f:.2f}, bwrap {b:.2f}" if b else f"unshare {f:.2f}"
            peers += f", crun {crun[0]}" if crun else ", crun: does not run on this host"
            rows.append(("cold start (`lamina run`)", "median ms", f"{l:.2f}", peers,
                         "<= 1.2x unshare", verdict(l <= 1.2 * f)))
    if iv:
        lw, rw = find(iv, "lamina warm"), find(iv, "aws-lambda-rie warm")
        if lw:
            rows.append(("warm invoke", "p50 / p99 ms", f"{lw[0]} / {lw[1]}",
                         f"aws-lambda-rie {rw[0]} / {rw[1]}" if rw else "-", "p50 <= 0.3",
                         verdict(num(lw[0]) <= 0.3)))
            rows.append(("invoke throughput", "req/s C=1 / C=16", f"{lw[6].split()[0]} / "
                         f"{lw[8].split()[0]}", f"aws-lambda-rie {rw[6].split()[0]} / {rw[8]}"
                         if rw else "-", "-", "-"))
        lc, rc = find(iv, "lamina cold (first"), find(iv, "aws-lambda-rie cold")
        if lc:
            rows.append(("cold invoke (new function)", "p50 ms", lc[0],
                         f"aws-lambda-rie {rc[0]}" if rc else "-", "<= 10",
                         verdict(num(lc[0]) <= 10)))
    for name, cells in rt.items():
        if name.startswith("function") or name.startswith("-") or len(cells) < 7:
            continue
        rows.append((f"runtime {name} ({cells[0]})", "cold p50 / warm p50", f"{cells[1]} / "
                     f"{cells[4]}", f"Lambda cold {cells[6]}", "-", "-"))
    if "density" in dens:
        overhead, accounted, sl, n = dens["density"]
        rows.append(("idle env memory", "KiB per env beyond the function's pages",
                     f"{overhead / 1024:.0f} (accounted parts {accounted / 1024:.0f})", "-",
                     "<= 1024", verdict(overhead <= 1024 * 1024)))
        rows.append(("idle envs held", "envs", f"{int(n)}", "-", ">= 2000",
                     verdict(n >= 2000)))
    if "rate" in dens:
        r = float(dens["rate"])
        rows.append(("env start rate", "started + used once + destroyed, per s", f"{r:.0f}",
                     "-", ">= 500", verdict(r >= 500)))
    if "burst" in dens:
        b = dens["burst"]
        hot = sorted(b["hot"])
        p99 = hot[min(len(hot) - 1, int(round(0.99 * (len(hot) - 1))))] if hot else float("nan")
        rows.append(("burst: 1000 sync invokes / 100 functions",
                     "ok / throttled / other errors", f"{b['ok']} / {b['throttled']} / "
                     f"{len(b['other'])}", "-", "0 other errors", verdict(not b["other"])))
        rows.append(("warm invoke during the burst", "p99 ms", f"{p99:.2f}", "-", "bounded",
                     "-"))
    if "warm" in dens:
        w = {int(k): v for k, v in dens["warm"].items()}
        if len(w) >= 2:
            lo, hi = min(w), max(w)
            rows.append(("warm invoke vs idle envs", f"p50 ms at {lo + 1} / {hi + 1} envs",
                         f"{w[lo][0]:.3f} / {w[hi][0]:.3f}", "-", "no growth",
                         verdict(w[hi][0] <= 1.25 * w[lo][0] + 0.02)))
    host = ""
    if cs_text:
        m = re.search(r"\d{4}-\d\d-\d\d.*?(?:\n|$)", cs_text)
        host = m.group().strip() if m else ""
    out.append("# lamina benchmarks: all figures of one `make bench` run")
    out.append("")
    out.append(f"{time.strftime('%Y-%m-%d %H:%M')}; machine: {os.cpu_count()} CPUs, "
               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1 << 30):.1f} GiB, "
               f"kernel {os.uname().release}; load average "
               f"{' '.join(open('/proc/loadavg').read().split()[:3])}. Details: "
               "benches/results/{coldstart,invoke,runtimes,density}.md.")
    out.append("")
    out.append("| benchmark | figure | lamina | peers (same run) | target | verdict |")
    out.append("|---|---|---|---|---|---|")
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    text = "\n".join(out) + "\n"
    print(text)
    with open(OUT, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
