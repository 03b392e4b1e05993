//! `adaptive-workers top`: a live view of host memory, apps, workers and
//! the last decisions, refreshed from the daemon over D-Bus.
//!
//! Frames are made by a pure function ([`render_frame`]) from a
//! [`StatusView`] and events, so they are tested without a bus or a
//! terminal. The terminal part is small: raw mode through termios (so a
//! single `q` quits), the alternate screen, and a guard that puts the
//! terminal back on every way out (return, error, signal, panic).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use rustix::termios::{self, OptionalActions, Termios};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::client::{connect, events_of, status_of};
use crate::policy::Mode;
use crate::policy::values::human_size;
use crate::wire::Daemon1Proxy;
use crate::wire::{AppView, Event, StatusView, WorkerView, now_epoch};

/// Events shown under the apps.
const EVENTS_SHOWN: u32 = 8;
const BAR: usize = 24;

pub async fn run(interval: Duration, once: bool) -> anyhow::Result<ExitCode> {
    let proxy = connect().await?;
    if once {
        let (view, events) = (
            status_of(&proxy).await?,
            events_of(&proxy, EVENTS_SHOWN).await?,
        );
        // For scripts: whole lines, no colours.
        print!(
            "{}",
            render_frame(&view, &events, usize::MAX, now_epoch(), false)
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Fail before touching the terminal if the daemon is not there.
    status_of(&proxy).await?;
    let screen = Screen::enter()?;
    let result = live(&proxy, interval, &screen).await;
    drop(screen);
    result.map(|()| ExitCode::SUCCESS)
}

async fn live(proxy: &Daemon1Proxy<'_>, interval: Duration, screen: &Screen) -> anyhow::Result<()> {
    let (tx, mut keys) = mpsc::channel::<u8>(16);
    if screen.raw {
        // A blocking read of stdin; the thread ends with the process.
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            while std::io::stdin().read(&mut byte).is_ok_and(|n| n == 1) {
                if tx.blocking_send(byte[0]).is_err() {
                    break;
                }
            }
        });
    }
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (view, events) = (status_of(proxy).await?, events_of(proxy, EVENTS_SHOWN).await?);
                let (cols, rows) = screen.size();
                let frame = render_frame(&view, &events, cols, now_epoch(), true);
                screen.draw(&frame, rows)?;
            }
            Some(key) = keys.recv() => {
                // q, Q, Ctrl-C, Ctrl-D, Esc
                if matches!(key, b'q' | b'Q' | 3 | 4 | 27) {
                    return Ok(());
                }
            }
            _ = int.recv() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = hup.recv() => return Ok(()),
        }
    }
}

/// The terminal as it was, for the panic hook (release builds abort on
/// panic, so no destructor would run).
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";

fn restore() {
    if let Some(t) = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &t);
    }
    let mut out = std::io::stdout();
    let _ = out.write_all(LEAVE.as_bytes());
    let _ = out.flush();
}

/// The alternate screen, in raw mode when stdin is a terminal; dropping it
/// puts everything back.
struct Screen {
    raw: bool,
}

