#!/usr/bin/env python3
"""Takes a given PID for an unrelated process, as the kernel would hand a
freed PID to whoever forks next: sets /proc/sys/kernel/ns_last_pid to
PID - 1 and forks, until the child gets PID (root only).

  takepid.py PID LOG

The child then records every signal it receives in LOG (one name a line)
and otherwise sleeps; the parent waits for it, so that the pair stays in
the cgroup it was started in (e.g. a unit of systemd-run).
"""

import os
import signal
import sys
import time


def record(log):
    def handler(signum, _frame):
        with open(log, "a") as f:
            f.write(signal.Signals(signum).name + "\n")

    for s in signal.valid_signals():
        if s in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(s, handler)
        except (OSError, ValueError):
            pass
    while True:
        time.sleep(3600)


def main():
    want, log = int(sys.argv[1]), sys.argv[2]
    open(log, "w").close()
    for _ in range(200):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(want - 1))
        pid = os.fork()
        if pid == 0:
            if os.getpid() == want:
                record(log)
            os._exit(0)
        if pid == want:
            print(f"takepid: process {pid} runs", flush=True)
            os.waitpid(pid, 0)
            return
        os.waitpid(pid, 0)
    sys.exit(f"takepid: could not get PID {want}")


if __name__ == "__main__":
    main()
