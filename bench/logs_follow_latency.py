#!/usr/bin/env python3
"""Follow latency: two apps each print a line every 20 ms carrying the wall clock of the
moment they wrote it (bench/fixtures/clock.py); `herder logs <namespace> --lines 0` (PM2:
`pm2 logs <namespace> --lines 0`) runs with its stdout on a pipe read by this script, which
notes the wall clock at which each line arrives. Latency = arrival − the time in the line:
the app's write, the supervisor's read, its file write and its forwarding to the follower,
the follower's output. Both apps are in one namespace so that one target follows both
(`pm2 logs` takes one target).

Every line of each app must arrive once and in order (checked); --lines per app are
measured after a short warm-up. Tools run one after the other.

Usage: python3 bench/logs_follow_latency.py [--lines 250] [--tools herder,pm2]
"""

import argparse
import os
import re
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

CLOCK = os.path.join(c.FIXTURES, "clock.py")
LINE = re.compile(r"(lat[ab]) (\d+) (\d+)\s*$")
WARMUP = 10


def start_apps(t):
    for tag in ("lata", "latb"):
        args = ["start", CLOCK, "--name", tag, "--namespace", "latency", "--interpreter", "python3"]
        t.run(*(args + ["--", tag]), timeout=60)


def measure(t, per_app, timeout_s=120):
    """Start the follower, collect per_app lines of each app (after a warm-up)."""
    cmd = t.cmd("logs", "latency", "--lines", "0")
    p = subprocess.Popen(cmd, env=t.env, cwd=t.ws.dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    c.on_cleanup(lambda: p.poll() is None and p.kill())
    lat = {"lata": [], "latb": []}
    last, seen = {}, {}
    problems = []
    timer = threading.Timer(timeout_s, p.kill)
    timer.start()
    try:
        for raw in p.stdout:
            now = time.time_ns()
            m = LINE.search(raw.decode(errors="replace"))
            if not m:
                continue
            tag, n, at = m.group(1), int(m.group(2)), int(m.group(3))
            if tag in last and n != last[tag] + 1:
                problems.append("%s: line %d after %d" % (tag, n, last[tag]))
            last[tag] = n
            seen[tag] = seen.get(tag, 0) + 1
            if seen[tag] > WARMUP and len(lat[tag]) < per_app:
                lat[tag].append((now - at) / 1e6)
            if all(len(v) >= per_app for v in lat.values()):
                break
    finally:
        timer.cancel()
        p.kill()
        p.wait()
    return lat, problems


def main():
    ap = c.common_args(argparse.ArgumentParser(description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--lines", type=int, default=250, help="lines measured per app")
    args = ap.parse_args()
    c.install_cleanup_handlers(time_limit_s=600)

    ws = c.Workspace("follow")
    res = {}
    for cls in c.pick_tools(args.tools.split(",")):
        t = cls(ws)
        t.start_daemon()
        start_apps(t)
        time.sleep(1)
        lat, problems = measure(t, args.lines)
        both = lat["lata"] + lat["latb"]
        res[t.name] = {"latency_ms": c.summary(both),
                       "p99_ms": sorted(both)[int(len(both) * 0.99) - 1] if both else None,
                       "per_app": {k: c.summary(v) for k, v in lat.items()},
                       "order_problems": problems[:20], "n_order_problems": len(problems)}
        t.shutdown()
        s = res[t.name]["latency_ms"]
        c.log("%-6s n=%d median %.2f ms  p90 %.2f  p99 %.2f  max %.2f  order problems %d" % (
            t.name, s.get("n", 0), s.get("median", 0), s.get("p90", 0), res[t.name]["p99_ms"] or 0,
            s.get("max", 0), len(problems)))

    c.save_results("logs_follow_latency", {
        "description": "ms from an app writing a line to `logs` printing it, two apps followed at once",
        "lines_per_app": args.lines, "interval_ms": 20,
        "commands": {"herder": "herder logs latency --lines 0", "pm2": "pm2 logs latency --lines 0"},
        "results": res,
    }, args.out)


if __name__ == "__main__":
    main()
