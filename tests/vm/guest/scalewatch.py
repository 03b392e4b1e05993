#!/usr/bin/env python3
"""Watches one app while a burst starts: when its listen queue first holds
at least N connections (from /proc/net/tcp, the LISTEN socket's rx_queue,
which is the accept queue), and when the master first has more worker
processes than at the start. Polls every 10 ms; prints one JSON line:

  {"queue_ms": ..., "grown_ms": ..., "reaction_ms": grown - queue,
   "workers_before": n, "workers_after": m}

  scalewatch.py PORT MASTER_PID QUEUE_THRESHOLD TIMEOUT_S
"""

import json
import os
import sys
import time


def listen_queue(port):
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                return int(queues.split(":")[1], 16)
    return 0


def workers(master):
    n = 0
    for tid in os.listdir(f"/proc/{master}/task"):
        with open(f"/proc/{master}/task/{tid}/children") as f:
            n += len(f.read().split())
    return n


def main():
    port, master, threshold, timeout = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    start = time.monotonic()
    before = workers(master)
    queue_at = grown_at = None
    while time.monotonic() - start < timeout and grown_at is None:
        now = time.monotonic()
        if queue_at is None and listen_queue(port) >= threshold:
            queue_at = now
        if queue_at is not None and workers(master) > before:
            grown_at = now
        time.sleep(0.01)
    ms = lambda t: None if t is None else round((t - start) * 1000)
    print(json.dumps({
        "queue_ms": ms(queue_at), "grown_ms": ms(grown_at),
        "reaction_ms": None if grown_at is None else round((grown_at - queue_at) * 1000),
        "workers_before": before, "workers_after": workers(master),
    }))


if __name__ == "__main__":
    main()
