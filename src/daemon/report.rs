//! What the daemon tells the world: one journal line per decision with
//! structured fields (APP, WORKER_PID, SCOPE, ACTION, REASON,
//! PRIVATE_BYTES, MODE) and the ring of recent events. The status view
//! and the events as they cross the bus are in [`crate::wire`].

use std::collections::VecDeque;

use crate::engine::Decision;
use crate::policy::Mode;
use crate::wire::{Event, now_epoch};

/// How many recent events are kept for `adaptive-workers events`.
pub const EVENTS_KEPT: usize = 1000;

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
