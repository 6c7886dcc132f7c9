#!/usr/bin/env python3
"""The balancer: herder's `[apps.balancer]` (http and tcp modes) against nginx, PM2 and socat.

Every server behind a balancer is bench/fixtures/cluster_server.js (a plain
`http.createServer` answering `/` with "ok\\n" on $PORT). Load comes from
`wrk -t<threads> -c<connections> -d<duration>s --latency http://127.0.0.1:<port>/`
(keep-alive; wrk from the distribution: without it this script stops with an error).
Everything runs on one machine: wrk, the balancers and the Node servers share its cores.

Part `http`, runners interleaved round by round (the order rotates each round):
  direct:   `PORT=<port> node cluster_server.js`, one process, no balancer (the reference);
  herder:   `herder start web.toml`, an app of 2 instances with
            `[apps.balancer] listen = <port>, mode = "http", strategy = "round_robin"`: the
            daemon listens on the public port and passes every request to an instance on its
            own loopback port ($PORT), over a pool of keep-alive connections;
  nginx-1w, nginx-2w: nginx in the foreground (`daemon off`) with 1 and 2 worker processes, an
            `upstream` of two `node cluster_server.js` of its own, started by this script
            (`keepalive 64`), `proxy_http_version 1.1`, `proxy_set_header Connection ""`,
            `proxy_buffering off`, `access_log off`, `keepalive_requests` raised (client and
            upstream side) so that neither side closes a connection every 1000 requests (the
            default);
  nginx-2w-fwd: nginx-2w, also setting the headers herder's http mode gives its instances
            (`Host`, `X-Real-IP`, `X-Forwarded-For`, `-Proto`, `-Host`), as a deployment
            guide's block does: the same work on each request;
  herder-before (with --herder-before PATH): a second herder build, as herder, side by side;
  pm2:      `PORT=<port> pm2 start cluster_server.js -i 2`: PM2's cluster mode, node's cluster
            module, where the God daemon (the primary) hands each accepted connection to a
            worker; requests then go straight to the worker and never pass through the daemon.
  Per run: requests/s, p50 / p99 latency, non-2xx responses and socket errors (wrk); the
  balancer's CPU per request: utime+stime of the balancer's processes from /proc/<pid>/stat,
  read just before and just after wrk, divided by wrk's request count, in µs per request (the
  herder daemon from $HERDER_HOME/daemon.pid, all its threads but not its instances; nginx's
  master and workers; PM2's God daemon from $PM2_HOME/pm2.pid, not its workers); each node
  server's share of the requests (the fixture's counters, read on SIGUSR2 as in cluster.py);
  and where the rest of the machine's CPU went, the same way: the node servers' CPU per request
  (all of them), wrk's (its rusage as a reaped child) and the share of both cores left idle
  (/proc/stat). With the cores busy, requests/s is about 2 cores over the sum of the three
  figures per request, which bounds what a cheaper balancer can gain.
  The kernel's autogroups are turned off for the run where they are on and the script may
  (root): with them, each session gets an equal share of a busy CPU, and herder's instances
  (a session each) would get more of the cores than nginx's backends (which share this
  script's session with wrk); see common.one_scheduling_group.
  Per round also how the balancer's own CPU split over its workers (nginx) or threads (herder's
  http mode). Medians over rounds; the ratio to nginx-2w also round by round. Targets: herder's requests/s >= 1.2x nginx-2w's; herder's p99 <=
  nginx-2w's.
Part `tcp`, the same way: herder's `mode = "tcp"` (2 instances; each connection is passed to
  an instance and bytes are relayed both ways), with --herder-before also that build's
  (herder-tcp-before), against the direct server, socat (`socat
  TCP-LISTEN:<port>,fork,reuseaddr,backlog=128 TCP:127.0.0.1:<backend>`: one process per
  connection, one backend, as socat does not balance) and nginx's `stream` module (2 workers,
  an upstream of the two node servers) when this nginx has it (built in, or `load_module` of
  ngx_stream_module.so from its modules folder; Debian: `apt-get install libnginx-mod-stream`).
  wrk's keep-alive connections stay open for the whole run, so each costs one connect to a
  backend; the figures are those of relaying bytes.
Part `memory`, herder only: the daemon's VmRSS (and Pss) from /proc/<pid>/status (median of 5
  samples 0.2 s apart, after --settle seconds) with no app; with one app of 2 instances and no
  balancer (`exec_mode = "fork"`, `increment_var = "PORT"`); then, in a new daemon, with the
  same app behind an http balancer, idle, and with 100 keep-alive connections open to the
  balancer (each sent one request, read its answer and stays open; all must answer a second
  request at the end).

The herder binary is --herder (default: $HERDER_BIN, else target/release/herder of this
repository); PM2 is $HERDER_BENCH_PM2_DIR/node_modules/.bin/pm2 (see bench/README.md), else
the CI's ~/.cache/herder-ci/pm2, or --pm2. Each tool has its own HERDER_HOME / PM2_HOME and
nginx its own prefix in the temporary folder; ports are free ports picked at the start;
daemons, nginx, socat and the node servers are killed at the end, on error or on a signal.
Lines of herder's daemon.log that mention an error, a warning or a panic are printed at the
end and counted in the results.

Usage: python3 bench/balancer.py [--duration 10 --rounds 3 --connections 64 --threads 2]
       [--parts http,tcp,memory] [--tools herder,nginx,pm2,socat] [--herder PATH] [--out FILE]
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402
from cluster import SERVER, Direct, ClusterApp, Wrk, free_port, http_ok, read_stats, wrk_display  # noqa: E402

PARTS = ("http", "tcp", "memory")
TOOLS = ("herder", "nginx", "pm2", "socat")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Targets of the http part, against nginx with 2 workers.
TARGET_RPS_RATIO = 1.2
# What nginx-2w-fwd adds: the headers herder's http mode always gives its instances, as a
# deployment guide's nginx block sets them.
FORWARDED = ("      proxy_set_header Host $host;\n      proxy_set_header X-Real-IP $remote_addr;\n"
             "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
             "      proxy_set_header X-Forwarded-Proto $scheme;\n"
             "      proxy_set_header X-Forwarded-Host $host;\n")


# ---------------------------------------------------------------- /proc


def cpu_ticks(pid, children=False):
    """utime+stime of pid (all its threads) in clock ticks; with children, plus cutime+cstime
    (the children it has reaped)."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()  # rest[0] is field 3 (state) of proc(5)
    ticks = int(rest[11]) + int(rest[12])
    if children:
        ticks += int(rest[13]) + int(rest[14])
    return ticks


