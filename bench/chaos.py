#!/usr/bin/env python3
"""Chaos: SIGKILL herder's daemon at a random moment of a start, stop, restart, reload,
scale, delete or save, round after round, and check after each what the suite's chaos test
(tests/it/chaos.rs) checks, for many more rounds.

Each round picks an operation with a seeded generator, runs the CLI command in the
background, SIGKILLs the daemon 0..--kill-within-ms ms after the command started (a command
that ended before is checked first, as below, against the daemon it ran on), waits for the
command to end, and lets the next command (`herder list --json`) bring a new daemon up.
Then, within --settle seconds:
- every instance is online or stopped, exactly one `herder daemon` runs for the home and it is
  the one daemon.pid names;
- per app, the processes that carry its marker (an env var the app's children and
  grandchildren inherit, setsid ones included) and whose parent does not are exactly the pids
  the daemon reports for its online instances: no second copy, no orphan, nothing left of a
  stopped or deleted app;
- `state.json` records the apps and pids `list --json` shows;
- each app is as before the command or as the command leaves it (only as the command leaves
  it when the command exited 0), or part way an instance at a time; dump.json always parses,
  and after a save that exited 0 it holds the apps as they were;
- the cluster app answers 8 connections in a row on its port when an instance of it runs
  (a connection sent to the socket of a stopped instance would hang).

A failure is recorded (seed, round, command, why) and the run goes on from what it found
(after a round that never settled: from a fresh daemon and the config file again).

The fleet: 9 sleepers (tests/fixtures/idle.sh), 3 apps with a grandchild in a session of its
own that ignore SIGTERM (tests/fixtures/tree.sh, kill_timeout 300 ms), and a cluster app of 2
instances on a port (examples/cluster/python/server.py, min_uptime 200 ms).
By default the first half of the rounds runs with cgroups (where the machine has a writable
cgroup v2), the second half with HERDER_NO_CGROUP=1 (process groups, trees and markers).

Usage: python3 bench/chaos.py [--rounds 200] [--seed N] [--kill-within-ms 500]
                              [--modes cgroup,no-cgroup] [--settle 30] [--out FILE]
"""

import argparse
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

MARK = "CHAOS_APP"
FIXTURES = os.path.join(c.ROOT, "tests", "fixtures")
SERVER = os.path.join(c.ROOT, "examples", "cluster", "python", "server.py")


class Failure(Exception):
    pass


# ---------------------------------------------------------------- the fleet


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write_fleet(path, run, port):
    """The config file; returns {app: instances}."""
    apps = {}
    parts = []

    def app(name, body, instances):
        parts.append('[[apps]]\nname = "%s"\n%s\n[apps.env]\n%s = "%s/%s"\n' % (name, body, MARK, run, name))
        apps[name] = instances

    for i in range(9):
        app("s%d" % i, 'script = "%s"\nargs = ["%s"]\n' % (os.path.join(FIXTURES, "idle.sh"), run), 1)
    for i in range(3):
        app("t%d" % i, 'script = "%s"\nargs = ["/dev/null"]\nkill_timeout = 300\n'
            % os.path.join(FIXTURES, "tree.sh"), 1)
    app("cl", 'script = "%s"\ninstances = 2\nport = %d\nmin_uptime = "200ms"\nkill_timeout = 2000\n'
        % (SERVER, port), 2)
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return apps


# ---------------------------------------------------------------- /proc


def marked(run):
    """{pid: (app, ppid)} for every live process carrying this run's marker."""
    prefix = ("%s=%s/" % (MARK, run)).encode()
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read()
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        app = next((kv[len(prefix):].decode() for kv in env.split(b"\0") if kv.startswith(prefix)), None)
        if app is None:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        if rest[0] == "Z":
            continue
        out[int(d)] = (app, int(rest[1]))
    return out


def roots(found):
    """{app: {pid}}: the processes of an app whose parent is not of the same app."""
    out = collections.defaultdict(set)
    for pid, (app, ppid) in found.items():
        if found.get(ppid, (None,))[0] != app:
            out[app].add(pid)
    return out


