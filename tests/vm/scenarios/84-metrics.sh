#!/bin/bash
# Issue 5, seeing what it does: the Prometheus endpoint passes a real
# parser and linter (promtool check metrics, from Debian's prometheus
# package) and says what status says; an operator's recycle is counted;
# `top --once` shows the same apps and workers. The outputs are kept as
# the README's examples.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

# scrape FILE: the endpoint's text
scrape() { curl -fsS --max-time 30 http://127.0.0.1:9464/metrics > "$1"; }

# sample FILE NAME [LABELS]: the value of one sample (labels as written)
sample() {
    local want=$2
    [ -z "${3:-}" ] || want="$2{$3}"
    awk -v want="$want" '$1 == want { print $2 }' "$1"
}

fresh_daemon
global_policy '[metrics]
listen = "127.0.0.1:9464"'
manage_shop 5
background_load steady http://127.0.0.1:8001/ --duration 40 --rate 5 --concurrency 2

step "the endpoint, read by a real parser"
out=$AW_RESULT_DIR/metrics.txt
scrape "$out" || fail "no metrics on 127.0.0.1:9464"
promtool check metrics < "$out" > "$AW_RESULT_DIR/promtool.txt" 2>&1 ||
    fail "promtool check metrics: $(head -n 5 "$AW_RESULT_DIR/promtool.txt")"
pass "promtool check metrics: no problem in $(grep -vc '^#' "$out") samples"
assert_eq "$(grep -c '^# TYPE' "$out")" "$(grep -c '^# HELP' "$out")" "every family has HELP and TYPE"

step "the figures are the daemon's"
assert_eq "$(sample "$out" adaptive_workers_app_workers 'app="shop"')" 4 "app_workers"
assert_eq "$(sample "$out" adaptive_workers_app_soft_limit_bytes 'app="shop"')" $((200 << 20)) "soft limit"
assert_eq "$(sample "$out" adaptive_workers_app_hard_limit_bytes 'app="shop"')" $((300 << 20)) "hard limit"
util=$(sample "$out" adaptive_workers_host_memory_utilisation_ratio)
awk -v u="$util" 'BEGIN { exit !(u > 0 && u < 1) }' || fail "host utilisation $util"
# agrees PID LABELS: the endpoint's private memory for the worker is its scope's
# memory.current. Both move while the worker serves, and the daemon reads
# each worker once a second: within 1 MiB, or half the larger of the two.
# A scope starts at 0 (a process moved into a cgroup leaves its charges
# behind) and grows fast in its first seconds, so up to 5 scrapes a second
# apart; a daemon publishing a wrong figure fails them all.
agrees() {
    local pid=$1 labels=$2 private current i
    for i in 1 2 3 4 5; do
        [ "$i" -eq 1 ] || { sleep 1; scrape "$out"; }
        private=$(sample "$out" adaptive_workers_worker_private_bytes "$labels")
        [ -n "$private" ] || fail "no private memory for worker $pid"
        current=$(scope_file shop "$pid" memory.current)
        awk -v a="$private" -v b="$current" 'BEGIN { d = a - b; if (d < 0) d = -d; m = a > b ? a : b; exit !(d <= m / 2 + 1048576) }' &&
            return 0
        echo "worker $pid: metrics say $private bytes, memory.current $current" >&2
    done
    return 1
}
for pid in $(workers_of shop); do
    labels="app=\"shop\",pid=\"$pid\",scope=\"aw-shop-$pid.scope\""
    agrees "$pid" "$labels" || fail "worker $pid: the endpoint's private memory never matched memory.current"
    threads=$(sample "$out" adaptive_workers_worker_threads "$labels")
    [ "${threads:-0}" -ge 1 ] || fail "worker $pid: threads '$threads'"
done
pass "per worker: private memory as memory.current, threads"

step "an operator's recycle is counted"
victim=$(workers_of shop | head -n 1)
adaptive-workers recycle "$victim" > "$AW_RESULT_DIR/recycle.txt" || fail "recycle $victim: $(cat "$AW_RESULT_DIR/recycle.txt")"
# recycled PID: the daemon's events say the operator's recycle was done
recycled() { adaptive-workers events | grep -Eq "recycle +shop worker $1: asked for by an operator \[done\]"; }
wait_for 30 recycled "$victim" || fail "no recycle of $victim in the events: $(adaptive-workers events | tail -n 3)"
assert_eq "$(journal_count APP=shop ACTION=recycle WORKER_PID="$victim" REASON='asked for by an operator' OUTCOME=done)" 1 \
    "journal entries of the operator's recycle, with their fields"
wait_for 10 all_placed shop || fail "the new worker was not placed"
scrape "$out"
done_n=$(awk '/^adaptive_workers_actions_total\{app="shop",action="recycle",reason="operator",outcome="done"\}/ { print $2 }' "$out")
assert_eq "${done_n:-0}" 1 "actions_total of operator recycles done"
promtool check metrics < "$out" > "$AW_RESULT_DIR/promtool-after.txt" 2>&1 ||
    fail "promtool check metrics after the recycle: $(head -n 5 "$AW_RESULT_DIR/promtool-after.txt")"

step "status and top say the same"
adaptive-workers status | tee "$AW_RESULT_DIR/status.txt"
adaptive-workers top --once | tee "$AW_RESULT_DIR/top.txt"
for pid in $(workers_of shop); do
    grep -qw "$pid" "$AW_RESULT_DIR/top.txt" || fail "top does not show worker $pid"
    grep -qw "$pid" "$AW_RESULT_DIR/status.txt" || fail "status does not show worker $pid"
done
assert_match "$(cat "$AW_RESULT_DIR/top.txt")" "shop" "top shows the app"
assert_match "$(cat "$AW_RESULT_DIR/top.txt")" "recycle" "top shows the recent recycle"
pass "status and top show the 4 workers"
wait_load steady
