#!/bin/bash
# Guest side of tests/vm/run: runs each selected scenario as its own
# transient systemd unit, in name order, with a time limit, and after each
# one writes all results so far to the output disk (a plain tar on a raw
# virtio disk with serial "aw-out"), so that a VM killed by the host's
# overall timeout still returns what it had.
# Started by aw-vm-boot.service with stdout on the serial console.
set -euo pipefail

AW_ROOT=/var/lib/aw-vm
RESULTS=/var/lib/aw-vm-results
OUT=/dev/disk/by-id/virtio-aw-out
# shellcheck source=/dev/null
. "$AW_ROOT/config.env"
: "${AW_MODE:=suite}" "${AW_SCENARIO_TIMEOUT:=300}" "${AW_SCENARIO_GLOBS:=}" "${AW_REPEAT:=1}"

rm -rf "$RESULTS"
mkdir -p "$RESULTS"

flush_results() {
    tar -C "$RESULTS" -cf "$OUT" . && sync
}

{
    uname -a
    systemctl --version | head -n 1
    echo "cgroup controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
    echo "memory: $(grep MemTotal /proc/meminfo)"
    dpkg-query -W uwsgi gunicorn python3 dbus 2>/dev/null || true
} > "$RESULTS/vm-info.txt"
echo "aw-vm: $(head -n 2 "$RESULTS/vm-info.txt" | tr '\n' ' ')"

selected() {
    local name=$1 glob
    [ -z "$AW_SCENARIO_GLOBS" ] && return 0
    for glob in $AW_SCENARIO_GLOBS; do
        # shellcheck disable=SC2053 # glob matching is the point
        [[ $name == $glob || $name.sh == $glob ]] && return 0
    done
    return 1
}

scenarios=()
case $AW_MODE in
    demo) scenarios=("$AW_ROOT/demo.sh") ;;
    bench)
        # The benchmark: the sensing figures, then its own scripts.
        for f in "$AW_ROOT"/scenarios/98-bench-sensing.sh "$AW_ROOT"/bench/[0-9]*.sh; do
            selected "$(basename "$f" .sh)" && scenarios+=("$f")
        done
        ;;
    *)
        for f in "$AW_ROOT"/scenarios/*.sh; do
            selected "$(basename "$f" .sh)" && scenarios+=("$f")
        done
        ;;
esac
# Each scenario AW_REPEAT times (tests/vm/run --repeat): NAME, NAME-r2, ...
runs=()
for f in "${scenarios[@]}"; do
    for ((r = 1; r <= AW_REPEAT; r++)); do
        runs+=("$f:$r")
    done
done
for run in "${runs[@]}"; do
    f=${run%:*} r=${run##*:}
    name=$(basename "$f" .sh)
    [ "$r" -eq 1 ] || name=$name-r$r
    echo "$name"
done > "$RESULTS/planned.txt"
: > "$RESULTS/summary.tsv"
flush_results

# limit_of SCRIPT: its time limit in seconds: AW_SCENARIO_TIMEOUT, unless
# the script asks for more with a line "# aw-vm-limit: SECONDS"
limit_of() {
    local own
    own=$(sed -n 's/^# aw-vm-limit: *\([0-9][0-9]*\) *$/\1/p' "$1" | head -n 1)
    if [ -n "$own" ] && [ "$own" -gt "$AW_SCENARIO_TIMEOUT" ]; then
        echo "$own"
    else
        echo "$AW_SCENARIO_TIMEOUT"
    fi
}

for run in "${runs[@]}"; do
    f=${run%:*} r=${run##*:}
    name=$(basename "$f" .sh)
    [ "$r" -eq 1 ] || name=$name-r$r
    dir=$RESULTS/$name
    mkdir -p "$dir"
    since=$(date '+%Y-%m-%d %H:%M:%S')
    start=$(date +%s%N)
    limit=$(limit_of "$f")
    echo "aw-vm: === $name (limit $limit s)"
    prefix="[$name] "
    [ "$AW_MODE" = demo ] && prefix=""
    # Each scenario is a unit of its own: its own cgroup, a clean
    # environment, and systemd enforces the time limit.
    set +e
    systemd-run --quiet --wait --collect --pipe \
        --unit="aw-scenario-$name" \
        --property=RuntimeMaxSec="$limit" \
        --working-directory="$AW_ROOT" \
        --setenv=AW_ROOT="$AW_ROOT" \
        --setenv=AW_SCENARIO="$name" \
        --setenv=AW_RESULT_DIR="$dir" \
        --setenv=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/bash "$f" </dev/null 2>&1 |
        tee "$dir/output.log" | sed -u "s/^/$prefix/"
    rc=${PIPESTATUS[0]}
    set -e
    ms=$((($(date +%s%N) - start) / 1000000))
    secs=$(printf '%d.%01d' $((ms / 1000)) $((ms % 1000 / 100)))
    if [ "$rc" -eq 0 ]; then
        res=pass
    elif [ "$ms" -ge $((limit * 1000 - 500)) ]; then
        res=timeout
    else
        res=fail
    fi
    echo "aw-vm: === $name: $res ($secs s)"
    journalctl -u adaptive-workers --since "$since" -o short-monotonic --no-pager \
        > "$dir/daemon.journal" 2>&1 || true
    journalctl --since "$since" -o short-monotonic --no-pager \
        > "$dir/system.journal" 2>&1 || true
    printf '%s\t%s\t%s\n' "$name" "$res" "$secs" >> "$RESULTS/summary.tsv"
    flush_results
done

journalctl -b -o short-monotonic --no-pager | gzip > "$RESULTS/journal.txt.gz" || true
flush_results
echo "aw-vm: done, powering off"
