#!/bin/bash
# Issue 11, item 2: to tell whether freezing is safe, the daemon (root,
# OOMScoreAdjust=-900) reads every --ini on the uWSGI master's command
# line, which the app can rewrite. A master whose command line names a FIFO
# and /dev/zero as --ini, under scale_down = "freeze": `status` answers
# within 1 s throughout, the daemon's RSS stays under 15 MB, it is never
# restarted, and freezing is refused with a reason that names the file.
#
# How the master's argv comes to name them: uWSGI could not start with
# `--ini /run/evil.fifo --ini /dev/zero` itself (it would wait on the FIFO,
# then read /dev/zero until it ran out of memory). So it starts from a
# normal ini, and the app rewrites the master's argv, as any app may do to
# its own memory: uWSGI imports the WSGI file in the master before it
# forks the workers (no lazy-apps), and that file overwrites the argument
# area the kernel shows as /proc/PID/cmdline (arg_start..arg_end, fields
# 48 and 49 of /proc/self/stat) with "uwsgi --ini A --ini B". The master
# then runs on, serving, with that command line. Two masters in turn: the
# FIFO first, then /dev/zero first (the daemon stops at the first file it
# cannot read, so each gets to be the one it tries).
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

UNIT=uwsgi-evil.service
PORT=8005
FIFO=/run/evil.fifo
ORDER=/srv/aw-apps/evil-order

cleanup() {
    systemctl stop "$UNIT" 2>/dev/null || true
    rm -f "/etc/systemd/system/$UNIT" "$FIFO"
    systemctl daemon-reload || true
}
trap cleanup EXIT

