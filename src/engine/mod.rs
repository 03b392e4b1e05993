//! The decision core: `(policy, snapshot, state) → decisions, each with a
//! reason`. No I/O, no clock, no randomness: the daemon samples the host,
//! calls [`decide`], and carries out (or, in observe mode, only logs) what
//! comes back. That is what lets the rules be unit-tested, property-tested
//! and replayed against recorded snapshots.

mod memory;
pub mod orphans;
mod reason;
pub mod scaling;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::{Mode, Policy};
pub use reason::Reason;

/// What the daemon saw at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Monotonic time; only differences matter.
    pub now: Duration,
    pub host: HostSample,
    pub apps: Vec<AppSample>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    pub mem_total: u64,
    pub mem_available: u64,
    pub psi_some_avg10: f64,
    pub psi_full_avg10: f64,
}

impl HostSample {
    /// 1 − MemAvailable/MemTotal.
    pub fn utilisation(&self) -> f64 {
        if self.mem_total == 0 {
            return 0.0;
        }
        1.0 - (self.mem_available.min(self.mem_total) as f64 / self.mem_total as f64)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppSample {
    pub name: String,
    pub workers: Vec<WorkerSample>,
    /// Listen backlog over the app's sockets, when known.
    pub backlog: Option<Backlog>,
    /// Worker slots the app server reports but that run no process
    /// (uWSGI "cheap" slots, gunicorn workers asked to stop).
    pub stopped_slots: u32,
    /// What one worker serves at once, when the app's scaling follows the
    /// connections its workers hold (see [`scaling::load_plan`]); `None`:
    /// it follows the accept queue.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// An operator paused the app: its decisions are only logged.
    #[serde(default)]
    pub paused: bool,
    /// Why its workers must not be frozen, when the daemon found so (see
    /// daemon::safety): scaling down then stops idle workers instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_refused: Option<String>,
    /// No master runs (the app is stopped or being stopped): nothing to
    /// scale, and losing workers one by one is no reason to grow.
    #[serde(default)]
    pub no_master: bool,
    /// Workers that run but have no sample yet: being moved into their
    /// scopes, or placed since the last read of the scopes. The worker
    /// count includes them.
    #[serde(default)]
    pub unsampled: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// The longest accept queue of the app's listening sockets.
    pub queued: u32,
    /// That socket's maximum.
    pub max: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerSample {
    pub pid: u32,
    /// With the PID, names this process for good (/proc/PID/stat).
    #[serde(default)]
    pub starttime: u64,
    pub scope: String,
    /// The scope's memory.current: what the worker dirtied itself.
    pub private_bytes: u64,
    pub age: Duration,
    pub frozen: bool,
    /// Idle (waiting for a request) when known; `None` when the app
    /// server does not tell.
    pub idle: Option<bool>,
    /// The client connections the worker holds, when counted (apps whose
    /// scaling follows connections).
    #[serde(default)]
    pub connections: Option<u32>,
}

/// A worker, as the engine names it in decisions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkerRef {
    pub app: String,
    pub pid: u32,
    /// A worker is (PID, start time): state never carries over to a
    /// process that got the PID of one that died.
    #[serde(default)]
    pub starttime: u64,
    pub scope: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Ask the worker to finish its request and exit; the master respawns it.
    Recycle { worker: WorkerRef },
    /// SIGKILL every process in the worker's scope, now.
    Kill { worker: WorkerRef },
    /// Ask the app server for more workers.
    Grow { app: String, count: u32 },
    /// Ask the app server for fewer workers.
    Shrink { app: String, count: u32 },
    /// Park an idle worker: freeze its scope.
    Freeze { worker: WorkerRef },
    /// Bring a parked worker back.
    Thaw { worker: WorkerRef },
    /// SIGKILL a scope whose worker outlived its master (see [`orphans`]).
    Reap { worker: WorkerRef },
}

impl Action {
    pub fn app(&self) -> &str {
        match self {
            Action::Recycle { worker }
            | Action::Kill { worker }
            | Action::Freeze { worker }
            | Action::Thaw { worker }
            | Action::Reap { worker } => &worker.app,
            Action::Grow { app, .. } | Action::Shrink { app, .. } => app,
        }
    }

    pub fn worker(&self) -> Option<&WorkerRef> {
        match self {
            Action::Recycle { worker }
            | Action::Kill { worker }
            | Action::Freeze { worker }
            | Action::Thaw { worker }
            | Action::Reap { worker } => Some(worker),
            Action::Grow { .. } | Action::Shrink { .. } => None,
        }
    }

    /// The name used in logs and metrics (`ACTION=` in the journal).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Recycle { .. } => "recycle",
            Action::Kill { .. } => "kill",
            Action::Grow { .. } => "grow",
            Action::Shrink { .. } => "shrink",
            Action::Freeze { .. } => "freeze",
            Action::Thaw { .. } => "thaw",
            Action::Reap { .. } => "reap",
        }
    }
}

