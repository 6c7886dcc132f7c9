"""A worker that logs a line every WORK_INTERVAL seconds and stops cleanly on SIGTERM."""
import os
import signal
import sys
import time

interval = float(os.environ.get("WORK_INTERVAL", "1"))
running = True


def stop(signum, frame):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
n = 0
while running:
    n += 1
    print(f"worker: job {n} done (instance {os.environ.get('HERDER_INSTANCE')})", flush=True)
    time.sleep(interval)
print("worker: stopping", flush=True)
sys.exit(0)
