//! Finding workers and putting each in its own scope.
//!
//! A worker is a child of the service's main process that still sits in
//! the service's cgroup: respawned workers are born there and must be
//! moved, fast (every millisecond there is memory charged to the master's
//! cgroup). With a uWSGI stats socket, only the PIDs uWSGI lists as
//! workers count; if the stats cannot be read, nothing is placed rather
//! than guessing. After a restart, scopes already in the app's slice are
//! adopted, never created twice.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use futures_util::StreamExt;

use super::Daemon;
use super::model::Worker;
use super::signal::Signaller;
use crate::engine::orphans;
use crate::procfs::PidStat;
use crate::systemd::{Systemd, escape, slice_cgroup};

/// Scopes being created at once, host-wide. PID 1 creates them one after
/// the other, so more in flight places no faster: it only makes every
/// other call to systemd wait behind them. With 32, under emulation (six
/// scopes a second), reading an app's service took 20 s and the loop
/// missed its watchdog pet by far (68-many-workers).
pub(super) const PLACE_AT_ONCE: usize = 8;

/// One scope being created: resolves to systemd's answer.
pub(super) type Placing = Pin<Box<dyn Future<Output = Placement>>>;

/// A scope systemd has created, or failed to.
pub(super) struct Placement {
    app: String,
    stat: PidStat,
    spec: crate::systemd::ScopeSpec,
    /// When the placement began.
    started: Instant,
    result: Result<(), crate::systemd::SystemdError>,
}
/// A failed placement is retried after this long.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// A child the stats socket has not listed for this long is not a worker.
const ROSTER_GRACE: Duration = Duration::from_secs(2);
/// After a failed read of the app server's stats, the next try waits this
/// long (a socket that hangs costs its whole timeout each time).
const ROSTER_RETRY: Duration = Duration::from_secs(2);
/// Repeated problems are logged at most this often.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(60);

impl<S: Systemd, K: Signaller> Daemon<S, K> {
    /// Children of the master still in the service cgroup, not yet placed:
    /// the first `limit` of them. Each costs a read of /proc/PID/stat, and
    /// a master that forked 1,000 workers leaves them all in the service
    /// while 8 at a time are placed: reading every one at every tick and
    /// fork event (10 Hz and more) kept the loop from its watchdog for
    /// seconds under emulation, for 8 to be used.
    pub(super) fn candidates(&self, name: &str, limit: usize) -> Vec<PidStat> {
        let Some(app) = self.apps.get(name) else {
            return Vec::new();
        };
        let (Some(master), Some(service)) = (app.master(), app.service.as_ref()) else {
            return Vec::new();
        };
        let procs = match self.cgroups.procs(&service.control_group) {
            Ok(p) => p,
            Err(e) if e.is_gone() => return Vec::new(),
            Err(e) => {
                tracing::warn!(app = name, "{e}");
                return Vec::new();
            }
        };
        let now = Instant::now();
        let delay = app.young.delay;
        procs
            .into_iter()
            .filter(|pid| {
                *pid != master && !app.workers.contains_key(pid) && !app.placing.contains(pid)
            })
            .filter(|pid| app.retry_after.get(pid).is_none_or(|t| *t <= now))
            .filter_map(|pid| self.procfs.pid_stat(pid).ok())
            .filter(|s| s.ppid == master && !app.not_workers.contains(&(s.pid, s.starttime)))
            .filter(|s| delay.is_zero() || age_of(s.starttime) >= delay)
            .take(limit)
            .collect()
    }