def stat_ticks(path):
    """utime+stime from a /proc stat file (a process's or one thread's); 0 once it is gone."""
    try:
        with open(path) as f:
            s = f.read()
    except OSError:
        return 0
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def balancer_threads(pid):
    """The stat files of herder's balancer threads (named balancer-<n>) in the daemon: the
    http mode's, and the tcp mode's from 2026-12-07 on (before, it ran on the daemon's own
    runtime threads, and none is found)."""
    out = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                if f.read().startswith("balancer-"):
                    out.append("/proc/%d/task/%s/stat" % (pid, tid))
        except OSError:
            continue
    return sorted(out)


def children_of(pid):
    """Pids whose parent is pid, zombies included (not reaped yet: their CPU is not in
    the parent's cutime yet)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        if int(s[s.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(d))
    return out


def daemon_log_problems(tool):
    """Lines of herder's daemon.log that mention an error, a warning or a panic."""
    path = os.path.join(tool.home, "daemon.log")
    try:
        with open(path, errors="replace") as f:
            return [ln.rstrip("\n") for ln in f if re.search(r"(?i)\b(error|warn\w*|panic\w*)\b", ln)]
    except OSError:
        return []


# ---------------------------------------------------------------- runners
#
# A runner serves http://127.0.0.1:<port>/, knows the CPU ticks its balancer has used (None:
# no balancer) and the node servers behind it (their pids, and the STATS_DIR they write to).


class DirectRunner:
    """One node server, no balancer."""

    def __init__(self, ws, name="direct"):
        self.name = name
        self.server = Direct(ws, free_port())
        self.port = self.server.port
        self.stats = self.server.stats
        self.command = self.server.command

    def start(self):
        self.server.start()

    def server_pids(self):
        return [self.server.proc.pid]

    def cpu(self):
        return None

    def stop(self):
        self.server.stop()


class HerderBalancer:
    """An app of N instances of the server behind herder's balancer on `port`."""

    def __init__(self, tool, app, mode, instances, strategy, name=None):
        self.tool, self.app, self.mode, self.n = tool, app, mode, instances
        self.name = name or ("herder" if mode == "http" else "herder-tcp")
        self.port = free_port()
        self.stats = tool.ws.path("stats", "%s-%s" % (tool.name, app), "x")[:-2]
        toml = ('[[apps]]\nname = "%s"\nscript = "%s"\ninstances = %d\nenv = { STATS_DIR = "%s" }\n\n'
                '[apps.balancer]\nlisten = %s\nmode = "%s"\nstrategy = "%s"\n')
        self.config = tool.ws.path("%s-%s.toml" % (tool.name, app))
        with open(self.config, "w") as f:
            f.write(toml % (app, SERVER, instances, self.stats, self.port, mode, strategy))
        self.config_text = toml % (app, "bench/fixtures/cluster_server.js", instances, "<tmp>", "<port>",
                                   mode, strategy)
        self.command = "herder start %s.toml" % app

    def instances(self):
        """[(pid, status, port)] of the app's instances, from `herder list --json`."""
        return herder_instances(self.tool, self.app)

    def start(self):
        self.tool.run("start", self.config, timeout=120)

        def ready():
            inst = self.instances()
            return (len(inst) == self.n and all(s == "online" and p for _, s, p in inst)
                    and all(http_ok(p) for _, _, p in inst) and http_ok(self.port))

        ok, _ = c.wait_until(ready, 60, 0.1)
        if not ok:
            raise RuntimeError("herder: %d instances of %s behind port %d not ready after 60 s (%s)" % (
                self.n, self.app, self.port, self.instances()))

    def server_pids(self):
        return [p for p, _, _ in self.instances()]

    def cpu(self):
        return cpu_ticks(self.tool.pid())

    def units(self):
        """What serves the requests side by side: the balancer's threads."""
        return balancer_threads(self.tool.pid())

    def stop(self):
        self.tool.run("delete", self.app, timeout=60, check=False)
        c.wait_until(lambda: not self.instances(), 30, 0.1)


