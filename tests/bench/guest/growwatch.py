#!/usr/bin/env python3
"""One trial of "the backlog crosses a threshold -> new capacity serving",
as scalewatch.py does it (the LISTEN socket's accept queue from
/proc/net/tcp, the master's children from /proc), carried one step
further. New capacity is a worker that was not active when watching
began: a new child of the master, or one whose scope was frozen (parked
by adaptive-workers) and is thawed. It is serving once uWSGI's stats show
it busy or with more requests done than when watching began. Polls every
5 ms; prints one JSON line:

  {"queue_ms", "capacity_ms", "serving_ms",   (from the start of watching)
   "capacity_after_ms": capacity - queue,
   "reaction_ms": serving - queue,
   "how": "fork" | "thaw", "workers_before", "pid"}

  growwatch.py PORT MASTER_PID STATS_SOCKET QUEUE_THRESHOLD TIMEOUT_S [SLICE]

SLICE (default aw-bench) names adaptive-workers' app slice, where the
workers' scopes are.
"""

import json
import os
import socket
import sys
import time

# The suite's guest helpers sit beside this directory in the VM
# ($AW_ROOT/guest, $AW_ROOT/bench) as in the tree (tests/vm/guest,
# tests/bench/guest): the accept queue is read as scalewatch.py reads it.
_HERE = os.path.dirname(os.path.abspath(__file__))
for _guest in (os.path.join(_HERE, "..", "guest"), os.path.join(_HERE, "..", "..", "vm", "guest")):
    if os.path.exists(os.path.join(_guest, "scalewatch.py")):
        sys.path.insert(0, _guest)
        break
from scalewatch import listen_queue  # noqa: E402


def children(master):
    pids = set()
    for tid in os.listdir(f"/proc/{master}/task"):
        with open(f"/proc/{master}/task/{tid}/children") as f:
            pids.update(int(p) for p in f.read().split())
    return pids


def frozen(slice_name, pid):
    try:
        with open(f"/sys/fs/cgroup/aw.slice/{slice_name}.slice/{slice_name}-{pid}.scope/cgroup.events") as f:
            return "frozen 1" in f.read()
    except OSError:
        return False


def active(master, slice_name):
    return {p for p in children(master) if not frozen(slice_name, p)}


def worker_stats(stats_path):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(1.0)
        s.connect(stats_path)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        return {w["pid"]: w for w in json.loads(data).get("workers", []) if w.get("pid")}
    except (OSError, ValueError):
        return {}


def main():
    port, master, stats_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    threshold, timeout = int(sys.argv[4]), float(sys.argv[5])
    slice_name = sys.argv[6] if len(sys.argv) > 6 else "aw-bench"
    start = time.monotonic()
    before_children = children(master)
    before = active(master, slice_name)
    done_before = {pid: w.get("requests", 0) for pid, w in worker_stats(stats_path).items()}
    queue_at = capacity_at = serving_at = None
    pid = None
    while time.monotonic() - start < timeout and serving_at is None:
        now = time.monotonic()
        if queue_at is None and listen_queue(port) >= threshold:
            queue_at = now
        if queue_at is not None and pid is None:
            new = active(master, slice_name) - before
            if new:
                capacity_at, pid = now, min(new)
        if pid is not None:
            w = worker_stats(stats_path).get(pid)
            if w and (w.get("status") == "busy" or w.get("requests", 0) > done_before.get(pid, 0)):
                serving_at = time.monotonic()
        time.sleep(0.005)

    def ms(t):
        return None if t is None else round((t - start) * 1000)

    def since_queue(t):
        return None if t is None or queue_at is None else round((t - queue_at) * 1000)

    print(json.dumps({
        "queue_ms": ms(queue_at), "capacity_ms": ms(capacity_at), "serving_ms": ms(serving_at),
        "capacity_after_ms": since_queue(capacity_at), "reaction_ms": since_queue(serving_at),
        "how": None if pid is None else ("fork" if pid not in before_children else "thaw"),
        "workers_before": len(before), "pid": pid,
    }))


if __name__ == "__main__":
    main()