    /// Finds new workers of one app and places them.
    pub(super) async fn discover(&mut self, name: &str) {
        // At most PLACE_AT_ONCE scopes under way, host-wide: the rest are
        // found again on the next fast tick (100 ms) once some are done.
        let room = PLACE_AT_ONCE.saturating_sub(self.placing.len());
        if room == 0 {
            return;
        }
        let mut found = self.candidates(name, room);
        if found.is_empty() {
            return;
        }
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        if app.adapter.has_roster() {
            let roster = match read_roster(app).await {
                Some(Ok(r)) => r.unwrap_or_default(),
                Some(Err(e)) => {
                    if app.roster_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        tracing::warn!(app = name, "not placing new workers: {e}");
                        app.roster_warned = Some(Instant::now());
                    }
                    return;
                }
                None => return,
            };
            let ages: Vec<Duration> = found.iter().map(|s| age_of(s.starttime)).collect();
            let mut keep = Vec::new();
            for (stat, age) in found.into_iter().zip(ages) {
                if roster.has(stat.pid) {
                    keep.push(stat);
                } else if age >= ROSTER_GRACE {
                    tracing::debug!(app = name, pid = stat.pid, "not a worker by uWSGI's stats");
                    app.not_workers.insert((stat.pid, stat.starttime));
                }
            }
            app.roster = Some(roster);
            found = keep;
        }
        self.place(name, found);
    }

    /// Starts creating a scope for each worker; [`Daemon::placed`] takes
    /// the answers. Nothing here waits for systemd.
    fn place(&mut self, name: &str, found: Vec<PidStat>) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        let Some(master) = app.master() else {
            return;
        };
        for stat in found {
            let spec = app.scope_spec(stat.pid, master);
            let systemd = Rc::clone(&self.systemd);
            let app_name = name.to_owned();
            app.placing.insert(stat.pid);
            let started = Instant::now();
            self.placing.push(Box::pin(async move {
                let result = systemd.start_scope(&spec).await;
                Placement {
                    app: app_name,
                    stat,
                    spec,
                    started,
                    result,
                }
            }));
        }
    }

    /// Whether scopes are being created.
    pub fn placing(&self) -> bool {
        !self.placing.is_empty()
    }

    /// Waits for the next scope under way to be created or to fail, and
    /// takes the answer; `false` at once when none is under way.
    pub async fn next_placement(&mut self) -> bool {
        match self.placing.next().await {
            Some(p) => {
                self.placed(p);
                true
            }
            None => false,
        }
    }

    /// Takes systemd's answer for one scope: the worker is managed from
    /// now on, or its placement is tried again later.
    pub(super) fn placed(&mut self, p: Placement) {
        let Placement {
            app: name,
            stat,
            spec,
            started,
            result,
        } = p;
        let Some(app) = self.apps.get_mut(&name) else {
            // The app left the policy meanwhile: like its other workers,
            // this one stays in its scope, unmanaged.
            return;
        };
        app.placing.remove(&stat.pid);
        match result {
            Ok(()) => {
                let cgroup = app.scope_cgroup(&spec.name);
                let master = app.master();
                // systemd was given a PID, up to seconds after it was
                // read: the scope must hold that very process.
                match self.procfs.pid_stat(stat.pid) {
                    Ok(now) if now.starttime == stat.starttime => {
                        let w = new_worker(&stat, spec.name, cgroup, false);
                        self.take_worker(&name, w);
                    }
                    Ok(now) if Some(now.ppid) == master => {
                        // The worker died and the master forked another
                        // that got its PID: a worker all the same.
                        let w = new_worker(&now, spec.name, cgroup, false);
                        self.take_worker(&name, w);
                    }
                    other => self.placed_wrong_process(&name, &spec, other.is_ok()),
                }
            }
            Err(e) => {
                let gone = self
                    .procfs
                    .pid_stat(stat.pid)
                    .map_or(true, |s| s.starttime != stat.starttime);
                if gone {
                    super::backoff::note_death(
                        &mut app.young,
                        &app.policy.name,
                        stat.pid,
                        (started, Duration::ZERO),
                        false,
                    );
                    tracing::debug!(
                        app = name.as_str(),
                        worker_pid = stat.pid,
                        "worker exited before placement: {e}"
                    );
                    return;
                }
                app.counters.placement_failures += 1;
                app.retry_after
                    .insert(stat.pid, Instant::now() + RETRY_AFTER);
                tracing::error!(
                    app = name.as_str(),
                    worker_pid = stat.pid,
                    scope = spec.name.as_str(),
                    action = "place",
                    "failed to place worker {}: {e}; retrying in {RETRY_AFTER:?}",
                    stat.pid
                );
            }
        }
    }

    /// The scope made for a worker holds another process, one that got
    /// the worker's PID after it died (or none). It is not the daemon's to
    /// signal: its limits are lifted, it is left alone, and it is said.
    fn placed_wrong_process(&mut self, name: &str, spec: &crate::systemd::ScopeSpec, alive: bool) {
        let pid = spec.pid;
        let limited = spec.memory_high.is_some() || spec.memory_max.is_some();
        if let Some(app) = self.apps.get_mut(name) {
            app.counters.placement_failures += 1;
            if alive && limited {
                app.limits_lift.insert(spec.name.clone());
            }
        }
        self.pump_limits();
        tracing::error!(
            app = name,
            worker_pid = pid,
            scope = spec.name.as_str(),
            action = "place",
            outcome = "another process",
            "placed PID {pid} in {}, but it no longer names the worker of {name} that was found (it died, and its PID was reused): not managing {}, its memory limits lifted",
            spec.name,
            spec.name
        );
    }

    /// Kills the scopes of workers whose master died, as the engine
    /// decides (see [`crate::engine::orphans`]). Checked when the master
    /// changes, and once at start for a crash while the daemon was away:
    /// not on every tick; a check without firm evidence is made again.
    pub(super) async fn reap_orphans(&mut self, name: &str) {
        let Some(app) = self.apps.get(name) else {
            return;
        };
        let master = app.master();
        if app.orphans_checked_for == Some(master) {
            return;
        }
        let seen = service_seen(app);
        if !orphans::settled(&seen) {
            return;
        }
        let Some(procs) = self.scope_processes(name) else {
            return;
        };
        let mode = self.mode_of(name);
        let decisions = orphans::decide(name, mode, &seen, &procs);
        if let Some(app) = self.apps.get_mut(name)
            && !procs.iter().any(|p| p.parent == orphans::Parent::Unknown)
        {
            app.orphans_checked_for = Some(master);
        }
        for d in decisions {
            self.act(d).await;
        }
    }

    /// The worker scopes in the app's slice, with their cgroups; `None`
    /// when the slice cannot be read.
    fn worker_scopes(&self, name: &str) -> Option<Vec<(String, String)>> {
        let slice = slice_cgroup(name);
        let prefix = format!("aw-{}-", escape(name));
        let children = self.cgroups.children(&slice).ok()?;
        let scopes = children
            .into_iter()
            .filter(|c| c.starts_with(&prefix) && c.ends_with(".scope"))
            .map(|scope| {
                let cgroup = format!("{slice}/{scope}");
                (scope, cgroup)
            })
            .collect();
        Some(scopes)
    }

    /// Every process in the app's worker scopes, and where its parent is;
    /// `None` when the slice cannot be read.
    fn scope_processes(&self, name: &str) -> Option<Vec<orphans::ScopeProcess>> {
        let app = self.apps.get(name)?;
        let master = Some(app.unit_main_pid).filter(|p| *p != 0);
        let service = app.service.as_ref().map(|s| s.control_group.as_str());
        let mut out = Vec::new();
        for (scope, cgroup) in self.worker_scopes(name)? {
            for pid in self.cgroups.procs(&cgroup).unwrap_or_default() {
                let Ok(stat) = self.procfs.pid_stat(pid) else {
                    continue;
                };
                let parent = if Some(stat.ppid) == master {
                    orphans::Parent::Master
                } else {
                    match self.procfs.pid_cgroup(stat.ppid) {
                        Ok(cg) if cg == cgroup => orphans::Parent::SameScope,
                        Ok(cg) if Some(cg.as_str()) == service => orphans::Parent::InService,
                        Ok(_) => orphans::Parent::Elsewhere,
                        Err(_) => orphans::Parent::Unknown,
                    }
                };
                out.push(orphans::ScopeProcess {
                    worker: crate::engine::WorkerRef {
                        app: name.to_owned(),
                        pid,
                        starttime: stat.starttime,
                        scope: scope.clone(),
                    },
                    ppid: stat.ppid,
                    parent,
                });
            }
        }
        Some(out)
    }

    /// Takes over workers already in scopes of the app's slice (after a
    /// daemon restart), and brings their limits in line with the policy.
    pub(super) fn adopt(&mut self, name: &str) {
        let Some(app) = self.apps.get(name) else {
            return;
        };
        let Some(master) = app.master() else {
            return;
        };
        let Some(scopes) = self.worker_scopes(name) else {
            return;
        };
        // The scopes of managed workers are not read again: with 1,000
        // workers that was 1,000 files a second.
        let managed: BTreeSet<&str> = app.workers.values().map(|w| w.scope.as_str()).collect();
        let mut adopted = Vec::new();
        for (scope, cgroup) in scopes
            .into_iter()
            .filter(|(scope, _)| !managed.contains(scope.as_str()))
        {
            for pid in self.cgroups.procs(&cgroup).unwrap_or_default() {
                // Managed already, or being placed (systemd made the
                // scope; its answer is on the way).
                if app.workers.contains_key(&pid) || app.placing.contains(&pid) {
                    continue;
                }
                match self.procfs.pid_stat(pid) {
                    Ok(stat) if stat.ppid == master => {
                        adopted.push(new_worker(&stat, scope.clone(), cgroup.clone(), true))
                    }
                    _ => continue,
                }
            }
        }
        let limits = app.limits();
        for w in adopted {
            let current = (
                self.cgroups.memory_high(&w.cgroup).ok().flatten(),
                self.cgroups.memory_max(&w.cgroup).ok().flatten(),
            );
            if current != limits
                && let Some(app) = self.apps.get_mut(name)
            {
                app.limits_todo.insert(w.scope.clone());
            }
            self.take_worker(name, w);
        }
        self.pump_limits();
    }

    /// After a reload changed an app's limits (or its mode), brings every
    /// worker scope in line, beside the loop ([`Daemon::pump_limits`]).
    pub(super) fn sync_limits(&mut self, name: &str) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        let limits = app.limits();
        if limits == app.limits_applied {
            return;
        }
        let scopes: Vec<String> = app.workers.values().map(|w| w.scope.clone()).collect();
        app.limits_todo.extend(scopes);
        app.limits_applied = limits;
        tracing::info!(
            app = name,
            "updating the memory limits of {name}'s worker scopes"
        );
        self.pump_limits();
    }

    /// Reads the app server's own view of its workers (idle or busy).
    pub(super) async fn refresh_roster(&mut self, name: &str) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        if !app.adapter.has_roster() || app.master().is_none() {
            return;
        }
        // Not tried (the last read failed just now): no stale idle flags.
        let read = read_roster(app).await.unwrap_or(Ok(None));
        match read {
            Ok(r) => {
                for w in app.workers.values_mut() {
                    w.idle = r.as_ref().and_then(|r| r.idle(w.pid));
                }
                app.roster = r;
            }
            Err(e) => {
                app.roster = None;
                app.workers.values_mut().for_each(|w| w.idle = None);
                if app.roster_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!(app = name, "{e}");
                    app.roster_warned = Some(Instant::now());
                }
            }
        }
    }
}

