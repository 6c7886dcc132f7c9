#!/usr/bin/env python3
"""The http balancer over fresh daemon starts: does each start serve alike?

A figure that depends on how a daemon happened to start (which malloc arena each of its
threads got, for instance) hides in a benchmark that starts each daemon once. This starts a
new daemon per round, for each build given, alternating: an app of 2 instances of
bench/fixtures/cluster_server.js behind `[apps.balancer] mode = "http"` (round_robin), warmed
with `wrk` for 2 s, then loaded with `wrk -t2 -c64 -d<duration>s` (keep-alive). Per start:
requests/s, and of the balancer's threads (the daemon's threads named balancer-<n>, from
/proc/<pid>/task/*/stat and status): CPU per request (utime+stime) and voluntary context
switches per request (a thread that waits on a lock, or for work, sleeps). Then the daemon is
killed (`herder kill`) and the next build starts its own.

Usage: python3 bench/balancer_starts.py --builds herder-a,herder-b [--starts 6] [--duration 5]
Results: bench/results/balancer_starts.json (or --out).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402
from balancer import balancer_threads  # noqa: E402
from cluster import SERVER, free_port, http_ok  # noqa: E402


def snapshot(threads):
    """Per balancer thread (its stat file): (CPU ticks, voluntary context switches)."""
    snap = {}
    for t in threads:
        with open(t) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(t[:-len("stat")] + "status") as f:
            vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", f.read(), re.M).group(1))
        snap[t] = (int(fields[11]) + int(fields[12]), vol)
    return snap


def wrk(port, seconds):
    out = subprocess.run(["wrk", "-t2", "-c64", "-d%ds" % seconds, "http://127.0.0.1:%d/" % port],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)s", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return int(m.group(1)), float(m.group(2)), (errors.group(1) if errors else "")


def one_start(build, work, duration):
    """Start a daemon of `build`, load its balancer, kill it: the start's figures."""
    home = tempfile.mkdtemp(prefix="home-", dir=work)
    env = dict(os.environ, HERDER_HOME=home)
    port = free_port()
    config = os.path.join(home, "web.toml")
    with open(config, "w") as f:
        f.write('[[apps]]\nname = "web"\nscript = "%s"\ninstances = 2\n\n'
                '[apps.balancer]\nlisten = %d\nmode = "http"\n' % (SERVER, port))
    kill = lambda: subprocess.run([build, "kill"], env=env, capture_output=True, timeout=60)
    c.on_cleanup(kill)
    try:
        subprocess.run([build, "start", config], env=env, capture_output=True, timeout=60, check=True)
        ok, _ = c.wait_until(lambda: http_ok(port), 30, 0.1)
        if not ok:
            raise RuntimeError("%s: the balancer on port %d does not answer" % (build, port))
        with open(os.path.join(home, "daemon.pid")) as f:
            pid = int(f.read().strip())
        wrk(port, 2)
        threads = balancer_threads(pid)
        before = snapshot(threads)
        requests, seconds, errors = wrk(port, duration)
        after = snapshot(threads)
    finally:
        kill()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = sum(after[t][0] - before[t][0] for t in threads) / ticks
    vol = sum(after[t][1] - before[t][1] for t in threads)
    return {"rps": requests / seconds, "cpu_us_per_req": cpu * 1e6 / requests,
            "voluntary_per_req": vol / requests, "threads": len(threads), "socket_errors": errors}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--builds", required=True, help="comma-separated herder binaries")
    ap.add_argument("--starts", type=int, default=6, help="daemons started per build")
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt install wrk")
    c.install_cleanup_handlers(time_limit_s=3600)
    autogroups = c.one_scheduling_group()
    builds = [os.path.abspath(b) for b in args.builds.split(",")]
    os.makedirs(c.TMP_PARENT, exist_ok=True)
    work = tempfile.mkdtemp(prefix="starts-", dir=c.TMP_PARENT)
    c.on_cleanup(lambda: shutil.rmtree(work, ignore_errors=True))
    runs = {b: [] for b in builds}
    for k in range(args.starts):
        order = builds if k % 2 == 0 else builds[::-1]
        for b in order:
            r = one_start(b, work, args.duration)
            runs[b].append(r)
            c.log("start %d %-28s %7.0f req/s  balancer %5.1f µs/req  voluntary %.3f/req" % (
                k, os.path.basename(b), r["rps"], r["cpu_us_per_req"], r["voluntary_per_req"]))
            time.sleep(1)
    print("http balancer over fresh daemon starts: wrk -t2 -c64 -d%ds, %d starts per build" % (
        args.duration, args.starts))
    print("  %-28s %10s %14s %18s %18s" % ("build", "req/s", "(min-max)", "µs/req (min-max)",
                                            "voluntary/req"))
    summary = {}
    for b in builds:
        rs = runs[b]
        s = {k: c.summary([r[k] for r in rs]) for k in ("rps", "cpu_us_per_req", "voluntary_per_req")}
        summary[os.path.basename(b)] = s
        print("  %-28s %10.0f %6.0f-%-7.0f %6.1f (%.1f-%.1f) %8.3f (%.3f-%.3f)" % (
            os.path.basename(b), s["rps"]["median"], s["rps"]["min"], s["rps"]["max"],
            s["cpu_us_per_req"]["median"], s["cpu_us_per_req"]["min"], s["cpu_us_per_req"]["max"],
            s["voluntary_per_req"]["median"], s["voluntary_per_req"]["min"],
            s["voluntary_per_req"]["max"]))
    data = {"description": __doc__.strip().splitlines()[0], "builds": [os.path.basename(b) for b in builds],
            "starts": args.starts, "duration_s": args.duration, "autogroups": autogroups,
            "machine": c.machine_info(), "summary": summary,
            "runs": {os.path.basename(b): runs[b] for b in builds}}
    c.save_results("balancer_starts", data, args.out)


if __name__ == "__main__":
    main()