def herder_instances(tool, app):
    rc, out, _, _ = tool.run("list", "--json", timeout=30, check=False)
    try:
        data = json.loads(out) if rc == 0 else []
    except ValueError:
        return []
    res = []
    for a in data:
        if (a.get("spec") or {}).get("name") == app:
            for i in a.get("instances") or []:
                res.append((i.get("pid"), i.get("status"), i.get("port")))
    return res


class Pm2Cluster:
    """PM2's cluster mode; its balancer is the God daemon (the cluster module's primary)."""

    def __init__(self, tool, instances):
        self.tool = tool
        self.name = "pm2"
        self.app = ClusterApp(tool, "web", free_port(), instances)
        self.port = self.app.port
        self.stats = self.app.stats
        self.command = self.app.command

    def start(self):
        self.app.start()

    def server_pids(self):
        return self.app.pids()

    def cpu(self):
        return cpu_ticks(self.tool.pid())

    def stop(self):
        self.app.delete()


class ProcRunner:
    """A balancer run by this script in a session of its own (killed as a group at the end)."""

    def __init__(self, ws, name, port):
        self.ws, self.name, self.port = ws, name, port
        self.proc = None
        c.on_cleanup(self.stop)

    def argv(self):
        raise NotImplementedError

    def start(self):
        logf = open(self.ws.path("%s.log" % self.name), "wb")
        self.proc = subprocess.Popen(self.argv(), cwd=self.ws.dir, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        ok, _ = c.wait_until(lambda: self.proc.poll() is not None or http_ok(self.port), 30, 0.05)
        if not ok or self.proc.poll() is not None:
            with open(self.ws.path("%s.log" % self.name), errors="replace") as f:
                out = f.read()[-1500:]
            raise RuntimeError("%s did not answer on port %d (exit %s): %s%s" % (
                self.name, self.port, self.proc.poll(), out, self.errors()))

    def errors(self):
        return ""

    def stop(self):
        if not self.proc:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers or children left behind
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)
        self.proc = None


class Nginx(ProcRunner):
    """nginx in the foreground with a generated configuration: an http proxy or a stream one."""

    def __init__(self, ws, nginx, name, workers, servers, stream=None, forwarded=False):
        super().__init__(ws, name, free_port())
        self.nginx, self.workers, self.servers = nginx, workers, servers
        self.forwarded = forwarded
        self.backends = [b.port for b in servers]
        self.stats = servers[0].stats
        self.prefix = os.path.dirname(ws.path(name, "x"))
        self.conf = os.path.join(self.prefix, "nginx.conf")
        self.error_log = os.path.join(self.prefix, "error.log")
        text = self.config(stream)
        with open(self.conf, "w") as f:
            f.write(text)
        self.config_text = text.replace(self.prefix, "<tmp>").replace("127.0.0.1:%d;" % self.port,
                                                                      "127.0.0.1:<port>;")
        for b in self.backends:
            self.config_text = self.config_text.replace("127.0.0.1:%d;" % b, "127.0.0.1:<backend>;")
        self.command = "nginx -p <tmp> -e <tmp>/error.log -c <tmp>/nginx.conf"

    def config(self, stream):
        p = self.prefix
        head = ("daemon off;\nmaster_process on;\nworker_processes %d;\n%serror_log %s/error.log;\n"
                "pid %s/nginx.pid;\nevents { worker_connections 4096; }\n" % (
                    self.workers, "user root;\n" if os.geteuid() == 0 else "", p, p))
        servers = "".join("    server 127.0.0.1:%d;\n" % b for b in self.backends)
        if stream is not None:
            return (stream + head + "stream {\n  upstream backends {\n" + servers + "  }\n"
                    "  server {\n    listen 127.0.0.1:%d;\n    proxy_pass backends;\n  }\n}\n" % self.port)
        temps = "".join("  %s_temp_path %s/%s;\n" % (k, p, k) for k in ("client_body", "proxy", "fastcgi",
                                                                          "uwsgi", "scgi"))
        return (head + "http {\n  access_log off;\n  keepalive_requests 1000000;\n" + temps +
                "  upstream backends {\n" + servers + "    keepalive 64;\n    keepalive_requests 1000000;\n  }\n"
                "  server {\n    listen 127.0.0.1:%d;\n    location / {\n      proxy_pass http://backends;\n"
                "      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n" % self.port +
                (FORWARDED if self.forwarded else "") +
                "      proxy_buffering off;\n    }\n  }\n}\n")

    def argv(self):
        return [self.nginx, "-p", self.prefix, "-e", self.error_log, "-c", self.conf]

    def server_pids(self):
        return [p for b in self.servers for p in b.server_pids()]

    def errors(self):
        try:
            with open(self.error_log, errors="replace") as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def cpu(self):
        """Master and workers (and any worker that exited, through the master's cutime)."""
        pid = self.proc.pid
        return cpu_ticks(pid, children=True) + sum(_ticks_or_zero(k) for k in children_of(pid))


    def units(self):
        """What serves the requests side by side: the workers."""
        return ["/proc/%d/stat" % k for k in sorted(children_of(self.proc.pid))]


