#!/bin/bash
# Issue 2, hard limit: MemoryMax on the worker's scope. A worker that
# grows past it is killed by the kernel inside its scope (a memcg OOM
# kill, not the host's OOM killer); the daemon notices the slice's
# oom_kill count going up and reports it; uWSGI respawns the worker and the
# daemon places the new one.
#
# No soft limit here on purpose: with one, the scope's MemoryHigh throttles
# a growing worker long before it can reach MemoryMax (the soft limit and
# its recycle are what normally act first; 52-soft-limit shows them).
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

fresh_daemon
policy shop '
unit = "uwsgi-shop.service"
server = "uwsgi"
[memory]
hard_limit = "150M"
[uwsgi]
stats = "/run/shop/stats.sock"'
start_app shop
aw_restart
wait_for 5 all_placed shop || fail "shop workers not placed"
oom_before=$(global_oom_kills)

step "a worker allocates past its hard limit"
if http_get "http://127.0.0.1:8001/leak?mb=200" > "$AW_RESULT_DIR/leak.out" 2>&1; then
    fail "a 200 MiB leak succeeded under a 150M hard limit: $(cat "$AW_RESULT_DIR/leak.out")"
fi
pass "the request died with its worker: $(tr -d '\n' < "$AW_RESULT_DIR/leak.out")"

step "the kernel killed it inside its scope"
wait_for 10 sh -c 'journalctl -k -b -o cat --no-pager | grep -q "oom_memcg=/aw.slice/aw-shop.slice/aw-shop-"' ||
    fail "no memcg OOM kill in an aw-shop scope in the kernel log"
kline=$(journalctl -k -b -o cat --no-pager | grep "oom_memcg=/aw.slice/aw-shop.slice/aw-shop-" | tail -n 1)
echo "$kline" > "$AW_RESULT_DIR/kernel-oom.txt"
assert_match "$kline" "constraint=CONSTRAINT_MEMCG" "the kill was confined to the worker's scope"
assert_eq "$(global_oom_kills)" "$oom_before" "global OOM kills"

step "the daemon reports it"
wait_for 5 journal_has APP=shop ACTION=oom-kill || fail "the daemon did not report the OOM kill"
assert_match "$(journal_lines APP=shop ACTION=oom-kill | head -n 1)" "hard limit of 150M" "journal names the hard limit"
assert_eq "$(app_counter shop oom_kills)" 1 "oom_kills in status"
adaptive-workers events | tee "$AW_RESULT_DIR/events.txt" | grep -q "oom-kill" || fail "events do not show the oom-kill"
pass "adaptive-workers events shows it"

step "uWSGI respawned the worker and it was placed"
wait_for 10 all_placed shop || fail "respawned worker not placed"
assert_eq "$(app_workers shop | wc -l)" 4 "shop workers"
http_ok http://127.0.0.1:8001/ || fail "shop does not answer after the kill"
pass "shop answers"
stop_app shop
