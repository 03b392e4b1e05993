//! The adaptive worker count (Instagram's "adaptive respawn").
//!
//! Grow when the accept queue builds (or the app runs below its minimum),
//! up to `max_workers` and never past the host's lower memory bound;
//! shrink while the queue stays (almost) empty and more workers sit idle
//! than `spare_idle`, down to `min_workers`. With `scale_down = "freeze"`
//! shrinking parks idle workers and growing thaws them first: capacity
//! back in milliseconds, without a fork and an app import.
//!
//! Growth reacts after `cooldown_up`; shrinking waits `cooldown_down`
//! after any change, so a steady load never flaps between the two.
//!
//! Workers that accept eagerly (gunicorn gthread, gevent, uvicorn) empty
//! the accept queue whatever they can serve, and queue the work inside.
//! For them the load is the client connections each worker holds (see
//! [`load_plan`]): the connections past what a worker serves at once wait
//! as surely as those in the queue, and the app grows on their sum;
//! it shrinks while the connections held, averaged, fit in fewer workers
//! with `spare_idle` whole workers to spare.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Action, AppSample, Decision, EngineState, Reason, Snapshot, WorkerRef};
use crate::adapter::gunicorn;
use crate::policy::{AppPolicy, LoadSignal, Policy, ScaleDown, ScalingPolicy, ServerKind};

/// What an app's scaling follows, and why: the daemon counts connections
/// only for the apps this says so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "signal", rename_all = "lowercase")]
pub enum LoadPlan {
    Backlog { why: String },
    Connections { per_worker: u32, why: String },
}

impl LoadPlan {
    pub fn per_worker(&self) -> Option<u32> {
        match self {
            LoadPlan::Backlog { .. } => None,
            LoadPlan::Connections { per_worker, .. } => Some(*per_worker),
        }
    }

    pub fn why(&self) -> &str {
        match self {
            LoadPlan::Backlog { why } | LoadPlan::Connections { why, .. } => why,
        }
    }

    /// "backlog" or "connections", for status and metrics.
    pub fn signal(&self) -> &'static str {
        match self {
            LoadPlan::Backlog { .. } => "backlog",
            LoadPlan::Connections { .. } => "connections",
        }
    }
}

