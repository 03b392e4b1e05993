#!/bin/bash
# Issue 11, item 1: a graceful stop of a managed app is systemd's to
# finish. gunicorn waits up to its graceful timeout (30 s) for its workers
# to finish their requests; while it does, systemd reports the unit as
# "deactivating" and the workers' parent is the live master. The daemon
# used to count them as orphans then and SIGKILL their scopes: 0 of 3
# in-flight requests completed. Now: no signal, no kill, every request
# answered with 200; and `systemctl restart` likewise.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

fresh_daemon
policy blog '
unit = "gunicorn-blog.service"
server = "gunicorn"
[memory]
soft_limit = "200M"'
start_app blog
aw_restart
wait_for 10 all_placed blog || fail "blog workers not placed"

# in_flight VERB: three 5-second requests, then `systemctl VERB` while they
# are served; every request must end with 200.
in_flight() {
    local verb=$1 i codes t0
    rm -f "$AW_RESULT_DIR"/req-*.code
    for i in 1 2 3; do
        curl -s -o /dev/null -w '%{http_code}' --max-time 60 \
            "http://127.0.0.1:8002/sleep?ms=5000" > "$AW_RESULT_DIR/req-$i.code" &
    done
    sleep 1.5
    t0=$(date +%s%N)
    systemctl "$verb" gunicorn-blog.service
    figure "graceful_${verb}_ms" $((($(date +%s%N) - t0) / 1000000))
    wait
    codes=$(for f in "$AW_RESULT_DIR"/req-*.code; do printf '%s ' "$(cat "$f")"; done)
    assert_eq "$codes" "200 200 200 " "status codes of the requests in flight during systemctl $verb"
}

step "systemctl stop with requests in flight"
in_flight stop
assert_eq "$(journal_count APP=blog ACTION=reap)" 0 "reaps of blog's scopes"
assert_eq "$(journal_count APP=blog ACTION=kill)" 0 "kills of blog's workers"
assert_eq "$(journal_count APP=blog ACTION=recycle)" 0 "recycles of blog's workers"
pass "every request in flight completed, the daemon signalled nothing"

step "systemctl restart with requests in flight"
systemctl start gunicorn-blog.service
wait_for 30 all_placed blog || fail "blog workers not placed after the start"
in_flight restart
wait_for 30 all_placed blog || fail "blog workers not placed after the restart"
assert_eq "$(journal_count APP=blog ACTION=reap)" 0 "reaps of blog's scopes"
assert_eq "$(journal_count APP=blog ACTION=kill)" 0 "kills of blog's workers"
pass "restart: every request in flight completed, the new workers placed"
stop_app blog
