//! Each app's listen backlog and which of its workers are idle.
//!
//! The listening sockets are the policy's `scaling.sockets`, or else the
//! listening sockets the master holds open (found at the worker rate from
//! /proc/PID/fd, minus uWSGI's stats socket). The queues are read at the
//! host rate with one sock_diag dump for all apps: that is what makes the
//! worker count react within a fraction of a second.
//!
//! Workers that accept eagerly (gunicorn gthread, gevent, uvicorn) keep
//! the queue empty under any load; for the apps whose scaling follows
//! connections (engine::scaling::load_plan) the daemon counts, at the host
//! rate, the accepted connections each worker holds: one sock_diag dump of
//! the connections on the apps' listening ports, matched against each
//! worker's socket inodes in /proc/PID/fd. Such a worker is idle when it
//! holds none.
//!
//! Idle or busy comes from uWSGI's stats when the policy names the stats
//! socket (refreshed by `refresh_roster`), else from /proc/PID/syscall: a
//! worker blocked in accept, epoll, poll or select is waiting for a
//! connection. That generic test is exact for sync workers (uWSGI without
//! thunder-lock, gunicorn sync) and can call a worker idle that waits in
//! poll on a backend; it never calls a worker busy that waits for clients.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use super::Daemon;
use super::discover::WARN_EVERY;
use super::model::AppRuntime;
use super::signal::Signaller;
use crate::adapter::gunicorn;
use crate::backlog::{BacklogError, Connection, ListenAddr, Listener, SockDiag, accepted_on};
use crate::engine::Backlog;
use crate::engine::scaling::load_plan;
use crate::policy::{ServerKind, SocketSpec};
use crate::procfs::ProcFs;
use crate::systemd::Systemd;

/// Where the listening sockets' queues and the accepted connections come
/// from: sock_diag on a real host, lists in tests.
pub trait ListenerSource {
    fn listeners(&mut self, out: &mut Vec<Listener>) -> Result<(), BacklogError>;
    /// Accepted connections on these TCP ports and, with `unix`, on named
    /// unix sockets (see [`SockDiag::connections_into`]).
    fn connections(
        &mut self,
        tcp_ports: &[u16],
        unix: bool,
        out: &mut Vec<Connection>,
    ) -> Result<(), BacklogError>;
}

impl ListenerSource for SockDiag {
    fn listeners(&mut self, out: &mut Vec<Listener>) -> Result<(), BacklogError> {
        self.listeners_into(out)
    }

    fn connections(
        &mut self,
        tcp_ports: &[u16],
        unix: bool,
        out: &mut Vec<Connection>,
    ) -> Result<(), BacklogError> {
        self.connections_into(tcp_ports, unix, out)
    }
}

/// A fixed list of listeners and no connections, for tests.
impl ListenerSource for Vec<Listener> {
    fn listeners(&mut self, out: &mut Vec<Listener>) -> Result<(), BacklogError> {
        out.clone_from(self);
        Ok(())
    }

    fn connections(
        &mut self,
        _: &[u16],
        _: bool,
        out: &mut Vec<Connection>,
    ) -> Result<(), BacklogError> {
        out.clear();
        Ok(())
    }
}

/// Listeners and connections a test sets, and can make fail.
#[cfg(test)]
#[derive(Clone, Default)]
pub struct FakeSockets {
    pub state: std::sync::Arc<std::sync::Mutex<FakeSocketState>>,
}

#[cfg(test)]
#[derive(Default)]
pub struct FakeSocketState {
    pub listeners: Vec<Listener>,
    pub connections: Vec<Connection>,
    /// The connection dump fails (the listener dump still works).
    pub fail_connections: bool,
    /// The ports and unix flag of the last connection dump.
    pub asked: Option<(Vec<u16>, bool)>,
}

#[cfg(test)]
impl ListenerSource for FakeSockets {
    fn listeners(&mut self, out: &mut Vec<Listener>) -> Result<(), BacklogError> {
        out.clone_from(&self.state.lock().unwrap().listeners);
        Ok(())
    }

