#!/bin/bash
# Issue 14, Unicorn: Debian 12's unicorn serving a Rack app of our own
# (apps/config.ru, 2 workers, preload_app true). check reads the master's
# configuration; every worker is placed in its own scope, a respawned one
# within 1 s; one that allocates past the hard limit is killed by the
# kernel inside its scope and reported; a leaking one past the soft limit
# gets SIGQUIT (Unicorn's graceful stop) and exits 0; a burst grows the
# count (TTIN to the master), quiet shrinks it (TTOU). Zero failed
# requests from the load beside, and no worker killed by Unicorn's own
# timeout.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

unit=unicorn-shelf.service
port=8007
cleanup() { systemctl stop "$unit" || true; }
trap cleanup EXIT

# shelf_policy MEMORY_LINES: the app's policy with these [memory] keys
shelf_policy() {
    policy shelf "
unit = \"$unit\"
server = \"unicorn\"
[memory]
min_lifetime = \"1s\"
$1
[scaling]
min_workers = 2
max_workers = 4
spare_idle = 0
grow_backlog = 2
cooldown_up = \"500ms\"
cooldown_down = \"3s\""
}

# unicorn_log: what the master and its workers logged in this scenario
unicorn_log() { journalctl -u "$unit" -u 'aw-shelf-*' --since "$AW_SINCE" --no-pager -o cat; }

fresh_daemon
global_policy '[metrics]
listen = "127.0.0.1:9464"'
shelf_policy 'hard_limit = "150M"'
start_unit_app "$unit" "$port"
aw_restart
master=$(unit_prop "$unit" MainPID)

step "check reads the master's configuration; every worker in its own scope"
adaptive-workers check > /dev/null 2> "$AW_RESULT_DIR/check.txt" || fail "check failed: $(cat "$AW_RESULT_DIR/check.txt")"
assert_match "$(cat "$AW_RESULT_DIR/check.txt")" \
    "the Unicorn master \\(PID $master\\) reads /srv/aw-apps/unicorn-shelf.rb: worker_processes 2, timeout 60 s, preload_app true" \
    "check names the master's settings"
if grep -q "^warning: .*shelf.toml" "$AW_RESULT_DIR/check.txt"; then
    fail "check warns about a sound Unicorn setup: $(grep "^warning: .*shelf.toml" "$AW_RESULT_DIR/check.txt")"
fi
wait_for 10 all_placed shelf "$unit" || fail "shelf workers not placed"
pass "$(workers_of shelf "$unit" | wc -l) workers placed"
adaptive-workers status > "$AW_RESULT_DIR/status.txt"
assert_match "$(cat "$AW_RESULT_DIR/status.txt")" "shelf \\($unit, unicorn, enforce\\)" "status names the kind"
curl -fsS --max-time 30 http://127.0.0.1:9464/metrics > "$AW_RESULT_DIR/metrics.txt" || fail "no metrics"
grep -q "^adaptive_workers_app_info{app=\"shelf\",unit=\"$unit\",server=\"unicorn\"" "$AW_RESULT_DIR/metrics.txt" ||
    fail "no app_info for shelf with server=\"unicorn\""
pass "metrics: app_info with server=\"unicorn\""
background_load trickle "http://127.0.0.1:$port/" --duration 120 --rate 4 --concurrency 1

step "hard limit: the kernel kills the worker inside its scope"
oom_before=$(global_oom_kills)
if http_get "http://127.0.0.1:$port/leak?mb=200" > "$AW_RESULT_DIR/leak.out" 2>&1; then
    fail "a 200 MiB leak succeeded under a 150M hard limit: $(cat "$AW_RESULT_DIR/leak.out")"
fi
wait_for 10 sh -c 'journalctl -k -b -o cat --no-pager | grep -q "oom_memcg=/aw.slice/aw-shelf.slice/aw-shelf-"' ||
    fail "no memcg OOM kill in an aw-shelf scope in the kernel log"
assert_eq "$(global_oom_kills)" "$oom_before" "global OOM kills"
wait_for 5 journal_has APP=shelf ACTION=oom-kill || fail "the daemon did not report the OOM kill"
assert_match "$(journal_lines APP=shelf ACTION=oom-kill | head -n 1)" "hard limit of 150M" "journal names the hard limit"
wait_for 10 workers_eq "$master" 2 || fail "Unicorn did not respawn the killed worker"
wait_for 5 all_placed shelf "$unit" || fail "the respawned worker was not placed"
newest=$(workers_of shelf "$unit" | tail -n 1)
ms=$(placement_ms "$newest")
figure unicorn_respawn_placement_ms "$ms"
[ "$ms" -lt 1000 ] || fail "Unicorn worker placed $ms ms after its fork"
pass "respawned worker $newest placed $ms ms after its fork"

step "soft limit: a leaking worker gets SIGQUIT, finishes, exits 0"
shelf_policy 'soft_limit = "100M"
hard_limit = "400M"'
aw_restart
wait_for 10 all_placed shelf "$unit" || fail "workers not adopted"
recycled=
# Small steps: past MemoryHigh (the soft limit) every allocation is
# throttled until the daemon lifts it for the recycle.
for i in $(seq 1 100); do
    http_get "http://127.0.0.1:$port/leak?mb=5" > /dev/null || fail "leak request $i failed"
    if journal_has APP=shelf ACTION=recycle; then
        recycled=$(journal_query WORKER_PID APP=shelf ACTION=recycle | head -n 1)
        break
    fi
done
[ -n "$recycled" ] || fail "no recycle after $i leak requests of 5 MiB"
assert_match "$(journal_lines APP=shelf ACTION=recycle | head -n 1)" \
    "recycle worker $recycled of shelf: private memory [0-9.]+M is above the soft limit 100M" "journal says why"
wait_for 20 test ! -e "/proc/$recycled" || fail "worker $recycled still alive 20 s after SIGQUIT"
wait_for 10 sh -c "journalctl -u $unit --since '$AW_SINCE' -o cat --no-pager | grep -q 'reaped #<Process::Status: pid $recycled exit 0>'" ||
    fail "Unicorn did not reap worker $recycled with exit 0: $(unicorn_log | grep "pid $recycled" || true)"
pass "Unicorn reaped worker $recycled: exit 0"
wait_for 10 workers_eq "$master" 2 || fail "Unicorn did not respawn the recycled worker"
wait_for 5 all_placed shelf "$unit" || fail "the respawned worker was not placed"
assert_eq "$(journal_count APP=shelf ACTION=kill)" 0 "kills (the graceful recycle sufficed)"
end_load trickle

step "a burst: TTIN as the queue builds; quiet: TTOU back to 2"
burst_grows unicorn "$port" "$master" "http://127.0.0.1:$port/sleep?ms=300" 8 10
pass "a new worker $grow_ms ms after the queue reached 2"
wait_load burst
[ "$(running_workers "$master")" -le 4 ] || fail "more than max_workers: $(running_workers "$master")"
journal_has APP=shelf ACTION=grow || fail "no grow in the journal"
wait_for 30 workers_eq "$master" 2 || fail "still $(running_workers "$master") workers 30 s after the burst"
journal_has APP=shelf ACTION=shrink || fail "no shrink in the journal"
pass "back to 2 workers"
if unicorn_log | grep -q "timeout ("; then
    fail "Unicorn killed a worker for its timeout: $(unicorn_log | grep "timeout (")"
fi
pass "no worker killed by Unicorn's timeout"
