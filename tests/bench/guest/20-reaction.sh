#!/bin/bash
# The reaction micro-figures, AW_BENCH_TRIALS trials each:
#   grow-b, grow-c  the listen backlog reaches the threshold -> a new
#                   worker is serving (guest/growwatch.py), for uWSGI's
#                   cheaper-algo = backlog (b) and for adaptive-workers (c)
#   kill            host utilisation crosses U, as an unmanaged hog sees
#                   it -> the daemon's kill journal entry, on the same
#                   monotonic clock
# One JSON line per trial in grow-b.jsonl, grow-c.jsonl, kill.jsonl.
# Nothing is asserted about the times; it fails only if the trials could
# not be made.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"
# shellcheck source=tests/bench/guest/lib.sh
. "$AW_ROOT/bench/lib.sh"

ensure_installed
bench_install
threshold=$((AW_BENCH_OVERLOAD + 1))

# grow_trials CFG NAME: the app at its fewest active workers, then a
# burst, until a new worker serves; results in grow-NAME.jsonl
grow_trials() {
    local cfg=$1 out=$AW_RESULT_DIR/grow-$2.jsonl master i burst watch
    : > "$out"
    master=$(bench_master "$cfg")
    for i in $(seq 1 "$AW_BENCH_TRIALS"); do
        wait_for 60 active_eq "$master" "$AW_BENCH_CHEAPER" ||
            fail "($2) still $(active_workers "$master") active workers before trial $i"
        sleep 1
        python3 "$AW_ROOT/bench/growwatch.py" "$BENCH_PORT" "$master" "$BENCH_STATS" "$threshold" 20 \
            >> "$out" &
        watch=$!
        sleep 0.3
        burst "$cfg" 20 &
        burst=$!
        wait "$watch" || true
        kill "$burst" 2>/dev/null || true
        wait "$burst" 2>/dev/null || true
        echo "($2) trial $i: $(tail -n 1 "$out")"
    done
}

# burst CFG SECONDS: more connections than workers, each held 300 ms
burst() {
    python3 "$AW_ROOT/guest/load.py" "http://127.0.0.1:$BENCH_PORT/work?ms=300" \
        --duration "$2" --concurrency 10 > /dev/null 2>&1
}

aw_policy() {
    global_policy "[host]
lower_bound = \"$AW_BENCH_LOWER\"
upper_bound = \"$AW_BENCH_UPPER\""
    # Quicker back to the fewest workers between trials; growth as in
    # 10-configs.
    import_policy c "$(scaling_extra 2s)$1"
    aw_restart
}

wanted() { case " $AW_BENCH_REACTION " in *" $1 "*) return 0 ;; esac; return 1; }