def _ticks_or_zero(pid):
    try:
        return cpu_ticks(pid, children=True)
    except (OSError, ValueError, IndexError):
        return 0


class Socat(ProcRunner):
    """socat forking one process per connection, to one backend."""

    def __init__(self, ws, socat, server):
        super().__init__(ws, "socat", free_port())
        self.socat, self.server = socat, server
        self.backend, self.stats = server.port, server.stats
        self.command = "socat TCP-LISTEN:<port>,bind=127.0.0.1,fork,reuseaddr,backlog=128 TCP:127.0.0.1:<backend>"

    def argv(self):
        # socat's default listen backlog is 5: wrk's 64 connects at once would overflow it and
        # wait for SYN retransmits (1 s), which is no cost of relaying.
        return [self.socat, "TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr,backlog=128" % self.port,
                "TCP:127.0.0.1:%d" % self.backend]

    def server_pids(self):
        return self.server.server_pids()

    def cpu(self):
        """The listener and its per-connection children: once wrk has closed its connections
        the children exit and, reaped, count in the listener's cutime+cstime."""
        pid = self.proc.pid
        c.wait_until(lambda: not children_of(pid), 5, 0.01)
        return cpu_ticks(pid, children=True) + sum(_ticks_or_zero(k) for k in children_of(pid))


def nginx_stream_directive(nginx):
    """'' if nginx has the stream module built in, a `load_module` line if it is a module file
    we can find, None if this nginx has no stream module."""
    _, out, err, _ = c.run([nginx, "-V"], timeout=10)
    text = out + err
    if re.search(r"--with-stream(\s|$)", text):
        return ""
    if "--with-stream=dynamic" not in text:
        return None
    m = re.search(r"--modules-path=(\S+)", text)
    dirs = ([m.group(1)] if m else []) + ["/usr/lib/nginx/modules", "/usr/lib64/nginx/modules",
                                          "/usr/share/nginx/modules"]
    for d in dirs:
        path = os.path.join(d, "ngx_stream_module.so")
        if os.path.exists(path):
            return "load_module %s;\n" % path
    return None


# ---------------------------------------------------------------- measuring


def measure(wrk, r, duration):
    """One wrk run against r, with its balancer's CPU per request and the connections and
    requests each node server behind it took (deltas of its counters); and where the
    machine's CPU went: the node servers' CPU per request, wrk's, and the share left idle."""
    pids = r.server_pids()
    stats0 = read_stats(r.stats, pids)
    before = r.cpu()
    servers0 = sum(_ticks_or_zero(p) for p in pids)
    wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    units = r.units() if hasattr(r, "units") else []
    units0 = [stat_ticks(u) for u in units]
    idle0 = machine_ticks()
    x = wrk.run(r.port, duration)
    idle1 = machine_ticks()
    spent = [stat_ticks(u) - t for u, t in zip(units, units0)]
    wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    servers1 = sum(_ticks_or_zero(p) for p in pids)
    after = r.cpu()
    stats1 = read_stats(r.stats, pids)
    x["per_server"] = [{"pid": p, "conns": stats1[p][0] - stats0[p][0], "reqs": stats1[p][1] - stats0[p][1]}
                       for p in pids]
    x["balancer_cpu_s"] = (after - before) / CLK_TCK if before is not None else None
    per_req = (lambda secs: secs * 1e6 / x["requests"] if secs is not None and x["requests"] else None)
    x["cpu_us_per_req"] = per_req(x["balancer_cpu_s"])
    x["servers_cpu_us_per_req"] = per_req((servers1 - servers0) / CLK_TCK)
    x["wrk_cpu_us_per_req"] = per_req(wrk1.ru_utime + wrk1.ru_stime - wrk0.ru_utime - wrk0.ru_stime)
    busy, idle = idle1[0] - idle0[0], idle1[1] - idle0[1]
    x["idle_pct"] = 100.0 * idle / (busy + idle) if busy + idle else None
    # How the balancer's own work split over its workers or threads: an uneven split leaves a
    # core idle while one worker is saturated.
    x["units_cpu_pct"] = ([round(100.0 * t / sum(spent), 1) for t in spent]
                          if len(spent) > 1 and sum(spent) else None)
    return x


