"""Shared helpers for the herder vs PM2 benchmarks (python3 stdlib only).

Each tool runs against its own temporary home (HERDER_HOME / PM2_HOME) under
a temporary work folder that is removed at the end, together with the daemons
started there, even on error or Ctrl-C. Every external command has a timeout
and every wait loop is bounded by count and by time, so a benchmark never hangs.

Environment knobs:
  HERDER_BIN            herder binary (default: <repo>/target/release/herder)
  HERDER_BENCH_PM2_DIR  folder where `npm install pm2` was run
                        (default: /tmp/herder-bench/pm2); see bench/run.sh
  HERDER_BENCH_TMP      parent of the per-run temporary folders (default /tmp/herder-bench)
  HERDER_BENCH_KEEP=1   keep the temporary folder (for debugging)
"""

import atexit
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
FIXTURES = os.path.join(BENCH_DIR, "fixtures")
TMP_PARENT = os.environ.get("HERDER_BENCH_TMP", "/tmp/herder-bench")
PM2_DIR = os.environ.get("HERDER_BENCH_PM2_DIR", os.path.join(TMP_PARENT, "pm2"))
HERDER_BIN = os.environ.get("HERDER_BIN", os.path.join(ROOT, "target", "release", "herder"))
PM2_BIN = os.path.join(PM2_DIR, "node_modules", ".bin", "pm2")

