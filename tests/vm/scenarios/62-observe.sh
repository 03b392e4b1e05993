#!/bin/bash
# Issue 2, observe mode: every decision is logged with its reason and
# nothing is done: no signal, no kill, no limit on the scopes.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

fresh_daemon
policy shop '
unit = "uwsgi-shop.service"
server = "uwsgi"
mode = "observe"
[memory]
soft_limit = "60M"
hard_limit = "500M"
min_lifetime = "1s"
[uwsgi]
stats = "/run/shop/stats.sock"'
start_app shop
aw_restart
wait_for 5 all_placed shop || fail "shop workers not placed (observe mode still places, to measure)"
pid=$(app_workers shop | head -n 1)
assert_eq "$(scope_file shop "$pid" memory.high)" max "memory.high in observe mode"
assert_eq "$(scope_file shop "$pid" memory.max)" max "memory.max in observe mode"

step "a worker passes the soft limit: logged, not acted on"
workers_before=$(app_workers shop)
# uWSGI spreads the requests over its 4 workers, so leak until one of
# them is past the limit (nothing is recycled: every worker only grows).
observed=false
for _ in $(seq 1 30); do
    http_get "http://127.0.0.1:8001/leak?mb=10" > /dev/null
    if wait_for 1 journal_has APP=shop ACTION=recycle MODE=observe; then observed=true; break; fi
done
$observed || wait_for 10 journal_has APP=shop ACTION=recycle MODE=observe ||
    fail "no observed decision logged; private memory: $(for w in $(app_workers shop); do scope_file shop "$w" memory.current; done | tr '\n' ' ')"
line=$(journal_lines APP=shop ACTION=recycle | head -n 1)
assert_match "$line" "^would recycle worker [0-9]+ of shop: private memory .* above the soft limit 60M" "logged with its reason"
sleep 3
assert_eq "$(app_workers shop)" "$workers_before" "workers (none recycled)"
assert_eq "$(journal_count APP=shop OUTCOME=done)" 0 "decisions carried out"
journalctl -u uwsgi-shop.service -u 'aw-shop-*' --since "$AW_SINCE" --no-pager -o cat | grep -q "Gracefully killing worker" &&
    fail "uWSGI logged a graceful kill in observe mode"
pass "uWSGI saw no signal"
adaptive-workers events | grep -q "(observe mode)" || fail "events do not mark observe mode"
pass "events show the decision in observe mode"
stop_app shop
