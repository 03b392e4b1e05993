#!/bin/bash
# Issue 7, faults survived: `kill -9` of the daemon, 20 times, under load.
# systemd restarts it each time (Restart=on-failure); the workers are
# untouched (zero failed requests, none recycled or killed by the daemon);
# the existing scopes are adopted, none is created twice and none is left
# behind. Every tenth time a worker is recycled while the daemon is down:
# its successor, born unplaced, is placed by the next daemon.
# Figures: time from the kill to the new daemon's READY, adoptions.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

kills=${AW_KILLS:-20}

# fresh_daemon without its restart: one daemon start fewer
ensure_installed
rm -f "$AW_POLICY_DIR"/*.toml
global_policy "# the built-in defaults"
manage_shop
restarts0=$(unit_prop "$AW_UNIT" NRestarts)
background_load load-kill9 http://127.0.0.1:8001/ --duration 600 --concurrency 2 --rate 20

master=$(app_master shop)
slice=$(slice_dir shop)

# running OLD_PID: systemd has started a new daemon process (it may still
# be starting up)
running() {
    local now
    now=$(unit_prop "$AW_UNIT" MainPID)
    [ "$now" != 0 ] && [ "$now" != "$1" ]
}

# ready OLD_PID: a new daemon, READY (Type=notify: active only once it has
# adopted and placed what it found)
ready() { running "$1" && systemctl is-active --quiet "$AW_UNIT"; }

# scopes_match_workers: every worker of the master in its own scope, and
# every scope of the app holding exactly one process. Builtins only past
# one pgrep: forks cost tens of ms each in the VM.
prefix="0::$(scope_cgroup shop 0)"
prefix=${prefix%0.scope}
scopes_match_workers() {
    local workers pid dir procs n=0
    workers=$(pgrep -P "$master") || return 1
    for pid in $workers; do
        [ "$(< "/proc/$pid/cgroup")" = "$prefix$pid.scope" ] || return 1
        n=$((n + 1))
    done
    for dir in "$slice"/aw-*.scope; do
        [ -d "$dir" ] || continue
        mapfile -t procs < "$dir/cgroup.procs"
        [ "${#procs[@]}" -eq 1 ] || return 1
        n=$((n - 1))
    done
    [ "$n" -eq 0 ]
}

# Nine kills in ten hit a daemon as soon as systemd has started it, in the
# middle of its start-up (adoption included); every tenth waits for the
# new daemon to be READY and checks the scopes, with a worker recycled
# while no daemon ran.
step "kill -9 the daemon $kills times"
# From here on: the journal counts below are about the kills only.
# (--since counts whole seconds: start at the next one, and wait for it.)
AW_SINCE=$(date -d '+1 second' '+%Y-%m-%d %H:%M:%S')
sleep 1.2
recycled=()
: > "$AW_RESULT_DIR/recover-ms.txt"
last_kill=0
readies=0
for i in $(seq 1 "$kills"); do
    # systemd gives up after 5 starts in 10 s (StartLimitBurst): keep the
    # kills at least 2.6 s apart.
    while [ $(($(date +%s%N) - last_kill)) -lt 2600000000 ]; do sleep 0.1; done
    pid=$(unit_prop "$AW_UNIT" MainPID)
    [ "$pid" != 0 ] || fail_unit "$AW_UNIT" "no daemon to kill (#$i)"
    t0=$(date +%s%N)
    last_kill=$t0
    kill -KILL "$pid"
    if [ $((i % 10)) -ne 0 ]; then
        wait_for 60 running "$pid" || fail_unit "$AW_UNIT" "no new daemon within 60 s of kill -9 #$i"
        echo "kill #$i: a new daemon started after $((($(date +%s%N) - t0) / 1000000)) ms"
        continue
    fi
    # While no daemon runs: uWSGI's graceful recycle of one worker.
    victim=$(pgrep -P "$master" | head -n 1)
    kill -HUP "$victim"
    recycled+=("$victim")
    wait_for 120 ready "$pid" || fail_unit "$AW_UNIT" "no READY daemon within 120 s of kill -9 #$i"
    ms=$((($(date +%s%N) - t0) / 1000000))
    echo "$ms" >> "$AW_RESULT_DIR/recover-ms.txt"
    readies=$((readies + 1))
    wait_for 15 scopes_match_workers ||
        fail "after kill #$i: $(scope_count shop) scopes for $(app_workers shop | wc -l) workers: $(ls "$slice")"
    echo "kill #$i: a new daemon READY after $ms ms, every worker in its own scope (worker $victim recycled meanwhile)"
done
pass "$kills kills; after every tenth a READY daemon with every worker in its own scope"

step "workers untouched, scopes adopted, none duplicated or left behind"
assert_eq "$(unit_prop "$AW_UNIT" NRestarts)" $((restarts0 + kills)) "NRestarts"
end_load load-kill9
assert_eq "$(journal_count ACTION=recycle)" 0 "recycles by the daemon"
assert_eq "$(journal_count ACTION=kill)" 0 "kills by the daemon"
adopted=$(journal_count ACTION=adopt)
placed=$(journal_count ACTION=place)
# A daemon that was READY adopted the workers it found in scopes (at least
# 3 of the 4: one may be the successor of a worker recycled meanwhile,
# which it placed instead); daemons killed while starting may have adopted
# some too.
[ "$adopted" -ge $((3 * readies)) ] || fail "only $adopted adoptions by $readies READY daemons"
pass "$adopted adoptions, $placed placements in $kills restarts"
failed=$(journal_lines | grep -c 'failed to place' || true)
assert_eq "$failed" 0 "failed placements (a scope created twice fails with 'already exists')"
scopes_match_workers || fail "scopes and workers differ at the end"
pass "$(scope_count shop) scopes for $(app_workers shop | wc -l) workers, each scope holding its worker"
for pid in "${recycled[@]}"; do
    [ ! -e "/sys/fs/cgroup$(scope_cgroup shop "$pid")" ] || fail "the scope of recycled worker $pid is left behind"
done
pass "no scope left behind by the ${#recycled[@]} recycled workers"
assert_eq "$(systemctl list-units --all --plain --no-legend --state=failed 'aw-shop-*.scope' | wc -l)" 0 "failed scope units"

sort -n "$AW_RESULT_DIR/recover-ms.txt" > "$AW_RESULT_DIR/recover-sorted.txt"
figure kill9_restarts "$kills"
figure kill9_ready_ms_min "$(head -n 1 "$AW_RESULT_DIR/recover-sorted.txt")"
figure kill9_ready_ms_max "$(tail -n 1 "$AW_RESULT_DIR/recover-sorted.txt")"
figure kill9_adopted "$adopted"
figure kill9_placed "$placed"
figure kill9_requests "$(json_get "$(cat "$AW_RESULT_DIR/load-kill9.json")" requests)"
figure kill9_failed_requests "$(json_get "$(cat "$AW_RESULT_DIR/load-kill9.json")" failures)"
stop_app shop
