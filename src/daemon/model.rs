//! What the daemon knows about each app and worker between ticks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::adapter::{Adapter, Roster};
use crate::cgroup::MemoryEvents;
use crate::engine::Backlog;
use crate::engine::scaling::LoadPlan;
use crate::paths::HostPaths;
use crate::policy::{AppPolicy, Mode};
use crate::systemd::{ScopeSpec, ServiceInfo, scope_name, slice_cgroup, slice_name};
pub use crate::wire::Counters;

/// One managed app.
pub struct AppRuntime {
    pub policy: AppPolicy,
    pub adapter: Adapter,
    pub service: Option<ServiceInfo>,
    pub workers: BTreeMap<u32, Worker>,
    pub roster: Option<Roster>,
    pub backlog: Option<Backlog>,
    /// The app slice's memory.events oom_kill count when last read: the
    /// file is hierarchical, so it counts kills in every worker scope.
    pub oom_kills_seen: Option<u64>,
    pub counters: Counters,
    /// Children the app server says are not workers (mules, spoolers),
    /// by PID and start time, so PID reuse cannot hide a worker.
    pub not_workers: BTreeSet<(u32, u64)>,
    /// PIDs whose scope is being created now.
    pub placing: BTreeSet<u32>,
    /// PIDs whose placement failed, and when to try again.
    pub retry_after: BTreeMap<u32, Instant>,
    /// When a roster problem was last logged (to log once a minute).
    pub roster_warned: Option<Instant>,
    /// After a failed roster read, none is tried before this: a stats
    /// socket that hangs must not stall every tick of the loop.
    pub roster_retry_at: Option<Instant>,
    /// Why `scale_down = "freeze"` is refused for this app, if it is.
    pub freeze_refused: Option<String>,
    /// The master (and policy ini) `freeze_refused` is the verdict for:
    /// it is worked out once per master (see daemon::safety).
    pub freeze_checked: Option<super::safety::FreezeKey>,
    /// The verdict being worked out, off the loop's thread.
    pub freeze_check: Option<super::safety::FreezeCheck>,
    /// Inodes of the app's listening sockets (see daemon::backlog).
    pub listen_inodes: Vec<u64>,
    /// What the app's scaling follows (`None`: no scaling), and the
    /// gunicorn arbiter whose command line it was read from.
    pub load: Option<LoadPlan>,
    pub load_for: Option<u32>,
    /// Workers dying right after they start hold back placement.
    pub young: super::backoff::YoungDeaths,
    /// The limits the worker scopes have; differs from the policy's after
    /// a reload until they are updated.
    pub limits_applied: (Option<u64>, Option<u64>),
    /// The master PID (or none) for which the app's scopes were last
    /// checked for workers that outlived their master; `None`: never.
    pub orphans_checked_for: Option<Option<u32>>,
    /// What systemd said of the unit at the last read that succeeded:
    /// "not-found", or its ActiveState; `None` before one succeeded.
    pub unit_state: Option<String>,
    /// The main PID systemd gave with it (0: none).
    pub unit_main_pid: u32,
    /// Whether the read of this full step succeeded: only such a read is
    /// evidence to act on (see engine::orphans).
    pub service_fresh: bool,
    /// A missing unit was logged since the policy was (re)loaded.
    pub missing_logged: bool,
    /// A read of the service is under way (see daemon::calls).
    pub reading_service: bool,
    /// Worker scopes whose memory limits are to be set to the policy's.
    pub limits_todo: BTreeSet<String>,
    /// Scopes that ended up holding a process that is no worker: their
    /// limits are to be lifted.
    pub limits_lift: BTreeSet<String>,
}

/// One worker in its scope.
pub struct Worker {
    pub pid: u32,
    /// From /proc/PID/stat: with the PID, it names this process for good.
    pub starttime: u64,
    pub scope: String,
    /// The scope's cgroup, e.g. "/aw.slice/aw-shop.slice/aw-shop-7.scope".
    pub cgroup: String,
    pub memory: Option<WorkerMemory>,
    pub frozen: bool,
    pub idle: Option<bool>,
    /// Client connections held, for apps whose scaling follows them;
    /// `None` when not counted or the count failed.
    pub connections: Option<u32>,
    pub adopted: bool,
    /// Set when a recycle or kill was asked for.
    pub leaving: Option<&'static str>,
    /// When the daemon placed (or adopted) it.
    pub placed_at: Instant,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerMemory {
    /// memory.current: the worker's private memory.
    pub current: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub events: MemoryEvents,
    pub pressure_some_avg10: f64,
}

impl AppRuntime {
    pub fn new(policy: AppPolicy, paths: &HostPaths) -> Self {
        let mut app = Self {
            adapter: Adapter::new(&policy, paths),
            policy,
            service: None,
            workers: BTreeMap::new(),
            roster: None,
            backlog: None,
            oom_kills_seen: None,
            counters: Counters::default(),
            not_workers: BTreeSet::new(),
            placing: BTreeSet::new(),
            retry_after: BTreeMap::new(),
            roster_warned: None,
            roster_retry_at: None,
            limits_applied: (None, None),
            listen_inodes: Vec::new(),
            load: None,
            load_for: None,
            freeze_refused: None,
            freeze_checked: None,
            freeze_check: None,
            young: Default::default(),
            orphans_checked_for: None,
            unit_state: None,
            unit_main_pid: 0,
            service_fresh: false,
            missing_logged: false,
            reading_service: false,
            limits_todo: BTreeSet::new(),
            limits_lift: BTreeSet::new(),
        };
        app.limits_applied = app.limits();
        app
    }

    pub fn name(&self) -> &str {
        &self.policy.name
    }

    /// What one worker serves at once when the app's scaling follows the
    /// connections its workers hold; `None` when it follows the backlog.
    pub fn concurrency(&self) -> Option<u32> {
        self.load.as_ref().and_then(|l| l.per_worker())
    }

    /// The master's PID, when the service runs.
    pub fn master(&self) -> Option<u32> {
        self.service
            .as_ref()
            .map(|s| s.main_pid)
            .filter(|pid| *pid != 0)
    }

    /// Limits for new scopes: none in observe mode, where nothing may
    /// be enforced (not even by the kernel).
    pub fn limits(&self) -> (Option<u64>, Option<u64>) {
        match self.policy.mode {
            Mode::Observe => (None, None),
            Mode::Enforce => (
                self.policy.memory.soft_limit.map(|s| s.0),
                self.policy.memory.hard_limit.map(|s| s.0),
            ),
        }
    }

    pub fn scope_spec(&self, pid: u32, master: u32) -> ScopeSpec {
        let (memory_high, memory_max) = self.limits();
        ScopeSpec {
            name: scope_name(self.name(), pid),
            slice: slice_name(self.name()),
            part_of: self.policy.unit.clone(),
            description: format!(
                "adaptive-workers: {} worker {pid} ({} master {master})",
                self.name(),
                self.policy.server.as_str()
            ),
            pid,
            memory_high,
            memory_max,
        }
    }

    pub fn scope_cgroup(&self, scope: &str) -> String {
        format!("{}/{scope}", slice_cgroup(self.name()))
    }
}
