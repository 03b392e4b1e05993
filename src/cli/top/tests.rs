//! Frames rendered from a status and events fixture: what must be on
//! them, not the exact spacing.

use super::*;
use crate::wire::Counters;
use crate::wire::HostView;

const MIB: u64 = 1 << 20;

fn view() -> StatusView {
    let worker = |pid: u32, private: u64, state: &str, age: f64| WorkerView {
        pid,
        scope: format!("aw-shop-{pid}.scope"),
        private_bytes: Some(private),
        anon_bytes: Some(private),
        file_bytes: Some(0),
        shmem_bytes: Some(0),
        state: state.into(),
        age_seconds: age,
        memory_high_events: u64::from(private > 200 * MIB),
        memory_max_events: 0,
        oom_kills: 0,
        adopted: false,
        connections: None,
    };
    StatusView {
        version: "0.1.0".into(),
        mode: Some(Mode::Enforce),
        host: HostView {
            mem_total: 8 << 30,
            mem_available: 2 << 30,
            utilisation: 0.75,
            psi_some_avg10: 0.12,
            psi_full_avg10: 0.0,
            lower_bound: 0.85,
            upper_bound: 0.95,
        },
        apps: vec![
            AppView {
                name: "shop".into(),
                paused: false,
                freeze_refused: None,
                unit: "uwsgi-shop.service".into(),
                server: "uwsgi".into(),
                mode: Some(Mode::Enforce),
                master_pid: Some(1200),
                unit_state: Some("active".into()),
                soft_limit: Some(200 * MIB),
                hard_limit: Some(300 * MIB),
                backlog: Some(3),
                backlog_max: Some(100),
                scaling: None,
                stopped_slots: 2,
                counters: Counters {
                    placed: 7,
                    recycles: 3,
                    grows: 1,
                    ..Counters::default()
                },
                workers: vec![
                    worker(1240, 50 * MIB, "idle", 65.0),
                    worker(1241, 250 * MIB, "busy", 4000.0),
                    worker(1242, 310 * MIB, "recycling", 5.0),
                ],
            },
            AppView {
                name: "blog".into(),
                unit: "blog.service".into(),
                server: "gunicorn".into(),
                mode: Some(Mode::Observe),
                master_pid: None,
                paused: false,
                ..AppView::default()
            },
        ],
        problems: vec!["blog.service is not running".into()],
    }
}

fn events() -> Vec<Event> {
    (0..10)
        .map(|i| Event {
            time: 3600.0 * 14.0 + 60.0 * 2.0 + f64::from(i),
            app: "shop".into(),
            action: if i == 9 { "kill" } else { "recycle" }.into(),
            worker_pid: Some(1240 + i),
            scope: None,
            reason: format!("private memory {}M is above the soft limit 200M", 201 + i),
            mode: Mode::Enforce,
            outcome: "done".into(),
            duration_us: 1500,
        })
        .collect()
}

fn frame() -> String {
    render_frame(&view(), &events(), 200, 3600.0 * 14.0 + 180.0, false)
}

#[test]
fn host_line_has_a_bar_with_both_bounds() {
    let f = frame();
    let host = f.lines().find(|l| l.starts_with("host memory")).unwrap();
    assert!(host.contains("75.0% of 8G, bounds 85.0% / 95.0%"), "{host}");
    let bar = &host[host.find('[').unwrap()..=host.find(']').unwrap()];
    assert_eq!(bar.len(), 2 * BAR + 2);
    assert_eq!(bar.matches('|').count(), 2, "{bar}");
    assert_eq!(bar.matches('#').count(), 36, "{bar}");
    assert!(
        f.contains("PSI memory avg10: some 0.12%, full 0.00%"),
        "{f}"
    );
    assert!(
        f.starts_with("adaptive-workers 0.1.0 | mode enforce | 14:03:00 UTC"),
        "{f}"
    );
    assert!(f.contains("problem: blog.service is not running"));
}

