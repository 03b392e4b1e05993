#!/usr/bin/env python3
"""A memory hog that is not managed by adaptive-workers: it allocates (and
writes) memory until host utilisation, 1 - MemAvailable/MemTotal, reaches
each target in turn, holds there, then goes on to the next.

  hog.py 0.70:10 0.85:10     reach 70 %, hold 10 s, reach 85 %, hold 10 s
  hog.py 0.56:1 +160M:2      reach 56 %, then take 160 MiB more (whatever
                             is freed meanwhile: a neighbour that does not
                             chase a target), hold 2 s
  hog.py 900M:60 --ramp-mb-s 60 --floor-mb 0
                             take 900 MiB in all, 60 MiB/s at most, hold
                             60 s (the benchmark's neighbour: it takes what
                             it needs, whatever the host has)

Once a target is reached it takes nothing more in that phase: like a
real neighbour, it keeps what it has. It never takes the host below a floor of free memory (--floor-mb), so a
daemon that fails to act makes the test fail, not the VM. Prints a JSON
line per phase on stdout.

--mark U records, on the monotonic clock (the journal's
__MONOTONIC_TIMESTAMP, in seconds), when it first saw utilisation at or
above U; with --chunk-mb small, that is within one chunk of the crossing.
"""

import argparse
import json
import time


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


def parse_target(text):
    """A fraction of host memory (0.7), a total size in MiB (900M), or
    MiB more than held so far (+160M): (fraction, size, relative)."""
    if text.upper().endswith("M"):
        return None, int(text.lstrip("+")[:-1]) << 20, text.startswith("+")
    return float(text), None, False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phases", nargs="+", help="TARGET:SECONDS, TARGET a fraction or NNNM")
    ap.add_argument("--floor-mb", type=int, default=120)
    ap.add_argument("--chunk-mb", type=int, default=16)
    ap.add_argument("--ramp-mb-s", type=float, default=0.0, help="allocation rate limit, 0 = none")
    ap.add_argument("--mark", type=float, default=None, help="report when utilisation first reached this")
    args = ap.parse_args()
    chunk = args.chunk_mb << 20
    held = []
    marked_at = None
    for phase in args.phases:
        target_text, seconds = phase.rsplit(":", 1)
        fraction, size, relative = parse_target(target_text)
        seconds = float(seconds)
        ramp_from = (time.monotonic(), len(held) * chunk)
        if relative:
            size += len(held) * chunk
        end = None
        peak = 0.0
        while end is None or time.monotonic() < end:
            util, avail = utilisation()
            peak = max(peak, util)
            if marked_at is None and args.mark is not None and util >= args.mark:
                marked_at = time.monotonic()
            have = len(held) * chunk
            wanted = util < fraction if fraction is not None else have < size
            if end is None and wanted and avail - chunk > args.floor_mb << 20:
                if args.ramp_mb_s > 0:
                    due = ramp_from[0] + (have - ramp_from[1]) / (args.ramp_mb_s * (1 << 20))
                    if due > time.monotonic():
                        time.sleep(due - time.monotonic())
                held.append(bytearray(b"\x5a") * chunk)
                continue
            if end is None:
                end = time.monotonic() + seconds
            time.sleep(0.05)
        out = {"target": target_text, "held_mb": len(held) * chunk >> 20,
               "peak_utilisation": round(peak, 3)}
        if args.mark is not None:
            out["marked_at"] = marked_at
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
