#!/bin/bash
# Issue 16, what an operator meets first. An unprivileged user's action is
# "permission denied" with exit status 4, not a raw bus error. A policy
# naming a unit systemd does not know: `check` warns (file, line, unit),
# the daemon says so once per reload, `status` says "unit not found". The
# example units the package installs start the sample apps, and a
# `systemctl restart` of each finishes within 10 s with the daemon placing
# the new workers.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

examples=/usr/share/doc/adaptive-workers/examples
cleanup() {
    systemctl stop shop-api.service blog.service 2>/dev/null || true
    rm -f /etc/systemd/system/shop-api.service /etc/systemd/system/blog.service \
        /etc/uwsgi/shop.ini "$AW_POLICY_DIR"/{ghost,shop,blog}.toml
    rm -rf /srv/shop /srv/blog
    systemctl daemon-reload
}
trap cleanup EXIT

as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; }

fresh_daemon
# The examples use /run/shop as the sample shop does.
stop_app shop
stop_app blog

step "an unprivileged action: permission denied, exit status 4"
for cmd in "recycle 1" "pause shop" "reload"; do
    rc=0
    # shellcheck disable=SC2086 # the words are the command's arguments
    out=$(as_nobody adaptive-workers $cmd 2>&1) || rc=$?
    assert_eq "$rc" 4 "exit status of nobody's adaptive-workers $cmd"
    [[ $out == "adaptive-workers: permission denied: only root may "* ]] ||
        fail "nobody: adaptive-workers $cmd: $out"
    if [ "$(wc -l <<<"$out")" -ne 1 ] || [[ $out == *"matched rules"* ]]; then
        fail "nobody: adaptive-workers $cmd says more than one clear line: $out"
    fi
    pass "nobody: $out"
done

step "a policy for a unit systemd does not know"
policy ghost '
unit = "acc-ghost.service"
server = "uwsgi"'
adaptive-workers check > /dev/null 2> "$AW_RESULT_DIR/check-ghost.txt" ||
    fail "check refused the policy: $(cat "$AW_RESULT_DIR/check-ghost.txt")"
warning="warning: $AW_POLICY_DIR/ghost.toml:2: unit \"acc-ghost.service\" is not known to systemd (LoadState=not-found): check the name"
grep -qxF "$warning" "$AW_RESULT_DIR/check-ghost.txt" ||
    fail "check exits 0 but does not warn: $(cat "$AW_RESULT_DIR/check-ghost.txt")"
pass "check: $warning"

# ghost_lines SINCE: the daemon's lines about the missing unit since then
ghost_lines() { journal_since "$1" cat APP=ghost | grep -c 'acc-ghost.service.*not known to systemd' || true; }
ghost_lines_ge() { [ "$(ghost_lines "$1")" -ge "$2" ]; }
since=$(date '+%Y-%m-%d %H:%M:%S')
for n in 1 2; do
    systemctl reload "$AW_UNIT" || fail_unit "$AW_UNIT" "reload $n failed"
    wait_for 15 ghost_lines_ge "$since" "$n" || fail "reload $n: the journal does not say the unit is missing"
    # A few worker ticks: said once per reload, not once a tick.
    sleep 3
    assert_eq "$(ghost_lines "$since")" "$n" "journal lines about acc-ghost.service after $n reload(s)"
done
pass "journal: $(journal_since "$since" cat APP=ghost | grep -m1 'not known to systemd')"
ghost_status() { adaptive-workers status | grep -qF 'ghost (acc-ghost.service, uwsgi, enforce): unit not found'; }
wait_for 10 ghost_status || fail "status does not say 'unit not found': $(adaptive-workers status)"
adaptive-workers status > "$AW_RESULT_DIR/status-ghost.txt"
pass "status: $(grep -F 'ghost (' "$AW_RESULT_DIR/status-ghost.txt")"
state=$(status_json | python3 -c '
import json, sys
print(next(a for a in json.load(sys.stdin)["apps"] if a["name"] == "ghost").get("unit_state"))')
assert_eq "$state" not-found "unit_state in status --json"
rm -f "$AW_POLICY_DIR/ghost.toml"

step "the example units, as the package installs them"
assert_file "$examples/shop-api.service" "$examples/uwsgi-shop.ini" "$examples/uwsgi-shop.toml" \
    "$examples/blog.service" "$examples/gunicorn-blog.toml"
# The sample app where the examples expect an app's code; nothing else changed.
install -D -m 0644 "$AW_ROOT/apps/app.py" /srv/shop/app.py
install -D -m 0644 "$AW_ROOT/apps/app.py" /srv/blog/app.py
install -D -m 0644 "$examples/uwsgi-shop.ini" /etc/uwsgi/shop.ini
install -m 0644 "$examples/shop-api.service" "$examples/blog.service" /etc/systemd/system/
install -m 0644 "$examples/uwsgi-shop.toml" "$AW_POLICY_DIR/shop.toml"
install -m 0644 "$examples/gunicorn-blog.toml" "$AW_POLICY_DIR/blog.toml"
adaptive-workers import-uwsgi /etc/uwsgi/shop.ini --unit shop-api.service > /dev/null 2> "$AW_RESULT_DIR/import.txt" ||
    fail "import-uwsgi: $(cat "$AW_RESULT_DIR/import.txt")"
awk '/^note: a unit that runs this ini/ { on = 1; next } /^note: / { on = 0 } on' "$AW_RESULT_DIR/import.txt" |
    sed 's/^  //' > "$AW_RESULT_DIR/import.service"
diff -u "$examples/shop-api.service" "$AW_RESULT_DIR/import.service" ||
    fail "import-uwsgi prints another unit than the example"
pass "import-uwsgi prints the example unit for the example ini"
systemctl daemon-reload
systemctl start shop-api.service || fail_unit shop-api.service "the example uWSGI unit did not start"
systemctl start blog.service || fail_unit blog.service "the example gunicorn unit did not start"
wait_for 60 http_ok http://127.0.0.1:8080/ || fail_unit shop-api.service "shop does not answer"
wait_for 60 http_ok http://127.0.0.1:8000/ || fail_unit blog.service "blog does not answer"
adaptive-workers check > /dev/null 2> "$AW_RESULT_DIR/check-examples.txt" ||
    fail "check: $(cat "$AW_RESULT_DIR/check-examples.txt")"
! grep -q 'not known to systemd' "$AW_RESULT_DIR/check-examples.txt" ||
    fail "check warns about the example units: $(cat "$AW_RESULT_DIR/check-examples.txt")"
systemctl reload "$AW_UNIT"
wait_for 20 all_placed shop shop-api.service || fail "shop's workers not placed"
wait_for 20 all_placed blog blog.service || fail "blog's workers not placed"
pass "both apps managed: $(workers_of shop shop-api.service | wc -l) + $(workers_of blog blog.service | wc -l) workers in scopes"

for unit in shop-api.service blog.service; do
    app=${unit%%[.-]*}
    master=$(unit_prop "$unit" MainPID)
    start=$(date +%s%N)
    timeout 60 systemctl restart "$unit" || fail_unit "$unit" "systemctl restart $unit failed"
    ms=$((($(date +%s%N) - start) / 1000000))
    figure "restart_ms_$app" "$ms"
    [ "$ms" -le 10000 ] || fail_unit "$unit" "systemctl restart $unit took $ms ms"
    [ "$(unit_prop "$unit" MainPID)" != "$master" ] || fail "$unit has the same main PID after the restart"
    wait_for 20 all_placed "$app" "$unit" || fail "$app's new workers not placed after the restart"
    pass "systemctl restart $unit: $ms ms, the new workers in their scopes"
done
