//! Carrying out the engine's decisions, safely.
//!
//! Graceful recycles go to one worker through a verified pidfd; kills,
//! freezes and thaws go to the worker's scope through systemd; worker
//! counts change through the app server (uWSGI's FIFO, or a signal to the
//! master through systemd, which tracks the service's main PID). A
//! decision in observe mode is logged and nothing else.

use std::collections::VecDeque;
use std::time::Duration;

use super::Daemon;
use super::kill::ACT_DEADLINE;
use super::report;
use super::signal::{SignalError, Signaller};
use crate::adapter::{ScaleMechanism, uwsgi};
use crate::engine::{self, Action, Decision, WorkerRef};
use crate::policy::Mode;
use crate::systemd::{KillWhom, Systemd};

/// Signals to the same master are spaced so the kernel does not merge two
/// pending ones into one.
const SIGNAL_SPACING: Duration = Duration::from_millis(20);

/// How long lifting MemoryHigh before a recycle may take.
const LIFT_DEADLINE: Duration = Duration::from_millis(200);

impl<S: Systemd, K: Signaller> Daemon<S, K> {
    pub(super) async fn decide_and_act(&mut self) {
        let Some(snap) = self.snapshot() else {
            return;
        };
        let mut queue: VecDeque<Decision> =
            engine::decide(&self.policy, &snap, &mut self.engine).into();
        while let Some(d) = queue.pop_front() {
            queue.extend(self.act(d).await);
        }
    }

    /// The mode an app's decisions run in now (a paused app observes).
    pub(super) fn mode_of(&self, name: &str) -> Mode {
        engine::app_mode(&self.policy, name, self.paused.contains(name))
    }

    /// An operator's request to recycle one worker (D-Bus, root only).
    pub async fn recycle_worker(&mut self, pid: u32) -> Result<String, String> {
        let (name, scope, starttime) = self
            .apps
            .iter()
            .find_map(|(n, a)| {
                a.workers
                    .get(&pid)
                    .map(|w| (n.clone(), w.scope.clone(), w.starttime))
            })
            .ok_or_else(|| format!("process {pid} is not a managed worker"))?;
        let worker = WorkerRef {
            app: name.clone(),
            pid,
            starttime,
            scope,
        };
        if self.engine.is_busy(&worker) {
            return Err(format!("worker {pid} is already being recycled"));
        }
        let mode = self.mode_of(&name);
        self.engine.pending.insert(
            worker.clone(),
            engine::Pending {
                since: self.now(),
                cause: engine::Cause::Operator,
                observed: mode == Mode::Observe,
            },
        );
        let d = Decision {
            action: Action::Recycle { worker },
            reason: engine::Reason::Operator,
            mode,
        };
        self.act(d).await;
        let last = self
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .events
            .recent(1);
        match last.first().map(|e| e.outcome.as_str()) {
            Some("done") => Ok(format!("recycling worker {pid} of {name}")),
            Some("observed") => Ok(format!(
                "{name} is in observe mode or paused: worker {pid} was not recycled"
            )),
            Some(other) => Err(format!("worker {pid}: {other}")),
            None => Err("nothing happened".into()),
        }
    }

    /// Pauses or resumes acting on an app.
    pub fn pause(&mut self, app: &str, pause: bool) -> Result<String, String> {
        if !self.apps.contains_key(app) {
            return Err(format!("no app {app:?} is managed"));
        }
        let changed = if pause {
            self.paused.insert(app.to_owned())
        } else {
            self.paused.remove(app)
        };
        let what = if pause {
            "paused: decisions are logged, not carried out"
        } else {
            "resumed"
        };
        if changed {
            tracing::info!(
                app,
                action = if pause { "pause" } else { "resume" },
                "{app} {what}"
            );
        }
        self.publish();
        Ok(format!("{app} {what}"))
    }

    /// Carries out (or logs) one decision; returns a follow-up decision
    /// when what was done needs undoing at once.
    pub(super) async fn act(&mut self, d: Decision) -> Option<Decision> {
        let private = d.action.worker().and_then(|w| {
            self.apps
                .get(&w.app)?
                .workers
                .get(&w.pid)?
                .memory
                .as_ref()
                .map(|m| m.current)
        });
        let started = std::time::Instant::now();
        let outcome = match d.mode {
            Mode::Observe => "observed".to_owned(),
            Mode::Enforce => match self.carry_out(&d.action).await {
                Ok(()) => {
                    self.count(&d.action);
                    "done".to_owned()
                }
                Err(e) => {
                    if let Some(w) = d.action.worker() {
                        self.engine.forget(w);
                    }
                    e
                }
            },
        };
        let event = report::decision(&d, private, &outcome, started.elapsed());
        let counted = match outcome.as_str() {
            "done" | "observed" => outcome.clone(),
            _ => "failed".into(),
        };
        let key = (
            d.action.app().to_owned(),
            d.action.name().to_owned(),
            d.reason.kind().to_owned(),
            counted,
        );
        {
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            shared.events.push(event);
            *shared.actions.entry(key).or_default() += 1;
        }
        match (&d.action, outcome.as_str()) {
            (Action::Freeze { worker }, "done") => self.busy_when_frozen(worker, d.mode),
            _ => None,
        }
    }