def machine_ticks():
    """(busy, idle) ticks of all CPUs, from /proc/stat (iowait counted idle)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle, idle


def rounds(args, wrk, runners, label):
    """wrk against every runner, --rounds times, the order rotating each round; a summary
    (medians over rounds) per runner."""
    if args.warmup > 0:
        for r in runners:
            wrk.run(r.port, args.warmup)
    per_round = []
    for rnd in range(args.rounds):
        order = runners[rnd % len(runners):] + runners[:rnd % len(runners)]
        for r in order:
            time.sleep(1)
            x = measure(wrk, r, args.duration)
            x.update({"round": rnd, "runner": r.name})
            per_round.append(x)
            split = "/".join("%.0f" % v for v in x["units_cpu_pct"]) if x["units_cpu_pct"] else "-"
            c.log("%s round %d %-12s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d  CPU %s µs/req"
                  " (servers %s, wrk %s, idle %s%%, balancer's workers %s%%)  load %s" % (
                      label, rnd, r.name, x["rps"], x["p50_ms"] or -1, x["p99_ms"] or -1, x["errors"],
                      *(fmt(x[k], "%.1f") for k in ("cpu_us_per_req", "servers_cpu_us_per_req",
                                                    "wrk_cpu_us_per_req", "idle_pct")),
                      split, " ".join(x["loadavg"])))
    summ = {}
    for r in runners:
        xs = [x for x in per_round if x["runner"] == r.name]
        summ[r.name] = {
            "rps": c.summary([x["rps"] for x in xs]),
            "p50_ms": c.summary([x["p50_ms"] for x in xs if x["p50_ms"] is not None]),
            "p99_ms": c.summary([x["p99_ms"] for x in xs if x["p99_ms"] is not None]),
            "max_ms": c.summary([x["max_ms"] for x in xs if x["max_ms"] is not None]),
            "cpu_us_per_req": c.summary([x["cpu_us_per_req"] for x in xs if x["cpu_us_per_req"] is not None]),
            "servers_cpu_us_per_req": c.summary([x["servers_cpu_us_per_req"] for x in xs
                                                 if x.get("servers_cpu_us_per_req") is not None]),
            "wrk_cpu_us_per_req": c.summary([x["wrk_cpu_us_per_req"] for x in xs
                                             if x.get("wrk_cpu_us_per_req") is not None]),
            "idle_pct": c.summary([x["idle_pct"] for x in xs if x.get("idle_pct") is not None]),
            "requests": sum(x["requests"] or 0 for x in xs),
            "server_reqs_share": shares([x["per_server"] for x in xs]),
            "non_2xx_3xx": sum(x["non_2xx_3xx"] for x in xs),
            "socket_errors": sum(sum(x["socket_errors"].values()) for x in xs),
        }
    return summ, per_round


def shares(runs):
    """Each server's share (%) of the requests the servers took over all runs (in the order of
    the runner's servers)."""
    if not runs or len({len(r) for r in runs}) != 1:
        return None
    reqs = [sum(r[i]["reqs"] for r in runs) for i in range(len(runs[0]))]
    total = sum(reqs)
    return [round(100.0 * q / total, 1) for q in reqs] if total else None


def round_ratios(per_round, a, b, key):
    """a's figure over b's, in each round both ran."""
    at = {x["round"]: x[key] for x in per_round if x["runner"] == a and x[key]}
    bt = {x["round"]: x[key] for x in per_round if x["runner"] == b and x[key]}
    return [round(at[n] / bt[n], 3) for n in sorted(at) if n in bt]


def med(summ, name, key):
    return summ.get(name, {}).get(key, {}).get("median")


def ratio(summ, a, b, key):
    x, y = med(summ, a, key), med(summ, b, key)
    return x / y if x is not None and y else None


def start_all(runners):
    for r in runners:
        r.start()
        c.log("%s: serving port %d (%s)" % (r.name, r.port, r.command))


def backends_for(ws, n, owner="backend"):
    """n node servers started by this script, for nginx and socat."""
    out = []
    for i in range(n):
        d = DirectRunner(ws, "%s-backend-%d" % (owner, i))
        d.start()
        out.append(d)
    return out


class HerderBefore(c.Herder):
    """Another herder build (--herder-before), with a home of its own."""
    name = "herder-before"

    def __init__(self, ws, binary):
        super().__init__(ws)
        self.bin = binary


