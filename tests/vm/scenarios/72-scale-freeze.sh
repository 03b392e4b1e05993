#!/bin/bash
# Issue 4, scale_down = "freeze": idle workers are parked (their scopes
# frozen) instead of stopped; a burst thaws them first: capacity back in
# milliseconds, no fork, no app import. Each thaw's duration (decision to
# systemd's answer) is saved; the worker serves again right after. Zero
# failed requests, including while workers are being frozen.
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
min_workers = 1
max_workers = 6
spare_idle = 0
grow_backlog = 2
cooldown_up = "200ms"
cooldown_down = "3s"
scale_down = "freeze"'
start_unit_app uwsgi-scale.service 8003
trap 'systemctl stop uwsgi-scale.service' EXIT
aw_restart
master=$(unit_prop uwsgi-scale.service MainPID)
wait_for 5 all_placed scale || fail "scale workers not placed"
background_load trickle http://127.0.0.1:8003/ --duration 50 --rate 3 --concurrency 1

step "quiet: idle workers are frozen, not stopped"
wait_for 40 frozen_ge scale 2 || fail "only $(frozen_scopes scale) frozen scopes after 40 s of quiet"
assert_eq "$(running_workers "$master")" 3 "worker processes (frozen ones still exist)"
assert_match "$(journal_lines APP=scale ACTION=freeze | head -n 1)" "freeze worker [0-9]+ of scale: [0-9]+ idle workers" "journal says why"
assert_eq "$(journal_count APP=scale ACTION=thaw REASON='the worker was busy when frozen')" 0 "workers found busy right after freezing"
pass "$(frozen_scopes scale) scopes frozen"

step "a burst thaws the parked workers first"
background_load burst "http://127.0.0.1:8003/sleep?ms=300" --duration 10 --concurrency 12
wait_for 10 frozen_eq scale 0 || fail "$(frozen_scopes scale) scopes still frozen under the burst"
durations_us APP=scale ACTION=thaw > "$AW_RESULT_DIR/thaw-us.txt"
worst=$(sort -n "$AW_RESULT_DIR/thaw-us.txt" | tail -n 1)
[ -n "$worst" ] || fail "no thaw in the journal"
echo "thaw_us_max $worst" >> "$AW_RESULT_DIR/figures.txt"
[ "$worst" -lt 100000 ] || fail "a thaw took $worst us"
pass "$(wc -l < "$AW_RESULT_DIR/thaw-us.txt") thaws, the slowest $((worst / 1000)) ms from decision to done"
# No fork while a parked worker could have been thawed instead: every
# grow comes after the last thaw. Only this daemon's (70-scale-uwsgi's
# daemon, managing an app also called scale, ran into this scenario).
daemon=_PID=$(unit_prop "$AW_UNIT" MainPID)
first_grow=$(journal_query __MONOTONIC_TIMESTAMP "$daemon" APP=scale ACTION=grow | head -n 1)
last_thaw=$(journal_query __MONOTONIC_TIMESTAMP "$daemon" APP=scale ACTION=thaw | tail -n 1)
[ -z "$first_grow" ] || [ "$first_grow" -gt "$last_thaw" ] ||
    fail "a worker was forked ($first_grow) before the last parked one was thawed ($last_thaw)"
pass "parked workers were thawed before any fork ($(journal_count "$daemon" APP=scale ACTION=grow) forks after)"
wait_load burst
wait_load trickle
