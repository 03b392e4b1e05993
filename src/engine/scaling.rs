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

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Action, AppSample, Decision, EngineState, Reason, Snapshot, WorkerRef};
use crate::policy::{AppPolicy, Policy, ScaleDown, ScalingPolicy, ServerKind};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalingState {
    pub last_up: Option<Duration>,
    pub last_down: Option<Duration>,
    /// Since when the app has been quiet enough to shrink, without a break.
    pub quiet_since: Option<Duration>,
    /// The backlog averaged over about a second, and when it was updated.
    pub queue_avg: f64,
    pub avg_at: Option<Duration>,
}

/// Time constant of the averaged backlog that shrinking looks at.
const QUEUE_AVG_TAU: f64 = 1.0;

impl ScalingState {
    /// An exponential moving average of the accept queue. Under light load
    /// a connection sits in the queue for a few milliseconds before an idle
    /// worker takes it; one such sample must not count as load. Growth
    /// still reacts to the instant value.
    fn average(&mut self, now: Duration, queued: u32) {
        let q = f64::from(queued);
        self.queue_avg = match self.avg_at {
            None => q,
            Some(t) => {
                let dt = now.saturating_sub(t).as_secs_f64();
                let a = 1.0 - (-dt / QUEUE_AVG_TAU).exp();
                self.queue_avg + a * (q - self.queue_avg)
            }
        };
        self.avg_at = Some(now);
    }
}

impl ScalingState {
    fn last_change(&self) -> Option<Duration> {
        self.last_up.max(self.last_down)
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
        if let Some(b) = app.backlog {
            st.average(snap.now, b.queued);
        }
        if let Some(d) = thaw_busy_frozen(ap, app) {
            out.push(d);
            continue;
        }
        if let Some(d) = grow(policy, ap, sp, snap, app, st) {
            st.last_up = Some(snap.now);
            st.quiet_since = None;
            out.push(d);
        } else if let Some(d) = shrink(ap, sp, snap, app, st) {
            st.last_down = Some(snap.now);
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
    st: &ScalingState,
) -> Option<Decision> {
    let n = active(app);
    let queued = app.backlog.map_or(0, |b| b.queued);
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
    } else {
        return None;
    };
    if n >= sp.max_workers || since(snap.now, st.last_up) < sp.cooldown_up.0 {
        return None;
    }
    let mut count = sp.step_up.min(sp.max_workers - n);
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
    st: &mut ScalingState,
) -> Option<Vec<Decision>> {
    let Some(backlog) = app.backlog else {
        st.quiet_since = None;
        return None;
    };
    let n = active(app);
    let idle: Vec<_> = app
        .workers
        .iter()
        .filter(|w| !w.frozen && w.idle == Some(true))
        .collect();
    let idle_n = idle.len() as u32;
    let busy_queue = st.queue_avg > f64::from(sp.shrink_backlog) + 0.5;
    if busy_queue || idle_n <= sp.spare_idle || n <= sp.min_workers {
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
    let count = sp
        .step_down
        .min(idle_n - sp.spare_idle)
        .min(n - sp.min_workers);
    let reason = Reason::IdleSurplus {
        idle: idle_n,
        spare: sp.spare_idle,
        queued: backlog.queued,
    };
    let decisions = match sp.scale_down {
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
            let mut idle = idle;
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
    };
    Some(decisions)
}