    /// A worker that took a connection just as it was frozen would keep
    /// that client waiting. A frozen task still shows the system call it
    /// was interrupted in: an idle worker was waiting in accept, epoll,
    /// poll or select; anything else means it was serving.
    fn busy_when_frozen(&self, worker: &WorkerRef, mode: Mode) -> Option<Decision> {
        let state = self.procfs.pid_syscall(worker.pid).ok()?;
        tracing::debug!(worker_pid = worker.pid, "frozen in {state:?}");
        (!state.is_waiting()).then(|| Decision {
            action: Action::Thaw {
                worker: worker.clone(),
            },
            reason: engine::Reason::BusyWhileFrozen,
            mode,
        })
    }

    fn count(&mut self, action: &Action) {
        let Some(app) = self.apps.get_mut(action.app()) else {
            return;
        };
        let c = &mut app.counters;
        match action {
            Action::Recycle { .. } => c.recycles += 1,
            Action::Kill { .. } => c.kills += 1,
            Action::Grow { .. } => c.grows += 1,
            Action::Shrink { .. } => c.shrinks += 1,
            Action::Freeze { .. } => c.freezes += 1,
            Action::Thaw { .. } => c.thaws += 1,
            Action::Reap { .. } => c.kills += 1,
        }
    }

    /// The worker as the daemon knows it: the engine only names workers
    /// from the snapshot, but the model is the authority on its scope.
    fn known(&mut self, w: &WorkerRef) -> Result<&mut super::model::Worker, String> {
        self.apps
            .get_mut(&w.app)
            .and_then(|a| a.workers.get_mut(&w.pid))
            .filter(|known| known.scope == w.scope && known.starttime == w.starttime)
            .ok_or_else(|| format!("worker {} is no longer managed", w.pid))
    }

    async fn carry_out(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::Recycle { worker } => {
                let app = &self.apps[&worker.app];
                let (signal, (high, max)) = (app.adapter.recycle_signal(), app.limits());
                let known = self.known(worker)?;
                let (cgroup, starttime) = (known.cgroup.clone(), known.starttime);
                // MemoryHigh is a brake that slows a growing worker until it
                // is recycled; once it is, the brake would only slow its
                // exit (an interpreter shutting down allocates, and above
                // memory.high every allocation is throttled). MemoryMax stays.
                // Never held up for long by PID 1: the recycle matters more.
                if high.is_some()
                    && let Err(e) = self
                        .ask(
                            LIFT_DEADLINE,
                            "lift MemoryHigh",
                            self.systemd.set_memory_limits(&worker.scope, None, max),
                        )
                        .await
                {
                    tracing::warn!(
                        scope = worker.scope.as_str(),
                        "failed to lift MemoryHigh before the recycle: {e}"
                    );
                }
                match self
                    .signaller
                    .signal_in_cgroup(worker.pid, starttime, &cgroup, signal)
                {
                    Ok(()) => {
                        self.known(worker)?.leaving = Some("recycling");
                        Ok(())
                    }
                    Err(e @ SignalError::Gone { .. }) => Err(e.to_string()),
                    Err(e) => Err(format!("refused: {e}")),
                }
            }
            Action::Kill { worker } => {
                let cgroup = self.known(worker)?.cgroup.clone();
                if !self.kill_scope(&worker.scope, &cgroup).await? {
                    return Err(format!("{} is gone already", worker.scope));
                }
                self.known(worker)?.leaving = Some("killed");
                Ok(())
            }
            Action::Freeze { worker } => {
                self.known(worker)?;
                self.ask(ACT_DEADLINE, "freeze", self.systemd.freeze(&worker.scope))
                    .await?;
                self.known(worker)?.frozen = true;
                Ok(())
            }
            Action::Thaw { worker } => {
                self.known(worker)?;
                self.ask(ACT_DEADLINE, "thaw", self.systemd.thaw(&worker.scope))
                    .await?;
                self.known(worker)?.frozen = false;
                Ok(())
            }
            Action::Reap { worker } => {
                // Its master is gone: the worker may not be managed (a
                // daemon restarted after the crash adopts only workers of
                // the running master), and is forgotten either way.
                let app = self
                    .apps
                    .get_mut(&worker.app)
                    .ok_or("app is no longer managed")?;
                app.workers.remove(&worker.pid);
                let cgroup = app.scope_cgroup(&worker.scope);
                // Gone already: what was asked for is done.
                self.kill_scope(&worker.scope, &cgroup).await.map(|_| ())
            }
            Action::Grow { app, count } => self.scale(app, *count, true).await,
            Action::Shrink { app, count } => self.scale(app, *count, false).await,
        }
    }

    async fn scale(&mut self, name: &str, count: u32, up: bool) -> Result<(), String> {
        let app = self.apps.get(name).ok_or("app is no longer managed")?;
        let mechanism = if up {
            app.adapter.grow()
        } else {
            app.adapter.shrink()
        };
        match mechanism {
            ScaleMechanism::Fifo { path, command } => {
                uwsgi::write_fifo(&path, command, count).map_err(|e| e.to_string())
            }
            ScaleMechanism::SignalMaster { signal } => {
                let unit = app.policy.unit.clone();
                for i in 0..count {
                    if i > 0 {
                        tokio::time::sleep(SIGNAL_SPACING).await;
                    }
                    self.ask(
                        ACT_DEADLINE,
                        "signal the master",
                        self.systemd.kill(&unit, KillWhom::Main, signal),
                    )
                    .await?;
                }
                Ok(())
            }
            ScaleMechanism::Unsupported { why } => Err(why.to_owned()),
        }
    }
}
