#!/usr/bin/env python3
"""Cost of monitoring: the daemon's own CPU while it samples idle apps, and `list`, RSS with many.

One run, two phases:

1. `--apps` (100) idle apps under herder and under PM2 at the same time (`sleep 100000`,
   one config file per tool). Once all run and a few sample intervals passed, both
   daemons' CPU time (utime + stime of the whole process, all threads, from
   /proc/<pid>/stat) is read every second over the same `--window` (60 s) in which nothing
   else touches them: average % of one core. herder samples every instance every
   `sample_interval` (1 s, shown by `herder ping --json`); PM2's God daemon measures its
   apps (pidusage) only when a client asks (`jlist`, `monit`) and on its 30 s worker tick.
2. `--many` (1000) idle apps under a fresh herder daemon (started in batches of `--batch`
   apps, one config file per batch). The daemon's CPU over the same kind of window, with
   nothing else happening, is what sampling 1000 apps costs; its VmRSS is read every second
   and its VmHWM (peak) at the end; then `herder list` and `list --json` are timed (`--runs`
   each, interleaved with `/bin/true`, the harness's fork+exec floor).
   PM2 runs this phase only when listed in `--many-tools` (it takes minutes to start and
   stop 1000 apps); then after herder, with its own fresh daemon, so that neither loads the
   machine while the other is measured.

Before each CPU window the script waits (at most `--wait-max` seconds in all) for the
1-minute load average to drop under `--quiet-load`, and records the load it got.

Usage: python3 bench/monitoring.py [--apps 100] [--many 1000] [--window 60] [--runs 30]
       [--quick] [--tools herder,pm2] [--many-tools herder] [--wait-max 0]
"""

import argparse
import json
import os
import resource
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402
from list_latency import measure as measure_lists  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit, for this script and the daemons it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as e:
            c.log("could not raise RLIMIT_NOFILE from %d: %s" % (soft, e))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cpu_ticks(pid):
    """utime + stime of the whole process (all its threads, live and exited), in ticks."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine_busy_pct():
    """(busy jiffies, total jiffies) of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


class QuietWaiter:
    """Wait for a quiet machine before a window, within one budget for the whole run."""

    def __init__(self, load, budget_s):
        self.load, self.left = load, budget_s

    def wait(self, what):
        t0 = time.monotonic()
        la = loadavg()
        if self.left > 0 and la[0] >= self.load:
            c.log("%s: waiting up to %.0f s for the 1-min load average (%.2f) to drop under %.2f" % (
                what, self.left, la[0], self.load))
            while la[0] >= self.load and time.monotonic() - t0 < self.left:
                time.sleep(5)
                la = loadavg()
        waited = time.monotonic() - t0
        self.left = max(0.0, self.left - waited)
        return {"waited_s": round(waited, 1), "loadavg_before": la, "quiet": la[0] < self.load}


