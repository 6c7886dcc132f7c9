#!/usr/bin/env python3
"""Start every ecosystem fixture under a real PM2 and under herder, and compare what the apps see.

Each fixture app (tests/fixtures/ecosystem/apps/dump.js or dump.py) writes its argv, cwd and
environment to $DUMP_DIR/<app>-<instance>.json. This script installs PM2 from npm into a
temporary directory (never into the project, never in CI), copies the fixtures to a temporary
directory, starts each one under PM2 (a private PM2_HOME) and under herder (a private
HERDER_HOME) with the same shell environment, and prints the differences per app:

  - app names and instance counts,
  - argv after the script,
  - cwd,
  - every environment variable either side sets that the shell did not have, except each
    tool's own bookkeeping (PM2's pm_*, PM2_*, and the process-record fields it exports;
    herder's HERDER_*).

Usage: python3 bench/pm2_compat.py [--herder target/release/herder] [--pm2-version 6]
       [--keep] [fixture ...]
Exit status: 0 when every fixture matches or differs only where DESIGN.md says herder differs
on purpose (listed in EXPECTED below), 1 otherwise.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "ecosystem"

# (fixture, extra `start` flags): the same flags are given to PM2 and to herder.
CASES = [
    ("basic/ecosystem.config.js", ["--env", "production"]),
    ("cluster/ecosystem.config.js", []),
    ("camel/ecosystem.config.js", ["--env", "staging"]),
    ("cjs/ecosystem.config.cjs", []),
    ("mjs/ecosystem.config.mjs", []),
    ("esm-package/ecosystem.config.js", []),
    ("esm-package-cjs/ecosystem.config.js", []),
    ("yaml/ecosystem.yaml", ["--env", "production"]),
    ("json5/ecosystem.json", []),
    ("strict-json/apps.json", []),
    ("args/ecosystem.config.js", []),
    ("envfile/ecosystem.config.js", ["--env", "production"]),
    ("bare/ecosystem.config.js", []),
]

# Where herder differs from PM2 on purpose (DESIGN.md), by fixture: a short reason.
EXPECTED = {
    "mjs/ecosystem.config.mjs": "PM2 cannot load an ecosystem.config.mjs with `export default`",
    "esm-package/ecosystem.config.js": "PM2 cannot load a .js config in a \"type\": \"module\" package",
    "esm-package-cjs/ecosystem.config.js": "PM2 loads it with require(), which fails in an ESM package",
    "envfile/ecosystem.config.js": "env_file is herder's (PM2 ignores it)",
}

# Variables that are each tool's bookkeeping, not the app's configuration.
PM2_OWN_PREFIXES = ("pm_", "PM2_", "pmx", "axm_", "km_")
PM2_OWN = {
    "name", "namespace", "exec_mode", "instances", "restart_time", "unstable_restarts",
    "created_at", "unique_id", "status", "version", "versioning", "node_version", "username",
    "windowsHide", "vizion", "vizion_running", "autorestart", "autostart", "treekill",
    "exec_interpreter", "node_args", "args", "env", "merge_logs", "kill_retry_time",
    "instance_var", "filter_env", "watch", "axm_actions", "axm_monitor", "axm_options",
    "axm_dynamic", "automation", "pmx", "exit_code", "prev_restart_delay", "restart_delay",
    "max_restarts", "min_uptime", "kill_timeout", "listen_timeout", "source_map_support",
    "disable_source_map_support", "cron_restart", "port", "increment_var",
    "append_env_to_name", "env_production", "env_staging", "env_file", "max_memory_restart",
    "exp_backoff_restart_delay", "stop_exit_codes", "interpreter_args", "cwd", "script",
    "NODE_APP_INSTANCE", "INSTANCE_ID", "_", "SHLVL", "OLDPWD", "PWD",
    # Set by this script (differs per tool by construction), and PM2's own channel and markers.
    "DUMP_DIR", "SILENT", "_pm2_version", "NODE_CHANNEL_FD", "NODE_CHANNEL_SERIALIZATION_MODE",
}


def run(cmd, env, cwd, check=True, timeout=120):
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def install_pm2(workdir: Path, version: str) -> Path:
    prefix = workdir / "pm2-install"
    prefix.mkdir()
    run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix), f"pm2@{version}"],
        os.environ.copy(), prefix, timeout=600)
    return prefix / "node_modules" / ".bin" / "pm2"


def wait_dumps(dump_dir: Path, settle: float = 1.5, timeout: float = 20.0):
    """Waits until dumps appear and no new one shows up for `settle` seconds."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(list(dump_dir.glob("*.json")))
        if n != last:
            last, last_change = n, time.monotonic()
        elif n > 0 and time.monotonic() - last_change >= settle:
            break
        time.sleep(0.1)
    out = {}
    for f in sorted(dump_dir.glob("*.json")):
        try:
            out[f.stem] = json.loads(f.read_text())
        except ValueError:
            pass
    return out


