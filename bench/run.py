#!/usr/bin/env python3
"""Run every benchmark part (each in its own process, so each cleans up after itself),
then write docs/BENCHMARKS.md.

Usage: python3 bench/run.py [--quick] [--tools herder,pm2] [part ...]
parts: restart_gap list_latency memory start_stop logs_throughput logs_follow_latency logs_lines monitoring
       cluster
(default: all)
"""

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ["memory", "list_latency", "start_stop", "restart_gap", "logs_throughput", "logs_follow_latency",
         "logs_lines", "monitoring", "cluster"]
QUICK = {"restart_gap": ["--rounds", "2", "--per-round", "20"], "list_latency": ["--runs", "10"],
         "memory": ["--settle", "1"], "start_stop": ["--rounds", "2"],
         "logs_throughput": ["--mb", "100", "--rounds", "1"], "logs_follow_latency": ["--lines", "50"],
         "logs_lines": ["--lines", "1000000"], "monitoring": ["--quick"],
         "cluster": ["--duration", "2", "--rounds", "1"]}
LIMIT_S = {"restart_gap": 1500, "list_latency": 1800, "memory": 900, "start_stop": 4000,
           "logs_throughput": 3600, "logs_follow_latency": 600, "logs_lines": 3600,
           "monitoring": 3600, "cluster": 1800}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds/runs (smoke test)")
    ap.add_argument("--tools", default="herder,pm2")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("parts", nargs="*", metavar="part", help="one of: " + " ".join(PARTS))
    args = ap.parse_args()
    bad = [x for x in args.parts if x not in PARTS]
    if bad:
        ap.error("unknown part(s): %s (choose from %s)" % (" ".join(bad), " ".join(PARTS)))
    failed = []
    for part in args.parts or PARTS:
        cmd = [sys.executable, os.path.join(HERE, part + ".py"), "--tools", args.tools]
        if args.quick:
            cmd += QUICK[part]
        print("[run] %s" % " ".join(cmd[1:]), file=sys.stderr, flush=True)
        p = subprocess.Popen(cmd)
        try:
            rc = p.wait(timeout=LIMIT_S[part])
        except subprocess.TimeoutExpired:
            p.terminate()  # the part's handler cleans up its daemons and temp folder
            try:
                rc = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
        except KeyboardInterrupt:
            p.terminate()
            p.wait(timeout=60)
            raise
        if rc != 0:
            failed.append(part)
            print("[run] %s failed (exit %s)" % (part, rc), file=sys.stderr, flush=True)
    if not args.no_report:
        subprocess.call([sys.executable, os.path.join(HERE, "report.py")])
    if failed:
        sys.exit("failed parts: " + ", ".join(failed))


if __name__ == "__main__":
    main()
