#!/usr/bin/env python3
"""Log throughput: an app writes 500 MB of 100-byte lines to stdout (bench/fixtures/blast.py,
1 MB blocks); how long until its log file holds all of it?

Runners, interleaved round by round (the order rotates):
  direct       the same generator with stdout redirected to a file (the floor: no pipe, no
               supervisor); time from its first byte to its last write returning
  herder       `herder start blast.py --no-autorestart -- <bytes> <stamp>`; raw lines
  herder-time  the same from a herder.toml with `time = true` (a timestamp on every line);
               skipped with a note when this herder does not apply `time` yet
  pm2          `pm2 start blast.py --no-autorestart -o <file> -- <bytes> <stamp>`
  pm2-time     the same with `--time`
For the supervisors: time from the fixture's first byte ("S" in its stamp file) until the
log file ends with the fixture's last line (polled every 2 ms), so the fixture's start-up is
not counted. herder runs with its defaults, so its files rotate at 100M during the run; the
bytes are counted across the rotated files. MB/s = bytes the app wrote / that time (1 MB = 10^6 bytes).
During every herder run the daemon's VmRSS is sampled every 5 ms (max reported), and its
VmHWM after the run; PM2's God daemon likewise. Between runs, log files are removed, `sync`
runs, and the script waits until both daemons are idle (PM2's keeps working for seconds
after its log is complete), so that one run does not slow the next.

Usage: python3 bench/logs_throughput.py [--mb 500] [--rounds 3] [--tools herder,pm2] [--runners …]
"""

import argparse
import os
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

BLAST = os.path.join(c.FIXTURES, "blast.py")


def stamps(path):
    s = e = None
    try:
        with open(path) as f:
            for line in f:
                k, v = line.split()
                if k == "S":
                    s = int(v)
                elif k == "E":
                    e = int(v)
    except (OSError, ValueError):
        pass
    return s, e


def ends_with_last_line(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256))
            tail = f.read()
    except OSError:
        return False
    return tail.endswith(b"\n") and b"END" in tail.rsplit(b"\n", 2)[-2]


class RssSampler:
    """Max VmRSS (kB) of pid, sampled every 5 ms in a thread."""

    def __init__(self, pid):
        self.pid, self.max_kb, self.samples = pid, 0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                kb = c.status_kb(self.pid, "VmRSS") or 0
            except OSError:
                return
            self.max_kb = max(self.max_kb, kb)
            self.samples += 1
            self._stop.wait(0.005)

    def stop(self):
        self._stop.set()
        self._t.join(5)
        return {"max_vmrss_kb": self.max_kb, "samples": self.samples}


