#!/bin/bash
# inspect on a threaded uWSGI app. With threads = 50 each worker runs 49
# request threads (the 50th core is the main thread) with glibc's default
# stack, the RLIMIT_STACK soft limit (8 MiB): inspect shows them, and
# recommends threads-stacksize and LimitSTACK= with the address space it
# saves. With threads-stacksize = 64 the same threads reserve 64 KiB each.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

app=threads
unit=aw-threads.service
ini=/srv/aw-apps/threads.ini
port=8006

cleanup() {
    systemctl stop "$unit" 2>/dev/null || true
    rm -f "/etc/systemd/system/$unit" "$ini" "$AW_POLICY_DIR/$app.toml"
    systemctl daemon-reload
}
trap cleanup EXIT

workers() { pgrep -P "$(unit_prop "$unit" MainPID)" | sort -n; }
all_in_scopes() { all_placed "$app" "$unit"; }
# threads_with JSON BYTES [UPTO]: per worker, its non-main threads reserving
# at least BYTES and less than UPTO (default BYTES and a half): more than
# BYTES counts too, as the kernel merges a stack's mapping with an adjacent
# anonymous one (a 64 KiB stack was seen as 304 KiB, and as 1.08 MiB)
threads_with() {
    python3 - "$1" "$2" "${3:-$(($2 + $2 / 2))}" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
size, upto = int(sys.argv[2]), int(sys.argv[3])
for p in report["processes"]:
    if p["role"] == "worker":
        print(sum(1 for s in p["stacks"] if not s["main"] and size <= s["reserved_bytes"] < upto))
PY
}

# stack_metric NAME: per worker, the metric's value (one line each)
stack_metric() {
    local pid
    curl -fsS --max-time 30 http://127.0.0.1:9464/metrics > "$AW_RESULT_DIR/metrics.txt" ||
        fail "no metrics from the daemon"
    for pid in $(workers); do
        sed -n "s/^adaptive_workers_worker_$1{app=\"$app\",pid=\"$pid\",[^}]*} //p" "$AW_RESULT_DIR/metrics.txt" |
            grep . || fail "no $1 for worker $pid"
    done
}

fresh_daemon
global_policy '[metrics]
listen = "127.0.0.1:9464"'
install -d /srv/aw-apps
install -m 0644 "$AW_ROOT/apps/app.py" /srv/aw-apps/
cat > "$ini" <<INI
[uwsgi]
plugins = python3
master = true
processes = 2
threads = 50
http-socket = 127.0.0.1:$port
wsgi-file = /srv/aw-apps/app.py
stats = /run/aw-threads/stats.sock
need-app = true
INI
cat > "/etc/systemd/system/$unit" <<UNIT
[Unit]
Description=Threaded uWSGI app for inspect
[Service]
Type=notify
ExecStart=/usr/bin/uwsgi --ini $ini
RuntimeDirectory=aw-threads
KillSignal=SIGQUIT
UNIT
systemctl daemon-reload
policy "$app" "
unit = \"$unit\"
server = \"uwsgi\"
[uwsgi]
stats = \"/run/aw-threads/stats.sock\""
aw_restart
systemctl start "$unit" || fail_unit "$unit" "$unit did not start"
wait_for 60 http_ok "http://127.0.0.1:$port/" || fail_unit "$unit" "$app does not answer"
wait_for 10 all_in_scopes || fail "workers not placed"
assert_eq "$(workers | wc -l)" 2 "uWSGI workers"
assert_eq "$(unit_prop "$unit" LimitSTACKSoft)" 8388608 "RLIMIT_STACK soft limit of the service"

# all_threads_up: every worker runs its 50 threads (uWSGI starts them
# after the fork; under emulation that takes a moment)
all_threads_up() {
    local pid
    for pid in $(workers); do
        [ "$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")" -ge 50 ] || return 1
    done
}

step "threads = 50: 49 default 8 MiB stacks per worker, and a recommendation"
wait_for 30 all_threads_up || fail "workers did not start their 50 threads"
adaptive-workers inspect "$app" --json > "$AW_RESULT_DIR/before.json" || fail "inspect $app failed"
adaptive-workers inspect "$app" | tee "$AW_RESULT_DIR/before.txt"
for n in $(threads_with "$AW_RESULT_DIR/before.json" $((8 << 20))); do
    [ "$n" -ge 49 ] || fail "a worker has $n threads with an 8 MiB stack, not 49"
done
pass "every worker: at least 49 threads reserving 8 MiB"
for n in $(stack_metric default_stacks); do
    [ "$n" -ge 49 ] || fail "metrics: a worker has $n default stacks, not 49"
done
for n in $(stack_metric stack_saving_bytes); do
    [ "$n" -gt $((300 << 20)) ] || fail "metrics: a worker would save only $n bytes"
done
pass "metrics: 49 default stacks per worker, and what shrinking them saves"
text=$(cat "$AW_RESULT_DIR/before.txt")
assert_match "$text" "threads-stacksize = [0-9]+" "recommends threads-stacksize"
assert_match "$text" "LimitSTACK=[0-9]+[KM]" "recommends LimitSTACK="
assert_match "$text" "49 threads reserve the default 8M stack" "counts the default stacks"
assert_match "$text" "saves up to [0-9.]+M of address space" "says what it saves"
master=$(unit_prop "$unit" MainPID)
adaptive-workers inspect "$master" > "$AW_RESULT_DIR/by-pid.txt" || fail "inspect $master failed"
assert_match "$(head -n 1 "$AW_RESULT_DIR/by-pid.txt")" "^inspect $master: 3 process" "a master PID brings its children"

step "threads-stacksize = 64: the same threads reserve 64 KiB"
echo "threads-stacksize = 64" >> "$ini"
systemctl restart "$unit" || fail_unit "$unit" "$unit did not restart"
wait_for 60 http_ok "http://127.0.0.1:$port/" || fail_unit "$unit" "$app does not answer"
wait_for 10 all_in_scopes || fail "new workers not placed"
wait_for 30 all_threads_up || fail "workers did not start their 50 threads"
adaptive-workers inspect "$app" --json > "$AW_RESULT_DIR/after.json" || fail "inspect $app failed"
adaptive-workers inspect "$app" | tee "$AW_RESULT_DIR/after.txt"
for n in $(threads_with "$AW_RESULT_DIR/after.json" $((64 << 10)) $((4 << 20))); do
    [ "$n" -ge 49 ] || fail "a worker has $n threads with a 64 KiB stack, not 49"
done
pass "every worker: at least 49 threads reserving 64 KiB (up to 4 MiB with a merged neighbour), none 8 MiB"
# The endpoint reads stacks at most once a minute: a restarted daemon
# reads them at its first scrape.
aw_restart
wait_for 10 all_in_scopes || fail "workers not adopted"
for n in $(stack_metric default_stacks); do
    [ "$n" -eq 0 ] || fail "metrics: a worker still has $n default stacks"
done
pass "metrics: no default stacks left"
for n in $(threads_with "$AW_RESULT_DIR/after.json" $((8 << 20))); do
    [ "$n" -eq 0 ] || note "$n threads still have the default stack (made by the app or a library, not by uWSGI)"
done
journalctl -u "$unit" --since "$AW_SINCE" -o cat --no-pager | grep -q "threads stack size set to 64k" ||
    fail "uWSGI did not log its threads stack size"
pass "uWSGI: threads stack size set to 64k"
