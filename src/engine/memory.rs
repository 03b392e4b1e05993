//! Memory rules: per-worker soft limits, host bounds, recycle deadlines.
//!
//! Host bounds L < U on utilisation m. Above L, the k workers with the
//! most private memory (host-wide, across apps) are recycled gracefully,
//! with k = ceil(N·((m−L)/(U−L))²), at least 1: gentle just past L,
//! everyone as m nears U. Recycles in flight count against k, and after
//! choosing, the engine waits `host.cooldown` to see the effect.
//!
//! Above U there is no time to wait: the biggest workers are killed, but
//! only as many as it takes to bring utilisation back to halfway between L
//! and U (counting the memory of kills still in flight), and never more
//! than k. This needs no timer: a kill frees memory within milliseconds,
//! and the next sample shows it.

use super::{
    Action, Cause, Decision, EngineState, Pending, Reason, Snapshot, WorkerRef, WorkerSample,
    mode_of,
};
use crate::policy::{Mode, Policy};

/// A worker with its app, for choosing host-wide.
struct Candidate<'a> {
    app: &'a str,
    worker: &'a WorkerSample,
}

impl Candidate<'_> {
    fn key(&self) -> WorkerRef {
        WorkerRef {
            app: self.app.to_owned(),
            pid: self.worker.pid,
            starttime: self.worker.starttime,
            scope: self.worker.scope.clone(),
        }
    }
}

/// Every worker old enough to be acted on, biggest first (ties by pid,
/// so the order is stable). A worker younger than its app's min_lifetime
/// is left alone: a respawned worker is small, killing it frees nothing,
/// and killing each respawn again would be a kill storm while an
/// unmanaged process holds the memory. (The kernel still enforces its
/// hard limit.)
fn biggest_first<'a>(policy: &Policy, snap: &'a Snapshot) -> Vec<Candidate<'a>> {
    let mut all: Vec<Candidate> = snap
        .apps
        .iter()
        .flat_map(|a| {
            let min_age = policy
                .app(&a.name)
                .map_or(policy.global.workers.min_lifetime.0, |p| {
                    p.memory.min_lifetime.0
                });
            a.workers
                .iter()
                .filter(move |w| w.age >= min_age)
                .map(move |w| Candidate {
                    app: &a.name,
                    worker: w,
                })
        })
        .collect();
    all.sort_by(|a, b| {
        b.worker
            .private_bytes
            .cmp(&a.worker.private_bytes)
            .then(a.worker.pid.cmp(&b.worker.pid))
    });
    all
}

/// A worker is worth acting on for host memory only if it holds at least
/// this share of the band between the bounds, (U − L)·MemTotal: a fresh
/// respawn holding next to nothing would be recycled or killed for no
/// gain, again and again, while an unmanaged process keeps the memory.
/// (Measured against the band rather than the current excess, which is
/// tiny just past L.)
const WORTH_SHARE: f64 = 0.01;

fn worth_it(c: &Candidate, policy: &Policy, snap: &Snapshot) -> bool {
    let h = &policy.global.host;
    let band = (h.upper_bound.0 - h.lower_bound.0) * snap.host.mem_total as f64;
    c.worker.private_bytes > 0 && c.worker.private_bytes as f64 >= band * WORTH_SHARE
}

/// k = ceil(N·((m−L)/(U−L))²), between 1 and N.
pub fn host_k(workers: usize, m: f64, lower: f64, upper: f64) -> u32 {
    if workers == 0 {
        return 0;
    }
    let x = ((m - lower) / (upper - lower)).clamp(0.0, 1.0);
    let k = (workers as f64 * x * x).ceil() as usize;
    k.clamp(1, workers) as u32
}

/// Graceful recycles past their deadline become kills; observed ones
/// (never carried out) are simply dropped so they can be logged again.
pub(super) fn escalate_overdue(
    policy: &Policy,
    snap: &Snapshot,
    state: &mut EngineState,
    out: &mut Vec<Decision>,
) {
    let deadline = policy.global.workers.recycle_deadline.0;
    let overdue: Vec<(WorkerRef, Pending)> = state
        .pending
        .iter()
        .filter(|(_, p)| snap.now.saturating_sub(p.since) >= deadline)
        .map(|(w, p)| (w.clone(), p.clone()))
        .collect();
    for (worker, pending) in overdue {
        state.pending.remove(&worker);
        if pending.observed {
            continue;
        }
        let waited = snap.now.saturating_sub(pending.since);
        state.killed.insert(worker.clone(), snap.now);
        out.push(Decision {
            mode: mode_of(policy, &worker.app),
            reason: Reason::RecycleTimedOut { waited },
            action: Action::Kill { worker },
        });
    }
    // Observed kills are remembered only long enough not to repeat the log
    // line on every tick.
    let cooldown = policy.global.host.cooldown.0;
    state.killed.retain(|w, at| {
        mode_of(policy, &w.app) == Mode::Enforce || snap.now.saturating_sub(*at) < cooldown
    });
}

