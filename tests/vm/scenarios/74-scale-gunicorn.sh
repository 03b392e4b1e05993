#!/bin/bash
# Issue 4 on gunicorn: TTOU to the arbiter when quiet (down to
# min_workers), TTIN when the accept queue builds. Idle workers are found
# from /proc (blocked in select on the listening socket): gunicorn has no
# stats socket. Zero failed requests. scale_down = "freeze" is refused
# (gunicorn's arbiter kills a worker whose heartbeat stops for --timeout).
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

# blog_policy [SCALING_LINES]: the blog's policy, 2 to 5 workers, with
# these [scaling] keys as well
blog_policy() {
    policy blog "
unit = \"gunicorn-blog.service\"
server = \"gunicorn\"
[scaling]
min_workers = 2
max_workers = 5
${1:-}"
}

fresh_daemon
blog_policy 'spare_idle = 0
grow_backlog = 2
cooldown_up = "500ms"
cooldown_down = "4s"'
start_app blog
aw_restart
master=$(app_master blog)
wait_for 5 all_placed blog || fail "blog workers not placed"
background_load trickle http://127.0.0.1:8002/ --duration 60 --rate 2 --concurrency 1

step "quiet: TTOU down to min_workers"
wait_for 30 workers_eq "$master" 2 || fail "still $(running_workers "$master") workers after 30 s of quiet"
pass "2 workers"

step "a burst: TTIN as the queue builds"
burst_grows gunicorn 8002 "$master" "http://127.0.0.1:8002/sleep?ms=300" 12 12
[ "$grow_ms" -lt 1000 ] || fail "a new worker came $grow_ms ms after the queue built"
pass "a new worker $grow_ms ms after the queue reached 2"
wait_load burst
wait_for 5 all_placed blog || fail "new workers not placed"
[ "$(running_workers "$master")" -le 5 ] || fail "more than max_workers"
pass "$(running_workers "$master") workers at most 5"
wait_load trickle

step "scale_down = freeze: refused, gunicorn would kill a frozen worker for its heartbeat"
blog_policy 'scale_down = "freeze"'
adaptive-workers check > /dev/null 2> "$AW_RESULT_DIR/check.txt" || fail "check failed: $(cat "$AW_RESULT_DIR/check.txt")"
assert_match "$(cat "$AW_RESULT_DIR/check.txt")" \
    "warning: .*blog.toml: scale_down = \"freeze\": gunicorn's arbiter kills a worker whose heartbeat stops for --timeout \\(30 s by default\\)" \
    "check warns"
aw_restart
wait_for 10 sh -c "adaptive-workers status | grep -q 'freeze refused, idle workers are stopped instead: gunicorn'" ||
    fail "status does not say freezing is refused: $(adaptive-workers status)"
assert_eq "$(frozen_scopes blog)" 0 "frozen blog scopes"
stop_app blog
