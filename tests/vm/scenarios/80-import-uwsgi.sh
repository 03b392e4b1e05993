#!/bin/bash
# import-uwsgi on Debian's real uWSGI layout. An app in
# /etc/uwsgi/apps-enabled is started by the init script, which systemd runs
# as uwsgi.service (made by systemd-sysv-generator): that unit has MainPID 0
# and holds the master in its one cgroup, so the import says the app cannot
# be managed as it runs and gives a unit of its own. Following the notes
# gives a service whose main PID is the uWSGI master, and the imported
# policy (written with --write) places its workers in their scopes.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

app=aw-import
available=/etc/uwsgi/apps-available/$app.ini
enabled=/etc/uwsgi/apps-enabled/$app.ini
unit=uwsgi-$app.service
port=8005

cleanup() {
    systemctl stop "$unit" uwsgi.service 2>/dev/null || true
    rm -f "$enabled" "$available" "/etc/systemd/system/$unit" "$AW_POLICY_DIR/$app.toml"
    # The image masks the sysv unit: put the mask back.
    ln -sf /dev/null /etc/systemd/system/uwsgi.service
    systemctl daemon-reload
}
trap cleanup EXIT

# workers: the children of the app's service's main PID
workers() { pgrep -P "$(unit_prop "$unit" MainPID)" | sort -n; }
all_in_scopes() { all_placed "$app" "$unit"; }

fresh_daemon
install -d /srv/aw-apps
install -m 0644 "$AW_ROOT/apps/app.py" /srv/aw-apps/

step "an app in Debian's layout, relying on default.ini, started by the init script"
cat > "$available" <<INI
; Debian style: master, socket, pidfile and uid come from default.ini.
[uwsgi]
plugins = python3
processes = 4
cheaper = 2
cheaper-algo = manual
master-fifo = /run/uwsgi/%(deb-confnamespace)/%(deb-confname)/fifo
stats = /run/uwsgi/%(deb-confnamespace)/%(deb-confname)/stats.sock
http-socket = 127.0.0.1:$port
wsgi-file = /srv/aw-apps/app.py
need-app = true
reload-on-rss = 300
evil-reload-on-rss = 400
harakiri = 30
INI
ln -sf "../apps-available/$app.ini" "$enabled"
rm -f /etc/systemd/system/uwsgi.service
systemctl daemon-reload
systemctl start uwsgi.service || fail_unit uwsgi.service "the init script did not start"
wait_for 60 http_ok "http://127.0.0.1:$port/" || fail_unit uwsgi.service "$app does not answer"
assert_eq "$(unit_prop uwsgi.service Type)" forking "uwsgi.service Type"
assert_eq "$(unit_prop uwsgi.service MainPID)" 0 "uwsgi.service MainPID (GuessMainPID=no, no PIDFile)"
master=$(cat "/run/uwsgi/app/$app/pid")
assert_eq "$(cgroup_of "$master")" /system.slice/uwsgi.service "the daemonized master's cgroup"

step "import-uwsgi says why and names a unit of its own"
adaptive-workers import-uwsgi "$enabled" > "$AW_RESULT_DIR/policy.toml" 2> "$AW_RESULT_DIR/notes.txt" ||
    fail "import-uwsgi failed: $(cat "$AW_RESULT_DIR/notes.txt")"
policy_text=$(cat "$AW_RESULT_DIR/policy.toml")
notes=$(cat "$AW_RESULT_DIR/notes.txt")
assert_match "$notes" "MainPID=0" "the notes say uwsgi.service has no main PID"
assert_match "$notes" "harakiri: not mapped" "harakiri is not mapped, and said so"
assert_match "$policy_text" "unit = \"$unit\"" "the policy names $unit"
assert_match "$policy_text" "stats = \"/run/uwsgi/app/$app/stats.sock\"" "stats from %(deb-confname)"
assert_match "$policy_text" "master_fifo = \"/run/uwsgi/app/$app/fifo\"" "master FIFO"
assert_match "$policy_text" "soft_limit = \"300M\"" "reload-on-rss"
assert_match "$policy_text" "hard_limit = \"400M\"" "evil-reload-on-rss"
assert_match "$policy_text" "min_workers = 2" "cheaper"
assert_match "$policy_text" "max_workers = 4" "processes"

step "following the notes: $app in its own service"
sed -n '/^  \[Unit\]/,/^then: /p' "$AW_RESULT_DIR/notes.txt" | sed '$d' | sed 's/^  //' \
    > "/etc/systemd/system/$unit"
save "/etc/systemd/system/$unit"
commands=$(sed -n 's/^then: //p' "$AW_RESULT_DIR/notes.txt" | sed 's/ (the init script.*//')
assert_match "$commands" "^/etc/init.d/uwsgi stop $app; " "stops only this app (not service uwsgi stop: every app)"
[ -n "$commands" ] || fail "no 'then:' line in the notes"
IFS=';' read -ra steps <<< "$commands"
for cmd in "${steps[@]}"; do
    echo "+ $cmd"
    eval "$cmd" || fail_unit "$unit" "'$cmd' failed"
done
wait_for 60 http_ok "http://127.0.0.1:$port/" || fail_unit "$unit" "$app does not answer from $unit"
master=$(unit_prop "$unit" MainPID)
[ "$master" -gt 0 ] || fail "$unit has no main PID"
assert_match "$(tr '\0' ' ' < "/proc/$master/cmdline")" "uwsgi" "the main PID is the uWSGI master"
assert_eq "$(cgroup_of "$master")" "/system.slice/$unit" "the master in $unit"
assert_eq "$(stat -c %U "/run/uwsgi/app/$app")" www-data "run directory owner (uid from default.ini)"

step "the imported policy manages it"
adaptive-workers import-uwsgi "$available" --write > /dev/null 2> "$AW_RESULT_DIR/write.txt" ||
    fail "import-uwsgi --write failed: $(cat "$AW_RESULT_DIR/write.txt")"
assert_file "$AW_POLICY_DIR/$app.toml"
assert_eq "$(stat -c %a "$AW_POLICY_DIR/$app.toml")" 644 "policy file mode"
assert_match "$(cat "$AW_RESULT_DIR/write.txt")" "next: adaptive-workers check" "says what to run next"
adaptive-workers import-uwsgi "$available" --write > /dev/null 2>&1 &&
    fail "--write overwrote the policy without --force"
pass "no overwrite without --force"
adaptive-workers check > "$AW_RESULT_DIR/check.txt" || fail "adaptive-workers check refused the imported policy"
systemctl reload "$AW_UNIT"
wait_for 10 all_in_scopes || fail "workers of $app not placed: $(for p in $(workers); do echo "$p:$(cgroup_of "$p")"; done)"
pid=$(workers | head -n 1)
assert_eq "$(scope_file "$app" "$pid" memory.high)" $((300 << 20)) "memory.high of a worker scope"
assert_eq "$(scope_file "$app" "$pid" memory.max)" $((400 << 20)) "memory.max of a worker scope"
adaptive-workers status | grep -q "$app ($unit, uwsgi" || fail "status does not list $app"
pass "$app managed from its imported policy"