# The kill trials first: the shortest.
if wanted kill; then
    step "adaptive-workers: host utilisation crosses U -> kill delivered"
    lower=$AW_BENCH_TRIAL_LOWER upper=$AW_BENCH_TRIAL_UPPER
    global_policy "[host]
    lower_bound = \"$lower\"
    upper_bound = \"$upper\"
    [workers]
    min_lifetime = \"1s\""
    rm -f "$AW_POLICY_DIR"/*.toml
    policy "$BENCH_APP" "unit = \"$(bench_unit t)\"
    server = \"uwsgi\"
    [memory]
    min_lifetime = \"1s\"
    [uwsgi]
    stats = \"$BENCH_STATS\""
    aw_restart
    bench_start t
    u=$(awk -v u="${upper%\%}" 'BEGIN { printf "%.4f", u / 100 }')
    target=$(awk -v u="$u" 'BEGIN { printf "%.4f", u + 0.03 }')
    # The hog first takes the host to just below L, where the daemon leaves
    # everyone alone, then on across L and U in 4 MiB steps: under TCG, a slow
    # climb through the band would let recycles at L (which free the workers'
    # memory before U) answer it, and leave nothing to kill.
    prefill=$(awk -v l="${lower%\%}" 'BEGIN { printf "%.4f", l / 100 - 0.02 }')
    out=$AW_RESULT_DIR/kill.jsonl
    : > "$out"
    four_placed() { workers_eq "$master" 4 && bench_placed t; }
    for i in $(seq 1 "$AW_BENCH_TRIALS"); do
        # Fresh workers each time: the survivors of a trial would carry their
        # memory into the next.
        systemctl restart "$(bench_unit t)"
        wait_for 60 http_ok "http://127.0.0.1:$BENCH_PORT/" || fail "trial $i: the app did not come back"
        master=$(bench_master t)
        wait_for 30 four_placed || fail "trial $i: the 4 workers are not in their scopes"
        sleep 1.2   # older than min_lifetime
        # Every worker holds some memory: four requests at once land on
        # four workers.
        for _ in 1 2 3 4; do
            curl -fsS --max-time 30 -o /dev/null \
                "http://127.0.0.1:$BENCH_PORT/work?ms=800&leak_kb=$((AW_BENCH_TRIAL_HOLD_MB * 1024))" &
        done
        wait
        sleep 1.5   # a worker tick reads their memory
        cursor=$(journal_cursor)
        hog_out=$(systemd-run --quiet --wait --pipe --collect --unit=aw-bench-hog \
            python3 "$AW_ROOT/guest/hog.py" "$prefill:1" "$target:0.5" --chunk-mb 4 --floor-mb 100 --mark "$u") ||
            fail "trial $i: the hog failed: $hog_out"
        sleep 0.5
        # A trial without a kill is a result (reaction_ms null), not the end.
        python3 - "$hog_out" "$i" "$cursor" <<'PY' >> "$out" || true
import json, subprocess, sys
hog = json.loads(sys.argv[1].strip().splitlines()[-1])
entries = subprocess.run(
    ["journalctl", "-u", "adaptive-workers.service", "--after-cursor", sys.argv[3], "-o", "json", "--no-pager"],
    capture_output=True, text=True, check=True).stdout.split("\n")
# Filtered here: journalctl 252 with --after-cursor and a field match can
# miss entries.
kills = [k for k in (json.loads(e) for e in entries if e.strip()) if k.get("ACTION") == "kill"]
marked = hog["marked_at"]
if marked is not None:
    kills = [k for k in kills if int(k["__MONOTONIC_TIMESTAMP"]) / 1e6 > marked - 2.0]
if marked is None or not kills:
    print(json.dumps({"trial": int(sys.argv[2]), "reaction_ms": None,
                      "error": "U never crossed" if marked is None else "no kill after U was crossed",
                      "peak_utilisation": hog["peak_utilisation"]}))
    sys.exit(0)
first = min(kills, key=lambda k: int(k["__MONOTONIC_TIMESTAMP"]))
print(json.dumps({
    "trial": int(sys.argv[2]),
    "reaction_ms": round((int(first["__MONOTONIC_TIMESTAMP"]) / 1e6 - marked) * 1000, 1),
    "kill_duration_us": int(first.get("DURATION_US", 0)),
    "kills": len(kills),
    "peak_utilisation": hog["peak_utilisation"],
}))
PY
        echo "trial $i: $(tail -n 1 "$out")"
    done
    journalctl -u "$AW_UNIT" --since "$AW_SINCE" -o short-monotonic --no-pager > "$AW_RESULT_DIR/daemon-trials.log" || true
    bench_stop
fi

if wanted b; then
    step "(b) uWSGI cheaper-algo = backlog: backlog -> new worker serving"
    systemctl stop "$AW_UNIT"
    bench_start b
    grow_trials b b
    bench_stop
fi

if wanted c; then
    step "(c) adaptive-workers, scale_down = \"stop\" (uWSGI's FIFO): backlog -> new worker serving"
    write_inis
    aw_policy ""
    bench_start c
    wait_for 10 bench_placed c || fail "workers of (c) not placed"
    grow_trials c c
    bench_stop
fi

if wanted f; then
    step "(c) adaptive-workers, scale_down = \"freeze\": backlog -> a parked worker thawed and serving"
    write_inis
    aw_policy '
    scale_down = "freeze"'
    bench_start c
    wait_for 10 bench_placed c || fail "workers of (c) not placed"
    # Some workers to park first: a burst grows the app, the quiet after it
    # freezes all but the fewest.
    burst c 8
    wait_for 60 frozen_ge "$BENCH_APP" 1 || fail "no worker parked after the warm-up burst"
    grow_trials c f
    journalctl -u "$AW_UNIT" --since "$AW_SINCE" -o short-monotonic --no-pager > "$AW_RESULT_DIR/daemon-grow.log" || true
    bench_stop
fi

rm -f "$AW_POLICY_DIR"/*.toml
global_policy "# the built-in defaults"
aw_restart