impl Screen {
    fn enter() -> anyhow::Result<Self> {
        let stdin = std::io::stdin();
        let raw = termios::isatty(&stdin);
        if raw {
            let saved = termios::tcgetattr(&stdin)?;
            let mut t = saved.clone();
            t.make_raw();
            *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                hook(info);
            }));
            termios::tcsetattr(&stdin, OptionalActions::Now, &t)?;
        }
        let mut out = std::io::stdout();
        out.write_all(ENTER.as_bytes())?;
        out.flush()?;
        Ok(Self { raw })
    }

    fn size(&self) -> (usize, usize) {
        termios::tcgetwinsize(std::io::stdout())
            .ok()
            .filter(|w| w.ws_col > 0 && w.ws_row > 0)
            .map_or((100, 40), |w| (w.ws_col as usize, w.ws_row as usize))
    }

    fn draw(&self, frame: &str, rows: usize) -> std::io::Result<()> {
        let mut text = String::from("\x1b[H\x1b[2J");
        for line in frame.lines().take(rows.saturating_sub(1)) {
            // Raw mode turns off "\n" → "\r\n".
            text += line;
            text += "\x1b[K\r\n";
        }
        let mut out = std::io::stdout();
        out.write_all(text.as_bytes())?;
        out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

fn pct(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn clock(epoch: f64) -> String {
    let t = epoch.max(0.0) as u64;
    format!("{:02}:{:02}:{:02}", (t / 3600) % 24, (t / 60) % 60, t % 60)
}

fn paint(text: &str, color: Option<&str>, on: bool) -> String {
    match color {
        Some(c) if on => format!("\x1b[{c}m{text}\x1b[0m"),
        _ => text.to_string(),
    }
}

/// A bar of `width` cells for `value` out of `full`, with `|` marking the
/// given points (bounds, limits). Filled cells are `#`, the rest `.`.
pub fn bar(value: f64, full: f64, marks: &[f64], width: usize) -> String {
    let cell = |v: f64| {
        if full <= 0.0 {
            0
        } else {
            ((v / full) * width as f64).round().clamp(0.0, width as f64) as usize
        }
    };
    let filled = cell(value);
    let mut cells: Vec<char> = (0..width)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    for &m in marks {
        let i = cell(m);
        if i > 0 && i < width {
            cells[i] = '|';
        }
    }
    format!("[{}]", cells.into_iter().collect::<String>())
}

/// One frame. `width` limits every line; `color` adds ANSI colours.
pub fn render_frame(
    v: &StatusView,
    events: &[Event],
    width: usize,
    now: f64,
    color: bool,
) -> String {
    let mut out = String::new();
    let mode = if v.mode == Some(Mode::Observe) {
        "observe"
    } else {
        "enforce"
    };
    let _ = writeln!(
        out,
        "adaptive-workers {} | mode {mode} | {} UTC | q quits",
        v.version,
        clock(now)
    );
    let h = &v.host;
    let level = if h.utilisation >= h.upper_bound {
        Some("31")
    } else if h.utilisation >= h.lower_bound {
        Some("33")
    } else {
        Some("32")
    };
    let host_bar = bar(h.utilisation, 1.0, &[h.lower_bound, h.upper_bound], BAR * 2);
    let _ = writeln!(
        out,
        "host memory {} {} of {}, bounds {} / {}",
        paint(&host_bar, level, color),
        pct(h.utilisation),
        human_size(h.mem_total),
        pct(h.lower_bound),
        pct(h.upper_bound)
    );
    let _ = writeln!(
        out,
        "PSI memory avg10: some {:.2}%, full {:.2}%",
        h.psi_some_avg10, h.psi_full_avg10
    );
    for p in &v.problems {
        let _ = writeln!(
            out,
            "{}",
            paint(&format!("problem: {p}"), Some("31"), color)
        );
    }
    if v.apps.is_empty() {
        let _ = writeln!(
            out,
            "\nno apps: add a policy to /etc/adaptive-workers/policies.d/"
        );
    }
    for app in &v.apps {
        render_app(&mut out, app, color);
    }
    let _ = writeln!(out, "\nlast events");
    if events.is_empty() {
        let _ = writeln!(out, "  none yet");
    }
    for e in events.iter().rev().take(EVENTS_SHOWN as usize).rev() {
        let who = e
            .worker_pid
            .map_or(String::new(), |p| format!(" worker {p}"));
        let observed = if e.mode == Mode::Observe {
            " (observed)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {}  {:<9} {}{who}{observed}: {} [{}]",
            clock(e.time),
            e.action,
            e.app,
            e.reason,
            e.outcome
        );
    }
    out.lines().map(|l| fit(l, width) + "\n").collect()
}

fn render_app(out: &mut String, a: &AppView, color: bool) {
    let mode = match (a.paused, a.mode) {
        (true, _) => "paused",
        (false, Some(Mode::Observe)) => "observe",
        _ => "enforce",
    };
    let master = a
        .master_pid
        .map_or("not running".into(), |p| format!("master {p}"));
    let limits = format!(
        ", soft limit {}, hard limit {}",
        a.soft_limit.map_or("none".into(), human_size),
        a.hard_limit.map_or("none".into(), human_size)
    );
    let backlog = match (a.backlog, a.backlog_max) {
        (Some(q), Some(m)) => format!(", backlog {q}/{m}"),
        (Some(q), None) => format!(", backlog {q}"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "\n{} ({}, {}, {mode}): {master}, {} workers{backlog}{limits}",
        paint(&a.name, Some("1"), color),
        a.unit,
        a.server,
        a.workers.len()
    );
    let c = &a.counters;
    let _ = writeln!(
        out,
        "  recycles {} kills {} oom-kills {} placed {} adopted {} grows {} shrinks {} freezes {} thaws {} stopped slots {}",
        c.recycles,
        c.kills,
        c.oom_kills,
        c.placed,
        c.adopted,
        c.grows,
        c.shrinks,
        c.freezes,
        c.thaws,
        a.stopped_slots
    );
    if a.workers.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "  {:>8}  {:<width$}  {:>9}  {:<10} {:>7}",
        "PID",
        "PRIVATE vs soft|hard",
        "",
        "STATE",
        "AGE",
        width = BAR + 2
    );
    let scale = a
        .hard_limit
        .or(a.soft_limit.map(|s| s + s / 2))
        .or_else(|| a.workers.iter().filter_map(|w| w.private_bytes).max())
        .unwrap_or(0) as f64;
    for w in &a.workers {
        render_worker(out, a, w, scale, color);
    }
}

fn render_worker(out: &mut String, a: &AppView, w: &WorkerView, scale: f64, color: bool) {
    let private = w.private_bytes.unwrap_or(0);
    let marks: Vec<f64> = [a.soft_limit, a.hard_limit]
        .iter()
        .flatten()
        .map(|&l| l as f64)
        .collect();
    let level = match (a.soft_limit, a.hard_limit) {
        (_, Some(h)) if private >= h => Some("31"),
        (Some(s), _) if private >= s => Some("33"),
        _ => Some("32"),
    };
    let mut flags = String::new();
    if w.memory_high_events > 0 {
        let _ = write!(flags, " high×{}", w.memory_high_events);
    }
    if w.oom_kills > 0 {
        let _ = write!(flags, " oom×{}", w.oom_kills);
    }
    let _ = writeln!(
        out,
        "  {:>8}  {}  {:>9}  {:<10} {:>7}{flags}",
        w.pid,
        paint(&bar(private as f64, scale, &marks, BAR), level, color),
        w.private_bytes.map_or("-".into(), human_size),
        w.state,
        age(w.age_seconds)
    );
}

/// Cuts a line to `width` visible characters, skipping ANSI sequences.
fn fit(line: &str, width: usize) -> String {
    let mut out = String::new();
    let mut visible = 0;
    let mut chars = line.chars().peekable();
    let mut cut = false;
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            out.push(c);
            for n in chars.by_ref() {
                out.push(n);
                if n.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        if visible == width {
            cut = true;
            break;
        }
        out.push(c);
        visible += 1;
    }
    if cut && line.contains('\x1b') {
        out += "\x1b[0m";
    }
    out
}

#[cfg(test)]
mod tests;
