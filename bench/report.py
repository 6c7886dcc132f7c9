#!/usr/bin/env python3
"""Write docs/BENCHMARKS.md from bench/results/*.json (no measuring here).

Usage: python3 bench/report.py [--results bench/results] [--out docs/BENCHMARKS.md]
"""

import argparse
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

# Targets from docs/DESIGN.md "Performance" and the benchmark issue.
TARGETS = {
    "gap": ("<= 0.3 ms over the bare loop", 0.3, "PM2 about 5 ms"),
    "list100": ("<= 2 ms", 2.0, "PM2 about 135 ms"),
    "rss0": ("<= 4 MB", 4.0, "PM2 58 MB"),
    "rss100": ("<= 8 MB", 8.0, "PM2 76 MB"),
    "logs": (">= 1000 MB/s", 1000.0, "PM2 about 190 MB/s"),
    "logs_time": (">= 500 MB/s", 500.0, ""),
    "logs_rss": ("< 32 MB", 32.0, ""),
    "follow": ("<= 100 ms", 100.0, ""),
    "mon_cpu": ("< 1% of a core", 1.0, ""),
    "mon_cpu_many": ("< 5% of a core", 5.0, ""),
    "mon_list_many": ("<= 20 ms", 20.0, ""),
    "mon_rss_many": ("< 32 MB", 32.0, ""),
    "cl_rps": (">= 1.0× PM2's", 1.0, ""),
    "cl_p99": ("<= PM2's", None, ""),
    "cl_spread": ("0.5×–1.5× of the fair share", (0.5, 1.5), ""),
    "cl_reload": ("0 failed requests", 0, ""),
}


def load(results, part):
    p = os.path.join(results, part + ".json")
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ms(x, nd=2):
    return "—" if x is None else ("%.*f ms" % (nd, x))


def sec(x):
    return "—" if x is None else ("%.2f s" % x)


def mb(kb):
    return "—" if kb is None else ("%.1f MB" % (kb / 1024))


def ratio(pm2, herder):
    if pm2 is None or herder is None or herder <= 0:
        return "—"
    r = pm2 / herder
    return ("%.0f×" % r) if r >= 10 else ("%.1f×" % r)


def met(value, limit):
    if value is None:
        return "not measured"
    return "met" if value <= limit else "**missed**"


def at_least(value, limit):
    if value is None:
        return "not measured"
    return "met" if value >= limit else "**missed**"


def pct(x):
    return "—" if x is None else ("%.3f %%" % x)


def below(value, limit):
    if value is None:
        return "not measured"
    return "met" if value < limit else "**missed**"


def mbps(x):
    return "—" if x is None else ("%.0f MB/s" % x)


