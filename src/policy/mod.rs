//! The policy model: what the operator asked for, validated.
//!
//! Loading goes in three steps (as in zincati): raw fragments straight from
//! TOML ([`fragments`]), layered drop-ins from /usr/lib, /run and /etc
//! ([`load`]), and the validated settings here, with real types and every
//! default filled in. The engine and the daemon only ever see these.

mod error;
mod fragments;
mod load;
pub mod safe_open;
mod scaling;
mod units;
pub mod uwsgi_ini;
pub mod values;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use error::{PolicyError, PolicyErrors};
pub use load::{load, load_from_dirs};
use values::{ByteSize, Fraction, Span};

/// Whether decisions are carried out or only logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Observe,
}

/// Which app server runs the workers: it decides how a worker is recycled
/// gracefully and how the worker count is changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    Uwsgi,
    Gunicorn,
    Unicorn,
    Generic,
}

impl ServerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Uwsgi => "uwsgi",
            ServerKind::Gunicorn => "gunicorn",
            ServerKind::Unicorn => "unicorn",
            ServerKind::Generic => "generic",
        }
    }
}

/// What scaling down does with a surplus idle worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleDown {
    /// Ask the app server for one fewer worker (uWSGI FIFO `-`, gunicorn TTOU).
    Stop,
    /// Freeze the worker's scope; scaling up thaws it first.
    Freeze,
}

/// What scaling measures the load by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadSignal {
    /// The accept queue for workers that take one connection at a time,
    /// the connections each worker holds for workers that accept eagerly
    /// (gunicorn gthread, gevent, eventlet, tornado, uvicorn), as read
    /// from the master's command line.
    #[default]
    Auto,
    /// The listening sockets' accept queue.
    Backlog,
    /// The client connections each worker holds, against what one worker
    /// serves at once (`concurrency`).
    Connections,
}

