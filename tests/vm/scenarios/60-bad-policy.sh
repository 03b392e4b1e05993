#!/bin/bash
# Issue 2, bad input: `check` exits 1 naming the file, line and key; a
# reload with a broken policy is refused and the daemon keeps the old one;
# a fixed policy is taken on the next reload.
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"
# shellcheck source=tests/vm/guest/core.sh
. "$AW_ROOT/guest/core.sh"

fresh_daemon
good='unit = "uwsgi-shop.service"
server = "uwsgi"
[memory]
soft_limit = "200M"
hard_limit = "300M"'
policy shop "$good"
start_app shop
aw_restart
wait_for 5 all_placed shop || fail "shop workers not placed"
adaptive-workers check > /dev/null || fail "check refuses the good policy"
pass "check accepts the good policy"

step "check names file, line, column and key"
policy shop 'unit = "uwsgi-shop.service"
server = "uwsgi"
[memory]
soft_limit = "300M"
hard_limit = "200M"'
set +e
out=$(adaptive-workers check 2>&1 >/dev/null)
rc=$?
set -e
echo "$out" | tee "$AW_RESULT_DIR/check.txt"
assert_eq "$rc" 1 "check exit status"
assert_match "$out" "^$AW_POLICY_DIR/shop.toml:5:14: memory.hard_limit: the hard limit \\(200M\\) must be above the soft limit \\(300M\\)" "the error names file:line:column: key"

policy shop 'unit = "uwsgi-shop.service"
server = "uwsgi"
[memory]
sotf_limit = "300M"'
set +e
out=$(adaptive-workers check 2>&1 >/dev/null)
rc=$?
set -e
assert_eq "$rc" 1 "check exit status for an unknown key"
assert_match "$out" "shop.toml:4:1: memory.sotf_limit: unknown field" "unknown key"

step "a reload with the broken policy keeps the old one"
systemctl reload "$AW_UNIT"
wait_for 5 sh -c "journalctl -u $AW_UNIT --since '$AW_SINCE' -o cat --no-pager | grep -q 'reload refused'" ||
    fail "no 'reload refused' in the journal"
pass "reload refused: $(journal_lines | grep 'reload refused' | tail -n 1)"
systemctl is-active --quiet "$AW_UNIT" || fail_unit "$AW_UNIT" "the daemon died on a bad policy"
status=$(adaptive-workers status)
assert_match "$status" "shop \\(uwsgi-shop.service, uwsgi, enforce\\).*soft limit 200M, hard limit 300M" "the old policy is still in force"
set +e
out=$(adaptive-workers reload 2>&1)
rc=$?
set -e
assert_eq "$rc" 1 "adaptive-workers reload exit status"
assert_match "$out" "memory.sotf_limit" "adaptive-workers reload shows the error"

step "a policy file others could have written is refused"
# policy_refused WHY: check and a reload both refuse shop.toml, naming why
policy_refused() {
    set +e
    out=$(adaptive-workers check 2>&1 >/dev/null)
    rc=$?
    set -e
    assert_eq "$rc" 1 "check exit status"
    assert_match "$out" "^$AW_POLICY_DIR/shop.toml: $1" "check names the file and why"
    set +e
    out=$(adaptive-workers reload 2>&1)
    rc=$?
    set -e
    assert_eq "$rc" 1 "reload exit status"
    assert_match "$out" "reload refused" "reload refused"
    assert_match "$(adaptive-workers status)" "soft limit 200M, hard limit 300M" "the old policy is still in force"
}
policy shop "$good"
chown nobody "$AW_POLICY_DIR/shop.toml"
policy_refused "is owned by uid $(id -u nobody), not root: refusing a policy others could have written"
chown root "$AW_POLICY_DIR/shop.toml"
chmod 0666 "$AW_POLICY_DIR/shop.toml"
policy_refused "is writable by every user \\(mode 666\\): refusing it; run chmod o-w"
chmod 0664 "$AW_POLICY_DIR/shop.toml"
chgrp www-data "$AW_POLICY_DIR/shop.toml"
policy_refused "is writable by group $(getent group www-data | cut -d: -f3) \\(mode 664\\): refusing it; run chmod g-w"
chgrp root "$AW_POLICY_DIR/shop.toml"
chmod 0644 "$AW_POLICY_DIR/shop.toml"

step "a fixed policy is taken"
policy shop "${good/200M/250M}"
systemctl reload "$AW_UNIT"
wait_for 5 sh -c "adaptive-workers status | grep -q 'soft limit 250M'" || fail "the fixed policy was not taken"
pass "new soft limit in force"
wait_for 5 sh -c "[ \$(cat /sys/fs/cgroup/aw.slice/aw-shop.slice/aw-shop-$(app_workers shop | head -n 1).scope/memory.high) = $((250 << 20)) ]" ||
    fail "memory.high of the existing scopes not updated"
pass "existing scopes got the new memory.high"
stop_app shop
