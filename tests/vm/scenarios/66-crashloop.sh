#!/bin/bash
# Issue 7, faults survived: an app that crash-loops. First its master
# crashes every few seconds and systemd restarts it (the old master's
# workers live on, orphaned: the daemon must kill their scopes), then its
# workers die right after they start (a generic master respawning them at
# once). Neither may
# leave a scope behind, make the daemon spin, flood PID 1 with D-Bus calls
# or the journal with lines; the daemon says clearly what goes on.
# Figures: forks, the daemon's D-Bus calls (all, and StartTransientUnit),
# its CPU, its journal lines, per phase.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

window=${AW_CRASH_WINDOW:-30}

fresh_daemon
install -d /srv/aw-apps
install -m 0644 "$AW_ROOT/apps/forker.py" /srv/aw-apps/
policy crashy '
unit = "aw-crashy.service"
server = "generic"'
aw_restart

# crashy ARGS...: the forker as aw-crashy.service, restarted whenever it ends
crashy() {
    systemctl stop aw-crashy.service 2>/dev/null || true
    systemctl reset-failed aw-crashy.service 2>/dev/null || true
    systemd-run --quiet --unit=aw-crashy -p Restart=always -p RestartSec=1 \
        -p StartLimitIntervalSec=0 -p LimitCORE=0 \
        /usr/bin/python3 /srv/aw-apps/forker.py "$@"
}

# forks: processes started on this host so far
forks() { awk '/^processes/ { print $2 }' /proc/stat; }

# observe PHASE: watch the daemon for $window s and record its figures
observe() {
    local phase=$1 pid cpu0 forks0 lines0 calls starts cpu lines nforks
    pid=$(unit_prop "$AW_UNIT" MainPID)
    bus_monitor_start "$AW_RESULT_DIR/$phase-calls.txt"
    cpu0=$(cpu_ticks "$pid")
    forks0=$(forks)
    lines0=$(journal_count)
    sleep "$window"
    cpu=$(($(cpu_ticks "$pid") - cpu0))
    nforks=$(($(forks) - forks0))
    lines=$(($(journal_count) - lines0))
    bus_monitor_stop
    calls=$(bus_calls "$AW_RESULT_DIR/$phase-calls.txt")
    starts=$(bus_calls "$AW_RESULT_DIR/$phase-calls.txt" StartTransientUnit)
    figure "${phase}_window_s" "$window"
    figure "${phase}_forks" "$nforks"
    figure "${phase}_dbus_calls" "$calls"
    figure "${phase}_start_transient_unit_calls" "$starts"
    figure "${phase}_daemon_cpu_percent" "$(cpu_percent "$cpu" "$window")"
    figure "${phase}_journal_lines" "$lines"
    assert_eq "$(unit_prop "$AW_UNIT" MainPID)" "$pid" "$phase: the daemon did not restart"
    phase_calls=$calls phase_starts=$starts phase_cpu=$cpu phase_lines=$lines
}

# no_leftovers: once the app is stopped, no scope, no scope unit
no_leftovers() {
    systemctl stop aw-crashy.service
    wait_for 30 scopes_eq crashy 0 || fail "$(scope_count crashy) scopes left after stopping the app"
    assert_eq "$(systemctl list-units --all --plain --no-legend 'aw-crashy-*.scope' | wc -l)" 0 "aw-crashy scope units left"
}

hz=$(getconf CLK_TCK)

# no_orphan_scopes: every process in a worker scope of crashy is a child
# of the current master (right after a crash, until the daemon has seen
# it, the old master's orphans are there)
no_orphan_scopes() {
    local master dir pid ppid
    master=$(unit_prop aw-crashy.service MainPID)
    [ "$master" != 0 ] || return 1
    for dir in "$(slice_dir crashy)"/aw-*.scope; do
        [ -d "$dir" ] || continue
        while read -r pid; do
            ppid=$(awk '{ sub(/^.*\) /, ""); print $2 }' "/proc/$pid/stat" 2>/dev/null) || continue
            [ "$ppid" = "$master" ] || return 1
        done < "$dir/cgroup.procs"
    done
}

# First, while the daemon holds no back-off from young deaths: each master
# must live long enough for its workers to be placed (6 s; the VM is slow).
step "a master that crashes every 6 s, restarted by systemd"
crashy --children 4 --master-life 6
observe master
[ "$phase_calls" -le $((window * 20)) ] || fail "$phase_calls D-Bus calls in $window s"
[ "$phase_lines" -le $((window * 4)) ] || fail "$phase_lines journal lines in $window s"
[ "$phase_cpu" -le $((hz * window / 2)) ] || fail "the daemon used $(cpu_percent "$phase_cpu" "$window")% CPU"
restarts=$(unit_prop aw-crashy.service NRestarts)
figure master_crashes "$restarts"
[ "$restarts" -ge 2 ] || fail "the master crashed only $restarts times"
# The old master's workers outlive it (orphans) in their scopes: systemd
# does not stop PartOf= scopes on an automatic restart; the daemon kills
# them. Between crashes no scope holds anything but the current master's
# workers.
wait_for 30 no_orphan_scopes || fail "scopes of an earlier master's workers are left: $(ls -d "$(slice_dir crashy)"/aw-*.scope)"
reaped=$(journal_lines | grep -c "outlived its master" || true)
figure master_orphan_scopes_killed "$reaped"
[ "$reaped" -ge 4 ] || fail "only $reaped orphaned workers' scopes killed in $restarts crashes"
pass "$reaped scopes of orphaned workers killed; now $(scope_count crashy) scopes, all of the current master's workers"
pass "said: $(journal_lines | grep -m 1 "outlived its master")"
journal_lines | grep -c 'runs with main PID' > "$AW_RESULT_DIR/master-changes.txt" || true
pass "the daemon logged $(cat "$AW_RESULT_DIR/master-changes.txt") master changes"
no_leftovers

step "workers that die 0.2 s after they start, respawned at once"
crashy --children 4 --child-life 0.2 --respawn-delay 0.02
observe young
# Without a back-off every respawn costs a StartTransientUnit (and a log
# line); with it, placement waits until a worker has lived a while.
[ "$phase_starts" -le 30 ] || fail "$phase_starts StartTransientUnit calls for workers that die at once"
pass "$phase_starts StartTransientUnit calls in $window s"
[ "$phase_calls" -le $((window * 10)) ] || fail "$phase_calls D-Bus calls in $window s"
[ "$phase_lines" -le $((window * 2)) ] || fail "$phase_lines journal lines in $window s"
[ "$phase_cpu" -le $((hz * window / 2)) ] || fail "the daemon used $(cpu_percent "$phase_cpu" "$window")% CPU"
journal_lines | grep -q 'die right after they start' || fail "the daemon did not say why it holds back"
pass "said: $(journal_lines | grep -m 1 'die right after they start')"
no_leftovers

step "healthy workers again: placed at once"
crashy --children 4
wait_for 40 all_placed crashy || fail "healthy workers not placed"
pass "$(scope_count crashy) workers placed"
no_leftovers

systemctl reset-failed aw-crashy.service 2>/dev/null || true