def http_part(args, wrk, ws, herder, pm2, nginx, before=None):
    runners = [DirectRunner(ws)]
    extra = {}
    if herder:
        runners.append(HerderBalancer(herder, "web", "http", args.instances, args.strategy))
    if before:
        runners.append(HerderBalancer(before, "web", "http", args.instances, args.strategy, "herder-before"))
    backends = []
    if nginx:
        # Each nginx has node servers of its own, as each herder has its instances.
        for name, workers, fwd in (("nginx-1w", 1, False), ("nginx-2w", 2, False), ("nginx-2w-fwd", 2, True)):
            own = backends_for(ws, args.instances, name)
            backends += own
            runners.append(Nginx(ws, nginx, name, workers, own, forwarded=fwd))
    if pm2:
        runners.append(Pm2Cluster(pm2, args.instances))
    start_all(runners)
    summ, per_round = rounds(args, wrk, runners, "http")
    ratios = {"herder_over_nginx-2w_rps": ratio(summ, "herder", "nginx-2w", "rps"),
              "herder_over_nginx-1w_rps": ratio(summ, "herder", "nginx-1w", "rps"),
              "herder_over_nginx-2w-fwd_rps": ratio(summ, "herder", "nginx-2w-fwd", "rps"),
              "herder_over_herder-before_rps": ratio(summ, "herder", "herder-before", "rps"),
              "herder_over_herder-before_cpu": ratio(summ, "herder", "herder-before", "cpu_us_per_req"),
              "herder_over_pm2_rps": ratio(summ, "herder", "pm2", "rps"),
              "herder_over_direct_rps": ratio(summ, "herder", "direct", "rps"),
              "nginx-2w_over_direct_rps": ratio(summ, "nginx-2w", "direct", "rps"),
              "herder_over_nginx-2w_p99": ratio(summ, "herder", "nginx-2w", "p99_ms"),
              "herder_over_nginx-2w_cpu": ratio(summ, "herder", "nginx-2w", "cpu_us_per_req")}
    # The same ratio round by round (each pair measured within a minute of each other), and
    # its median: less swayed than the ratio of medians by a round where one side was unlucky.
    by_round = round_ratios(per_round, "herder", "nginx-2w", "rps")
    ratios["herder_over_nginx-2w_rps_by_round"] = by_round
    ratios["herder_over_nginx-2w_rps_median_of_rounds"] = statistics.median(by_round) if by_round else None
    targets = {}
    if ratios["herder_over_nginx-2w_rps"] is not None:
        targets = {
            "rps_ge_%.1fx_nginx-2w" % TARGET_RPS_RATIO: ratios["herder_over_nginx-2w_rps"] >= TARGET_RPS_RATIO,
            "p99_le_nginx-2w": med(summ, "herder", "p99_ms") <= med(summ, "nginx-2w", "p99_ms"),
        }
    for r in runners:
        if isinstance(r, (HerderBalancer, Nginx)):
            extra[r.name] = r.config_text
    for r in runners + backends:
        r.stop()
    return {"runners": {r.name: r.command for r in runners}, "configs": extra,
            "backends": "2 x PORT=<port> node bench/fixtures/cluster_server.js for each nginx" if backends else None,
            "wrk": wrk_display(wrk.cmd("<port>", args.duration)),
            "summary": summ, "ratios": ratios, "targets": targets, "per_round": per_round}


def tcp_part(args, wrk, ws, herder, nginx, socat, before=None):
    runners = [DirectRunner(ws)]
    extra = {}
    if herder:
        runners.append(HerderBalancer(herder, "tcp", "tcp", args.instances, args.strategy))
    if before:
        runners.append(HerderBalancer(before, "tcp", "tcp", args.instances, args.strategy, "herder-tcp-before"))
    backends = backends_for(ws, args.instances) if (nginx or socat) else []
    stream_note = None
    if socat:
        runners.append(Socat(ws, socat, backends[0]))
    if nginx:
        directive = nginx_stream_directive(nginx)
        if directive is None:
            stream_note = "this nginx has no stream module (Debian: apt-get install libnginx-mod-stream)"
            c.log("tcp: nginx-stream skipped: %s" % stream_note)
        else:
            runners.append(Nginx(ws, nginx, "nginx-stream", 2, backends, stream=directive))
    start_all(runners)
    summ, per_round = rounds(args, wrk, runners, "tcp")
    ratios = {"herder-tcp_over_direct_rps": ratio(summ, "herder-tcp", "direct", "rps"),
              "herder-tcp_over_socat_rps": ratio(summ, "herder-tcp", "socat", "rps"),
              "herder-tcp_over_nginx-stream_rps": ratio(summ, "herder-tcp", "nginx-stream", "rps"),
              "herder-tcp_over_nginx-stream_p99": ratio(summ, "herder-tcp", "nginx-stream", "p99_ms"),
              "herder-tcp_over_herder-tcp-before_rps": ratio(summ, "herder-tcp", "herder-tcp-before", "rps"),
              "herder-tcp_over_herder-tcp-before_cpu": ratio(summ, "herder-tcp", "herder-tcp-before",
                                                             "cpu_us_per_req")}
    for r in runners:
        if isinstance(r, (HerderBalancer, Nginx)):
            extra[r.name] = r.config_text
    for r in runners + backends:
        r.stop()
    return {"runners": {r.name: r.command for r in runners}, "configs": extra, "nginx_stream": stream_note,
            "wrk": wrk_display(wrk.cmd("<port>", args.duration)),
            "summary": summ, "ratios": ratios, "per_round": per_round}


class HerderHome(c.Herder):
    """A herder daemon with a home of its own (its name names the home)."""

    def __init__(self, ws, name):
        self.name = name
        super().__init__(ws)


def read_answer(sock):
    """Read one HTTP/1.1 answer (Content-Length or chunked) from sock; its status code."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the headers")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    if "content-length" in headers:
        need = int(headers["content-length"])
        while len(body) < need:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed in the body")
            body += chunk
    elif "chunked" in headers.get("transfer-encoding", ""):
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed in the body")
            body += chunk
    return status


def keepalive_conns(port, n):
    """n connections to port, each having sent one request and read its answer."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(s)
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        if read_answer(s) != 200:
            raise RuntimeError("keep-alive connection: no 200 from port %d" % port)
    return socks


