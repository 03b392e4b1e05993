# shellcheck shell=bash
# Helpers of the benchmark scripts, on top of guest/lib.sh and guest/core.sh
# (source those first). The app is apps/app.py under uWSGI, run by
# uwsgi-bench@CFG.service from /srv/aw-bench/CFG.ini, CFG one of:
#   a  uWSGI static: processes, reload-on-rss, evil-reload-on-rss
#   b  uWSGI at its best: cheaper-algo = backlog, cheaper-rss-limit-soft/hard
#   c  adaptive-workers: the policy import-uwsgi makes from (a) run in
#      cheaper mode, plus host bounds and the adaptive worker count
#   t  the U-crossing trials: 4 static workers under adaptive-workers

# shellcheck source=tests/bench/guest/params.sh
. "$AW_ROOT/bench/params.sh"

BENCH_PORT=8010
BENCH_SRV=/srv/aw-bench
BENCH_RUN=/run/aw-bench
BENCH_LOGS=/var/log/aw-bench
BENCH_STATS=$BENCH_RUN/stats.sock
BENCH_FIFO=$BENCH_RUN/master.fifo
# The app's name in adaptive-workers: slice aw-bench.slice, scopes
# aw-bench-PID.scope.
BENCH_APP=bench

# journal_cursor: the journal's newest cursor, for queries about what
# follows (--after-cursor), as guest/lib.sh's AW_CURSOR
journal_cursor() { journalctl -n 1 -o export --no-pager | sed -n 's/^__CURSOR=//p'; }

# mono: seconds on the boot clock, which in the VM (never suspended) is the
# monotonic clock of load.py, hog.py and the journal
mono() {
    local up _
    read -r up _ < /proc/uptime
    echo "$up"
}

# scaled SECONDS: a duration times AW_BENCH_TIME_SCALE
scaled() { awk -v s="$AW_BENCH_TIME_SCALE" -v x="$1" 'BEGIN { printf "%g", x * s }'; }

mem_total_bytes() { awk '/^MemTotal:/ { print $2 * 1024 }' /proc/meminfo; }

# percent_of_mem PCT: bytes
percent_of_mem() { echo $(($(mem_total_bytes) * $1 / 100)); }

label() {
    case $1 in
        a) echo "uWSGI static: processes = $AW_BENCH_PROCESSES, reload-on-rss = $AW_BENCH_RELOAD_ON_RSS, evil-reload-on-rss = $AW_BENCH_EVIL_RELOAD_ON_RSS" ;;
        b) echo "uWSGI cheaper-algo = backlog ($AW_BENCH_CHEAPER-$AW_BENCH_PROCESSES workers), cheaper-rss-limit-soft/hard = $AW_BENCH_RSS_SOFT_PCT/$AW_BENCH_RSS_HARD_PCT% of RAM, same per-worker limits" ;;
        c) echo "adaptive-workers: import-uwsgi policy, host bounds $AW_BENCH_LOWER/$AW_BENCH_UPPER, adaptive count $AW_BENCH_CHEAPER-$AW_BENCH_PROCESSES" ;;
        t) echo "U-crossing trials: 4 static workers" ;;
    esac
}

# initial_workers CFG: how many workers uWSGI starts with
initial_workers() {
    case $1 in
        a) echo "$AW_BENCH_PROCESSES" ;;
        t) echo 4 ;;
        *) echo "$AW_BENCH_CHEAPER" ;;
    esac
}

ini_common() {
    cat <<INI
[uwsgi]
plugins = python3
master = true
http-socket = 127.0.0.1:$BENCH_PORT
listen = 128
wsgi-file = /srv/aw-apps/app.py
; data the master loads before it forks: shared, in every worker's RSS
env = AW_APP_PRELOAD_MB=$AW_BENCH_PRELOAD_MB
stats = $BENCH_STATS
die-on-term = true
need-app = true
vacuum = true
disable-logging = true
logto = $BENCH_LOGS/%n.log
min-worker-lifetime = $AW_BENCH_MIN_LIFETIME
INI
}

ini_limits() {
    cat <<INI
reload-on-rss = $AW_BENCH_RELOAD_ON_RSS
evil-reload-on-rss = $AW_BENCH_EVIL_RELOAD_ON_RSS
INI
}

