#!/usr/bin/env python3
"""`list` latency with 0 and with 100 idle apps: herder list vs pm2 jlist / pm2 ls.

Each command's wall clock is measured from this script (subprocess, output to
/dev/null, time.perf_counter), `--runs` times per command, interleaved (each
iteration runs every command once, in a rotating order) so that machine noise
hits all of them. `/bin/true` is timed the same way: it is the harness's own
fork+exec floor, included in every figure.
The 100 apps are `sleep 100000`, started from one config file per tool.

Usage: python3 bench/list_latency.py [--runs 50] [--apps 100] [--tools herder,pm2]
"""

import argparse
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402


def measure(cmds, env_of, runs, warmup=3):
    """cmds: {label: argv}. Returns {label: {"samples_ms": [...], "failures": k}}."""
    labels = list(cmds)
    res = {k: {"samples_ms": [], "failures": 0} for k in labels}
    for _ in range(warmup):
        for k in labels:
            c.time_cmd(cmds[k], env_of[k])
    deadline = time.time() + 600
    for i in range(runs):
        rot = labels[i % len(labels):] + labels[:i % len(labels)]
        for k in rot:
            dt, rc = c.time_cmd(cmds[k], env_of[k])
            if rc != 0:
                res[k]["failures"] += 1
            res[k]["samples_ms"].append(dt * 1000)
        if time.time() > deadline:
            c.log("list latency: time limit hit after %d runs" % (i + 1))
            break
    for k in labels:
        res[k]["summary"] = c.summary(res[k]["samples_ms"])
        res[k]["samples_ms"] = [round(x, 3) for x in res[k]["samples_ms"]]
    return res


def main():
    ap = c.common_args(argparse.ArgumentParser(description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--apps", type=int, default=100)
    args = ap.parse_args()
    c.install_cleanup_handlers(time_limit_s=1800)

    ws = c.Workspace("list")
    tools = []
    for cls in c.pick_tools(args.tools.split(",")):
        t = cls(ws)
        t.start_daemon()
        tools.append(t)

    cmds, env_of = {"/bin/true (harness floor)": ["/bin/true"]}, {}
    env_of["/bin/true (harness floor)"] = c.base_env()
    for t in tools:
        for label, argv in t.list_cmds().items():
            cmds[label] = argv
            env_of[label] = t.env

    phases = {}
    time.sleep(1)
    c.log("list latency, 0 apps, %d runs" % args.runs)
    phases["0"] = measure(cmds, env_of, args.runs)

    checks = {}
    for t in tools:
        cfg = t.write_idle_config(args.apps, ws.path("%s-idle-%d.%s" % (
            t.name, args.apps, "toml" if t.name == "herder" else "json")))
        c.start_idle_apps(t, args.apps, cfg)
        checks[t.name] = {"online_listed": t.online_count()}
    time.sleep(2)
    c.log("list latency, %d apps, %d runs" % (args.apps, args.runs))
    phases[str(args.apps)] = measure(cmds, env_of, args.runs)

    # output sizes once (not timed), to show that the lists are complete
    for label, argv in cmds.items():
        rc, out, err, _ = c.run(argv, env=env_of[label], timeout=30)
        checks.setdefault("output_bytes", {})[label] = len(out)

    c.save_results("list_latency", {
        "description": "wall clock (ms) of one list command, from a python harness",
        "runs": args.runs, "apps": args.apps,
        "commands": {k: c.shell_join(v) for k, v in cmds.items()},
        "phases": phases, "checks": checks,
    }, args.out)
    for ph, res in phases.items():
        for k, r in res.items():
            s = r["summary"]
            c.log("%4s apps  %-28s median %8.2f ms  p10 %8.2f  p90 %8.2f  failures %d" % (
                ph, k, s["median"], s["p10"], s["p90"], r["failures"]))


if __name__ == "__main__":
    main()
