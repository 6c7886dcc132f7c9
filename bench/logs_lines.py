#!/usr/bin/env python3
"""Every line kept under rotation: an app writes --lines numbered lines to stdout and as many
to stderr as fast as it can (bench/fixtures/numbered.py, 64 KB batches cut at odd places),
while herder rotates its log files at a tiny `log_max_size` (default 1M) and keeps them all
(`log_retain`). Afterwards every line must be present exactly once, whole and in order per
stream, across the rotated files and the current one (read oldest first; gzipped ones too
with --compress). herder only: PM2 has no built-in rotation (pm2-logrotate copies and
truncates, which is how lines get lost).

Reports: lines found, the first problems (missing, repeated, cut or out-of-order lines),
rotated files per stream, and the seconds from `start` until the app had exited and its
files held everything.

Usage: python3 bench/logs_lines.py [--lines 10000000] [--max-size 1M] [--compress]
"""

import argparse
import gzip
import json
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

NUMBERED = os.path.join(c.FIXTURES, "numbered.py")


def files_of(path):
    """Rotated files of path (oldest first: by name without .gz) and path itself."""
    d, base = os.path.split(path)
    rotated = [n for n in os.listdir(d)
               if n.startswith(base + ".") and n[len(base) + 1:][:1].isdigit() and not n.endswith(".tmp")]
    rotated.sort(key=lambda n: n[:-3] if n.endswith(".gz") else n)
    return [os.path.join(d, n) for n in rotated] + [path]


def check(path, kind, count):
    """Walk every line of every file of path; return (lines, problems, files)."""
    files = files_of(path)
    i, problems = 0, []
    for f in files:
        opener = gzip.open if f.endswith(".gz") else open
        with opener(f, "rb") as fh:
            for line in fh:
                want = b"%s %d %s\n" % (kind, i, b"x" * (i % 40))
                if line != want:
                    if len(problems) < 10:
                        problems.append("%s: line %d is %r, expected %r" % (
                            os.path.basename(f), i, line[:80], want[:80]))
                    # Resynchronise on the number the line carries, to count the damage.
                    try:
                        n = int(line.split(b" ")[1])
                        i = n if n >= 0 else i
                    except (ValueError, IndexError):
                        pass
                i += 1
    if i != count and len(problems) < 10:
        problems.append("%d lines, expected %d" % (i, count))
    return i, problems, len(files) - 1


def app_stopped(t, name):
    rc, out, err, _ = t.run("list", "--json", timeout=30, check=False)
    if rc != 0:
        return False
    try:
        apps = json.loads(out)
    except ValueError:
        return False
    return any(a["spec"]["name"] == name and all(i["status"] == "stopped" for i in a["instances"]) for a in apps)


def main():
    ap = c.common_args(argparse.ArgumentParser(description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter),
                       default_tools="herder")
    ap.add_argument("--lines", type=int, default=10_000_000, help="lines per stream")
    ap.add_argument("--max-size", default="1M", help="log_max_size")
    ap.add_argument("--compress", action="store_true", help="log_compress = true")
    args = ap.parse_args()
    c.install_cleanup_handlers(time_limit_s=3600)
    if "herder" not in args.tools.split(","):
        c.log("logs_lines measures herder only; skipped")
        return
    if not c.Herder.available():
        sys.exit("herder is not built (%s)" % c.HERDER_BIN)

    ws = c.Workspace("lines")
    t = c.Herder(ws)
    t.start_daemon()
    cfg = ws.path("numbered.toml")
    with open(cfg, "w") as f:
        f.write('[[apps]]\nname = "numbered"\nscript = "%s"\ninterpreter = "python3"\nargs = ["%d"]\n'
                'autorestart = false\nlog_max_size = "%s"\nlog_retain = 1000000\nlog_compress = %s\n' % (
                    NUMBERED, args.lines, args.max_size, "true" if args.compress else "false"))
    t0 = time.perf_counter()
    rc, out, err, _ = t.run("start", cfg, timeout=60)
    warnings = [w.replace(ws.dir, "$TMP") for w in err.splitlines() if "log_" in w]
    ok, _ = c.wait_until(lambda: app_stopped(t, "numbered"), 3000, 0.2)
    elapsed = time.perf_counter() - t0
    if not ok:
        raise RuntimeError("the app did not finish")
    if args.compress:
        # Compression runs in the background: wait until no rotated file is left plain.
        logs = os.path.join(t.home, "logs")
        c.wait_until(lambda: not any(n[-1:].isdigit() and ".log." in n for n in os.listdir(logs)), 300, 0.2)

    res = {}
    for stream, kind in (("out", b"o"), ("err", b"e")):
        path = os.path.join(t.home, "logs", "numbered-0.%s.log" % stream)
        n, problems, rotated = check(path, kind, args.lines)
        res[stream] = {"lines": n, "problems": problems, "rotated_files": rotated,
                       "bytes": sum(os.path.getsize(f) for f in files_of(path))}
        c.log("%s: %d lines, %d rotated files, %s" % (
            stream, n, rotated, "every line once, whole, in order" if not problems else problems[:3]))
    rotation_applied = all(r["rotated_files"] > 0 for r in res.values())
    if not rotation_applied:
        c.log("no rotated file: this herder does not apply `log_max_size` yet (%s)" % "; ".join(warnings))

    c.save_results("logs_lines", {
        "description": "every line of a flood on both streams kept across rotations",
        "lines_per_stream": args.lines, "log_max_size": args.max_size, "compress": args.compress,
        "rotation_applied": rotation_applied, "config_warnings": warnings,
        "seconds_until_done": elapsed,
        "all_lines_once_in_order": all(not r["problems"] for r in res.values()),
        "streams": res,
        "commands": {"herder": "herder start numbered.toml  # script numbered.py %d, log_max_size = \"%s\", "
                               "log_retain = 1000000, log_compress = %s" % (
                                   args.lines, args.max_size, "true" if args.compress else "false")},
    }, args.out)


if __name__ == "__main__":
    main()
