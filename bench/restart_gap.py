#!/usr/bin/env python3
"""Restart gap: time from a crashed instance's exit to its replacement's start.

bench/fixtures/flap.py appends "S <time_ns>" when it starts and "E <time_ns>" just
before it exits (50 ms later, exit code 1). Under a supervisor that restarts it
with no delay, gap = next S - previous E. The same script runs under:
  - bare:   a shell loop `for ...; do python3 flap.py OUT; done` (the floor: fork+exec
            + interpreter start-up, no supervisor),
  - herder: herder start bench/fixtures/flap.py --name flap --restart-delay 0
            --max-restarts 100000 --min-uptime 0 -- OUT
  - pm2:    pm2 start flap.py --name flap --interpreter python3 --restart-delay 0
            --max-restarts 100000 -- OUT
            (PM2's CLI has no --min-uptime; its default 1000 ms only makes every run
            count as unstable, and 100000 unstable restarts are never reached)
All three run the same python3 binary (its real path first in PATH).
Rounds alternate the order of the three so that machine noise hits all of them.

Usage: python3 bench/restart_gap.py [--rounds 4] [--per-round 50] [--tools herder,pm2]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

FLAP = os.path.join(c.FIXTURES, "flap.py")


def parse_gaps(path):
    """Return (gaps_ms, starts, interpreters) from a flap output file."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return [], 0, set()
    gaps, starts, interps = [], 0, set()
    prev = None  # previous line parts
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            prev = None
            continue
        if parts[0] == "S":
            starts += 1
            if len(parts) >= 4:
                interps.add(parts[3])
            if prev and prev[0] == "E" and prev[2] != parts[2]:
                gaps.append((int(parts[1]) - int(prev[1])) / 1e6)
        prev = parts
    return gaps, starts, interps


def count_starts(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"S ")
    except OSError:
        return 0


def run_bare(ws, rnd, n, timeout_s):
    out = ws.path("gap", "bare-%d.txt" % rnd)
    script = 'for ((i=0; i<%d; i++)); do python3 "$0" "$1"; done; true' % (n + 1)
    env = c.base_env()
    rc, o, e, dt = c.run(["bash", "-c", script, FLAP, out], env=env, timeout=timeout_s)
    if rc != 0:
        c.log("bare loop exited %s %s" % (rc, e.strip()[-300:]))
    return out, {}


def run_tool(tool, ws, rnd, n, timeout_s):
    out = ws.path("gap", "%s-%d.txt" % (tool.name, rnd))
    tool.env["FLAP_OUT"] = out
    tool.run(*tool.flap_start_args(FLAP, out), timeout=60)
    ok, waited = c.wait_until(lambda: count_starts(out) >= n + 1, timeout_s, 0.1)
    if not ok:
        c.log("%s: only %d starts after %.0fs" % (tool.name, count_starts(out), waited))
    statuses = tool.statuses()
    tool.run(*tool.flap_delete_args(), timeout=60, check=False)
    return out, {"statuses_after": statuses}


def main():
    ap = c.common_args(argparse.ArgumentParser(description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--per-round", type=int, default=50, help="restarts per round per tool")
    ap.add_argument("--round-timeout", type=float, default=60.0, help="seconds per round per tool")
    args = ap.parse_args()
    c.install_cleanup_handlers(time_limit_s=args.rounds * 3 * (args.round_timeout + 30) + 120)

    ws = c.Workspace("gap")
    tools = {}
    for cls in c.pick_tools(args.tools.split(",")):
        t = cls(ws)
        t.start_daemon()
        tools[t.name] = t
    order = ["bare"] + list(tools)

    samples = {k: [] for k in order}
    rounds = []
    interps = {k: set() for k in order}
    for rnd in range(args.rounds):
        rot = order[rnd % len(order):] + order[:rnd % len(order)]
        for name in rot:
            t0 = time.time()
            if name == "bare":
                path, extra = run_bare(ws, rnd, args.per_round, args.round_timeout)
            else:
                path, extra = run_tool(tools[name], ws, rnd, args.per_round, args.round_timeout)
            gaps, starts, ip = parse_gaps(path)
            interps[name] |= ip
            samples[name].extend(gaps)
            med = c.summary(gaps).get("median")
            rounds.append(dict(round=rnd, tool=name, starts=starts, gaps=len(gaps),
                               median_ms=med, seconds=round(time.time() - t0, 2), **extra))
            c.log("round %d %-6s starts=%d median gap=%s ms" % (
                rnd, name, starts, "%.3f" % med if med is not None else "-"))

    summ = {k: c.summary(v) for k, v in samples.items()}
    bare_med = summ["bare"].get("median")
    for k in tools:
        if bare_med is not None and summ[k].get("median") is not None:
            summ[k]["excess_over_bare_ms"] = summ[k]["median"] - bare_med
            # per-round paired excess (same round, adjacent in time): less sensitive to drift
            per = []
            for rnd in range(args.rounds):
                a = [r for r in rounds if r["round"] == rnd and r["tool"] == k]
                b = [r for r in rounds if r["round"] == rnd and r["tool"] == "bare"]
                if a and b and a[0]["median_ms"] is not None and b[0]["median_ms"] is not None:
                    per.append(a[0]["median_ms"] - b[0]["median_ms"])
            summ[k]["excess_per_round_ms"] = per
            summ[k]["excess_median_of_rounds_ms"] = c.summary(per).get("median")

    commands = {
        "bare": "for ((i=0; i<N; i++)); do python3 bench/fixtures/flap.py OUT; done",
        "herder": "herder start bench/fixtures/flap.py --name flap --restart-delay 0 "
                  "--max-restarts 100000 --min-uptime 0 -- OUT",
        "pm2": "pm2 start bench/fixtures/flap.py --name flap --interpreter python3 "
               "--restart-delay 0 --max-restarts 100000 -- OUT",
    }
    c.save_results("restart_gap", {
        "description": "gap (ms) between a 50 ms-lived python3 script's exit and its restart",
        "rounds": args.rounds, "restarts_per_round": args.per_round,
        "commands": {k: commands[k] for k in order},
        "interpreters": {k: sorted(v) for k, v in interps.items()},
        "summary": summ, "per_round": rounds,
        "samples_ms": {k: [round(x, 4) for x in v] for k, v in samples.items()},
    }, args.out)
    for k in order:
        s = summ[k]
        if s.get("n"):
            c.log("%-6s n=%d median=%.3f ms p10=%.3f p90=%.3f excess=%s" % (
                k, s["n"], s["median"], s["p10"], s["p90"],
                "%.3f" % s["excess_over_bare_ms"] if "excess_over_bare_ms" in s else "-"))


if __name__ == "__main__":
    main()
