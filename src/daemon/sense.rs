//! Reading the kernel's files into the daemon's model, and the model into
//! the engine's snapshot and the status view.

use std::time::Instant;

use super::Daemon;
use super::discover::{WARN_EVERY, age_at, since_boot};
use super::model::WorkerMemory;
use super::signal::Signaller;
use crate::engine::{AppSample, HostSample, Snapshot, WorkerSample};
use crate::systemd::{Systemd, slice_cgroup};
use crate::wire::{self, AppView, HostView, ScalingView, StatusView, WorkerView};

/// A worker's memory.stat, memory.events, memory.pressure and frozen flag
/// are read at one full step in this many (each worker in turn), its
/// memory.current at every step: they serve `status` and the metrics, not
/// the decisions, and with 1,000 workers the six files a second each cost
/// the daemon most of an (emulated) CPU. A kill by the kernel is seen at
/// once all the same, on the app slice's memory.events.
pub(super) const DETAIL_EVERY: u64 = 5;

impl<S: Systemd, K: Signaller> Daemon<S, K> {
    /// Reads /proc/meminfo and /proc/pressure/memory. False when they
    /// cannot be read: then nothing is decided (never act on a guess).
    pub(super) fn sense_host(&mut self) -> bool {
        let read = self.procfs.meminfo().and_then(|m| {
            let p = self.procfs.pressure("memory")?;
            Ok(HostSample {
                mem_total: m.total,
                mem_available: m.available,
                psi_some_avg10: p.some.avg10,
                psi_full_avg10: p.full.map_or(0.0, |f| f.avg10),
            })
        });
        match read {
            Ok(h) => {
                self.host = Some(h);
                true
            }
            Err(e) => {
                if self.host_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::error!("not deciding anything: {e}");
                    self.host_warned = Some(Instant::now());
                }
                self.host = None;
                false
            }
        }
    }

    /// Reads every worker's scope. `light` reads memory.current only (the
    /// host step under pressure); the full read also checks the PID still
    /// names the same process and, for a new worker and for one worker in
    /// [`DETAIL_EVERY`] (in turn), reads memory.stat, memory.events,
    /// memory.pressure and the frozen flag.
    pub(super) fn sample_workers(&mut self, light: bool) {
        let (cgroups, procfs) = (&self.cgroups, &self.procfs);
        if !light {
            self.worker_ticks += 1;
        }
        let turn = self.worker_ticks % DETAIL_EVERY;
        for app in self.apps.values_mut() {
            let name = app.policy.name.clone();
            let mut dead = Vec::new();
            app.workers.retain(|_, w| {
                let keep = (|| {
                    let current = match cgroups.memory_current(&w.cgroup) {
                        Ok(c) => c,
                        Err(e) if e.is_gone() => {
                            tracing::debug!(
                                app = name.as_str(),
                                worker_pid = w.pid,
                                scope = w.scope.as_str(),
                                "worker scope is gone"
                            );
                            return false;
                        }
                        Err(e) => {
                            tracing::warn!(app = name.as_str(), worker_pid = w.pid, "{e}");
                            return true;
                        }
                    };
                    let new = w.memory.is_none();
                    let mem = w.memory.get_or_insert_with(WorkerMemory::default);
                    mem.current = current;
                    if light {
                        return true;
                    }
                    if procfs
                        .pid_stat(w.pid)
                        .map_or(true, |s| s.starttime != w.starttime)
                    {
                        tracing::debug!(app = name.as_str(), worker_pid = w.pid, "worker exited");
                        return false;
                    }
                    if !new && u64::from(w.pid) % DETAIL_EVERY != turn {
                        return true;
                    }
                    let full = (|| {
                        let stat = cgroups.memory_stat(&w.cgroup)?;
                        let events = cgroups.memory_events(&w.cgroup)?;
                        let pressure = cgroups.memory_pressure(&w.cgroup)?;
                        let frozen = cgroups.events(&w.cgroup)?.frozen;
                        Ok::<_, crate::cgroup::CgroupError>((stat, events, pressure, frozen))
                    })();
                    match full {
                        Ok((stat, events, pressure, frozen)) => {
                            mem.anon = stat.anon;
                            mem.file = stat.file;
                            mem.shmem = stat.shmem;
                            mem.events = events;
                            mem.pressure_some_avg10 = pressure.some.avg10;
                            w.frozen = frozen;
                            true
                        }
                        Err(e) if e.is_gone() => false,
                        Err(e) => {
                            tracing::warn!(app = name.as_str(), worker_pid = w.pid, "{e}");
                            true
                        }
                    }
                })();
                if !keep {
                    dead.push((w.pid, w.placed_at, w.leaving.is_some()));
                }
                keep
            });
            for (pid, placed_at, asked) in dead {
                super::backoff::note_death(
                    &mut app.young,
                    &app.policy.name,
                    pid,
                    (placed_at, placed_at.elapsed()),
                    asked,
                );
            }
        }
    }

    /// The app slice's memory.events is hierarchical: its oom_kill count
    /// goes up whenever the kernel kills inside any worker scope (a worker
    /// that hit its hard limit).
    pub(super) fn check_oom_kills(&mut self) {
        for app in self.apps.values_mut() {
            let name = app.policy.name.clone();
            let Ok(events) = self.cgroups.memory_events(&slice_cgroup(&name)) else {
                continue;
            };
            let seen = app.oom_kills_seen.replace(events.oom_kill);
            let Some(before) = seen.filter(|b| events.oom_kill > *b) else {
                continue;
            };
            let n = events.oom_kill - before;
            app.counters.oom_kills += n;
            let hard = app.policy.memory.hard_limit.map(|h| h.0);
            let message = match hard {
                Some(h) => format!(
                    "the kernel killed {n} process(es) in {name}'s worker scopes: a worker reached its hard limit of {}",
                    crate::policy::values::human_size(h)
                ),
                None => format!("the kernel killed {n} process(es) in {name}'s worker scopes"),
            };
            tracing::warn!(
                app = name.as_str(),
                action = "oom-kill",
                reason = "hard limit",
                "{message}"
            );
            let event = wire::Event {
                time: wire::now_epoch(),
                app: name.clone(),
                action: "oom-kill".into(),
                worker_pid: None,
                scope: None,
                reason: message,
                mode: app.policy.mode,
                outcome: "done by the kernel".into(),
                duration_us: 0,
            };
            self.shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .events
                .push(event);
        }
    }

    pub(super) fn snapshot(&self) -> Option<Snapshot> {
        let host = self.host?;
        let boot = since_boot();
        let apps = self
            .apps
            .values()
            .map(|app| AppSample {
                name: app.policy.name.clone(),
                workers: app
                    .workers
                    .values()
                    .filter_map(|w| {
                        Some(WorkerSample {
                            pid: w.pid,
                            starttime: w.starttime,
                            scope: w.scope.clone(),
                            private_bytes: w.memory.as_ref()?.current,
                            age: age_at(w.starttime, boot),
                            frozen: w.frozen,
                            idle: w.idle,
                            connections: w.connections,
                        })
                    })
                    .collect(),
                backlog: app.backlog,
                concurrency: app.concurrency(),
                paused: self.paused.contains(&app.policy.name),
                freeze_refused: app.freeze_refused.clone(),
                no_master: app.master().is_none(),
                stopped_slots: app.roster.as_ref().map_or(0, |r| r.stopped_slots),
                unsampled: (app.placing.len()
                    + app.workers.values().filter(|w| w.memory.is_none()).count())
                    as u32,
            })
            .collect();
        Some(Snapshot {
            now: self.now(),
            host,
            apps,
        })
    }

    pub(super) fn status_view(&self) -> StatusView {
        let g = &self.policy.global;
        let host = self
            .host
            .map(|h| HostView::new(&h, g.host.lower_bound.0, g.host.upper_bound.0))
            .unwrap_or_default();
        let boot = since_boot();
        let apps = self
            .apps
            .values()
            .map(|app| AppView {
                name: app.policy.name.clone(),
                unit: app.policy.unit.clone(),
                server: app.policy.server.as_str().into(),
                mode: Some(app.policy.mode),
                paused: self.paused.contains(&app.policy.name),
                freeze_refused: app.freeze_refused.clone(),
                master_pid: app.master(),
                unit_state: app.unit_state.clone(),
                soft_limit: app.policy.memory.soft_limit.map(|s| s.0),
                hard_limit: app.policy.memory.hard_limit.map(|s| s.0),
                backlog: app.backlog.map(|b| b.queued),
                backlog_max: app.backlog.map(|b| b.max),
                scaling: app.load.as_ref().map(|l| ScalingView {
                    signal: l.signal().into(),
                    why: l.why().into(),
                    per_worker: l.per_worker(),
                }),
                stopped_slots: app.roster.as_ref().map_or(0, |r| r.stopped_slots),
                counters: app.counters.clone(),
                workers: app
                    .workers
                    .values()
                    .map(|w| self.worker_view(w, boot))
                    .collect(),
            })
            .collect();
        StatusView {
            version: env!("CARGO_PKG_VERSION").into(),
            mode: Some(g.mode),
            host,
            apps,
            problems: self.problems.clone(),
        }
    }

    fn worker_view(&self, w: &super::model::Worker, boot: std::time::Duration) -> WorkerView {
        let state = if let Some(l) = w.leaving {
            l
        } else if w.frozen {
            "frozen"
        } else {
            match (w.memory.is_some(), w.idle) {
                // Placed since the last read of the scopes.
                (false, _) => "new",
                (true, Some(true)) => "idle",
                (true, Some(false)) => "busy",
                (true, None) => "running",
            }
        };
        let m = w.memory.as_ref();
        WorkerView {
            pid: w.pid,
            scope: w.scope.clone(),
            private_bytes: m.map(|m| m.current),
            anon_bytes: m.map(|m| m.anon),
            file_bytes: m.map(|m| m.file),
            shmem_bytes: m.map(|m| m.shmem),
            state: state.into(),
            age_seconds: age_at(w.starttime, boot).as_secs_f64(),
            memory_high_events: m.map_or(0, |m| m.events.high),
            memory_max_events: m.map_or(0, |m| m.events.max),
            oom_kills: m.map_or(0, |m| m.events.oom_kill),
            adopted: w.adopted,
            connections: w.connections,
        }
    }

    /// Makes the current state visible to `status` over D-Bus.
    pub fn publish(&mut self) {
        self.unpublished = false;
        self.published = Instant::now();
        let view = self.status_view();
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).status = view;
    }
}