    fn connections(
        &mut self,
        tcp_ports: &[u16],
        unix: bool,
        out: &mut Vec<Connection>,
    ) -> Result<(), BacklogError> {
        let mut s = self.state.lock().unwrap();
        s.asked = Some((tcp_ports.to_vec(), unix));
        if s.fail_connections {
            return Err(BacklogError::Parse {
                what: "connections",
                detail: "injected".into(),
            });
        }
        out.clone_from(&s.connections);
        Ok(())
    }
}

fn matches_spec(l: &Listener, spec: &SocketSpec) -> bool {
    match (&l.addr, spec) {
        (ListenAddr::Tcp(a), SocketSpec::Tcp(b)) => a == b,
        (ListenAddr::Unix(Some(a)), SocketSpec::Unix(b)) => a == b,
        _ => false,
    }
}

impl<S: Systemd, K: Signaller> Daemon<S, K> {
    fn read_listeners(&mut self) -> Option<Vec<Listener>> {
        let source = self.listeners.as_mut()?;
        let mut out = Vec::new();
        match source.listeners(&mut out) {
            Ok(()) => Some(out),
            Err(e) => {
                if self
                    .backlog_warned
                    .is_none_or(|t| t.elapsed() >= WARN_EVERY)
                {
                    tracing::warn!("no listen backlogs: {e}");
                    self.backlog_warned = Some(Instant::now());
                }
                None
            }
        }
    }

    /// Finds each app's listening sockets, and what its scaling follows
    /// (worker rate).
    pub(super) fn refresh_sockets(&mut self) {
        for app in self.apps.values_mut() {
            plan_load(&self.procfs, app);
        }
        let Some(listeners) = self.read_listeners() else {
            return;
        };
        for app in self.apps.values_mut() {
            let specs = app
                .policy
                .scaling
                .as_ref()
                .map(|s| s.sockets.clone())
                .unwrap_or_default();
            let stats = app.policy.uwsgi.stats.clone();
            app.listen_inodes = if !specs.is_empty() {
                listeners
                    .iter()
                    .filter(|l| specs.iter().any(|s| matches_spec(l, s)))
                    .map(|l| l.inode)
                    .collect()
            } else if let Some(master) = app.master() {
                let held: BTreeSet<u64> = self
                    .procfs
                    .socket_inodes(master)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                listeners
                    .iter()
                    .filter(|l| held.contains(&l.inode))
                    .filter(|l| !matches!((&l.addr, &stats), (ListenAddr::Unix(Some(p)), Some(s)) if p == s))
                    .map(|l| l.inode)
                    .collect()
            } else {
                Vec::new()
            };
        }
    }

    /// Reads every app's accept queues (host rate).
    pub(super) fn sample_backlogs(&mut self) {
        if self.apps.values().all(|a| a.listen_inodes.is_empty()) {
            return;
        }
        let listeners = self.read_listeners();
        for app in self.apps.values_mut() {
            app.backlog = listeners.as_ref().and_then(|all| {
                all.iter()
                    .filter(|l| app.listen_inodes.contains(&l.inode))
                    .max_by_key(|l| l.queue)
                    .map(|l| Backlog {
                        queued: l.queue,
                        max: l.max,
                    })
            });
        }
        self.sample_connections(listeners.as_deref().unwrap_or_default());
    }

