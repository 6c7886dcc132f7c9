#!/usr/bin/env python3
"""Time to start 100 apps and to stop 100 apps.

Each tool's daemon is already running (daemon start-up is not counted). One round:
  start: `herder start idle-100.toml` / `pm2 start idle-100.json` (100 apps, each
         `sleep 100000`); timed from the call until the CLI returned AND 100 `sleep`
         processes run under the daemon (/proc polled every 2 ms). The tool's own
         list is then polled until it shows 100 online (reported as a cross-check).
  stop:  `herder stop all` / `pm2 stop all`; timed until the CLI returned AND no
         `sleep` process is left under the daemon.
  delete: `herder delete all` / `pm2 delete all` (CLI wall clock, not a headline figure).
Rounds alternate which tool goes first.

Usage: python3 bench/start_stop.py [--rounds 5] [--apps 100] [--tools herder,pm2]
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
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--apps", type=int, default=100)
    args = ap.parse_args()
    c.install_cleanup_handlers(time_limit_s=args.rounds * 2 * 400 + 120)

    ws = c.Workspace("startstop")
    tools = []
    for cls in c.pick_tools(args.tools.split(",")):
        t = cls(ws)
        t.start_daemon()
        tools.append(t)
    cfg = {t.name: t.write_idle_config(args.apps, ws.path("%s-idle-%d.%s" % (
        t.name, args.apps, "toml" if t.name == "herder" else "json"))) for t in tools}

    rounds = []
    time.sleep(1)
    for rnd in range(args.rounds):
        order = tools[rnd % len(tools):] + tools[:rnd % len(tools)]
        for t in order:
            st = c.start_idle_apps(t, args.apps, cfg[t.name])
            time.sleep(1)
            sp = c.stop_all_apps(t)
            dl = c.delete_all_apps(t)
            rounds.append({"round": rnd, "tool": t.name, "start": st, "stop": sp, "delete": dl})
            c.log("round %d %-6s start %.3fs (cli %.3fs)  stop %.3fs (cli %.3fs)  delete %.3fs" % (
                rnd, t.name, st["running"], st["cli"], sp["gone"], sp["cli"], dl["cli"]))
            time.sleep(0.5)

    summ = {}
    for t in tools:
        rs = [r for r in rounds if r["tool"] == t.name]
        summ[t.name] = {
            "start_s": c.summary([r["start"]["running"] for r in rs]),
            "start_cli_s": c.summary([r["start"]["cli"] for r in rs]),
            "start_listed_online_s": c.summary([r["start"]["listed_online"] for r in rs
                                                if r["start"]["listed_online"] is not None]),
            "stop_s": c.summary([r["stop"]["gone"] for r in rs]),
            "stop_cli_s": c.summary([r["stop"]["cli"] for r in rs]),
            "delete_cli_s": c.summary([r["delete"]["cli"] for r in rs]),
        }
    c.save_results("start_stop", {
        "description": "seconds to start / stop N idle apps",
        "rounds": args.rounds, "apps": args.apps,
        "commands": {
            "herder": {"start": "herder start idle-100.toml  # 100 [[apps]]: script = \"sleep\", args = [\"100000\"]",
                       "stop": "herder stop all", "delete": "herder delete all"},
            "pm2": {"start": "pm2 start idle-100.json  # 100 apps: script \"sleep\", args [\"100000\"], interpreter \"none\"",
                    "stop": "pm2 stop all", "delete": "pm2 delete all"},
        },
        "summary": summ, "per_round": rounds,
    }, args.out)
    for name, s in summ.items():
        c.log("%-6s start median %.3fs  stop median %.3fs" % (name, s["start_s"]["median"], s["stop_s"]["median"]))


if __name__ == "__main__":
    main()
