#!/usr/bin/env python3
"""A memory hog that is not managed by adaptive-workers: it allocates (and
writes) memory until host utilisation, 1 - MemAvailable/MemTotal, reaches
each target in turn, holds there, then goes on to the next.

  hog.py 0.70:10 0.85:10     reach 70 %, hold 10 s, reach 85 %, hold 10 s

Once a target is reached it takes nothing more in that phase: like a
real neighbour, it keeps what it has. It never takes the host below a floor of free memory (--floor-mb), so a
daemon that fails to act makes the test fail, not the VM. Prints a JSON
line per phase on stdout.
"""

import argparse
import json
import time

CHUNK = 16 << 20


def meminfo():
    fields = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0]) * 1024
    return fields


def utilisation():
    m = meminfo()
    return 1 - m["MemAvailable"] / m["MemTotal"], m["MemAvailable"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phases", nargs="+", help="TARGET:SECONDS")
    ap.add_argument("--floor-mb", type=int, default=120)
    args = ap.parse_args()
    held = []
    for phase in args.phases:
        target, seconds = (float(x) for x in phase.split(":"))
        end = None
        peak = 0.0
        while end is None or time.monotonic() < end:
            util, avail = utilisation()
            peak = max(peak, util)
            if end is None and util < target and avail - CHUNK > args.floor_mb << 20:
                held.append(bytearray(b"\x5a") * CHUNK)
                continue
            if end is None:
                end = time.monotonic() + seconds
            time.sleep(0.05)
        print(json.dumps({"target": target, "held_mb": len(held) * CHUNK >> 20,
                          "peak_utilisation": round(peak, 3)}), flush=True)


if __name__ == "__main__":
    main()