# The python3 that runs the fixtures, the same for every tool: a folder holding only a
# `python3` symlink to it goes first in PATH. Default: the distribution's /usr/bin/python3,
# which starts in ~10 ms; a pyenv shim (a shell script) or an interpreter with heavy
# site-packages .pth files adds tens of ms of noisy start-up to every restart sample.
PYTHON = os.path.realpath(os.environ.get("HERDER_BENCH_PYTHON") or
                          ("/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable))
PY_DIR = os.path.join(TMP_PARENT, "pybin")


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- cleanup

_cleanups = []


def on_cleanup(fn):
    """Register fn to run (last registered first) at exit, on error or on a signal."""
    _cleanups.append(fn)
    return fn


def run_cleanups():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # keep cleaning
            log("cleanup error:", repr(e))


def _on_signal(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def install_cleanup_handlers(time_limit_s=None):
    atexit.register(run_cleanups)
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, _on_signal)
    if time_limit_s:
        def _alarm(_s, _f):
            raise TimeoutError("benchmark exceeded its %d s limit" % time_limit_s)
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(int(time_limit_s))


# ---------------------------------------------------------------- scheduling

AUTOGROUP = "/proc/sys/kernel/sched_autogroup_enabled"


def one_scheduling_group():
    """Turn the kernel's autogroups off for this run (restored at exit); what was done, for the
    results.

    With autogroups on (the default of many kernels), every session is a group that gets an
    equal share of a busy CPU, however many processes it holds. The tools compared here lay
    out their sessions differently: herder starts each instance in a session of its own, PM2's
    workers share the God daemon's, and this script's own children (wrk, the node servers
    behind nginx) share the script's. Under load, each tool's processes would then get a
    different share of the cores by that layout alone, and the figures would compare layouts
    rather than tools. (A service under systemd runs in a cgroup of its own, where autogroups
    do not apply.)"""
    try:
        with open(AUTOGROUP) as f:
            was = f.read().strip()
    except OSError:
        return "absent (kernel without autogroups)"
    if was == "0":
        return "off"
    try:
        with open(AUTOGROUP, "w") as f:
            f.write("0")
    except OSError as e:
        log("WARNING: cannot turn autogroups off (%s): each session gets an equal share of a busy CPU, "
            "which favours a tool whose processes are in more sessions" % e)
        return "on (could not turn it off: %s)" % e

    def restore():
        with open(AUTOGROUP, "w") as f:
            f.write(was)
    on_cleanup(restore)
    return "off for the run (was on)"


# ---------------------------------------------------------------- processes


def run(cmd, env=None, timeout=60, check=False, cwd=None, capture=True):
    """Run cmd; return (rc, stdout, stderr, seconds). Never hangs: killed at timeout."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, cwd=cwd, timeout=timeout,
                           stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                           stderr=subprocess.PIPE if capture else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        dt = time.perf_counter() - t0
        if check:
            raise RuntimeError("timed out after %.1fs: %s" % (dt, " ".join(cmd)))
        return (-999, "", "timeout", dt)
    dt = time.perf_counter() - t0
    out = p.stdout.decode(errors="replace") if capture else ""
    err = p.stderr.decode(errors="replace") if capture else ""
    if check and p.returncode != 0:
        raise RuntimeError("exit %d: %s\n%s%s" % (p.returncode, " ".join(cmd), out[-2000:], err[-2000:]))
    return (p.returncode, out, err, dt)


_devnull = None


def time_cmd(cmd, env, timeout=30):
    """Wall-clock seconds of one CLI call (posix_spawn + waitpid, the cheapest spawn
    python offers), output to /dev/null. Returns (seconds, exit code); killed at timeout."""
    global _devnull
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDWR)
    path = cmd[0] if os.sep in cmd[0] else (shutil.which(cmd[0], path=env.get("PATH")) or cmd[0])
    fa = [(os.POSIX_SPAWN_DUP2, _devnull, 0), (os.POSIX_SPAWN_DUP2, _devnull, 1),
          (os.POSIX_SPAWN_DUP2, _devnull, 2)]
    t0 = time.perf_counter()
    pid = os.posix_spawn(path, cmd, env, file_actions=fa)
    timer = threading.Timer(timeout, lambda: os.kill(pid, signal.SIGKILL))
    timer.start()
    _, status = os.waitpid(pid, 0)
    dt = time.perf_counter() - t0
    timer.cancel()
    rc = os.waitstatus_to_exitcode(status)
    return dt, (-999 if rc == -signal.SIGKILL else rc)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as gone
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def proc_table():
    """{pid: (ppid, comm, starttime)} for all processes."""
    t = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        rest = s[s.rindex(")") + 2:].split()
        # rest[0]=state rest[1]=ppid ... rest[19]=starttime
        if rest[0] == "Z":
            continue
        t[int(d)] = (int(rest[1]), comm, rest[19])
    return t


def descendants(root_pid, table=None):
    table = table if table is not None else proc_table()
    kids = {}
    for pid, (ppid, _c, _s) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, stack = [], [root_pid]
    while stack:
        p = stack.pop()
        for k in kids.get(p, ()):
            out.append(k)
            stack.append(k)
    return out


def count_descendants(root_pid, comm):
    t = proc_table()
    return sum(1 for p in descendants(root_pid, t) if t[p][1] == comm)


def kill_pids(pids_with_start):
    """SIGKILL the given (pid, starttime) pairs if they are still the same processes."""
    t = proc_table()
    for pid, st in pids_with_start:
        if pid in t and t[pid][2] == st:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def evict(path):
    """Drop the file's clean pages from the page cache (those no process maps), so that a
    daemon started next reads its executable back by page faults, as after a boot: the kernel
    maps whole large folios on a fault, and a binary just written or copied sits in larger
    ones, which makes the same daemon up to ~1.5 MB larger."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def status_kb(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def wait_until(pred, timeout_s, interval_s=0.002):
    """Poll pred() until true or timeout. Returns (ok, seconds waited)."""
    t0 = time.perf_counter()
    while True:
        if pred():
            return True, time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout_s:
            return False, time.perf_counter() - t0
        time.sleep(interval_s)


# ---------------------------------------------------------------- statistics


def summary(xs):
    xs = sorted(xs)
    if not xs:
        return {"n": 0}

    def q(p):
        if len(xs) == 1:
            return xs[0]
        k = (len(xs) - 1) * p
        lo = int(k)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

    return {"n": len(xs), "median": statistics.median(xs), "p10": q(0.10), "p90": q(0.90),
            "min": xs[0], "max": xs[-1], "mean": statistics.fmean(xs)}


# ---------------------------------------------------------------- workspace


class Workspace:
    """A temporary folder holding the tools' homes; removed at cleanup."""

    def __init__(self, tag):
        os.makedirs(TMP_PARENT, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="run-%s-" % tag, dir=TMP_PARENT)
        on_cleanup(self.remove)

    def path(self, *p):
        full = os.path.join(self.dir, *p)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return full

    def remove(self):
        if os.environ.get("HERDER_BENCH_KEEP") == "1":
            log("keeping", self.dir)
            return
        shutil.rmtree(self.dir, ignore_errors=True)


def _py_dir():
    link = os.path.join(PY_DIR, "python3")
    if os.path.realpath(link) != PYTHON:
        os.makedirs(PY_DIR, exist_ok=True)
        tmp = link + ".%d" % os.getpid()
        os.symlink(PYTHON, tmp)
        os.replace(tmp, link)
    return PY_DIR


def base_env():
    _py_dir()
    env = dict(os.environ)
    env["PATH"] = PY_DIR + os.pathsep + env.get("PATH", "")
    env.pop("HERDER_HOME", None)
    env.pop("PM2_HOME", None)
    env.setdefault("NO_COLOR", "1")
    return env


# ---------------------------------------------------------------- tools


class Tool:
    name = "?"
    home_var = "?"

    def __init__(self, ws):
        self.ws = ws
        self.home = os.path.join(ws.dir, self.name + "-home")
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        self.env = base_env()
        self.env[self.home_var] = self.home
        self._daemon = None  # (pid, starttime)
        on_cleanup(self.shutdown)

    def cmd(self, *args):
        return [self.bin] + list(args)

    def executables(self):
        """The files whose code the tool's daemon runs (for `evict`)."""
        return [os.path.realpath(self.bin)]

    def run(self, *args, timeout=60, check=True):
        return run(self.cmd(*args), env=self.env, timeout=timeout, check=check, cwd=self.ws.dir)

    def daemon_pid(self):
        raise NotImplementedError

    def start_daemon(self):
        self.run(*self.ping_args, timeout=60)
        ok, _ = wait_until(lambda: self._read_pid() is not None, 10, 0.01)
        pid = self._read_pid()
        if not ok or not pid or not pid_alive(pid):
            raise RuntimeError("%s daemon did not start (no live pid in %s)" % (self.name, self.pid_file))
        self._daemon = (pid, proc_table().get(pid, (0, "", ""))[2])
        return pid

    def _read_pid(self):
        try:
            with open(self.pid_file) as f:
                return int(f.read().strip().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pid(self):
        return self._daemon[0] if self._daemon else self._read_pid()

    def shutdown(self):
        """Stop the apps and the daemon; SIGKILL leftovers we started; never hangs."""
        pid = self._daemon[0] if self._daemon else self._read_pid()
        if not pid:
            return
        t = proc_table()
        ours = [(p, t[p][2]) for p in descendants(pid, t)]
        if pid in t:
            ours.append((pid, t[pid][2]))
        rc, out, err, _ = run(self.cmd(*self.kill_args), env=self.env, timeout=30)
        if rc != 0:
            log("%s kill exited %s: %s" % (self.name, rc, (out + err).strip()[-300:]))
        wait_until(lambda: not pid_alive(pid), 5, 0.02)
        left = [p for p, st in ours if pid_alive(p)]
        if left:
            log("%s: %d processes left after kill, sending SIGKILL: %s" % (self.name, len(left), left[:10]))
            kill_pids(ours)
        self._daemon = None

    # --- app helpers, overridden per tool
    def write_idle_config(self, n, path):
        raise NotImplementedError

    def statuses(self):
        """List of per-instance status strings from the tool's JSON list."""
        raise NotImplementedError

    def online_count(self):
        return sum(1 for s in self.statuses() if s == "online")


class Herder(Tool):
    name = "herder"
    home_var = "HERDER_HOME"
    ping_args = ("ping",)
    kill_args = ("kill",)

    def __init__(self, ws):
        self.bin = HERDER_BIN
        self.pid_file = None
        super().__init__(ws)
        self.pid_file = os.path.join(self.home, "daemon.pid")

    @staticmethod
    def available():
        return os.access(HERDER_BIN, os.X_OK)

    @staticmethod
    def version():
        rc, out, err, _ = run([HERDER_BIN, "--version"], timeout=10)
        return (out or err).strip() if rc == 0 else "unknown"

    def list_cmds(self):
        return {"herder list": self.cmd("list"), "herder list --json": self.cmd("list", "--json")}

    def write_idle_config(self, n, path, prefix="idle"):
        with open(path, "w") as f:
            for i in range(n):
                f.write('[[apps]]\nname = "%s%d"\nscript = "sleep"\nargs = ["100000"]\n\n' % (prefix, i))
        return path

    def start_args(self, config):
        return ("start", config)

    def stop_all_args(self):
        return ("stop", "all")

    def delete_all_args(self):
        return ("delete", "all")

    def statuses(self):
        rc, out, err, _ = self.run("list", "--json", timeout=30, check=False)
        if rc != 0:
            return []
        try:
            data = json.loads(out)
        except ValueError:
            return []
        return _collect_statuses(data)

    def flap_start_args(self, script, out_file):
        # --interpreter python3 as for PM2: herder runs an executable script with a shebang
        # directly, which would add an exec of /usr/bin/env that the other runners do not pay.
        return ("start", script, "--name", "flap", "--interpreter", "python3", "--restart-delay", "0",
                "--max-restarts", "100000", "--min-uptime", "0", "--", out_file)

    def flap_delete_args(self):
        return ("delete", "flap")


class HerderNoCgroup(Herder):
    """Diagnostic variant: herder's daemon with HERDER_NO_CGROUP=1 (apps not put in cgroups),
    to isolate what joining a cgroup costs on each start."""
    name = "herder-nocg"

    def __init__(self, ws):
        super().__init__(ws)
        self.env["HERDER_NO_CGROUP"] = "1"


def _collect_statuses(data):
    """Find instance status strings in herder's `list --json` whatever its exact shape."""
    found = []

    def walk(x, depth=0):
        if depth > 6:
            return
        if isinstance(x, dict):
            inst = x.get("instances")
            if isinstance(inst, list) and inst:
                for i in inst:
                    walk(i, depth + 1)
                return
            for k in ("status", "state"):
                v = x.get(k)
                if isinstance(v, str):
                    found.append(v)
                    return
                if isinstance(v, dict) and isinstance(v.get("status") or v.get("state"), str):
                    found.append(v.get("status") or v.get("state"))
                    return
            for v in x.values():
                if isinstance(v, (list, dict)):
                    walk(v, depth + 1)
        elif isinstance(x, list):
            for v in x:
                walk(v, depth + 1)

    walk(data)
    return found


class PM2(Tool):
    name = "pm2"
    home_var = "PM2_HOME"
    ping_args = ("ping",)
    kill_args = ("kill",)

    def __init__(self, ws):
        self.bin = PM2_BIN
        self.pid_file = None
        super().__init__(ws)
        self.pid_file = os.path.join(self.home, "pm2.pid")

    def executables(self):
        """PM2's God daemon is a node process: the node binary holds nearly all of its code."""
        node = shutil.which("node", path=self.env.get("PATH"))
        return [os.path.realpath(node)] if node else []

    @staticmethod
    def available():
        return os.access(PM2_BIN, os.X_OK)

    @staticmethod
    def version():
        try:
            with open(os.path.join(PM2_DIR, "node_modules", "pm2", "package.json")) as f:
                return json.load(f)["version"]
        except (OSError, ValueError, KeyError):
            return "unknown"

    def list_cmds(self):
        return {"pm2 jlist": self.cmd("jlist"), "pm2 ls": self.cmd("ls")}

    def write_idle_config(self, n, path, prefix="idle"):
        apps = [{"name": "%s%d" % (prefix, i), "script": "sleep", "args": ["100000"],
                 "interpreter": "none"} for i in range(n)]
        if not path.endswith(".json"):
            path += ".json"
        with open(path, "w") as f:
            json.dump({"apps": apps}, f, indent=1)
        return path

    def start_args(self, config):
        return ("start", config)

    def stop_all_args(self):
        return ("stop", "all")

    def delete_all_args(self):
        return ("delete", "all")

    def statuses(self):
        rc, out, err, _ = self.run("jlist", timeout=30, check=False)
        if rc != 0:
            return []
        try:
            # jlist may print warnings before the JSON
            data = json.loads(out[out.index("["):])
        except ValueError:
            return []
        return [p.get("pm2_env", {}).get("status") for p in data]

    def flap_start_args(self, script, out_file):
        # PM2's CLI has no --min-uptime (ecosystem files only, schema minimum 100 ms). With
        # its default 1000 ms every 50 ms run counts as unstable, but the app only becomes
        # `errored` after max_restarts (100000) unstable restarts, which is never reached.
        return ("start", script, "--name", "flap", "--interpreter", "python3",
                "--restart-delay", "0", "--max-restarts", "100000",
                "--", out_file)

    def flap_delete_args(self):
        return ("delete", "flap")


TOOLS = {"herder": Herder, "pm2": PM2}


def pick_tools(names):
    """Tool classes for the comma-separated names that are available."""
    out = []
    for n in names:
        cls = TOOLS[n]
        if cls.available():
            out.append(cls)
        else:
            log("skipping %s: %s not found (see bench/README.md)" % (n, cls.__name__ == "Herder" and HERDER_BIN or PM2_BIN))
    return out


def common_args(parser, default_tools="herder,pm2"):
    parser.add_argument("--tools", default=default_tools,
                        help="comma-separated tools to measure (default %(default)s)")
    parser.add_argument("--out", default=None, help="results JSON path (default bench/results/<part>.json)")
    return parser


# ---------------------------------------------------------------- metadata


def machine_info():
    def first_line(cmd):
        rc, out, err, _ = run(cmd, timeout=15)
        return (out or err).strip().splitlines()[0] if rc == 0 and (out or err).strip() else "unknown"

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = None
    try:
        mem_kb = status_meminfo("MemTotal")
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_total_mb": round(mem_kb / 1024) if mem_kb else None,
        "kernel": platform.release(),
        "os": first_line(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
        "herder": Herder.version() if Herder.available() else "not built",
        "herder_build": herder_build(),
        "pm2": PM2.version() if PM2.available() else "not installed",
        "node": first_line(["node", "--version"]),
        "python": first_line([PYTHON, "--version"]) + " (" + PYTHON + ")",
    }


def herder_build():
    """Binary path, its build time and the git commit it was built over (best effort)."""
    if not Herder.available():
        return None
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(HERDER_BIN), datetime.timezone.utc)
    rc, head, _, _ = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], timeout=10)
    inside = HERDER_BIN.startswith(ROOT + os.sep)
    rc2, dirty, _, _ = run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           timeout=10)
    # A binary built elsewhere (e.g. from `git archive HEAD`) owes nothing to this working tree.
    return "%s built %s; git HEAD when measured: %s%s" % (
        os.path.relpath(HERDER_BIN, ROOT) if inside else HERDER_BIN,
        mtime.strftime("%Y-%m-%d %H:%M UTC"), head.strip() if rc == 0 else "?",
        ", with uncommitted changes in src/" if inside and rc2 == 0 and dirty.strip() else "")


