# shellcheck shell=bash disable=SC2034 # the AW_BENCH_* names are for the scripts
# The benchmark's knobs, with the values BENCHMARKS.md reports. Any
# AW_BENCH_* variable set on the host when tests/bench/run starts is handed
# to the VM (tests/vm/run writes it to config.env) and wins over these.
if [ -f "$AW_ROOT/config.env" ]; then
    # shellcheck source=/dev/null
    . "$AW_ROOT/config.env"
fi

# Which configurations run, in this order, and how many reaction trials.
: "${AW_BENCH_CONFIGS:=a b c}"
: "${AW_BENCH_TRIALS:=10}"
# Every duration below (load phases, the neighbour's start and hold) is
# multiplied by this: 0.3 gives a quick rehearsal.
: "${AW_BENCH_TIME_SCALE:=1}"

# The app (apps/app.py under uWSGI): what the master loads before forking
# (shared by every worker, counted in each worker's RSS), the most workers,
# and for the cheaper configurations the fewest and the step.
: "${AW_BENCH_PRELOAD_MB:=64}"
: "${AW_BENCH_PROCESSES:=8}"
: "${AW_BENCH_CHEAPER:=2}"
: "${AW_BENCH_STEP:=2}"
# uWSGI's per-worker limits in (a) and (b), in MB of RSS; (c) imports
# them as private-memory limits (soft_limit, hard_limit, min_lifetime).
: "${AW_BENCH_RELOAD_ON_RSS:=200}"
: "${AW_BENCH_EVIL_RELOAD_ON_RSS:=300}"
: "${AW_BENCH_MIN_LIFETIME:=10}"
# (b): cheaper-algo = backlog grows when the listen queue is above this;
# (c): grow_backlog is one more (the daemon grows at queued >= threshold).
: "${AW_BENCH_OVERLOAD:=2}"
# (b): cheaper-rss-limit-soft/hard, the workers' total RSS, as a share of
# MemTotal: what an operator gives the app when it has the host to itself.
: "${AW_BENCH_RSS_SOFT_PCT:=50}"
: "${AW_BENCH_RSS_HARD_PCT:=60}"
# (c): the host bounds and how fast the worker count follows the backlog.
: "${AW_BENCH_LOWER:=75%}"
: "${AW_BENCH_UPPER:=90%}"
: "${AW_BENCH_COOLDOWN_UP:=500ms}"
: "${AW_BENCH_COOLDOWN_DOWN:=5s}"
: "${AW_BENCH_SPARE_IDLE:=1}"

# The load: guest/load.py phases SECONDS:CONCURRENCY[:RATE] (quiet periods
# at a fixed rate, bursts as fast as the connections go), and the request
# mix WEIGHT:PATH (/work?ms=N&leak_kb=K: wait N ms, keep K KiB for good).
: "${AW_BENCH_PHASES:=30:3:10 25:12 30:3:10 25:12 30:3:10 25:12 35:3:10}"
# About 800 KiB kept per request on average (a leak compressed in time:
# under TCG the VM serves some 10-15 requests a second, so that the
# workers reach their limits within a few minutes), a third of it from
# the 1% of big requests.
: "${AW_BENCH_MIX:=94:/work?ms=40&leak_kb=320 5:/work?ms=150&leak_kb=2048 1:/work?ms=400&leak_kb=40960}"
: "${AW_BENCH_SEED:=6}"

# The neighbour: an unmanaged process (guest/hog.py in its own service)
# that starts this many seconds into the load, takes this share of
# MemTotal at this rate, holds it, then exits.
: "${AW_BENCH_NEIGHBOUR_AT:=70}"
: "${AW_BENCH_NEIGHBOUR_PCT:=50}"
: "${AW_BENCH_NEIGHBOUR_RAMP_MB_S:=40}"
: "${AW_BENCH_NEIGHBOUR_HOLD:=60}"

# The reaction trials (guest/20-reaction.sh), any of: kill (host crosses
# U -> kill delivered), b, c, f (backlog -> new capacity serving: uWSGI's
# cheaper backlog, adaptive-workers forking, adaptive-workers thawing).
: "${AW_BENCH_REACTION:=kill b c f}"
# Host bounds for the U-crossing trials: a hog takes the host to 2% below
# L, then across L and U, with 4 workers holding AW_BENCH_TRIAL_HOLD_MB
# each to kill. Small workers against a wide band: under TCG the hog
# climbs a few MB/s, and recycles at L of big workers would free more
# than it takes, so that U would never be crossed at all.
: "${AW_BENCH_TRIAL_LOWER:=40%}"
: "${AW_BENCH_TRIAL_UPPER:=43%}"
: "${AW_BENCH_TRIAL_HOLD_MB:=16}"
