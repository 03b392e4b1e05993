//! What crosses the system bus between the daemon and its command line:
//! the interface's name and path, the client's proxy, and the JSON the
//! interface carries (the status view, the events). The daemon
//! ([`crate::daemon`]) fills these in and serves them; `status`, `top` and
//! `events` ([`crate::cli`]) read them. Neither reaches into the other.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zbus::proxy;

use crate::engine::HostSample;
use crate::policy::Mode;

pub const BUS_NAME: &str = "org.adaptiveworkers.Daemon";
pub const OBJECT_PATH: &str = "/org/adaptiveworkers/Daemon";

#[proxy(
    interface = "org.adaptiveworkers.Daemon1",
    default_service = "org.adaptiveworkers.Daemon",
    default_path = "/org/adaptiveworkers/Daemon"
)]
pub trait Daemon1 {
    fn status(&self) -> zbus::Result<String>;
    fn events(&self, max: u32) -> zbus::Result<String>;
    fn reload(&self) -> zbus::Result<String>;
    fn recycle_worker(&self, pid: u32) -> zbus::Result<String>;
    fn pause_app(&self, app: &str) -> zbus::Result<String>;
    fn resume_app(&self, app: &str) -> zbus::Result<String>;
}

/// One thing the daemon decided or saw, as `events` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Seconds since the epoch.
    pub time: f64,
    pub app: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub reason: String,
    pub mode: Mode,
    /// "done", "observed", or what went wrong.
    pub outcome: String,
    /// From the decision to its completion, in microseconds.
    #[serde(default)]
    pub duration_us: u64,
}

pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The whole state, as `status --json` prints it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusView {
    pub version: String,
    pub mode: Option<Mode>,
    pub host: HostView,
    pub apps: Vec<AppView>,
    /// Problems the operator should know about (policy errors, no bus).
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HostView {
    pub mem_total: u64,
    pub mem_available: u64,
    pub utilisation: f64,
    pub psi_some_avg10: f64,
    pub psi_full_avg10: f64,
    pub lower_bound: f64,
    pub upper_bound: f64,
}

impl HostView {
    pub fn new(h: &HostSample, lower: f64, upper: f64) -> Self {
        Self {
            mem_total: h.mem_total,
            mem_available: h.mem_available,
            utilisation: h.utilisation(),
            psi_some_avg10: h.psi_some_avg10,
            psi_full_avg10: h.psi_full_avg10,
            lower_bound: lower,
            upper_bound: upper,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AppView {
    pub name: String,
    pub unit: String,
    pub server: String,
    pub mode: Option<Mode>,
    /// An operator paused it: decisions are logged, not carried out.
    #[serde(default)]
    pub paused: bool,
    /// Why its idle workers are stopped rather than frozen, when freezing
    /// was asked for but is unsafe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_refused: Option<String>,
    pub master_pid: Option<u32>,
    /// What systemd said of the unit: "not-found", or its ActiveState;
    /// `None` when systemd could not be asked yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_state: Option<String>,
    pub soft_limit: Option<u64>,
    pub hard_limit: Option<u64>,
    pub backlog: Option<u32>,
    pub backlog_max: Option<u32>,
    /// What the worker count follows, with `[scaling]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingView>,
    pub stopped_slots: u32,
    pub counters: Counters,
    pub workers: Vec<WorkerView>,
}

impl AppView {
    /// The client connections its workers hold: `None` when any worker's
    /// count is unknown (the count is kept where scaling follows them).
    pub fn held_connections(&self) -> Option<u32> {
        self.workers.iter().map(|w| w.connections).sum()
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ScalingView {
    /// "backlog" or "connections".
    pub signal: String,
    pub why: String,
    /// What one worker serves at once (the connection signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_worker: Option<u32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerView {
    pub pid: u32,
    pub scope: String,
    pub private_bytes: Option<u64>,
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub shmem_bytes: Option<u64>,
    /// running, idle, busy, frozen, recycling, killing
    pub state: String,
    pub age_seconds: f64,
    pub memory_high_events: u64,
    pub memory_max_events: u64,
    pub oom_kills: u64,
    pub adopted: bool,
    /// Client connections held, when counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
}

/// Counts since the daemon started, by what happened.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub placed: u64,
    pub adopted: u64,
    pub placement_failures: u64,
    pub recycles: u64,
    pub kills: u64,
    pub oom_kills: u64,
    pub grows: u64,
    pub shrinks: u64,
    pub freezes: u64,
    pub thaws: u64,
}
