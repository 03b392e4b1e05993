#!/bin/bash
# The demo (`make demo`): runs in the VM with the package installed and
# its output on the terminal. A stub for now; the lead writes the real
# story here: leaking workers recycled at their soft limit, a host memory
# squeeze, the worker count following the backlog.
# Same environment and helpers as the scenarios (guest/lib.sh); the demo
# has AW_SCENARIO_TIMEOUT seconds (tests/vm/run, default 300).
set -euo pipefail
# shellcheck source=tests/vm/guest/lib.sh
. "$AW_ROOT/guest/lib.sh"

step "install"
ensure_installed
systemctl --no-pager status "$AW_UNIT" || true

step "sample apps"
start_app shop
start_app blog
systemd-cgls --no-pager /system.slice/uwsgi-shop.service /system.slice/gunicorn-blog.service

step "the daemon's journal"
journalctl -u "$AW_UNIT" --no-pager -o short-monotonic | tail -n 20