impl<S: Systemd, K: Signaller> Daemon<S, K> {
    /// Starts managing a worker just placed or adopted: logged, counted.
    fn take_worker(&mut self, name: &str, w: Worker) {
        let (action, verb) = if w.adopted {
            ("adopt", "adopted")
        } else {
            ("place", "placed")
        };
        tracing::info!(
            app = name,
            worker_pid = w.pid,
            scope = w.scope.as_str(),
            action,
            "{verb} worker {} of {name} in {}",
            w.pid,
            w.scope
        );
        let app = self.apps.get_mut(name).expect("the app is managed");
        match w.adopted {
            true => app.counters.adopted += 1,
            false => app.counters.placed += 1,
        }
        app.workers.insert(w.pid, w);
        self.unpublished = true;
    }
}

/// What systemd said of the app's service in this pass, for the engine.
fn service_seen(app: &super::model::AppRuntime) -> orphans::ServiceSeen {
    match (app.service_fresh, app.unit_state.as_deref()) {
        (false, _) | (true, None) => orphans::ServiceSeen::Unknown,
        (true, Some("not-found")) => orphans::ServiceSeen::NotFound,
        (true, Some(state)) => orphans::ServiceSeen::State {
            active_state: state.to_owned(),
            main_pid: app.unit_main_pid,
        },
    }
}

