//! What a policy file holds, as written: every field optional and spanned,
//! so validation can point at the line of a value it rejects. Unknown keys
//! are errors (a typo must not silently fall back to a default).

use serde::Deserialize;
use toml::Spanned;

use super::values::{ByteSize, Fraction, Megabytes, Span};
use super::{LoadSignal, Mode, ScaleDown, ServerKind};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalFile {
    pub mode: Option<Mode>,
    pub host: Option<HostFrag>,
    pub workers: Option<WorkersFrag>,
    pub metrics: Option<MetricsFrag>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFrag {
    pub lower_bound: Option<Spanned<Fraction>>,
    pub upper_bound: Option<Spanned<Fraction>>,
    pub interval: Option<Spanned<Span>>,
    pub psi_stall: Option<Spanned<Span>>,
    pub psi_window: Option<Spanned<Span>>,
    pub cooldown: Option<Spanned<Span>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersFrag {
    pub interval: Option<Spanned<Span>>,
    pub recycle_deadline: Option<Spanned<Span>>,
    pub min_lifetime: Option<Spanned<Span>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFrag {
    /// `host:port`; empty turns the endpoint off.
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppFile {
    pub unit: Option<Spanned<String>>,
    pub server: Option<Spanned<ServerKind>>,
    pub mode: Option<Mode>,
    pub memory: Option<MemoryFrag>,
    pub uwsgi: Option<Spanned<UwsgiFrag>>,
    pub generic: Option<Spanned<GenericFrag>>,
    pub scaling: Option<Spanned<ScalingFrag>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryFrag {
    pub soft_limit: Option<Spanned<ByteSize>>,
    pub hard_limit: Option<Spanned<ByteSize>>,
    /// uWSGI's name for the soft limit, in megabytes.
    #[serde(rename = "reload-on-rss")]
    pub reload_on_rss: Option<Spanned<Megabytes>>,
    /// uWSGI's name for the hard limit, in megabytes.
    #[serde(rename = "evil-reload-on-rss")]
    pub evil_reload_on_rss: Option<Spanned<Megabytes>>,
    pub min_lifetime: Option<Spanned<Span>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UwsgiFrag {
    pub stats: Option<Spanned<String>>,
    pub master_fifo: Option<Spanned<String>>,
    pub ini: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericFrag {
    pub recycle_signal: Option<Spanned<String>>,
    pub grow_signal: Option<Spanned<String>>,
    pub shrink_signal: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingFrag {
    pub min_workers: Option<Spanned<u32>>,
    pub max_workers: Option<Spanned<u32>>,
    pub spare_idle: Option<Spanned<u32>>,
    pub grow_backlog: Option<Spanned<u32>>,
    pub shrink_backlog: Option<Spanned<u32>>,
    pub step_up: Option<Spanned<u32>>,
    pub step_down: Option<Spanned<u32>>,
    pub cooldown_up: Option<Spanned<Span>>,
    pub cooldown_down: Option<Spanned<Span>>,
    pub scale_down: Option<Spanned<ScaleDown>>,
    pub load: Option<Spanned<LoadSignal>>,
    pub concurrency: Option<Spanned<u32>>,
    pub sockets: Option<Vec<Spanned<String>>>,
}
