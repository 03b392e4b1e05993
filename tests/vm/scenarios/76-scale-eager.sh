#!/bin/bash
# Issue 17: workers that accept eagerly keep the accept queue empty while
# work waits inside them, so the worker count follows the connections each
# worker holds. For gunicorn's gthread workers (4 threads each) and its
# uvicorn workers (an async app that serves 2 at a time per worker, its
# backend pool): a burst of more concurrent slow requests than the workers
# serve at once, first at the fixed count of 2 (the daemon not scaling),
# then with [scaling]: the count grows within 2 s while the accept queue
# stays below grow_backlog, and shrinks after the burst; zero failed
# requests; the p99 of both runs is reported side by side; the metrics
# show the connections held during the burst.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

GROW_AT=8
BURST_S=8

units=()
cleanup() { [ "${#units[@]}" -eq 0 ] || systemctl stop "${units[@]}" || true; }
trap cleanup EXIT

# eager NAME UNIT PORT URL CLIENTS CAPACITY CONCURRENCY_LINE WHY: one worker
# class through both runs; CAPACITY is what its 2 workers serve at once
eager() {
    local name=$1 unit=$2 port=$3 url=$4 clients=$5 capacity=$6 concurrency=$7 why=$8
    local master watch fixed scaled grown queue_max status_line watched held
    step "$name: $clients clients at the fixed count of 2"
    units+=("$unit")
    start_unit_app "$unit" "$port"
    master=$(unit_prop "$unit" MainPID)
    wait_for 20 workers_eq "$master" 2 || fail "$unit runs $(running_workers "$master") workers, not 2"
    background_load "$name-fixed" "$url" --duration "$BURST_S" --concurrency "$clients"
    wait_load "$name-fixed"
    fixed=$(json_get "$(cat "$AW_RESULT_DIR/$name-fixed.json")" p99_ms)

    step "$name: the same burst with [scaling]"
    policy "$name" "
unit = \"$unit\"
server = \"gunicorn\"
[scaling]
min_workers = 2
max_workers = 6
spare_idle = 0
grow_backlog = $GROW_AT
step_up = 4
step_down = 2
cooldown_up = \"500ms\"
cooldown_down = \"3s\"
$concurrency"
    aw_restart
    wait_for 10 all_placed "$name" "$unit" || fail "$name workers not placed"
    wait_for 10 status_says "$name" "scaling follows the connections" ||
        fail "status does not say $name follows connections: $(adaptive-workers status | grep -A3 "^$name" || true)"
    status_line=$(adaptive-workers status | grep -m1 'scaling follows the connections' | sed 's/^ *//')
    assert_match "$status_line" "$why" "status says why"
    # The burst is there once more connections than the workers serve at
    # once, plus grow_backlog, are established.
    python3 "$AW_ROOT/guest/eagerwatch.py" "$port" "$master" $((BURST_S + 2)) $((capacity + GROW_AT)) \
        > "$AW_RESULT_DIR/$name-watch.json" &
    watch=$!
    sleep 0.2
    background_load "$name-scaled" "$url" --duration "$BURST_S" --concurrency "$clients"
    sleep 3
    held=$(curl -fsS --max-time 10 http://127.0.0.1:9464/metrics |
        sed -n "s/^adaptive_workers_app_held_connections{app=\"$name\"} //p")
    wait "$watch"
    wait_load "$name-scaled"
    [ "${held:-0}" -gt 0 ] || fail "metrics: no held_connections for $name 3 s into the burst (got '${held}')"
    pass "metrics: $name's workers held $held connections 3 s into the burst"
    scaled=$(json_get "$(cat "$AW_RESULT_DIR/$name-scaled.json")" p99_ms)
    watched=$(cat "$AW_RESULT_DIR/$name-watch.json")
    grown=$(json_get "$watched" reaction_ms)
    queue_max=$(json_get "$watched" queue_max)
    [ "$grown" != None ] || fail "$name never grew after the burst came: $watched; $(journal_lines APP="$name" | tail -n 5)"
    figure "${name}_grow_ms" "$grown"
    figure "${name}_queue_max" "$queue_max"
    figure "${name}_p99_fixed_ms" "$fixed"
    figure "${name}_p99_scaled_ms" "$scaled"
    [ "$grown" -le 2000 ] || fail "$name grew $grown ms after the burst came"
    [ "$queue_max" -lt "$GROW_AT" ] ||
        fail "the accept queue reached $queue_max (grow_backlog $GROW_AT): the backlog, not the connections, could have grown it"
    [ "$(json_get "$watched" workers_max)" -le 6 ] ||
        fail "$name ran $(json_get "$watched" workers_max) workers, above max_workers (6)"
    pass "$name grew $grown ms after the burst came, to $(json_get "$watched" workers_max) workers, with at most $queue_max in the accept queue"
    assert_match "$(journal_lines APP="$name" ACTION=grow | head -n 1)" "connections wait: workers hold [0-9]+ and serve [0-9]+ at once" "the grow's reason"
    pass "$name p99: $fixed ms at 2 workers, $scaled ms scaling"

    step "$name: quiet again, back to 2"
    wait_for 40 workers_eq "$master" 2 || fail "$name still runs $(running_workers "$master") workers 40 s after the burst"
    assert_match "$(journal_lines APP="$name" ACTION=shrink | head -n 1)" "workers hold [0-9.]+ connections on average" "the shrink's reason"
    pass "$name shrank back to 2"
    systemctl stop "$unit"
    rm -f "$AW_POLICY_DIR/$name.toml"
}

# status_says APP TEXT: the status of APP mentions TEXT
status_says() { adaptive-workers status | grep -A3 "^$1 " | grep -q "$2"; }

fresh_daemon
global_policy '[metrics]
listen = "127.0.0.1:9464"'
eager gthread gunicorn-gthread.service 8005 "http://127.0.0.1:8005/sleep?ms=300" 24 8 "" \
    "gthread workers accept at once.*4 at once per worker \(--threads 4\)"
eager uvicorn gunicorn-uvicorn.service 8006 "http://127.0.0.1:8006/pool?ms=300" 16 4 "concurrency = 2" \
    "uvicorn workers accept at once.*2 at once per worker \(concurrency in the policy\)"
