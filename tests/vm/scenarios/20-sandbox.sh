#!/bin/bash
# The unit's sandbox allows everything the daemon needs and nothing it
# should not have: guest/sandbox-probe.py runs in a copy of the installed
# unit where only ExecStart= and Type= differ, against the uWSGI sample app
# (www-data, private runtime directory). Does not need the daemon.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"

ensure_installed
start_app shop
master=$(app_master shop)
worker=$(app_workers shop | head -n 1)
[ -n "$worker" ] || fail "the shop has no workers"
cgroup=$(sed -n 's/^0:://p' "/proc/$master/cgroup")
pass "shop master $master, worker $worker, cgroup $cgroup"

# A non-loopback destination that exists, so that only IPAddressDeny= can
# refuse it (the VM has no network otherwise).
ip link add aw-probe0 type dummy
ip addr add 192.0.2.1/24 dev aw-probe0
ip link set aw-probe0 up
probe=aw-sandbox-probe.service
cleanup() {
    ip link del aw-probe0 2>/dev/null || true
    rm -f "/run/systemd/system/$probe"
    systemctl daemon-reload
}
trap cleanup EXIT

step "probe unit = installed unit with another ExecStart"
{
    sed -e "s|^ExecStart=.*|ExecStart=/usr/bin/python3 $AW_ROOT/guest/sandbox-probe.py|" \
        -e 's|^Type=notify$|Type=oneshot|' \
        -e '/^\(ExecReload\|WatchdogSec\|Restart\|RestartSec\|NotifyAccess\)=/d' \
        -e '/^\[Install\]/,$d' "$AW_UNIT_FILE"
    echo "Environment=AW_PROBE_MASTER=$master AW_PROBE_WORKER=$worker AW_PROBE_PORT=8001"
    echo "Environment=AW_PROBE_STATS=/run/shop/stats.sock AW_PROBE_FIFO=/run/shop/master.fifo"
    echo "Environment=AW_PROBE_CGROUP=$cgroup"
} > "/run/systemd/system/$probe"
save "/run/systemd/system/$probe"
# Everything but the swapped lines must be identical to the real unit.
changed=$(diff <(grep -v '^\(ExecStart\|Type\|ExecReload\|WatchdogSec\|Restart\|RestartSec\|NotifyAccess\|Environment\)=' "/run/systemd/system/$probe") \
    <(sed '/^\[Install\]/,$d' "$AW_UNIT_FILE" | grep -v '^\(ExecStart\|Type\|ExecReload\|WatchdogSec\|Restart\|RestartSec\|NotifyAccess\)=') || true)
[ -z "$changed" ] || fail "the probe unit differs from the real one: $changed"
pass "sandbox lines identical to $AW_UNIT_FILE"
systemctl daemon-reload

step "probe"
rc=0
systemctl start "$probe" || rc=$?
journalctl -u "$probe" --since "$AW_SINCE" -o cat --no-pager | tee "$AW_RESULT_DIR/probe.log"
[ "$rc" -eq 0 ] || fail "the probe failed inside the sandbox (see above)"
grep -q '^all checks passed$' "$AW_RESULT_DIR/probe.log" || fail "the probe did not finish"
pass "every check passed inside the unit's sandbox"

step "the FIFO write reached uWSGI"
stats_logged() { journalctl -u uwsgi-shop.service --since "$AW_SINCE" -o cat | grep -q 'workers'; }
if wait_for 10 stats_logged; then
    pass "uWSGI logged its stats after 's' on the FIFO"
else
    note "uWSGI logged no stats (the write itself succeeded)"
fi
