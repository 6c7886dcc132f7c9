#!/usr/bin/env python3
"""Cluster mode: one port served by several instances of a Node server.

The server is bench/fixtures/cluster_server.js (a plain http.createServer answering `/`
with "ok\\n", listening on $PORT; per process it counts connections and requests and
writes them to $STATS_DIR/<pid> on SIGUSR2). Load comes from
`wrk -t<threads> -c<connections> -d<duration>s --latency http://127.0.0.1:<port>/`
(wrk from the distribution: without it this script stops with an error).

Part 1, throughput and latency, runners interleaved round by round (the order rotates):
  direct: `PORT=<port> node cluster_server.js`, one process started by this script;
  herder: `herder start cluster_server.js -i N --port <port>` (the daemon binds the port,
          every instance inherits the socket, herder's preload makes listen(PORT) use it);
  pm2:    `PORT=<port> pm2 start cluster_server.js -i N` (PM2's cluster mode: node's
          cluster module, the PM2 daemon is the primary and hands connections out).
  Requests/s, p50 / p99 latency, non-2xx and socket errors per run; medians over rounds.
Part 2, spread across 4 instances (herder and PM2): one wrk run with 64 keep-alive
  connections, one with `-H 'Connection: close'` (a new connection per request); each
  instance's connections and requests in the phase (deltas of its counters), as a ratio
  of the fair share (total / instances). Target: every instance within 0.5x-1.5x.
Part 3, reload under load (herder only): 4 instances, wrk -c64 for at least 20 s while
  `herder reload <app>` runs 5 times in a row; wrk's non-2xx and socket errors (target:
  zero) and each instance's pid after every reload (`herder list --json`: every pid must
  change every time). wrk runs with a long -d and is stopped with SIGINT (it then prints
  its report) once the reloads are done and the minimum duration has passed.

Each tool has its own HERDER_HOME / PM2_HOME in the temporary folder; ports are free
ports picked at the start; daemons and servers are killed at the end, on error or signal.

Usage: python3 bench/cluster.py [--duration 10 --rounds 3 --instances 2 --connections 64
       --threads 2] [--parts throughput,spread,reload] [--tools herder,pm2]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

SERVER = os.path.join(c.FIXTURES, "cluster_server.js")
PARTS = ("throughput", "spread", "reload")
SPREAD_RANGE = (0.5, 1.5)


# ---------------------------------------------------------------- wrk

_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def to_ms(text):
    """wrk's time ('812.00us', '1.20ms', '2.01s', '1.00m') in ms."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        return None
    return round(float(m.group(1)) * _UNITS_S[m.group(2)] * 1000.0, 6)


