//! `adaptive-workers daemon`: the real parts wired together, and the loop.

use std::time::Duration;

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, interval};

use super::Daemon;
use super::bus::{self, Command};
use super::signal::PidfdSignaller;
use crate::backlog::SockDiag;
use crate::paths::HostPaths;
use crate::policy::{self, GlobalPolicy, Policy};
use crate::proc_events::{Drain, ProcConnector, ProcEvent};
use crate::procfs::{ProcFs, PsiTrigger};
use crate::systemd::Systemd;
use crate::systemd::dbus::DbusSystemd;

type RealDaemon = Daemon<DbusSystemd, PidfdSignaller>;

/// How long the daemon waits at start for the scopes of the workers it
/// found before it says READY.
const STARTUP_PLACEMENT: Duration = Duration::from_secs(5);

fn notify(states: &[NotifyState]) {
    // Outside systemd there is no socket: nothing to tell.
    let _ = sd_notify::notify(states);
}

/// How long one attempt to connect may take: a bus daemon that is stuck
/// (stopped, or swapping) accepts the socket and never answers.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(5);

/// How long the daemon tries to reach systemd at start before it gives
/// up (and systemd restarts it).
const CONNECT_FOR: Duration = Duration::from_secs(60);

/// Connects to the system bus, retrying while it starts up or is stuck.
async fn connect() -> anyhow::Result<DbusSystemd> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        let why = match tokio::time::timeout(CONNECT_ATTEMPT, DbusSystemd::connect()).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("the system bus did not answer within {CONNECT_ATTEMPT:?}"),
        };
        if started.elapsed() >= CONNECT_FOR {
            return Err(anyhow::anyhow!(why)).context(format!(
                "systemd is not reachable on the system bus after {CONNECT_FOR:?}"
            ));
        }
        tracing::warn!("{why}; retrying in {delay:?}");
        // Not READY yet, but a watchdog pet costs nothing and keeps a
        // slow start from looking like a hang.
        notify(&[NotifyState::Watchdog]);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The policy at start: a broken one is reported, and the daemon runs
/// with the built-in defaults and no apps until a reload fixes it (it is
/// what protects the host, so it does not refuse to start).
fn initial_policy(paths: &HostPaths) -> (Policy, Vec<String>) {
    match policy::load(paths) {
        Ok(p) => (p, Vec::new()),
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!(
                "policy has {} errors: managing nothing until `systemctl reload adaptive-workers` loads a valid one",
                errors.0.len()
            );
            let problems = errors
                .0
                .iter()
                .map(|e| format!("policy error: {e}"))
                .collect();
            let empty = Policy {
                global: GlobalPolicy::default(),
                apps: Vec::new(),
            };
            (empty, problems)
        }
    }
}

/// Registers a source with tokio.
fn register<T: std::os::fd::AsRawFd>(source: T, interest: Interest) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: PsiTrigger and ProcConnector own their fd (an OwnedFd) for
    // their whole life and always return that same fd from as_raw_fd.
    unsafe { AsyncFd::register_with_interest(source, interest) }.map_err(|e| e.into_parts().1)
}

fn arm_psi(d: &RealDaemon) -> Option<AsyncFd<PsiTrigger>> {
    let h = &d.policy.global.host;
    if h.psi_stall.0.is_zero() {
        return None;
    }
    let path = d.procfs.pressure_path("memory");
    let armed = PsiTrigger::open(&path, false, h.psi_stall.0, h.psi_window.0)
        .map_err(|e| e.to_string())
        .and_then(|t| register(t, Interest::PRIORITY).map_err(|e| e.to_string()));
    match armed {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!(
                "no PSI trigger, host memory is read every {:?} only: {e}",
                h.interval.0
            );
            None
        }
    }
}

fn subscribe_forks() -> Option<AsyncFd<ProcConnector>> {
    let subscribed = ProcConnector::subscribe()
        .map_err(|e| e.to_string())
        .and_then(|c| register(c, Interest::READABLE).map_err(|e| e.to_string()));
    match subscribed {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!("no fork events ({e}): new workers are found by polling");
            None
        }
    }
}

