//! Why a decision was taken, in words an operator reads in the journal.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::values::human_size;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// The worker's private memory passed its soft limit.
    SoftLimit { private_bytes: u64, soft_limit: u64 },
    /// Host memory above the lower bound: one of the k biggest workers.
    HostAboveLower {
        utilisation: f64,
        lower: f64,
        k: u32,
        private_bytes: u64,
    },
    /// Host memory above the upper bound: one of the biggest workers.
    HostAboveUpper {
        utilisation: f64,
        upper: f64,
        k: u32,
        private_bytes: u64,
    },
    /// A graceful recycle did not finish in time.
    RecycleTimedOut { waited: Duration },
    /// The accept queue is building up.
    BacklogBuilding { queued: u32, threshold: u32 },
    /// Workers that accept eagerly hold more connections than they serve
    /// at once: the rest wait inside them (and in the accept queue).
    ConnectionsWaiting {
        waiting: u32,
        held: u32,
        capacity: u32,
        threshold: u32,
    },
    /// The connections held, averaged, fit in fewer workers than run.
    SpareCapacity {
        held: f64,
        capacity: u32,
        spare: u32,
    },
    /// Fewer workers than the policy's minimum.
    BelowMinimum { workers: u32, min: u32 },
    /// More idle workers than the policy wants spare.
    IdleSurplus { idle: u32, spare: u32, queued: u32 },
    /// An operator asked for it (over D-Bus, root only).
    Operator,
    /// A frozen worker was found busy (it took a connection while being
    /// parked): it is thawed at once.
    BusyWhileFrozen,
    /// The worker outlived its master: its parent is now this process.
    Orphaned { ppid: u32 },
}

impl Reason {
    /// A stable name for metrics labels and filters.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::SoftLimit { .. } => "soft-limit",
            Reason::HostAboveLower { .. } => "host-above-lower",
            Reason::HostAboveUpper { .. } => "host-above-upper",
            Reason::RecycleTimedOut { .. } => "recycle-timed-out",
            Reason::BacklogBuilding { .. } => "backlog-building",
            Reason::ConnectionsWaiting { .. } => "connections-waiting",
            Reason::SpareCapacity { .. } => "spare-capacity",
            Reason::BelowMinimum { .. } => "below-minimum",
            Reason::IdleSurplus { .. } => "idle-surplus",
            Reason::BusyWhileFrozen => "busy-while-frozen",
            Reason::Operator => "operator",
            Reason::Orphaned { .. } => "orphaned",
        }
    }
}

fn pct(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::SoftLimit {
                private_bytes,
                soft_limit,
            } => write!(
                f,
                "private memory {} is above the soft limit {}",
                human_size(*private_bytes),
                human_size(*soft_limit)
            ),
            Reason::HostAboveLower {
                utilisation,
                lower,
                k,
                private_bytes,
            } => write!(
                f,
                "host memory {} is above the lower bound {}: one of the {k} biggest workers ({} private)",
                pct(*utilisation),
                pct(*lower),
                human_size(*private_bytes)
            ),
            Reason::HostAboveUpper {
                utilisation,
                upper,
                k,
                private_bytes,
            } => write!(
                f,
                "host memory {} is above the upper bound {}: one of the {k} biggest workers ({} private)",
                pct(*utilisation),
                pct(*upper),
                human_size(*private_bytes)
            ),
            Reason::RecycleTimedOut { waited } => write!(
                f,
                "graceful recycle not finished after {:.1}s",
                waited.as_secs_f64()
            ),
            Reason::BacklogBuilding { queued, threshold } => write!(
                f,
                "{queued} connections wait in the accept queue (grow at {threshold})"
            ),
            Reason::ConnectionsWaiting {
                waiting,
                held,
                capacity,
                threshold,
            } => write!(
                f,
                "{waiting} connections wait: workers hold {held} and serve {capacity} at once (grow at {threshold})"
            ),
            Reason::SpareCapacity {
                held,
                capacity,
                spare,
            } => write!(
                f,
                "workers hold {held:.1} connections on average and serve {capacity} at once (keep {spare} spare)"
            ),
            Reason::BelowMinimum { workers, min } => {
                write!(f, "{workers} workers, below the minimum of {min}")
            }
            Reason::IdleSurplus {
                idle,
                spare,
                queued,
            } => write!(
                f,
                "{idle} idle workers with {queued} queued connections (keep {spare} spare)"
            ),
            Reason::BusyWhileFrozen => write!(f, "the worker was busy when frozen"),
            Reason::Operator => write!(f, "asked for by an operator"),
            Reason::Orphaned { ppid } => {
                write!(f, "outlived its master (its parent is now PID {ppid})")
            }
        }
    }
}
