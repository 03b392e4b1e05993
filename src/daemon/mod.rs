//! The event loop that wires sense → decide → act.
//!
//! [`Daemon`] holds the state and does one step at a time (`host_tick`,
//! `worker_tick`, `on_fork`, `reload`); [`run`] owns the clock, the
//! signals and the sockets and calls those steps. The steps are generic
//! over systemd and over how workers are signalled, so tests drive them
//! on fake trees without a loop.

mod act;
pub mod backlog;
mod backoff;
pub mod bus;
mod calls;
mod discover;
pub mod host;
mod kill;
pub mod metrics;
pub mod model;
pub mod report;
mod run;
mod safety;
mod sense;
pub mod signal;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::stream::FuturesUnordered;

pub use run::run;

#[cfg(test)]
mod tests;

use crate::cgroup::CgroupFs;
use crate::engine::{EngineState, HostSample};
use crate::paths::HostPaths;
use crate::policy::Policy;
use crate::procfs::ProcFs;
use crate::systemd::Systemd;
use crate::wire::StatusView;
use discover::Placing;
use model::AppRuntime;
use report::EventLog;
use signal::Signaller;

/// What the D-Bus interface and the metrics endpoint read.
#[derive(Default)]
pub struct Shared {
    pub status: StatusView,
    pub events: EventLog,
    pub actions: metrics::ActionCounts,
}

pub struct Daemon<S: Systemd, K: Signaller> {
    pub paths: HostPaths,
    pub procfs: ProcFs,
    pub cgroups: CgroupFs,
    /// Shared with the placements under way (see `placing`).
    pub systemd: Rc<S>,
    pub signaller: K,
    pub policy: Policy,
    pub apps: BTreeMap<String, AppRuntime>,
    pub engine: EngineState,
    pub host: Option<HostSample>,
    pub started: Instant,
    /// Problems to show in `status` (policy errors, a missing bus name).
    pub problems: Vec<String>,
    pub shared: Arc<Mutex<Shared>>,
    /// When a host-read problem was last logged.
    host_warned: Option<Instant>,
    /// Listen queues: sock_diag on a real host; `None` turns backlogs off.
    pub listeners: Option<Box<dyn backlog::ListenerSource>>,
    backlog_warned: Option<Instant>,
    connections_warned: Option<Instant>,
    /// Apps an operator paused: their decisions are only logged.
    pub paused: std::collections::BTreeSet<String>,
    /// Scopes being created: the steps start them, the loop takes each
    /// one's answer as it comes ([`Daemon::placed`]). So a slow PID 1 (a
    /// scope a second under load) holds up neither the host tick, which
    /// protects the host, nor the watchdog.
    placing: FuturesUnordered<Placing>,
    /// Other systemd calls under way (see [`calls`]).
    calls: FuturesUnordered<calls::Call>,
    /// Full steps so far (see `sense::DETAIL_EVERY`).
    worker_ticks: u64,
    /// Until when systemd is taken for stuck (see [`kill`]).
    stuck_until: std::cell::Cell<Option<Instant>>,
    /// A worker came or went since the status view was last published:
    /// the next host step publishes it, so `status` right after a respawn
    /// lists the new worker (as "new", before its first sample).
    unpublished: bool,
    /// When the status view was last published.
    published: Instant,
}

/// A worker that came or went is in the status view within this long.
const REPUBLISH_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// Drops what the app's per-PID maps hold of processes that are gone:
/// with a master that runs for months they would otherwise grow with
/// every PID it ever had.
fn forget_the_dead(app: &mut AppRuntime, procfs: &ProcFs) {
    let now = Instant::now();
    app.retry_after.retain(|_, t| *t > now);
    app.not_workers
        .retain(|(pid, start)| procfs.pid_stat(*pid).is_ok_and(|s| s.starttime == *start));
}

