#!/bin/bash
# Issue 4, adaptive worker count on uWSGI (cheaper-algo = manual, master
# FIFO): quiet → the app shrinks to min_workers after the cool-down; a burst
# → capacity grows within 1 s of the accept queue building (the figure is
# printed and saved); quiet again → back to the minimum. Zero failed
# requests throughout.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

fresh_daemon
policy scale '
unit = "uwsgi-scale.service"
server = "uwsgi"
[uwsgi]
stats = "/run/scale/stats.sock"
master_fifo = "/run/scale/master.fifo"
[scaling]
min_workers = 2
max_workers = 6
spare_idle = 1
grow_backlog = 2
shrink_backlog = 0
step_up = 1
cooldown_up = "300ms"
cooldown_down = "4s"
scale_down = "stop"'
start_unit_app uwsgi-scale.service 8003
trap 'systemctl stop uwsgi-scale.service' EXIT
aw_restart
master=$(unit_prop uwsgi-scale.service MainPID)
wait_for 5 all_placed scale || fail "scale workers not placed"
assert_eq "$(running_workers "$master")" 3 "workers at start (cheaper-initial)"
background_load trickle http://127.0.0.1:8003/ --duration 60 --rate 2 --concurrency 1

step "quiet: the app shrinks to min_workers"
wait_for 30 workers_eq "$master" 2 || fail "still $(running_workers "$master") workers after 30 s of quiet"
assert_match "$(journal_lines APP=scale ACTION=shrink | head -n 1)" "shrink scale by 1: [0-9]+ idle workers with 0 queued connections" "journal says why"
pass "shrunk to 2 workers"

step "a burst: capacity grows within 1 s of the queue building"
burst_grows uwsgi 8003 "$master" "http://127.0.0.1:8003/sleep?ms=300" 12 16
[ "$grow_ms" -lt 1000 ] || fail "a new worker came $grow_ms ms after the queue built"
pass "a new worker $grow_ms ms after the queue reached 2"
wait_for 15 workers_ge "$master" 4 || fail "only $(running_workers "$master") workers under the burst"
assert_match "$(journal_lines APP=scale ACTION=grow | head -n 1)" "grow scale by 1: [0-9]+ connections wait in the accept queue" "journal says why"
wait_for 5 all_placed scale || fail "new workers not placed"
pass "$(running_workers "$master") workers under the burst, all in scopes"
wait_load burst
max=$(journal_count APP=scale ACTION=grow)
pass "$max grow decisions"

step "quiet again: back to min_workers, never below"
wait_for 60 workers_eq "$master" 2 || fail "still $(running_workers "$master") workers after the burst"
sleep 6
assert_eq "$(running_workers "$master")" 2 "workers after a further quiet cool-down"
wait_load trickle
