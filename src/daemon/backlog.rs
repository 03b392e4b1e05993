//! Each app's listen backlog and which of its workers are idle.
//!
//! The listening sockets are the policy's `scaling.sockets`, or else the
//! listening sockets the master holds open (found at the worker rate from
//! /proc/PID/fd, minus uWSGI's stats socket). The queues are read at the
//! host rate with one sock_diag dump for all apps: that is what makes the
//! worker count react within a fraction of a second.
//!
//! Idle or busy comes from uWSGI's stats when the policy names the stats
//! socket (refreshed by `refresh_roster`), else from /proc/PID/syscall: a
//! worker blocked in accept, epoll, poll or select is waiting for a
//! connection. That generic test is exact for sync workers (uWSGI without
//! thunder-lock, gunicorn sync) and can call a worker idle that waits in
//! poll on a backend; it never calls a worker busy that waits for clients.

use std::collections::BTreeSet;
use std::time::Instant;

use super::Daemon;
use super::discover::WARN_EVERY;
use super::signal::Signaller;
use crate::backlog::{BacklogError, ListenAddr, Listener, SockDiag};
use crate::engine::Backlog;
use crate::policy::SocketSpec;
use crate::systemd::Systemd;

/// Where the listening sockets' queues come from: sock_diag on a real
/// host, a list in tests.
pub trait ListenerSource {
    fn listeners(&mut self, out: &mut Vec<Listener>) -> Result<(), BacklogError>;
}

impl ListenerSource for SockDiag {
    fn listeners(&mut self, out: &mut Vec<Listener>) -> Result<(), BacklogError> {
        self.listeners_into(out)
    }
}

/// A fixed list, for tests.
impl ListenerSource for Vec<Listener> {
    fn listeners(&mut self, out: &mut Vec<Listener>) -> Result<(), BacklogError> {
        out.clone_from(self);
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

    /// Finds each app's listening sockets (worker rate).
    pub(super) fn refresh_sockets(&mut self) {
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
    }

    /// Idle or busy for workers of apps without a stats socket.
    pub(super) fn sample_idle(&mut self) {
        for app in self.apps.values_mut() {
            if app.adapter.has_roster() {
                continue;
            }
            for w in app.workers.values_mut() {
                w.idle = self.procfs.pid_syscall(w.pid).ok().map(|s| s.is_waiting());
            }
        }
    }
}