def daemons(home):
    want = ("HERDER_HOME=%s" % home).encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                args = f.read().split(b"\0")
            if len(args) < 2 or not args[0].endswith(b"herder") or args[1] != b"daemon":
                continue
            with open("/proc/%s/environ" % d, "rb") as f:
                if want not in f.read().split(b"\0"):
                    continue
        except OSError:
            continue
        if c.pid_alive(int(d)):
            out.append(int(d))
    return out


# ---------------------------------------------------------------- the chaos


class Chaos:
    def __init__(self, ws, mode, rng, args):
        self.ws, self.mode, self.rng, self.args = ws, mode, rng, args
        self.home = os.path.join(ws.dir, "home-" + mode)
        self.run = os.path.basename(ws.dir) + "-" + mode
        self.port = free_port()
        self.config = os.path.join(ws.dir, "herder-%s.toml" % mode)
        self.apps = write_fleet(self.config, self.run, self.port)
        self.env = c.base_env()
        self.env["HERDER_HOME"] = self.home
        if mode == "no-cgroup":
            self.env["HERDER_NO_CGROUP"] = "1"
        self.model = {}
        c.on_cleanup(self.sweep)

    def herder(self, *args, timeout=60):
        return c.run([c.HERDER_BIN] + list(args), env=self.env, timeout=timeout, cwd=self.ws.dir)

    def daemon_pid(self):
        try:
            with open(os.path.join(self.home, "daemon.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def sweep(self):
        """SIGKILL this mode's daemons and every process of its apps."""
        for pid in daemons(self.home) + list(marked(self.run)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def list(self):
        rc, out, err, _ = self.herder("list", "--json", timeout=30)
        if rc != 0:
            raise Failure("list exited %s: %s" % (rc, err.strip()[-300:]))
        return json.loads(out)

    @staticmethod
    def shapes(apps):
        """{app: [online?] by slot}, or None when some instance is neither online nor stopped."""
        out = {}
        for a in apps:
            inst = sorted(a["instances"], key=lambda i: i["index"])
            if any(i["status"] not in ("online", "stopped") for i in inst):
                return None
            out[a["spec"]["name"]] = [i["status"] == "online" for i in inst]
        return out

    def disagreement(self, apps):
        """Why the apps are not (yet) each running once with nothing left over, or None."""
        if self.shapes(apps) is None:
            return "not every instance is online or stopped: %s" % {
                a["spec"]["name"]: [i["status"] for i in a["instances"]] for a in apps}
        found = roots(marked(self.run))
        why = []
        for name in self.apps:
            a = next((x for x in apps if x["spec"]["name"] == name), None)
            online = [i for i in (a["instances"] if a else []) if i["status"] == "online"]
            reported = {i["pid"] for i in online if i.get("pid")}
            if a and len(reported) != len(online):
                why.append("`%s`: %d instances online, pids %s" % (name, len(online), sorted(reported)))
            if a and len(a["instances"]) != a["spec"]["instances"]:
                why.append("`%s`: %d instances listed, spec says %d" % (
                    name, len(a["instances"]), a["spec"]["instances"]))
            running = found.get(name, set())
            if running != reported:
                why.append("`%s` (%s): the daemon reports %s, running without a parent of the app: %s" % (
                    name, "listed" if a else "not listed", sorted(reported), sorted(running)))
        ds = daemons(self.home)
        if len(ds) != 1 or ds[0] != self.daemon_pid():
            why.append("daemons %s, daemon.pid says %s" % (ds, self.daemon_pid()))
        return "\n".join(why) or None

    def settle(self):
        """Wait until everything agrees; returns the list, or raises Failure."""
        deadline = time.monotonic() + self.args.settle
        last = "?"
        pause = 0.005
        while True:
            try:
                apps = self.list()
                last = self.disagreement(apps)
                if last is None:
                    return apps
            except (Failure, ValueError) as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise Failure("not settled after %ss: %s" % (self.args.settle, last))
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def state_agrees(self, apps):
        def rows(items, name_of):
            return {name_of(a): sorted((i["index"], i.get("generation", 0), i.get("pid") or 0, i["status"])
                                       for i in a["instances"])
                    for a in items}
        listed = rows(apps, lambda a: a["spec"]["name"])
        deadline = time.monotonic() + self.args.settle
        while True:
            try:
                with open(os.path.join(self.home, "state.json")) as f:
                    st = json.load(f)
                recorded = rows(st["apps"], lambda a: a["spec"]["name"])
            except (OSError, ValueError, KeyError) as e:
                recorded = str(e)
            if recorded == listed:
                return
            if time.monotonic() > deadline:
                raise Failure("state.json and list disagree:\nstate.json: %s\nlist: %s" % (recorded, listed))
            time.sleep(0.02)

    def served(self):
        self.last_answer = "?"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.settimeout(2)
                s.sendall(b"GET / HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            self.last_answer = data[:60]
            return data.startswith(b"HTTP/1.1 200")
        except OSError as e:
            self.last_answer = repr(e)
            return False

    def port_report(self, apps):
        """Who listens on the cluster port, and what the cluster app's instances hold."""
        lines = []
        cl = next((a for a in apps if a["spec"]["name"] == "cl"), None)
        for i in (cl or {}).get("instances", []):
            pid = i.get("pid")
            fd3 = "-"
            if pid:
                try:
                    fd3 = os.readlink("/proc/%d/fd/3" % pid)
                except OSError as e:
                    fd3 = repr(e)
            lines.append("instance %s gen %s: %s pid %s, fd 3 %s" % (
                i["index"], i.get("generation", 0), i["status"], pid, fd3))
        rc, out, err, _ = c.run(["ss", "-ltnp", "sport = :%d" % self.port], timeout=10)
        lines.append("ss: " + (out or err).strip().replace("\n", " | "))
        lines.append("last answer: %s" % self.last_answer)
        return "\n".join(lines)

    # ------------------------------------------------------------ operations

    def pick(self):
        rng = self.rng
        names = sorted(self.apps)
        listed = [n for n in names if self.model.get(n) is not None]
        cl = self.model.get("cl")
        cluster_up = cl is not None and all(cl)
        k = rng.randrange(14)
        if k <= 2 or not listed:
            name = rng.choice(names)
            return ("start", name) if self.model.get(name) is not None else ("add", name)
        if k <= 4:
            return ("stop", "all" if rng.randrange(6) == 0 else rng.choice(listed))
        if k <= 6:
            return ("restart", "all" if rng.randrange(6) == 0 else rng.choice(listed))
        if k <= 8:
            return ("reload", "cl" if cluster_up and rng.randrange(2) == 0 else rng.choice(listed))
        if k <= 10 and cluster_up:
            return ("scale", "cl", rng.choice([n for n in (1, 2, 3) if n != len(cl)]))
        if k == 11:
            return ("delete", rng.choice(listed))
        return ("save",)

    def argv(self, op):
        if op[0] == "add":
            return ["start", self.config, "--only", op[1]]
        if op[0] == "scale":
            return ["scale", op[1], str(op[2])]
        return list(op)

    def after(self, op, name, before):
        kind = op[0]
        hit = len(op) > 1 and op[1] in (name, "all")
        if not hit:
            return before
        if kind == "add" and before is None:
            return [True] * self.apps[name]
        # A restart takes the config file's spec, count included; a reload keeps the count
        # that runs (a fork-mode app is restarted, but it has one instance here).
        if kind == "restart" and before is not None:
            return [True] * self.apps[name]
        if kind in ("start", "reload") and before is not None:
            return [True] * len(before)
        if kind == "stop" and before is not None:
            return [False] * len(before)
        if kind == "delete" and before is not None:
            return None
        if kind == "scale" and before is not None:
            on = any(before)
            return [before[i] if i < len(before) else on for i in range(op[2])]
        return before

    @staticmethod
    def may_be(before, after, seen):
        """What a command that did not exit 0 may leave: as before, as after, or part way."""
        if seen == before or seen == after:
            return True
        if before is None or seen is None:
            return False
        a = after if after is not None else [False] * len(before)
        lo, hi = min(len(before), len(a)), max(len(before), len(a))
        return lo <= len(seen) <= hi and all(
            (i < len(before) and before[i] == on) or (i < len(a) and a[i] == on) for i, on in enumerate(seen))

    def round(self):
        """One round; returns (op, argv, delay_ms, exit code, seconds to settle, whether the
        command ended before the kill)."""
        op = self.pick()
        argv = self.argv(op)
        delay_ms = self.rng.randint(0, self.args.kill_within_ms)
        before = dict(self.model)
        daemon = self.daemon_pid()
        t0 = time.monotonic()
        p = subprocess.Popen([c.HERDER_BIN] + argv, env=self.env, cwd=self.ws.dir, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # The random moment of the kill. A command that ends before it has done all it does:
        # nothing of a stopped app may be left then either (crash recovery would sweep it away).
        ended_first = False
        while time.monotonic() < t0 + delay_ms / 1000:
            if p.poll() is not None:
                ended_first = True
                break
            time.sleep(min(0.001, max(0.0, t0 + delay_ms / 1000 - time.monotonic())))
        if ended_first:
            try:
                self.settle()
            except Failure as e:
                raise Failure("after `herder %s` ended, before any kill: %s" % (" ".join(argv), e))
        os.kill(daemon, signal.SIGKILL)
        ok, _ = c.wait_until(lambda: not c.pid_alive(daemon), 10, 0.002)
        if not ok:
            raise Failure("the daemon %d did not die of SIGKILL" % daemon)
        try:
            out, err = p.communicate(timeout=self.args.settle)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise Failure("`herder %s` did not end after its daemon was killed" % " ".join(argv))
        text = (out + err).decode(errors="replace").strip()
        t1 = time.monotonic()
        apps = self.settle()
        settled_s = time.monotonic() - t1
        if self.daemon_pid() == daemon:
            raise Failure("daemon.pid still names the killed daemon")
        seen = self.shapes(apps)
        problems = []
        for name in sorted(self.apps):
            b, s = before.get(name), seen.get(name)
            a = self.after(op, name, b)
            fine = s == a if p.returncode == 0 else self.may_be(b, a, s)
            if not fine:
                problems.append("`%s`: %s, expected %s (before %s)" % (name, s, a, b))
            self.model[name] = s
        try:
            with open(os.path.join(self.home, "dump.json")) as f:
                dump = json.load(f)
        except FileNotFoundError:
            dump = None
        except ValueError as e:
            problems.append("dump.json does not parse: %s" % e)
            dump = None
        if op[0] == "save" and p.returncode == 0:
            saved = {a["spec"]["name"]: (a["running"], a["spec"]["instances"]) for a in (dump or {}).get("apps", [])}
            expected = {k: (any(v), len(v)) for k, v in before.items() if v is not None}
            if saved != expected:
                problems.append("dump.json after a save that exited 0: %s, expected %s" % (saved, expected))
        self.state_agrees(apps)
        if any(seen.get("cl") or []):
            # Eight connections in a row answered: one that goes to a stopped instance's
            # socket hangs.
            ok, _ = c.wait_until(lambda: all(self.served() for _ in range(8)), self.args.settle, 0.05)
            if not ok:
                problems.append("the cluster app does not answer on port %d\n%s" % (
                    self.port, self.port_report(apps)))
        if problems:
            raise Failure("\n".join(problems) + "\n`herder %s` exit %s: %s" % (" ".join(argv), p.returncode, text[-300:]))
        return op, argv, delay_ms, p.returncode, settled_s, ended_first

    def fresh(self):
        """Start over: a new daemon and every app of the config file."""
        self.herder("kill", timeout=60)
        self.sweep()
        rc, out, err, _ = self.herder("start", self.config, timeout=120)
        if rc != 0:
            raise RuntimeError("start of the fleet failed: %s" % (out + err)[-1000:])
        apps = self.settle()
        self.model = dict(self.shapes(apps))
        for name in self.apps:
            self.model.setdefault(name, None)


def tail(path, n=30):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--kill-within-ms", type=int, default=500)
    ap.add_argument("--settle", type=float, default=30.0, help="seconds allowed to settle after each kill")
    ap.add_argument("--modes", default="cgroup,no-cgroup",
                    help="daemon modes, the rounds split evenly between them in this order")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/chaos.json)")
    args = ap.parse_args()
    if not c.Herder.available():
        sys.exit("no herder binary at %s (cargo build --release, or set HERDER_BIN)" % c.HERDER_BIN)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in ("cgroup", "no-cgroup") for m in modes):
        ap.error("--modes takes cgroup and no-cgroup")
    c.install_cleanup_handlers(time_limit_s=max(600, args.rounds * 60))
    c.log("chaos: seed %d (replay with --seed %d --rounds %d), modes %s" % (seed, seed, args.rounds, modes))

    rng = random.Random(seed)
    ws = c.Workspace("chaos")
    kinds = collections.Counter()
    exits = collections.Counter()
    settle_s = []
    failures = []
    t_start = time.monotonic()
    per_mode = [args.rounds // len(modes) + (1 if i < args.rounds % len(modes) else 0) for i in range(len(modes))]
    n = 0
    for mode, rounds in zip(modes, per_mode):
        chaos = Chaos(ws, mode, rng, args)
        chaos.fresh()
        for _ in range(rounds):
            n += 1
            try:
                op, argv, delay_ms, rc, s, ended_first = chaos.round()
                kinds[op[0] if op[0] != "add" else "start"] += 1
                exits["0" if rc == 0 else "non-zero"] += 1
                exits["ended before the kill"] += ended_first
                settle_s.append(s)
                c.log("round %d [%s]: herder %s, killed after %d ms, exit %s, settled in %.2f s" % (
                    n, mode, " ".join(argv), delay_ms, rc, s))
            except Failure as e:
                failures.append({"seed": seed, "round": n, "mode": mode, "why": str(e),
                                 "daemon_log": tail(os.path.join(chaos.home, "daemon.log"))})
                c.log("round %d [%s]: FAILURE (seed %d): %s" % (n, mode, seed, e))
                try:
                    apps = chaos.list()
                    shapes = chaos.shapes(apps)
                    if shapes is None or chaos.disagreement(apps):
                        raise Failure("unsettled")
                    chaos.model = {name: shapes.get(name) for name in chaos.apps}
                except Failure:
                    chaos.fresh()
        chaos.herder("kill", timeout=60)
        ok, _ = c.wait_until(lambda: not marked(chaos.run), 10, 0.02)
        if not ok:
            failures.append({"seed": seed, "round": n, "mode": mode,
                             "why": "left after `herder kill`: %s" % marked(chaos.run)})
        chaos.sweep()
    elapsed = time.monotonic() - t_start

    result = {
        "description": "SIGKILL of the daemon at a random moment of a command, then checks (see bench/chaos.py)",
        "seed": seed, "rounds": n, "modes": dict(zip(modes, per_mode)),
        "kill_within_ms": args.kill_within_ms, "operations": dict(kinds), "kills": n,
        "command_exits": dict(exits), "settle_s": c.summary(settle_s),
        "failures": failures, "elapsed_s": round(elapsed, 1),
        "command": "python3 bench/chaos.py --rounds %d --seed %d" % (args.rounds, seed),
    }
    c.save_results("chaos", result, args.out)
    print("rounds:      %d (%s)" % (n, ", ".join("%s %d" % m for m in zip(modes, per_mode))))
    print("seed:        %d" % seed)
    print("operations:  %s" % ", ".join("%s %d" % kv for kv in sorted(kinds.items())))
    print("kills:       %d (command exit 0: %d, non-zero: %d; ended before the kill: %d)" % (
        n, exits["0"], exits["non-zero"], exits["ended before the kill"]))
    if settle_s:
        s = c.summary(settle_s)
        print("settled in:  median %.2f s, p90 %.2f s, max %.2f s" % (s["median"], s["p90"], s["max"]))
    print("failures:    %d" % len(failures))
    for f in failures:
        print("  round %d [%s] (seed %d): %s" % (f["round"], f["mode"], f["seed"], f["why"].splitlines()[0]))
    print("time:        %.0f s" % elapsed)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
