#!/usr/bin/env python3
"""The web dashboard's cost in daemon memory, two builds side by side (before and after the
dashboard was added).

For each round and each build (the order alternates by round), new daemons (`herder ping` in
a HERDER_HOME of their own), the binary dropped from the page cache first (as in
bench/http_stack.py), each sampled after --settle seconds (VmRSS, RssAnon, RssFile, Pss,
threads; median of 5 samples 0.2 s apart):
  off:       the daemon alone, the dashboard off (never turned on);
  app:       then one app (`node bench/fixtures/cluster_server.js`, fork mode), online;
  page:      after build only, in another new daemon: the same app, `herder web --listen
             127.0.0.1:0`, and what one open page asks of it: the page and its assets, the
             app's history, and its three streams held open (/api/stats, /api/events, the
             app's /api/apps/<app>/logs), each having delivered an event.
Figures: the median over the --daemons daemons of each build and state.

Usage: python3 bench/web.py --before BIN --after BIN [--daemons 5 --settle 2] [--out FILE]
"""

import argparse
import json
import os
import socket
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402
from cluster import free_port  # noqa: E402
from http_stack import Daemon, start_app  # noqa: E402


def web_on(d):
    _, out, _, _ = d.run("web", "--listen", "127.0.0.1:0", timeout=30)
    addr = out.splitlines()[0].split("http://", 1)[1].rstrip("/")
    with open(os.path.join(d.home, "web.token")) as f:
        token = f.read().strip()
    return addr, token


def request(addr, token, path):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n" % (path, addr, token)).encode())
    return s


def read_all(s):
    s.sendall(b"")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    while length and len(body) < length[0]:
        body += s.recv(65536)
    s.close()
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))


def open_page(addr, token, app):
    for path in ("/", "/app.js", "/app.css", "/api/apps/%s/history" % app):
        read_all(request(addr, token, path))
    streams = []
    for path in ("/api/stats", "/api/events", "/api/apps/%s/logs" % app):
        s = request(addr, token, path)
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(65536)
        if not got.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(got.decode(errors="replace"))
        streams.append(s)
    # /api/stats delivers its first figures at once.
    got = b""
    while b"event: stats" not in got:
        got += streams[0].recv(65536)
    return streams


def one_round(ws, label, bin, k, args, page):
    out = {}
    c.evict(bin)
    d = Daemon(ws, "%s-%d-plain" % (label, k), bin)
    d.start_daemon()
    time.sleep(args.settle)
    out["off"] = c.rss_sample(d.pid())
    start_app(d, ws, free_port(), probe=False)
    time.sleep(args.settle)
    out["app"] = c.rss_sample(d.pid())
    d.shutdown()
    if page:
        c.evict(bin)
        d = Daemon(ws, "%s-%d-page" % (label, k), bin)
        d.start_daemon()
        start_app(d, ws, free_port(), probe=False)
        addr, token = web_on(d)
        streams = open_page(addr, token, "web")
        time.sleep(args.settle)
        out["page"] = c.rss_sample(d.pid())
        for s in streams:
            s.close()
        d.shutdown()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="herder binary without the dashboard")
    ap.add_argument("--after", required=True, help="herder binary with it")
    ap.add_argument("--daemons", type=int, default=5)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--out")
    args = ap.parse_args()
    c.install_cleanup_handlers()
    ws = c.Workspace("web")
    builds = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    per = {label: {} for label in builds}
    try:
        for k in range(args.daemons):
            order = list(builds) if k % 2 == 0 else list(reversed(builds))
            for label in order:
                r = one_round(ws, label, builds[label], k, args, page=(label == "after"))
                for state, sample in r.items():
                    per[label].setdefault(state, []).append(sample)
                c.log("%s #%d: %s" % (label, k, ", ".join("%s %d kB" % (s, v["vmrss_kb"]) for s, v in r.items())))
    finally:
        c.run_cleanups()
    summary = {label: {state: {key: statistics.median(x[key] for x in xs)
                               for key in ("vmrss_kb", "rss_anon_kb", "rss_file_kb", "pss_kb", "threads")
                               if all(x.get(key) is not None for x in xs)}
                       for state, xs in states.items()}
               for label, states in per.items()}
    result = {"bench": "web", "daemons": args.daemons, "settle_s": args.settle, "builds": builds,
              "summary": summary, "samples": per}
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    for label, states in summary.items():
        print(label, ", ".join("%s %.0f kB" % (s, v["vmrss_kb"]) for s, v in states.items()))


if __name__ == "__main__":
    main()
