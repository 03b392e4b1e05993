//! What the daemon tells the world: one journal line per decision with
//! structured fields (APP, WORKER_PID, SCOPE, ACTION, REASON,
//! PRIVATE_BYTES, MODE), the ring of recent events, and the status view
//! that `adaptive-workers status` and the D-Bus interface read.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::engine::{Decision, HostSample};
use crate::policy::Mode;

/// How many recent events are kept for `adaptive-workers events`.
pub const EVENTS_KEPT: usize = 1000;

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

#[derive(Default)]
pub struct EventLog {
    events: VecDeque<Event>,
}

impl EventLog {
    pub fn push(&mut self, e: Event) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// The newest `max` events, oldest first.
    pub fn recent(&self, max: usize) -> Vec<Event> {
        let skip = self.events.len().saturating_sub(max);
        self.events.iter().skip(skip).cloned().collect()
    }
}

/// Logs a decision and what came of it, and returns it as an event.
/// `took` is how long carrying it out took (the systemd call or the
/// signal), from the decision to its completion.
pub fn decision(
    d: &Decision,
    private_bytes: Option<u64>,
    outcome: &str,
    took: std::time::Duration,
) -> Event {
    let worker = d.action.worker();
    let pid = worker.map(|w| w.pid);
    let scope = worker.map(|w| w.scope.clone());
    let verb = match d.mode {
        Mode::Observe => "would ",
        Mode::Enforce => "",
    };
    let target = match worker {
        Some(w) => format!("worker {} of {}", w.pid, w.app),
        None => d.action.app().to_owned(),
    };
    let count = match &d.action {
        crate::engine::Action::Grow { count, .. } | crate::engine::Action::Shrink { count, .. } => {
            format!(" by {count}")
        }
        _ => String::new(),
    };
    let message = format!("{verb}{} {target}{count}: {}", d.action.name(), d.reason);
    let reason = d.reason.to_string();
    let mode = match d.mode {
        Mode::Observe => "observe",
        Mode::Enforce => "enforce",
    };
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                app = d.action.app(),
                worker_pid = pid,
                scope = scope.as_deref(),
                action = d.action.name(),
                reason = %reason,
                private_bytes = private_bytes,
                mode = mode,
                outcome = outcome,
                duration_us = took.as_micros() as u64,
                "{message}{}",
                if outcome == "done" || outcome == "observed" { String::new() } else { format!(" ({outcome})") }
            )
        };
    }
    match (d.action.name(), outcome) {
        ("kill" | "reap", "done" | "observed") => emit!(warn),
        (_, "done" | "observed") => emit!(info),
        _ => emit!(error),
    }
    Event {
        time: now_epoch(),
        app: d.action.app().to_owned(),
        action: d.action.name().to_owned(),
        worker_pid: pid,
        scope,
        reason,
        mode: d.mode,
        outcome: outcome.to_owned(),
        duration_us: took.as_micros() as u64,
    }
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
    pub counters: super::model::Counters,
    pub workers: Vec<WorkerView>,
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
