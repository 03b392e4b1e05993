#!/usr/bin/env python3
"""A generic pre-fork master for the VM tests (server = "generic"): starts
N children, each a tiny program (`sleep`), and starts a new one whenever
one exits, as a pre-fork master respawns its workers.

  forker.py --children 1000                       1,000 small workers
  forker.py --children 4 --child-life 0.1         workers that die right
                                                  after they start
  forker.py --children 4 --master-life 3          a master that crashes
                                                  (SIGABRT) after 3 s

Children are started with posix_spawn, so each is a direct child of the
master (its PPID) and costs a few hundred KiB. A line on stderr at most
every 5 s says how many were started so far.
"""

import argparse
import os
import signal
import sys
import time


def spawn(life):
    arg = f"{life:.3f}" if life > 0 else "infinity"
    return os.posix_spawn("/bin/sleep", ["sleep", arg], os.environ)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--children", type=int, default=4)
    ap.add_argument("--child-life", type=float, default=0.0, help="seconds; 0 = until killed")
    ap.add_argument("--respawn-delay", type=float, default=0.0, help="seconds before a new child")
    ap.add_argument("--master-life", type=float, default=0.0, help="seconds, then SIGABRT; 0 = never")
    args = ap.parse_args()
    # Children must not inherit the master's handlers or mask.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.master_life > 0:
        signal.signal(signal.SIGALRM, lambda *_: os.abort())
        signal.setitimer(signal.ITIMER_REAL, args.master_life)
    started = 0
    for _ in range(args.children):
        spawn(args.child_life)
        started += 1
    said = time.monotonic()
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.1)
            continue
        except InterruptedError:
            continue
        if args.respawn_delay > 0:
            time.sleep(args.respawn_delay)
        spawn(args.child_life)
        started += 1
        if time.monotonic() - said >= 5:
            print(f"forker: {started} children started", file=sys.stderr, flush=True)
            said = time.monotonic()


if __name__ == "__main__":
    main()
