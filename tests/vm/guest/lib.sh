# shellcheck shell=bash disable=SC2034 # the AW_* names are for the scenarios
# Helpers for VM scenarios. A scenario is a bash script that starts with
#
#   set -euo pipefail
#   . "$AW_ROOT/guest/lib.sh"
#
# and exits non-zero on failure (`fail` does that). Each scenario runs as a
# transient systemd unit (see runner.sh) with these variables set:
#   AW_ROOT        the unpacked inputs: guest/, scenarios/, apps/, pkgs/
#   AW_SCENARIO    the scenario's name
#   AW_RESULT_DIR  where to save artifacts (comes back to the host under
#                  target/vm/results/NAME/)
# Scenarios must not rely on each other: each one installs what it needs
# (`ensure_installed`), so that `tests/vm/run 40-apps` works alone.

AW_ROOT=${AW_ROOT:-/var/lib/aw-vm}
AW_SCENARIO=${AW_SCENARIO:-$(basename "$0" .sh)}
AW_RESULT_DIR=${AW_RESULT_DIR:-/tmp/aw-results/$AW_SCENARIO}
AW_UNIT=adaptive-workers.service
AW_UNIT_FILE=/usr/lib/systemd/system/adaptive-workers.service
AW_CONF=/etc/adaptive-workers/adaptive-workers.toml
mkdir -p "$AW_RESULT_DIR"
export DEBIAN_FRONTEND=noninteractive
# For journal queries: only what this scenario caused (from the start of
# the second it started in). Not a cursor: journalctl 252 with
# --after-cursor and field matches missed entries it should have found.
# The previous scenario's daemon runs until this one restarts it: to leave
# out its last lines, match _PID= of the current daemon too.
AW_SINCE=$(date '+%Y-%m-%d %H:%M:%S')

# --- reporting -------------------------------------------------------------

# A heading for a group of checks.
step() { printf -- '--- %s\n' "$*"; }
# A check that held.
pass() { printf 'ok: %s\n' "$*"; }
# A check that did not: print why and end the scenario. Call it from the
# scenario's own shell, not from inside $(...), where it would only end the
# subshell.
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
# A known gap that does not fail the scenario (say why).
note() { printf 'note: %s\n' "$*"; }

# --- assertions ------------------------------------------------------------

# assert_eq ACTUAL EXPECTED WHAT
assert_eq() {
    if [ "$1" = "$2" ]; then
        pass "$3: $1"
    else
        fail "$3: expected '$2', got '$1'"
    fi
}

# assert_match STRING ERE WHAT
assert_match() {
    if [[ $1 =~ $2 ]]; then
        pass "$3"
    else
        fail "$3: '$1' does not match /$2/"
    fi
}

# assert_file PATH...: regular files that exist
assert_file() {
    local f
    for f in "$@"; do
        [ -f "$f" ] || fail "missing file $f"
    done
    pass "present: $*"
}

# assert_no_path PATH...: nothing there at all
assert_no_path() {
    local f
    for f in "$@"; do
        [ ! -e "$f" ] || fail "still present: $f"
    done
    pass "absent: $*"
}

# wait_for TIMEOUT_SECONDS CMD...: run CMD every 0.2 s until it succeeds;
# returns 1 if it never did within the time. Use as
#   wait_for 10 systemctl is-active --quiet foo || fail "foo did not start"
wait_for() {
    local timeout=$1 deadline
    shift
    deadline=$(($(date +%s%N) + timeout * 1000000000))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s%N)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# --- systemd and the journal -------------------------------------------------

# unit_prop UNIT PROPERTY: one property's value
unit_prop() { systemctl show -P "$2" "$1"; }

# The daemon's journal since this scenario started (message text only).
daemon_journal() {
    journalctl -u "$AW_UNIT" --since "$AW_SINCE" -o cat --no-pager
}