/// Takes what systemd said of an app's service, read just now.
pub(super) fn take_service(
    app: &mut super::model::AppRuntime,
    info: Option<crate::systemd::ServiceInfo>,
) {
    let name = app.policy.name.clone();
    let unit = app.policy.unit.clone();
    app.service_fresh = true;
    app.unit_main_pid = info.as_ref().map_or(0, |s| s.main_pid);
    app.unit_state = Some(
        info.as_ref()
            .map_or("not-found", |s| s.active_state.as_str())
            .to_owned(),
    );
    if info.is_none() && !app.missing_logged {
        tracing::warn!(
            app = name.as_str(),
            unit = unit.as_str(),
            "{unit}, named in {}, is not known to systemd (LoadState=not-found): nothing to manage until it exists; check the name",
            app.policy.file.display()
        );
        app.missing_logged = true;
    }
    // A running unit without a main process (Type=oneshot with
    // RemainAfterExit, a unit that forked away): no master, so nothing is
    // ever placed, scaled or reaped for it. Said once per reload.
    let no_main = info
        .as_ref()
        .is_some_and(|s| s.active_state == "active" && s.main_pid == 0);
    if no_main && !app.missing_logged {
        tracing::warn!(
            app = name.as_str(),
            unit = unit.as_str(),
            "{unit}, named in {}, is active but has no main PID: there is no master whose workers to manage",
            app.policy.file.display()
        );
        app.missing_logged = true;
    }
    let running = info.filter(|s| {
        matches!(
            s.active_state.as_str(),
            "active" | "reloading" | "activating"
        )
    });
    let old = app.master();
    app.service = running;
    if app.master() == old {
        return;
    }
    match app.master() {
        Some(pid) => tracing::info!(
            app = name.as_str(),
            master_pid = pid,
            "{unit} runs with main PID {pid}"
        ),
        None => tracing::info!(app = name.as_str(), "{unit} is not running"),
    }
    app.not_workers.clear();
    app.retry_after.clear();
}

