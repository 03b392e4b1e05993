#!/bin/bash
# Issue 7, faults survived: PID reuse. A worker exits and an unrelated
# process takes its PID (guest/takepid.py makes the kernel hand it over)
# before the daemon has noticed; then the daemon is asked to recycle "that
# worker". The unrelated process must never be signalled.
#   1. A daemon whose view is stale: no fork/exit events (CAP_NET_ADMIN
#      taken away) and a worker tick once a minute, so it still believes
#      the PID is its worker. The pidfd signaller opens the PID, finds the
#      process outside the worker's scope and refuses.
#   2. The daemon as shipped: the exit event made it forget the worker.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

dropin=/run/systemd/system/adaptive-workers.service.d/67-no-events.conf
cleanup() {
    systemctl stop aw-stranger.service 2>/dev/null || true
    rm -f "$dropin"
    systemctl daemon-reload
}
trap cleanup EXIT

fresh_daemon
policy shop '
unit = "uwsgi-shop.service"
server = "uwsgi"
[uwsgi]
stats = "/run/shop/stats.sock"'
start_app shop

# reuse_and_recycle: a worker dies, a stranger takes its PID, root asks
# the daemon to recycle that PID; sets out (the answer) and stranger
reuse_and_recycle() {
    local victim scope
    victim=$(app_workers shop | head -n 1)
    scope=$(scope_cgroup shop "$victim")
    [ "$(cgroup_of "$victim")" = "$scope" ] || fail "worker $victim is not in its scope"
    kill -KILL "$victim"
    wait_for 10 test ! -e "/proc/$victim" || fail "worker $victim did not go"
    systemctl stop aw-stranger.service 2>/dev/null || true
    systemd-run --quiet --unit=aw-stranger --collect \
        /usr/bin/python3 "$AW_ROOT/guest/takepid.py" "$victim" "$AW_RESULT_DIR/stranger-signals.txt"
    wait_for 20 test -e "/proc/$victim" || fail_unit aw-stranger.service "nobody took PID $victim"
    stranger=$victim
    assert_eq "$(cgroup_of "$stranger")" /system.slice/aw-stranger.service "the new process $stranger's cgroup"
    out=$(adaptive-workers recycle "$stranger" 2>&1) && fail "the daemon recycled PID $stranger: $out"
    pass "adaptive-workers recycle $stranger -> $out"
    sleep 2
    [ -e "/proc/$stranger" ] || fail "the stranger with PID $stranger is gone"
    assert_eq "$(cat "$AW_RESULT_DIR/stranger-signals.txt")" "" "signals the stranger received"
}

step "a daemon that has not noticed: the signaller refuses"
mkdir -p "$(dirname "$dropin")"
cat > "$dropin" <<'EOF'
[Service]
# No proc connector: exits are noticed at the worker tick only.
CapabilityBoundingSet=
CapabilityBoundingSet=CAP_KILL CAP_SYS_PTRACE CAP_DAC_OVERRIDE CAP_SYS_RESOURCE
EOF
global_policy '
[workers]
interval = "60s"'
systemctl daemon-reload
aw_restart
wait_for 10 all_placed shop || fail "shop workers not placed"
journal_lines | grep -q 'no fork events' || fail "the daemon still has fork events"
reuse_and_recycle
# The pidfd signaller checks the start time first (a worker is PID and
# start time), then the scope: either refusal names the stranger.
assert_match "$out" "process $stranger (started at [0-9]+, not at [0-9]+: another process,|is in /system.slice/aw-stranger.service, not in /aw.slice/aw-shop.slice/aw-shop-$stranger.scope:) not signalling it" \
    "refused by the pidfd signaller (the daemon still thought $stranger was its worker)"
logged=$(journal_lines | grep "recycle worker $stranger of shop: .*refused" | tail -n 1)
[ -n "$logged" ] || fail "the refused recycle is not in the daemon's journal"
pass "logged: $logged"
figure pid_reuse_refused_by_signaller 1

step "the daemon as shipped: the exit event made it forget the worker"
systemctl stop aw-stranger.service
rm -f "$dropin"
global_policy '# the built-in defaults'
systemctl daemon-reload
aw_restart
wait_for 10 all_placed shop || fail "shop workers not placed"
reuse_and_recycle
assert_match "$out" "process $stranger is not a managed worker" "refused: not a managed worker"
figure pid_reuse_refused_as_unknown 1
assert_eq "$(journal_count ACTION=kill)" 0 "kills"
stop_app shop