    /// The connections each worker holds, for the apps that follow them.
    /// When a read fails the counts are unknown (`None`), never 0: the
    /// engine then neither shrinks nor parks on them.
    fn sample_connections(&mut self, listeners: &[Listener]) {
        let mut addrs: Vec<(String, Vec<ListenAddr>)> = Vec::new();
        for app in self.apps.values_mut() {
            if app.concurrency().is_none() {
                continue;
            }
            let mine: Vec<ListenAddr> = listeners
                .iter()
                .filter(|l| app.listen_inodes.contains(&l.inode))
                .map(|l| l.addr.clone())
                .collect();
            if mine.is_empty() {
                unknown_connections(app);
            } else {
                addrs.push((app.policy.name.clone(), mine));
            }
        }
        if addrs.is_empty() {
            return;
        }
        let ports: Vec<u16> = addrs
            .iter()
            .flat_map(|(_, a)| a)
            .filter_map(|a| match a {
                ListenAddr::Tcp(s) => Some(s.port()),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let unix = addrs
            .iter()
            .flat_map(|(_, a)| a)
            .any(|a| !matches!(a, ListenAddr::Tcp(_)));
        let mut conns = Vec::new();
        let read = match self.listeners.as_mut() {
            Some(source) => source.connections(&ports, unix, &mut conns),
            None => return,
        };
        if let Err(e) = &read
            && self
                .connections_warned
                .is_none_or(|t| t.elapsed() >= WARN_EVERY)
        {
            tracing::warn!("no connection counts (scaling holds still): {e}");
            self.connections_warned = Some(Instant::now());
        }
        for (name, mine) in addrs {
            let Some(app) = self.apps.get_mut(&name) else {
                continue;
            };
            if read.is_err() {
                unknown_connections(app);
                continue;
            }
            let held: HashSet<u64> = conns
                .iter()
                .filter(|c| mine.iter().any(|l| accepted_on(l, &c.local)))
                .map(|c| c.inode)
                .collect();
            count_held(&self.procfs, app, &held);
        }
    }

    /// Idle or busy for workers of apps without a stats socket.
    pub(super) fn sample_idle(&mut self) {
        for app in self.apps.values_mut() {
            if app.adapter.has_roster() || app.concurrency().is_some() {
                continue;
            }
            for w in app.workers.values_mut() {
                w.idle = self.procfs.pid_syscall(w.pid).ok().map(|s| s.is_waiting());
            }
        }
    }
}

fn unknown_connections(app: &mut AppRuntime) {
    for w in app.workers.values_mut() {
        w.connections = None;
        w.idle = None;
    }
}

/// Each worker's count of the connections in `held` (the server ends of
/// those accepted on the app's sockets); a worker whose fds cannot be read
/// is unknown.
fn count_held(procfs: &ProcFs, app: &mut AppRuntime, held: &HashSet<u64>) {
    for w in app.workers.values_mut() {
        w.connections = procfs
            .socket_inodes(w.pid)
            .ok()
            .map(|inodes| inodes.iter().filter(|i| held.contains(i)).count() as u32);
        w.idle = w.connections.map(|n| n == 0);
    }
}

/// Works out what the app's scaling follows. For gunicorn under `load =
/// "auto"` that is the arbiter's worker class, read from its command line
/// once per arbiter (again on the next step when it cannot be read).
fn plan_load(procfs: &ProcFs, app: &mut AppRuntime) {
    let Some(sp) = &app.policy.scaling else {
        app.load = None;
        return;
    };
    let master = app.master();
    let gunicorn = app.policy.server == ServerKind::Gunicorn;
    // Read once per arbiter; while none runs there is nothing to scale, and
    // the last plan stands.
    if gunicorn && app.load.is_some() && (master.is_none() || app.load_for == master) {
        return;
    }
    let workers = master
        .filter(|_| gunicorn)
        .and_then(|pid| gunicorn::Workers::read(procfs, pid));
    let plan = load_plan(sp, app.policy.server, workers.as_ref());
    app.load_for = if workers.is_some() { master } else { None };
    if app.load.as_ref() != Some(&plan) {
        tracing::info!(
            "{}: scaling follows the {}: {}",
            app.policy.name,
            if plan.per_worker().is_some() {
                "connections its workers hold"
            } else {
                "accept queue"
            },
            plan.why()
        );
        if plan.per_worker().is_none() {
            // Back to the accept queue: counts no longer kept.
            for w in app.workers.values_mut() {
                w.connections = None;
            }
        }
        app.load = Some(plan);
    }
}