impl<S: Systemd, K: Signaller> Daemon<S, K> {
    pub fn new(
        paths: HostPaths,
        cgroups: CgroupFs,
        systemd: S,
        signaller: K,
        policy: Policy,
    ) -> Self {
        let mut d = Self {
            procfs: ProcFs::new(&paths),
            paths,
            cgroups,
            systemd: Rc::new(systemd),
            signaller,
            policy: Policy {
                global: policy.global.clone(),
                apps: Vec::new(),
            },
            apps: BTreeMap::new(),
            engine: EngineState::default(),
            host: None,
            started: Instant::now(),
            problems: Vec::new(),
            shared: Arc::new(Mutex::new(Shared::default())),
            host_warned: None,
            listeners: None,
            backlog_warned: None,
            connections_warned: None,
            paused: Default::default(),
            placing: FuturesUnordered::new(),
            calls: FuturesUnordered::new(),
            worker_ticks: 0,
            unpublished: false,
            published: Instant::now(),
            stuck_until: Default::default(),
        };
        d.set_policy(policy);
        d
    }

    /// Takes a new (already validated) policy: apps added, removed or
    /// changed. Workers of a removed app are left running in their scopes.
    pub fn set_policy(&mut self, policy: Policy) {
        self.apps.retain(|name, _| policy.app(name).is_some());
        for ap in &policy.apps {
            match self.apps.get_mut(&ap.name) {
                Some(app) if app.policy.unit != ap.unit || app.policy.server != ap.server => {
                    *app = AppRuntime::new(ap.clone(), &self.paths);
                }
                Some(app) => {
                    app.adapter = crate::adapter::Adapter::new(ap, &self.paths);
                    app.policy = ap.clone();
                    // A unit still missing is said again after a reload.
                    app.missing_logged = false;
                }
                None => {
                    self.apps
                        .insert(ap.name.clone(), AppRuntime::new(ap.clone(), &self.paths));
                }
            }
        }
        self.policy = policy;
    }

