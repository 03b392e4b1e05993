//! Workers that outlived their master. When a service's main process
//! dies, systemd kills what is left in the service's cgroup, but workers
//! moved into scopes escape that, and systemd (252) does not carry an
//! automatic restart over to the `PartOf=` scopes: a master that crashes
//! would leave its workers running, orphaned, one set per crash. Their
//! scopes are killed (SIGKILL: nobody would finish their exit).
//!
//! A kill here hits a worker that may be serving a request, so it needs
//! positive evidence, never the absence of a reading: a read of the
//! service that succeeded in this pass, a service that systemd is neither
//! starting nor stopping (a graceful `systemctl stop` or `restart` is
//! systemd's to finish: its master is still waiting for its workers), and
//! a worker whose parent is neither the master, nor in the service's
//! cgroup (an old master still running, as in a gunicorn USR2 upgrade),
//! nor in the worker's own scope (a worker's child).

use serde::{Deserialize, Serialize};

use super::{Action, Decision, Reason, WorkerRef};
use crate::policy::Mode;

/// What systemd said about the app's service in this pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceSeen {
    /// The read failed or timed out, or was not made in this pass.
    Unknown,
    /// No such unit (LoadState "not-found").
    NotFound,
    /// Its ActiveState and main PID (0: none).
    State { active_state: String, main_pid: u32 },
}

/// Where the parent of a process in a worker scope is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Parent {
    /// The service's main process.
    Master,
    /// Another process in the service's cgroup.
    InService,
    /// A process in the same scope: the worker's own child.
    SameScope,
    /// Anywhere else (PID 1, a subreaper): the worker was reparented.
    Elsewhere,
    /// It could not be read (gone, or the read failed): no evidence.
    Unknown,
}

/// A process found in one of the app's worker scopes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeProcess {
    pub worker: WorkerRef,
    pub ppid: u32,
    pub parent: Parent,
}

/// The scopes to kill (one decision per scope), each with its reason.
/// `mode` is the app's effective mode (a paused app observes).
pub fn decide(
    app: &str,
    mode: Mode,
    service: &ServiceSeen,
    procs: &[ScopeProcess],
) -> Vec<Decision> {
    if !settled(service) {
        return Vec::new();
    }
    let mut out: Vec<Decision> = Vec::new();
    for p in procs.iter().filter(|p| p.worker.app == app) {
        if p.parent != Parent::Elsewhere
            || out
                .iter()
                .any(|d| d.action.worker().is_some_and(|w| w.scope == p.worker.scope))
        {
            continue;
        }
        out.push(Decision {
            action: Action::Reap {
                worker: p.worker.clone(),
            },
            reason: Reason::Orphaned { ppid: p.ppid },
            mode,
        });
    }
    out
}

/// Whether systemd's view is one a kill may rest on: read in this pass,
/// and a service that is running or stopped, not in between. A unit
/// that does not exist (any more) has no master either.
pub fn settled(service: &ServiceSeen) -> bool {
    match service {
        ServiceSeen::Unknown => false,
        ServiceSeen::NotFound => true,
        ServiceSeen::State {
            active_state,
            main_pid,
        } => match active_state.as_str() {
            "active" | "reloading" => *main_pid != 0,
            "inactive" | "failed" => true,
            // activating, deactivating, maintenance, refreshing, or a
            // state this daemon does not know: systemd is at work.
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_(pid: u32, ppid: u32, parent: Parent) -> ScopeProcess {
        ScopeProcess {
            worker: WorkerRef {
                app: "shop".into(),
                pid,
                starttime: 1,
                scope: format!("aw-shop-{pid}.scope"),
            },
            ppid,
            parent,
        }
    }

    fn state(s: &str, main_pid: u32) -> ServiceSeen {
        ServiceSeen::State {
            active_state: s.into(),
            main_pid,
        }
    }

    fn reaped(service: &ServiceSeen, procs: &[ScopeProcess]) -> Vec<u32> {
        decide("shop", Mode::Enforce, service, procs)
            .iter()
            .filter_map(|d| d.action.worker().map(|w| w.pid))
            .collect()
    }

    #[test]
    fn a_reparented_worker_of_a_restarted_service_is_reaped_with_its_reason() {
        let procs = [
            proc_(10, 1, Parent::Elsewhere),
            proc_(11, 99, Parent::Master),
            proc_(12, 10, Parent::SameScope),
            proc_(13, 98, Parent::InService),
            proc_(14, 97, Parent::Unknown),
        ];
        let d = decide("shop", Mode::Enforce, &state("active", 99), &procs);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].action.name(), "reap");
        assert_eq!(
            d[0].reason.to_string(),
            "outlived its master (its parent is now PID 1)"
        );
    }

    #[test]
    fn nothing_is_reaped_without_a_fresh_settled_reading() {
        let procs = [proc_(10, 1, Parent::Elsewhere)];
        for seen in [
            ServiceSeen::Unknown,
            state("activating", 0),
            state("deactivating", 99),
            state("deactivating", 0),
            state("reloading", 0),
            state("maintenance", 0),
            state("something-new", 99),
        ] {
            assert!(reaped(&seen, &procs).is_empty(), "{seen:?}");
        }
        for seen in [
            ServiceSeen::NotFound,
            state("inactive", 0),
            state("failed", 0),
        ] {
            assert_eq!(reaped(&seen, &procs), vec![10], "{seen:?}");
        }
    }

    #[test]
    fn observe_mode_only_logs_and_one_decision_per_scope() {
        let mut child = proc_(12, 1, Parent::Elsewhere);
        child.worker.scope = "aw-shop-10.scope".into();
        let procs = [proc_(10, 1, Parent::Elsewhere), child];
        let d = decide("shop", Mode::Observe, &state("failed", 0), &procs);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].mode, Mode::Observe);
    }
}