def status_meminfo(field):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def save_results(part, data, out=None):
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = out or os.path.join(RESULTS_DIR, part + ".json")
    data = dict(data)
    data.setdefault("part", part)
    data.setdefault("machine", machine_info())
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    log("wrote", os.path.relpath(path, ROOT))
    return path


def shell_join(cmd):
    """Readable command line for the report: replace temp paths by placeholders."""
    import shlex
    s = " ".join(shlex.quote(c) for c in cmd)
    s = s.replace(HERDER_BIN, "herder").replace(PM2_BIN, "pm2")
    return s


# ---------------------------------------------------------------- 100 idle apps


def start_idle_apps(tool, n, config, timeout_s=180):
    """Start n `sleep 100000` apps from one config file and wait until all run.

    Returns seconds: cli (the start command's wall clock), running (from the start
    command until the CLI returned AND n `sleep` processes run under the daemon, seen
    in /proc every 2 ms) and listed_online (until the tool's own JSON list reports n
    instances `online`; polled, so it includes list calls, only a cross-check).
    """
    pid = tool.pid()
    t0 = time.perf_counter()
    rc, out, err, cli = tool.run(*tool.start_args(config), timeout=timeout_s, check=False)
    if rc != 0:
        raise RuntimeError("%s start failed (%s): %s" % (tool.name, rc, (out + err)[-1500:]))
    ok, _ = wait_until(lambda: count_descendants(pid, "sleep") >= n, timeout_s, 0.002)
    running = time.perf_counter() - t0
    if not ok:
        raise RuntimeError("%s: only %d of %d apps running after %ds" % (
            tool.name, count_descendants(pid, "sleep"), n, timeout_s))
    ok, _ = wait_until(lambda: tool.online_count() >= n, 60, 0.02)
    listed = time.perf_counter() - t0
    if not ok:
        log("%s: its list never showed %d online (statuses: %s)" % (
            tool.name, n, sorted(set(map(str, tool.statuses())))))
    return {"cli": cli, "running": running, "listed_online": listed if ok else None}


