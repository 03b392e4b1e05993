#!/bin/bash
# Upgrading to a newer .deb (same files, higher version) keeps the admin's
# edit of the conffile and their policies, and restarts the service.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"

ensure_installed
old=$(dpkg-query -W -f='${Version}' adaptive-workers)
new_deb=$(pkg_file deb-upgrade)
new=$(dpkg-deb -f "$new_deb" Version)
dpkg --compare-versions "$new" gt "$old" || fail "$new is not newer than $old"

step "admin edits"
echo "# local edit by 90-upgrade" >> "$AW_CONF"
install -m 0644 /usr/share/doc/adaptive-workers/examples/gunicorn-blog.toml \
    /etc/adaptive-workers/policies.d/blog.toml
wait_for 30 systemctl is-active --quiet "$AW_UNIT" ||
    fail_unit "$AW_UNIT" "the service is not active before the upgrade"
invocation=$(unit_prop "$AW_UNIT" InvocationID)

step "upgrade $old -> $new"
install_deb "$new_deb"
assert_eq "$(dpkg-query -W -f='${Version}' adaptive-workers)" "$new" "installed version"
grep -q '^# local edit by 90-upgrade$' "$AW_CONF" || fail "the conffile edit is gone"
pass "the conffile edit is kept"
assert_no_path "$AW_CONF.dpkg-dist" "$AW_CONF.dpkg-new"
assert_file /etc/adaptive-workers/policies.d/blog.toml
assert_eq "$(systemctl is-enabled "$AW_UNIT")" enabled "still enabled"

step "restarted"
[ "$(unit_prop "$AW_UNIT" InvocationID)" != "$invocation" ] ||
    fail_unit "$AW_UNIT" "the service was not restarted (same InvocationID $invocation)"
pass "new InvocationID"
wait_for 30 systemctl is-active --quiet "$AW_UNIT" ||
    fail_unit "$AW_UNIT" "the service is not active after the upgrade"
pass "active after the upgrade"
