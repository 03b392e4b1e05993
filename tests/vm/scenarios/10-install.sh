#!/bin/bash
# Fresh install of the .deb with apt: the files land where they belong, the
# service is enabled and started, and the daemon reached READY.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"

step "install"
purge_all
deb=$(pkg_file deb)
install_deb "$deb"
deb_installed || fail "dpkg does not list adaptive-workers as installed"
version=$(dpkg-query -W -f='${Version}' adaptive-workers)
pass "installed $(basename "$deb") ($version)"

step "files"
assert_file /usr/bin/adaptive-workers "$AW_UNIT_FILE" "$AW_CONF" \
    /usr/share/dbus-1/system.d/org.adaptiveworkers.Daemon.conf \
    /usr/share/man/man1/adaptive-workers.1.gz \
    /usr/share/man/man1/adaptive-workers-daemon.1.gz \
    /usr/share/bash-completion/completions/adaptive-workers \
    /usr/share/zsh/vendor-completions/_adaptive-workers \
    /usr/share/fish/vendor_completions.d/adaptive-workers.fish \
    /usr/share/doc/adaptive-workers/examples/uwsgi-shop.toml \
    /usr/share/doc/adaptive-workers/copyright
[ -d /etc/adaptive-workers/policies.d ] || fail "no /etc/adaptive-workers/policies.d"
pass "/etc/adaptive-workers/policies.d exists"
conffiles=$(dpkg-query -W -f='${Conffiles}' adaptive-workers)
assert_match "$conffiles" "$AW_CONF" "the global policy is a conffile"
assert_match "$(/usr/bin/adaptive-workers --version)" "^adaptive-workers ${version%%-*}\$" \
    "the binary reports the package's upstream version"
zcat /usr/share/man/man1/adaptive-workers.1.gz | grep -q '^\.TH' || fail "man page is not roff"
pass "man page is roff"
# shellcheck disable=SC1091
complete_line=$(bash -c '. /usr/share/bash-completion/completions/adaptive-workers && complete -p adaptive-workers')
assert_match "$complete_line" '^complete .* adaptive-workers$' "bash completion registers"

step "service enabled, started, READY"
assert_eq "$(systemctl is-enabled "$AW_UNIT" 2>&1)" enabled "is-enabled"
wait_for 30 systemctl is-active --quiet "$AW_UNIT" ||
    fail_unit "$AW_UNIT" "the service is not active after install"
# Type=notify: "active" is only reached after READY=1.
state=$(systemctl show -p ActiveState -p SubState "$AW_UNIT" | paste -sd' ')
assert_eq "$state" "ActiveState=active SubState=running" "state"
pid=$(unit_prop "$AW_UNIT" MainPID)
[ "$pid" -gt 0 ] || fail "no main pid"
status_text=$(unit_prop "$AW_UNIT" StatusText)
[ -n "$status_text" ] || fail "the daemon sent no STATUS= text"
pass "StatusText: $status_text"
# Still the same process a little later: not crash-looping.
sleep 3
assert_eq "$(unit_prop "$AW_UNIT" MainPID)" "$pid" "main pid after 3 s"
assert_eq "$(unit_prop "$AW_UNIT" NRestarts)" 0 "NRestarts"

step "journal"
started=$(journalctl -u "$AW_UNIT" --since "$AW_SINCE" -o cat \
    MESSAGE_ID=39f53479d3a045ac8e11786248231fbf --no-pager)
[ -n "$started" ] || fail "systemd logged no 'Started' for $AW_UNIT"
pass "systemd: $started"
own=$(journalctl --since "$AW_SINCE" -o cat _PID="$pid" --no-pager | head -n 5)
[ -n "$own" ] || fail "the daemon (pid $pid) logged nothing"
pass "the daemon logs: $(head -n 1 <<<"$own")"

step "placement and OOM protection"
assert_eq "$(cat "/proc/$pid/cgroup")" "0::/adaptive-workers.service" "cgroup (directly under the root slice)"
assert_eq "$(cat /sys/fs/cgroup/adaptive-workers.service/memory.min)" 33554432 "memory.min (MemoryMin=32M)"
assert_eq "$(cat /sys/fs/cgroup/adaptive-workers.service/memory.max)" max "memory.max (no limit)"
assert_eq "$(cat "/proc/$pid/oom_score_adj")" -900 "oom_score_adj"

systemctl show "$AW_UNIT" > "$AW_RESULT_DIR/systemctl-show.txt"
