//! The page the endpoint serves, made by one task for every connection.
//!
//! A connection asks for a body at least as recent as its request (give or
//! take `reuse_for`); the renderer reads the shared state once for all the
//! connections waiting, and renders again only when what it read differs
//! from what it rendered last (a new status published, an action counted,
//! stacks read again). So however many clients connect, the daemon reads
//! its state at most once per `reuse_for` and renders at most once per
//! change; every connection shares the one `Arc<str>`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::{ActionCounts, STACKS_EVERY, StackFigures, Stats, render};
use crate::daemon::Shared;
use crate::procfs::ProcFs;
use crate::wire::StatusView;

/// Stack figures by worker PID, and when they were read.
#[derive(Default)]
pub(super) struct StackCache {
    pub(super) read_at: Option<Instant>,
    pub(super) by_pid: BTreeMap<u32, StackFigures>,
}

/// A rendered page, and when the state it shows was read.
struct Body {
    text: Arc<str>,
    read_at: Instant,
}

/// What a connection holds to ask for the page.
#[derive(Clone)]
pub(super) struct Bodies {
    latest: watch::Receiver<Option<Body>>,
    want: Arc<Notify>,
    reuse_for: Duration,
}

impl Bodies {
    /// Starts the renderer (it runs as long as the runtime).
    pub(super) fn start(
        shared: Arc<Mutex<Shared>>,
        procfs: ProcFs,
        reuse_for: Duration,
        stats: Arc<Stats>,
    ) -> Self {
        let (tx, latest) = watch::channel(None);
        let want = Arc::new(Notify::new());
        let renderer = Renderer {
            shared,
            procfs,
            stats,
            reuse_for,
            stacks: StackCache::default(),
            seen: None,
            text: Arc::from(""),
        };
        tokio::spawn(renderer.run(tx, want.clone()));
        Self {
            latest,
            want,
            reuse_for,
        }
    }

    /// The page as of now (or of at most `reuse_for` before); `None` if
    /// the renderer is gone.
    pub(super) async fn get(&self) -> Option<Arc<str>> {
        let asked = Instant::now();
        let reuse_for = self.reuse_for;
        let fits =
            move |b: &Option<Body>| b.as_ref().is_some_and(|b| b.read_at + reuse_for >= asked);
        let mut latest = self.latest.clone();
        if !fits(&latest.borrow()) {
            // One permit is kept if the renderer is busy: it looks again
            // when done, and whatever it then reads is recent enough for
            // every connection that asked before.
            self.want.notify_one();
        }
        let body = latest.wait_for(fits).await.ok()?;
        body.as_ref().map(|b| b.text.clone())
    }
}

struct Renderer {
    shared: Arc<Mutex<Shared>>,
    procfs: ProcFs,
    stats: Arc<Stats>,
    reuse_for: Duration,
    stacks: StackCache,
    /// The state last rendered.
    seen: Option<(StatusView, ActionCounts)>,
    text: Arc<str>,
}

impl Renderer {
    async fn run(mut self, tx: watch::Sender<Option<Body>>, want: Arc<Notify>) {
        loop {
            want.notified().await;
            let recent = |b: &Option<Body>| {
                b.as_ref()
                    .is_some_and(|b| b.read_at.elapsed() < self.reuse_for)
            };
            if recent(&tx.borrow()) {
                continue;
            }
            let read_at = Instant::now();
            let changed = self.read_state();
            let Some((status, actions)) = &self.seen else {
                continue;
            };
            let restacked = refresh_stacks(&self.procfs, &mut self.stacks, status).await;
            if changed || restacked {
                self.text = Arc::from(render(status, actions, &self.stacks.by_pid));
                self.stats.renders.fetch_add(1, Ordering::Relaxed);
            }
            tx.send_replace(Some(Body {
                text: self.text.clone(),
                read_at,
            }));
        }
    }

    /// Copies the shared state if it is not what was rendered last: a
    /// comparison under the lock, a copy only when something changed.
    fn read_state(&mut self) -> bool {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        match &mut self.seen {
            Some((status, actions)) if *status == s.status && *actions == s.actions => false,
            Some((status, actions)) => {
                status.clone_from(&s.status);
                actions.clone_from(&s.actions);
                true
            }
            None => {
                self.seen = Some((s.status.clone(), s.actions.clone()));
                true
            }
        }
    }
}

/// Every managed worker's stack figures, read again when older than
/// STACKS_EVERY (in a blocking thread: smaps walks are slow); says whether
/// they were read. A worker that appeared since has none until the next
/// read; one that is gone or unreadable has none.
pub(super) async fn refresh_stacks(
    procfs: &ProcFs,
    cache: &mut StackCache,
    status: &StatusView,
) -> bool {
    if cache.read_at.is_some_and(|t| t.elapsed() < STACKS_EVERY) {
        return false;
    }
    let pids: Vec<u32> = status
        .apps
        .iter()
        .flat_map(|a| a.workers.iter().map(|w| w.pid))
        .collect();
    let procfs = procfs.clone();
    let read = tokio::task::spawn_blocking(move || {
        pids.into_iter()
            .filter_map(|pid| {
                let p = crate::stack_report::inspect_process(&procfs, pid, "worker").ok()?;
                let figures = StackFigures {
                    threads: p.threads,
                    default_stacks: p.stacks.iter().filter(|s| s.default_sized).count(),
                    reserved_bytes: p.reserved_bytes,
                    resident_bytes: p.resident_bytes,
                    saves_reserved_bytes: p.recommendation.map_or(0, |r| r.saves_reserved_bytes),
                };
                Some((pid, figures))
            })
            .collect()
    })
    .await;
    cache.by_pid = read.unwrap_or_default();
    cache.read_at = Some(Instant::now());
    true
}