def parse_wrk(out):
    """Figures from wrk's output (with --latency). Missing error lines mean zero."""
    r = {"requests": None, "seconds": None, "rps": None, "avg_ms": None, "max_ms": None,
         "p50_ms": None, "p75_ms": None, "p90_ms": None, "p99_ms": None, "non_2xx_3xx": 0,
         "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}}
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if m:
        r["avg_ms"], r["max_ms"] = to_ms(m.group(1)), to_ms(m.group(3))
    for pct, val in re.findall(r"^\s*(50|75|90|99)%\s+(\S+)\s*$", out, re.M):
        r["p%s_ms" % pct] = to_ms(val)
    m = re.search(r"(\d+) requests in ([\d.]+(?:us|ms|s|m|h)),", out)
    if m:
        r["requests"] = int(m.group(1))
        r["seconds"] = to_ms(m.group(2)) / 1000.0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non_2xx_3xx"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    r["errors"] = r["non_2xx_3xx"] + sum(r["socket_errors"].values())
    return r


# Milliseconds each connection waits after each answer in the paced runs.
PACE_MS = 2


class Wrk:
    def __init__(self, path, threads, connections):
        self.path = path
        self.threads = max(1, min(threads, connections))
        self.connections = connections

    def cmd(self, port, duration_s, close=False, script=None):
        cmd = [self.path, "-t%d" % self.threads, "-c%d" % self.connections, "-d%ds" % duration_s, "--latency"]
        if close:
            cmd += ["-H", "Connection: close"]
        if script:
            cmd += ["-s", script]
        return cmd + ["http://127.0.0.1:%s/" % port]

    def run(self, port, duration_s, close=False, script=None):
        cmd = self.cmd(port, duration_s, close, script)
        rc, out, err, wall = c.run(cmd, timeout=duration_s + 60)
        r = parse_wrk(out)
        if rc != 0 or r["rps"] is None:
            raise RuntimeError("wrk failed (%s): %s" % (rc, (out + err)[-1500:]))
        r["loadavg"] = open("/proc/loadavg").read().split()[:3]
        return r


def wrk_display(cmd):
    """The command line for the report: `wrk`, not its path (build cmd with port "<port>")."""
    return c.shell_join(["wrk"] + cmd[1:])


# ---------------------------------------------------------------- servers


def free_port():
    """A TCP port free on every address right now (both families, as herder binds them)."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
        s.close()
        try:
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s6.bind(("::", port))
            finally:
                s6.close()
        except OSError as e:
            if getattr(e, "errno", None) == 98:  # EADDRINUSE on IPv6: try another
                continue
        return port
    raise RuntimeError("no free port found")


def http_ok(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def read_stats(stats_dir, pids, timeout_s=10):
    """{pid: (conns, reqs)}: SIGUSR2 to each pid, then its STATS_DIR/<pid> file (bounded wait)."""
    for p in pids:
        try:
            os.unlink(os.path.join(stats_dir, str(p)))
        except OSError:
            pass
    for p in pids:
        os.kill(p, signal.SIGUSR2)
    out = {}

    def have_all():
        for p in pids:
            if p in out:
                continue
            try:
                with open(os.path.join(stats_dir, str(p))) as f:
                    parts = f.read().split()
            except OSError:
                continue
            if len(parts) >= 6 and parts[0] == "pid" and int(parts[1]) == p:
                out[p] = (int(parts[3]), int(parts[5]))
        return len(out) == len(pids)

    ok, _ = c.wait_until(have_all, timeout_s, 0.01)
    if not ok:
        raise RuntimeError("no stats from pids %s after %ds" % (sorted(set(pids) - set(out)), timeout_s))
    return out


class Direct:
    """One `node cluster_server.js` started by this script."""
    name = "direct"

    def __init__(self, ws, port):
        self.ws, self.port = ws, port
        self.stats = ws.path("stats", "direct", "x")[:-2]
        self.env = c.base_env()
        self.env.update({"PORT": str(port), "STATS_DIR": self.stats})
        self.node = shutil.which("node", path=self.env.get("PATH")) or "node"
        self.command = "PORT=<port> node bench/fixtures/cluster_server.js"
        self.proc = None
        c.on_cleanup(self.stop)

    def start(self):
        logf = open(self.ws.path("direct.log"), "wb")
        self.proc = subprocess.Popen([self.node, SERVER], env=self.env, cwd=self.ws.dir, stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        ok, _ = c.wait_until(lambda: self.proc.poll() is None and http_ok(self.port), 30, 0.05)
        if not ok:
            raise RuntimeError("direct node server did not answer on port %d" % self.port)

    def pids(self):
        return [self.proc.pid]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


class ClusterApp:
    """An app in a tool's cluster mode: N instances of the server on one port."""

    def __init__(self, tool, app, port, instances):
        self.tool, self.app, self.port, self.n = tool, app, port, instances
        self.name = tool.name
        self.stats = tool.ws.path("stats", "%s-%s" % (tool.name, app), "x")[:-2]
        self.env = dict(tool.env)
        self.env["STATS_DIR"] = self.stats
        if tool.name == "herder":
            self.args = ("start", SERVER, "-i", str(instances), "--port", str(port), "--name", app)
            self.command = "herder start bench/fixtures/cluster_server.js -i %d --port <port> --name %s" % (
                instances, app)
        else:
            self.env["PORT"] = str(port)
            self.args = ("start", SERVER, "-i", str(instances), "--name", app)
            self.command = "PORT=<port> pm2 start bench/fixtures/cluster_server.js -i %d --name %s" % (
                instances, app)

    def _cli(self, *args, timeout=120, check=True):
        rc, out, err, dt = c.run(self.tool.cmd(*args), env=self.env, timeout=timeout, cwd=self.tool.ws.dir)
        if check and rc != 0:
            raise RuntimeError("%s %s failed (%s): %s" % (self.name, args[0], rc, (out + err)[-1500:]))
        return rc, out, err, dt

    def instances(self):
        """[(index, pid, status)] of the app's instances, from the tool's JSON list."""
        if self.tool.name == "herder":
            rc, out, _, _ = self._cli("list", "--json", timeout=30, check=False)
            try:
                data = json.loads(out) if rc == 0 else []
            except ValueError:
                return []
            res = []
            for a in data:
                if (a.get("spec") or {}).get("name") != self.app:
                    continue
                for i in a.get("instances") or []:
                    res.append((i.get("index"), i.get("pid"), i.get("status")))
            return res
        rc, out, _, _ = self._cli("jlist", timeout=30, check=False)
        try:
            data = json.loads(out[out.index("["):]) if rc == 0 else []
        except ValueError:
            return []
        return [((p.get("pm2_env") or {}).get("NODE_APP_INSTANCE", p.get("pm_id")), p.get("pid"),
                 (p.get("pm2_env") or {}).get("status")) for p in data if p.get("name") == self.app]

    def mode(self):
        if self.tool.name == "herder":
            return "cluster" if self.instances() else None
        rc, out, _, _ = self._cli("jlist", timeout=30, check=False)
        try:
            data = json.loads(out[out.index("["):])
        except ValueError:
            return None
        modes = {(p.get("pm2_env") or {}).get("exec_mode") for p in data if p.get("name") == self.app}
        return "/".join(sorted(map(str, modes)))

    def running(self):
        inst = self.instances()
        return (len(inst) == self.n and all(s == "online" and p for _, p, s in inst)
                and all(c.pid_alive(p) for _, p, _ in inst))

    def start(self):
        self._cli(*self.args)
        ok, _ = c.wait_until(lambda: self.running() and http_ok(self.port), 60, 0.1)
        if not ok:
            raise RuntimeError("%s: %d instances of %s not online and serving port %d after 60 s (%s)" % (
                self.name, self.n, self.app, self.port, self.instances()))

    def pids(self):
        return [p for _, p, _ in self.instances()]

    def delete(self):
        self._cli("delete", self.app, timeout=60, check=False)
        c.wait_until(lambda: not self.instances(), 30, 0.1)


# ---------------------------------------------------------------- parts


def throughput(args, wrk, ws, tools):
    runners = [Direct(ws, free_port())]
    for t in tools:
        runners.append(ClusterApp(t, "tp", free_port(), args.instances))
    for r in runners:
        r.start()
        c.log("%s: serving port %d (%s)" % (r.name, r.port, r.command))
    modes = {r.name: r.mode() for r in runners if r.name != "direct"}
    if args.warmup > 0:
        for r in runners:
            wrk.run(r.port, args.warmup)
    per_round = []
    for rnd in range(args.rounds):
        order = runners[rnd % len(runners):] + runners[:rnd % len(runners)]
        for r in order:
            time.sleep(1)
            x = wrk.run(r.port, args.duration)
            x.update({"round": rnd, "runner": r.name})
            per_round.append(x)
            c.log("round %d %-6s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d" % (
                rnd, r.name, x["rps"], x["p50_ms"] or -1, x["p99_ms"] or -1, x["errors"]))
    summ = {}
    for r in runners:
        xs = [x for x in per_round if x["runner"] == r.name]
        summ[r.name] = {
            "processes": len(r.pids()),
            "rps": c.summary([x["rps"] for x in xs]),
            "p50_ms": c.summary([x["p50_ms"] for x in xs if x["p50_ms"] is not None]),
            "p99_ms": c.summary([x["p99_ms"] for x in xs if x["p99_ms"] is not None]),
            "max_ms": c.summary([x["max_ms"] for x in xs if x["max_ms"] is not None]),
            "requests": sum(x["requests"] or 0 for x in xs),
            "non_2xx_3xx": sum(x["non_2xx_3xx"] for x in xs),
            "socket_errors": sum(sum(x["socket_errors"].values()) for x in xs),
        }

    def rat(a, b, key):
        x, y = summ.get(a, {}).get(key, {}).get("median"), summ.get(b, {}).get(key, {}).get("median")
        return x / y if x is not None and y else None

    # The same offered load for every runner: each connection waits PACE_MS after each answer,
    # so that the rate stays well under every runner's capacity and the latencies compare at
    # one request rate (wrk has no rate option; wrk2 is not in Debian).
    # One level per --pace-ms: the smaller the pause, the higher the rate (1 ms: close to the
    # slowest runner's capacity).
    levels = []
    for pace in args.pace_ms:
        paced_script = ws.path("paced-%d.lua" % pace)
        with open(paced_script, "w") as f:
            f.write("function delay()\n  return %d\nend\n" % pace)
        paced = []
        for rnd in range(args.rounds):
            order = runners[rnd % len(runners):] + runners[:rnd % len(runners)]
            for r in order:
                time.sleep(1)
                x = wrk.run(r.port, args.duration, script=paced_script)
                x.update({"round": rnd, "runner": r.name, "pace_ms": pace})
                paced.append(x)
                c.log("paced %d ms round %d %-6s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d" % (
                    pace, rnd, r.name, x["rps"], x["p50_ms"] or -1, x["p99_ms"] or -1, x["errors"]))
        paced_summ = {}
        for r in runners:
            xs = [x for x in paced if x["runner"] == r.name]
            paced_summ[r.name] = {
                "rps": c.summary([x["rps"] for x in xs]),
                "p50_ms": c.summary([x["p50_ms"] for x in xs if x["p50_ms"] is not None]),
                "p99_ms": c.summary([x["p99_ms"] for x in xs if x["p99_ms"] is not None]),
                "errors": sum(x["errors"] for x in xs),
            }
        levels.append({"pace_ms": pace,
                       "wrk": wrk_display(wrk.cmd("<port>", args.duration, script="paced-%d.lua" % pace)),
                       "summary": paced_summ, "per_round": paced})

    ratios = {"herder_over_pm2_rps": rat("herder", "pm2", "rps"),
              "herder_over_direct_rps": rat("herder", "direct", "rps"),
              "pm2_over_direct_rps": rat("pm2", "direct", "rps"),
              "herder_over_pm2_p99": rat("herder", "pm2", "p99_ms")}
    for r in runners:
        if r.name == "direct":
            r.stop()
        else:
            r.delete()
    return {"instances": args.instances, "rounds": args.rounds, "duration_s": args.duration,
            "warmup_s": args.warmup, "modes": modes,
            "commands": {r.name: r.command for r in runners},
            "wrk": wrk_display(wrk.cmd("<port>", args.duration)),
            "summary": summ, "ratios": ratios, "per_round": per_round,
            "paced": levels[0] if levels else None, "paced_levels": levels}


def shares(before, after, pids):
    """Per-instance deltas and their ratios to the fair share."""
    d = {p: (after[p][0] - before[p][0], after[p][1] - before[p][1]) for p in pids}
    out = {"per_instance": [{"pid": p, "conns": d[p][0], "reqs": d[p][1]} for p in pids]}
    for k, i in (("conns", 0), ("reqs", 1)):
        total = sum(v[i] for v in d.values())
        fair = total / len(pids) if pids else 0
        ratios = [v[i] / fair for v in d.values()] if fair else []
        out[k] = {"total": total, "fair": fair, "ratios": [round(x, 3) for x in ratios],
                  "min_ratio": min(ratios) if ratios else None, "max_ratio": max(ratios) if ratios else None}
    lo, hi = SPREAD_RANGE
    out["within_target"] = all(out[k]["min_ratio"] is not None and out[k]["min_ratio"] >= lo
                               and out[k]["max_ratio"] <= hi for k in ("conns", "reqs"))
    return out


def spread(args, wrk, ws, tools):
    apps = [ClusterApp(t, "spread", free_port(), args.spread_instances) for t in tools]
    for a in apps:
        a.start()
        c.log("%s: %d instances serving port %d" % (a.name, a.n, a.port))
    if args.warmup > 0:
        for a in apps:
            wrk.run(a.port, args.warmup)
    res = {a.name: {"command": a.command} for a in apps}
    for k, phase in enumerate(("keepalive", "close")):
        order = apps[k % len(apps):] + apps[:k % len(apps)]
        for a in order:
            time.sleep(1)
            pids = a.pids()
            before = read_stats(a.stats, pids)
            x = wrk.run(a.port, args.spread_duration, close=(phase == "close"))
            after = read_stats(a.stats, pids)
            if sorted(a.pids()) != sorted(pids):
                c.log("%s: instances changed during the %s phase: %s -> %s" % (a.name, phase, pids, a.pids()))
            sh = shares(before, after, pids)
            sh["wrk"] = {k2: x[k2] for k2 in ("rps", "p50_ms", "p99_ms", "requests", "non_2xx_3xx",
                                              "socket_errors", "errors")}
            res[a.name][phase] = sh
            c.log("spread %-6s %-9s conns %s  reqs %s  (ratio to fair share: conns %.2f-%.2f, reqs %.2f-%.2f)" % (
                a.name, phase, [v["conns"] for v in sh["per_instance"]], [v["reqs"] for v in sh["per_instance"]],
                sh["conns"]["min_ratio"] or 0, sh["conns"]["max_ratio"] or 0,
                sh["reqs"]["min_ratio"] or 0, sh["reqs"]["max_ratio"] or 0))
    for a in apps:
        a.delete()
    return {"instances": args.spread_instances, "duration_s": args.spread_duration,
            "connections": wrk.connections, "target_ratio": list(SPREAD_RANGE),
            "wrk": {"keepalive": wrk_display(wrk.cmd("<port>", args.spread_duration)),
                    "close": wrk_display(wrk.cmd("<port>", args.spread_duration, close=True))},
            "tools": res}


def reload_part(args, wrk, ws, herder):
    app = ClusterApp(herder, "reload", free_port(), args.reload_instances)
    app.start()
    time.sleep(1)

    def by_index():
        return {i: p for i, p, s in app.instances() if s == "online"}

    gens = [by_index()]
    cmd = wrk.cmd(app.port, 3600)
    out_path = ws.path("wrk-reload.out")
    with open(out_path, "wb") as f:
        w = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)

    def stop_wrk():
        if w.poll() is None:
            w.kill()
            w.wait(timeout=10)
    c.on_cleanup(stop_wrk)
    t0 = time.perf_counter()
    time.sleep(1.0)
    reloads = []
    for k in range(args.reloads):
        rc, out, err, dt = app._cli("reload", app.app, timeout=300, check=False)
        # after a reload, N instances online (the replaced ones gone from the list)
        c.wait_until(lambda: len(by_index()) == app.n, 10, 0.05)
        g = by_index()
        gens.append(g)
        changed = sorted(i for i in g if gens[-2].get(i) != g[i])
        reloads.append({"rc": rc, "seconds": dt, "pids": g, "changed": len(changed),
                        "output": (out + err).strip()[-300:] if rc != 0 else ""})
        c.log("reload %d: exit %s in %.2f s, %d/%d pids changed" % (k + 1, rc, dt, len(changed), app.n))
        if w.poll() is not None:
            raise RuntimeError("wrk ended during the reloads: %s" % open(out_path).read()[-1500:])
    reloads_s = time.perf_counter() - t0 - 1.0
    ok, _ = c.wait_until(lambda: time.perf_counter() - t0 >= args.reload_duration, args.reload_duration + 5, 0.1)
    time.sleep(1.0)
    w.send_signal(signal.SIGINT)  # wrk prints its report on SIGINT
    try:
        w.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stop_wrk()
        raise RuntimeError("wrk did not stop on SIGINT")
    load_s = time.perf_counter() - t0
    with open(out_path) as f:
        text = f.read()
    x = parse_wrk(text)
    if x["rps"] is None:
        raise RuntimeError("no wrk report after SIGINT: %s" % text[-1500:])
    idx = sorted(gens[0])
    per_index = {}
    for i in idx:
        seq = [g.get(i) for g in gens]
        per_index[i] = {"pids": seq, "changes": sum(1 for a, b in zip(seq, seq[1:]) if a and b and a != b),
                        "all_distinct": len(set(seq)) == len(seq) and None not in seq}
    all_changed = (len(idx) == app.n and
                   all(v["changes"] == args.reloads and v["all_distinct"] for v in per_index.values()))
    app.delete()
    return {"instances": app.n, "reloads": args.reloads, "connections": wrk.connections,
            "command": app.command, "reload_command": "herder reload %s" % app.app,
            "wrk": wrk_display(wrk.cmd("<port>", 3600)) + "  # stopped with SIGINT after the reloads",
            "load_s": load_s, "reloads_s": reloads_s, "min_load_s": args.reload_duration,
            "per_reload": [{k2: v for k2, v in r.items() if k2 != "pids"} for r in reloads],
            "per_index": {str(i): v for i, v in per_index.items()},
            "pids_changed_every_reload": all_changed,
            "all_reloads_ok": all(r["rc"] == 0 for r in reloads),
            "wrk_result": x}


