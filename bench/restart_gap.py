#!/usr/bin/env python3
"""Restart gap: time from a crashed instance's exit to its replacement's start.

bench/fixtures/flap.py appends "S <time_ns>" when it starts and "E <time_ns>" just
before it exits (50 ms later, exit code 1). Under a supervisor that restarts it
with no delay, gap = next S - previous E. The same script runs under:
  - bare:   a shell loop `for ...; do python3 flap.py OUT; done` (the floor: fork+exec
            + interpreter start-up, no supervisor),
  - herder: herder start bench/fixtures/flap.py --name flap --interpreter python3
            --restart-delay 0 --max-restarts 100000 --min-uptime 0 -- OUT
  - herder-nocg: the same with HERDER_NO_CGROUP=1 in the daemon's environment (apps are
            not put in cgroups), a diagnostic that isolates the cost of joining a cgroup
            (skip with --no-cgroup-variant)
  - pm2:    pm2 start flap.py --name flap --interpreter python3 --restart-delay 0
            --max-restarts 100000 -- OUT
            (PM2's CLI has no --min-uptime; its default 1000 ms only makes every run
            count as unstable, and 100000 unstable restarts are never reached)
All three run the same python3 binary (its real path first in PATH).
Rounds alternate the order of the three so that machine noise hits all of them.

Usage: python3 bench/restart_gap.py [--rounds 6] [--per-round 50] [--tools herder,pm2]
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
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


# ---- optional kernel-side view: exit -> next exec, from the sched tracepoints (perf)

PERF_EVENTS = "sched:sched_process_exit,sched:sched_process_exec"


def perf_usable():
    if not shutil.which("perf"):
        return False
    rc, _, _, _ = c.run(["perf", "record", "-q", "-e", PERF_EVENTS, "-a", "-o", "/dev/null",
                         "--", "true"], timeout=30)
    return rc == 0


class PerfRecorder:
    """`perf record -a` of process exit/exec events while one round runs."""

    def __init__(self, path):
        self.path = path
        self.p = subprocess.Popen(["perf", "record", "-q", "-e", PERF_EVENTS, "-a", "-o", path],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        c.on_cleanup(self.stop)
        time.sleep(0.5)  # let perf set up its buffers before the first restart

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def kernel_gaps(perf_data, flap_file):
    """ms from each flap process's exit (sched_process_exit, whole group) to the first exec
    (sched_process_exec) of the next flap process, pids taken from the flap file."""
    try:
        with open(flap_file) as f:
            pids = [int(l.split()[2]) for l in f if l.startswith("S ")]
    except OSError:
        return []
    rc, out, _, _ = c.run(["perf", "script", "-i", perf_data, "-F", "pid,time,event,trace"], timeout=120)
    if rc != 0:
        return []
    wanted = set(pids)
    exec_t, exit_t = {}, {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        try:
            pid, t = int(parts[0]), float(parts[1].rstrip(":"))
        except ValueError:
            continue
        if pid not in wanted:
            continue
        if "sched_process_exec" in line:
            exec_t.setdefault(pid, t)
        elif "sched_process_exit" in line and "group_dead=true" in line:
            exit_t[pid] = t
    gaps = []
    for a, b in zip(pids, pids[1:]):
        if a in exit_t and b in exec_t and exec_t[b] > exit_t[a]:
            gaps.append((exec_t[b] - exit_t[a]) * 1000)
    return gaps


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
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=50, help="restarts per round per tool")
    ap.add_argument("--round-timeout", type=float, default=60.0, help="seconds per round per tool")
    ap.add_argument("--no-perf", action="store_true",
                    help="skip the kernel-side view (perf record of sched exit/exec events)")
    ap.add_argument("--no-cgroup-variant", action="store_true",
                    help="do not also run herder with HERDER_NO_CGROUP=1 (diagnostic runner)")
    args = ap.parse_args()
    c.install_cleanup_handlers(time_limit_s=args.rounds * 4 * (args.round_timeout + 30) + 120)

    ws = c.Workspace("gap")
    tools = {}
    for cls in c.pick_tools(args.tools.split(",")):
        t = cls(ws)
        t.start_daemon()
        tools[t.name] = t
        if t.name == "herder" and not args.no_cgroup_variant:
            v = c.HerderNoCgroup(ws)
            v.start_daemon()
            tools[v.name] = v
    order = ["bare"] + list(tools)

    use_perf = not args.no_perf and perf_usable()
    if not args.no_perf and not use_perf:
        c.log("perf not usable: skipping the kernel-side exit->exec view")
    ksamples = {k: [] for k in order}
    samples = {k: [] for k in order}
    rounds = []
    interps = {k: set() for k in order}
    for rnd in range(args.rounds):
        rot = order[rnd % len(order):] + order[:rnd % len(order)]
        for name in rot:
            t0 = time.time()
            rec = PerfRecorder(ws.path("gap", "%s-%d.perf" % (name, rnd))) if use_perf else None
            try:
                if name == "bare":
                    path, extra = run_bare(ws, rnd, args.per_round, args.round_timeout)
                else:
                    path, extra = run_tool(tools[name], ws, rnd, args.per_round, args.round_timeout)
            finally:
                if rec:
                    rec.stop()
            if rec:
                kg = kernel_gaps(rec.path, path)
                ksamples[name].extend(kg)
                extra["kernel_gaps"] = len(kg)
                extra["kernel_median_ms"] = c.summary(kg).get("median")
                os.unlink(rec.path)
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
            # noise on a shared machine only ever adds time: the low quantile is the most
            # robust view of the fixed per-restart cost
            summ[k]["excess_p10_ms"] = summ[k]["p10"] - summ["bare"]["p10"]
            # per-round paired excess (same round, adjacent in time): less sensitive to drift
            per = []
            for rnd in range(args.rounds):
                a = [r for r in rounds if r["round"] == rnd and r["tool"] == k]
                b = [r for r in rounds if r["round"] == rnd and r["tool"] == "bare"]
                if a and b and a[0]["median_ms"] is not None and b[0]["median_ms"] is not None:
                    per.append(a[0]["median_ms"] - b[0]["median_ms"])
            summ[k]["excess_per_round_ms"] = per
            summ[k]["excess_median_of_rounds_ms"] = c.summary(per).get("median")

    kernel = None
    if use_perf:
        kernel = {k: c.summary(v) for k, v in ksamples.items()}
        kb = kernel["bare"].get("median")
        for k in tools:
            if kb is not None and kernel[k].get("median") is not None:
                kernel[k]["excess_over_bare_ms"] = kernel[k]["median"] - kb
                kernel[k]["excess_p10_ms"] = kernel[k]["p10"] - kernel["bare"]["p10"]
        for k in order:
            x = kernel[k]
            if x.get("n"):
                c.log("kernel exit->exec %-11s n=%d median=%.3f ms p10=%.3f excess=%s" % (
                    k, x["n"], x["median"], x["p10"],
                    "%.3f" % x["excess_over_bare_ms"] if "excess_over_bare_ms" in x else "-"))

    commands = {
        "herder-nocg": "HERDER_NO_CGROUP=1 herder start bench/fixtures/flap.py --name flap --interpreter python3 --restart-delay 0 "
                       "--max-restarts 100000 --min-uptime 0 -- OUT  (diagnostic: apps not put in cgroups)",
        "bare": "for ((i=0; i<N; i++)); do python3 bench/fixtures/flap.py OUT; done",
        "herder": "herder start bench/fixtures/flap.py --name flap --interpreter python3 --restart-delay 0 "
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
        "kernel_exit_to_exec": kernel,
        "kernel_method": "perf record -e %s -a; gap = next flap pid's first sched_process_exec "
                         "- previous flap pid's sched_process_exit (group_dead)" % PERF_EVENTS,
        "kernel_samples_ms": {k: [round(x, 4) for x in v] for k, v in ksamples.items()} if use_perf else None,
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