# write_inis: /srv/aw-bench/{a,b,c,t}.ini
write_inis() {
    install -d "$BENCH_SRV"
    {
        echo "; (a) uWSGI static"
        ini_common
        echo "processes = $AW_BENCH_PROCESSES"
        ini_limits
    } > "$BENCH_SRV/a.ini"
    {
        echo "; (b) uWSGI at its best: its own backlog-driven worker count and memory caps"
        ini_common
        cat <<INI
processes = $AW_BENCH_PROCESSES
cheaper-algo = backlog
cheaper = $AW_BENCH_CHEAPER
cheaper-initial = $AW_BENCH_CHEAPER
cheaper-step = $AW_BENCH_STEP
cheaper-overload = $AW_BENCH_OVERLOAD
; the workers' total RSS, in bytes (uWSGI needs memory-report for it)
memory-report = true
cheaper-rss-limit-soft = $(percent_of_mem "$AW_BENCH_RSS_SOFT_PCT")
cheaper-rss-limit-hard = $(percent_of_mem "$AW_BENCH_RSS_HARD_PCT")
INI
        ini_limits
    } > "$BENCH_SRV/b.ini"
    {
        echo "; (c) (a) in cheaper mode, so that adaptive-workers can set the worker count"
        ini_common
        cat <<INI
processes = $AW_BENCH_PROCESSES
master-fifo = $BENCH_FIFO
cheaper-algo = manual
cheaper = $AW_BENCH_CHEAPER
cheaper-initial = $AW_BENCH_CHEAPER
cheaper-step = $AW_BENCH_STEP
INI
        ini_limits
    } > "$BENCH_SRV/c.ini"
    {
        echo "; (t) the U-crossing trials"
        ini_common
        echo "processes = 4"
    } > "$BENCH_SRV/t.ini"
    chmod 0644 "$BENCH_SRV"/*.ini
}

# bench_install: nothing else running (a scenario that failed may have
# left its app behind), the app, its unit template and the inis
bench_install() {
    systemctl stop uwsgi-shop.service uwsgi-scale.service gunicorn-blog.service \
        'uwsgi-bench@*.service' aw-bench-neighbour.service aw-bench-hog.service 2>/dev/null || true
    rm -f "$AW_POLICY_DIR"/*.toml
    install -d /srv/aw-apps
    install -m 0644 "$AW_ROOT/apps/app.py" /srv/aw-apps/
    install -m 0644 "$AW_ROOT/bench/uwsgi-bench@.service" /etc/systemd/system/
    systemctl daemon-reload
    write_inis
}

bench_unit() { echo "uwsgi-bench@$1.service"; }

# bench_start CFG: start the app in that configuration, wait until it answers
bench_start() {
    local unit
    unit=$(bench_unit "$1")
    rm -f "$BENCH_LOGS/$1.log"
    systemctl start "$unit" || fail_unit "$unit" "$unit did not start"
    wait_for 60 http_ok "http://127.0.0.1:$BENCH_PORT/" || fail_unit "$unit" "$unit does not answer"
}

bench_stop() { systemctl stop 'uwsgi-bench@*.service' || true; }

bench_master() { unit_prop "$(bench_unit "$1")" MainPID; }

# bench_placed CFG: every worker of that configuration in its own scope
bench_placed() {
    local pid n=0
    for pid in $(pgrep -P "$(bench_master "$1")"); do
        in_own_scope "$BENCH_APP" "$pid" || return 1
        n=$((n + 1))
    done
    [ "$n" -gt 0 ]
}

# import_policy CFG TOML_EXTRA: the policy import-uwsgi makes from CFG.ini,
# with TOML_EXTRA appended (to its last table), installed as bench.toml;
# then, as the import's notes advise, uWSGI's own RSS limits are taken
# out of the ini the app runs (they would fire first, on RSS).
import_policy() {
    local cfg=$1 extra=$2 out=$AW_RESULT_DIR
    adaptive-workers import-uwsgi "$BENCH_SRV/$cfg.ini" --unit "$(bench_unit "$cfg")" --name "$BENCH_APP" \
        > "$out/policy-imported-$cfg.toml" 2> "$out/import-notes-$cfg.txt" ||
        fail "import-uwsgi failed: $(cat "$out/import-notes-$cfg.txt")"
    {
        cat "$out/policy-imported-$cfg.toml"
        printf '%s\n' "$extra"
    } > "$out/policy-$cfg.toml"
    policy "$BENCH_APP" "$(cat "$out/policy-$cfg.toml")"
    sed -i -e 's/^\(reload-on-rss\|evil-reload-on-rss\) = /; left to adaptive-workers (see import-uwsgi'"'"'s notes): &/' \
        "$BENCH_SRV/$cfg.ini"
    adaptive-workers check > "$out/check-$cfg.txt" 2>&1 || fail "the policy does not load: $(cat "$out/check-$cfg.txt")"
}

# scaling_extra COOLDOWN_DOWN: the [scaling] keys import-uwsgi has no uWSGI
# option for
scaling_extra() {
    cat <<TOML
# Added by the benchmark: how the worker count follows the backlog.
grow_backlog = $((AW_BENCH_OVERLOAD + 1))
cooldown_up = "$AW_BENCH_COOLDOWN_UP"
cooldown_down = "$1"
spare_idle = $AW_BENCH_SPARE_IDLE
TOML
}

# active_workers MASTER: its children, less those parked in a frozen scope
active_workers() {
    local pid n=0
    for pid in $(pgrep -P "$1"); do
        grep -qs '^frozen 1' "$(slice_dir "$BENCH_APP")/aw-$BENCH_APP-$pid.scope/cgroup.events" ||
            n=$((n + 1))
    done
    echo "$n"
}
active_eq() { [ "$(active_workers "$1")" -eq "$2" ]; }

# stats_json: uWSGI's stats
stats_json() {
    python3 -c '
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
data = b""
while chunk := s.recv(65536): data += chunk
print(data.decode())' "$BENCH_STATS"
}