def memory_part(args, ws):
    res = {}
    plain = HerderHome(ws, "herder-mem-plain")
    plain.start_daemon()
    time.sleep(args.settle)
    res["no_app"] = c.rss_sample(plain.pid())
    base = free_ports_in_a_row(args.instances)  # increment_var gives base, base+1, ...
    cfg = ws.path("plain.toml")
    with open(cfg, "w") as f:
        f.write('[[apps]]\nname = "plain"\nscript = "%s"\ninstances = %d\nexec_mode = "fork"\n'
                'increment_var = "PORT"\nenv = { PORT = "%d" }\n' % (SERVER, args.instances, base))
    plain.run("start", cfg, timeout=120)
    ok, _ = c.wait_until(lambda: all(http_ok(base + k) for k in range(args.instances))
                         and sum(1 for _, s, _ in herder_instances(plain, "plain") if s == "online")
                         == args.instances, 60, 0.1)
    if not ok:
        raise RuntimeError("memory: app without balancer not serving ports %d.. after 60 s" % base)
    time.sleep(args.settle)
    res["app_without_balancer"] = c.rss_sample(plain.pid())
    problems = daemon_log_problems(plain)
    plain.shutdown()

    bal = HerderHome(ws, "herder-mem-balancer")
    bal.start_daemon()
    app = HerderBalancer(bal, "web", "http", args.instances, args.strategy)
    app.start()
    time.sleep(args.settle)
    res["balancer_idle"] = c.rss_sample(bal.pid())
    socks = keepalive_conns(app.port, args.idle_connections)
    try:
        time.sleep(args.settle)
        res["balancer_keepalive"] = c.rss_sample(bal.pid())
        answered = 0
        for s in socks:
            try:
                s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                answered += read_answer(s) == 200
            except OSError as e:
                c.log("memory: a keep-alive connection failed its second request: %r" % e)
        res["keepalive_answered_again"] = answered
    finally:
        for s in socks:
            s.close()
    problems += daemon_log_problems(bal)
    bal.shutdown()
    return {"instances": args.instances, "idle_connections": args.idle_connections, "settle_s": args.settle,
            "configs": {"app_without_balancer": '[[apps]]\nname = "plain"\nscript = '
                        '"bench/fixtures/cluster_server.js"\ninstances = %d\nexec_mode = "fork"\n'
                        'increment_var = "PORT"\nenv = { PORT = "<port>" }\n' % args.instances,
                        "balancer": app.config_text},
            "results": res, "daemon_log_problems": problems}


def free_ports_in_a_row(n):
    """The first of n consecutive ports free right now."""
    for _ in range(50):
        base = free_port()
        if all(port_free(base + k) for k in range(1, n)):
            return base
    raise RuntimeError("no %d free ports in a row found" % n)


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# ---------------------------------------------------------------- report


def fmt(v, spec="%.2f"):
    return spec % v if v is not None else "-"


def print_table(title, summ):
    print(title)
    print("  %-13s %10s %9s %9s %8s %9s %11s %9s %9s %6s  %s" % (
        "runner", "req/s", "p50 ms", "p99 ms", "non-2xx", "sock.err", "CPU µs/req", "servers", "wrk",
        "idle%", "requests per server %"))
    for name, s in summ.items():
        med = (lambda k: fmt((s.get(k) or {}).get("median"), "%.1f"))
        print("  %-13s %10s %9s %9s %8d %9d %11s %9s %9s %6s  %s" % (
            name, fmt(s["rps"].get("median"), "%.0f"), fmt(s["p50_ms"].get("median")),
            fmt(s["p99_ms"].get("median")), s["non_2xx_3xx"], s["socket_errors"],
            med("cpu_us_per_req"), med("servers_cpu_us_per_req"), med("wrk_cpu_us_per_req"), med("idle_pct"),
            "/".join("%.1f" % v for v in s["server_reqs_share"] or [])))


def print_report(data):
    for part, title in (("http", "HTTP balancer"), ("tcp", "TCP balancer")):
        d = data.get(part)
        if not d:
            continue
        print_table("%s: %s, median of %d round(s)" % (title, d["wrk"], data["rounds"]), d["summary"])
        rs = ["%s %s" % (k, " ".join("%.2f" % x for x in v) if isinstance(v, list) else "%.2f" % v)
              for k, v in d["ratios"].items() if v]
        if rs:
            print("  ratios: " + ", ".join(rs))
        for k, v in d.get("targets", {}).items():
            print("  target %s: %s" % (k, "met" if v else "MISSED"))
        if d.get("nginx_stream"):
            print("  nginx-stream: %s" % d["nginx_stream"])
    m = data.get("memory")
    if m:
        print("herder daemon memory (VmRSS, median of 5 samples):")
        labels = (("no_app", "no app"),
                  ("app_without_balancer", "1 app, %d instances, no balancer" % m["instances"]),
                  ("balancer_idle", "1 app, %d instances, http balancer, idle" % m["instances"]),
                  ("balancer_keepalive", "same, %d keep-alive connections open" % m["idle_connections"]))
        for k, label in labels:
            r = m["results"].get(k)
            if r:
                print("  %-48s %8d kB  (%.1f MB, Pss %s kB)" % (label, r["vmrss_kb"], r["vmrss_kb"] / 1024,
                                                             fmt(r["pss_kb"], "%d")))
        print("  %d of %d keep-alive connections answered a second request" % (
            m["results"].get("keepalive_answered_again", 0), m["idle_connections"]))
    problems = data.get("daemon_log_problems") or []
    print("herder daemon.log: %d line(s) with an error, a warning or a panic" % len(problems))
    for ln in problems[:20]:
        print("  " + ln)


