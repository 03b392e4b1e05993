#!/bin/bash
# Issue 2, placement: every worker of a real uWSGI app (4 workers) and a
# real gunicorn app (3 workers) in its own transient scope within 1 s of
# the daemon starting, with memory.high/memory.max equal to the policy, the
# scope bound to the app's service; a respawned worker placed within 1 s
# (the figure, fork to placement, is printed and saved); all under load
# with zero failed requests.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

fresh_daemon
shop_policy
policy blog '
unit = "gunicorn-blog.service"
server = "gunicorn"
[memory]
soft_limit = "150M"
hard_limit = "250M"'
start_app shop
start_app blog
background_load load-shop http://127.0.0.1:8001/ --duration 40 --concurrency 2
background_load load-blog http://127.0.0.1:8002/ --duration 40 --concurrency 2

step "every worker in its own scope within 1 s of the daemon starting"
t0=$(date +%s%N)
aw_restart
wait_for 1 all_placed shop || fail "shop workers not all placed 1 s after READY: $(for p in $(app_workers shop); do echo "$p:$(cgroup_of "$p")"; done)"
wait_for 1 all_placed blog || fail "blog workers not all placed 1 s after READY"
pass "all placed $((($(date +%s%N) - t0) / 1000000)) ms after systemctl restart began"
assert_eq "$(app_workers shop | wc -l)" 4 "uWSGI workers"
assert_eq "$(app_workers blog | wc -l)" 3 "gunicorn workers"
assert_eq "$(scope_count shop)" 4 "shop scopes"
assert_eq "$(scope_count blog)" 3 "blog scopes"
master=$(app_master shop)
assert_eq "$(cgroup_of "$master")" /system.slice/uwsgi-shop.service "the uWSGI master stays in its service"

step "scope limits and properties equal the policy"
for pid in $(app_workers shop); do
    assert_eq "$(scope_file shop "$pid" memory.high)" $((200 << 20)) "memory.high of aw-shop-$pid.scope"
    assert_eq "$(scope_file shop "$pid" memory.max)" $((300 << 20)) "memory.max of aw-shop-$pid.scope"
done
for pid in $(app_workers blog); do
    assert_eq "$(scope_file blog "$pid" memory.max)" $((250 << 20)) "memory.max of aw-blog-$pid.scope"
done
pid=$(app_workers shop | head -n 1)
assert_eq "$(unit_prop "aw-shop-$pid.scope" PartOf)" uwsgi-shop.service "PartOf of aw-shop-$pid.scope"
assert_eq "$(unit_prop "aw-shop-$pid.scope" Slice)" aw-shop.slice "Slice of aw-shop-$pid.scope"
assert_match "$(unit_prop "aw-shop-$pid.scope" Description)" "shop worker $pid \\(uwsgi master $master\\)" "Description"

step "a respawned worker is placed within 1 s"
old=$(app_workers shop | head -n 1)
kill -HUP "$old"   # uWSGI: finish the request, exit; the master respawns
wait_for 10 test ! -e "/proc/$old" || fail "worker $old did not exit on SIGHUP"
wait_for 5 all_placed shop || fail "the respawned shop worker was not placed"
newest=$(app_workers shop | sort -n | tail -n 1)
ms=$(placement_ms "$newest")
echo "uwsgi_respawn_placement_ms $ms" >> "$AW_RESULT_DIR/figures.txt"
[ "$ms" -lt 1000 ] || fail "uWSGI worker placed $ms ms after fork"
pass "uWSGI worker $newest placed $ms ms after its fork"

old=$(app_workers blog | head -n 1)
kill -TERM "$old"  # gunicorn: graceful stop of one worker; the arbiter respawns
wait_for 10 test ! -e "/proc/$old" || fail "gunicorn worker $old did not exit on SIGTERM"
wait_for 5 all_placed blog || fail "the respawned blog worker was not placed"
newest=$(app_workers blog | sort -n | tail -n 1)
ms=$(placement_ms "$newest")
echo "gunicorn_respawn_placement_ms $ms" >> "$AW_RESULT_DIR/figures.txt"
[ "$ms" -lt 1000 ] || fail "gunicorn worker placed $ms ms after fork"
pass "gunicorn worker $newest placed $ms ms after its fork"

step "status shows both apps"
adaptive-workers status | tee "$AW_RESULT_DIR/status.txt"
assert_match "$(cat "$AW_RESULT_DIR/status.txt")" "shop \\(uwsgi-shop.service, uwsgi, enforce\\)" "status lists shop"
assert_match "$(cat "$AW_RESULT_DIR/status.txt")" "blog \\(gunicorn-blog.service, gunicorn, enforce\\)" "status lists blog"
assert_match "$(unit_prop "$AW_UNIT" StatusText)" "^2 apps, 7 workers, host memory [0-9]+%" "STATUS="

step "no failed request throughout"
wait_load load-shop
wait_load load-blog
stop_app shop
stop_app blog
