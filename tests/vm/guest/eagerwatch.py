#!/usr/bin/env python3
"""Watches one app through a burst of load for workers that accept
eagerly: every 20 ms, the LISTEN socket's accept queue, the connections
established to the port, and the master's worker processes. Prints one
JSON line:

  {"workers_before": n, "loaded_ms": first time more than LOADED
   connections were established to the port (the burst is there),
   "grown_ms": first time more workers than at the start (None: never),
   "reaction_ms": grown - loaded, "workers_max": m, "queue_max": the
   longest accept queue seen, "samples": k}

  eagerwatch.py PORT MASTER_PID SECONDS LOADED
"""

import json
import sys
import time

from scalewatch import listen_queue, workers


def established(port):
    """Server ends of connections to the port (accepted or queued)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:
                n += 1
    return n


def main():
    port, master, seconds, loaded = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    start = time.monotonic()
    before = workers(master)
    loaded_at, grown_at, most, queue_max, samples = None, None, before, 0, 0
    while time.monotonic() - start < seconds:
        queue_max = max(queue_max, listen_queue(port))
        if loaded_at is None and established(port) > loaded:
            loaded_at = time.monotonic()
        n = workers(master)
        most = max(most, n)
        if grown_at is None and n > before:
            grown_at = time.monotonic()
        samples += 1
        time.sleep(0.02)
    ms = lambda t: None if t is None else round((t - start) * 1000)
    print(json.dumps({
        "workers_before": before, "loaded_ms": ms(loaded_at), "grown_ms": ms(grown_at),
        "reaction_ms": None if None in (grown_at, loaded_at) else round((grown_at - loaded_at) * 1000),
        "workers_max": most, "queue_max": queue_max, "samples": samples,
    }))


if __name__ == "__main__":
    main()