/// Which signal scaling follows: the policy's `load`, or with `auto` the
/// worker class read from a gunicorn arbiter's command line (`None`: not
/// read, or not gunicorn).
pub fn load_plan(
    sp: &ScalingPolicy,
    server: ServerKind,
    workers: Option<&gunicorn::Workers>,
) -> LoadPlan {
    let sized = |why: String| {
        let (per_worker, source) = match (sp.concurrency, workers) {
            (Some(n), _) => (n, "concurrency in the policy".to_string()),
            (None, Some(w)) => w.concurrency(),
            (None, None) => (1, "no concurrency in the policy".to_string()),
        };
        LoadPlan::Connections {
            per_worker,
            why: format!("{why}; {per_worker} at once per worker ({source})"),
        }
    };
    match (sp.load, workers) {
        (LoadSignal::Backlog, _) => LoadPlan::Backlog {
            why: "load = \"backlog\" in the policy".into(),
        },
        (LoadSignal::Connections, _) => sized("load = \"connections\" in the policy".into()),
        (LoadSignal::Auto, Some(w))
            if server == ServerKind::Gunicorn && w.class.accepts_eagerly() =>
        {
            sized(format!(
                "gunicorn's {} workers accept at once and queue inside: the connections they hold show the load",
                w.class.name()
            ))
        }
        (LoadSignal::Auto, Some(w)) if server == ServerKind::Gunicorn => LoadPlan::Backlog {
            why: format!(
                "gunicorn's {} workers take one connection at a time: the accept queue shows the load",
                w.class.name()
            ),
        },
        (LoadSignal::Auto, None) if server == ServerKind::Gunicorn => LoadPlan::Backlog {
            why: "the arbiter's worker class is not known yet".into(),
        },
        (LoadSignal::Auto, _) => LoadPlan::Backlog {
            why: format!(
                "{} workers take one connection at a time: the accept queue shows the load",
                server.as_str()
            ),
        },
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalingState {
    pub last_up: Option<Duration>,
    pub last_down: Option<Duration>,
    /// Since when the app has been quiet enough to shrink, without a break.
    pub quiet_since: Option<Duration>,
    /// The backlog averaged over about a second, and when it was updated.
    pub queue_avg: f64,
    pub avg_at: Option<Duration>,
    /// The connections the workers hold, averaged the same way (apps
    /// that follow connections).
    #[serde(default)]
    pub held_avg: f64,
    /// The worker count the last grow or shrink asked for, and when. The
    /// app server gets there in its own time (gunicorn forks after TTIN; a
    /// worker told to go finishes its requests first): until it does, or
    /// [`ASKED_FOR`] passes, the engine counts that many, so that it never
    /// asks twice for the same workers (and past `max_workers`).
    #[serde(default)]
    pub asked: Option<Asked>,
}

/// A worker count asked of the app server, on its way.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Asked {
    pub target: u32,
    pub at: Duration,
    /// A grow (the count seen only rises to it) or a shrink.
    pub up: bool,
}

/// How long a grow or shrink asked for is awaited before the count seen is
/// believed again (a fork refused, a signal lost).
pub const ASKED_FOR: Duration = Duration::from_secs(10);

/// Time constant of the averaged backlog that shrinking looks at.
const QUEUE_AVG_TAU: f64 = 1.0;

impl ScalingState {
    /// An exponential moving average of the accept queue. Under light load
    /// a connection sits in the queue for a few milliseconds before an idle
    /// worker takes it; one such sample must not count as load. Growth
    /// still reacts to the instant value.
    fn average(&mut self, now: Duration, queued: u32, held: u32) {
        let (q, h) = (f64::from(queued), f64::from(held));
        (self.queue_avg, self.held_avg) = match self.avg_at {
            None => (q, h),
            Some(t) => {
                let dt = now.saturating_sub(t).as_secs_f64();
                let a = 1.0 - (-dt / QUEUE_AVG_TAU).exp();
                (
                    self.queue_avg + a * (q - self.queue_avg),
                    self.held_avg + a * (h - self.held_avg),
                )
            }
        };
        self.avg_at = Some(now);
    }
}

impl ScalingState {
    fn last_change(&self) -> Option<Duration> {
        self.last_up.max(self.last_down)
    }

    /// The workers to count: those active, or the count asked for while
    /// the app server is on its way there.
    fn workers(&mut self, now: Duration, app: &AppSample) -> u32 {
        let n = active(app);
        let on_its_way = |a: &Asked| {
            let not_yet = if a.up { n < a.target } else { n > a.target };
            not_yet && now.saturating_sub(a.at) < ASKED_FOR
        };
        match self.asked {
            Some(a) if on_its_way(&a) => a.target,
            _ => {
                self.asked = None;
                n
            }
        }
    }
}

fn since(now: Duration, t: Option<Duration>) -> Duration {
    t.map_or(Duration::MAX, |t| now.saturating_sub(t))
}

fn worker_ref(app: &AppSample, w: &super::WorkerSample) -> WorkerRef {
    WorkerRef {
        app: app.name.clone(),
        pid: w.pid,
        starttime: w.starttime,
        scope: w.scope.clone(),
    }
}

pub(super) fn decide(
    policy: &Policy,
    snap: &Snapshot,
    state: &mut EngineState,
    out: &mut Vec<Decision>,
) {
    for app in &snap.apps {
        let Some(ap) = policy.app(&app.name) else {
            continue;
        };
        let Some(sp) = &ap.scaling else {
            continue;
        };
        let st = state.scaling.entry(app.name.clone()).or_default();
        let load = Load::of(app);
        if app.backlog.is_some() || app.concurrency.is_some() {
            st.average(snap.now, load.waiting(), load.held);
        }
        if let Some(d) = thaw_busy_frozen(ap, app) {
            out.push(d);
            continue;
        }
        let n = st.workers(snap.now, app);
        if let Some(d) = grow(policy, ap, sp, snap, app, (n, &load), st) {
            st.last_up = Some(snap.now);
            st.quiet_since = None;
            if let Action::Grow { count, .. } = d.action {
                st.asked = Some(Asked {
                    target: n + count,
                    at: snap.now,
                    up: true,
                });
            }
            out.push(d);
        } else if let Some(d) = shrink(ap, sp, snap, app, n, &load, st) {
            st.last_down = Some(snap.now);
            if let Some(Action::Shrink { count, .. }) = d.first().map(|d| &d.action) {
                st.asked = Some(Asked {
                    target: n - count,
                    at: snap.now,
                    up: false,
                });
            }
            out.extend(d);
        }
    }
}

/// A worker that took a connection as it was being frozen must not keep
/// that client waiting.
fn thaw_busy_frozen(ap: &AppPolicy, app: &AppSample) -> Option<Decision> {
    let w = app
        .workers
        .iter()
        .find(|w| w.frozen && w.idle == Some(false))?;
    Some(Decision {
        mode: ap.mode,
        reason: Reason::BusyWhileFrozen,
        action: Action::Thaw {
            worker: worker_ref(app, w),
        },
    })
}

/// What waits for a worker right now.
struct Load {
    /// The longest accept queue (0 when not known).
    queued: u32,
    /// Following connections: those held by the active workers, those
    /// past what they all serve at once, and that capacity. The sum, not
    /// each worker's excess: eager workers share connections unevenly,
    /// and more workers would not even that out.
    held: u32,
    inside: u32,
    capacity: u32,
    /// Every active worker with a sample has a count.
    known: bool,
}

impl Load {
    fn of(app: &AppSample) -> Self {
        let queued = app.backlog.map_or(0, |b| b.queued);
        let mut load = Load {
            queued,
            held: 0,
            inside: 0,
            capacity: 0,
            known: true,
        };
        if let Some(per) = app.concurrency {
            for w in app.workers.iter().filter(|w| !w.frozen) {
                load.known &= w.connections.is_some();
                load.held = load.held.saturating_add(w.connections.unwrap_or(0));
            }
            load.capacity = active(app).saturating_mul(per);
            load.inside = load.held.saturating_sub(load.capacity);
        }
        load
    }

    fn waiting(&self) -> u32 {
        self.queued.saturating_add(self.inside)
    }
}

/// Workers serving or ready to serve (not parked), those without a sample
/// yet included: a daemon that has just started, or a master that has just
/// forked, must not look like an app below its minimum.
fn active(app: &AppSample) -> u32 {
    app.workers.iter().filter(|w| !w.frozen).count() as u32 + app.unsampled
}

/// How many more workers host memory allows before the lower bound,
/// counting each new worker at the mean private memory of the others.
fn host_room(policy: &Policy, snap: &Snapshot, app: &AppSample) -> u32 {
    let total = snap.host.mem_total as f64;
    let used = total * snap.host.utilisation();
    let limit = total * policy.global.host.lower_bound.0;
    if used >= limit {
        return 0;
    }
    let n = app.workers.len().max(1) as f64;
    let mean = app.workers.iter().map(|w| w.private_bytes).sum::<u64>() as f64 / n;
    if mean < 1.0 {
        return u32::MAX;
    }
    ((limit - used) / mean).floor().min(u32::MAX as f64) as u32
}

fn grow(
    policy: &Policy,
    ap: &AppPolicy,
    sp: &ScalingPolicy,
    snap: &Snapshot,
    app: &AppSample,
    (n, load): (u32, &Load),
    st: &ScalingState,
) -> Option<Decision> {
    let queued = load.queued;
    // Below the minimum only counts when workers were stopped or parked
    // (uWSGI "cheap" slots, frozen scopes): a worker that is merely being
    // respawned after a recycle must not make the app grow for good.
    let parked = app.stopped_slots > 0 || app.workers.iter().any(|w| w.frozen);
    let reason = if n < sp.min_workers && parked {
        Reason::BelowMinimum {
            workers: n,
            min: sp.min_workers,
        }
    } else if queued >= sp.grow_backlog && app.backlog.is_some() {
        Reason::BacklogBuilding {
            queued,
            threshold: sp.grow_backlog,
        }
    } else if app.concurrency.is_some() && load.waiting() >= sp.grow_backlog {
        Reason::ConnectionsWaiting {
            waiting: load.waiting(),
            held: load.held,
            capacity: load.capacity,
            threshold: sp.grow_backlog,
        }
    } else {
        return None;
    };
    if n >= sp.max_workers || since(snap.now, st.last_up) < sp.cooldown_up.0 {
        return None;
    }
    let mut count = sp.step_up.min(sp.max_workers - n);
    if let Some(per) = app
        .concurrency
        .filter(|_| app.backlog.is_none_or(|b| b.queued == 0))
    {
        // The workers the held connections need, at least one more.
        let demand = load.held.saturating_add(load.queued);
        let needed = demand.div_ceil(per.max(1)).saturating_sub(n).max(1);
        count = count.min(needed);
    }
    if let Some(frozen) = app.workers.iter().find(|w| w.frozen) {
        // Thawing costs no new memory: no host check needed.
        return Some(Decision {
            mode: ap.mode,
            reason,
            action: Action::Thaw {
                worker: worker_ref(app, frozen),
            },
        });
    }
    // uWSGI's FIFO "+" can only bring back "cheap" slots (up to processes).
    if ap.server == ServerKind::Uwsgi {
        count = count.min(app.stopped_slots);
    }
    count = count.min(host_room(policy, snap, app));
    (count > 0).then(|| Decision {
        mode: ap.mode,
        reason,
        action: Action::Grow {
            app: app.name.clone(),
            count,
        },
    })
}

fn shrink(
    ap: &AppPolicy,
    sp: &ScalingPolicy,
    snap: &Snapshot,
    app: &AppSample,
    n: u32,
    load: &Load,
    st: &mut ScalingState,
) -> Option<Vec<Decision>> {
    // Unknown counts are no evidence of quiet.
    if (app.backlog.is_none() && app.concurrency.is_none())
        || (app.concurrency.is_some() && !load.known)
    {
        st.quiet_since = None;
        return None;
    }
    let idle: Vec<_> = app
        .workers
        .iter()
        .filter(|w| !w.frozen && w.idle == Some(true))
        .collect();
    let idle_n = idle.len() as u32;
    let busy_queue = st.queue_avg > f64::from(sp.shrink_backlog) + 0.5;
    let surplus = surplus(sp, app.concurrency, n, idle_n, st.held_avg);
    if busy_queue || surplus == 0 || n <= sp.min_workers {
        st.quiet_since = None;
        return None;
    }
    // Quiet must have lasted the whole cool-down (from daemon start too),
    // and the last change be that long ago.
    let quiet_since = *st.quiet_since.get_or_insert(snap.now);
    if snap.now.saturating_sub(quiet_since) < sp.cooldown_down.0
        || since(snap.now, st.last_change()) < sp.cooldown_down.0
    {
        return None;
    }
    let count = sp.step_down.min(surplus).min(n - sp.min_workers);
    let reason = match app.concurrency {
        Some(_) => Reason::SpareCapacity {
            held: (st.held_avg * 10.0).round() / 10.0,
            capacity: load.capacity,
            spare: sp.spare_idle,
        },
        None => Reason::IdleSurplus {
            idle: idle_n,
            spare: sp.spare_idle,
            queued: load.queued,
        },
    };
    Some(shrink_by(ap, sp.scale_down, app, idle, count, reason))
}

/// Workers the load leaves spare, beyond `spare_idle`. Following
/// connections: whole workers the averaged load leaves free with half a
/// worker to spare (a load right at a worker boundary must not flap), and
/// no more than hold nothing (one of them is what goes).
fn surplus(sp: &ScalingPolicy, per_worker: Option<u32>, n: u32, idle_n: u32, held_avg: f64) -> u32 {
    match per_worker {
        Some(per) => {
            let per = f64::from(per.max(1));
            let free = f64::from(n) * per - held_avg - per / 2.0;
            let whole = (free / per).floor().max(0.0) as u32;
            whole.saturating_sub(sp.spare_idle).min(idle_n)
        }
        None => idle_n.saturating_sub(sp.spare_idle),
    }
}

/// One fewer `count` times: asked of the app server, or parked.
fn shrink_by(
    ap: &AppPolicy,
    how: ScaleDown,
    app: &AppSample,
    mut idle: Vec<&super::WorkerSample>,
    count: u32,
    reason: Reason,
) -> Vec<Decision> {
    match how {
        ScaleDown::Stop => vec![Decision {
            mode: ap.mode,
            reason,
            action: Action::Shrink {
                app: app.name.clone(),
                count,
            },
        }],
        // Park the newest idle workers: the oldest keep their warm caches.
        ScaleDown::Freeze => {
            idle.sort_by_key(|w| w.age);
            idle.iter()
                .take(count as usize)
                .map(|w| Decision {
                    mode: ap.mode,
                    reason: reason.clone(),
                    action: Action::Freeze {
                        worker: worker_ref(app, w),
                    },
                })
                .collect()
        }
    }
}