pub(super) fn host_bounds(
    policy: &Policy,
    snap: &Snapshot,
    state: &mut EngineState,
    out: &mut Vec<Decision>,
) {
    let host = &policy.global.host;
    let (lower, upper) = (host.lower_bound.0, host.upper_bound.0);
    let m = snap.host.utilisation();
    if m < lower {
        return;
    }
    let all = biggest_first(policy, snap);
    // k counts every managed worker, as in k = ceil(N·x²); only the old
    // enough can be chosen.
    let n = snap.apps.iter().map(|a| a.workers.len()).sum();
    let k = host_k(n, m, lower, upper);
    if k == 0 {
        return;
    }
    if m >= upper {
        kill_biggest(policy, snap, state, out, &all, k);
    } else {
        recycle_biggest(policy, snap, state, out, &all, k);
    }
}

fn kill_biggest(
    policy: &Policy,
    snap: &Snapshot,
    state: &mut EngineState,
    out: &mut Vec<Decision>,
    all: &[Candidate],
    k: u32,
) {
    let host = &policy.global.host;
    let m = snap.host.utilisation();
    let target = (host.lower_bound.0 + host.upper_bound.0) / 2.0;
    let needed = ((m - target) * snap.host.mem_total as f64).max(1.0) as u64;
    let mut relief: u64 = all
        .iter()
        .filter(|c| state.killed.contains_key(&c.key()))
        .map(|c| c.worker.private_bytes)
        .sum();
    let mut chosen = 0;
    for c in all {
        if relief >= needed || chosen >= k {
            break;
        }
        let key = c.key();
        if state.killed.contains_key(&key) || !worth_it(c, policy, snap) {
            continue;
        }
        state.pending.remove(&key);
        state.killed.insert(key.clone(), snap.now);
        relief += c.worker.private_bytes;
        chosen += 1;
        out.push(Decision {
            mode: mode_of(policy, c.app),
            reason: Reason::HostAboveUpper {
                utilisation: m,
                upper: host.upper_bound.0,
                k,
                private_bytes: c.worker.private_bytes,
            },
            action: Action::Kill { worker: key },
        });
    }
    if chosen > 0 {
        state.last_host_action = Some(snap.now);
    }
}

fn recycle_biggest(
    policy: &Policy,
    snap: &Snapshot,
    state: &mut EngineState,
    out: &mut Vec<Decision>,
    all: &[Candidate],
    k: u32,
) {
    let host = &policy.global.host;
    let cooling = state
        .last_host_action
        .is_some_and(|t| snap.now.saturating_sub(t) < host.cooldown.0);
    let in_flight = state
        .pending
        .values()
        .filter(|p| p.cause == Cause::Host)
        .count() as u32;
    if cooling || in_flight >= k {
        return;
    }
    let m = snap.host.utilisation();
    let mut chosen = 0;
    for c in all.iter().take(k as usize) {
        let key = c.key();
        if in_flight + chosen >= k
            || state.is_busy(&key)
            || c.worker.frozen
            || !worth_it(c, policy, snap)
        {
            continue;
        }
        let mode = mode_of(policy, c.app);
        state.pending.insert(
            key.clone(),
            Pending {
                since: snap.now,
                cause: Cause::Host,
                observed: mode == Mode::Observe,
            },
        );
        chosen += 1;
        out.push(Decision {
            mode,
            reason: Reason::HostAboveLower {
                utilisation: m,
                lower: host.lower_bound.0,
                k,
                private_bytes: c.worker.private_bytes,
            },
            action: Action::Recycle { worker: key },
        });
    }
    if chosen > 0 {
        state.last_host_action = Some(snap.now);
    }
}

/// Workers past their app's soft limit are recycled gracefully once they
/// have lived `min_lifetime`, at most a quarter of an app's workers at a
/// time, so a spike that inflates every worker never restarts the app.
pub(super) fn soft_limits(
    policy: &Policy,
    snap: &Snapshot,
    state: &mut EngineState,
    out: &mut Vec<Decision>,
) {
    for app in &snap.apps {
        let Some(ap) = policy.app(&app.name) else {
            continue;
        };
        let Some(soft) = ap.memory.soft_limit.map(|s| s.0) else {
            continue;
        };
        let cap = app.workers.len().div_ceil(4).max(1);
        let mut in_flight = state.pending.keys().filter(|w| w.app == app.name).count();
        let mut over: Vec<&WorkerSample> = app
            .workers
            .iter()
            .filter(|w| w.private_bytes > soft && w.age >= ap.memory.min_lifetime.0 && !w.frozen)
            .collect();
        over.sort_by(|a, b| {
            b.private_bytes
                .cmp(&a.private_bytes)
                .then(a.pid.cmp(&b.pid))
        });
        for w in over {
            let key = WorkerRef {
                app: app.name.clone(),
                pid: w.pid,
                starttime: w.starttime,
                scope: w.scope.clone(),
            };
            if state.is_busy(&key) {
                continue;
            }
            if in_flight >= cap {
                break;
            }
            in_flight += 1;
            state.pending.insert(
                key.clone(),
                Pending {
                    since: snap.now,
                    cause: Cause::SoftLimit,
                    observed: ap.mode == Mode::Observe,
                },
            );
            out.push(Decision {
                mode: ap.mode,
                reason: Reason::SoftLimit {
                    private_bytes: w.private_bytes,
                    soft_limit: soft,
                },
                action: Action::Recycle { worker: key },
            });
        }
    }
}