/// Like [`ready`], for sources read through `&mut`.
async fn ready_mut<T: std::os::fd::AsRawFd>(
    fd: &mut Option<AsyncFd<T>>,
    interest: Interest,
) -> Option<tokio::io::unix::AsyncFdReadyMutGuard<'_, T>> {
    match fd {
        Some(fd) => fd.ready_mut(interest).await.ok(),
        None => std::future::pending().await,
    }
}

/// Waits for the fd when there is one; forever otherwise.
async fn ready<T: std::os::fd::AsRawFd>(
    fd: &Option<AsyncFd<T>>,
    interest: Interest,
) -> Option<tokio::io::unix::AsyncFdReadyGuard<'_, T>> {
    match fd {
        Some(fd) => fd.ready(interest).await.ok(),
        None => std::future::pending().await,
    }
}

async fn reload(d: &mut RealDaemon) -> Result<String, String> {
    notify(&[NotifyState::Reloading]);
    let result = match policy::load(&d.paths) {
        Ok(p) => {
            let msg = format!("reloaded policy: {} apps", p.apps.len());
            d.set_policy(p);
            d.problems.clear();
            tracing::info!("{msg}");
            Ok(msg)
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            let msg = format!(
                "reload refused: the new policy has {} errors; keeping the previous one",
                errors.0.len()
            );
            tracing::error!("{msg}");
            Err(format!("{msg}\n{errors}"))
        }
    };
    d.publish();
    notify(&[NotifyState::Ready, NotifyState::Status(&d.status_line())]);
    result
}

/// The daemon with its policy, systemd, backlogs, D-Bus interface and
/// metrics endpoint; what could not be had is in its problems.
async fn start() -> anyhow::Result<(RealDaemon, mpsc::Receiver<Command>)> {
    let paths = HostPaths::system();
    let cgroups = super::host::check(&paths)?;
    let (policy, problems) = initial_policy(&paths);
    let systemd = connect().await?;
    let conn = systemd.connection().clone();
    let signaller = PidfdSignaller {
        procfs: ProcFs::new(&paths),
    };
    let mut d = Daemon::new(paths, cgroups, systemd, signaller, policy);
    d.problems = problems;
    match SockDiag::new() {
        Ok(s) => d.listeners = Some(Box::new(s)),
        Err(e) => tracing::warn!("no listen backlogs, no adaptive worker count: {e}"),
    }
    let (tx, commands) = mpsc::channel::<Command>(4);
    if let Err(e) = bus::serve(&conn, d.shared.clone(), tx).await {
        let msg =
            format!("no D-Bus interface ({e}): `adaptive-workers status` cannot reach the daemon");
        tracing::warn!("{msg}");
        d.problems.push(msg);
    }
    if let Some(m) = d.policy.global.metrics.clone()
        && let Err(e) = super::metrics::serve(m.listen, d.shared.clone(), d.procfs.clone()).await
    {
        let msg = format!("no metrics endpoint on {}: {e}", m.listen);
        tracing::error!("{msg}");
        d.problems.push(msg);
    }
    Ok((d, commands))
}

/// A batch of the proc connector's events: exits forgotten at once, and
/// one look per parent that forked. A master that forks 100 workers at
/// once sends 100 events, and a wave of placements per event kept the
/// loop from its watchdog.
async fn on_proc_events(
    d: &mut RealDaemon,
    connector: &mut ProcConnector,
    events: &mut Vec<ProcEvent>,
) {
    events.clear();
    match connector.drain(events) {
        Ok(Drain::Complete) => {}
        // Events were lost: look at everything again.
        Ok(Drain::Overrun) => d.worker_tick().await,
        Err(e) => {
            tracing::warn!("fork events: {e}; rescanning");
            d.worker_tick().await;
        }
    }
    let mut parents = Vec::new();
    for ev in events.drain(..) {
        match ev {
            ProcEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
                ..
            } if child_pid == child_tgid && !parents.contains(&parent_tgid) => {
                parents.push(parent_tgid)
            }
            ProcEvent::Exit { pid, tgid, .. } if pid == tgid => d.on_exit(pid),
            _ => {}
        }
    }
    for parent in parents {
        d.on_fork(parent).await;
    }
}

