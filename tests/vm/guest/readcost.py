#!/usr/bin/env python3
"""Cost of reading one worker's private memory, two ways, on this host:
its scope's memory.current (one kernfs file) against /proc/PID/smaps_rollup
(a walk of every mapping). Raw os.open/os.read/os.close, so the Python
overhead is the same for both; the ratio is the figure that carries over
to other machines.

  readcost.py PID CGROUP_DIR  ->  one JSON line
"""

import json
import os
import sys
import time


def per_read_us(path, seconds=2.0):
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        fd = os.open(path, os.O_RDONLY)
        while os.read(fd, 65536):
            pass
        os.close(fd)
        n += 1
    return (time.perf_counter() - start) / n * 1e6, n


def main():
    pid, cgroup = sys.argv[1], sys.argv[2]
    cur_us, cur_n = per_read_us(os.path.join(cgroup, "memory.current"))
    smaps_us, smaps_n = per_read_us(f"/proc/{pid}/smaps_rollup")
    with open(os.path.join(cgroup, "memory.current")) as f:
        current = int(f.read())
    print(json.dumps({
        "private_mb": current >> 20,
        "memory_current_us": round(cur_us, 1), "memory_current_reads": cur_n,
        "smaps_rollup_us": round(smaps_us, 1), "smaps_rollup_reads": smaps_n,
        "ratio": round(smaps_us / cur_us, 1),
    }))


if __name__ == "__main__":
    main()
