//! Subcommands and their output.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod assets;

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
    /// Write the man pages and shell completions into DIR (used by the
    /// package build).
    #[command(hide = true)]
    GenerateAssets { dir: std::path::PathBuf },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Daemon => ExitCode::SUCCESS,
        Command::GenerateAssets { dir } => match assets::generate(&dir) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("adaptive-workers: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