fresh_daemon
install -d /srv/aw-apps
install -m 0644 "$AW_ROOT"/apps/*.py "$AW_ROOT"/apps/*.ini /srv/aw-apps/
rm -f "$FIFO"
mkfifo -m 0644 "$FIFO"

cat > /srv/aw-apps/evil_argv.py <<'EOF'
"""The sample app, whose master rewrites its own command line at import
to name the ini files listed in /srv/aw-apps/evil-order."""
import ctypes
import sys

sys.path.insert(0, "/srv/aw-apps")
from app import application  # noqa: E402,F401


def rewrite_argv(args):
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # fields[0] is field 3 (state): arg_start, arg_end are fields 48, 49.
    start, end = int(fields[45]), int(fields[46])
    new = b"\0".join(a.encode() for a in args) + b"\0"
    if len(new) > end - start:
        raise RuntimeError(f"argv has {end - start} bytes, {len(new)} needed")
    ctypes.memmove(start, new.ljust(end - start, b"\0"), end - start)


with open("/srv/aw-apps/evil-order") as f:
    files = f.read().split()
rewrite_argv(["uwsgi"] + [w for path in files for w in ("--ini", path)])
EOF
chmod 0644 /srv/aw-apps/evil_argv.py

cat > /srv/aw-apps/uwsgi-evil.ini <<EOF
[uwsgi]
plugins = python3
master = true
processes = 4
cheaper-algo = manual
cheaper = 1
cheaper-initial = 2
http-socket = 127.0.0.1:$PORT
wsgi-file = /srv/aw-apps/evil_argv.py
stats = /run/evil/stats.sock
master-fifo = /run/evil/master.fifo
die-on-term = true
need-app = true
vacuum = true
EOF
chmod 0644 /srv/aw-apps/uwsgi-evil.ini

# The --env only makes room: the rewritten argv must fit in the original.
cat > "/etc/systemd/system/$UNIT" <<'EOF'
[Unit]
Description=uWSGI app whose master names a FIFO and /dev/zero as --ini (73-freeze-evil-ini)

[Service]
Type=notify
NotifyAccess=all
ExecStart=/usr/bin/uwsgi --ini /srv/aw-apps/uwsgi-evil.ini --env AW_ARGV_ROOM=0123456789abcdef
User=www-data
Group=www-data
RuntimeDirectory=evil
RuntimeDirectoryMode=0750
UMask=0077
KillSignal=SIGTERM
EOF
systemctl daemon-reload

policy evil '
unit = "uwsgi-evil.service"
server = "uwsgi"
[uwsgi]
stats = "/run/evil/stats.sock"
master_fifo = "/run/evil/master.fifo"
[scaling]
min_workers = 1
max_workers = 4
spare_idle = 0
cooldown_down = "2s"
scale_down = "freeze"'

# start_evil FILE...: (re)start the app with its master's argv naming
# FILE... as --ini, and check that it does
start_evil() {
    local master cmdline
    printf '%s\n' "$@" > "$ORDER"
    chmod 0644 "$ORDER"
    systemctl restart "$UNIT" || fail_unit "$UNIT" "$UNIT did not start"
    wait_for 60 http_ok "http://127.0.0.1:$PORT/" || fail_unit "$UNIT" "$UNIT does not answer on port $PORT"
    master=$(unit_prop "$UNIT" MainPID)
    cmdline=$(tr '\0' ' ' < "/proc/$master/cmdline" | sed 's/ *$//')
    assert_match "$cmdline" "^uwsgi --ini $1 --ini $2$" "master $master runs as '$cmdline'"
}

# refusal: the app's freeze_refused in status, or nothing
refusal() {
    status_json | python3 -c '
import json, sys
v = json.load(sys.stdin)
print(next(a for a in v["apps"] if a["name"] == "evil").get("freeze_refused") or "")'
}
refusal_has() { [[ $(refusal) == *"$1"* ]]; }

# watch SECONDS: every 0.5 s, `status` answers within 1 s, the daemon's
# RSS stays under 15 MB, it is the same process, and nothing is frozen
status_ms_max=0
rss_kb_max=0
watch() {
    local deadline t0 t1 ms rss
    deadline=$(($(date +%s) + $1))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        t0=$(date +%s%N)
        timeout 1 adaptive-workers status > /dev/null ||
            fail "status did not answer within 1 s (rc $?)"
        t1=$(date +%s%N)
        ms=$(((t1 - t0) / 1000000))
        [ "$ms" -le "$status_ms_max" ] || status_ms_max=$ms
        [ "$(unit_prop "$AW_UNIT" MainPID)" = "$daemon_pid" ] ||
            fail_unit "$AW_UNIT" "the daemon was replaced: pid $(unit_prop "$AW_UNIT" MainPID), was $daemon_pid"
        rss=$(rss_kb "$daemon_pid")
        [ "$rss" -le "$rss_kb_max" ] || rss_kb_max=$rss
        [ "$rss" -lt 15360 ] || fail "the daemon's RSS is $rss kB"
        [ "$(frozen_scopes evil)" -eq 0 ] || fail "$(frozen_scopes evil) scopes of evil frozen"
        sleep 0.5
    done
}

step "a master whose argv names the FIFO, then /dev/zero, as --ini"
start_evil "$FIFO" /dev/zero
aw_restart
daemon_pid=$(unit_prop "$AW_UNIT" MainPID)
restarts=$(unit_prop "$AW_UNIT" NRestarts)
wait_for 10 all_placed evil "$UNIT" || fail "evil workers not placed"
wait_for 10 refusal_has "$FIFO: is a FIFO, not a regular file" ||
    fail "freezing not refused for the FIFO: '$(refusal)'"
pass "freeze refused: $(refusal)"
watch 10
assert_eq "$(refusal)" "cannot tell whether thunder-lock is on: failed to read $FIFO: is a FIFO, not a regular file" "the reason, still"

step "another master: /dev/zero, then the FIFO"
start_evil /dev/zero "$FIFO"
# The master rewrites its argv only once it has loaded the app, and the
# daemon reads a master's command line once: a daemon that saw this
# master start would have judged the ini it really started from. So, as
# above, the daemon starts after the rewrite.
aw_restart
daemon_pid=$(unit_prop "$AW_UNIT" MainPID)
wait_for 10 refusal_has "/dev/zero: is a character device, not a regular file" ||
    fail "freezing not refused for /dev/zero: '$(refusal)'"
pass "freeze refused: $(refusal)"
watch 10

step "the daemon went through it unharmed"
assert_eq "$(unit_prop "$AW_UNIT" NRestarts)" "$restarts" "NRestarts"
assert_eq "$(unit_prop "$AW_UNIT" MainPID)" "$daemon_pid" "MainPID"
# Neither file is held open: the FIFO was never opened for reading.
open=$(find "/proc/$daemon_pid/fd" -lname "$FIFO" -o -lname /dev/zero 2>/dev/null | wc -l)
assert_eq "$open" 0 "descriptors of the daemon on $FIFO or /dev/zero"
# Every user may read status: it says which file, not what is in it.
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; }
seen=$(as_nobody timeout 1 adaptive-workers status) || fail "nobody cannot read status"
assert_match "$seen" "freeze refused.*/dev/zero: is a character device, not a regular file" "status, as nobody"
figure evil_status_ms_max "$status_ms_max"
figure evil_daemon_rss_kb_max "$rss_kb_max"
pass "status answered within ${status_ms_max} ms at worst, the daemon's RSS peaked at ${rss_kb_max} kB, pid $daemon_pid throughout"
