#!/usr/bin/env python3
"""Bulk bytes through the balancer's tcp mode: two herder builds side by side (before: bytes
copied through user space; after: spliced in the kernel), and the backend direct.

The backend (one instance) reads each connection to its end and answers with the count it
read. The client sends --mb MiB in 256 KiB writes, shuts its writing, and waits for the count:
throughput is MiB over that time. The daemon's CPU (utime+stime from /proc/<pid>/stat) over
the transfer, per GiB, says what the copy costs. Runs alternate by round; figures are
medians over --rounds.

Usage: python3 bench/tcp_bulk.py --before BIN --after BIN [--mb 1024 --rounds 5] [--out FILE]
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

SINK = r'''import os, socket, threading
s = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
def serve(c):
    n = 0
    while True:
        chunk = c.recv(1 << 18)
        if not chunk:
            break
        n += len(chunk)
    c.sendall(b"%d\n" % n)
    c.close()
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
'''


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def push(port, mb):
    chunk = b"\xa5" * (256 << 10)
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    started = time.monotonic()
    for _ in range(mb * 4):
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while not got.endswith(b"\n"):
        part = s.recv(64)
        if not part:
            break
        got += part
    took = time.monotonic() - started
    s.close()
    if int(got or b"0") != mb << 20:
        raise RuntimeError("the backend read %r bytes, not %d" % (got, mb << 20))
    return took


class Balanced:
    def __init__(self, ws, label, binary):
        self.label, self.bin = label, binary
        self.home = ws.path(label, "home")
        os.makedirs(self.home, exist_ok=True)
        self.env = dict(c.base_env(), HERDER_HOME=self.home)
        self.port = free_port()
        d = ws.path(label)
        with open(os.path.join(d, "sink.py"), "w") as f:
            f.write(SINK)
        with open(os.path.join(d, "herder.toml"), "w") as f:
            f.write('[[apps]]\nname = "sink"\nscript = "sink.py"\n\n[apps.balancer]\nlisten = %d\nmode = "tcp"\n'
                    % self.port)
        c.run([binary, "start", os.path.join(d, "herder.toml")], env=self.env, timeout=60, check=True)
        c.on_cleanup(lambda: c.run([binary, "kill"], env=self.env, timeout=30))
        with open(os.path.join(self.home, "daemon.pid")) as f:
            self.pid = int(f.read().split()[0])
        self.backend = None
        for _ in range(500):
            _, out, _, _ = c.run([binary, "list", "--json"], env=self.env, timeout=30)
            inst = json.loads(out)[0]["instances"][0]
            if inst.get("status") == "online" and inst.get("port"):
                try:
                    socket.create_connection(("127.0.0.1", inst["port"]), timeout=1).close()
                    self.backend = inst["port"]
                    break
                except OSError:
                    pass
            time.sleep(0.02)
        if not self.backend:
            raise RuntimeError("%s: the backend did not listen" % label)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    c.install_cleanup_handlers()
    ws = c.Workspace("tcp-bulk")
    runners = [Balanced(ws, "before", args.before), Balanced(ws, "after", args.after)]
    push(runners[0].backend, 16)  # warm-up
    results = {"direct": [], "before": [], "after": []}
    cpu = {"before": [], "after": []}
    for r in range(args.rounds):
        order = ["direct", "before", "after"]
        order = order[r % 3:] + order[:r % 3]
        for name in order:
            if name == "direct":
                results[name].append(push(runners[0].backend, args.mb))
                continue
            run = runners[0] if name == "before" else runners[1]
            c0 = cpu_s(run.pid)
            results[name].append(push(run.port, args.mb))
            cpu[name].append((cpu_s(run.pid) - c0) / (args.mb / 1024))
        c.log("round %d: %s" % (r + 1, ", ".join("%s %.2f s" % (k, v[-1]) for k, v in results.items())))
    summary = {}
    for name, times in results.items():
        t = statistics.median(times)
        summary[name] = {"seconds": t, "mib_per_s": args.mb / t}
        if name in cpu:
            summary[name]["daemon_cpu_s_per_gib"] = statistics.median(cpu[name])
    for name, s in summary.items():
        print("%-7s %8.0f MiB/s  %s" % (name, s["mib_per_s"],
                                         "daemon CPU %.2f s/GiB" % s["daemon_cpu_s_per_gib"]
                                         if "daemon_cpu_s_per_gib" in s else ""))
    data = {"mb": args.mb, "rounds": args.rounds, "builds": {"before": args.before, "after": args.after},
            "seconds": results, "daemon_cpu_s_per_gib": cpu, "summary": summary,
            "command": "python3 bench/tcp_bulk.py --before %s --after %s --mb %d --rounds %d"
                       % (os.path.basename(args.before), os.path.basename(args.after), args.mb, args.rounds)}
    c.save_results("tcp_bulk", data, args.out)


if __name__ == "__main__":
    main()
