#!/bin/bash
# The installed D-Bus policy: root owns org.adaptiveworkers.Daemon and may
# call everything; any other user may read (Status, Events, Workers,
# introspection, property reads, Peer) but not Reload, RecycleWorker,
# PauseApp, ResumeApp or Properties.Set, nor own the name. Tested with a
# stand-in service (guest/fake-bus-service.py), so that part does not need
# the daemon (stopped meanwhile); then the same through the real daemon and
# its CLI.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"

ensure_installed
name=org.adaptiveworkers.Daemon
path=/org/adaptiveworkers/Daemon
iface=org.adaptiveworkers.Daemon1
was_active=$(systemctl is-active "$AW_UNIT" || true)
systemctl stop "$AW_UNIT"
cleanup() {
    systemctl stop aw-fake-bus.service 2>/dev/null || true
    [ "$was_active" != active ] || systemctl start "$AW_UNIT" || true
}

trap cleanup EXIT

# dbus-daemon picks up new policy files by itself; make it certain.
busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig
systemd-run --quiet --unit=aw-fake-bus --collect \
    /usr/bin/python3 "$AW_ROOT/guest/fake-bus-service.py"
owned() { busctl status "$name" >/dev/null 2>&1; }
wait_for 20 owned || fail_unit aw-fake-bus.service "root could not own $name"
pass "root owns $name"

as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; }

# allowed USER METHOD-ARGS...: the call succeeds
allowed() {
    local who=$1 out
    shift
    if [ "$who" = root ]; then out=$(busctl "$@" 2>&1); else out=$(as_nobody busctl "$@" 2>&1); fi ||
        fail "$who: busctl $* was refused: $out"
    pass "$who may: ${*: -1} -> $(head -c 60 <<<"$out" | tr '\n' ' ')"
}
# denied METHOD-ARGS...: nobody gets AccessDenied
denied() {
    local out
    if out=$(as_nobody busctl "$@" 2>&1); then
        fail "nobody: busctl $* succeeded: $out"
    fi
    [[ $out == *"Access denied"* || $out == *AccessDenied* ]] ||
        fail "nobody: busctl $* failed, but not with access denied: $out"
    pass "nobody may not: $*"
}

step "any user may read"
for m in Status Events Workers; do
    allowed nobody call "$name" "$path" "$iface" "$m"
done
allowed nobody introspect --xml-interface "$name" "$path"
allowed nobody get-property "$name" "$path" "$iface" Version
allowed nobody call "$name" "$path" org.freedesktop.DBus.Properties GetAll s "$iface"
allowed nobody call "$name" "$path" org.freedesktop.DBus.Peer Ping

step "only root may act"
denied call "$name" "$path" "$iface" Reload
denied call "$name" "$path" "$iface" RecycleWorker u 1
denied call "$name" "$path" "$iface" PauseApp s shop
denied call "$name" "$path" "$iface" ResumeApp s shop
denied set-property "$name" "$path" "$iface" Version s x
allowed root call "$name" "$path" "$iface" Reload
allowed root call "$name" "$path" "$iface" RecycleWorker u 1
allowed root call "$name" "$path" "$iface" PauseApp s shop

step "only root may own the name"
systemctl stop aw-fake-bus.service
out=$(as_nobody python3 "$AW_ROOT/guest/fake-bus-service.py" --try-own) ||
    fail "nobody could own $name: $out"
pass "nobody: $out"

step "the real daemon: anyone may read, only root may act"
systemctl stop aw-fake-bus.service 2>/dev/null || true
systemctl start "$AW_UNIT" || fail_unit "$AW_UNIT" "the daemon did not start"
wait_for 20 owned || fail_unit "$AW_UNIT" "the daemon does not own $name"
out=$(as_nobody adaptive-workers status 2>&1) || fail "nobody: adaptive-workers status failed: $out"
pass "nobody: adaptive-workers status -> $(head -n 1 <<<"$out")"
out=$(as_nobody adaptive-workers events --max 1 2>&1) || fail "nobody: adaptive-workers events failed: $out"
pass "nobody: adaptive-workers events"
if out=$(as_nobody adaptive-workers reload 2>&1); then
    fail "nobody: adaptive-workers reload succeeded: $out"
fi
grep -qi 'denied' <<<"$out" || fail "nobody: adaptive-workers reload failed, but not as denied: $out"
pass "nobody: adaptive-workers reload refused: $(head -n 1 <<<"$out")"
out=$(adaptive-workers reload 2>&1) || fail "root: adaptive-workers reload failed: $out"
pass "root: adaptive-workers reload -> $(head -n 1 <<<"$out")"
for cmd in "recycle 1" "pause shop" "resume shop"; do
    # shellcheck disable=SC2086 # the words are the command's arguments
    if out=$(as_nobody adaptive-workers $cmd 2>&1); then
        fail "nobody: adaptive-workers $cmd succeeded: $out"
    fi
    grep -qi 'denied' <<<"$out" || fail "nobody: adaptive-workers $cmd failed, but not as denied: $out"
    pass "nobody: adaptive-workers $cmd refused"
done

step "a bus policy loosened by mistake: the daemon still refuses non-root changes"
loose=/etc/dbus-1/system.d/zz-aw-test-loose.conf
cat > "$loose" <<'EOF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <!-- A user context: applied after every default-context rule, so this
       lets nobody's calls through whatever the order of the files. -->
  <policy user="nobody">
    <allow send_destination="org.adaptiveworkers.Daemon"/>
  </policy>
</busconfig>
EOF
trap 'rm -f "$loose"; busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig || true; cleanup' EXIT
busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig
# busctl would print any AccessDenied as "Access denied"; the CLI shows the
# daemon's own message.
for cmd in "reload" "recycle 1" "pause shop" "resume shop"; do
    # shellcheck disable=SC2086 # the words are the command's arguments
    if out=$(as_nobody adaptive-workers $cmd 2>&1); then
        fail "nobody: adaptive-workers $cmd went through a loosened bus policy: $out"
    fi
    [[ $out == *"only root may change adaptive-workers"* ]] ||
        fail "nobody: adaptive-workers $cmd failed, but not by the daemon's own check: $out"
    pass "nobody: adaptive-workers $cmd refused by the daemon itself: $out"
done
rm -f "$loose"
busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig
