//! Subcommands and their output.

mod assets;
mod check;
mod client;
mod import;
pub(crate) mod inspect;
mod status;
mod top;

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
    ///
    /// Exit status 69 when the host cannot run it (systemd is not PID 1, or
    /// no cgroup v2 with the memory controller), which the unit does not
    /// restart; 1 on other failures.
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
    /// Make an app policy from a uWSGI ini file.
    ///
    /// Maps reload-on-rss and evil-reload-on-rss (MB) to the soft and hard
    /// limits, min-worker-lifetime, the stats socket and master FIFO, and in
    /// cheaper mode (cheaper-algo = manual) processes/cheaper/cheaper-step
    /// and the listening sockets to [scaling]. Prints the policy on stdout
    /// and notes on stderr: what was not mapped and why, and who runs the
    /// app. For Debian's /etc/uwsgi/apps-enabled/NAME.ini it reads
    /// /usr/share/uwsgi/conf/default.ini first, as the init script does, and
    /// explains why the init script's uwsgi.service cannot be managed (it
    /// has no main PID) and which unit to create instead.
    ///
    /// Example: adaptive-workers import-uwsgi /etc/uwsgi/apps-enabled/shop.ini --write
    ImportUwsgi {
        /// The app's uWSGI ini file.
        ini: PathBuf,
        /// The ini section to read.
        #[arg(long, default_value = "uwsgi")]
        section: String,
        /// The app's .service unit (default: guessed from the layout, or
        /// NAME.service).
        #[arg(long)]
        unit: Option<String>,
        /// The app's name (default: the ini file's name without .ini).
        #[arg(long)]
        name: Option<String>,
        /// Write /etc/adaptive-workers/policies.d/NAME.toml.
        #[arg(long)]
        write: bool,
        /// Overwrite that file if it exists.
        #[arg(long)]
        force: bool,
        /// Resolve host paths (the ini, its includes, /etc, /usr/share)
        /// under this directory instead of /.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Audit thread stacks: what each thread reserves and touches, and
    /// what smaller stacks would save.
    ///
    /// glibc gives every thread made with default attributes a stack of the
    /// RLIMIT_STACK soft limit (usually 8 MiB). For each process (an app's
    /// master and workers as the daemon knows them, or a PID and, for a
    /// uWSGI/gunicorn master, its children) this lists every thread's stack
    /// (reserved, resident, guard) and recommends uWSGI's threads-stacksize
    /// (KB) and/or LimitSTACK= on the service, sized at 4 × the largest
    /// resident stack (rounded up to a power of two, at least 64K), with the
    /// address space it saves. Needs root (or the processes' owner) to read
    /// their threads' stack pointers.
    ///
    /// Example: adaptive-workers inspect shop; adaptive-workers inspect 4242 --json
    Inspect {
        /// An app name (its processes come from the daemon) or a PID.
        target: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A live view: host memory against the bounds, PSI, apps, workers'
    /// private memory against their limits, and the last decisions.
    ///
    /// Reads from the running daemon over D-Bus; q or Ctrl-C quits.
    ///
    /// Example: adaptive-workers top --interval 2s; adaptive-workers top --once
    Top {
        /// How often to refresh (e.g. 500ms, 1s, 5s).
        #[arg(long, default_value = "1s", value_parser = crate::policy::values::parse_duration)]
        interval: std::time::Duration,
        /// Print one frame without terminal control and exit.
        #[arg(long)]
        once: bool,
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
        Command::Inspect { target, json } => {
            runtime().and_then(|rt| rt.block_on(inspect::run(&target, json)))
        }
        Command::Top { interval, once } => {
            runtime().and_then(|rt| rt.block_on(top::run(interval, once)))
        }
        Command::ImportUwsgi {
            ini,
            section,
            unit,
            name,
            write,
            force,
            root,
        } => import::run(&import::Args {
            ini,
            section: Some(section),
            unit,
            name,
            write,
            force,
            root,
        }),
        Command::GenerateAssets { dir } => assets::generate(&dir).map(|_| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        print_error(&e);
        match e.downcast_ref::<crate::daemon::host::Unsupported>() {
            Some(_) => ExitCode::from(crate::daemon::host::EXIT_UNSUPPORTED),
            None => ExitCode::FAILURE,
        }
    })
}
