#!/usr/bin/env python3
"""Turns a benchmark run (tests/bench/run) into results.json and
results.md: the configurations side by side, the micro-figures, the
targets, the machine.

  report.py target/bench
"""

import json
import math
import os
import re
import sys

CONFIGS = ["a", "b", "c"]
NAMES = {"a": "(a) uWSGI static", "b": "(b) uWSGI cheaper backlog", "c": "(c) adaptive-workers"}


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def load_jsonl(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))
    except OSError:
        pass
    return rows


def percentile(values, p):
    """Nearest rank: with fewer than 100 values, p99 is the largest."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]


def trials(path, key):
    rows = load_jsonl(path)
    # A negative time is no reaction to the event watched: the daemon acted
    # on an earlier crossing (the host reached U through other memory
    # before the hog read it); such trials are counted, not measured.
    values = [r[key] for r in rows if r.get(key) is not None and r[key] >= 0]
    return {
        "trials": len(rows),
        "measured": len(values),
        "before_event": sum(1 for r in rows if r.get(key) is not None and r[key] < 0),
        "missed": sum(1 for r in rows if r.get(key) is None),
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "min_ms": min(values) if values else None,
        "max_ms": max(values) if values else None,
        "values_ms": values,
        "rows": rows,
    }


def sensing_vm(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                m = re.match(r"sensing_(\d+)mb (\{.*\})", line.strip())
                if m:
                    out[f"{m[1]}mb"] = json.loads(m[2])
    except OSError:
        pass
    return out


def text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def alone(monitor_path):
    """Max number of qemu-system processes seen (ours is one) and load."""
    counts, loads = [], []
    try:
        with open(monitor_path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3:
                    counts.append(int(fields[1]))
                    loads.append(float(fields[2]))
    except OSError:
        pass
    return {"qemu_max": max(counts) if counts else None, "load1_max": max(loads) if loads else None,
            "alone": bool(counts) and max(counts) <= 1}


def fmt(v, unit=""):
    if v is None:
        return "—"
    if isinstance(v, float):
        v = f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"
    return f"{v}{unit}"


def row(label, cells):
    return f"| {label} | " + " | ".join(cells) + " |"


def config_table(r):
    cols = [c for c in CONFIGS if c in r]
    lines = [row("", [NAMES[c] for c in cols]), "|---|" + "---|" * len(cols)]

    def cell(c, f):
        try:
            return f(r[c])
        except (KeyError, TypeError, ZeroDivisionError):
            return "—"

    def add(label, f):
        lines.append(row(label, [cell(c, f) for c in cols]))

    add("failed requests", lambda x: f"{x['failures']} of {x['requests']}")
    add("latency p50 / p99 (ms)", lambda x: f"{fmt(x['p50_ms'])} / {fmt(x['p99_ms'])}")
    add("throughput (req/s)", lambda x: fmt(x["throughput_rps"]))
    add("worker respawns (replacements)", lambda x: str(x["respawns"]))
    add("  per 1,000 requests served", lambda x: f"{1000 * x['respawns'] / x['requests']:.1f}")
    add("  of which after a kill (SIGKILL)",
        lambda x: str(sum(v for k, v in x["respawn_causes"].items() if k.startswith("signal") or k.startswith("evil"))))
    add("scaling: workers started / stopped", lambda x: f"{x['scale_spawns']} / {x['cheaped']}")
    add("kernel OOM kills: global / in a scope", lambda x: f"{x['oom_global']} / {x['oom_scope']}")
    add("OOM victims", lambda x: ", ".join(sorted({v['task'] for v in x["oom_victims"]})) or "none")
    add("the neighbour", lambda x: x.get("neighbour_result", "—"))
    add("host memory peak / mean (MiB)", lambda x: f"{x['host_mem_peak_mb']} / {x['host_mem_mean_mb']}")
    add("host memory peak / mean (% of RAM)",
        lambda x: f"{100 * x['host_util_peak']:.0f}% / {100 * x['host_util_mean']:.0f}%")
    add("idle worker-seconds", lambda x: str(x["idle_worker_seconds"]))
    add("worker-seconds (all running workers)", lambda x: str(x["worker_seconds"]))
    add("daemon CPU (s, % of one core)",
        lambda x: f"{x['daemon_cpu_seconds']} s, {x['daemon_cpu_percent']}%" if "daemon_cpu_seconds" in x else "—")
    add("daemon RSS peak (VmRSS / VmHWM, MiB)",
        lambda x: f"{x['daemon_rss_max_kb'] / 1024:.1f} / {x['daemon_hwm_kb'] / 1024:.1f}" if "daemon_rss_max_kb" in x else "—")
    add("daemon actions", lambda x: ", ".join(f"{k} {v}" for k, v in sorted(x["daemon_actions"].items()))
        if x.get("daemon_actions") else "—")
    return "\n".join(lines)


def phase_table(r):
    cols = [c for c in CONFIGS if c in r]
    if not cols:
        return ""
    phases = r[cols[0]]["phases"]
    lines = [row("phase", [f"{NAMES[c]} p50 / p99 ms, req/s, failed" for c in cols]),
             "|---|" + "---|" * len(cols)]
    for i, p in enumerate(phases):
        kind = f"quiet {p['rate']:.0f} req/s" if p["rate"] else f"burst {p['concurrency']} conns"
        cells = []
        for c in cols:
            q = r[c]["phases"][i]
            cells.append(f"{fmt(q['p50_ms'])} / {fmt(q['p99_ms'])}, {fmt(q['throughput_rps'])}, {q['failures']}")
        lines.append(row(f"{i + 1}: {p['seconds']:.0f} s {kind}", cells))
    return "\n".join(lines)


def targets(r, reaction):
    a, c = r.get("a"), r.get("c")
    out = []

    def add(name, met, detail):
        out.append({"target": name, "met": met, "detail": detail})

    if a and c:
        a_trouble = a["failures"] > 0 or a["oom_global"] > 0
        add("(c): zero failed requests and zero global OOM kills where (a) has some",
            a_trouble and c["failures"] == 0 and c["oom_global"] == 0,
            f"(a) {a['failures']} failed, {a['oom_global']} global OOM kills; "
            f"(c) {c['failures']} failed, {c['oom_global']} global OOM kills")
        add("(c): at least 50% fewer respawns than (a)",
            a["respawns"] > 0 and c["respawns"] <= 0.5 * a["respawns"],
            f"(a) {a['respawns']}, (c) {c['respawns']}"
            + (f" ({100 * (1 - c['respawns'] / a['respawns']):.0f}% fewer)" if a["respawns"] else ""))
        ia, ic = a.get("idle_worker_seconds"), c.get("idle_worker_seconds")
        if ia is not None and ic is not None:
            add("(c): at least 30% fewer idle worker-seconds than (a)", ia > 0 and ic <= 0.7 * ia,
                f"(a) {ia}, (c) {ic}" + (f" ({100 * (1 - ic / ia):.0f}% fewer)" if ia else ""))
    for key, name in (("kill", "U crossed -> kill delivered"), ("grow_c", "backlog -> new worker serving"),
                      ("grow_f", "backlog -> parked worker thawed and serving")):
        t = reaction.get(key)
        if t and t["p99_ms"] is not None:
            add(f"reaction under 150 ms p99: {name}", t["p99_ms"] < 150,
                f"p50 {t['p50_ms']} ms, p99 {t['p99_ms']} ms over {t['measured']} trials")
    if c and "daemon_rss_max_kb" in c:
        add("the daemon under 15 MB RSS", c["daemon_rss_max_kb"] < 15 * 1024,
            f"peak VmRSS {c['daemon_rss_max_kb'] / 1024:.1f} MiB, VmHWM {c['daemon_hwm_kb'] / 1024:.1f} MiB")
    return out


def markdown(res):
    m = res["machine"]
    lines = [
        f"Run: {m.get('date', '?')}, `{m.get('command', 'tests/bench/run')}` at commit {m.get('commit', '?')}"
        + (" (with local changes)" if m.get("dirty") else ""),
        f"Host: {m.get('host_cpu', '?')}, {m.get('host_cpus', '?')} CPUs, {m.get('host_mem_gib', '?')} GiB, "
        f"Linux {m.get('host_kernel', '?')}; {m.get('qemu', '?')}, TCG (software emulation, no KVM)",
        f"VM: {m.get('vm_mem_mb', '?')} MB, 2 vCPUs, {res.get('vm_info', '').splitlines()[0] if res.get('vm_info') else '?'}; "
        f"VM time {m.get('vm_seconds', '?')} s",
        "Alone on the machine: " + ("yes" if res["host"]["alone"] else
                                    f"no (up to {res['host']['qemu_max']} qemu processes, ours included)")
        + f"; host load average up to {res['host']['load1_max']}",
        "",
        "### The three configurations",
        "",
        config_table(res["configs"]),
        "",
        "Per load phase:",
        "",
        phase_table(res["configs"]),
        "",
        "### Reaction (repeated trials; p99 is the largest with fewer than 100)",
        "",
        "| | trials | p50 | p99 | min | max |",
        "|---|---|---|---|---|---|",
    ]
    names = {"grow_b": "(b) uWSGI cheaper backlog: backlog ≥ threshold → new worker serving",
             "grow_c": "(c) adaptive-workers: backlog ≥ threshold → new worker serving",
             "grow_f": "(c) adaptive-workers, scale_down = \"freeze\": backlog ≥ threshold → parked worker thawed and serving",
             "kill": "(c) adaptive-workers: host crosses U → kill delivered"}
    for key, name in names.items():
        t = res["reaction"].get(key)
        if t:
            lines.append(row(name, [f"{t['measured']}/{t['trials']}" + (
                f" ({t['missed']} without a reaction, {t['before_event']} acted before the event)"
                if t["missed"] or t["before_event"] else ""), fmt(t["p50_ms"], " ms"),
                                    fmt(t["p99_ms"], " ms"), fmt(t["min_ms"], " ms"), fmt(t["max_ms"], " ms")]))
    s = res["sensing_vm"]
    lines += ["", "### Sensing cost per worker (in the VM, one uWSGI worker)", "",
              "| private memory | memory.current | /proc/PID/smaps_rollup | ratio |", "|---|---|---|---|"]
    for k, v in s.items():
        lines.append(row(f"{v['private_mb']} MB", [f"{v['memory_current_us']} µs", f"{v['smaps_rollup_us']} µs",
                                                   f"{v['ratio']}×"]))
    lines += ["", "### On the host", "", "```", res["engine"], "", res["sensing_host"], "```", "",
              "### Targets", "", "| target | met | figures |", "|---|---|---|"]
    for t in res["targets"]:
        lines.append(row(t["target"], ["yes" if t["met"] else "**no**", t["detail"]]))
    return "\n".join(lines) + "\n"


def main():
    d = sys.argv[1]
    vm = os.path.join(d, "vm")
    configs = {}
    for c in CONFIGS:
        r = load_json(os.path.join(vm, "10-configs", c, "result.json"))
        if r:
            configs[c] = r
    reaction = {}
    for key, path, field in (("grow_b", "grow-b.jsonl", "reaction_ms"), ("grow_c", "grow-c.jsonl", "reaction_ms"),
                             ("grow_f", "grow-f.jsonl", "reaction_ms"), ("kill", "kill.jsonl", "reaction_ms")):
        p = os.path.join(vm, "20-reaction", path)
        if os.path.exists(p):
            reaction[key] = trials(p, field)
    res = {
        "machine": load_json(os.path.join(d, "machine.json"), {}),
        "host": alone(os.path.join(d, "host-monitor.txt")),
        "vm_info": text(os.path.join(vm, "vm-info.txt")),
        "vm_summary": text(os.path.join(vm, "summary.tsv")),
        "params": text(os.path.join(vm, "10-configs", "params.txt")),
        "configs": configs,
        "reaction": reaction,
        "sensing_vm": sensing_vm(os.path.join(vm, "98-bench-sensing", "figures.txt")),
        "engine": text(os.path.join(d, "engine.txt")),
        "sensing_host": text(os.path.join(d, "sensing-host.txt")),
    }
    res["targets"] = targets(configs, reaction)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res)
    with open(os.path.join(d, "results.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
