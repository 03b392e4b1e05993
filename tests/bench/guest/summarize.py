#!/usr/bin/env python3
"""One configuration's figures, from what the run left behind:

  summarize.py DIR --config a --label "..." --initial 8 [--hz 100]

DIR holds load.json (guest/load.py), samples.jsonl (sampler.py),
uwsgi.log (uWSGI's logto), kernel.log (journalctl -k -o short-monotonic),
neighbour.json and neighbour.result (the hog and how its unit ended), and
for adaptive-workers daemon.jsonl (journalctl -u adaptive-workers -o
json). Prints the figures as one JSON object.

Definitions (BENCHMARKS.md repeats them):
  respawns          workers started to replace one that ended (a reload,
                    a recycle, a kill): uWSGI's "Respawned uWSGI worker"
                    for a slot that was not cheaped; a cheaped slot coming
                    back, or a first spawn past the initial workers, is a
                    scaling spawn instead
  idle worker-s     sum over samples of (workers uWSGI reports idle, not
                    in a frozen scope) x seconds to the next sample, over
                    the load's window
  host memory       MemTotal - MemAvailable, over the load's window
  OOM kills         kernel log: constraint=CONSTRAINT_NONE (global) and
                    CONSTRAINT_MEMCG (a cgroup's limit, here a worker's
                    scope), with the victim
"""

import argparse
import json
import os
import re

SPAWNED = re.compile(r"spawned uWSGI worker (\d+) \(pid: (\d+)")
RESPAWNED = re.compile(r"Respawned uWSGI worker (\d+) \(new pid: (\d+)\)")
CHEAPED = re.compile(r"uWSGI worker (\d+) cheaped\.")
SIGNALLED = re.compile(r"DAMN ! worker (\d+) \(pid: \d+\) died, killed by signal (\d+)")
DIED = re.compile(r"DAMN ! worker (\d+) \(pid: \d+\) died :\(")
EVIL = re.compile(r"EVIL RELOAD ON WORKER (\d+) RSS")
DONE = re.compile(r"The work of process (\d+) is done")
GRACEFUL = re.compile(r"(?:Gracefully killing worker|worker) (\d+) (?:\(pid: \d+\)\.\.\.|killed successfully)")
OOM = re.compile(r"oom-kill:constraint=(CONSTRAINT_\w+).*?task_memcg=([^,]*),task=([^,]*),pid=(\d+)")


def uwsgi_log(path, initial):
    out = {"respawns": 0, "scale_spawns": 0, "cheaped": 0, "forkbomb_sleeps": 0,
           "respawn_causes": {}, "rss_hard_limit_cheaps": 0}
    slot_of_pid, cheap, cause = {}, set(), {}
    spawned = 0
    if not os.path.exists(path):
        return out
    with open(path, errors="replace") as f:
        for line in f:
            if m := RESPAWNED.search(line):
                slot, pid = int(m[1]), int(m[2])
                slot_of_pid[pid] = slot
                if slot in cheap:
                    cheap.discard(slot)
                    out["scale_spawns"] += 1
                else:
                    out["respawns"] += 1
                    c = cause.pop(slot, "other")
                    out["respawn_causes"][c] = out["respawn_causes"].get(c, 0) + 1
            elif m := SPAWNED.search(line):
                slot, pid = int(m[1]), int(m[2])
                slot_of_pid[pid] = slot
                spawned += 1
                cheap.discard(slot)
                if spawned > initial:
                    out["scale_spawns"] += 1
            elif m := CHEAPED.search(line):
                cheap.add(int(m[1]))
                cause.pop(int(m[1]), None)
                out["cheaped"] += 1
            elif m := EVIL.search(line):
                cause[int(m[1])] = "evil-reload-on-rss"
            elif m := SIGNALLED.search(line):
                slot = int(m[1])
                if cause.get(slot) != "evil-reload-on-rss":
                    cause[slot] = f"signal {m[2]}"
            elif m := DIED.search(line):
                cause.setdefault(int(m[1]), "exited")
            elif m := DONE.search(line):
                slot = slot_of_pid.get(int(m[1]))
                if slot is not None:
                    cause.setdefault(slot, "graceful")
            elif m := GRACEFUL.search(line):
                cause.setdefault(int(m[1]), "graceful")
            elif "worker respawning too fast" in line:
                out["forkbomb_sleeps"] += 1
            elif "cheaper hard rss memory limit exceeded" in line:
                out["rss_hard_limit_cheaps"] += 1
    return out


def kernel_oom(path):
    out = {"oom_global": 0, "oom_scope": 0, "oom_other": 0, "oom_victims": []}
    if not os.path.exists(path):
        return out
    with open(path, errors="replace") as f:
        for line in f:
            m = OOM.search(line)
            if not m:
                continue
            kind = {"CONSTRAINT_NONE": "oom_global", "CONSTRAINT_MEMCG": "oom_scope"}.get(m[1], "oom_other")
            out[kind] += 1
            out["oom_victims"].append({"constraint": m[1], "cgroup": m[2], "task": m[3], "pid": int(m[4])})
    return out