def size_of(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def wait_logged(log_file, stamp, timeout_s, settle_s=3.0):
    """Seconds from the fixture's first byte until log_file holds its last line; None when
    the fixture finished but the file stopped growing for settle_s without its last line
    (the supervisor lost lines)."""
    seen = {"size": -1, "since": time.perf_counter()}

    def done():
        if ends_with_last_line(log_file):
            return True
        size = size_of(log_file)
        if size != seen["size"]:
            seen["size"], seen["since"] = size, time.perf_counter()
        return stamps(stamp)[1] is not None and time.perf_counter() - seen["since"] > settle_s

    ok, _ = c.wait_until(done, timeout_s, 0.002)
    done_ns = time.time_ns()
    if not ok:
        raise RuntimeError("%s never received the last line within %ds" % (log_file, timeout_s))
    s, _ = stamps(stamp)
    if s is None:
        raise RuntimeError("the fixture wrote no start stamp to %s" % stamp)
    if not ends_with_last_line(log_file):
        c.log("%s: the app finished but its log never got its last line (%d bytes)" % (
            os.path.basename(log_file), size_of(log_file)))
        return None
    return (done_ns - s) / 1e9


def with_rotated(path):
    """path and its rotated files (herder rotates at its default log_max_size, 100M)."""
    d, base = os.path.split(path)
    return [os.path.join(d, n) for n in os.listdir(d)
            if n == base or (n.startswith(base + ".") and n[len(base) + 1:][:1].isdigit())]


def first_line(path):
    with open(path, "rb") as f:
        return f.readline(200).decode(errors="replace").rstrip("\n")


def cpu_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return 0


def wait_quiet(pids, timeout_s=60):
    """Wait until the daemons are idle (under 2% of a CPU over 250 ms): PM2's daemon keeps
    working for seconds after its log holds everything, and would slow the next runner."""
    hz = os.sysconf("SC_CLK_TCK")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        before = sum(cpu_ticks(p) for p in pids)
        time.sleep(0.25)
        if (sum(cpu_ticks(p) for p in pids) - before) / hz < 0.005:
            return time.perf_counter() - t0
    c.log("the daemons were still busy after %ds" % timeout_s)
    return None


def cleanup_files(*paths):
    for p in paths:
        try:
            os.remove(p)
        except OSError:
            pass
    os.sync()


def run_direct(ws, total, rnd):
    out = ws.path("direct-%d.log" % rnd)
    stamp = ws.path("direct-%d.stamp" % rnd)
    with open(out, "wb") as f:
        p = subprocess.run([c.PYTHON, BLAST, str(total), stamp], stdout=f, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, timeout=600, env=c.base_env())
    if p.returncode != 0:
        raise RuntimeError("direct run failed: %s" % p.stderr.decode(errors="replace")[-500:])
    s, e = stamps(stamp)
    size = os.path.getsize(out)
    res = {"seconds": (e - s) / 1e9, "file_bytes": size, "complete": size == total}
    cleanup_files(out, stamp)
    return res


def run_herder(t, ws, total, rnd, timed):
    name = "blast%d%s" % (rnd, "t" if timed else "")
    stamp = ws.path("%s.stamp" % name)
    log_file = os.path.join(t.home, "logs", "%s-0.out.log" % name)
    if timed:
        cfg = ws.path("%s.toml" % name)
        with open(cfg, "w") as f:
            f.write('[[apps]]\nname = "%s"\nscript = "%s"\ninterpreter = "python3"\nargs = ["%d", "%s"]\n'
                    'autorestart = false\ntime = true\n' % (name, BLAST, total, stamp))
        args = ("start", cfg)
    else:
        args = ("start", BLAST, "--name", name, "--interpreter", "python3", "--no-autorestart",
                "--", str(total), stamp)
    sampler = RssSampler(t.pid())
    try:
        t.run(*args, timeout=60)
        secs = wait_logged(log_file, stamp, 600)
    finally:
        rss = sampler.stop()
    rss["vmhwm_kb"] = c.status_kb(t.pid(), "VmHWM")
    files = with_rotated(log_file)
    size = sum(os.path.getsize(f) for f in files)
    line = first_line(log_file)
    res = {"seconds": secs, "file_bytes": size, "files": len(files), "first_line": line[:60], "rss": rss,
           "complete": secs is not None and (size == total if not timed else size > total)}
    if timed:
        res["timestamps_applied"] = not line.startswith("x")
    t.run("delete", name, timeout=60, check=False)
    cleanup_files(*files, os.path.join(t.home, "logs", "%s-0.err.log" % name), stamp)
    return res


def run_pm2(t, ws, total, rnd, timed):
    name = "blast%d%s" % (rnd, "t" if timed else "")
    stamp = ws.path("%s.stamp" % name)
    out = ws.path("%s.out.log" % name)
    err = ws.path("%s.err.log" % name)
    args = ["start", BLAST, "--name", name, "--interpreter", "python3", "--no-autorestart",
            "-o", out, "-e", err]
    if timed:
        args.append("--time")
    args += ["--", str(total), stamp]
    sampler = RssSampler(t.pid())
    try:
        t.run(*args, timeout=120)
        secs = wait_logged(out, stamp, 900)
    finally:
        rss = sampler.stop()
    size = os.path.getsize(out)
    res = {"seconds": secs, "file_bytes": size, "first_line": first_line(out)[:60], "rss": rss,
           "complete": secs is not None and (size == total if not timed else size > total)}
    t.run("delete", name, timeout=120, check=False)
    cleanup_files(out, err, stamp)
    return res


def main():
    ap = c.common_args(argparse.ArgumentParser(description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--mb", type=int, default=500, help="megabytes (10^6) the app writes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-time", action="store_true", help="skip the timestamped variants")
    ap.add_argument("--runners", default=None, help="only these runners (comma-separated), e.g. herder,herder-time")
    args = ap.parse_args()
    c.install_cleanup_handlers(time_limit_s=args.rounds * 5 * 700 + 120)
    total = args.mb * 1_000_000

    ws = c.Workspace("logs")
    tools = {}
    for cls in c.pick_tools(args.tools.split(",")):
        t = cls(ws)
        t.start_daemon()
        tools[t.name] = t
    runners = ["direct"]
    if "herder" in tools:
        runners += ["herder"] + ([] if args.no_time else ["herder-time"])
    if "pm2" in tools:
        runners += ["pm2"] + ([] if args.no_time else ["pm2-time"])
    if args.runners:
        runners = [r for r in runners if r in args.runners.split(",")]

    rounds = []
    skipped = set()
    time.sleep(1)
    for rnd in range(args.rounds):
        order = runners[rnd % len(runners):] + runners[:rnd % len(runners)]
        for r in order:
            if r in skipped:
                continue
            if r == "direct":
                res = run_direct(ws, total, rnd)
            elif r.startswith("herder"):
                res = run_herder(tools["herder"], ws, total, rnd, r.endswith("-time"))
                if r.endswith("-time") and not res["timestamps_applied"]:
                    c.log("herder does not apply `time = true` yet (first line %r): herder-time skipped"
                          % res["first_line"])
                    skipped.add(r)
                    res["skipped"] = "time = true not applied by this herder"
            else:
                res = run_pm2(tools["pm2"], ws, total, rnd, r.endswith("-time"))
            res.update({"round": rnd, "runner": r,
                        "mb_per_s": args.mb / res["seconds"] if res["seconds"] else None})
            rounds.append(res)
            res["quiet_after_s"] = wait_quiet([t.pid() for t in tools.values()])
            c.log("round %d %-12s %7.3f s  %7.0f MB/s  complete=%s%s" % (
                rnd, r, res["seconds"] or 0, res["mb_per_s"] or 0, res["complete"],
                "  daemon max RSS %.1f MB" % (res["rss"]["max_vmrss_kb"] / 1024) if "rss" in res else ""))
            time.sleep(0.5)

    summary = {}
    for r in runners:
        rs = [x for x in rounds if x["runner"] == r and not x.get("skipped")]
        if not rs:
            summary[r] = {"skipped": next((x.get("skipped") for x in rounds if x["runner"] == r), "no runs")}
            continue
        # Runs that lost lines have no time: the log never held everything.
        timed_runs = [x for x in rs if x["seconds"]]
        summary[r] = {
            "seconds": c.summary([x["seconds"] for x in timed_runs]),
            "mb_per_s": c.summary([x["mb_per_s"] for x in timed_runs]),
            "all_complete": all(x["complete"] for x in rs),
            "runs": len(rs),
            "incomplete_runs": sum(1 for x in rs if not x["complete"]),
        }
        if not r.endswith("-time"):
            summary[r]["bytes_missing_max"] = max(total - x["file_bytes"] for x in rs)
        if "rss" in rs[0]:
            summary[r]["max_vmrss_kb"] = max(x["rss"]["max_vmrss_kb"] for x in rs)
            hwm = [x["rss"].get("vmhwm_kb") for x in rs if x["rss"].get("vmhwm_kb")]
            summary[r]["vmhwm_kb"] = max(hwm) if hwm else None

    c.save_results("logs_throughput", {
        "description": "seconds until the log file holds all of an app's output (MB = 10^6 bytes)",
        "mb": args.mb, "line_bytes": 100, "rounds": args.rounds,
        "commands": {
            "direct": "python3 blast.py <bytes> <stamp> > file",
            "herder": "herder start blast.py --interpreter python3 --no-autorestart -- <bytes> <stamp>",
            "herder-time": "herder start blast.toml  # time = true, same app",
            "pm2": "pm2 start blast.py --interpreter python3 --no-autorestart -o <file> -- <bytes> <stamp>",
            "pm2-time": "pm2 start blast.py … --time",
        },
        "summary": summary, "per_round": rounds,
    }, args.out)
    for r, s in summary.items():
        if s.get("mb_per_s", {}).get("n"):
            c.log("%-12s median %7.0f MB/s (%.3f s)%s" % (
                r, s["mb_per_s"]["median"], s["seconds"]["median"],
                "  daemon max RSS %.1f MB" % (s["max_vmrss_kb"] / 1024) if s.get("max_vmrss_kb") else ""))
        else:
            c.log("%-12s %s" % (r, s.get("skipped")))


if __name__ == "__main__":
    main()