# ---------------------------------------------------------------- main


def find_pm2(path):
    for p in (path, c.PM2_BIN, os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                           "herder-ci", "pm2", "node_modules", ".bin", "pm2")):
        if p and os.access(p, os.X_OK):
            return os.path.abspath(p)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--herder", default=c.HERDER_BIN, help="herder binary (default %(default)s)")
    ap.add_argument("--herder-before", default=None,
                    help="a second herder binary, run as runner herder-before in part http and "
                         "herder-tcp-before in part tcp")
    ap.add_argument("--pm2", default=None, help="pm2 binary (default: see above)")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated (default %(default)s)")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated (default %(default)s)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2, help="seconds of load on each runner before measuring")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--instances", type=int, default=2, help="node servers behind each balancer")
    ap.add_argument("--strategy", default="round_robin", help="herder's balancer strategy")
    ap.add_argument("--idle-connections", type=int, default=100, help="keep-alive connections in part memory")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds before each memory sample")
    ap.add_argument("--out", default=None, help="results JSON path (default bench/results/balancer.json)")
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    tools = [t for t in args.tools.split(",") if t]
    bad = [p for p in parts if p not in PARTS] + [t for t in tools if t not in TOOLS]
    if bad:
        ap.error("unknown part(s) or tool(s): %s (parts: %s; tools: %s)" % (
            ",".join(bad), ",".join(PARTS), ",".join(TOOLS)))

    c.HERDER_BIN = os.path.abspath(args.herder)
    wrk_path = shutil.which("wrk")
    if not wrk_path:
        sys.exit("balancer.py: wrk not found in PATH (install it from the distribution: apt-get install wrk)")
    if not shutil.which("node"):
        sys.exit("balancer.py: node not found in PATH")
    if "herder" in tools and not c.Herder.available():
        sys.exit("balancer.py: no herder binary at %s (build it, or pass --herder)" % c.HERDER_BIN)
    sbin = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    found = {"herder": c.HERDER_BIN if "herder" in tools else None,
             "nginx": shutil.which("nginx", path=sbin) if "nginx" in tools else None,
             "pm2": find_pm2(args.pm2) if "pm2" in tools else None,
             "socat": shutil.which("socat", path=sbin) if "socat" in tools else None}
    for t in tools:
        if not found[t]:
            c.log("skipping %s: not found (apt-get install nginx socat; PM2: see bench/README.md)" % t)
    if found["pm2"]:
        c.PM2_BIN = found["pm2"]
        c.PM2_DIR = os.path.dirname(os.path.dirname(os.path.dirname(c.PM2_BIN)))

    n_runners = 7 + 4
    limit = args.rounds * n_runners * (args.duration + 15) + n_runners * (args.warmup + 30) + 10 * args.settle + 600
    c.install_cleanup_handlers(time_limit_s=limit)

    autogroups = c.one_scheduling_group()
    c.log("autogroups: %s" % autogroups)
    ws = c.Workspace("balancer")
    herder = pm2 = None
    if found["herder"] and ("http" in parts or "tcp" in parts):
        herder = c.Herder(ws)
        herder.start_daemon()
    before = None
    if args.herder_before and ("http" in parts or "tcp" in parts):
        before = HerderBefore(ws, os.path.abspath(args.herder_before))
        before.start_daemon()
    if found["pm2"] and "http" in parts:
        pm2 = c.PM2(ws)
        pm2.start_daemon()
    wrk = Wrk(wrk_path, args.threads, args.connections)
    _, out, err, _ = c.run([wrk_path, "--version"], timeout=10)
    _, nginx_v, nginx_err, _ = c.run([found["nginx"], "-v"], timeout=10) if found["nginx"] else (0, "", "", 0)
    _, socat_v, _, _ = c.run([found["socat"], "-V"], timeout=10) if found["socat"] else (0, "", "", 0)
    data = {"description": "the balancer: herder's [apps.balancer] against nginx, PM2 and socat, load from wrk",
            "parts": parts, "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
            "connections": wrk.connections, "threads": wrk.threads, "instances": args.instances,
            "strategy": args.strategy, "server": "bench/fixtures/cluster_server.js",
            "wrk_version": ((out or err).strip().splitlines() or ["?"])[0].split(" Copyright")[0],
            "nginx_version": (nginx_v + nginx_err).strip().replace("nginx version: ", "") or None,
            "socat_version": next((ln.split("version", 1)[1].strip() for ln in socat_v.splitlines()
                                   if "socat version" in ln), None),
            "autogroups": autogroups}
    if "http" in parts:
        data["http"] = http_part(args, wrk, ws, herder, pm2, found["nginx"], before)
    if "tcp" in parts:
        data["tcp"] = tcp_part(args, wrk, ws, herder, found["nginx"], found["socat"], before)
    problems = daemon_log_problems(herder) if herder else []
    if "memory" in parts and found["herder"]:
        data["memory"] = memory_part(args, ws)
        problems += data["memory"]["daemon_log_problems"]
    data["daemon_log_problems"] = problems
    c.save_results("balancer", data, args.out)
    print_report(data)


if __name__ == "__main__":
    main()
