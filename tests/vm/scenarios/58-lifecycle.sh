#!/bin/bash
# Issue 2, lifecycle: stopping the app leaves zero scopes (they are PartOf
# its service); restarting it gets new scopes; restarting the daemon adopts
# the existing scopes and creates none; SIGTERM leaves the workers running.
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
soft_limit = "200M"
[uwsgi]
stats = "/run/shop/stats.sock"'
start_app shop
aw_restart
wait_for 5 all_placed shop || fail "shop workers not placed"
assert_eq "$(scope_count shop)" 4 "scopes"

step "stopping the app leaves zero scopes"
systemctl stop uwsgi-shop.service
wait_for 10 scopes_eq shop 0 || fail "$(scope_count shop) scopes left after stopping the app"
assert_eq "$(systemctl list-units --all --plain --no-legend 'aw-shop-*.scope' | wc -l)" 0 "aw-shop scope units"

step "restarting the app: new workers, new scopes"
start_app shop
wait_for 5 all_placed shop || fail "new workers not placed"
assert_eq "$(scope_count shop)" 4 "scopes"
systemctl restart uwsgi-shop.service
wait_for 30 http_ok http://127.0.0.1:8001/ || fail "shop did not come back"
wait_for 10 all_placed shop || fail "workers not placed after the app's restart"
assert_eq "$(scope_count shop)" 4 "scopes after the app's restart (the old ones are gone)"

step "restarting the daemon adopts the scopes and creates none"
# A worker is in its scope before the daemon logs the placement (at the
# job's end): wait for the entries, then for the next second, as --since
# counts whole seconds.
placements_logged() {
    local pid
    for pid in $(app_workers shop); do
        journal_has ACTION=place WORKER_PID="$pid" || return 1
    done
}
wait_for 10 placements_logged || fail "the placements of the new workers are not in the journal"
sleep 1
scopes_before=$(find /sys/fs/cgroup/aw.slice/aw-shop.slice -maxdepth 1 -name '*.scope' -printf '%f\n' | sort)
workers_before=$(app_workers shop)
since=$(date '+%Y-%m-%d %H:%M:%S')
aw_restart
sleep 2
scopes_after=$(find /sys/fs/cgroup/aw.slice/aw-shop.slice -maxdepth 1 -name '*.scope' -printf '%f\n' | sort)
assert_eq "$scopes_after" "$scopes_before" "scopes after the daemon's restart"
assert_eq "$(app_workers shop)" "$workers_before" "workers untouched by the restart"
assert_eq "$(journal_since "$since" count ACTION=adopt)" 4 "workers adopted"
assert_eq "$(journal_since "$since" count ACTION=place)" 0 "workers placed again"
assert_eq "$(app_counter shop adopted)" 4 "adopted, in status"

step "stopping the daemon leaves the workers running in their scopes"
systemctl stop "$AW_UNIT"
sleep 1
assert_eq "$(app_workers shop)" "$workers_before" "workers after the daemon stopped"
all_placed shop || fail "workers left their scopes"
pass "workers still in their scopes"
journal_lines | grep -q "workers stay in their scopes" || fail "no clean-exit message"
pass "clean exit logged"
systemctl start "$AW_UNIT"
stop_app shop
