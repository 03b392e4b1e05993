//! Killing a worker's scope, with PID 1's help or without it.
//!
//! A kill above the upper bound is what keeps the host from the kernel's
//! OOM killer, so it must not wait for PID 1: systemd is asked first (it
//! knows the scope), and if it has not answered within [`KILL_DEADLINE`]
//! (PID 1 busy, the bus stuck) the daemon sends SIGKILL itself to each
//! process in the scope's `cgroup.procs`, each through a pidfd checked
//! against the scope and its start time (see [`super::signal`]). A
//! frozen process dies of SIGKILL too (cgroup v2). The sandbox lets the
//! daemon write no cgroup file, so `cgroup.kill` is not an option.

use std::time::Duration;

use super::Daemon;
use super::signal::{SignalError, Signaller};
use crate::systemd::{KillWhom, Systemd};

/// How long systemd has to acknowledge a kill before the daemon kills
/// without it. KillUnit is answered in milliseconds by a healthy PID 1.
pub(super) const KILL_DEADLINE: Duration = Duration::from_millis(300);

/// How long any other call an action makes may take inside the loop.
pub(super) const ACT_DEADLINE: Duration = Duration::from_secs(1);

/// After a call to systemd timed out, for this long the daemon does not
/// wait for it again: optional calls are not made, kills go straight to
/// the processes. One stuck PID 1 then costs one deadline, not one per
/// decision of every step.
const STUCK_FOR: Duration = Duration::from_secs(2);

/// What a kill without systemd came to.
enum Direct {
    Killed(usize),
    /// No process left in the scope.
    Gone,
    Failed(String),
}

impl<S: Systemd, K: Signaller> Daemon<S, K> {
    /// Whether systemd timed out lately (see [`STUCK_FOR`]).
    fn systemd_stuck(&self) -> bool {
        self.stuck_until
            .get()
            .is_some_and(|t| std::time::Instant::now() < t)
    }

    /// systemd just timed out: not waited for again for STUCK_FOR.
    fn mark_stuck(&self) {
        let until = std::time::Instant::now() + STUCK_FOR;
        self.stuck_until.set(Some(until));
    }

    /// A call to systemd bounded in time, its timeout said in words; not
    /// made at all while systemd is stuck.
    pub(super) async fn ask<T, E: std::fmt::Display>(
        &self,
        deadline: Duration,
        what: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        if self.systemd_stuck() {
            return Err(format!(
                "systemd did not answer lately: not asked to {what}"
            ));
        }
        match tokio::time::timeout(deadline, call).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                self.mark_stuck();
                Err(format!("systemd did not {what} within {deadline:?}"))
            }
        }
    }

    /// SIGKILL to every process of the scope: through systemd when it
    /// answers in time, else directly. `Ok(false)`: the scope was gone.
    pub(super) async fn kill_scope(&self, scope: &str, cgroup: &str) -> Result<bool, String> {
        let asked = match self.systemd_stuck() {
            true => None,
            false => Some(
                tokio::time::timeout(
                    KILL_DEADLINE,
                    self.systemd.kill(scope, KillWhom::All, libc::SIGKILL),
                )
                .await,
            ),
        };
        let why = match asked {
            Some(Ok(Ok(()))) => return Ok(true),
            Some(Ok(Err(e))) if e.is_gone() => return Ok(false),
            Some(Ok(Err(e))) => e.to_string(),
            Some(Err(_)) => {
                self.mark_stuck();
                format!("systemd did not answer within {KILL_DEADLINE:?}")
            }
            None => "systemd did not answer lately".to_owned(),
        };
        let killed = match self.kill_directly(cgroup) {
            Direct::Gone => return Ok(false),
            Direct::Failed(e) => return Err(format!("{why}; killing directly failed: {e}")),
            Direct::Killed(n) => n,
        };
        tracing::warn!(
            scope,
            action = "kill-direct",
            "{why}: sent SIGKILL to the {killed} processes of {scope} directly, each through a pidfd checked against the scope and its start time"
        );
        Ok(true)
    }

    /// SIGKILL to each process of the cgroup, verified.
    fn kill_directly(&self, cgroup: &str) -> Direct {
        let pids = match self.cgroups.procs(cgroup) {
            Ok(p) => p,
            Err(e) if e.is_gone() => return Direct::Gone,
            Err(e) => return Direct::Failed(e.to_string()),
        };
        let (mut killed, mut errors) = (0, Vec::new());
        for pid in pids {
            // Exited since the list was read: nothing to kill.
            let Ok(stat) = self.procfs.pid_stat(pid) else {
                continue;
            };
            // The list may be stale: a PID that left the scope is skipped
            // here already (the signaller checks again, on its pidfd).
            if self.procfs.pid_cgroup(pid).ok().as_deref() != Some(cgroup) {
                continue;
            }
            match self
                .signaller
                .signal_in_cgroup(pid, stat.starttime, cgroup, libc::SIGKILL)
            {
                Ok(()) => killed += 1,
                Err(SignalError::Gone { .. }) => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        match (killed, errors.is_empty()) {
            (0, false) => Direct::Failed(errors.join("; ")),
            (0, true) => Direct::Gone,
            (n, _) => Direct::Killed(n),
        }
    }
}
