#!/bin/bash
# The test bed itself: the sample apps (uWSGI shop, gunicorn blog) come up
# as www-data with the expected number of workers, /leak makes one worker's
# private memory grow, and the load client reports what it sent. Later
# scenarios build on these; this one does not need the daemon.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"

for app in shop blog; do
    step "$app"
    start_app "$app"
    port=$(app_port "$app")
    mapfile -t workers < <(app_workers "$app")
    want=4
    [ "$app" = blog ] && want=3
    assert_eq "${#workers[@]}" "$want" "$app worker count"
    for pid in "${workers[@]}"; do
        [ "$(stat -c %U "/proc/$pid")" = www-data ] || fail "worker $pid does not run as www-data"
    done
    pass "all workers run as www-data"

    # /pid answers from one of the master's workers.
    pid=$(http_get "http://127.0.0.1:$port/pid")
    printf '%s\n' "${workers[@]}" | grep -qx "$pid" || fail "/pid answered $pid, not a worker"
    pass "/pid -> worker $pid"

    # /leak?mb=64 grows exactly the worker that served it.
    before=$(http_get "http://127.0.0.1:$port/mem")
    leak=$(http_get "http://127.0.0.1:$port/leak?mb=64")
    leaker=$(json_get "$leak" pid)
    anon_kb=$(awk '/^RssAnon:/ {print $2}' "/proc/$leaker/status")
    [ "$anon_kb" -ge $((64 * 1024)) ] || fail "worker $leaker RssAnon ${anon_kb} kB after leaking 64 MiB"
    pass "worker $leaker holds RssAnon $((anon_kb / 1024)) MiB after /leak?mb=64 (before: $before)"
    # The same worker serves /free only by chance; clean up by restarting.

    step "$app under load"
    result=$(load "http://127.0.0.1:$port/" --duration 5 --concurrency 4)
    echo "$result" > "$AW_RESULT_DIR/load-$app.json"
    requests=$(json_get "$result" requests)
    failures=$(json_get "$result" failures)
    [ "$failures" -eq 0 ] || fail "$failures of $requests requests failed: $(json_get "$result" errors)"
    [ "$requests" -ge 50 ] || fail "only $requests requests in 5 s"
    pass "$requests requests, 0 failures, p50 $(json_get "$result" p50_ms) ms, p99 $(json_get "$result" p99_ms) ms"
    stop_app "$app"
done

step "uWSGI stats socket"
start_app shop
stats=$(python3 -c '
import json, socket
s = socket.socket(socket.AF_UNIX); s.connect("/run/shop/stats.sock")
data = b""
while chunk := s.recv(65536): data += chunk
st = json.loads(data)
print(len(st["workers"]), st["listen_queue"])')
assert_eq "${stats%% *}" 4 "workers in the stats JSON"
stop_app shop
