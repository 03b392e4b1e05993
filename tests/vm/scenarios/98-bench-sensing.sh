#!/bin/bash
# Benchmark, not a test of speed: the cost of reading one worker's private
# memory from its scope's memory.current against /proc/PID/smaps_rollup,
# for a real uWSGI worker holding 100 MB and then 1 GB of private memory.
# Figures go to figures.txt (and BENCHMARKS.md). It fails only if the
# measurement itself could not be made.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

fresh_daemon
policy shop '
unit = "uwsgi-shop.service"
server = "uwsgi"
[uwsgi]
stats = "/run/shop/stats.sock"'
start_app shop
aw_restart
wait_for 5 all_placed shop || fail "shop workers not placed"

measure() {
    local target_mb=$1 pid cg result
    # Writing 1 GB under software emulation takes long on a busy machine:
    # more than http_get's 30 s when other VMs share the CPUs.
    pid=$(json_get "$(curl -fsS --max-time 300 "http://127.0.0.1:8001/leak?mb=$target_mb")" pid)
    cg=/sys/fs/cgroup$(scope_cgroup shop "$pid")
    result=$(python3 "$AW_ROOT/guest/readcost.py" "$pid" "$cg")
    echo "$result"
    echo "sensing_${target_mb}mb $result" >> "$AW_RESULT_DIR/figures.txt"
    [ "$(json_get "$result" private_mb)" -ge "$target_mb" ] ||
        fail "the worker holds $(json_get "$result" private_mb) MB, not $target_mb"
    pass "$target_mb MB private: memory.current $(json_get "$result" memory_current_us) us, smaps_rollup $(json_get "$result" smaps_rollup_us) us ($(json_get "$result" ratio)x)"
}

step "one worker at 100 MB of private memory"
measure 100
systemctl restart uwsgi-shop.service
wait_for 30 http_ok http://127.0.0.1:8001/ || fail "shop did not come back"
wait_for 10 all_placed shop || fail "shop workers not placed after the restart"
step "one worker at 1 GB of private memory"
measure 1024
stop_app shop