    /// Monotonic time for the engine.
    fn now(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// The fast step (default 10 Hz): host memory and PSI, new workers,
    /// and, while host memory is above the lower bound, worker memory.
    pub async fn host_tick(&mut self) {
        if !self.sense_host() {
            return;
        }
        let names: Vec<String> = self.apps.keys().cloned().collect();
        for name in &names {
            self.discover(name).await;
        }
        let pressured = self
            .host
            .is_some_and(|h| h.utilisation() >= self.policy.global.host.lower_bound.0);
        if pressured {
            self.sample_workers(true);
        }
        self.sample_backlogs();
        self.decide_and_act().await;
        // At most four times a second: with 1,000 workers being placed,
        // a view at every host step (10 Hz) cost the daemon a good part
        // of an emulated CPU.
        if self.unpublished && self.published.elapsed() >= REPUBLISH_AFTER {
            self.publish();
        }
    }

    /// The full step (default 1 Hz): services, adoption, every worker's
    /// memory files, OOM kills; then decide, act and publish.
    pub async fn worker_tick(&mut self) {
        self.refresh_services().await;
        self.check_freeze_safety().await;
        let names: Vec<String> = self.apps.keys().cloned().collect();
        for app in self.apps.values_mut() {
            let placed = app.workers.values().map(|w| w.placed_at);
            backoff::note_survivors(&mut app.young, &app.policy.name, placed);
            forget_the_dead(app, &self.procfs);
        }
        for name in &names {
            self.reap_orphans(name).await;
            self.adopt(name);
            self.sync_limits(name);
            self.discover(name).await;
            self.refresh_roster(name).await;
        }
        self.sense_host();
        self.sample_workers(false);
        self.sample_idle();
        self.refresh_sockets();
        self.sample_backlogs();
        self.check_oom_kills();
        self.decide_and_act().await;
        self.publish();
    }

    /// Refuses `scale_down = "freeze"` where freezing is unsafe (see
    /// [`safety`]); says so when that changes. The check of a new master
    /// runs on a thread of its own; the step waits for it a little.
    async fn check_freeze_safety(&mut self) {
        for app in self.apps.values_mut() {
            safety::start_check(&self.procfs, &self.paths, app);
        }
        let deadline = tokio::time::Instant::now() + safety::CHECK_WAIT;
        for app in self.apps.values_mut() {
            let refusal = safety::freeze_refusal(&self.procfs, &self.paths, app, deadline).await;
            if refusal == app.freeze_refused {
                continue;
            }
            let name = app.policy.name.as_str();
            let was_pending = app.freeze_refused.as_deref() == Some(safety::PENDING);
            match &refusal {
                Some(why) if why == safety::PENDING => tracing::info!(
                    app = name,
                    "{why} for {name}: until then, stopping idle workers instead"
                ),
                Some(why) => tracing::error!(
                    app = name,
                    "not freezing workers of {name}, stopping them instead: {why}"
                ),
                None if app.freeze_refused.is_some() && !was_pending => {
                    tracing::info!(app = name, "freezing idle workers of {name} is safe again")
                }
                None => {}
            }
            app.freeze_refused = refusal;
        }
    }

    /// A process forked: if its parent is a managed master, place the
    /// child now rather than at the next tick.
    pub async fn on_fork(&mut self, parent: u32) {
        let name = self
            .apps
            .iter()
            .find(|(_, a)| a.master() == Some(parent))
            .map(|(n, _)| n.clone());
        if let Some(name) = name {
            self.discover(&name).await;
        }
    }

    /// A process exited: forget it at once if it was a worker; if it was
    /// an app's master, the app has none until systemd says otherwise.
    pub fn on_exit(&mut self, pid: u32) {
        for app in self.apps.values_mut() {
            if app.master() == Some(pid) {
                tracing::info!(
                    app = app.policy.name.as_str(),
                    master_pid = pid,
                    "the main process of {} exited",
                    app.policy.unit
                );
                app.service = None;
                self.unpublished = true;
            }
            if let Some(w) = app.workers.remove(&pid) {
                self.unpublished = true;
                tracing::debug!(
                    app = app.policy.name.as_str(),
                    worker_pid = pid,
                    scope = w.scope.as_str(),
                    "worker exited"
                );
                let lived = w.placed_at.elapsed();
                backoff::note_death(
                    &mut app.young,
                    &app.policy.name,
                    pid,
                    (w.placed_at, lived),
                    w.leaving.is_some(),
                );
            }
        }
    }

    /// Takes the answers for every scope under way (tests; the loop takes
    /// them one at a time as they come).
    #[cfg(test)]
    pub async fn settle(&mut self) {
        while self.next_placement().await || self.next_call().await {}
    }

    /// Number of workers under management.
    pub fn worker_count(&self) -> usize {
        self.apps.values().map(|a| a.workers.len()).sum()
    }

    /// One line for systemd's STATUS=.
    pub fn status_line(&self) -> String {
        let mut s = format!("{} apps, {} workers", self.apps.len(), self.worker_count());
        if let Some(h) = self.host {
            s += &format!(", host memory {:.0}%", h.utilisation() * 100.0);
        }
        if self.apps.is_empty() {
            s += ", no policy in /etc/adaptive-workers/policies.d: managing nothing";
        }
        if !self.problems.is_empty() {
            s += &format!(
                ", {} problems (see adaptive-workers status)",
                self.problems.len()
            );
        }
        s
    }

    /// Leaves the workers running, but never frozen: with the daemon gone
    /// nothing would thaw them.
    pub async fn shutdown(&mut self) {
        for app in self.apps.values_mut() {
            for w in app.workers.values_mut().filter(|w| w.frozen) {
                let thaw = self.systemd.thaw(&w.scope);
                match tokio::time::timeout(kill::ACT_DEADLINE, thaw).await {
                    Ok(Ok(())) => w.frozen = false,
                    Ok(Err(e)) => {
                        tracing::error!(scope = w.scope.as_str(), "failed to thaw on exit: {e}")
                    }
                    Err(_) => tracing::error!(
                        scope = w.scope.as_str(),
                        "failed to thaw on exit: systemd did not answer within {:?}",
                        kill::ACT_DEADLINE
                    ),
                }
            }
        }
    }
}
