#!/usr/bin/env python3
"""Samples the host and the benchmark app once a second until stopped
(SIGTERM), one JSON line per sample:

  t            monotonic seconds (the journal's clock)
  used         MemTotal - MemAvailable, bytes; util = used / MemTotal
  workers      uWSGI's stats: idle / busy / cheap / other slots; "frozen"
               are idle by uWSGI's account but in a frozen scope (parked
               by adaptive-workers), and are not counted as idle
  queue        uWSGI's listen_queue
  respawns     the sum of the workers' respawn_count
  daemon       adaptive-workers' pid, utime+stime in ticks, VmRSS and
               VmHWM in kB, its cgroup's memory.current (when running)
  neighbour    memory.current of the neighbour's unit (when running)

  sampler.py --stats /run/aw-bench/stats.sock --slice aw-bench > samples.jsonl
"""

import argparse
import json
import os
import signal
import socket
import time

CGROUP = "/sys/fs/cgroup"


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def meminfo():
    fields = {}
    for line in read("/proc/meminfo").splitlines():
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) * 1024
    return fields


def uwsgi_stats(path):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2.0)
        s.connect(path)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        return json.loads(data)
    except (OSError, ValueError):
        return None


def frozen(slice_name, pid):
    events = read(f"{CGROUP}/aw.slice/{slice_name}.slice/{slice_name}-{pid}.scope/cgroup.events")
    return events is not None and "frozen 1" in events


def workers(stats, slice_name):
    counts = {"idle": 0, "busy": 0, "cheap": 0, "frozen": 0, "other": 0}
    for w in stats.get("workers", []):
        status = w.get("status", "")
        if status == "cheap" or w.get("pid", 0) == 0:
            counts["cheap"] += 1
        elif status == "idle":
            counts["frozen" if frozen(slice_name, w["pid"]) else "idle"] += 1
        elif status == "busy":
            counts["busy"] += 1
        else:
            counts["other"] += 1
    return counts


def daemon():
    cg = read(f"{CGROUP}/adaptive-workers.service/cgroup.procs")
    if not cg or not cg.split():
        return None
    pid = int(cg.split()[0])
    stat = read(f"/proc/{pid}/stat")
    status = read(f"/proc/{pid}/status")
    if stat is None or status is None:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
          if line.startswith(("VmRSS:", "VmHWM:"))}
    current = read(f"{CGROUP}/adaptive-workers.service/memory.current")
    return {
        "pid": pid,
        "cpu_ticks": int(fields[11]) + int(fields[12]),
        "rss_kb": kb.get("VmRSS"),
        "hwm_kb": kb.get("VmHWM"),
        "cgroup_bytes": int(current) if current else None,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stats", required=True)
    ap.add_argument("--slice", default="aw-bench", help="adaptive-workers' app slice name")
    ap.add_argument("--neighbour", default="aw-bench-neighbour.service")
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    next_at = time.monotonic()
    while running:
        m = meminfo()
        sample = {
            "t": round(time.monotonic(), 3),
            "used": m["MemTotal"] - m["MemAvailable"],
            "total": m["MemTotal"],
        }
        stats = uwsgi_stats(args.stats)
        if stats is not None:
            sample["workers"] = workers(stats, args.slice)
            sample["queue"] = stats.get("listen_queue", 0)
            sample["respawns"] = sum(w.get("respawn_count", 0) for w in stats.get("workers", []))
        d = daemon()
        if d is not None:
            sample["daemon"] = d
        n = read(f"{CGROUP}/system.slice/{args.neighbour}/memory.current")
        if n is not None:
            sample["neighbour"] = int(n)
        print(json.dumps(sample), flush=True)
        next_at += args.interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()


if __name__ == "__main__":
    main()
