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
use crate::procfs::PidStat;
use crate::systemd::{KillWhom, Systemd, escape, slice_cgroup};

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
    /// Reads each app's MainPID and cgroup from systemd.
    pub(super) async fn refresh_services(&mut self) {
        for app in self.apps.values_mut() {
            let unit = app.policy.unit.clone();
            match self.systemd.service(&unit).await {
                Ok(info) => {
                    let info = info.filter(|s| {
                        matches!(
                            s.active_state.as_str(),
                            "active" | "reloading" | "activating"
                        )
                    });
                    let old = app.master();
                    app.service = info;
                    if app.master() != old {
                        match app.master() {
                            Some(pid) => tracing::info!(
                                app = app.policy.name.as_str(),
                                master_pid = pid,
                                "{unit} runs with main PID {pid}"
                            ),
                            None => tracing::info!(
                                app = app.policy.name.as_str(),
                                "{unit} is not running"
                            ),
                        }
                        app.not_workers.clear();
                        app.retry_after.clear();
                    }
                }
                Err(e) => tracing::warn!(
                    app = app.policy.name.as_str(),
                    "failed to read {unit} from systemd: {e}"
                ),
            }
        }
    }

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
    fn placed(&mut self, p: Placement) {
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
                let w = new_worker(&stat, spec.name, cgroup, false);
                self.take_worker(&name, w);
            }
            Err(e) => {
                let gone = self
                    .procfs
                    .pid_stat(stat.pid)
                    .map_or(true, |s| s.starttime != stat.starttime);
                if gone {
                    super::backoff::note_death(app, stat.pid, started, Duration::ZERO, false);
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

    /// Kills the scopes of workers whose master died. When a service's
    /// main process dies, systemd kills what is left in the service's
    /// cgroup; workers moved into scopes escape that, and systemd (252)
    /// does not carry an automatic restart over to the PartOf= scopes. So
    /// a master that crashes (uWSGI without `no-orphans`, a generic
    /// master) would leave its workers running, orphaned, in scopes that
    /// nobody stops, one set per crash. A process in a worker scope whose
    /// parent is neither the master, nor in the service's cgroup (an old
    /// master still running, as in a gunicorn USR2 upgrade), nor in the
    /// same scope (a worker's own child) is such an orphan, and its scope
    /// is killed (SIGKILL: its master is gone, nobody would finish its
    /// exit). Checked when the master changes, and once at start for a
    /// crash while the daemon was away: not on every tick.
    pub(super) async fn reap_orphans(&mut self, name: &str) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        let master = app.master();
        if app.orphans_checked_for == Some(master) {
            return;
        }
        app.orphans_checked_for = Some(master);
        let service = app.service.as_ref().map(|s| s.control_group.clone());
        let slice = slice_cgroup(name);
        let Ok(children) = self.cgroups.children(&slice) else {
            return;
        };
        let prefix = format!("aw-{}-", escape(name));
        let mut orphans = Vec::new();
        for scope in children
            .iter()
            .filter(|c| c.starts_with(&prefix) && c.ends_with(".scope"))
        {
            let cgroup = format!("{slice}/{scope}");
            for pid in self.cgroups.procs(&cgroup).unwrap_or_default() {
                let Ok(stat) = self.procfs.pid_stat(pid) else {
                    continue;
                };
                if Some(stat.ppid) == master {
                    continue;
                }
                let orphaned = match self.procfs.pid_cgroup(stat.ppid) {
                    Ok(cg) => cg != cgroup && Some(&cg) != service.as_ref(),
                    // The parent just exited: the worker is an orphan now.
                    Err(e) => e.is_gone(),
                };
                if orphaned {
                    orphans.push((scope.clone(), pid, stat.ppid));
                    break;
                }
            }
        }
        for (scope, pid, ppid) in orphans {
            tracing::warn!(
                app = name,
                worker_pid = pid,
                scope = scope.as_str(),
                action = "reap",
                "worker {pid} of {name} outlived its master (its parent is now PID {ppid}): killing {scope}, as systemd kills what is left of a service whose main process died"
            );
            if let Some(app) = self.apps.get_mut(name) {
                app.workers.remove(&pid);
            }
            if let Err(e) = self
                .systemd
                .kill(&scope, KillWhom::All, libc::SIGKILL)
                .await
                && !e.is_gone()
            {
                tracing::error!(app = name, scope = scope.as_str(), "{e}");
            }
        }
    }

    /// Takes over workers already in scopes of the app's slice (after a
    /// daemon restart), and brings their limits in line with the policy.
    pub(super) async fn adopt(&mut self, name: &str) {
        let Some(app) = self.apps.get(name) else {
            return;
        };
        let Some(master) = app.master() else {
            return;
        };
        let slice = slice_cgroup(name);
        let Ok(children) = self.cgroups.children(&slice) else {
            return;
        };
        let prefix = format!("aw-{}-", escape(name));
        // The scopes of managed workers are not read again: with 1,000
        // workers that was 1,000 files a second.
        let managed: BTreeSet<&str> = app.workers.values().map(|w| w.scope.as_str()).collect();
        let mut adopted = Vec::new();
        for scope in children.iter().filter(|c| {
            c.starts_with(&prefix) && c.ends_with(".scope") && !managed.contains(c.as_str())
        }) {
            let cgroup = format!("{slice}/{scope}");
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
                && let Err(e) = self
                    .systemd
                    .set_memory_limits(&w.scope, limits.0, limits.1)
                    .await
            {
                tracing::error!(app = name, scope = w.scope.as_str(), "{e}");
            }
            self.take_worker(name, w);
        }
    }

    /// After a reload changed an app's limits (or its mode), brings every
    /// worker scope in line.
    pub(super) async fn sync_limits(&mut self, name: &str) {
        let Some(app) = self.apps.get(name) else {
            return;
        };
        let limits = app.limits();
        if limits == app.limits_applied {
            return;
        }
        let scopes: Vec<String> = app.workers.values().map(|w| w.scope.clone()).collect();
        let mut ok = true;
        for scope in scopes {
            if let Err(e) = self
                .systemd
                .set_memory_limits(&scope, limits.0, limits.1)
                .await
            {
                ok &= e.is_gone();
                tracing::error!(app = name, scope = scope.as_str(), "{e}");
            }
        }
        if ok {
            tracing::info!(
                app = name,
                "memory limits of {name}'s worker scopes updated"
            );
            self.apps
                .get_mut(name)
                .expect("checked above")
                .limits_applied = limits;
        }
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
    }
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
