#!/bin/bash
# `apt remove` stops and removes the service but keeps the configuration;
# `apt purge` then removes /etc/adaptive-workers and systemd's record of
# the enablement.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"

ensure_installed
echo "# local edit by 92-remove-purge" >> "$AW_CONF"
install -m 0644 /usr/share/doc/adaptive-workers/examples/uwsgi-shop.toml \
    /etc/adaptive-workers/policies.d/shop.toml
wait_for 30 systemctl is-active --quiet "$AW_UNIT" ||
    fail_unit "$AW_UNIT" "the service is not active before removal"
pid=$(unit_prop "$AW_UNIT" MainPID)

step "apt remove"
apt-get remove -y -q -o Dpkg::Use-Pty=0 adaptive-workers </dev/null
assert_eq "$(dpkg-query -W -f='${db:Status-Abbrev}' adaptive-workers)" "rc " "dpkg status (removed, config kept)"
[ ! -e "/proc/$pid" ] || fail "the daemon (pid $pid) still runs"
pass "the daemon (pid $pid) is gone"
state=$(systemctl is-active "$AW_UNIT" || true)
[ "$state" != active ] || fail "the service is still active"
pass "service state: $state"
assert_no_path /usr/bin/adaptive-workers "$AW_UNIT_FILE" \
    /usr/share/dbus-1/system.d/org.adaptiveworkers.Daemon.conf
grep -q '^# local edit by 92-remove-purge$' "$AW_CONF" || fail "the edited conffile is gone"
assert_file "$AW_CONF" /etc/adaptive-workers/policies.d/shop.toml

step "apt purge"
apt-get purge -y -q -o Dpkg::Use-Pty=0 adaptive-workers </dev/null
dpkg-query -W -f='${db:Status-Abbrev}' adaptive-workers 2>/dev/null | grep -q '^i' &&
    fail "dpkg still has adaptive-workers"
pass "dpkg forgot the package"
assert_no_path /etc/adaptive-workers \
    /etc/systemd/system/multi-user.target.wants/adaptive-workers.service \
    /etc/systemd/system/adaptive-workers.service \
    /var/lib/systemd/deb-systemd-helper-enabled/adaptive-workers.service.dsh-also \
    /var/lib/systemd/deb-systemd-helper-masked/adaptive-workers.service
