#!/bin/bash
# The demo (`make demo`, or `make install` on a machine without systemd):
# in the VM, with the package installed, a real uWSGI app under load from a
# real HTTP client is put under adaptive-workers: each worker lands in its
# own scope, a leak pushes workers past their soft limit and they are
# recycled gracefully, and the load client counts zero failed requests.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

show() {
    printf '\n$ %s\n' "$*"
    "$@"
}

step "adaptive-workers is installed, enabled and running"
# (In the suite, as 99-demo, earlier scenarios' policies are cleared.)
fresh_daemon
show systemctl --no-pager --lines=0 status adaptive-workers

step "a uWSGI app: 4 workers, under load from a real HTTP client"
start_app shop
load_out=$AW_RESULT_DIR/demo-load.json
python3 "$AW_ROOT/guest/load.py" http://127.0.0.1:8001/ --duration 90 --concurrency 2 > "$load_out" &
load_pid=$!

step "a policy for it"
policy shop '# /etc/adaptive-workers/policies.d/shop.toml
unit = "uwsgi-shop.service"
server = "uwsgi"

[memory]
soft_limit = "80M"     # past it: MemoryHigh on the scope, and a graceful recycle
hard_limit = "200M"    # MemoryMax: enforced by the kernel in the scope
min_lifetime = "5s"

[uwsgi]
stats = "/run/shop/stats.sock"'
show cat /etc/adaptive-workers/policies.d/shop.toml
show adaptive-workers check
show systemctl reload adaptive-workers
wait_for 10 all_placed shop || fail "the workers were not placed"

step "every worker in its own scope; private memory is one read of memory.current"
show systemd-cgls --no-pager /aw.slice
show adaptive-workers status

step "a leak: each request keeps 8 MiB; workers pass 80M and are recycled gracefully"
for _ in $(seq 1 20); do
    for _ in 1 2 3 4; do
        http_get "http://127.0.0.1:8001/leak?mb=8" > /dev/null
    done
    [ "$(journal_count APP=shop ACTION=recycle)" -ge 2 ] && break
done
[ "$(journal_count APP=shop ACTION=recycle)" -ge 2 ] || fail "the leaking workers were not recycled"
sleep 3
show adaptive-workers events
show journalctl -u adaptive-workers --no-pager -o cat ACTION=recycle
printf '\n$ journalctl -u adaptive-workers -o verbose ACTION=recycle   (the structured fields)\n'
journalctl -u adaptive-workers --no-pager -o verbose ACTION=recycle |
    grep -E '^    (APP|WORKER_PID|SCOPE|ACTION|REASON|PRIVATE_BYTES|OUTCOME|DURATION_US)=' | head -n 8

step "after the recycles: new workers, placed in new scopes"
show adaptive-workers status
show adaptive-workers top --once

step "the load client ran the whole time"
wait "$load_pid"
result=$(cat "$load_out")
printf '%s requests, %s failed, p50 %s ms, p99 %s ms\n' "$(json_get "$result" requests)" \
    "$(json_get "$result" failures)" "$(json_get "$result" p50_ms)" "$(json_get "$result" p99_ms)"
[ "$(json_get "$result" failures)" -eq 0 ] || fail "requests failed during the demo"
pass "zero failed requests while workers were recycled"