/// The app server's roster, unless a read failed less than ROSTER_RETRY
/// ago (`None`: not tried).
async fn read_roster(
    app: &mut super::model::AppRuntime,
) -> Option<Result<Option<crate::adapter::Roster>, crate::adapter::AdapterError>> {
    if app.roster_retry_at.is_some_and(|t| Instant::now() < t) {
        return None;
    }
    let read = app.adapter.roster().await;
    app.roster_retry_at = read.is_err().then(|| Instant::now() + ROSTER_RETRY);
    Some(read)
}

/// How long ago a process with this start time (clock ticks after boot,
/// from /proc/PID/stat) started.
pub(super) fn age_of(starttime: u64) -> Duration {
    age_at(starttime, since_boot())
}

/// The same at `now` (from [`since_boot`]), for many processes at once: a
/// clock read per worker, ten times a second, is a system call each where
/// the clock has no vDSO (an emulated VM).
pub(super) fn age_at(starttime: u64, now: Duration) -> Duration {
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let started = Duration::from_secs_f64(starttime as f64 / ticks as f64);
    now.saturating_sub(started)
}

/// The boot-time clock, which /proc/PID/stat's start times count in.
pub(super) fn since_boot() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn new_worker(stat: &PidStat, scope: String, cgroup: String, adopted: bool) -> Worker {
    Worker {
        pid: stat.pid,
        starttime: stat.starttime,
        scope,
        cgroup,
        memory: None,
        frozen: false,
        idle: None,
        connections: None,
        adopted,
        leaving: None,
        placed_at: Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_started_now_is_young() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let procfs = crate::procfs::ProcFs::new(&crate::paths::HostPaths::system());
        let stat = procfs.pid_stat(child.id()).unwrap();
        let age = age_of(stat.starttime);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            age < Duration::from_secs(2),
            "age of a process just started: {age:?}"
        );
        let init = procfs.pid_stat(1).unwrap();
        assert!(age_of(init.starttime) > age);
    }
}
