#!/usr/bin/env python3
"""HTTP load client for the VM tests (stdlib only: threads + http.client).

Runs one or more phases against a URL and prints one JSON object:

  requests, failures, errors (the first few messages), p50_ms, p99_ms,
  max_ms, throughput_rps, seconds, and "phases" with the same per phase.

A failure is a non-200 answer or a connection/timeout error.

Examples:
  load.py http://127.0.0.1:8001/ --duration 10 --concurrency 8
  load.py http://127.0.0.1:8001/sleep?ms=50 --rate 40 --duration 5
  load.py http://127.0.0.1:8001/ --phase 5:16 --phase 10:1:5 --phase 5:16
      (a burst at 16 connections, a quiet 10 s at 5 req/s, another burst)
  load.py http://127.0.0.1:8001 --mix 95:/work?ms=30 --mix 5:/work?leak_kb=4096
      (each request picks its path by weight, from a seeded generator, so
      every run sends the same mix; "mix" in the output counts each path)

SIGTERM ends the run early (every phase stops at once) and the results so
far are printed as usual: for load that lasts as long as a scenario needs.

Each request uses a new connection, as a proxy in front of uWSGI usually
does, so that queued connections show up in the listen backlog.
"""

import argparse
import http.client
import json
import random
import signal
import sys
import threading
import time
from urllib.parse import urlsplit

MAX_ERRORS_KEPT = 5
MAX_FAILURE_TIMES_KEPT = 500
# Set by SIGTERM: stop every phase now.
STOP = threading.Event()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []
        self.failures = 0
        self.errors = []
        self.per_path = {}
        self.failure_times = []

    def record(self, seconds, error, path=None):
        with self.lock:
            self.latencies.append(seconds)
            if path is not None:
                counts = self.per_path.setdefault(path, [0, 0])
                counts[0] += 1
                counts[1] += error is not None
            if error is not None:
                self.failures += 1
                if len(self.failure_times) < MAX_FAILURE_TIMES_KEPT:
                    self.failure_times.append(round(time.monotonic(), 3))
                if len(self.errors) < MAX_ERRORS_KEPT:
                    self.errors.append(error)

    def summary(self, seconds):
        lat = sorted(self.latencies)

        def pct(p):
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1)

        n = len(lat)
        return {
            "requests": n,
            "failures": self.failures,
            "errors": self.errors,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 1) if lat else None,
            "throughput_rps": round(n / seconds, 1) if seconds > 0 else 0.0,
            "seconds": round(seconds, 2),
        }


def one_request(url, timeout):
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            return f"HTTP {resp.status} {resp.reason}"
        return None
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        conn.close()


class Mix:
    """Weighted paths; each thread draws from its own seeded generator."""

    def __init__(self, entries, seed):
        self.paths = [p for _, p in entries]
        self.weights = [w for w, _ in entries]
        self.seed = seed

    def picker(self, index):
        rng = random.Random(self.seed * 1000 + index)
        return lambda: rng.choices(self.paths, self.weights)[0]


def worker(url, deadline, interval, timeout, stats, pick=None):
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline or STOP.is_set():
            return
        if interval:
            if next_at > now:
                time.sleep(min(next_at - now, deadline - now))
                continue
            next_at += interval
        path = pick() if pick else None
        t0 = time.monotonic()
        error = one_request(url.rstrip("/") + path if path else url, timeout)
        stats.record(time.monotonic() - t0, error, path)


def run_phase(url, seconds, concurrency, rate, timeout, mix=None, phase_no=0):
    stats = Stats()
    # rate is for the whole phase: each thread takes an equal share.
    interval = concurrency / rate if rate > 0 else 0.0
    start = time.monotonic()
    deadline = start + seconds
    threads = [
        threading.Thread(
            target=worker,
            args=(url, deadline, interval, timeout, stats,
                  mix.picker(phase_no * 1000 + i) if mix else None),
            daemon=True)
        for i in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats, time.monotonic() - start


def parse_phase(text):
    fields = text.split(":")
    if not 2 <= len(fields) <= 3:
        raise argparse.ArgumentTypeError("phase is SECONDS:CONCURRENCY[:RATE]")
    try:
        seconds, conc = float(fields[0]), int(fields[1])
        rate = float(fields[2]) if len(fields) == 3 else 0.0
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    if seconds <= 0 or conc <= 0 or rate < 0:
        raise argparse.ArgumentTypeError("phase values must be positive")
    return {"seconds": seconds, "concurrency": conc, "rate": rate}


def parse_mix(text):
    weight, sep, path = text.partition(":")
    try:
        w = float(weight)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    if not sep or not path.startswith("/") or w <= 0:
        raise argparse.ArgumentTypeError("mix is WEIGHT:/PATH")
    return w, path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds (single phase)")
    ap.add_argument("--concurrency", type=int, default=4, help="parallel connections (single phase)")
    ap.add_argument("--rate", type=float, default=0.0, help="requests/s in total, 0 = as fast as possible")
    ap.add_argument("--phase", type=parse_phase, action="append", default=[],
                    help="SECONDS:CONCURRENCY[:RATE], repeatable; replaces the three options above")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    ap.add_argument("--mix", type=parse_mix, action="append", default=[],
                    help="WEIGHT:/PATH, repeatable: each request picks a path by weight (URL is the base)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the mix")
    args = ap.parse_args()
    mix = Mix(args.mix, args.seed) if args.mix else None

    phases = args.phase or [{"seconds": args.duration, "concurrency": args.concurrency, "rate": args.rate}]
    total = Stats()
    started_at = time.monotonic()
    total_seconds = 0.0
    phase_results = []
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    for no, ph in enumerate(phases):
        if STOP.is_set():
            break
        stats, seconds = run_phase(args.url, ph["seconds"], ph["concurrency"], ph["rate"], args.timeout,
                                   mix, no)
        phase_results.append({**ph, **stats.summary(seconds)})
        total.latencies += stats.latencies
        total.failures += stats.failures
        total.errors += stats.errors[: MAX_ERRORS_KEPT - len(total.errors)]
        total.failure_times += stats.failure_times[: MAX_FAILURE_TIMES_KEPT - len(total.failure_times)]
        for path, (n, failed) in stats.per_path.items():
            counts = total.per_path.setdefault(path, [0, 0])
            counts[0] += n
            counts[1] += failed
        total_seconds += seconds

    out = {"url": args.url, **total.summary(total_seconds), "phases": phase_results,
           # On the monotonic clock (as the journal's __MONOTONIC_TIMESTAMP).
           "started_at": round(started_at, 3), "failure_times": total.failure_times}
    if mix:
        out["mix"] = {p: {"requests": n, "failures": f} for p, (n, f) in sorted(total.per_path.items())}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