#[test]
fn apps_workers_and_counters() {
    let f = frame();
    assert!(
        f.contains(
            "shop (uwsgi-shop.service, uwsgi, enforce): master 1200, 3 workers, backlog 3/100, soft limit 200M, hard limit 300M"
        ),
        "{f}"
    );
    assert!(f.contains("recycles 3 kills 0"), "{f}");
    assert!(f.contains("stopped slots 2"), "{f}");
    assert!(f.contains("PRIVATE vs soft|hard"), "{f}");
    let w = f
        .lines()
        .find(|l| l.trim_start().starts_with("1241 "))
        .unwrap();
    assert!(w.contains("250M"), "{w}");
    assert!(w.contains("busy"), "{w}");
    assert!(w.contains("1h06m"), "{w}");
    assert!(w.contains("high×1"), "{w}");
    // 250M of 300M: 20 of 24 cells, with the soft limit marked at 16.
    let bar = &w[w.find('[').unwrap() + 1..w.find(']').unwrap()];
    assert_eq!(bar.chars().nth(16), Some('|'), "{bar}");
    assert_eq!(bar.matches('#').count(), 19, "{bar}");
    let over = f
        .lines()
        .find(|l| l.trim_start().starts_with("1242 "))
        .unwrap();
    assert!(over.contains("recycling") && over.contains("5s"), "{over}");
    assert!(
        f.contains(
            "blog (blog.service, gunicorn, observe): not running, 0 workers, soft limit none"
        ),
        "{f}"
    );
}

#[test]
fn the_last_events_newest_last() {
    let f = frame();
    let lines: Vec<&str> = f
        .lines()
        .skip_while(|l| *l != "last events")
        .skip(1)
        .collect();
    assert_eq!(lines.len(), EVENTS_SHOWN as usize, "{f}");
    assert!(
        lines[0].contains("14:02:02  recycle   shop worker 1242"),
        "{}",
        lines[0]
    );
    assert!(
        lines
            .last()
            .unwrap()
            .contains("kill      shop worker 1249: private memory 210M"),
        "{f}"
    );
    assert!(lines.last().unwrap().ends_with("[done]"));
}

#[test]
fn narrow_terminals_cut_lines_and_colours_stay_closed() {
    let f = render_frame(&view(), &events(), 40, 0.0, true);
    for line in f.lines() {
        let plain = strip_ansi(line);
        assert!(plain.chars().count() <= 40, "{line:?}");
        if line.contains('\x1b') {
            assert!(line.ends_with("\x1b[0m"), "{line:?}");
        }
    }
    let none = render_frame(&StatusView::default(), &[], 80, 0.0, false);
    assert!(none.contains("no apps"), "{none}");
    assert!(none.contains("none yet"), "{none}");
    assert!(!none.contains('\x1b'));
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for c in s.chars() {
        match (skip, c) {
            (false, '\x1b') => skip = true,
            (true, c) if c.is_ascii_alphabetic() => skip = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

#[test]
fn a_paused_app_says_so() {
    let mut v = view();
    v.apps[0].paused = true;
    let f = render_frame(&v, &[], 200, 0.0, false);
    assert!(
        f.contains("shop (uwsgi-shop.service, uwsgi, paused)"),
        "{f}"
    );
}

#[test]
fn bars() {
    assert_eq!(bar(0.5, 1.0, &[0.75], 8), "[####..|.]");
    assert_eq!(bar(2.0, 1.0, &[], 4), "[####]");
    assert_eq!(bar(1.0, 0.0, &[0.5], 4), "[....]");
    assert_eq!(fit("abcdef", 3), "abc");
    assert_eq!(fit("\x1b[31mabcdef\x1b[0m", 2), "\x1b[31mab\x1b[0m");
}

/// `cargo test print_frame -- --ignored --nocapture` shows the fixture frame.
#[test]
#[ignore]
fn print_frame() {
    print!(
        "{}",
        render_frame(&view(), &events(), 120, 3600.0 * 14.0 + 180.0, false)
    );
}