def main():
    ap = c.common_args(argparse.ArgumentParser(description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (part 1 and 2)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--instances", type=int, default=2, help="instances in part 1")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2, help="seconds of load on each server before measuring")
    ap.add_argument("--spread-instances", type=int, default=4)
    ap.add_argument("--spread-duration", type=int, default=None, help="default: --duration")
    ap.add_argument("--reload-instances", type=int, default=4)
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--reload-duration", type=int, default=20, help="minimum seconds of load in part 3")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated (default %(default)s)")
    ap.add_argument("--pace-ms", default=str(PACE_MS),
                    help="the paced runs' pause after each answer, ms, comma-separated for several rates "
                         "(default %(default)s)")
    args = ap.parse_args()
    args.pace_ms = [int(p) for p in str(args.pace_ms).split(",") if p.strip()]
    if args.spread_duration is None:
        args.spread_duration = args.duration
    parts = [p for p in args.parts.split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error("unknown part(s) %s (choose from %s)" % (",".join(bad), ",".join(PARTS)))

    wrk_path = shutil.which("wrk")
    if not wrk_path:
        sys.exit("cluster.py: wrk not found in PATH (install it from the distribution: apt-get install wrk)")
    node = shutil.which("node")
    if not node:
        sys.exit("cluster.py: node not found in PATH")

    limit = (args.rounds * 3 * (args.duration + 15) + 3 * args.warmup + 4 * (args.spread_duration + 20)
             + args.reload_duration + args.reloads * 120 + 600)
    c.install_cleanup_handlers(time_limit_s=limit)

    autogroups = c.one_scheduling_group()
    c.log("autogroups: %s" % autogroups)
    ws = c.Workspace("cluster")
    tools = {}
    for cls in c.pick_tools(args.tools.split(",")):
        t = cls(ws)
        t.start_daemon()
        tools[t.name] = t
    wrk = Wrk(wrk_path, args.threads, args.connections)
    rc, out, err, _ = c.run([wrk_path, "--version"], timeout=10)
    data = {"description": "cluster mode: one port, several Node instances, load from wrk",
            "parts": parts, "connections": wrk.connections, "threads": wrk.threads,
            "wrk_version": ((out or err).strip().splitlines() or ["?"])[0].split(" Copyright")[0], "node": node,
            "server": "bench/fixtures/cluster_server.js", "autogroups": autogroups}
    if "throughput" in parts:
        data["throughput"] = throughput(args, wrk, ws, list(tools.values()))
    if "spread" in parts:
        if tools:
            data["spread"] = spread(args, wrk, ws, list(tools.values()))
        else:
            c.log("spread: no tool to measure")
    if "reload" in parts:
        if "herder" in tools:
            data["reload"] = reload_part(args, wrk, ws, tools["herder"])
        else:
            c.log("reload: herder not measured, skipped")
    c.save_results("cluster", data, args.out)

    tp = data.get("throughput")
    if tp:
        for name, s in tp["summary"].items():
            c.log("%-6s %9.0f req/s  p50 %.2f ms  p99 %.2f ms  errors %d" % (
                name, s["rps"]["median"], s["p50_ms"].get("median", -1), s["p99_ms"].get("median", -1),
                s["non_2xx_3xx"] + s["socket_errors"]))
        c.log("ratios: %s" % ", ".join("%s %.2f" % (k, v) for k, v in tp["ratios"].items() if v is not None))
    rl = data.get("reload")
    if rl:
        c.log("reload: %d reloads in %.1f s under %.1f s of load, errors %d (non-2xx %d), pids changed every time: %s" % (
            rl["reloads"], rl["reloads_s"], rl["load_s"], rl["wrk_result"]["errors"],
            rl["wrk_result"]["non_2xx_3xx"], rl["pids_changed_every_reload"]))


if __name__ == "__main__":
    main()
