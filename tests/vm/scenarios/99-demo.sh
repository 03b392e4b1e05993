#!/bin/bash
# The demo (`make demo`, and `make install` on a host without systemd) in
# the suite, so that the README's first command is tested too: a uWSGI app
# under load, its workers placed and recycled, zero failed requests.
set -euo pipefail
exec /bin/bash "$AW_ROOT/demo.sh"
