//! adaptive-workers: per-worker systemd scopes, memory limits and adaptive
//! worker counts for pre-forking web servers.
//!
//! Only `daemon` and `cli` combine the other modules; each of the others
//! has one job and can be tested on its own.

pub mod adapter;
pub mod backlog;
pub mod cgroup;
pub mod cli;
pub mod daemon;
pub mod engine;
pub mod logging;
pub mod paths;
pub mod policy;
pub mod proc_events;
pub mod procfs;
pub mod stack_report;
pub mod systemd;
pub mod wire;