def cpu_window(pids, seconds):
    """Read every daemon's CPU ticks and VmRSS every second for `seconds`.

    pids: {name: pid}. Returns {name: {...}} plus the machine's figures."""
    t0 = time.monotonic()
    la0 = loadavg()
    m0 = machine_busy_pct()
    start = {n: cpu_ticks(p) for n, p in pids.items()}
    series = {n: [] for n in pids}  # (seconds since start, ticks since start, VmRSS kB)
    k = 0
    while True:
        k += 1
        target = t0 + k
        now = time.monotonic()
        if target > t0 + seconds:
            break
        time.sleep(max(0.0, target - now))
        dt = time.monotonic() - t0
        for n, p in pids.items():
            series[n].append((round(dt, 3), cpu_ticks(p) - start[n], c.status_kb(p, "VmRSS")))
    wall = time.monotonic() - t0
    m1 = machine_busy_pct()
    out = {}
    for n, p in pids.items():
        ticks = series[n][-1][1]
        rss = [r for _, _, r in series[n]]
        # busiest 10 s stretch, to show whether the cost is steady or comes in bursts
        per10 = []
        for i in range(10, len(series[n]) + 1, 10):
            a = series[n][i - 11][1] if i > 10 else 0
            per10.append(round((series[n][i - 1][1] - a) / CLK_TCK / 10 * 100, 3))
        out[n] = {
            "cpu_s": ticks / CLK_TCK, "wall_s": round(wall, 3),
            "cpu_pct_of_core": round(ticks / CLK_TCK / wall * 100, 4),
            "cpu_pct_per_10s": per10,
            "vmrss_kb": {"median": sorted(rss)[len(rss) // 2], "max": max(rss), "min": min(rss)},
            "vmhwm_kb": c.status_kb(p, "VmHWM"),
            "threads": c.status_kb(p, "Threads"),
            "ticks_series": [t for _, t, _ in series[n]],
        }
    busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * 100
    return out, {"loadavg_start": la0, "loadavg_end": loadavg(), "machine_busy_pct": round(busy, 1),
                 "seconds": round(wall, 3)}


def running_apps(tool):
    return c.count_descendants(tool.pid(), "sleep")


def start_apps(tool, ws, n, batch, tag, timeout_s=600):
    """Start n idle apps in batches (one config file each); wait until all run and are listed
    online. Polls /proc every 0.2 s: with 1000 processes a scan of /proc is not free."""
    t0 = time.monotonic()
    cli = []
    for b, first in enumerate(range(0, n, batch)):
        k = min(batch, n - first)
        ext = "toml" if tool.name == "herder" else "json"
        cfg = tool.write_idle_config(k, ws.path("%s-%s-b%d.%s" % (tool.name, tag, b, ext)), prefix="%sb%d-" % (tag, b))
        rc, out, err, dt = tool.run(*tool.start_args(cfg), timeout=timeout_s, check=False)
        cli.append(round(dt, 3))
        if rc != 0:
            raise RuntimeError("%s start (batch %d) failed (%s): %s" % (tool.name, b, rc, (out + err)[-1500:]))
    ok, _ = c.wait_until(lambda: running_apps(tool) >= n, timeout_s, 0.2)
    running = time.monotonic() - t0
    if not ok:
        raise RuntimeError("%s: only %d of %d apps running after %ds" % (tool.name, running_apps(tool), n, timeout_s))
    ok, _ = c.wait_until(lambda: tool.online_count() >= n, 120, 0.5)
    online = tool.online_count()
    if not ok:
        raise RuntimeError("%s: its list shows %d of %d apps online" % (tool.name, online, n))
    c.log("%s: %d apps running after %.1f s (start CLI %s s)" % (tool.name, n, running, "+".join(map(str, cli))))
    return {"batches": len(cli), "start_cli_s": cli, "all_running_s": round(running, 3), "listed_online": online,
            "vmrss_kb": c.status_kb(tool.pid(), "VmRSS"), "vmhwm_kb": c.status_kb(tool.pid(), "VmHWM")}


def cpu_per_call(cmd, env, daemon_pid, runs):
    """Run cmd `runs` times in a row; CPU ms per call spent by the CLI process (rusage of
    children) and by the daemon (its utime+stime): where a list call's time goes."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    d0 = cpu_ticks(daemon_pid)
    t0 = time.monotonic()
    for _ in range(runs):
        c.time_cmd(cmd, env)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    d1 = cpu_ticks(daemon_pid)
    cli = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000 / runs
    return {"runs": runs, "wall_ms_per_call": round(wall * 1000 / runs, 3), "cli_cpu_ms_per_call": round(cli, 3),
            "daemon_cpu_ms_per_call": round((d1 - d0) * 1000 / CLK_TCK / runs, 3)}


def herder_sample_interval_ms(tool):
    rc, out, err, _ = tool.run("ping", "--json", timeout=30, check=False)
    try:
        return json.loads(out).get("sample_interval_ms")
    except ValueError:
        return None


def p95(xs):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * 0.95
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def many_apps(cls, args, quiet):
    """Phase 2 for one tool: a fresh daemon with args.many idle apps; CPU window, then lists."""
    ws = c.Workspace("mon-many-" + cls.name)
    t = cls(ws)
    t.start_daemon()
    d = {"start": start_apps(t, ws, args.many, args.batch, "many")}
    if t.name == "herder":
        d["sample_interval_ms"] = herder_sample_interval_ms(t)
    time.sleep(args.settle)
    d["quiet"] = quiet.wait("%s, %d apps" % (t.name, args.many))
    c.log("%s, %d apps: CPU window %.0f s" % (t.name, args.many, args.window))
    cpu, d["window"] = cpu_window({t.name: t.pid()}, args.window)
    d["daemon"] = cpu[t.name]
    # list latency after the window, so that its requests do not count in the CPU figure
    floor = "/bin/true (harness floor)"
    cmds, env_of = {floor: ["/bin/true"]}, {floor: c.base_env()}
    for label, argv in t.list_cmds().items():
        cmds[label] = argv
        env_of[label] = t.env
    c.log("%s, %d apps: list latency, %d runs per command" % (t.name, args.many, args.runs))
    la = measure_lists(cmds, env_of, args.runs)
    for label, r in la.items():
        r["summary"]["p95"] = p95(r["samples_ms"])
        rc, out, err, _ = c.run(cmds[label], env=env_of[label], timeout=120)
        r["output_bytes"] = len(out)
    # where the time goes: each list command alone, CPU of the CLI and of the daemon per call
    split = {label: cpu_per_call(argv, t.env, t.pid(), args.runs) for label, argv in t.list_cmds().items()}
    d["list"] = {"commands": {k: c.shell_join(v) for k, v in cmds.items()}, "results": la, "cpu_per_call": split}
    d["after_lists"] = c.rss_sample(t.pid(), n=3, interval_s=0.2)
    d["peak_vmrss_kb"] = max(d["daemon"]["vmrss_kb"]["max"], d["after_lists"]["vmrss_kb"],
                             d["after_lists"]["vmhwm_kb"] or 0)
    d["listed_online_after"] = t.online_count()
    d["running_after"] = running_apps(t)
    t.shutdown()
    ws.remove()
    return d


def main():
    ap = c.common_args(argparse.ArgumentParser(description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--apps", type=int, default=100, help="apps in phase 1, both tools (default %(default)s)")
    ap.add_argument("--many", type=int, default=1000, help="apps in phase 2 (default %(default)s); 0 skips it")
    ap.add_argument("--many-tools", default="herder",
                    help="tools in phase 2 (default %(default)s; add pm2 for PM2 with --many apps)")
    ap.add_argument("--batch", type=int, default=250, help="apps per config file in phase 2")
    ap.add_argument("--window", type=float, default=60.0, help="seconds of each CPU window")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds after all apps are listed online before a window")
    ap.add_argument("--runs", type=int, default=30, help="timed runs of each list command in phase 2")
    ap.add_argument("--quiet-load", type=float, default=1.5,
                    help="wait for the 1-min load average to drop under this before a window")
    ap.add_argument("--wait-max", type=float, default=0.0,
                    help="seconds in all to wait for that (default 0: do not wait)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 10 s windows, 10 runs, 2 s settle, no waiting for a quiet machine")
    args = ap.parse_args()
    if args.quick:
        args.window, args.runs, args.settle, args.wait_max = 10.0, 10, 2.0, 0.0
    limit = 900 + args.wait_max + 3 * args.window + (1200 if "pm2" in args.many_tools else 0)
    c.install_cleanup_handlers(time_limit_s=limit)
    nofile = raise_nofile()
    quiet = QuietWaiter(args.quiet_load, args.wait_max)
    wanted = args.tools.split(",")
    res = {"nofile": list(nofile)}

    # ------------------------------------------------------------ phase 1: N apps, both tools
    ws = c.Workspace("mon")
    tools = []
    for cls in c.pick_tools(wanted):
        t = cls(ws)
        t.start_daemon()
        tools.append(t)
    if not tools:
        sys.exit("no tool to measure")
    p1 = {"apps": args.apps, "tools": {}}
    for t in tools:
        p1["tools"][t.name] = {"start": start_apps(t, ws, args.apps, args.apps, "idle")}
        if t.name == "herder":
            p1["tools"][t.name]["sample_interval_ms"] = herder_sample_interval_ms(t)
    time.sleep(args.settle)
    p1["quiet"] = quiet.wait("phase 1")
    c.log("phase 1: %d apps per tool, CPU window %.0f s" % (args.apps, args.window))
    cpu, machine = cpu_window({t.name: t.pid() for t in tools}, args.window)
    p1["window"] = machine
    for t in tools:
        p1["tools"][t.name]["daemon"] = cpu[t.name]
        p1["tools"][t.name]["running_after"] = running_apps(t)
    for t in tools:
        t.shutdown()
    res["phase_apps"] = p1

    # ------------------------------------------------------------ phase 2: many apps
    # One tool after the other, each with a fresh daemon, so that neither loads the machine
    # while the other is measured.
    many_tools = [n for n in wanted if n in args.many_tools.split(",")]
    if args.many > 0 and many_tools:
        p2 = {"apps": args.many, "batch": args.batch, "tools": {}}
        for cls in c.pick_tools(many_tools):
            try:
                p2["tools"][cls.name] = many_apps(cls, args, quiet)
            except Exception as e:  # keep the other tool's figures
                if cls.name == "herder":
                    raise
                c.log("%s with %d apps failed: %r" % (cls.name, args.many, e))
                p2["tools"][cls.name] = {"error": str(e)[-500:]}
        res["phase_many"] = p2

    c.save_results("monitoring", {
        "description": "daemon CPU (% of one core) while sampling idle apps; list latency and RSS with many apps",
        "window_s": args.window, "settle_s": args.settle, "runs": args.runs, "clk_tck": CLK_TCK,
        "quiet_load": args.quiet_load, "wait_max_s": args.wait_max, "quick": args.quick,
        "commands": {
            "herder": "herder start idle.toml  # N [[apps]] script=\"sleep\" args=[\"100000\"]; "
                      "utime+stime from /proc/$(cat $HERDER_HOME/daemon.pid)/stat every 1 s",
            "pm2": "pm2 start idle.json  # N apps script=\"sleep\" args=[\"100000\"] interpreter=\"none\"; "
                   "utime+stime from /proc/$(cat $PM2_HOME/pm2.pid)/stat every 1 s",
        },
        "results": res,
    }, args.out)

    for n, d in p1["tools"].items():
        c.log("%-6s %4d apps: daemon CPU %.3f%% of a core over %.0f s, VmRSS %.1f MB" % (
            n, args.apps, d["daemon"]["cpu_pct_of_core"], d["daemon"]["wall_s"], d["daemon"]["vmrss_kb"]["median"] / 1024))
    if "phase_many" in res:
        p2 = res["phase_many"]
        for n, d in p2["tools"].items():
            if "error" in d:
                c.log("%-6s %4d apps: not measured: %s" % (n, args.many, d["error"]))
                continue
            c.log("%-6s %4d apps: daemon CPU %.3f%% of a core, VmRSS %.1f MB (peak %.1f MB)" % (
                n, args.many, d["daemon"]["cpu_pct_of_core"], d["daemon"]["vmrss_kb"]["median"] / 1024,
                d["peak_vmrss_kb"] / 1024))
            for label, r in d["list"]["results"].items():
                sm = r["summary"]
                c.log("%4d apps  %-28s median %8.2f ms  p95 %8.2f  failures %d" % (
                    args.many, label, sm["median"], sm["p95"], r["failures"]))
            for label, r in d["list"]["cpu_per_call"].items():
                c.log("%4d apps  %-28s CPU per call: CLI %.1f ms, daemon %.1f ms" % (
                    args.many, label, r["cli_cpu_ms_per_call"], r["daemon_cpu_ms_per_call"]))

if __name__ == "__main__":
    main()
