//! What differs between app servers: how to tell workers from other
//! children, how to recycle one worker gracefully, how to ask for one more
//! or one fewer. One file per server; the daemon only sees [`Adapter`].

pub mod generic;
pub mod gunicorn;
pub mod unicorn;
pub mod uwsgi;

use std::path::PathBuf;

use thiserror::Error;

use crate::paths::HostPaths;
use crate::policy::{AppPolicy, ServerKind};

/// What the app server itself says about its workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roster {
    pub workers: Vec<RosterWorker>,
    /// Slots with no process (uWSGI "cheap" workers).
    pub stopped_slots: u32,
    /// The server's own idea of its listen queue (uWSGI: TCP only).
    pub listen_queue: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterWorker {
    pub pid: u32,
    pub idle: Option<bool>,
}

impl Roster {
    pub fn has(&self, pid: u32) -> bool {
        self.workers.iter().any(|w| w.pid == pid)
    }

    pub fn idle(&self, pid: u32) -> Option<bool> {
        self.workers
            .iter()
            .find(|w| w.pid == pid)
            .and_then(|w| w.idle)
    }
}

/// How to change the number of workers; the daemon carries it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleMechanism {
    /// Write this byte once per worker to the uWSGI master FIFO.
    Fifo { path: PathBuf, command: u8 },
    /// Send this signal once per worker to the master, through systemd.
    SignalMaster { signal: i32 },
    /// The policy gives no way to do it.
    Unsupported { why: &'static str },
}

#[derive(Debug, Error)]
pub enum AdapterError {
    #[error("failed to read uWSGI stats from {path}: {cause}")]
    Stats { path: PathBuf, cause: String },
    #[error("failed to write to master FIFO {path}: {cause}")]
    Fifo {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
}

pub struct Adapter {
    kind: ServerKind,
    /// uWSGI stats socket, resolved under the host root.
    stats: Option<PathBuf>,
    fifo: Option<PathBuf>,
    generic: Option<crate::policy::GenericSettings>,
}

impl Adapter {
    pub fn new(app: &AppPolicy, paths: &HostPaths) -> Self {
        Self {
            kind: app.server,
            stats: app.uwsgi.stats.as_ref().map(|p| paths.resolve(p)),
            fifo: app.uwsgi.master_fifo.as_ref().map(|p| paths.resolve(p)),
            generic: app.generic.clone(),
        }
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// The signal that makes one worker finish its request and exit.
    pub fn recycle_signal(&self) -> i32 {
        match self.kind {
            ServerKind::Uwsgi => uwsgi::RECYCLE_SIGNAL,
            ServerKind::Gunicorn => gunicorn::RECYCLE_SIGNAL,
            ServerKind::Unicorn => unicorn::RECYCLE_SIGNAL,
            ServerKind::Generic => generic::recycle_signal(self.generic.as_ref()),
        }
    }

    /// True when [`Adapter::roster`] can tell which children are workers.
    pub fn has_roster(&self) -> bool {
        self.stats.is_some()
    }

    /// The server's own list of workers, when it can give one.
    pub async fn roster(&self) -> Result<Option<Roster>, AdapterError> {
        match &self.stats {
            Some(path) => uwsgi::read_stats(path).await.map(Some),
            None => Ok(None),
        }
    }

    pub fn grow(&self) -> ScaleMechanism {
        self.scale(true)
    }

    pub fn shrink(&self) -> ScaleMechanism {
        self.scale(false)
    }

    fn scale(&self, up: bool) -> ScaleMechanism {
        match self.kind {
            ServerKind::Uwsgi => uwsgi::scale(self.fifo.as_deref(), up),
            ServerKind::Gunicorn => gunicorn::scale(up),
            ServerKind::Unicorn => unicorn::scale(up),
            ServerKind::Generic => generic::scale(self.generic.as_ref(), up),
        }
    }
}