/// One decision: what to do, why, and whether to do it or only log it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(flatten)]
    pub action: Action,
    pub reason: Reason,
    pub mode: Mode,
}

/// Why a worker is being recycled; host-caused recycles count against k.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    SoftLimit,
    Host,
    Operator,
}

/// A recycle asked for and not finished yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub since: Duration,
    pub cause: Cause,
    /// Observe mode: logged, not acted on, so never escalated.
    pub observed: bool,
}

/// What the engine remembers between calls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    pub pending: BTreeMap<WorkerRef, Pending>,
    /// Workers already killed: never chosen again while they linger.
    pub killed: BTreeMap<WorkerRef, Duration>,
    pub last_host_action: Option<Duration>,
    pub scaling: BTreeMap<String, scaling::ScalingState>,
}

impl EngineState {
    /// Forget a worker the daemon could not act on (it had already gone).
    pub fn forget(&mut self, worker: &WorkerRef) {
        self.pending.remove(worker);
        self.killed.remove(worker);
    }

    /// Drop what refers to workers that are no longer there.
    fn prune(&mut self, snap: &Snapshot) {
        let alive = |w: &WorkerRef| {
            snap.apps.iter().any(|a| {
                a.name == w.app
                    && a.workers
                        .iter()
                        .any(|s| s.pid == w.pid && s.scope == w.scope && s.starttime == w.starttime)
            })
        };
        self.pending.retain(|w, _| alive(w));
        self.killed.retain(|w, _| alive(w));
        self.scaling
            .retain(|app, _| snap.apps.iter().any(|a| &a.name == app));
    }

    /// True while the worker has a recycle or kill under way.
    pub fn is_busy(&self, w: &WorkerRef) -> bool {
        self.pending.contains_key(w) || self.killed.contains_key(w)
    }
}

/// Everything to do now, given what was seen. Updates `state` as if every
/// decision in enforce mode is carried out; the daemon calls
/// [`EngineState::forget`] for any that could not be.
pub fn decide(policy: &Policy, snap: &Snapshot, state: &mut EngineState) -> Vec<Decision> {
    let policy = &*effective(policy, snap);
    state.prune(snap);
    // Decisions only logged (observe mode, a paused app) are forgotten
    // once the app enforces again, so they are taken again and carried out.
    state
        .pending
        .retain(|w, p| !(p.observed && mode_of(policy, &w.app) == Mode::Enforce));
    let mut out = Vec::new();
    memory::escalate_overdue(policy, snap, state, &mut out);
    memory::host_bounds(policy, snap, state, &mut out);
    memory::soft_limits(policy, snap, state, &mut out);
    scaling::decide(policy, snap, state, &mut out);
    out
}

/// The mode an app's decisions run in.
fn mode_of(policy: &Policy, app: &str) -> Mode {
    policy.app(app).map_or(policy.global.mode, |a| a.mode)
}

/// The mode an app's decisions run in now: a paused app observes. For the
/// decisions taken outside [`decide`] (an operator's recycle, orphans).
pub fn app_mode(policy: &Policy, app: &str, paused: bool) -> Mode {
    if paused {
        Mode::Observe
    } else {
        mode_of(policy, app)
    }
}

/// The policy as it applies to what was seen: a paused app observes; an
/// app whose workers must not be frozen scales down by stopping them; an
/// app without a master does not scale.
fn effective<'a>(policy: &'a Policy, snap: &Snapshot) -> Cow<'a, Policy> {
    let changes = |app: &AppSample| app.paused || app.freeze_refused.is_some() || app.no_master;
    if !snap.apps.iter().any(changes) {
        return Cow::Borrowed(policy);
    }
    let mut p = policy.clone();
    for seen in snap.apps.iter().filter(|a| changes(a)) {
        let Some(app) = p.apps.iter_mut().find(|a| a.name == seen.name) else {
            continue;
        };
        if seen.paused {
            app.mode = Mode::Observe;
        }
        if seen.no_master {
            app.scaling = None;
        }
        if seen.freeze_refused.is_some()
            && let Some(s) = app.scaling.as_mut()
        {
            s.scale_down = crate::policy::ScaleDown::Stop;
        }
    }
    Cow::Owned(p)
}

#[cfg(test)]
mod tests;
