//! `status`, `events` and `reload`: talk to the running daemon over D-Bus.

use std::fmt::Write as _;
use std::process::ExitCode;

use super::client::{
    Refusal, classify, connect, events_of, events_text, status_of, status_text, unreachable_daemon,
};
use crate::policy::Mode;
use crate::policy::values::human_size;
use crate::wire::{AppView, Event, StatusView, WorkerView};

pub async fn status(json: bool) -> anyhow::Result<ExitCode> {
    let proxy = connect().await?;
    if json {
        println!("{}", status_text(&proxy).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let view = status_of(&proxy).await?;
    print!("{}", render(&view));
    Ok(ExitCode::SUCCESS)
}

pub async fn events(max: u32, json: bool) -> anyhow::Result<ExitCode> {
    let proxy = connect().await?;
    if json {
        println!("{}", events_text(&proxy, max).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let events = events_of(&proxy, max).await?;
    if events.is_empty() {
        println!("no decisions yet");
    }
    for e in events {
        println!("{}", render_event(&e));
    }
    Ok(ExitCode::SUCCESS)
}

/// The changing requests; root only (the bus refuses everyone else, and
/// the daemon checks again).
pub enum Act {
    Reload,
    Recycle(u32),
    Pause(String, bool),
}

impl Act {
    /// What only root may do, as the refusal says it.
    fn verb(&self) -> &'static str {
        match self {
            Act::Reload => "reload the daemon's policy",
            Act::Recycle(_) => "recycle workers",
            Act::Pause(_, true) => "pause apps",
            Act::Pause(_, false) => "resume apps",
        }
    }
}

/// Exit status of an action refused for want of privilege (LSB's init
/// script status for "user had insufficient privilege").
pub const EXIT_DENIED: u8 = 4;

/// The one line said for a denied action.
pub fn denied_message(what: &Act, by_bus: bool, detail: &str) -> String {
    let who = if by_bus {
        "the system bus refused the call"
    } else {
        "the daemon refused"
    };
    let why = if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    format!(
        "adaptive-workers: permission denied: only root may {} ({who}{why})",
        what.verb()
    )
}

pub async fn act(what: Act) -> anyhow::Result<ExitCode> {
    let p = connect().await?;
    let answer = match &what {
        Act::Reload => p.reload().await,
        Act::Recycle(pid) => p.recycle_worker(*pid).await,
        Act::Pause(app, true) => p.pause_app(app).await,
        Act::Pause(app, false) => p.resume_app(app).await,
    };
    let e = match answer {
        Ok(msg) => {
            println!("{msg}");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => e,
    };
    match classify(&e) {
        Refusal::Denied { by_bus, detail } => {
            eprintln!("{}", denied_message(&what, by_bus, &detail));
            Ok(ExitCode::from(EXIT_DENIED))
        }
        Refusal::Refused(msg) => {
            eprintln!("adaptive-workers: {msg}");
            Ok(ExitCode::FAILURE)
        }
        Refusal::Unreachable => Err(unreachable_daemon(e)),
    }
}

fn pct(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

fn mode(m: Option<Mode>) -> &'static str {
    match m {
        Some(Mode::Observe) => "observe",
        _ => "enforce",
    }
}

fn age(seconds: f64) -> String {
    let s = seconds as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn opt_size(v: Option<u64>) -> String {
    v.map_or("-".into(), human_size)
}

pub fn render(v: &StatusView) -> String {
    let mut out = String::new();
    let h = &v.host;
    let _ = writeln!(out, "adaptive-workers {}, mode {}", v.version, mode(v.mode));
    let _ = writeln!(
        out,
        "host memory {} used of {} (lower bound {}, upper bound {}), PSI memory some {:.2} full {:.2}",
        pct(h.utilisation),
        human_size(h.mem_total),
        pct(h.lower_bound),
        pct(h.upper_bound),
        h.psi_some_avg10,
        h.psi_full_avg10
    );
    for p in &v.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    if v.apps.is_empty() {
        let _ = writeln!(
            out,
            "\nno apps: add a policy to /etc/adaptive-workers/policies.d/ and run systemctl reload adaptive-workers"
        );
    }
    for app in &v.apps {
        render_app(&mut out, app);
    }
    out
}

fn render_app(out: &mut String, a: &AppView) {
    let limit = |l: Option<u64>| l.map_or("none".into(), human_size);
    let master = match (a.master_pid, a.unit_state.as_deref()) {
        (Some(p), _) => format!("master {p}"),
        (None, Some("not-found")) => "unit not found".into(),
        (None, Some("failed")) => "not running (failed)".into(),
        (None, _) => "not running".into(),
    };
    let _ = writeln!(
        out,
        "\n{} ({}, {}, {}): {master}, soft limit {}, hard limit {}",
        a.name,
        a.unit,
        a.server,
        mode(a.mode),
        limit(a.soft_limit),
        limit(a.hard_limit)
    );
    let c = &a.counters;
    let mut line = format!(
        "  {} workers; recycles {}, kills {}, oom-kills {}, placed {}, adopted {}",
        a.workers.len(),
        c.recycles,
        c.kills,
        c.oom_kills,
        c.placed,
        c.adopted
    );
    if let (Some(q), Some(m)) = (a.backlog, a.backlog_max) {
        let _ = write!(line, "; backlog {q}/{m}");
    }
    if c.grows + c.shrinks + c.freezes + c.thaws > 0 || a.stopped_slots > 0 {
        let _ = write!(
            line,
            "; grows {}, shrinks {}, freezes {}, thaws {}, stopped slots {}",
            c.grows, c.shrinks, c.freezes, c.thaws, a.stopped_slots
        );
    }
    let _ = writeln!(out, "{line}");
    if a.master_pid.is_none() && a.unit_state.as_deref() == Some("not-found") {
        let _ = writeln!(
            out,
            "  systemd knows no unit {} (LoadState=not-found): check the unit name in the app's policy (adaptive-workers check)",
            a.unit
        );
    }
    if let Some(line) = scaling_line(a) {
        let _ = writeln!(out, "{line}");
    }
    if a.paused {
        let _ = writeln!(
            out,
            "  paused: decisions are logged, not carried out (adaptive-workers resume {})",
            a.name
        );
    }
    if let Some(why) = &a.freeze_refused {
        let _ = writeln!(
            out,
            "  freeze refused, idle workers are stopped instead: {why}"
        );
    }
    if a.workers.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "  {:<8} {:<32} {:>9} {:>9} {:>9} {:<10} {:>7}",
        "PID", "SCOPE", "PRIVATE", "ANON", "FILE", "STATE", "AGE"
    );
    for w in &a.workers {
        let _ = writeln!(out, "{}", render_worker(w));
    }
}

/// What the worker count follows, and the connections held now when it
/// follows them (none when a count is unknown).
fn scaling_line(a: &AppView) -> Option<String> {
    let s = a.scaling.as_ref()?;
    let held = a.held_connections();
    let serving = a.workers.iter().filter(|w| w.state != "frozen").count() as u32;
    let now = match (s.per_worker, held) {
        (Some(per), Some(h)) => format!(
            ": workers hold {h} connections, serve {} at once",
            per.saturating_mul(serving)
        ),
        _ => String::new(),
    };
    Some(format!(
        "  scaling follows the {}{now} ({})",
        s.signal, s.why
    ))
}

fn render_worker(w: &WorkerView) -> String {
    let mut flags = String::new();
    if w.memory_high_events > 0 {
        let _ = write!(flags, " high×{}", w.memory_high_events);
    }
    if w.adopted {
        flags += " adopted";
    }
    if let Some(n) = w.connections {
        let _ = write!(flags, " {n} conn");
    }
    format!(
        "  {:<8} {:<32} {:>9} {:>9} {:>9} {:<10} {:>7}{flags}",
        w.pid,
        w.scope,
        opt_size(w.private_bytes),
        opt_size(w.anon_bytes),
        opt_size(w.file_bytes),
        w.state,
        age(w.age_seconds)
    )
}

fn render_event(e: &Event) -> String {
    let t = e.time as i64;
    let (h, m, s) = ((t / 3600) % 24, (t / 60) % 60, t % 60);
    let who = e
        .worker_pid
        .map_or(String::new(), |p| format!(" worker {p}"));
    let observed = if e.mode == Mode::Observe {
        " (observe mode)"
    } else {
        ""
    };
    format!(
        "{h:02}:{m:02}:{s:02} UTC  {:<9} {}{who}{observed}: {} [{}]",
        e.action, e.app, e.reason, e.outcome
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ScalingView;

    fn app(unit_state: Option<&str>, master_pid: Option<u32>) -> StatusView {
        StatusView {
            version: "0.1.0".into(),
            apps: vec![AppView {
                name: "ghost".into(),
                unit: "acc-ghost.service".into(),
                server: "uwsgi".into(),
                master_pid,
                unit_state: unit_state.map(str::to_owned),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_unit_systemd_does_not_know_is_not_found_not_merely_not_running() {
        let text = render(&app(Some("not-found"), None));
        assert!(
            text.contains(
                "ghost (acc-ghost.service, uwsgi, enforce): unit not found, soft limit none"
            ),
            "{text}"
        );
        assert!(
            text.contains("  systemd knows no unit acc-ghost.service (LoadState=not-found)"),
            "{text}"
        );
        for state in [Some("inactive"), None] {
            let text = render(&app(state, None));
            assert!(text.contains("): not running, soft limit"), "{text}");
            assert!(!text.contains("not found"), "{text}");
        }
        let text = render(&app(Some("failed"), None));
        assert!(
            text.contains("): not running (failed), soft limit"),
            "{text}"
        );
        let text = render(&app(Some("active"), Some(42)));
        assert!(text.contains("): master 42, soft limit"), "{text}");
    }

    #[test]
    fn a_denial_names_the_action_and_who_refused() {
        assert_eq!(
            denied_message(&Act::Recycle(7), true, "Rejected send message"),
            "adaptive-workers: permission denied: only root may recycle workers (the system bus refused the call: Rejected send message)"
        );
        assert_eq!(
            denied_message(&Act::Pause("shop".into(), false), false, ""),
            "adaptive-workers: permission denied: only root may resume apps (the daemon refused)"
        );
    }

    #[test]
    fn status_says_what_scaling_follows_and_the_connections_held() {
        let mut v = app(Some("active"), Some(42));
        let w = |pid, state: &str, connections| WorkerView {
            pid,
            scope: format!("aw-api-{pid}.scope"),
            state: state.into(),
            connections,
            ..Default::default()
        };
        v.apps[0].workers = vec![
            w(43, "busy", Some(6)),
            w(44, "idle", Some(0)),
            w(45, "frozen", Some(0)),
        ];
        v.apps[0].scaling = Some(ScalingView {
            signal: "connections".into(),
            why: "gunicorn's gthread workers accept at once".into(),
            per_worker: Some(4),
        });
        let text = render(&v);
        assert!(
            text.contains("  scaling follows the connections: workers hold 6 connections, serve 8 at once (gunicorn's gthread workers accept at once)"),
            "{text}"
        );
        assert!(text.contains("busy") && text.contains(" 6 conn"), "{text}");
        // A count that failed: no sum.
        v.apps[0].workers[1].connections = None;
        let text = render(&v);
        assert!(
            text.contains("  scaling follows the connections (gunicorn's"),
            "{text}"
        );
    }
}