def app_env(record, shell_env, own, app_names):
    env = record.get("env", {})
    # PM2 also exports a variable named after the app (its JSON-stringified record).
    return {k: v for k, v in env.items()
            if shell_env.get(k) != v and k not in own and k not in app_names
            and not k.startswith(PM2_OWN_PREFIXES) and not k.startswith("HERDER_")}


def compare(pm2_dumps, herder_dumps, shell_env):
    diffs = []
    if sorted(pm2_dumps) != sorted(herder_dumps):
        diffs.append(f"apps/instances: pm2 {sorted(pm2_dumps)} vs herder {sorted(herder_dumps)}")
    app_names = {k.rsplit("-", 1)[0] for k in set(pm2_dumps) | set(herder_dumps)}
    for key in sorted(set(pm2_dumps) & set(herder_dumps)):
        p, h = pm2_dumps[key], herder_dumps[key]
        # PM2's cluster wrapper passes numbers in `args` through unconverted; argv is text.
        if [str(a) for a in p["argv"]] != [str(a) for a in h["argv"]]:
            diffs.append(f"{key}: argv pm2 {p['argv']} vs herder {h['argv']}")
        if p["cwd"] != h["cwd"]:
            diffs.append(f"{key}: cwd pm2 {p['cwd']} vs herder {h['cwd']}")
        pe, he = app_env(p, shell_env, PM2_OWN, app_names), app_env(h, shell_env, PM2_OWN, app_names)
        for k in sorted(set(pe) | set(he)):
            if pe.get(k) != he.get(k):
                diffs.append(f"{key}: env {k} pm2 {pe.get(k)!r} vs herder {he.get(k)!r}")
    return diffs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--herder", default=str(ROOT / "target" / "release" / "herder"))
    ap.add_argument("--pm2-version", default="latest")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("fixtures", nargs="*", help="fixture paths (default: all)")
    args = ap.parse_args()
    if os.environ.get("CI"):
        print("pm2_compat: not run in CI (it installs PM2 from npm)")
        return 0
    herder = Path(args.herder).resolve()
    if not herder.exists():
        run(["cargo", "build", "--release"], os.environ.copy(), ROOT, timeout=1800)

    work = Path(tempfile.mkdtemp(prefix="herder-pm2-compat-"))
    status = 0
    try:
        pm2 = install_pm2(work, args.pm2_version)
        fixtures = work / "ecosystem"
        shutil.copytree(FIXTURES, fixtures)
        shell_env = os.environ.copy()
        shell_env.update({"SECRET_TOKEN": "hunter2", "KEPT_VAR": "kept"})
        cases = [c for c in CASES if not args.fixtures or c[0] in args.fixtures]
        for fixture, flags in cases:
            path = fixtures / fixture
            results = {}
            for tool in ("pm2", "herder"):
                dump_dir = work / "dumps" / tool / fixture.replace("/", "_")
                dump_dir.mkdir(parents=True)
                env = dict(shell_env, DUMP_DIR=str(dump_dir))
                env["PM2_HOME"] = str(work / "pm2-home")
                env["HERDER_HOME"] = str(work / "herder-home")
                if tool == "pm2":
                    start = run([str(pm2), "start", str(path), *flags], env, path.parent, check=False)
                    stop = [str(pm2), "kill"]
                else:
                    start = run([str(herder), "start", str(path), *flags], env, path.parent, check=False)
                    stop = [str(herder), "kill"]
                ok = start.returncode == 0
                results[tool] = wait_dumps(dump_dir) if ok else {}
                if not ok:
                    results[tool + "_error"] = (start.stderr or start.stdout).strip().splitlines()[-1:]
                run(stop, env, work, check=False)
            diffs = compare(results["pm2"], results["herder"], shell_env)
            for tool in ("pm2", "herder"):
                if tool + "_error" in results:
                    diffs.insert(0, f"{tool} failed to start it: {results[tool + '_error']}")
            if not diffs:
                print(f"same     {fixture} {' '.join(flags)}")
            elif fixture in EXPECTED:
                print(f"expected {fixture}: {EXPECTED[fixture]}")
                for d in diffs:
                    print(f"    {d}")
            else:
                status = 1
                print(f"DIFFERS  {fixture} {' '.join(flags)}")
                for d in diffs:
                    print(f"    {d}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
