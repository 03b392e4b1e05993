# shellcheck shell=bash
# Helpers for the daemon's own scenarios (placement, limits, host bounds,
# scaling), on top of lib.sh. Source after lib.sh.

AW_POLICY_DIR=/etc/adaptive-workers/policies.d

# policy NAME TEXT: write the drop-in NAME.toml (root-owned, 0644)
policy() {
    install -d -m 0755 "$AW_POLICY_DIR"
    printf '%s\n' "$2" > "$AW_POLICY_DIR/$1.toml"
    chmod 0644 "$AW_POLICY_DIR/$1.toml"
}

# global_policy TEXT: replace /etc/adaptive-workers/adaptive-workers.toml
global_policy() {
    printf '%s\n' "$1" > "$AW_CONF"
    chmod 0644 "$AW_CONF"
}

# fresh_daemon: installed, no app policy, default global file, restarted
fresh_daemon() {
    ensure_installed
    rm -f "$AW_POLICY_DIR"/*.toml
    global_policy "# the built-in defaults"
    systemctl restart "$AW_UNIT" || fail_unit "$AW_UNIT" "the daemon did not start"
}

# shop_policy: the sample uWSGI app's usual policy: a 200M soft and a
# 300M hard limit, its stats socket
shop_policy() {
    policy shop '
unit = "uwsgi-shop.service"
server = "uwsgi"
[memory]
soft_limit = "200M"
hard_limit = "300M"
[uwsgi]
stats = "/run/shop/stats.sock"'
}

# manage_shop [SECONDS]: the sample uWSGI app under shop_policy, the daemon
# restarted, and every worker placed within SECONDS (10)
# shellcheck disable=SC2120 # the time limit is optional
manage_shop() {
    shop_policy
    start_app shop
    aw_restart
    wait_for "${1:-10}" all_placed shop || fail "shop workers not placed"
}

# aw_restart: restart the daemon; systemctl returns once it is READY
aw_restart() {
    systemctl restart "$AW_UNIT" || fail_unit "$AW_UNIT" "the daemon did not restart"
}

# cgroup_of PID: the process's cgroup v2 path
cgroup_of() { sed -n 's/^0:://p' "/proc/$1/cgroup"; }

# esc APP: the app's name as it appears in unit names (a dash would make
# systemd nest the slice one level deeper, so it is escaped: \x2d)
esc() { systemd-escape "$1"; }

# slice_dir APP: the app slice's cgroup directory
slice_dir() { echo "/sys/fs/cgroup/aw.slice/aw-$(esc "$1").slice"; }

# scope_cgroup APP PID: where the daemon puts that worker
scope_cgroup() { echo "/aw.slice/aw-$(esc "$1").slice/aw-$(esc "$1")-$2.scope"; }

# in_own_scope APP PID
in_own_scope() { [ "$(cgroup_of "$2")" = "$(scope_cgroup "$1" "$2")" ]; }

# unit_of APP: the sample app's service (lib.sh knows shop and blog; any
# other app runs as aw-APP.service, e.g. apps/forker.py under systemd-run)
unit_of() {
    case $1 in
        scale) echo uwsgi-scale.service ;;
        shop | blog) app_unit "$1" ;;
        *) echo "aw-$1.service" ;;
    esac
}

# workers_of APP [UNIT]: worker pids, one a line (the children of the main
# PID of UNIT, by default the sample app's service)
workers_of() { pgrep -P "$(unit_prop "${2:-$(unit_of "$1")}" MainPID)" | sort -n; }

# all_placed APP [UNIT]: every worker of the app's master is in its own
# scope (read without a process per worker: 1,000 of them in 68-many-workers)
all_placed() {
    local pid n=0 line prefix
    prefix="0::$(scope_cgroup "$1" "")"
    prefix=${prefix%.scope}
    for pid in $(workers_of "$1" "${2:-}"); do
        { read -r line < "/proc/$pid/cgroup"; } 2>/dev/null || return 1
        [ "$line" = "$prefix$pid.scope" ] || return 1
        n=$((n + 1))
    done
    [ "$n" -gt 0 ]
}

# scope_file APP PID FILE: a file of the worker's scope cgroup
scope_file() { cat "/sys/fs/cgroup$(scope_cgroup "$1" "$2")/$3"; }

# scope_count APP: worker scopes that exist for the app
scope_count() {
    find "$(slice_dir "$1")" -maxdepth 1 -name "aw-*.scope" 2>/dev/null | wc -l
}

# journal_since SINCE OUTPUT [FIELD=VALUE...]: the daemon's journal
# entries since SINCE that have all these fields, as OUTPUT (cat: messages,
# json: whole entries, count, or one field); see journal.py for why the
# fields are matched there and not by journalctl
journal_since() {
    journalctl -u "$AW_UNIT" --since "$1" -o json --no-pager |
        python3 "$AW_ROOT/guest/journal.py" "${@:2}"
}

# journal_query OUTPUT [FIELD=VALUE...]: the same since the scenario started
journal_query() { journal_since "$AW_SINCE" "$@"; }

# journal_count FIELD=VALUE...: how many such entries
journal_count() { journal_query count "$@"; }

# journal_lines [FIELD=VALUE...]: their messages
# shellcheck disable=SC2120 # the filters are optional
journal_lines() { journal_query cat "$@"; }

# journal_json [FIELD=VALUE...]: the entries, one JSON object a line
journal_json() { journal_query json "$@"; }

# placement_ms PID: milliseconds from the worker's fork to the daemon's
# "placed" journal entry (both on the monotonic clock, which in the VM
# equals the boot-time clock /proc/PID/stat counts in)
placement_ms() {
    local pid=$1 start_ticks placed_us hz
    hz=$(getconf CLK_TCK)
    start_ticks=$(awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$pid/stat")
    placed_us=$(journal_query __MONOTONIC_TIMESTAMP ACTION=place WORKER_PID="$pid" | head -n 1)
    echo $(((placed_us - start_ticks * 1000000 / hz) / 1000))
}

# global_oom_kills: how often the kernel's global OOM killer fired this boot
global_oom_kills() {
    journalctl -k -b --no-pager -o cat | grep -c 'constraint=CONSTRAINT_NONE' || true
}

# status_json: the daemon's state
status_json() { adaptive-workers status --json; }

# app_counter APP NAME: one of the app's counters from status
app_counter() {
    status_json | python3 -c '
import json, sys
v = json.load(sys.stdin)
print(next(a for a in v["apps"] if a["name"] == sys.argv[1])["counters"][sys.argv[2]])' "$1" "$2"
}

# background_load NAME URL ARGS...: start the load client in the
# background, output in $AW_RESULT_DIR/NAME.json; wait_load NAME collects it
background_load() {
    local name=$1
    shift
    python3 "$AW_ROOT/guest/load.py" "$@" > "$AW_RESULT_DIR/$name.json" 2>"$AW_RESULT_DIR/$name.err" &
    echo $! > "$AW_RESULT_DIR/$name.pid"
}

# wait_load NAME: wait for it, fail on any failed request, print a summary
wait_load() {
    local name=$1 result
    wait "$(cat "$AW_RESULT_DIR/$name.pid")" || fail "load client $name failed: $(cat "$AW_RESULT_DIR/$name.err")"
    result=$(cat "$AW_RESULT_DIR/$name.json")
    [ "$(json_get "$result" failures)" -eq 0 ] ||
        fail "$name: $(json_get "$result" failures) of $(json_get "$result" requests) requests failed: $(json_get "$result" errors)"
    pass "$name: $(json_get "$result" requests) requests, 0 failed, p50 $(json_get "$result" p50_ms) ms, p99 $(json_get "$result" p99_ms) ms"
}

# end_load NAME: stop a background load client now (it prints what it has)
# and check it as wait_load does
end_load() {
    kill -TERM "$(cat "$AW_RESULT_DIR/$1.pid")" 2>/dev/null || true
    wait_load "$1"
}

# burst_grows NAME PORT MASTER URL SECONDS CLIENTS: a burst of CLIENTS
# against URL for SECONDS (load "burst": collect it with wait_load burst)
# while scalewatch.py watches PORT's accept queue and MASTER's children.
# Fails when no worker came; sets grow_ms to the ms from the queue
# reaching 2 to one more worker, and records it as NAME_grow_reaction_ms.
# Not from $(...): the load must stay this shell's child.
burst_grows() {
    local name=$1 port=$2 master=$3 url=$4 seconds=$5 clients=$6 watch reaction
    python3 "$AW_ROOT/guest/scalewatch.py" "$port" "$master" 2 $((seconds + 8)) > "$AW_RESULT_DIR/reaction.json" &
    watch=$!
    sleep 0.2
    background_load burst "$url" --duration "$seconds" --concurrency "$clients"
    wait "$watch"
    reaction=$(cat "$AW_RESULT_DIR/reaction.json")
    echo "$reaction"
    grow_ms=$(json_get "$reaction" reaction_ms)
    [ "$grow_ms" != None ] || fail "capacity never grew: $reaction"
    figure "${name}_grow_reaction_ms" "$grow_ms"
}

# figure NAME VALUE: one line of $AW_RESULT_DIR/figures.txt, also printed
figure() {
    echo "$1 $2" >> "$AW_RESULT_DIR/figures.txt"
    echo "figure: $1 $2"
}

# cpu_ticks PID: user + system CPU time of a process, in clock ticks
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# rss_kb PID: resident set size in KiB
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# cpu_percent TICKS SECONDS: CPU time as a share of one CPU over a period
cpu_percent() {
    awk -v t="$1" -v s="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", 100 * t / hz / s }'
}

# bus_monitor_start FILE: record every D-Bus method call the daemon makes
# (one line each, dbus-monitor's profile format; the member is the last
# field) until bus_monitor_stop
bus_monitor_start() {
    local unique
    unique=$(busctl status org.adaptiveworkers.Daemon | sed -n 's/^UniqueName=//p')
    [ -n "$unique" ] || fail "the daemon has no name on the bus"
    dbus-monitor --system --profile "type='method_call',sender='$unique'" > "$1" 2>&1 &
    bus_monitor_pid=$!
    sleep 1
}
bus_monitor_stop() { kill "$bus_monitor_pid" 2>/dev/null || true; wait "$bus_monitor_pid" 2>/dev/null || true; }

# bus_calls FILE [MEMBER]: method calls recorded (of that member)
bus_calls() { awk -v m="${2:-}" '$1 == "mc" && (m == "" || $NF == m)' "$1" | wc -l; }

# start_unit_app UNIT PORT: install the sample apps and UNIT, (re)start it,
# wait until it answers (for apps other than lib.sh's shop and blog). A
# restart: an earlier scenario that failed may have left it running, with
# a worker count of its own.
start_unit_app() {
    local unit=$1 port=$2
    install -d /srv/aw-apps
    install -m 0644 "$AW_ROOT"/apps/*.py "$AW_ROOT"/apps/*.ini "$AW_ROOT"/apps/*.ru "$AW_ROOT"/apps/*.rb /srv/aw-apps/
    install -m 0644 "$AW_ROOT/apps/$unit" /etc/systemd/system/
    systemctl daemon-reload
    systemctl restart "$unit" || fail_unit "$unit" "$unit did not start"
    wait_for 60 http_ok "http://127.0.0.1:$port/" || fail_unit "$unit" "$unit does not answer on port $port"
    pass "$unit is up on port $port"
}

# running_workers MASTER_PID: worker processes (uWSGI cheap slots have none)
running_workers() { pgrep -P "$1" | wc -l; }

# frozen_scopes APP: worker scopes whose cgroup is frozen
frozen_scopes() {
    local n=0 f
    for f in "$(slice_dir "$1")"/aw-*.scope/cgroup.events; do
        [ -e "$f" ] || continue
        grep -q '^frozen 1' "$f" && n=$((n + 1))
    done
    echo "$n"
}

# durations_us FIELD=VALUE...: DURATION_US of matching journal entries
durations_us() { journal_query DURATION_US "$@"; }

# Predicates for wait_for, which re-runs its command: an argument such as
# "$(running_workers ...)" would be expanded once, before waiting.
journal_has() { [ "$(journal_count "$@")" -gt 0 ]; }
workers_eq() { [ "$(running_workers "$1")" -eq "$2" ]; }
workers_ge() { [ "$(running_workers "$1")" -ge "$2" ]; }
frozen_ge() { [ "$(frozen_scopes "$1")" -ge "$2" ]; }
frozen_eq() { [ "$(frozen_scopes "$1")" -eq "$2" ]; }
scopes_eq() { [ "$(scope_count "$1")" -eq "$2" ]; }