# Explain a unit that is not doing what we expected, then fail.
fail_unit() {
    local unit=$1
    shift
    systemctl status --no-pager --lines=0 "$unit" >&2 || true
    journalctl -u "$unit" --since "$AW_SINCE" -o short-monotonic --no-pager |
        tail -n 30 >&2 || true
    fail "$*"
}

# save FILE [NAME]: copy an artifact into the results
save() { cp "$1" "$AW_RESULT_DIR/${2:-$(basename "$1")}"; }

# --- packages ----------------------------------------------------------------

# pkg_file deb|rpm|deb-upgrade|rpm-upgrade: the one package of that kind
pkg_file() {
    local files=("$AW_ROOT"/pkgs/"$1"/*)
    if [ "${#files[@]}" -ne 1 ] || [ ! -f "${files[0]}" ]; then
        echo "no single package in $AW_ROOT/pkgs/$1" >&2
        return 1
    fi
    printf '%s\n' "${files[0]}"
}

deb_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' adaptive-workers 2>/dev/null)" = installed ]
}

rpm_installed() { rpm -q adaptive-workers >/dev/null 2>&1; }

# install_deb [FILE]: apt install of a local .deb, as an admin would do it.
# No input: a conffile prompt would fail the install instead of hanging.
install_deb() {
    local deb=${1:-$(pkg_file deb)}
    apt-get install -y -q -o Dpkg::Use-Pty=0 "$deb" </dev/null
}

# purge_all: no adaptive-workers package of either kind is left.
purge_all() {
    if rpm_installed; then
        rpm -e --nodeps adaptive-workers
    fi
    if dpkg-query -W adaptive-workers >/dev/null 2>&1; then
        apt-get purge -y -q -o Dpkg::Use-Pty=0 adaptive-workers </dev/null
    fi
    rm -rf /etc/adaptive-workers
}

# ensure_installed: the .deb is installed (the version under test).
ensure_installed() {
    if rpm_installed; then
        purge_all
    fi
    deb_installed || install_deb "$(pkg_file deb)"
}

# --- sample apps ---------------------------------------------------------------

# app_port shop|blog
app_port() {
    case $1 in
        shop) echo 8001 ;;
        blog) echo 8002 ;;
        *) echo "unknown app $1" >&2; return 1 ;;
    esac
}

# app_unit shop|blog
app_unit() {
    case $1 in
        shop) echo uwsgi-shop.service ;;
        blog) echo gunicorn-blog.service ;;
        *) echo "unknown app $1" >&2; return 1 ;;
    esac
}

http_ok() { curl -fsS --max-time 5 -o /dev/null "$1"; }

# start_app shop|blog: install the sample app and its unit (see apps/),
# (re)start it and wait until it answers HTTP. A restart: an earlier
# scenario that failed may have left it running, with leaked memory.
start_app() {
    local app=$1 unit port
    unit=$(app_unit "$app")
    port=$(app_port "$app")
    install -d /srv/aw-apps
    install -m 0644 "$AW_ROOT"/apps/*.py "$AW_ROOT"/apps/*.ini /srv/aw-apps/
    install -m 0644 "$AW_ROOT/apps/$unit" /etc/systemd/system/
    systemctl daemon-reload
    systemctl restart "$unit" || fail_unit "$unit" "$unit did not start"
    wait_for 60 http_ok "http://127.0.0.1:$port/" ||
        fail_unit "$unit" "$app does not answer on port $port"
    pass "$app is up ($unit, port $port)"
}

stop_app() { systemctl stop "$(app_unit "$1")" || true; }

# app_master shop|blog: the main (master/arbiter) pid
app_master() { unit_prop "$(app_unit "$1")" MainPID; }

# app_workers shop|blog: worker pids, one a line (the master's children)
app_workers() { pgrep -P "$(app_master "$1")" | sort -n; }

# http_get URL: the body, failing on HTTP errors
http_get() { curl -fsS --max-time 30 "$1"; }

# load ARGS...: the stdlib load client (JSON on stdout); see guest/load.py
load() { python3 "$AW_ROOT/guest/load.py" "$@"; }

# json_get JSON KEY: one top-level field
json_get() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