def med(d, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def monitoring_section(w, mon):
    r = mon["results"]
    p1 = r.get("phase_apps") or {}
    p2 = r.get("phase_many")
    tools1 = p1.get("tools", {})
    w("## 6. Monitoring: what sampling costs the daemon")
    w("")
    w("`bench/monitoring.py`, measured %s%s. The daemon's own CPU time is utime + stime of its whole "
      "process (every thread, live or exited) from `/proc/<pid>/stat`, read every second over a "
      "%.0f s window in which nothing else talks to it, shown as %% of one core (the kernel counts in "
      "%s ms ticks: %.3f %% over the window). The apps are `sleep 100000`, started from config files "
      "and all listed `online` %.0f s before the window. herder measures every instance's CPU and "
      "memory every `sample_interval` (%s ms here, from `herder ping --json`). PM2's God daemon does "
      "not sample on a timer: it measures its apps (pidusage) only when a client asks (`jlist`, "
      "`monit`) and checks `max_memory_restart` on its 30 s worker tick; so its figure is what an "
      "idle PM2 costs, not the cost of sampling every second." % (
          mon["machine"]["date"], " (`--quick`: a smoke test, not a result)" if mon.get("quick") else "",
          mon["window_s"], 1000 // mon.get("clk_tck", 100), 100 / mon.get("clk_tck", 100) / mon["window_s"],
          mon["settle_s"],
          med(tools1, "herder", "sample_interval_ms") or "?"))
    w("")
    w("Commands: herder `%s`; PM2 `%s`." % (mon["commands"]["herder"], mon["commands"]["pm2"]))
    w("")
    w("| phase | tool | apps | daemon CPU, window average | busiest 10 s | daemon VmRSS (median in the window) | "
      "VmHWM | threads | load average at the window's start / end | machine busy in the window |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, ph in (("1: both tools at once", p1), ("2: one tool at a time", p2)):
        if not ph:
            continue
        for name, d in ph["tools"].items():
            if "error" in d:
                w("| %s | %s | %s | not measured: %s | | | | | | |" % (label, name, ph["apps"], d["error"]))
                continue
            win = d.get("window") or ph.get("window", {})
            dm = d.get("daemon", {})
            per10 = dm.get("cpu_pct_per_10s") or []
            w("| %s | %s | %s | %s (%.2f s of CPU in %.0f s) | %s | %s | %s | %s | %s / %s | %s %% of %s cores |" % (
                label, name, ph["apps"], pct(dm.get("cpu_pct_of_core")), dm.get("cpu_s", 0), dm.get("wall_s", 0),
                pct(max(per10)) if per10 else "—", mb(med(dm, "vmrss_kb", "median")), mb(dm.get("vmhwm_kb")),
                dm.get("threads", "—"), " ".join("%.2f" % x for x in win.get("loadavg_start", [])),
                " ".join("%.2f" % x for x in win.get("loadavg_end", [])), win.get("machine_busy_pct", "—"),
                mon["machine"].get("nproc")))
    w("")
    q = [("phase 1", p1["quiet"])] if p1.get("quiet") else []
    for name, d in (p2 or {}).get("tools", {}).items():
        if d.get("quiet"):
            q.append(("phase 2 (%s)" % name, d["quiet"]))
    if q:
        w("Waiting for a quiet machine (1-min load average under %s, at most %.0f s in all): %s." % (
            mon["quiet_load"], mon["wait_max_s"], "; ".join(
                "%s waited %.0f s, load %s%s" % (lbl, x["waited_s"], " ".join("%.2f" % v for v in x["loadavg_before"]),
                                                "" if x["quiet"] else " (**never quiet: measured anyway**)")
                for lbl, x in q)))
        w("")
    if p2:
        n = p2["apps"]
        w("### %d idle apps" % n)
        w("")
        for name, d in p2["tools"].items():
            if "error" in d:
                continue
            st = d["start"]
            w("%s: %d apps started from %d config files (`start` took %s s each, in that order), all "
              "running after %.1f s; daemon VmRSS %s / VmHWM %s right after the start, %s after the list "
              "runs; %s instances listed `online` at the end." % (
                  name, n, st["batches"], " / ".join("%.2f" % x for x in st["start_cli_s"]), st["all_running_s"],
                  mb(st.get("vmrss_kb")), mb(st.get("vmhwm_kb")), mb(med(d, "after_lists", "vmrss_kb")),
                  d.get("listed_online_after")))
            w("")
        w("List latency with %d apps, after each tool's CPU window: wall clock of one CLI call from the "
          "python harness (as in section 2), %d runs per command, interleaved with `/bin/true` (the "
          "harness's fork+exec floor, included in every figure)." % (n, mon["runs"]))
        w("")
        w("| command | median | p95 | p10 | max | output | CPU per call: CLI | CPU per call: daemon | failures |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        rows = []
        for name, d in p2["tools"].items():
            if "error" in d:
                continue
            lr = d["list"]
            for label, x in lr["results"].items():
                if label.startswith("/bin/true") and name != "herder":
                    continue
                rows.append((lr, label, x))
        for lr, label, x in rows:
            sm = x["summary"]
            sp = lr.get("cpu_per_call", {}).get(label, {})
            w("| `%s` | %s | %s | %s | %s | %s | %s | %s | %d |" % (
                lr["commands"].get(label, label), ms(sm.get("median")), ms(sm.get("p95")), ms(sm.get("p10")),
                ms(sm.get("max")), "{:,} bytes".format(x.get("output_bytes", 0)),
                ms(sp.get("cli_cpu_ms_per_call"), 1) if sp else "—",
                ms(sp.get("daemon_cpu_ms_per_call"), 1) if sp else "—", x["failures"]))
        w("")
        w("CPU per call: each list command run %d times in a row on its own; the CLI's CPU from the "
          "children's rusage, the daemon's from its utime + stime (10 ms ticks, so small values are "
          "coarse)." % mon["runs"])
        w("")
    h1 = med(tools1, "herder", "daemon", "cpu_pct_of_core")
    p1c = med(tools1, "pm2", "daemon", "cpu_pct_of_core")
    parts = ["with %s apps sampled every second, herder's daemon used %s of a core (target < 1 %%: %s; "
             "PM2 %s)" % (p1.get("apps"), pct(h1), below(h1, 1.0), pct(p1c))]
    if p2:
        hc = med(p2, "tools", "herder", "daemon", "cpu_pct_of_core")
        hl = med(p2, "tools", "herder", "list", "results", "herder list", "summary", "median")
        hr = med(p2, "tools", "herder", "peak_vmrss_kb")
        parts.append("with %d idle apps, sampling used %s of a core (target < 5 %%: %s), `herder list` "
                     "answered in %s (median; target 20 ms: %s) and the daemon's peak RSS was %s "
                     "(target < 32 MB: %s)" % (
                         p2["apps"], pct(hc), below(hc, 5.0), ms(hl), met(hl, 20.0), mb(hr),
                         below(hr / 1024 if hr is not None else None, 32.0)))
    if not p2 or "pm2" not in p2["tools"]:
        parts.append("PM2 was not run with %s apps (`--many-tools herder,pm2` adds it)" % (
            p2["apps"] if p2 else "many"))
    w("Targets (issue 6): " + "; ".join(parts) + ".")
    w("")


def times(x):
    return "—" if x is None else ("%.2f×" % x)


def spread_range(sh):
    """(min, max) ratio to the fair share over connections and requests, or None."""
    lo = [med(sh, k, "min_ratio") for k in ("conns", "reqs")]
    hi = [med(sh, k, "max_ratio") for k in ("conns", "reqs")]
    if None in lo or None in hi:
        return None
    return min(lo), max(hi)


def cluster_summary_rows(w, cl):
    tp = cl.get("throughput")
    if tp:
        s = tp["summary"]
        h, p = med(s, "herder", "rps", "median"), med(s, "pm2", "rps", "median")
        w("| cluster mode, %d instances: requests/s (`wrk -c%d`, median of %d round(s); ratio herder / PM2) | %s | %s | %s | %s | %s |" % (
            tp["instances"], cl["connections"], tp["rounds"], TARGETS["cl_rps"][0],
            "—" if h is None else "{:,.0f}".format(h), "—" if p is None else "{:,.0f}".format(p),
            ratio(h, p), at_least(h / p if h is not None and p else None, TARGETS["cl_rps"][1])))
        h, p = med(s, "herder", "p99_ms", "median"), med(s, "pm2", "p99_ms", "median")
        w("| cluster mode, %d instances: p99 latency | %s | %s | %s | %s | %s |" % (
            tp["instances"], TARGETS["cl_p99"][0], ms(h), ms(p), ratio(p, h),
            met(h, p) if p is not None else "not measured"))
    sp = cl.get("spread")
    if sp:
        lo, hi = TARGETS["cl_spread"][1]
        for phase, label in (("keepalive", "keep-alive"), ("close", "`Connection: close`")):
            cells = []
            for tool in ("herder", "pm2"):
                r = spread_range(med(sp, "tools", tool, phase))
                cells.append(r)
            h = cells[0]
            w("| cluster spread, %d instances, %s: each instance's share of connections and requests, "
              "as a multiple of the fair share (min–max) | %s | %s | %s | | %s |" % (
                  sp["instances"], label, TARGETS["cl_spread"][0],
                  *["—" if r is None else "%.2f–%.2f×" % r for r in cells],
                  "not measured" if h is None else ("met" if h[0] >= lo and h[1] <= hi else "**missed**")))
    rl = cl.get("reload")
    if rl:
        x = rl["wrk_result"]
        w("| `herder reload` ×%d under load (%d instances, `wrk -c%d`): failed requests | %s | %s of {:,} | not run "
          "(PM2's reload is not measured) | | %s |".format(x["requests"] or 0) % (
              rl["reloads"], rl["instances"], rl["connections"], TARGETS["cl_reload"][0], x["errors"],
              "met" if x["errors"] == 0 and rl["pids_changed_every_reload"] and rl["all_reloads_ok"] else "**missed**"))


def cluster_section(w, cl):
    w("## 7. Cluster mode")
    w("")
    w("`bench/cluster.py`, measured %s with node %s. The server is "
      "`bench/fixtures/cluster_server.js`: a plain `http.createServer` answering `/` with a 3-byte "
      "body, listening on `$PORT`; it counts connections and requests per process and writes them "
      "to a file on SIGUSR2 (read between runs only). Load from `%s` on the same machine (%d threads, "
      "%d connections), so wrk and the servers share the CPUs (%s cores)." % (
          cl["machine"]["date"], cl["machine"].get("node"), cl.get("wrk_version", "wrk").split(" Copyright")[0], cl["threads"],
          cl["connections"], cl["machine"].get("nproc")))
    w("")
    autogroups = cl.get("autogroups")
    if autogroups is None or autogroups.startswith("on"):
        w("Measured with the kernel's autogroups on, which gives each session an equal share of a busy "
          "CPU and so favours herder, whose instances each have a session of their own (PM2's workers "
          "share one): the ratios below overstate herder's lead. Section 7a has the same comparison "
          "with autogroups off.")
        w("")
    tp = cl.get("throughput")
    if tp:
        s = tp["summary"]
        w("### Throughput and latency")
        w("")
        w("`%s`, %d s per run after %d s of warm-up per server, %d round(s), the runners interleaved "
          "(the order rotates each round); all three servers run throughout, idle when not under "
          "load. `direct` is one node process bound to the port itself; herder and PM2 run %d "
          "instances in cluster mode (%s). Figures: median over the rounds (min–max for requests/s)." % (
              tp["wrk"], tp["duration_s"], tp["warmup_s"], tp["rounds"], tp["instances"],
              ", ".join("%s `%s`" % (k, v) for k, v in tp.get("modes", {}).items())))
        w("")
        w("| runner | command | processes | requests/s | min–max | p50 | p99 | max | non-2xx/3xx | socket errors |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, x in s.items():
            w("| %s | `%s` | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                name, tp["commands"].get(name, name), x.get("processes"),
                "{:,.0f}".format(med(x, "rps", "median")),
                "{:,.0f}–{:,.0f}".format(med(x, "rps", "min"), med(x, "rps", "max")),
                ms(med(x, "p50_ms", "median")), ms(med(x, "p99_ms", "median")), ms(med(x, "max_ms", "median")),
                x["non_2xx_3xx"], x["socket_errors"]))
        w("")
        r = tp["ratios"]
        h99, p99 = med(s, "herder", "p99_ms", "median"), med(s, "pm2", "p99_ms", "median")
        w("Requests/s: herder / PM2 %s, herder / direct %s, PM2 / direct %s. Targets: herder ≥ 1.0× "
          "PM2's requests/s (%s) with a p99 no worse than PM2's (%s vs %s: %s)." % (
              times(r.get("herder_over_pm2_rps")), times(r.get("herder_over_direct_rps")),
              times(r.get("pm2_over_direct_rps")), at_least(r.get("herder_over_pm2_rps"), 1.0),
              ms(h99), ms(p99), met(h99, p99) if p99 is not None else "not measured"))
        w("")
        levels = tp.get("paced_levels")
        if levels and len(levels) > 1:
            w("At equal request rates: `wrk` with a script whose `delay()` makes each connection wait "
              "after each answer (%s ms), so that every runner gets the same offered load and the "
              "latencies compare at the same rate; the shorter the wait, the higher the rate (1 ms "
              "is near the slowest runner's capacity). Median over the rounds." % (
                  ", ".join(str(l["pace_ms"]) for l in levels)))
            w("")
            w("| wait | runner | requests/s | p50 | p99 | errors |")
            w("| --- | --- | --- | --- | --- | --- |")
            for l in levels:
                for name, x in l["summary"].items():
                    w("| %d ms | %s | %s | %s | %s | %s |" % (
                        l["pace_ms"], name, "{:,.0f}".format(med(x, "rps", "median")),
                        ms(med(x, "p50_ms", "median")), ms(med(x, "p99_ms", "median")), x["errors"]))
            w("")
            for l in levels:
                ps = l["summary"]
                hp, pp = med(ps, "herder", "p99_ms", "median"), med(ps, "pm2", "p99_ms", "median")
                w("- %d ms wait: herder's p99 %s against PM2's %s: %s." % (
                    l["pace_ms"], ms(hp), ms(pp), met(hp, pp) if pp is not None else "not measured"))
            w("")
        pc = tp.get("paced") if not (levels and len(levels) > 1) else None
        if pc:
            ps = pc["summary"]
            w("At one request rate: `%s`, where `paced.lua` makes each connection wait %d ms after "
              "each answer, so that every runner gets the same offered load, well under its "
              "capacity, and the latencies compare at the same rate. Median over the rounds." % (
                  pc["wrk"], pc["pace_ms"]))
            w("")
            w("| runner | requests/s | p50 | p99 | errors |")
            w("| --- | --- | --- | --- | --- |")
            for name, x in ps.items():
                w("| %s | %s | %s | %s | %s |" % (name, "{:,.0f}".format(med(x, "rps", "median")),
                                                   ms(med(x, "p50_ms", "median")), ms(med(x, "p99_ms", "median")),
                                                   x["errors"]))
            w("")
            hp, pp = med(ps, "herder", "p99_ms", "median"), med(ps, "pm2", "p99_ms", "median")
            w("At the same rate, herder's p99 %s against PM2's %s: %s." % (
                ms(hp), ms(pp), met(hp, pp) if pp is not None else "not measured"))
            w("")
    sp = cl.get("spread")
    if sp:
        lo, hi = sp["target_ratio"]
        w("### Spread across instances")
        w("")
        w("%d instances per tool, %d s per phase: keep-alive (`%s`: the %d connections are opened at "
          "the start and kept) and `Connection: close` (`%s`: a new connection per request). Each "
          "instance's connections and requests during the phase (deltas of its own counters), and "
          "the ratio of each to the fair share (the phase's total / %d). wrk opens one connection "
          "more than `-c` (a single node process counts 2 for `-c1` too), so the keep-alive phase "
          "counts %d connections." % (
              sp["instances"], sp["duration_s"], sp["wrk"]["keepalive"], sp["connections"],
              sp["wrk"]["close"], sp["instances"], sp["connections"] + 1))
        w("")
        w("| tool | phase | requests/s | connections per instance | ratio min–max | requests per instance | "
          "ratio min–max | within %.1f×–%.1f× | wrk errors |" % (lo, hi))
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for tool, d in sp["tools"].items():
            for phase, label in (("keepalive", "keep-alive"), ("close", "`Connection: close`")):
                x = d.get(phase)
                if not x:
                    continue
                w("| %s | %s | %s | %s | %.2f–%.2f× | %s | %.2f–%.2f× | %s | %s |" % (
                    tool, label, "{:,.0f}".format(x["wrk"]["rps"]),
                    " / ".join(str(v["conns"]) for v in x["per_instance"]),
                    x["conns"]["min_ratio"], x["conns"]["max_ratio"],
                    " / ".join("{:,}".format(v["reqs"]) for v in x["per_instance"]),
                    x["reqs"]["min_ratio"], x["reqs"]["max_ratio"],
                    "yes" if x["within_target"] else "**no**", x["wrk"]["errors"]))
        w("")
        w("Target: every herder instance within %.1f×–%.1f× of its fair share, for connections and "
          "requests, in both phases: %s." % (
              lo, hi, "met" if all(med(sp, "tools", "herder", ph, "within_target") for ph in ("keepalive", "close"))
              else ("not measured" if "herder" not in sp["tools"] else "**missed**")))
        w("")
    rl = cl.get("reload")
    if rl:
        x = rl["wrk_result"]
        se = x["socket_errors"]
        w("### Reload under load")
        w("")
        w("herder only: `%s`, then `%s` under `%s`, started 1 s before the first reload and stopped "
          "once the %d reloads were done (run one after the other) and at least %d s had passed. "
          "After each reload the instances' pids are read from `herder list --json`." % (
              rl["command"], rl["reload_command"], rl["wrk"], rl["reloads"], rl["min_load_s"]))
        w("")
        w("| reloads | each reload (s) | load | requests | requests/s | p50 | p99 | max | non-2xx/3xx | "
          "socket errors (connect / read / write / timeout) | every pid changed at every reload |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        w("| %d%s | %s | %.1f s | {:,} | {:,.0f} | %s | %s | %s | %d | %d / %d / %d / %d | %s |".format(
            x["requests"] or 0, x["rps"] or 0) % (
            rl["reloads"], "" if rl["all_reloads_ok"] else " (**some failed**)",
            " / ".join("%.1f" % r["seconds"] for r in rl["per_reload"]), rl["load_s"],
            ms(x["p50_ms"]), ms(x["p99_ms"]), ms(x["max_ms"]), x["non_2xx_3xx"],
            se["connect"], se["read"], se["write"], se["timeout"],
            "yes" if rl["pids_changed_every_reload"] else "**no**: " + "; ".join(
                "instance %s: %d changes" % (i, v["changes"]) for i, v in rl["per_index"].items())))
        w("")
        w("Target: zero failed requests (non-2xx and socket errors) and every instance replaced at "
          "every reload: %s." % (
              "met" if x["errors"] == 0 and rl["pids_changed_every_reload"] and rl["all_reloads_ok"]
              else "**missed**"))
        w("")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default=c.RESULTS_DIR)
    ap.add_argument("--out", default=os.path.join(c.ROOT, "docs", "BENCHMARKS.md"))
    args = ap.parse_args()

    gap = load(args.results, "restart_gap")
    lst = load(args.results, "list_latency")
    mem = load(args.results, "memory")
    ss = load(args.results, "start_stop")
    lt = load(args.results, "logs_throughput")
    lf = load(args.results, "logs_follow_latency")
    ll = load(args.results, "logs_lines")
    mon = load(args.results, "monitoring")
    cl = load(args.results, "cluster")
    parts = [p for p in (gap, lst, mem, ss, lt, lf, ll, mon, cl) if p]
    if not parts:
        sys.exit("no results in %s; run bench/run.sh first" % args.results)
    machine = parts[0]["machine"]
    dates = sorted({p["machine"]["date"] for p in parts})

    L = []
    w = L.append
    w("# Benchmarks: herder vs PM2")
    w("")
    w("Generated by `bench/run.sh` (raw results: `bench/results/*.json`; how to run: "
      "`bench/README.md`). Every figure below comes from one run in which herder and PM2 "
      "were measured side by side on the same machine, interleaved (rounds alternate which "
      "tool goes first). Figures are medians; a ratio is PM2's median divided by herder's "
      "(how many times faster or smaller herder is; below 1, herder is slower). The machine is a shared, noisy 2-core VM: "
      "compare the two columns of one run, not figures across runs.")
    w("")
    w("## Machine")
    w("")
    w("| | |")
    w("| --- | --- |")
    w("| date | %s |" % ", ".join(dates))
    w("| CPU | %s × %s |" % (machine.get("nproc"), machine.get("cpu")))
    w("| memory | %s MB |" % machine.get("mem_total_mb"))
    w("| kernel | %s |" % machine.get("kernel"))
    w("| OS | %s |" % machine.get("os"))
    w("| load average at start | %s |" % " ".join(machine.get("loadavg_at_start", [])))
    w("| herder | %s (`cargo build --release`; %s) |" % (machine.get("herder"), machine.get("herder_build") or "?"))
    w("| PM2 | %s (`npm install pm2` into a temporary folder) |" % machine.get("pm2"))
    w("| node | %s |" % machine.get("node"))
    w("| python3 (runs the fixtures, all tools) | %s |" % machine.get("python"))
    w("")

    # ---------------------------------------------------------------- summary
    w("## Summary")
    w("")
    w("| figure | target (herder) | herder | PM2 | PM2 / herder | target |")
    w("| --- | --- | --- | --- | --- | --- |")
    if gap:
        s = gap["summary"]
        he = med(s, "herder", "excess_over_bare_ms")
        pe = med(s, "pm2", "excess_over_bare_ms")
        w("| restart gap, excess over a bare shell loop (median) | %s | %s | %s | %s | %s |" % (
            TARGETS["gap"][0], ms(he), ms(pe), ratio(pe, he), met(he, TARGETS["gap"][1])))
        kern = gap.get("kernel_exit_to_exec")
        if kern:
            hk = med(kern, "herder", "excess_over_bare_ms")
            pk = med(kern, "pm2", "excess_over_bare_ms")
            w("| restart gap, kernel exit→exec, excess over the bare loop (median) | %s | %s | %s | %s | %s |" % (
                TARGETS["gap"][0], ms(hk, 3), ms(pk, 3), ratio(pk, hk), met(hk, TARGETS["gap"][1])))
    if lst:
        n = str(lst["apps"])
        for apps, key in (("0", None), (n, "list100")):
            ph = lst["phases"].get(apps, {})
            h = med(ph, "herder list", "summary", "median")
            p = med(ph, "pm2 jlist", "summary", "median")
            w("| `herder list` vs `pm2 jlist`, %s apps | %s | %s | %s | %s | %s |" % (
                apps, TARGETS["list100"][0] if key else "", ms(h), ms(p), ratio(p, h),
                met(h, TARGETS["list100"][1]) if key else ""))
    if mem:
        r = mem["results"]
        for when, key, label in (("idle", "rss0", "daemon RSS, 0 apps"),
                                 ("apps", "rss100", "daemon RSS, %d apps" % mem["apps"])):
            h = med(r, "herder", when, "vmrss_kb")
            p = med(r, "pm2", when, "vmrss_kb")
            w("| %s | %s | %s | %s | %s | %s |" % (
                label, TARGETS[key][0], mb(h), mb(p), ratio(p, h),
                met(h / 1024 if h is not None else None, TARGETS[key][1])))
    if ss:
        s = ss["summary"]
        for what, label in (("start_s", "start %d apps (until all run)" % ss["apps"]),
                            ("stop_s", "`stop all` with %d apps (until all exited)" % ss["apps"])):
            h = med(s, "herder", what, "median")
            p = med(s, "pm2", what, "median")
            w("| %s | seconds, not minutes | %s | %s | %s | |" % (label, sec(h), sec(p), ratio(p, h)))
    if lt:
        s = lt["summary"]
        for runner, key, label in (("", "logs", "log throughput, %d MB of 100-byte lines" % lt["mb"]),
                                   ("-time", "logs_time", "log throughput with timestamps")):
            hs, ps = med(s, "herder" + runner, "seconds", "median"), med(s, "pm2" + runner, "seconds", "median")
            h, p = med(s, "herder" + runner, "mb_per_s", "median"), med(s, "pm2" + runner, "mb_per_s", "median")
            why = med(s, "herder" + runner, "skipped")
            w("| %s | %s | %s | %s | %s | %s |" % (
                label, TARGETS[key][0], mbps(h) if not why else "not run (%s)" % why, mbps(p),
                ratio(ps, hs), at_least(h, TARGETS[key][1])))
        hs = [x for x in (med(s, "herder", "max_vmrss_kb"), med(s, "herder-time", "max_vmrss_kb")) if x]
        ps = [x for x in (med(s, "pm2", "max_vmrss_kb"), med(s, "pm2-time", "max_vmrss_kb")) if x]
        h, p = (max(hs) if hs else None), (max(ps) if ps else None)
        w("| daemon VmRSS during the log runs (max) | %s | %s | %s | %s | %s |" % (
            TARGETS["logs_rss"][0], mb(h), mb(p), ratio(p, h),
            met(h / 1024 if h is not None else None, TARGETS["logs_rss"][1] - 1e-9)))
    if lf:
        r = lf["results"]
        h, p = med(r, "herder", "latency_ms", "max"), med(r, "pm2", "latency_ms", "max")
        w("| `logs` follow latency, two apps (max of %s lines) | %s | %s | %s | %s | %s |" % (
            med(r, "herder", "latency_ms", "n"), TARGETS["follow"][0], ms(h), ms(p), ratio(p, h),
            met(h, TARGETS["follow"][1])))
    if ll:
        ok = ll["all_lines_once_in_order"] and ll["rotation_applied"]
        w("| every line kept, %s lines per stream, `log_max_size = \"%s\"` | all, once, in order | %s | | | %s |" % (
            "{:,}".format(ll["lines_per_stream"]), ll["log_max_size"],
            "yes" if ok else ("rotation not applied yet" if not ll["rotation_applied"] else "**no**"),
            "met" if ok else ("not measured" if not ll["rotation_applied"] else "**missed**")))
    if mon:
        r = mon["results"]
        p1 = r.get("phase_apps") or {}
        h = med(p1, "tools", "herder", "daemon", "cpu_pct_of_core")
        p = med(p1, "tools", "pm2", "daemon", "cpu_pct_of_core")
        w("| daemon CPU, %s idle apps, %.0f s average (herder samples every %s ms) | %s | %s | %s | %s | %s |" % (
            p1.get("apps"), mon["window_s"], med(p1, "tools", "herder", "sample_interval_ms") or "?",
            TARGETS["mon_cpu"][0], pct(h), pct(p), ratio(p, h), below(h, TARGETS["mon_cpu"][1])))
        p2 = r.get("phase_many")
        if p2:
            n = p2["apps"]
            h = med(p2, "tools", "herder", "daemon", "cpu_pct_of_core")
            p = med(p2, "tools", "pm2", "daemon", "cpu_pct_of_core")
            w("| daemon CPU, %d idle apps (the cost of sampling them) | %s | %s | %s | %s | %s |" % (
                n, TARGETS["mon_cpu_many"][0], pct(h), pct(p) if p is not None else "not run",
                ratio(p, h), below(h, TARGETS["mon_cpu_many"][1])))
            lr = med(p2, "tools", "herder", "list", "results") or {}
            h = med(lr, "herder list", "summary", "median")
            p = med(p2, "tools", "pm2", "list", "results", "pm2 jlist", "summary", "median")
            w("| `herder list`, %d apps (median; p95 %s) | %s | %s | %s | %s | %s |" % (
                n, ms(med(lr, "herder list", "summary", "p95")), TARGETS["mon_list_many"][0], ms(h),
                ms(p) if p is not None else "not run", ratio(p, h), met(h, TARGETS["mon_list_many"][1])))
            h = med(p2, "tools", "herder", "peak_vmrss_kb")
            p = med(p2, "tools", "pm2", "peak_vmrss_kb")
            w("| daemon RSS, %d apps (peak: VmHWM, start-up included) | %s | %s | %s | %s | %s |" % (
                n, TARGETS["mon_rss_many"][0], mb(h), mb(p) if p is not None else "not run", ratio(p, h),
                below(h / 1024 if h is not None else None, TARGETS["mon_rss_many"][1])))
    if cl:
        cluster_summary_rows(w, cl)
    w("")

    # ---------------------------------------------------------------- restart gap
    if gap:
        s = gap["summary"]
        w("## 1. Restart gap")
        w("")
        w("`bench/restart_gap.py`, measured %s. `bench/fixtures/flap.py` appends `S <time_ns>` "
          "when it starts and `E <time_ns>` just before it exits (it lives 50 ms, then exits "
          "with code 1); gap = next `S` − previous `E`. It includes the exit, the supervisor "
          "noticing it, fork+exec and python3's start-up, so the bare shell loop running the "
          "same script is the floor and the excess over it is the supervisor's cost. "
          "%d rounds × %d restarts per runner, the runners interleaved round by round (the order "
          "rotates each round)." % (
              gap["machine"]["date"], gap["rounds"], gap["restarts_per_round"]))
        w("")
        w("| runner | command | restarts | median gap | p10 | p90 | excess over bare (median) | "
          "excess, median of per-round differences | excess at p10 |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for k in gap["commands"]:
            x = s.get(k, {})
            w("| %s | `%s` | %s | %s | %s | %s | %s | %s | %s |" % (
                k, gap["commands"][k], x.get("n", 0), ms(x.get("median")), ms(x.get("p10")),
                ms(x.get("p90")), ms(x.get("excess_over_bare_ms")) if k != "bare" else "—",
                ms(x.get("excess_median_of_rounds_ms")) if k != "bare" else "—",
                ms(x.get("excess_p10_ms")) if k != "bare" else "—"))
        w("")
        w("The headline is the difference of medians. Noise from other work on the machine only "
          "ever adds time, so the difference of the 10th percentiles (last column) is the least "
          "noisy view of the fixed cost per restart; when the columns disagree by more than the "
          "target, this run cannot resolve the target.")
        w("")
        he, pe = med(s, "herder", "excess_over_bare_ms"), med(s, "pm2", "excess_over_bare_ms")
        w("Target: herder ≤ 0.3 ms over the bare loop (PM2 about 5 ms). This run: herder %s, "
          "PM2 %s over the bare loop (%s); herder's target is %s." % (
              ms(he), ms(pe), "PM2 / herder " + ratio(pe, he), met(he, 0.3)))
        ne = med(s, "herder-nocg", "excess_over_bare_ms")
        if ne is not None:
            w("")
            w("`herder-nocg` is a diagnostic runner, not a product figure: the same herder with "
              "`HERDER_NO_CGROUP=1` in its daemon's environment, so apps are not put in a cgroup. "
              "The difference between its excess (%s) and herder's (%s) is what joining the "
              "instance's cgroup costs on every start; a difference within this run's noise "
              "(compare the per-round and p10 columns, and the kernel-side view) means no "
              "measurable cost." % (ms(ne), ms(he)))
        kern = gap.get("kernel_exit_to_exec")
        if kern:
            w("")
            w("Kernel-side view of the same restarts, free of python3's start-up noise: `perf record "
              "-a -e sched:sched_process_exit,sched:sched_process_exec` ran during every round; gap = "
              "the next flap process's first `exec` − the previous one's `exit` (pids from the flap "
              "file). This is the supervisor's reaction plus fork+exec, nothing else.")
            w("")
            w("| runner | exits→exec measured | median | p10 | p90 | excess over bare (median) | excess at p10 |")
            w("| --- | --- | --- | --- | --- | --- | --- |")
            for k in gap["commands"]:
                x = kern.get(k, {})
                w("| %s | %s | %s | %s | %s | %s | %s |" % (
                    k, x.get("n", 0), ms(x.get("median"), 3), ms(x.get("p10"), 3), ms(x.get("p90"), 3),
                    ms(x.get("excess_over_bare_ms"), 3) if k != "bare" else "—",
                    ms(x.get("excess_p10_ms"), 3) if k != "bare" else "—"))
        st = {r["tool"]: r.get("statuses_after") for r in gap["per_round"] if r.get("statuses_after")}
        if st:
            w("")
            w("Status of the flapping app after each tool's last round (it must never reach "
              "`errored`): %s." % ", ".join("%s `%s`" % (k, "/".join(map(str, v))) for k, v in st.items()))
        w("")

    # ---------------------------------------------------------------- list
    if lst:
        w("## 2. `list` latency")
        w("")
        w("`bench/list_latency.py`, measured %s. Wall clock of one CLI call from a python "
          "harness (posix_spawn + waitpid, output to /dev/null), %d runs per command, all "
          "commands interleaved; the daemons were already running. `/bin/true` timed the "
          "same way is the harness's floor (fork+exec), included in every figure. The %d apps "
          "are `sleep 100000`." % (lst["machine"]["date"], lst["runs"], lst["apps"]))
        w("")
        w("| command | apps | median | p10 | p90 | median minus the `/bin/true` floor | failures |")
        w("| --- | --- | --- | --- | --- | --- | --- |")
        for apps, res in lst["phases"].items():
            floor = med(res, "/bin/true (harness floor)", "summary", "median")
            for label, r in res.items():
                x = r["summary"]
                net = x.get("median") - floor if floor is not None and not label.startswith("/bin/true") else None
                w("| `%s` | %s | %s | %s | %s | %s | %d |" % (
                    lst["commands"].get(label, label), apps, ms(x.get("median")),
                    ms(x.get("p10")), ms(x.get("p90")), ms(net), r["failures"]))
        w("")
        n = str(lst["apps"])
        h = med(lst["phases"], n, "herder list", "summary", "median")
        p = med(lst["phases"], n, "pm2 jlist", "summary", "median")
        pl = med(lst["phases"], n, "pm2 ls", "summary", "median")
        w("With %s apps: `herder list` %s, `pm2 jlist` %s (%s), `pm2 ls` %s (%s). "
          "Target: herder ≤ 2 ms (PM2 about 135 ms): %s." % (
              n, ms(h), ms(p), ratio(p, h), ms(pl), ratio(pl, h), met(h, 2.0)))
        w("")

    # ---------------------------------------------------------------- memory
    if mem:
        r = mem["results"]
        w("## 3. Daemon memory")
        w("")
        w("`bench/memory.py`, measured %s. VmRSS of the daemon process only (herder: "
          "`$HERDER_HOME/daemon.pid`; PM2: the God daemon, `$PM2_HOME/pm2.pid`), median of 5 "
          "samples taken %.0f s after the daemon settled; anon / file are `RssAnon` / `RssFile` "
          "(file-backed pages are mostly the program's own code, shared and reclaimable); Pss from `smaps_rollup`. "
          "The %d apps are `sleep 100000`, started from one config file." % (
              mem["machine"]["date"], mem["settle_s"], mem["apps"]))
        w("")
        w("| state | herder VmRSS | PM2 VmRSS | PM2 / herder | herder anon / file | PM2 anon / file | herder Pss | PM2 Pss | herder threads | PM2 threads |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for when, label in (("idle", "idle, 0 apps"), ("apps", "%d idle apps" % mem["apps"]),
                            ("after_delete", "after `stop all` + `delete all`")):
            h, p = med(r, "herder", when), med(r, "pm2", when)
            w("| %s | %s | %s | %s | %s / %s | %s / %s | %s | %s | %s | %s |" % (
                label, mb(med(h, "vmrss_kb")), mb(med(p, "vmrss_kb")),
                ratio(med(p, "vmrss_kb"), med(h, "vmrss_kb")),
                mb(med(h, "rss_anon_kb")), mb(med(h, "rss_file_kb")),
                mb(med(p, "rss_anon_kb")), mb(med(p, "rss_file_kb")),
                mb(med(h, "pss_kb")), mb(med(p, "pss_kb")),
                med(h, "threads") or "—", med(p, "threads") or "—"))
        w("")
        w("Commands: herder `%s`; PM2 `%s`." % (mem["commands"]["herder"], mem["commands"]["pm2"]))
        w("")
        h0, h1 = med(r, "herder", "idle", "vmrss_kb"), med(r, "herder", "apps", "vmrss_kb")
        w("Targets: herder ≤ 4 MB idle (%s) and ≤ 8 MB with 100 apps (%s); PM2 58 / 76 MB." % (
            met(h0 / 1024 if h0 else None, 4.0), met(h1 / 1024 if h1 else None, 8.0)))
        w("")

    # ---------------------------------------------------------------- start/stop
    if ss:
        s = ss["summary"]
        w("## 4. Start and stop %d apps" % ss["apps"])
        w("")
        w("`bench/start_stop.py`, measured %s, %d rounds per tool (alternating which tool goes "
          "first), daemons already running. Start: from the call until the CLI returned and all "
          "%d `sleep` processes ran under the daemon (/proc polled every 2 ms). Stop: until the "
          "CLI returned and no app process was left. The tool's own list was then polled until "
          "it showed all apps `online` (a cross-check; includes the polling `list` calls)." % (
              ss["machine"]["date"], ss["rounds"], ss["apps"]))
        w("")
        hc, pc = ss["commands"]["herder"], ss["commands"]["pm2"]
        w("Commands — herder: `%s`, `%s`, `%s`; PM2: `%s`, `%s`, `%s`." % (
            hc["start"], hc["stop"], hc["delete"], pc["start"], pc["stop"], pc["delete"]))
        w("")
        w("| step | herder | PM2 | PM2 / herder |")
        w("| --- | --- | --- | --- |")
        rows = (("start, until all run", "start_s"),
                ("start, CLI wall clock only", "start_cli_s"),
                ("start, until its own list shows all online", "start_listed_online_s"),
                ("`stop all`, until all exited", "stop_s"),
                ("`stop all`, CLI wall clock only", "stop_cli_s"),
                ("`delete all` (stopped apps), CLI", "delete_cli_s"))
        for label, key in rows:
            h, p = med(s, "herder", key, "median"), med(s, "pm2", key, "median")
            w("| %s | %s | %s | %s |" % (label, sec(h), sec(p), ratio(p, h)))
        w("")

    # ---------------------------------------------------------------- logs
    if lt or lf or ll:
        w("## 5. Logs")
        w("")
        first = lt or lf or ll
        w("herder measured: %s. Load average when each part started: %s. Other work (fuzzers, "
          "builds) ran on the machine meanwhile." % (
              first["machine"].get("herder_build") or "?",
              "; ".join("%s %s" % (name, " ".join(x["machine"].get("loadavg_at_start", [])))
                        for name, x in (("throughput", lt), ("follow latency", lf), ("lines", ll)) if x)))
        w("")
    if lt:
        s = lt["summary"]
        w("### Throughput")
        w("")
        w("`bench/logs_throughput.py`, measured %s. `bench/fixtures/blast.py` writes %d MB (10^6 bytes) "
          "of 100-byte lines to stdout in 1 MB blocks, as fast as the reader takes them. For the "
          "supervisors: from the fixture's first byte (its own stamp, so its start-up is not "
          "counted) until the log file ends with its last line (polled every 2 ms). `direct` is the "
          "same generator with stdout redirected to a file: the floor. %d rounds, runners "
          "interleaved; between runs, log files removed, `sync`, and a wait until both daemons were "
          "idle (PM2's keeps working for seconds after its file is complete). herder runs with "
          "its defaults, so its file rotates at 100M during the run (bytes counted across the "
          "rotated files). Daemon VmRSS sampled every 5 ms during each run." % (
              lt["machine"]["date"], lt["mb"], lt["rounds"]))
        w("")
        w("| runner | command | median | p10 | p90 | seconds (median) | all bytes in the file | daemon VmRSS max | daemon VmHWM |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for k, x in s.items():
            if "mb_per_s" not in x:
                w("| %s | `%s` | not run: %s | | | | | | |" % (k, lt["commands"].get(k, k), x.get("skipped")))
                continue
            lost = x.get("incomplete_runs", 0)
            w("| %s | `%s` | %s | %s | %s | %s | %s | %s | %s |" % (
                k, lt["commands"].get(k, k), mbps(med(x, "mb_per_s", "median")), mbps(med(x, "mb_per_s", "p10")),
                mbps(med(x, "mb_per_s", "p90")), sec(med(x, "seconds", "median")),
                "yes" if not lost else "**no: lines lost in %d of %d runs**" % (lost, x.get("runs", 0)),
                mb(x.get("max_vmrss_kb")), mb(x.get("vmhwm_kb"))))
        w("")
        h = med(s, "herder", "mb_per_s", "median")
        ht = med(s, "herder-time", "mb_per_s", "median")
        hr = max([x for x in (med(s, "herder", "max_vmrss_kb"), med(s, "herder-time", "max_vmrss_kb")) if x] or [0]) or None
        w("Targets: herder ≥ 1 GB/s raw (%s: %s), ≥ 500 MB/s with timestamps (%s), daemon RSS under "
          "32 MB throughout (%s); the issue's reference figures are about 1.7 GB/s for a direct write "
          "and about 190 MB/s for PM2." % (
              mbps(h), at_least(h, 1000.0),
              ("%s: %s" % (mbps(ht), at_least(ht, 500.0))) if ht else "not measured: " + str(
                  med(s, "herder-time", "skipped")),
              met(hr / 1024 if hr else None, 32.0 - 1e-9)))
        w("")
    if lf:
        r = lf["results"]
        w("### Follow latency")
        w("")
        w("`bench/logs_follow_latency.py`, measured %s. Two apps in one namespace print a line every "
          "%d ms carrying the wall clock of its write (`bench/fixtures/clock.py`); `logs <namespace> "
          "--lines 0` runs with stdout on a pipe read by the script, which notes when each line "
          "arrives. Latency = arrival − the time in the line. %d lines per app after a warm-up; "
          "every line of each app must arrive once and in order." % (
              lf["machine"]["date"], lf["interval_ms"], lf["lines_per_app"]))
        w("")
        w("| tool | command | lines | median | p90 | p99 | max | lines missing or out of order |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for k, x in r.items():
            sm = x["latency_ms"]
            w("| %s | `%s` | %s | %s | %s | %s | %s | %s |" % (
                k, lf["commands"].get(k, k), sm.get("n"), ms(sm.get("median")), ms(sm.get("p90")),
                ms(x.get("p99_ms")), ms(sm.get("max")), x["n_order_problems"]))
        w("")
        w("Target: each new line shown within 100 ms: %s." % met(med(r, "herder", "latency_ms", "max"), 100.0))
        w("")
    if ll:
        w("### Every line kept under rotation")
        w("")
        w("`bench/logs_lines.py`, measured %s. `bench/fixtures/numbered.py` writes %s numbered "
          "lines to stdout and as many to stderr as fast as it can (64 KB batches cut at odd "
          "places, line lengths varying with the number), with `log_max_size = \"%s\"`, "
          "`log_retain = 1000000`, `log_compress = %s`. Afterwards every file of each stream is "
          "read oldest first and every line compared with the one expected." % (
              ll["machine"]["date"], "{:,}".format(ll["lines_per_stream"]), ll["log_max_size"],
              "true" if ll["compress"] else "false"))
        w("")
        w("| stream | lines found | rotated files | bytes | problems |")
        w("| --- | --- | --- | --- | --- |")
        for k, x in ll["streams"].items():
            w("| %s | %s | %s | %s | %s |" % (k, "{:,}".format(x["lines"]), x["rotated_files"],
                                              "{:,}".format(x["bytes"]),
                                              "; ".join(x["problems"]) or "none: every line once, whole, in order"))
        w("")
        if not ll["rotation_applied"]:
            w("**Rotation was not applied in this run**: the herder measured did not act on "
              "`log_max_size` yet (%s). The lines were checked in the single current files only." % (
                  "; ".join(ll.get("config_warnings", [])) or "no rotated file appeared"))
        else:
            w("Seconds from `start` until the app had exited and its files held everything: %.1f s." %
              ll["seconds_until_done"])
        w("")

    if mon:
        monitoring_section(w, mon)

    if cl:
        cluster_section(w, cl)

    # Sections measured by scripts outside bench/run.sh (balancer, hardening, dashboard) are
    # written by hand in bench/sections/NN-name.md and copied here in the order of their names.
    sections = os.path.join(c.BENCH_DIR, "sections")
    for name in sorted(os.listdir(sections)) if os.path.isdir(sections) else []:
        if name.endswith(".md"):
            with open(os.path.join(sections, name)) as f:
                w(f.read().rstrip("\n"))
            w("")

    notes = os.path.join(c.BENCH_DIR, "notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            text = f.read().strip()
        if text:
            w("## Observations")
            w("")
            w(text)
            w("")

    w("## Reproduce")
    w("")
    w("```sh")
    w("bench/run.sh            # builds herder, installs PM2 into /tmp/herder-bench/pm2, runs all, writes this file")
    w("python3 bench/restart_gap.py && python3 bench/report.py   # one part, then the report")
    w("python3 bench/balancer.py --herder target/release/herder   # section 8 (needs wrk, nginx, libnginx-mod-stream, socat from apt)")
    w("python3 bench/chaos.py --rounds 400 && python3 bench/soak.py --minutes 30   # section 9")
    w("python3 bench/web.py   # section 10")
    w("```")
    w("")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(L))
    c.log("wrote", os.path.relpath(args.out, c.ROOT))


if __name__ == "__main__":
    main()
