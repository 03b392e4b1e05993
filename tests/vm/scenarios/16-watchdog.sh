#!/bin/bash
# The unit's safety net: a daemon that stops answering is killed by the
# watchdog (WatchdogSec=30s) and started again (Restart=on-failure), and one
# that crashes is restarted too.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"

ensure_installed
systemctl restart "$AW_UNIT" || fail_unit "$AW_UNIT" "the daemon did not start"
restarts=$(unit_prop "$AW_UNIT" NRestarts)
pid=$(unit_prop "$AW_UNIT" MainPID)

replaced() {
    local now
    now=$(unit_prop "$AW_UNIT" MainPID)
    [ "$now" != 0 ] && [ "$now" != "$1" ] && systemctl is-active --quiet "$AW_UNIT"
}

step "a hung daemon (SIGSTOP) is killed by the watchdog and restarted"
kill -STOP "$pid"
wait_for 60 replaced "$pid" || fail_unit "$AW_UNIT" "no restart within 60 s of stopping pid $pid"
assert_eq "$(unit_prop "$AW_UNIT" NRestarts)" $((restarts + 1)) "NRestarts"
journalctl -u "$AW_UNIT" --since "$AW_SINCE" -o cat --no-pager | grep -q 'Watchdog timeout' ||
    fail "systemd logged no watchdog timeout"
pass "watchdog timeout, then pid $(unit_prop "$AW_UNIT" MainPID) took over"

step "a crashed daemon is restarted"
# SIGABRT is how a panic ends (panic = "abort" in the release profile).
# (SIGSEGV sent with kill would not do: Rust's stack-overflow handler
# catches the first one.)
pid=$(unit_prop "$AW_UNIT" MainPID)
kill -ABRT "$pid"
wait_for 30 replaced "$pid" || fail_unit "$AW_UNIT" "no restart within 30 s of a crash of pid $pid"
assert_eq "$(unit_prop "$AW_UNIT" NRestarts)" $((restarts + 2)) "NRestarts"