def stop_all_apps(tool, timeout_s=180):
    """`stop all`; returns seconds: cli and gone (CLI returned and no app process left)."""
    pid = tool.pid()
    t0 = time.perf_counter()
    rc, out, err, cli = tool.run(*tool.stop_all_args(), timeout=timeout_s, check=False)
    if rc != 0:
        raise RuntimeError("%s stop all failed (%s): %s" % (tool.name, rc, (out + err)[-1500:]))
    ok, _ = wait_until(lambda: count_descendants(pid, "sleep") == 0, timeout_s, 0.002)
    gone = time.perf_counter() - t0
    if not ok:
        raise RuntimeError("%s: apps still running %ds after stop all" % (tool.name, timeout_s))
    return {"cli": cli, "gone": gone}


def delete_all_apps(tool, timeout_s=180):
    rc, out, err, cli = tool.run(*tool.delete_all_args(), timeout=timeout_s, check=False)
    if rc != 0:
        log("%s delete all exited %s: %s" % (tool.name, rc, (out + err)[-500:]))
    wait_until(lambda: count_descendants(tool.pid(), "sleep") == 0, 30, 0.01)
    return {"cli": cli}


def rss_sample(pid, n=5, interval_s=0.2):
    """Median VmRSS/VmHWM (kB) and Pss (kB, smaps_rollup) of pid over n samples."""
    rss, pss, hwm = [], [], None
    for i in range(n):
        rss.append(status_kb(pid, "VmRSS"))
        hwm = status_kb(pid, "VmHWM")
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss.append(int(line.split()[1]))
        except OSError:
            pass
        if i + 1 < n:
            time.sleep(interval_s)
    return {"vmrss_kb": statistics.median(rss), "vmhwm_kb": hwm,
            "rss_anon_kb": status_kb(pid, "RssAnon"), "rss_file_kb": status_kb(pid, "RssFile"),
            "pss_kb": statistics.median(pss) if pss else None,
            "threads": status_kb(pid, "Threads")}
