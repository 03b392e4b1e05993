//! Subcommands and their output.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Per-worker cgroup scopes, memory limits and adaptive worker counts for
/// pre-forking web servers (uWSGI, gunicorn, any pre-fork master).
#[derive(Debug, Parser)]
#[command(name = "adaptive-workers", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (started by adaptive-workers.service).
    Daemon,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Daemon => ExitCode::SUCCESS,
    }
}
