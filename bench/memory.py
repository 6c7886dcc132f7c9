#!/usr/bin/env python3
"""Daemon memory: VmRSS of the herder daemon and of PM2's God daemon, idle (0 apps)
and with 100 idle apps (`sleep 100000`, started from one config file per tool).

Daemon pids: $HERDER_HOME/daemon.pid and $PM2_HOME/pm2.pid. VmRSS (and VmHWM, Pss)
from /proc/<pid>/status and smaps_rollup, median of 5 samples 0.2 s apart, taken
after the daemon settled (--settle seconds). A last sample is taken after stopping
and deleting the 100 apps, to show whether the memory comes back.

Before each daemon starts, its executable (herder's binary; node, for PM2's God daemon) is
dropped from the page cache, as after a boot: a binary just built or copied sits in larger
page-cache folios, which this kernel maps whole on a fault, and reads up to ~1.5 MB larger
(see bench/http_stack.py). `--no-evict` measures the executables as they are cached.

Usage: python3 bench/memory.py [--apps 100] [--settle 3] [--tools herder,pm2] [--no-evict]
"""

import argparse
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402


def main():
    ap = c.common_args(argparse.ArgumentParser(description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--apps", type=int, default=100)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--no-evict", dest="evict", action="store_false",
                    help="leave the executables in the page cache as they are")
    args = ap.parse_args()
    c.install_cleanup_handlers(time_limit_s=900)

    ws = c.Workspace("mem")
    tools = []
    for cls in c.pick_tools(args.tools.split(",")):
        t = cls(ws)
        if args.evict:
            for path in t.executables():
                c.evict(path)
        t.start_daemon()
        tools.append(t)

    res = {t.name: {"daemon_pid_file": t.pid_file.replace(ws.dir, "$TMP")} for t in tools}
    time.sleep(args.settle)
    for t in tools:
        res[t.name]["idle"] = c.rss_sample(t.pid())
    for t in tools:
        cfg = t.write_idle_config(args.apps, ws.path("%s-idle-%d.%s" % (
            t.name, args.apps, "toml" if t.name == "herder" else "json")))
        c.start_idle_apps(t, args.apps, cfg)
    time.sleep(args.settle)
    for t in tools:
        res[t.name]["apps"] = c.rss_sample(t.pid())
        res[t.name]["apps_online_listed"] = t.online_count()
    for t in tools:
        c.stop_all_apps(t)
        c.delete_all_apps(t)
    time.sleep(args.settle)
    for t in tools:
        res[t.name]["after_delete"] = c.rss_sample(t.pid())

    c.save_results("memory", {
        "description": "daemon memory (kB), idle and with N idle apps",
        "apps": args.apps, "settle_s": args.settle, "evicted_from_page_cache": args.evict, "results": res,
        "commands": {
            "herder": "herder ping; herder start idle-100.toml  # 100 [[apps]] script=\"sleep\" args=[\"100000\"]; "
                      "grep VmRSS /proc/$(cat $HERDER_HOME/daemon.pid)/status",
            "pm2": "pm2 ping; pm2 start idle-100.json  # 100 apps script=\"sleep\" args=[\"100000\"] "
                   "interpreter=\"none\"; grep VmRSS /proc/$(cat $PM2_HOME/pm2.pid)/status",
        },
    }, args.out)
    for name, r in res.items():
        c.log("%-6s idle %6.1f MB   %d apps %6.1f MB   after delete %6.1f MB" % (
            name, r["idle"]["vmrss_kb"] / 1024, args.apps, r["apps"]["vmrss_kb"] / 1024,
            r["after_delete"]["vmrss_kb"] / 1024))


if __name__ == "__main__":
    main()
