#!/bin/bash
# The headline benchmark (issue 6): the same app, the same load and the
# same neighbour, under three configurations, one after the other:
#   (a) uWSGI static, (b) uWSGI's cheaper-algo = backlog with its RSS caps,
#   (c) adaptive-workers (import-uwsgi's policy + host bounds + adaptive
#       worker count).
# Each: the app is started fresh, the load runs (bursts and quiet periods,
# leaking requests, a few big leakers), the neighbour takes memory in the
# middle; the host, uWSGI's stats and the daemon are sampled every second.
# Per configuration DIR/CFG/result.json (guest/summarize.py); nothing is
# asserted about the figures: it fails only if a run could not be made.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"
# shellcheck source=tests/bench/guest/lib.sh
. "$AW_ROOT/bench/lib.sh"

ensure_installed
bench_install
save /proc/meminfo meminfo.txt
{
    for v in $(compgen -v AW_BENCH_); do
        echo "$v=${!v}"
    done
    echo "MemTotal_bytes=$(mem_total_bytes)"
} > "$AW_RESULT_DIR/params.txt"

# The load's arguments: the phases (scaled) and the mix.
load_args=()
for phase in $AW_BENCH_PHASES; do
    load_args+=(--phase "$(scaled "${phase%%:*}"):${phase#*:}")
done
for entry in $AW_BENCH_MIX; do
    load_args+=(--mix "$entry")
done
load_args+=(--seed "$AW_BENCH_SEED")

neighbour_mb=$(($(percent_of_mem "$AW_BENCH_NEIGHBOUR_PCT") >> 20))

# prepare CFG: what runs besides the app
prepare() {
    local cfg=$1
    rm -f "$AW_POLICY_DIR"/*.toml
    if [ "$cfg" = c ]; then
        global_policy "[host]
lower_bound = \"$AW_BENCH_LOWER\"
upper_bound = \"$AW_BENCH_UPPER\""
        import_policy c "$(scaling_extra "$AW_BENCH_COOLDOWN_DOWN")"
        save "$AW_CONF" "global-$cfg.toml"
        # A fresh daemon: its CPU time and peak RSS are this run's.
        aw_restart
    else
        systemctl stop "$AW_UNIT"
    fi
}

# run_config CFG
run_config() {
    local cfg=$1 dir=$AW_RESULT_DIR/$1 cursor t0 sampler load_pid neighbour_pid
    mkdir -p "$dir"
    step "($cfg) $(label "$cfg")"
    bench_stop
    prepare "$cfg"
    sync
    echo 3 > /proc/sys/vm/drop_caches
    bench_start "$cfg"
    cp "$BENCH_SRV/$cfg.ini" "$dir/"
    if [ "$cfg" = c ]; then
        wait_for 10 bench_placed c || fail "workers of (c) not placed"
    fi
    sleep 2
    cursor=$(journal_cursor)
    python3 "$AW_ROOT/bench/sampler.py" --stats "$BENCH_STATS" > "$dir/samples.jsonl" &
    sampler=$!
    sleep 1
    t0=$(mono)
    python3 "$AW_ROOT/guest/load.py" "http://127.0.0.1:$BENCH_PORT" "${load_args[@]}" \
        > "$dir/load.json" 2> "$dir/load.err" &
    load_pid=$!
    sleep "$(scaled "$AW_BENCH_NEIGHBOUR_AT")"
    note "neighbour starts $(awk -v a="$(mono)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }') s into the load: ${neighbour_mb} MiB at ${AW_BENCH_NEIGHBOUR_RAMP_MB_S} MiB/s, held $(scaled "$AW_BENCH_NEIGHBOUR_HOLD") s"
    (
        rc=0
        systemd-run --wait --pipe --collect --unit=aw-bench-neighbour \
            python3 "$AW_ROOT/guest/hog.py" "${neighbour_mb}M:$(scaled "$AW_BENCH_NEIGHBOUR_HOLD")" \
            --ramp-mb-s "$AW_BENCH_NEIGHBOUR_RAMP_MB_S" --floor-mb 0 \
            > "$dir/neighbour.json" 2> "$dir/neighbour.err" || rc=$?
        result=$(sed -n 's/.*Finished with result: //p' "$dir/neighbour.err" | tail -n 1)
        echo "${result:-exit status $rc}" > "$dir/neighbour.result"
    ) &
    neighbour_pid=$!
    wait "$load_pid" || fail "($cfg) the load client failed: $(cat "$dir/load.err")"
    wait "$neighbour_pid" || true
    kill "$sampler"
    wait "$sampler" || true

    journalctl -k --after-cursor "$cursor" -o short-monotonic --no-pager > "$dir/kernel.log" || true
    cp "$BENCH_LOGS/$cfg.log" "$dir/uwsgi.log" || true
    if [ "$cfg" = c ]; then
        journalctl -u "$AW_UNIT" --after-cursor "$cursor" -o json --no-pager > "$dir/daemon.jsonl" || true
        journalctl -u "$AW_UNIT" --after-cursor "$cursor" -o short-monotonic --no-pager > "$dir/daemon.log" || true
        adaptive-workers status --json > "$dir/status.json" || true
        adaptive-workers events --json > "$dir/events.json" || true
    fi
    python3 "$AW_ROOT/bench/summarize.py" "$dir" --config "$cfg" --label "$(label "$cfg")" \
        --initial "$(initial_workers "$cfg")" > "$dir/result.json" ||
        fail "($cfg) could not summarize the run"
    python3 - "$dir/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
keys = ["requests", "failures", "p50_ms", "p99_ms", "throughput_rps", "respawns", "scale_spawns",
        "oom_global", "oom_scope", "host_mem_peak_mb", "host_mem_mean_mb", "idle_worker_seconds",
        "neighbour_result", "daemon_cpu_seconds", "daemon_rss_max_kb", "daemon_actions", "respawn_causes"]
for k in keys:
    if k in r:
        print(f"  {k}: {r[k]}")
PY
    pass "($cfg) done"
    bench_stop
}

for cfg in $AW_BENCH_CONFIGS; do
    run_config "$cfg"
done
systemctl start "$AW_UNIT"
