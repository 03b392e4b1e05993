//! systemd, behind a small trait: place a worker in a scope, set its
//! limits, kill, freeze, thaw. The daemon is generic over [`Systemd`], so
//! its loop runs in tests against [`fake::FakeSystemd`]; in production
//! [`dbus::DbusSystemd`] talks to PID 1 over the system bus.

pub mod dbus;
pub mod fake;
mod names;

use std::time::Duration;

use thiserror::Error;

pub use names::{escape, scope_name, slice_cgroup, slice_name};

/// A transient scope for one worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeSpec {
    pub name: String,
    pub slice: String,
    /// The app's service: stopping or restarting it stops the scope too.
    pub part_of: String,
    pub description: String,
    pub pid: u32,
    pub memory_high: Option<u64>,
    pub memory_max: Option<u64>,
}

/// What the daemon needs to know about an app's service: a unit systemd
/// knows (loaded, or loadable from a unit file), running or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// 0 when the service has no main process.
    pub main_pid: u32,
    /// The cgroup, as systemd names it: "/system.slice/shop.service".
    pub control_group: String,
    pub active_state: String,
}

/// Which processes of a unit `KillUnit` signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillWhom {
    Main,
    All,
}

impl KillWhom {
    pub fn as_str(self) -> &'static str {
        match self {
            KillWhom::Main => "main",
            KillWhom::All => "all",
        }
    }
}

#[derive(Debug, Error)]
pub enum SystemdError {
    #[error("failed to connect to the system bus: {0}")]
    Connect(#[source] zbus::Error),
    #[error("failed to {method} {unit}: {source}")]
    Call {
        method: &'static str,
        unit: String,
        #[source]
        source: zbus::Error,
    },
    #[error("failed to start {unit}: job finished with result \"{result}\"")]
    JobFailed { unit: String, result: String },
    #[error("failed to start {unit}: no job result after {waited:?}")]
    JobTimeout { unit: String, waited: Duration },
    #[error("no unit {unit} is loaded")]
    NoSuchUnit { unit: String },
    #[error("failed to {method} {unit}: {message}")]
    Fake {
        method: &'static str,
        unit: String,
        message: String,
    },
}

impl SystemdError {
    /// The unit (or the process in it) is gone: not worth a retry.
    pub fn is_gone(&self) -> bool {
        match self {
            SystemdError::NoSuchUnit { .. } => true,
            SystemdError::Call { source, .. } => {
                let text = source.to_string();
                text.contains("NoSuchUnit")
                    || text.contains("not loaded")
                    || text.contains("No such process")
                    || text.contains("ESRCH")
            }
            _ => false,
        }
    }
}

/// The calls the daemon makes to systemd.
#[allow(async_fn_in_trait)]
pub trait Systemd: 'static {
    /// The service's main PID, cgroup and state; `None` when systemd has
    /// no such unit (LoadState "not-found": a typo, or no unit file).
    async fn service(&self, unit: &str) -> Result<Option<ServiceInfo>, SystemdError>;
    /// Creates the scope and waits for systemd's job to finish.
    async fn start_scope(&self, spec: &ScopeSpec) -> Result<(), SystemdError>;
    async fn set_memory_limits(
        &self,
        unit: &str,
        high: Option<u64>,
        max: Option<u64>,
    ) -> Result<(), SystemdError>;
    async fn kill(&self, unit: &str, whom: KillWhom, signal: i32) -> Result<(), SystemdError>;
    async fn freeze(&self, unit: &str) -> Result<(), SystemdError>;
    async fn thaw(&self, unit: &str) -> Result<(), SystemdError>;
    /// Why the daemon can no longer talk to systemd, once reconnecting
    /// has failed for longer than it may (the daemon then exits, and
    /// systemd restarts it); `None` while all is well.
    fn lost(&self) -> Option<String>;
}