def samples_in(path, start, end):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return [r for r in rows if start - 1.0 <= r["t"] <= end + 1.0]


def host_and_workers(rows, start, end):
    out = {}
    if not rows:
        return out
    mb = [r["used"] / (1 << 20) for r in rows]
    util = [r["used"] / r["total"] for r in rows]
    out.update(host_mem_peak_mb=round(max(mb)), host_mem_mean_mb=round(sum(mb) / len(mb)),
               host_util_peak=round(max(util), 3), host_util_mean=round(sum(util) / len(util), 3),
               mem_total_mb=round(rows[0]["total"] / (1 << 20)))
    idle = active = 0.0
    peak_active = 0
    for i, r in enumerate(rows):
        t0 = max(r["t"], start)
        t1 = min(rows[i + 1]["t"] if i + 1 < len(rows) else r["t"] + 1.0, end, t0 + 2.0)
        w = r.get("workers")
        if w is None or t1 <= t0:
            continue
        n_active = w["idle"] + w["busy"] + w["other"]
        idle += w["idle"] * (t1 - t0)
        active += n_active * (t1 - t0)
        peak_active = max(peak_active, n_active)
    out.update(idle_worker_seconds=round(idle), worker_seconds=round(active), peak_workers=peak_active)
    return out


def daemon_costs(rows, hz, seconds):
    d = [r["daemon"] for r in rows if "daemon" in r]
    if not d:
        return {}
    cpu = (d[-1]["cpu_ticks"] - d[0]["cpu_ticks"]) / hz if d[-1]["pid"] == d[0]["pid"] else None
    return {
        "daemon_cpu_seconds": None if cpu is None else round(cpu, 2),
        "daemon_cpu_percent": None if cpu is None else round(100 * cpu / seconds, 2),
        "daemon_rss_max_kb": max(x["rss_kb"] or 0 for x in d),
        "daemon_hwm_kb": d[-1]["hwm_kb"],
        "daemon_cgroup_max_mb": round(max(x["cgroup_bytes"] or 0 for x in d) / (1 << 20), 1),
        "daemon_restarted": len({x["pid"] for x in d}) > 1,
    }


def daemon_actions(path):
    if not os.path.exists(path):
        return {}
    counts = {}
    with open(path) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            action = e.get("ACTION")
            if not action:
                continue
            reason = e.get("REASON", "")
            kind = action
            if action == "recycle":
                kind = "recycle (soft limit)" if "soft limit" in reason else \
                    "recycle (host, lower bound)" if "lower bound" in reason else "recycle (other)"
            elif action == "kill":
                kind = "kill (host, upper bound)" if "upper bound" in reason else "kill (other)"
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def neighbour(directory):
    out = {}
    path = os.path.join(directory, "neighbour.json")
    if os.path.exists(path):
        with open(path) as f:
            lines = [json.loads(x) for x in f if x.startswith("{")]
        if lines:
            out["neighbour_held_mb"] = lines[-1]["held_mb"]
    result = os.path.join(directory, "neighbour.result")
    if os.path.exists(result):
        with open(result) as f:
            out["neighbour_result"] = f.read().strip() or "unknown"
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--config", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--initial", type=int, required=True, help="workers uWSGI starts with")
    ap.add_argument("--hz", type=int, default=os.sysconf("SC_CLK_TCK"))
    args = ap.parse_args()
    d = args.dir
    with open(os.path.join(d, "load.json")) as f:
        load = json.load(f)
    start, seconds = load["started_at"], load["seconds"]
    end = start + seconds
    rows = samples_in(os.path.join(d, "samples.jsonl"), start, end)
    out = {
        "config": args.config,
        "label": args.label,
        "requests": load["requests"],
        "failures": load["failures"],
        "errors": load["errors"],
        "p50_ms": load["p50_ms"],
        "p99_ms": load["p99_ms"],
        "max_ms": load["max_ms"],
        "throughput_rps": load["throughput_rps"],
        "seconds": seconds,
        "phases": [{k: p[k] for k in ("seconds", "concurrency", "rate", "requests", "failures",
                                      "p50_ms", "p99_ms", "throughput_rps")} for p in load["phases"]],
        "failure_times": [round(t - start, 1) for t in load.get("failure_times", [])],
    }
    out.update(uwsgi_log(os.path.join(d, "uwsgi.log"), args.initial))
    out.update(kernel_oom(os.path.join(d, "kernel.log")))
    out.update(host_and_workers(rows, start, end))
    out.update(daemon_costs(rows, args.hz, seconds))
    actions = daemon_actions(os.path.join(d, "daemon.jsonl"))
    if actions:
        out["daemon_actions"] = actions
    out.update(neighbour(d))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
