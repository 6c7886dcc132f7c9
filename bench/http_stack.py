#!/usr/bin/env python3
"""The daemon's HTTP code, two builds side by side (e.g. before and after a change to it):
idle daemon memory, and requests/s of the metrics endpoint.

Part `memory`: for each round and each build (the order alternates by round), new daemons
(`herder ping` in a HERDER_HOME of their own), each sampled after --settle seconds (VmRSS,
RssAnon, RssFile, Pss and threads from /proc/<pid>/status and smaps_rollup, median of 5
samples 0.2 s apart):
  no_app:           the daemon alone;
  app:              then one app without a balancer (`node bench/fixtures/cluster_server.js`
                    on a free port, fork mode, one instance), online;
  probe_metrics:    in another new daemon, the same app with an http liveness probe on it
                    (every 500 ms) and the metrics endpoint on (`herder metrics --listen
                    127.0.0.1:0`) scraped --scrapes times: the daemon's HTTP client and
                    server both in use. The probe must have passed at least twice.
Figures: the median over the --daemons daemons of each build. Before each daemon starts, the
build's binary is dropped from the page cache (posix_fadvise DONTNEED; no process maps it
then), so that every daemon starts as after a boot: the file pages a daemon maps depend on
the size of the page cache's folios (this kernel maps a whole large folio on a fault), and a
binary just written by `cp` or the linker sits in larger folios than one read back by page
faults, which made the same idle daemon 1.6 MB larger or smaller depending on which build
was copied how. `--no-evict` measures the binaries as they are cached.

Part `wrk`: for each build, a daemon with the same app and the metrics endpoint on;
`wrk -t1 -c<connections> -d<duration>s --latency http://127.0.0.1:<port>/` against the
endpoint (which closes each connection after its answer, so every request is a new
connection), builds interleaved round by round: requests/s, p50, p99, errors; medians.

Usage: python3 bench/http_stack.py --before BIN --after BIN [--daemons 7 --settle 2]
       [--no-evict] [--rounds 3 --duration 5 --connections 4] [--parts memory,wrk] [--out FILE]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402
from cluster import SERVER, Wrk, free_port, http_ok, wrk_display  # noqa: E402

PARTS = ("memory", "wrk")
STATES = ("no_app", "app", "probe_metrics")


class Daemon(c.Herder):
    """A herder daemon of the build `bin`, with a home of its own named `name`."""

    def __init__(self, ws, name, bin):
        self.name = name
        super().__init__(ws)
        self.bin = bin


def app_config(ws, name, port, probe):
    path = ws.path("%s.toml" % name)
    with open(path, "w") as f:
        f.write('[[apps]]\nname = "web"\nscript = "%s"\nexec_mode = "fork"\nenv = { PORT = "%d" }\n'
                % (SERVER, port))
        if probe:
            f.write('[[apps.health]]\nkind = "liveness"\nhttp = "http://127.0.0.1:%d/"\ninterval = "500ms"\n'
                    'timeout = "1s"\n' % port)
    return path


def start_app(d, ws, port, probe):
    d.run("start", app_config(ws, d.name, port, probe), timeout=60)
    ok, _ = c.wait_until(lambda: http_ok(port) and d.online_count() == 1, 60, 0.05)
    if not ok:
        raise RuntimeError("%s: the app is not serving on port %d after 60 s" % (d.name, port))


def probe_successes(d):
    _, out, _, _ = d.run("list", "--json", timeout=30, check=False)
    try:
        apps = json.loads(out)
    except ValueError:
        return 0
    apps = apps if isinstance(apps, list) else apps.get("apps", [])
    return sum(p.get("successes", 0) for a in apps for i in a.get("instances", []) for p in i.get("probes", []))


def metrics_listen(d):
    _, out, _, _ = d.run("metrics", "--listen", "127.0.0.1:0", timeout=30)
    addr = out.strip().split("http://", 1)[1].rsplit("/metrics", 1)[0]
    return int(addr.rsplit(":", 1)[1])


def scrape(port):
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        if r.status != 200 or b"herder_daemon_memory_bytes" not in r.read():
            raise RuntimeError("metrics endpoint: bad answer")


def memory_round(ws, label, bin, k, args):
    out = {}
    if args.evict:
        c.evict(bin)
    d = Daemon(ws, "%s-%d-plain" % (label, k), bin)
    d.start_daemon()
    time.sleep(args.settle)
    out["no_app"] = c.rss_sample(d.pid())
    start_app(d, ws, free_port(), probe=False)
    time.sleep(args.settle)
    out["app"] = c.rss_sample(d.pid())
    d.shutdown()

    if args.evict:
        c.evict(bin)
    d = Daemon(ws, "%s-%d-probe" % (label, k), bin)
    d.start_daemon()
    start_app(d, ws, free_port(), probe=True)
    port = metrics_listen(d)
    for _ in range(args.scrapes):
        scrape(port)
    ok, _ = c.wait_until(lambda: probe_successes(d) >= 2, 30, 0.1)
    if not ok:
        raise RuntimeError("%s: the http probe did not pass twice in 30 s" % d.name)
    time.sleep(args.settle)
    out["probe_metrics"] = c.rss_sample(d.pid())
    d.shutdown()
    return out


def memory_part(ws, builds, args):
    per = {label: {s: [] for s in STATES} for label in builds}
    for k in range(args.daemons):
        order = list(builds) if k % 2 == 0 else list(reversed(builds))
        for label in order:
            r = memory_round(ws, label, builds[label], k, args)
            for s in STATES:
                per[label][s].append(r[s])
            c.log("memory %s #%d: %s" % (label, k, ", ".join(
                "%s %d kB" % (s, r[s]["vmrss_kb"]) for s in STATES)))
    summ = {}
    for label in builds:
        summ[label] = {}
        for s in STATES:
            xs = per[label][s]
            summ[label][s] = {key: statistics.median(x[key] for x in xs)
                              for key in ("vmrss_kb", "rss_anon_kb", "rss_file_kb", "pss_kb", "threads")
                              if all(x.get(key) is not None for x in xs)}
            summ[label][s]["vmrss_kb_all"] = [x["vmrss_kb"] for x in xs]
    return {"daemons": args.daemons, "settle_s": args.settle, "scrapes": args.scrapes,
            "evicted_from_page_cache": args.evict, "summary": summ,
            "samples": per}


def wrk_part(ws, builds, args):
    wrk = Wrk(shutil.which("wrk"), 1, args.connections)
    ports = {}
    daemons = []
    for label, bin in builds.items():
        d = Daemon(ws, "%s-wrk" % label, bin)
        d.start_daemon()
        daemons.append(d)
        start_app(d, ws, free_port(), probe=False)
        ports[label] = metrics_listen(d)
        scrape(ports[label])
    runs = {label: [] for label in builds}
    for k in range(args.rounds):
        order = list(builds) if k % 2 == 0 else list(reversed(builds))
        for label in order:
            r = wrk.run(ports[label], args.duration)
            runs[label].append(r)
            c.log("wrk %s #%d: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %d errors" % (
                label, k, r["rps"], r["p50_ms"] or 0, r["p99_ms"] or 0, r["errors"]))
    for d in daemons:
        d.shutdown()
    summ = {label: {"rps": statistics.median(r["rps"] for r in rs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                    "errors": sum(r["errors"] for r in rs)} for label, rs in runs.items()}
    return {"wrk": wrk_display(wrk.cmd("<port>", args.duration)), "rounds": args.rounds, "summary": summ,
            "runs": runs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="herder binary of the first build")
    ap.add_argument("--after", required=True, help="herder binary of the second build")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--daemons", type=int, default=7, help="daemons per build and state in part memory")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds before each memory sample")
    ap.add_argument("--scrapes", type=int, default=20, help="scrapes of the metrics endpoint in part memory")
    ap.add_argument("--rounds", type=int, default=3, help="wrk runs per build")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--no-evict", dest="evict", action="store_false",
                    help="leave the binaries in the page cache as they are before each daemon")
    ap.add_argument("--out", default=None, help="results JSON path (default bench/results/http_stack.json)")
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    if any(p not in PARTS for p in parts):
        ap.error("parts are %s" % ",".join(PARTS))
    builds = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    for label, bin in builds.items():
        if not os.access(bin, os.X_OK):
            sys.exit("http_stack.py: no herder binary at %s" % bin)
    if not shutil.which("node"):
        sys.exit("http_stack.py: node not found in PATH")
    if "wrk" in parts and not shutil.which("wrk"):
        sys.exit("http_stack.py: wrk not found in PATH (apt-get install wrk)")
    c.install_cleanup_handlers(time_limit_s=args.daemons * 2 * 60 + args.rounds * 2 * (args.duration + 30) + 300)

    ws = c.Workspace("http-stack")
    data = {"description": "the daemon's HTTP code, two builds: idle memory and the metrics endpoint's requests/s",
            "builds": {label: {"path": bin, "version": c.run([bin, "--version"], timeout=10)[1].strip()}
                       for label, bin in builds.items()}}
    if "memory" in parts:
        data["memory"] = memory_part(ws, builds, args)
    if "wrk" in parts:
        data["wrk"] = wrk_part(ws, builds, args)
    c.save_results("http_stack", data, args.out)

    if "memory" in data:
        print("daemon VmRSS, median of %d daemons (kB): state, before, after, after - before" % args.daemons)
        for s in STATES:
            b, a = (data["memory"]["summary"][label][s] for label in ("before", "after"))
            print("  %-14s %8d %8d %+6d   (anon %d -> %d, file %d -> %d, threads %d -> %d)" % (
                s, b["vmrss_kb"], a["vmrss_kb"], a["vmrss_kb"] - b["vmrss_kb"], b["rss_anon_kb"],
                a["rss_anon_kb"], b["rss_file_kb"], a["rss_file_kb"], b["threads"], a["threads"]))
    if "wrk" in data:
        print("metrics endpoint, %s, median of %d runs:" % (data["wrk"]["wrk"], args.rounds))
        for label in ("before", "after"):
            s = data["wrk"]["summary"][label]
            print("  %-7s %8.0f req/s  p50 %.2f ms  p99 %.2f ms  errors %d" % (
                label, s["rps"], s["p50_ms"], s["p99_ms"], s["errors"]))


if __name__ == "__main__":
    main()
