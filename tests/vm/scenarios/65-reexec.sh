#!/bin/bash
# Issue 7, faults survived: `systemctl daemon-reload` and `systemctl
# daemon-reexec` while the daemon runs, under load. PID 1 drops off the bus
# and comes back (a re-exec gives it a new connection); the daemon must
# carry on talking to it: same daemon process, no restart, a worker
# respawned afterwards placed in its own scope, the existing scopes kept,
# root's reload over D-Bus answered. One worker is also recycled right as
# PID 1 re-executes, so that its successor's placement meets the gap.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

fresh_daemon
manage_shop
daemon_pid=$(unit_prop "$AW_UNIT" MainPID)
restarts0=$(unit_prop "$AW_UNIT" NRestarts)
background_load load-reexec http://127.0.0.1:8001/ --duration 600 --concurrency 2 --rate 20

# recycle_and_place WHAT: a graceful recycle of one worker; its successor
# must be placed; sets placed_ms to the time from the old worker's exit to
# every worker being in its scope again (the successor is forked at once;
# an upper bound: the check itself takes seconds in the VM)
recycle_and_place() {
    local old t0
    old=$(app_workers shop | head -n 1)
    kill -HUP "$old"
    wait_for 20 test ! -e "/proc/$old" || fail "worker $old did not exit on SIGHUP"
    t0=$(date +%s%N)
    wait_for 60 all_placed shop || fail "$1: the successor of worker $old was not placed"
    placed_ms=$((($(date +%s%N) - t0) / 1000000))
    pass "$1: the successor of worker $old placed within $placed_ms ms of its exit"
}

# carried_on WHAT: the same daemon, answering, with every worker in a scope
carried_on() {
    assert_eq "$(unit_prop "$AW_UNIT" MainPID)" "$daemon_pid" "$1: daemon PID"
    assert_eq "$(unit_prop "$AW_UNIT" NRestarts)" "$restarts0" "$1: daemon restarts"
    systemctl is-active --quiet "$AW_UNIT" || fail_unit "$AW_UNIT" "$1: the daemon is not active"
    out=$(adaptive-workers reload 2>&1) || fail "$1: root's reload over D-Bus failed: $out"
    pass "$1: reload over D-Bus -> $out"
    assert_eq "$(scope_count shop)" "$(app_workers shop | wc -l)" "$1: scopes"
}

step "daemon-reload"
systemctl daemon-reload
carried_on "after daemon-reload"

step "daemon-reexec"
t0=$(date +%s%N)
systemctl daemon-reexec
figure reexec_ms $((($(date +%s%N) - t0) / 1000000))
carried_on "after daemon-reexec"
recycle_and_place "after daemon-reexec"
figure reexec_successor_placed_within_ms "$placed_ms"

step "a worker recycled while PID 1 re-executes"
victim=$(app_workers shop | head -n 1)
systemctl daemon-reexec &
reexec=$!
kill -HUP "$victim"
wait "$reexec"
wait_for 20 test ! -e "/proc/$victim" || fail "worker $victim did not exit"
t0=$(date +%s%N)
wait_for 60 all_placed shop || fail "the successor of $victim was not placed after the re-exec"
placed_ms=$((($(date +%s%N) - t0) / 1000000))
figure reexec_during_recycle_placed_within_ms "$placed_ms"
pass "successor placed $placed_ms ms after its predecessor exited"
carried_on "after a recycle during daemon-reexec"

step "no failed request, no action, problems logged then gone"
end_load load-reexec
assert_eq "$(journal_count ACTION=recycle)" 0 "recycles by the daemon"
assert_eq "$(journal_count ACTION=kill)" 0 "kills by the daemon"
journal_lines > "$AW_RESULT_DIR/daemon-messages.txt"
n=$(grep -ci -e 'fail' -e 'error' "$AW_RESULT_DIR/daemon-messages.txt" || true)
figure reexec_daemon_error_lines "$n"
note "$n error lines in the daemon's journal (saved in daemon-messages.txt)"
stop_app shop