/// A request from the bus; true when the policy was reloaded (the loop
/// then takes its intervals and PSI trigger anew).
async fn on_command(d: &mut RealDaemon, cmd: Command) -> bool {
    match cmd {
        Command::Reload(reply) => {
            let _ = reply.send(reload(d).await);
            true
        }
        Command::RecycleWorker(pid, reply) => {
            let _ = reply.send(d.recycle_worker(pid).await);
            false
        }
        Command::Pause(app, pause, reply) => {
            let _ = reply.send(d.pause(&app, pause));
            false
        }
    }
}

pub async fn run() -> anyhow::Result<()> {
    let (mut d, mut commands) = start().await?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut psi = arm_psi(&d);
    let mut forks = subscribe_forks();
    let mut events = Vec::new();
    let mut lost = None;

    first_step(&mut d).await;

    let ticks = |d: &RealDaemon| {
        let mut host = interval(d.policy.global.host.interval.0);
        let mut worker = interval(d.policy.global.workers.interval.0);
        host.set_missed_tick_behavior(MissedTickBehavior::Skip);
        worker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        (host, worker)
    };
    let (mut host_iv, mut worker_iv) = ticks(&d);
    // An eighth of the timeout, not the usual half: a step may wait for
    // systemd for seconds (a call up to CALL_TIMEOUT while PID 1
    // re-executes or creates 1,000 scopes), and the pet must still come in
    // time. A pet is one datagram.
    let mut watchdog =
        interval(sd_notify::watchdog_enabled().map_or(Duration::from_secs(3600), |t| t / 8));

    loop {
        tokio::select! {
            _ = host_iv.tick() => d.host_tick().await,
            _ = d.next_answer(), if d.placing() || d.calling() => {}
            _ = worker_iv.tick() => {
                if let Some(why) = d.systemd.lost() {
                    lost = Some(why);
                    break;
                }
                d.worker_tick().await;
                notify(&[NotifyState::Status(&d.status_line())]);
            }
            Some(mut g) = ready(&psi, Interest::PRIORITY) => {
                g.clear_ready();
                tracing::debug!("memory pressure trigger fired");
                d.host_tick().await;
            }
            Some(mut g) = ready_mut(&mut forks, Interest::READABLE) => {
                g.clear_ready();
                on_proc_events(&mut d, g.get_inner_mut(), &mut events).await;
            }
            _ = hup.recv() => {
                let _ = reload(&mut d).await;
                (host_iv, worker_iv) = ticks(&d);
                psi = arm_psi(&d);
            }
            Some(cmd) = commands.recv() => {
                if on_command(&mut d, cmd).await {
                    (host_iv, worker_iv) = ticks(&d);
                    psi = arm_psi(&d);
                }
            }
            // Petted only while systemd can be reached: a daemon that has
            // lost it protects nothing, and is better restarted.
            _ = watchdog.tick(), if d.systemd.lost().is_none() => notify(&[NotifyState::Watchdog]),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    notify(&[NotifyState::Stopping]);
    d.shutdown().await;
    tracing::info!(
        "stopping; {} workers stay in their scopes",
        d.worker_count()
    );
    stopped(lost)
}

/// The first full step, and READY once its placements are done.
async fn first_step(d: &mut RealDaemon) {
    d.worker_tick().await;
    // The first placements, so that READY and the first status line count
    // them; bounded, as 1,000 workers take minutes with a slow PID 1: the
    // loop places the rest.
    let _ = tokio::time::timeout(STARTUP_PLACEMENT, async {
        while d.next_placement().await {}
    })
    .await;
    notify(&[NotifyState::Ready, NotifyState::Status(&d.status_line())]);
    tracing::info!("started: {}", d.status_line());
}

/// How the daemon ends: an error when it lost systemd.
fn stopped(lost: Option<String>) -> anyhow::Result<()> {
    match lost {
        // Non-zero: systemd restarts the daemon, which connects anew and
        // adopts the scopes.
        Some(why) => Err(anyhow::anyhow!("lost systemd: {why}")),
        None => Ok(()),
    }
}
