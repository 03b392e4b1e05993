#!/bin/bash
# `systemctl reload` makes the daemon re-read its policies (SIGHUP) without
# restarting, and it says so in the journal.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"

ensure_installed
wait_for 30 systemctl is-active --quiet "$AW_UNIT" ||
    fail_unit "$AW_UNIT" "the service is not active"
pid=$(unit_prop "$AW_UNIT" MainPID)

step "reload with one example policy in policies.d"
install -m 0644 /usr/share/doc/adaptive-workers/examples/uwsgi-shop.toml \
    /etc/adaptive-workers/policies.d/uwsgi-shop.toml
trap 'rm -f /etc/adaptive-workers/policies.d/uwsgi-shop.toml' EXIT
systemctl reload "$AW_UNIT" || fail_unit "$AW_UNIT" "systemctl reload failed"
reloaded() { daemon_journal | grep -qi 'reloaded'; }
wait_for 15 reloaded || fail_unit "$AW_UNIT" "no 'reloaded' line in the daemon's journal"
pass "journal: $(daemon_journal | grep -i -m1 'reloaded')"
assert_eq "$(unit_prop "$AW_UNIT" MainPID)" "$pid" "same main pid (reloaded, not restarted)"
assert_eq "$(unit_prop "$AW_UNIT" ActiveState)" active "still active"
