#!/usr/bin/env python3
"""Soak: herder's daemon with 1000 apps and restarts all the time, for 30 minutes; does its
memory, descriptor or thread count grow?

The apps: --apps (1000) `sleep 100000` apps (started from config files of 250), and
--crashers (2) apps that crash 50 ms after they start (`sh -c 'sleep 0.05; exit 3'`,
restart_delay 0, min_uptime 0, max_restarts 1e9): each restarts about 15-20 times a second.
A driver starts `herder restart idle<k>` every --restart-every-ms (50 ms), k going round the
set (in the background, up to 8 calls at once, so that the pace holds when a call takes
longer than the period).

Every --sample-s (5 s) the daemon's VmRSS, open descriptors (/proc/<pid>/fd), threads and
CPU time are read from /proc and written to bench/results/soak.csv with the driver's count of
restarts. At the end: the crash-loop restarts (`list --json`), every idle app online and
one `sleep 100000` per idle app under the daemon, the figures at the end of the warm-up
(--warmup-min, 2 minutes), at the end and their maximum, and whether RSS and descriptors
stayed within 10 % of their warm-up values after the warm-up (`flat`).

Usage: python3 bench/soak.py [--minutes 30] [--apps 1000] [--crashers 2]
                             [--restart-every-ms 50] [--sample-s 5] [--warmup-min 2] [--out FILE]
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
BATCH = 250


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit, for this script and the daemon it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as e:
            c.log("could not raise RLIMIT_NOFILE from %d: %s" % (soft, e))


def sample(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return {
        "rss_kb": c.status_kb(pid, "VmRSS"),
        "hwm_kb": c.status_kb(pid, "VmHWM"),
        "fds": len(os.listdir("/proc/%d/fd" % pid)),
        "threads": c.status_kb(pid, "Threads"),
        "cpu_s": (int(rest[11]) + int(rest[12])) / CLK_TCK,
    }


def idle_sleeps(daemon):
    """`sleep 100000` processes under the daemon."""
    t = c.proc_table()
    n = 0
    for p in c.descendants(daemon, t):
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                args = f.read().split(b"\0")
            if os.path.basename(args[0]) == b"sleep" and args[1:] == [b"100000", b""]:
                n += 1
        except OSError:
            pass
    return n


class Driver(threading.Thread):
    """`herder restart idle<k>` every `every_s`, round the set, until stopped. Each call runs in
    the background (at most `MAX_IN_FLIGHT` at once), so a call that takes longer than the
    period does not slow the pace."""

    MAX_IN_FLIGHT = 8

    def __init__(self, tool, apps, every_s):
        super().__init__(daemon=True)
        self.tool, self.apps, self.every_s = tool, apps, every_s
        self.stop = threading.Event()
        self.done = 0
        self.failed = 0
        self.late = 0
        self.errors = []
        self.latencies = []

    def reap(self, running, block=False):
        for item in list(running):
            p, started, name = item
            try:
                rc = p.wait(timeout=60) if block else p.poll()
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            if rc is None:
                continue
            running.remove(item)
            self.latencies.append(time.monotonic() - started)
            if rc == 0:
                self.done += 1
            else:
                self.failed += 1
                if len(self.errors) < 5:
                    self.errors.append("restart %s: exit %s" % (name, rc))

    def run(self):
        k = 0
        running = []
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.reap(running)
            if len(running) >= self.MAX_IN_FLIGHT:
                self.late += 1
                self.stop.wait(0.005)
                continue
            name = "idle%d" % (k % self.apps)
            p = subprocess.Popen(self.tool.cmd("restart", name), env=self.tool.env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            running.append((p, time.monotonic(), name))
            k += 1
            next_at = max(next_at + self.every_s, time.monotonic() - self.every_s)
            self.stop.wait(max(0.0, next_at - time.monotonic()))
        self.reap(running, block=True)


def within(values, base, pct):
    return all(abs(v - base) <= base * pct / 100 for v in values)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--apps", type=int, default=1000)
    ap.add_argument("--crashers", type=int, default=2)
    ap.add_argument("--restart-every-ms", type=float, default=50)
    ap.add_argument("--sample-s", type=float, default=5)
    ap.add_argument("--warmup-min", type=float, default=2)
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/soak.json; the CSV beside it)")
    args = ap.parse_args()
    if not c.Herder.available():
        sys.exit("no herder binary at %s (cargo build --release, or set HERDER_BIN)" % c.HERDER_BIN)
    raise_nofile()
    c.install_cleanup_handlers(time_limit_s=args.minutes * 60 + 1200)

    ws = c.Workspace("soak")
    t = c.Herder(ws)
    daemon = t.start_daemon()
    t0 = time.monotonic()
    for first in range(0, args.apps, BATCH):
        path = ws.path("idle-%d.toml" % first)
        with open(path, "w") as f:
            for i in range(first, min(first + BATCH, args.apps)):
                f.write('[[apps]]\nname = "idle%d"\nscript = "sleep"\nargs = ["100000"]\n\n' % i)
        t.run("start", path, timeout=600)
    ok, _ = c.wait_until(lambda: idle_sleeps(daemon) >= args.apps, 300, 0.1)
    if not ok:
        raise RuntimeError("only %d of %d idle apps run" % (idle_sleeps(daemon), args.apps))
    started_s = time.monotonic() - t0
    if args.crashers:
        path = ws.path("crashers.toml")
        with open(path, "w") as f:
            for i in range(args.crashers):
                f.write('[[apps]]\nname = "crash%d"\nscript = "sh"\nargs = ["-c", "sleep 0.05; exit 3"]\n'
                        'restart_delay = 0\nmin_uptime = 0\nmax_restarts = 1000000000\n\n' % i)
        t.run("start", path, timeout=120)
    c.log("soak: %d idle apps up in %.1f s, %d crash-looping; %g minutes, a restart every %g ms" % (
        args.apps, started_s, args.crashers, args.minutes, args.restart_every_ms))

    out = args.out or os.path.join(c.RESULTS_DIR, "soak.json")
    csv_path = os.path.splitext(out)[0] + ".csv"
    os.makedirs(os.path.dirname(csv_path), exist_ok=True)
    driver = Driver(t, args.apps, args.restart_every_ms / 1000)
    rows = []
    begin = time.monotonic()
    driver.start()
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["elapsed_s", "rss_kb", "hwm_kb", "fds", "threads", "cpu_s", "driver_restarts", "driver_failed"])
        next_at = begin
        while True:
            now = time.monotonic()
            if not c.pid_alive(daemon):
                raise RuntimeError("the daemon died after %.0f s" % (now - begin))
            s = sample(daemon)
            s["elapsed_s"] = round(now - begin, 1)
            s["driver_restarts"], s["driver_failed"] = driver.done, driver.failed
            rows.append(s)
            w.writerow([s[k] for k in ("elapsed_s", "rss_kb", "hwm_kb", "fds", "threads", "cpu_s",
                                       "driver_restarts", "driver_failed")])
            f.flush()
            if len(rows) % max(1, int(60 / args.sample_s)) == 0:
                c.log("%5.1f min: RSS %.1f MB, %d fds, %d threads, %d restarts by the driver" % (
                    s["elapsed_s"] / 60, s["rss_kb"] / 1024, s["fds"], s["threads"], driver.done))
            if now - begin >= args.minutes * 60:
                break
            next_at += args.sample_s
            time.sleep(max(0.0, next_at - time.monotonic()))
    driver.stop.set()
    driver.join(timeout=120)

    rc, listed, err, _ = t.run("list", "--json", timeout=120, check=False)
    apps = json.loads(listed) if rc == 0 else []
    online = sum(1 for a in apps if a["spec"]["name"].startswith("idle")
                 and all(i["status"] == "online" for i in a["instances"]))
    crash_restarts = sum(i["restarts"] for a in apps if a["spec"]["name"].startswith("crash") for i in a["instances"])
    idle_restarts = sum(i["restarts"] for a in apps if a["spec"]["name"].startswith("idle") for i in a["instances"])
    sleeps = idle_sleeps(daemon)
    state_kb = os.path.getsize(os.path.join(t.home, "state.json")) / 1024

    warm = [r for r in rows if r["elapsed_s"] >= args.warmup_min * 60]
    base = warm[0] if warm else rows[-1]
    keys = ("rss_kb", "fds", "threads")
    summary = {
        "warmup": {k: base[k] for k in keys},
        "end": {k: rows[-1][k] for k in keys},
        "max": {k: max(r[k] for r in rows) for k in keys},
        "max_after_warmup": {k: max(r[k] for r in warm) for k in keys} if warm else None,
        "min_after_warmup": {k: min(r[k] for r in warm) for k in keys} if warm else None,
        "vmhwm_kb": rows[-1]["hwm_kb"],
        "flat_rss": within([r["rss_kb"] for r in warm], base["rss_kb"], 10),
        "flat_fds": within([r["fds"] for r in warm], base["fds"], 10),
        "flat_threads": within([r["threads"] for r in warm], base["threads"], 10),
        "daemon_cpu_pct": round(100 * (rows[-1]["cpu_s"] - rows[0]["cpu_s"]) / max(1e-9, rows[-1]["elapsed_s"]), 1),
    }
    lat = c.summary(driver.latencies)
    result = {
        "description": "the daemon's RSS, descriptors and threads under restarts with 1000 apps (see bench/soak.py)",
        "minutes": args.minutes, "apps": args.apps, "crashers": args.crashers,
        "restart_every_ms": args.restart_every_ms, "sample_s": args.sample_s, "warmup_min": args.warmup_min,
        "idle_apps_started_s": round(started_s, 1),
        "driver": {"restarts": driver.done, "failed": driver.failed, "errors": driver.errors,
                   "waits_for_a_free_slot": driver.late,
                   "latency_s": lat},
        "crash_loop_restarts": crash_restarts, "idle_restarts_listed": idle_restarts,
        "end_check": {"idle_online": online, "idle_sleep_processes": sleeps, "list_exit": rc},
        "state_json_kb": round(state_kb),
        "summary": summary, "csv": os.path.relpath(csv_path, c.ROOT),
        "command": "python3 bench/soak.py --minutes %g --apps %d --crashers %d --restart-every-ms %g" % (
            args.minutes, args.apps, args.crashers, args.restart_every_ms),
    }
    c.save_results("soak", result, out)

    def fig(d):
        return "RSS %.1f MB, %d fds, %d threads" % (d["rss_kb"] / 1024, d["fds"], d["threads"])
    print("soak:         %g min, %d idle apps + %d crash-looping" % (args.minutes, args.apps, args.crashers))
    print("restarts:     %d by the driver (%.1f/s, %d failed; call median %.0f ms, p90 %.0f ms), %d crash-loop" % (
        driver.done, driver.done / max(1e-9, rows[-1]["elapsed_s"]), driver.failed, lat.get("median", 0) * 1000,
        lat.get("p90", 0) * 1000, crash_restarts))
    print("warm-up (%g min): %s" % (args.warmup_min, fig(summary["warmup"])))
    print("end:          %s" % fig(summary["end"]))
    print("max:          %s (VmHWM %.1f MB)" % (fig(summary["max"]), summary["vmhwm_kb"] / 1024))
    print("within 10%% after warm-up: RSS %s, fds %s, threads %s" % (
        summary["flat_rss"], summary["flat_fds"], summary["flat_threads"]))
    print("daemon CPU:   %.1f %% of one core on average" % summary["daemon_cpu_pct"])
    print("end check:    %d/%d idle apps online, %d `sleep 100000` processes; state.json %d KB" % (
        online, args.apps, sleeps, state_kb))
    print("samples:      %s" % os.path.relpath(csv_path, c.ROOT))
    flat = summary["flat_rss"] and summary["flat_fds"] and online == args.apps and sleeps == args.apps
    sys.exit(0 if flat else 1)


if __name__ == "__main__":
    main()
