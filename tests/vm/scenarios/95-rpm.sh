#!/bin/bash
# The .rpm from the same build, on the same Debian VM (rpm --nodeps: the
# dependencies are Fedora names): its files land, its scriptlets enable and
# start the service, an upgrade keeps the modified %config(noreplace) and
# restarts, and erase stops and disables the service.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"

rpm_opts=(--nodeps --force-debian)
purge_all
rpm_file=$(pkg_file rpm)

step "rpm -i"
rpm -i "${rpm_opts[@]}" "$rpm_file"
pass "installed $(rpm -q adaptive-workers)"
mapfile -t files < <(rpm -ql adaptive-workers)
assert_file "${files[@]}"
assert_eq "$(rpm -qc adaptive-workers)" "$AW_CONF" "%config files"
[ -d /etc/adaptive-workers/policies.d ] || fail "%post did not create policies.d"
pass "%post created /etc/adaptive-workers/policies.d"
assert_eq "$(systemctl is-enabled "$AW_UNIT" 2>&1)" enabled "%post enabled the service"
starting=$(journalctl -u "$AW_UNIT" --since "$AW_SINCE" -o cat \
    MESSAGE_ID=7d4958e842da4a758f6c1cdc7b36dcc5 --no-pager)
[ -n "$starting" ] || fail "%post did not start the service (no 'Starting' in the journal)"
pass "%post started the service: $(head -n 1 <<<"$starting")"
wait_for 30 systemctl is-active --quiet "$AW_UNIT" ||
    fail_unit "$AW_UNIT" "the service is not active after rpm -i"
pass "active"

step "rpm -U keeps the modified config and restarts"
echo "# local edit by 95-rpm" >> "$AW_CONF"
invocation=$(unit_prop "$AW_UNIT" InvocationID)
rpm -U "${rpm_opts[@]}" "$(pkg_file rpm-upgrade)"
pass "upgraded to $(rpm -q adaptive-workers)"
grep -q '^# local edit by 95-rpm$' "$AW_CONF" || fail "the config edit is gone"
pass "the config edit is kept"
assert_no_path "$AW_CONF.rpmnew"
[ "$(unit_prop "$AW_UNIT" InvocationID)" != "$invocation" ] ||
    fail_unit "$AW_UNIT" "%postun did not restart the service"
pass "restarted (new InvocationID)"

step "rpm -e"
pid=$(unit_prop "$AW_UNIT" MainPID)
rpm -e --nodeps adaptive-workers
rpm_installed && fail "rpm still lists adaptive-workers"
[ "$pid" -eq 0 ] || [ ! -e "/proc/$pid" ] || fail "the daemon (pid $pid) still runs"
state=$(systemctl is-active "$AW_UNIT" || true)
[ "$state" != active ] || fail "the service is still active"
pass "stopped ($state)"
assert_no_path /usr/bin/adaptive-workers "$AW_UNIT_FILE" \
    /etc/systemd/system/multi-user.target.wants/adaptive-workers.service
assert_file "$AW_CONF.rpmsave"
pass "the modified config was kept as .rpmsave"
rm -rf /etc/adaptive-workers
