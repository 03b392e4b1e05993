//! Subcommands and their output.

mod assets;
mod check;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Per-worker cgroup scopes, memory limits and adaptive worker counts for
/// pre-forking web servers (uWSGI, gunicorn, any pre-fork master).
///
/// Policies live in /etc/adaptive-workers/policies.d/*.toml, one per app;
/// global settings in /etc/adaptive-workers/adaptive-workers.toml.
#[derive(Debug, Parser)]
#[command(name = "adaptive-workers", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (what adaptive-workers.service starts).
    ///
    /// Logs to the journal when started by systemd, to stderr otherwise;
    /// set ADAPTIVE_WORKERS_LOG=debug for more detail.
    Daemon,
    /// Validate every policy file and print the effective policy.
    ///
    /// Exit status 0 when the policy is valid, 1 with one line per error
    /// (file:line:column: key: message) otherwise.
    ///
    /// Example: adaptive-workers check && systemctl reload adaptive-workers
    Check {
        /// Resolve every host path (/etc, /usr/lib, /run, /proc,
        /// /sys/fs/cgroup) under this directory instead of /.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Show apps and workers: private memory against limits, state, age.
    ///
    /// Reads from the running daemon over D-Bus; any user may run it.
    ///
    /// Example: adaptive-workers status --json | jq '.apps[].workers[].private_bytes'
    Status {
        /// Print the full state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the most recent decisions and their reasons.
    ///
    /// Example: adaptive-workers events --max 20
    Events {
        /// How many events to show.
        #[arg(long, default_value_t = 50)]
        max: u32,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the daemon to re-read its policy (root only). A policy with
    /// errors is refused and the current one stays.
    Reload,
    /// Recycle one managed worker gracefully, now (root only).
    ///
    /// Example: adaptive-workers recycle 4242
    Recycle {
        /// The worker's PID, as `status` shows it.
        pid: u32,
    },
    /// Stop acting on an app until `resume` (root only): its decisions are
    /// logged as in observe mode; limits on its scopes stay.
    ///
    /// Example: adaptive-workers pause shop
    Pause {
        /// The app's name (its policy file's name).
        app: String,
    },
    /// Act on a paused app again (root only).
    Resume {
        /// The app's name.
        app: String,
    },
    /// Write the man pages and shell completions into DIR (used by the
    /// package build).
    #[command(hide = true)]
    GenerateAssets { dir: PathBuf },
}

/// Prints an error with its whole chain of causes.
fn print_error(e: &anyhow::Error) {
    eprintln!("adaptive-workers: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn daemon() -> anyhow::Result<()> {
    crate::logging::init();
    runtime()?.block_on(crate::daemon::run())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Daemon => daemon().map(|()| ExitCode::SUCCESS),
        Command::Check { root } => Ok(check::run(&root)),
        Command::Status { json } => runtime().and_then(|rt| rt.block_on(status::status(json))),
        Command::Events { max, json } => {
            runtime().and_then(|rt| rt.block_on(status::events(max, json)))
        }
        Command::Reload => runtime().and_then(|rt| rt.block_on(status::act(status::Act::Reload))),
        Command::Recycle { pid } => {
            runtime().and_then(|rt| rt.block_on(status::act(status::Act::Recycle(pid))))
        }
        Command::Pause { app } => {
            runtime().and_then(|rt| rt.block_on(status::act(status::Act::Pause(app, true))))
        }
        Command::Resume { app } => {
            runtime().and_then(|rt| rt.block_on(status::act(status::Act::Pause(app, false))))
        }
        Command::GenerateAssets { dir } => assets::generate(&dir).map(|_| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        print_error(&e);
        ExitCode::FAILURE
    })
}