/// Everything the daemon runs on: the global settings and one policy per app.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub global: GlobalPolicy,
    /// Sorted by name.
    pub apps: Vec<AppPolicy>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GlobalPolicy {
    /// The file this came from; `None` when no global file exists.
    #[serde(skip)]
    pub file: Option<PathBuf>,
    pub mode: Mode,
    pub host: HostPolicy,
    pub workers: WorkerDefaults,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsPolicy>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostPolicy {
    /// Utilisation above which the biggest workers are recycled gracefully.
    pub lower_bound: Fraction,
    /// Utilisation above which the biggest workers are killed at once.
    pub upper_bound: Fraction,
    pub interval: Span,
    /// PSI trigger: stall time per window; zero turns the trigger off.
    pub psi_stall: Span,
    pub psi_window: Span,
    pub cooldown: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerDefaults {
    pub interval: Span,
    pub recycle_deadline: Span,
    pub min_lifetime: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricsPolicy {
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppPolicy {
    /// The drop-in's file name without `.toml`.
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub file: PathBuf,
    pub unit: String,
    pub server: ServerKind,
    pub mode: Mode,
    pub memory: MemoryPolicy,
    #[serde(skip_serializing_if = "UwsgiSettings::is_empty")]
    pub uwsgi: UwsgiSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generic: Option<GenericSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingPolicy>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryPolicy {
    /// Private memory past which a worker is recycled gracefully; also the
    /// scope's `MemoryHigh`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soft_limit: Option<ByteSize>,
    /// The scope's `MemoryMax`: the kernel enforces it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<ByteSize>,
    pub min_lifetime: Span,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UwsgiSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_fifo: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ini: Option<PathBuf>,
}

impl UwsgiSettings {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GenericSettings {
    /// The signal that makes one worker finish its work and exit.
    pub recycle_signal: Signal,
    /// The signals that ask the master for one more or one fewer worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grow_signal: Option<Signal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shrink_signal: Option<Signal>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScalingPolicy {
    pub min_workers: u32,
    pub max_workers: u32,
    /// Idle workers to keep beyond what the load needs.
    pub spare_idle: u32,
    /// Grow when an accept queue holds at least this many connections.
    pub grow_backlog: u32,
    /// Shrink only while every accept queue holds at most this many.
    pub shrink_backlog: u32,
    pub step_up: u32,
    pub step_down: u32,
    pub cooldown_up: Span,
    pub cooldown_down: Span,
    pub scale_down: ScaleDown,
    pub load: LoadSignal,
    /// What one worker serves at once, for the connection signal; `None`:
    /// from the master's command line (gunicorn `--threads`,
    /// `--worker-connections`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Listening sockets to watch; empty means those the master has open.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<SocketSpec>,
}

/// A listening socket named in a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SocketSpec {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A signal a policy may name. Only signals an app server uses for its own
/// worker management are allowed: a policy can never ask for SIGKILL or
/// SIGSTOP (kills go through systemd, on scopes only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Signal(#[serde(serialize_with = "signal_name")] pub i32);

pub const ALLOWED_SIGNALS: [(&str, i32); 8] = [
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGTERM", libc::SIGTERM),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGTTIN", libc::SIGTTIN),
    ("SIGTTOU", libc::SIGTTOU),
];

impl Signal {
    pub fn from_name(name: &str) -> Option<Self> {
        let upper = name.trim().to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        ALLOWED_SIGNALS
            .iter()
            .find(|(n, _)| *n == full)
            .map(|(_, s)| Signal(*s))
    }

    pub fn name(self) -> &'static str {
        ALLOWED_SIGNALS
            .iter()
            .find(|(_, s)| *s == self.0)
            .map_or("?", |(n, _)| n)
    }
}

fn signal_name<S: serde::Serializer>(sig: &i32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(Signal(*sig).name())
}

impl Default for GlobalPolicy {
    fn default() -> Self {
        Self {
            file: None,
            mode: Mode::Enforce,
            host: HostPolicy {
                lower_bound: Fraction(0.85),
                upper_bound: Fraction(0.95),
                interval: Span(Duration::from_millis(100)),
                psi_stall: Span(Duration::from_millis(100)),
                psi_window: Span(Duration::from_secs(1)),
                cooldown: Span(Duration::from_secs(2)),
            },
            workers: WorkerDefaults {
                interval: Span(Duration::from_secs(1)),
                recycle_deadline: Span(Duration::from_secs(30)),
                min_lifetime: Span(Duration::from_secs(10)),
            },
            metrics: None,
        }
    }
}

impl Policy {
    pub fn app(&self, name: &str) -> Option<&AppPolicy> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The effective policy as TOML, each part headed by the file it came from.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# Effective policy, defaults filled in.\n");
        match &self.global.file {
            Some(f) => out += &format!("# global settings from {}\n", f.display()),
            None => out += "# global settings: built-in defaults (no adaptive-workers.toml)\n",
        }
        out += &toml::to_string(&self.global).unwrap_or_default();
        if self.apps.is_empty() {
            out += "\n# no app policies: nothing will be managed\n";
        }
        for app in &self.apps {
            #[derive(Serialize)]
            struct Wrap<'a> {
                apps: std::collections::BTreeMap<&'a str, &'a AppPolicy>,
            }
            let wrap = Wrap {
                apps: [(app.name.as_str(), app)].into(),
            };
            out += &format!("\n# app {:?} from {}\n", app.name, app.file.display());
            out += &toml::to_string(&wrap).unwrap_or_default();
        }
        out
    }
}

impl ScalingPolicy {
    pub fn defaults(min_workers: u32, max_workers: u32) -> Self {
        Self {
            min_workers,
            max_workers,
            spare_idle: 1,
            grow_backlog: 1,
            shrink_backlog: 0,
            step_up: 1,
            step_down: 1,
            cooldown_up: Span(Duration::from_secs(1)),
            cooldown_down: Span(Duration::from_secs(30)),
            scale_down: ScaleDown::Stop,
            load: LoadSignal::Auto,
            concurrency: None,
            sockets: Vec::new(),
        }
    }
}
