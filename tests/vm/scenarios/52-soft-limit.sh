#!/bin/bash
# Issue 2, soft limit: a leaking app under load. When a worker's private
# memory (its scope's memory.current) passes the soft limit, the daemon
# recycles it gracefully (uWSGI: SIGHUP; gunicorn: SIGTERM): it finishes
# its request and exits, the master respawns it, the new worker is placed.
# Zero failed requests, for the leaking requests and for the load beside.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

# leak_until_recycled APP PORT: /leak?mb=4 requests until the daemon has
# recycled a worker of APP; prints that worker's pid
leak_until_recycled() {
    local app=$1 port=$2 i
    for i in $(seq 1 200); do
        http_get "http://127.0.0.1:$port/leak?mb=4" > /dev/null ||
            { echo "leak request $i failed" >&2; return 1; }
        if [ "$(journal_count APP="$app" ACTION=recycle)" -gt 0 ]; then
            journal_query WORKER_PID APP="$app" ACTION=recycle | head -n 1
            return 0
        fi
    done
    echo "no recycle after $i leak requests" >&2
    return 1
}

fresh_daemon
for app in shop blog; do
    server=uwsgi; unit=uwsgi-shop.service
    [ "$app" = blog ] && { server=gunicorn; unit=gunicorn-blog.service; }
    policy "$app" "
unit = \"$unit\"
server = \"$server\"
[memory]
soft_limit = \"100M\"
hard_limit = \"400M\"
min_lifetime = \"1s\""
done
aw_restart

for app in shop blog; do
    port=$(app_port "$app")
    signal=SIGHUP
    [ "$app" = blog ] && signal=SIGTERM
    step "$app: a leaking worker passes the soft limit under load"
    start_app "$app"
    wait_for 5 all_placed "$app" || fail "$app workers not placed"
    workers_before=$(app_workers "$app" | wc -l)
    background_load "load-$app" "http://127.0.0.1:$port/" --duration 25 --concurrency 3
    recycled=$(leak_until_recycled "$app" "$port") || fail "$app: the leak never led to a recycle"
    line=$(journal_lines APP="$app" ACTION=recycle | head -n 1)
    assert_match "$line" "recycle worker $recycled of $app: private memory [0-9.]+M is above the soft limit 100M" "journal says why"
    private=$(journal_query PRIVATE_BYTES APP="$app" ACTION=recycle | head -n 1)
    [ "$private" -gt $((100 << 20)) ] || fail "PRIVATE_BYTES $private is not above the soft limit"
    pass "PRIVATE_BYTES=$private in the journal"

    step "$app: the worker finished and exited, the master respawned, the new one is placed"
    wait_for 20 test ! -e "/proc/$recycled" || fail "worker $recycled still alive 20 s after the recycle"
    pass "worker $recycled exited"
    wait_for 10 all_placed "$app" || fail "$app: respawned worker not placed"
    assert_eq "$(app_workers "$app" | wc -l)" "$workers_before" "$app worker count after the respawn"
    assert_eq "$(journal_count APP="$app" ACTION=kill)" 0 "kills (the graceful recycle sufficed)"
    if [ "$app" = shop ]; then
        # The worker logs from its own scope now: its lines belong to
        # aw-shop-PID.scope, so the service's log needs the scopes too.
        journalctl -u uwsgi-shop.service -u 'aw-shop-*' --since "$AW_SINCE" --no-pager -o cat |
            grep -q "Gracefully killing worker" ||
            fail "uWSGI did not log a graceful kill for the SIGHUP"
        pass "uWSGI logged \"Gracefully killing worker\" ($signal)"
    fi
    wait_load "load-$app"
    stop_app "$app"
done
