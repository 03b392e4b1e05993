use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;

use super::memory::host_k;
use super::*;
use crate::policy::values::{ByteSize, Fraction, Span};
use crate::policy::{
    AppPolicy, GlobalPolicy, MemoryPolicy, Mode, Policy, ScaleDown, ScalingPolicy, ServerKind,
    UwsgiSettings,
};

const MB: u64 = 1 << 20;
const GB: u64 = 1 << 30;

fn app_policy(name: &str, soft: Option<u64>) -> AppPolicy {
    AppPolicy {
        name: name.into(),
        file: PathBuf::from(format!("/etc/adaptive-workers/policies.d/{name}.toml")),
        unit: format!("{name}.service"),
        server: ServerKind::Uwsgi,
        mode: Mode::Enforce,
        memory: MemoryPolicy {
            soft_limit: soft.map(ByteSize),
            hard_limit: None,
            min_lifetime: Span(Duration::from_secs(30)),
        },
        uwsgi: UwsgiSettings::default(),
        generic: None,
        scaling: None,
    }
}

fn policy(apps: Vec<AppPolicy>) -> Policy {
    let mut global = GlobalPolicy::default();
    global.host.lower_bound = Fraction(0.80);
    global.host.upper_bound = Fraction(0.90);
    Policy { global, apps }
}

fn worker(pid: u32, private_mb: u64) -> WorkerSample {
    WorkerSample {
        pid,
        starttime: 100,
        scope: format!("aw-w{pid}.scope"),
        private_bytes: private_mb * MB,
        age: Duration::from_secs(3600),
        frozen: false,
        idle: None,
        connections: None,
    }
}

fn snapshot(now_s: u64, util: f64, apps: Vec<(&str, Vec<WorkerSample>)>) -> Snapshot {
    Snapshot {
        now: Duration::from_secs(now_s),
        host: HostSample {
            mem_total: 10 * GB,
            mem_available: ((1.0 - util) * (10 * GB) as f64) as u64,
            ..Default::default()
        },
        apps: apps
            .into_iter()
            .map(|(name, workers)| AppSample {
                name: name.into(),
                workers,
                ..Default::default()
            })
            .collect(),
    }
}

fn pids(decisions: &[Decision], name: &str) -> Vec<u32> {
    decisions
        .iter()
        .filter(|d| d.action.name() == name)
        .filter_map(|d| d.action.worker().map(|w| w.pid))
        .collect()
}

#[test]
fn k_grows_quadratically_between_bounds() {
    assert_eq!(host_k(100, 0.80, 0.80, 0.90), 1, "at least one at L");
    assert_eq!(host_k(100, 0.85, 0.80, 0.90), 25);
    assert_eq!(host_k(100, 0.90, 0.80, 0.90), 100);
    assert_eq!(host_k(100, 0.99, 0.80, 0.90), 100);
    assert_eq!(host_k(0, 0.99, 0.80, 0.90), 0);
}

#[test]
fn soft_limit_recycles_once_after_min_lifetime() {
    let p = policy(vec![app_policy("shop", Some(300 * MB))]);
    let mut young = worker(2, 400);
    young.age = Duration::from_secs(5);
    let snap = snapshot(
        10,
        0.5,
        vec![("shop", vec![worker(1, 350), young, worker(3, 100)])],
    );
    let mut st = EngineState::default();
    let d = decide(&p, &snap, &mut st);
    assert_eq!(pids(&d, "recycle"), vec![1]);
    assert_eq!(
        d[0].reason.to_string(),
        "private memory 350M is above the soft limit 300M"
    );
    // The next tick does not ask again while the recycle is under way.
    assert!(decide(&p, &snap, &mut st).is_empty());
}

#[test]
fn soft_limit_recycles_at_most_a_quarter_of_an_app_at_once() {
    let p = policy(vec![app_policy("shop", Some(100 * MB))]);
    let workers = (1..=8).map(|pid| worker(pid, 200 + pid as u64)).collect();
    let mut st = EngineState::default();
    let d = decide(&p, &snapshot(10, 0.5, vec![("shop", workers)]), &mut st);
    assert_eq!(pids(&d, "recycle"), vec![8, 7], "the two biggest of eight");
}

#[test]
fn overdue_recycle_becomes_a_kill() {
    let p = policy(vec![app_policy("shop", Some(300 * MB))]);
    let mut st = EngineState::default();
    let d = decide(
        &p,
        &snapshot(10, 0.5, vec![("shop", vec![worker(1, 350)])]),
        &mut st,
    );
    assert_eq!(pids(&d, "recycle"), vec![1]);
    let d = decide(
        &p,
        &snapshot(39, 0.5, vec![("shop", vec![worker(1, 350)])]),
        &mut st,
    );
    assert!(d.is_empty(), "deadline is 30s");
    let d = decide(
        &p,
        &snapshot(40, 0.5, vec![("shop", vec![worker(1, 350)])]),
        &mut st,
    );
    assert_eq!(pids(&d, "kill"), vec![1]);
    assert!(matches!(d[0].reason, Reason::RecycleTimedOut { .. }));
    // Once killed it is never chosen again while it lingers.
    assert!(
        decide(
            &p,
            &snapshot(41, 0.5, vec![("shop", vec![worker(1, 350)])]),
            &mut st
        )
        .is_empty()
    );
}

#[test]
fn finished_recycle_is_forgotten() {
    let p = policy(vec![app_policy("shop", Some(300 * MB))]);
    let mut st = EngineState::default();
    decide(
        &p,
        &snapshot(10, 0.5, vec![("shop", vec![worker(1, 350)])]),
        &mut st,
    );
    // Worker 1 exited and was respawned as 5.
    let d = decide(
        &p,
        &snapshot(11, 0.5, vec![("shop", vec![worker(5, 10)])]),
        &mut st,
    );
    assert!(d.is_empty());
    assert!(st.pending.is_empty());
}

#[test]
fn above_lower_bound_recycles_the_biggest_host_wide() {
    let p = policy(vec![app_policy("a", None), app_policy("b", None)]);
    let snap = snapshot(
        10,
        0.81,
        vec![
            ("a", vec![worker(1, 100), worker(2, 500)]),
            ("b", vec![worker(3, 300)]),
        ],
    );
    let mut st = EngineState::default();
    let d = decide(&p, &snap, &mut st);
    assert_eq!(pids(&d, "recycle"), vec![2], "k=1 just past L");
    assert!(matches!(d[0].reason, Reason::HostAboveLower { k: 1, .. }));
    // Cool-down: nothing new for 2 s even though memory is still high.
    let snap2 = Snapshot {
        now: Duration::from_secs(11),
        ..snap.clone()
    };
    assert!(decide(&p, &snap2, &mut st).is_empty());
}

#[test]
fn above_upper_bound_kills_only_what_is_needed() {
    let p = policy(vec![app_policy("a", None)]);
    // 10 GB host at 92%: halfway between bounds is 85%, so 0.7 GB must go.
    let workers = vec![
        worker(1, 600),
        worker(2, 500),
        worker(3, 400),
        worker(4, 50),
    ];
    let mut st = EngineState::default();
    let d = decide(
        &p,
        &snapshot(10, 0.92, vec![("a", workers.clone())]),
        &mut st,
    );
    assert_eq!(pids(&d, "kill"), vec![1, 2]);
    // Next tick, kills still in flight: memory not yet freed, no new kill.
    let d = decide(&p, &snapshot(10, 0.92, vec![("a", workers)]), &mut st);
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn respawned_workers_are_not_killed_in_a_loop() {
    // An unmanaged process holds the memory: killing the workers cannot
    // bring the host below U, and their respawns must not be killed again.
    let p = policy(vec![app_policy("a", None)]);
    let mut st = EngineState::default();
    let d = decide(
        &p,
        &snapshot(10, 0.97, vec![("a", vec![worker(1, 100), worker(2, 90)])]),
        &mut st,
    );
    assert_eq!(pids(&d, "kill"), vec![1, 2]);
    let mut respawned = vec![worker(3, 5), worker(4, 5)];
    respawned
        .iter_mut()
        .for_each(|w| w.age = Duration::from_secs(1));
    for t in 11..20 {
        assert!(
            decide(
                &p,
                &snapshot(t, 0.97, vec![("a", respawned.clone())]),
                &mut st
            )
            .is_empty()
        );
    }
}

#[test]
fn observe_mode_marks_every_decision() {
    let mut a = app_policy("shop", Some(100 * MB));
    a.mode = Mode::Observe;
    let p = policy(vec![a]);
    let mut st = EngineState::default();
    let snap = snapshot(
        10,
        0.95,
        vec![("shop", vec![worker(1, 300), worker(2, 200)])],
    );
    let d = decide(&p, &snap, &mut st);
    assert!(!d.is_empty());
    assert!(d.iter().all(|d| d.mode == Mode::Observe));
    // Observed recycles are never escalated to kills.
    let later = Snapshot {
        now: Duration::from_secs(100),
        ..snapshot(0, 0.5, vec![("shop", vec![worker(1, 300), worker(2, 200)])])
    };
    assert!(
        decide(&p, &later, &mut st)
            .iter()
            .all(|d| d.action.name() != "kill" || d.mode == Mode::Observe)
    );
}

fn scaling_app(min: u32, max: u32, scale_down: ScaleDown) -> AppPolicy {
    let mut a = app_policy("shop", None);
    a.scaling = Some(ScalingPolicy {
        spare_idle: 1,
        grow_backlog: 3,
        cooldown_up: Span(Duration::from_secs(1)),
        cooldown_down: Span(Duration::from_secs(10)),
        scale_down,
        ..ScalingPolicy::defaults(min, max)
    });
    a
}

fn scaling_snap(now_ms: u64, queued: u32, idle: &[bool], frozen: &[bool]) -> Snapshot {
    let workers = idle
        .iter()
        .enumerate()
        .map(|(i, idle)| WorkerSample {
            idle: Some(*idle),
            frozen: frozen.get(i).copied().unwrap_or(false),
            age: Duration::from_secs(100 + i as u64),
            ..worker(100 + i as u32, 50)
        })
        .collect();
    let mut s = snapshot(0, 0.3, vec![("shop", workers)]);
    s.now = Duration::from_millis(now_ms);
    s.apps[0].backlog = Some(Backlog { queued, max: 100 });
    // uWSGI in cheaper mode: slots up to `processes` without a process.
    s.apps[0].stopped_slots = 8;
    s
}

#[test]
fn backlog_grows_and_quiet_shrinks() {
    let p = policy(vec![scaling_app(2, 6, ScaleDown::Stop)]);
    let mut st = EngineState::default();
    let d = decide(
        &p,
        &scaling_snap(1000, 5, &[false, false, false], &[]),
        &mut st,
    );
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].action,
        Action::Grow {
            app: "shop".into(),
            count: 1
        }
    );
    // Quiet, 3 idle of 4: shrink only once quiet has lasted the down
    // cool-down (10 s from 5 s on), not merely 10 s after the last change.
    let quiet = [true, true, true, false];
    assert!(decide(&p, &scaling_snap(5000, 0, &quiet, &[]), &mut st).is_empty());
    assert!(decide(&p, &scaling_snap(11_000, 0, &quiet, &[]), &mut st).is_empty());
    let d = decide(&p, &scaling_snap(15_000, 0, &quiet, &[]), &mut st);
    assert_eq!(
        d[0].action,
        Action::Shrink {
            app: "shop".into(),
            count: 1
        }
    );
    // Never below min_workers.
    let d = decide(&p, &scaling_snap(30_000, 0, &[true, true], &[]), &mut st);
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn quiet_must_last_the_cool_down_even_right_after_start() {
    let p = policy(vec![scaling_app(2, 6, ScaleDown::Stop)]);
    let mut st = EngineState::default();
    let quiet = [true, true, true];
    // The daemon just started: no change yet, but no quiet seen either.
    assert!(decide(&p, &scaling_snap(0, 0, &quiet, &[]), &mut st).is_empty());
    assert!(decide(&p, &scaling_snap(9_900, 0, &quiet, &[]), &mut st).is_empty());
    // A busy moment restarts the clock.
    assert!(
        decide(
            &p,
            &scaling_snap(9_950, 1, &[true, false, false], &[]),
            &mut st
        )
        .is_empty()
    );
    assert!(decide(&p, &scaling_snap(15_000, 0, &quiet, &[]), &mut st).is_empty());
    let d = decide(&p, &scaling_snap(25_000, 0, &quiet, &[]), &mut st);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        matches!(d[0].action, Action::Shrink { count: 1, .. }),
        "{d:?}"
    );
}

#[test]
fn a_connection_caught_in_the_queue_now_and_then_is_still_quiet() {
    let p = policy(vec![scaling_app(2, 6, ScaleDown::Stop)]);
    let mut st = EngineState::default();
    let quiet = [true, true, true];
    let mut shrunk_at = None;
    // 10 samples a second; every 17th catches one connection being accepted.
    for i in 0..200u64 {
        let queued = u32::from(i % 17 == 0);
        let d = decide(&p, &scaling_snap(i * 100, queued, &quiet, &[]), &mut st);
        if d.iter().any(|d| matches!(d.action, Action::Shrink { .. })) {
            shrunk_at.get_or_insert(i * 100);
        }
    }
    let at = shrunk_at.expect("light traffic must not keep the app from shrinking");
    assert!(
        (10_000..12_000).contains(&at),
        "shrunk at {at} ms, the cool-down is 10 s"
    );
    // A queue that stays is load: never quiet.
    let mut st = EngineState::default();
    for i in 0..200u64 {
        let d = decide(&p, &scaling_snap(i * 100, 1, &quiet, &[]), &mut st);
        assert!(
            d.iter().all(|d| !matches!(d.action, Action::Shrink { .. })),
            "{d:?}"
        );
    }
}

#[test]
fn tiny_workers_are_not_worth_a_host_kill() {
    // Host at 97% because of something else; the only workers are fresh
    // respawns (old enough, but holding almost nothing).
    let p = policy(vec![app_policy("a", None)]);
    let mut st = EngineState::default();
    let d = decide(
        &p,
        &snapshot(100, 0.97, vec![("a", vec![worker(1, 0), worker(2, 1)])]),
        &mut st,
    );
    assert!(d.is_empty(), "{d:?}");
    // A worker with real memory is still killed.
    let d = decide(
        &p,
        &snapshot(101, 0.97, vec![("a", vec![worker(1, 0), worker(3, 400)])]),
        &mut st,
    );
    assert_eq!(pids(&d, "kill"), vec![3]);
}

#[test]
fn tiny_workers_are_not_recycled_just_above_the_lower_bound() {
    // 10 GB host, bounds 80% and 90%: the band is 1 GB, 1% of it 10 MB.
    let p = policy(vec![app_policy("a", None)]);
    let mut st = EngineState::default();
    let d = decide(
        &p,
        &snapshot(100, 0.801, vec![("a", vec![worker(1, 2), worker(2, 9)])]),
        &mut st,
    );
    assert!(d.is_empty(), "{d:?}");
    let d = decide(
        &p,
        &snapshot(101, 0.801, vec![("a", vec![worker(1, 2), worker(3, 60)])]),
        &mut st,
    );
    assert_eq!(pids(&d, "recycle"), vec![3]);
}

#[test]
fn workers_without_a_sample_count_towards_the_minimum() {
    let p = policy(vec![scaling_app(2, 6, ScaleDown::Stop)]);
    // A daemon just started: uWSGI runs 3 workers (5 cheap slots), none
    // placed in its scope yet.
    let mut s = scaling_snap(1000, 0, &[], &[]);
    s.apps[0].stopped_slots = 5;
    s.apps[0].unsampled = 3;
    let d = decide(&p, &s, &mut EngineState::default());
    assert!(d.is_empty(), "{d:?}");
    // Without them the app would be below its minimum.
    s.apps[0].unsampled = 0;
    let d = decide(&p, &s, &mut EngineState::default());
    assert!(
        matches!(d[0].reason, Reason::BelowMinimum { workers: 0, min: 2 }),
        "{d:?}"
    );
}

#[test]
fn uwsgi_grows_only_into_cheap_slots() {
    let p = policy(vec![scaling_app(1, 6, ScaleDown::Stop)]);
    let mut st = EngineState::default();
    let mut s = scaling_snap(1000, 9, &[false, false], &[]);
    s.apps[0].stopped_slots = 0;
    assert!(
        decide(&p, &s, &mut st).is_empty(),
        "no cheap slot: '+' would do nothing"
    );
    s.apps[0].stopped_slots = 1;
    let mut sp = p.clone();
    sp.apps[0].scaling.as_mut().unwrap().step_up = 3;
    let d = decide(&sp, &s, &mut EngineState::default());
    assert_eq!(
        d[0].action,
        Action::Grow {
            app: "shop".into(),
            count: 1
        }
    );
}

#[test]
fn freeze_parks_and_thaws_first() {
    let p = policy(vec![scaling_app(1, 4, ScaleDown::Freeze)]);
    let mut st = EngineState::default();
    assert!(
        decide(
            &p,
            &scaling_snap(10_000, 0, &[true, true, true], &[]),
            &mut st
        )
        .is_empty()
    );
    let d = decide(
        &p,
        &scaling_snap(20_000, 0, &[true, true, true], &[]),
        &mut st,
    );
    assert_eq!(
        pids(&d, "freeze"),
        vec![100],
        "the youngest idle worker is parked"
    );
    let d = decide(
        &p,
        &scaling_snap(21_000, 4, &[true, true, true], &[true]),
        &mut st,
    );
    assert_eq!(
        pids(&d, "thaw"),
        vec![100],
        "a parked worker comes back before any fork"
    );
}

#[test]
fn frozen_worker_found_busy_is_thawed() {
    let p = policy(vec![scaling_app(1, 4, ScaleDown::Freeze)]);
    let mut st = EngineState::default();
    let d = decide(
        &p,
        &scaling_snap(20_000, 0, &[false, true], &[true]),
        &mut st,
    );
    assert_eq!(pids(&d, "thaw"), vec![100]);
    assert_eq!(d[0].reason, Reason::BusyWhileFrozen);
}

#[test]
fn growth_stops_at_the_host_lower_bound() {
    let p = policy(vec![scaling_app(1, 10, ScaleDown::Stop)]);
    let mut st = EngineState::default();
    let mut s = scaling_snap(1000, 50, &[false, false], &[]);
    s.host.mem_available = (0.21 * (10 * GB) as f64) as u64; // 79% used, L = 80%
    s.apps[0]
        .workers
        .iter_mut()
        .for_each(|w| w.private_bytes = 200 * MB);
    assert!(
        decide(&p, &s, &mut st).is_empty(),
        "a 200M worker would cross L"
    );
}

// ---- properties ----

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    let workers = prop::collection::vec((1u64..2000, any::<bool>(), 0u64..100), 0..40);
    (workers, 0.0f64..1.0, 0u64..1000).prop_map(|(ws, util, now)| {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (i, (mb, in_a, age)) in ws.into_iter().enumerate() {
            let mut w = worker(i as u32 + 1, mb);
            w.age = Duration::from_secs(age);
            if in_a { a.push(w) } else { b.push(w) }
        }
        snapshot(now, util, vec![("a", a), ("b", b)])
    })
}

fn managed(snap: &Snapshot) -> BTreeSet<WorkerRef> {
    snap.apps
        .iter()
        .flat_map(|a| {
            a.workers.iter().map(|w| WorkerRef {
                app: a.name.clone(),
                pid: w.pid,
                starttime: w.starttime,
                scope: w.scope.clone(),
            })
        })
        .collect()
}

proptest! {
    #[test]
    fn never_more_than_k_host_decisions(snap in arb_snapshot()) {
        let p = policy(vec![app_policy("a", Some(500 * MB)), app_policy("b", None)]);
        let d = decide(&p, &snap, &mut EngineState::default());
        let host = d.iter().filter(|d| matches!(d.reason, Reason::HostAboveLower { .. } | Reason::HostAboveUpper { .. })).count();
        let n = snap.apps.iter().map(|a| a.workers.len()).sum();
        let m = snap.host.utilisation();
        let k = if m >= 0.80 { host_k(n, m, 0.80, 0.90) } else { 0 };
        prop_assert!(host as u32 <= k, "{host} > k={k}");
    }

    #[test]
    fn never_a_worker_outside_the_managed_set(snap in arb_snapshot(), later in arb_snapshot()) {
        let p = policy(vec![app_policy("a", Some(500 * MB)), app_policy("b", Some(800 * MB))]);
        let mut st = EngineState::default();
        decide(&p, &snap, &mut st);
        let d = decide(&p, &later, &mut st);
        let set = managed(&later);
        for dec in &d {
            if let Some(w) = dec.action.worker() {
                prop_assert!(set.contains(w), "{w:?} is not in the snapshot");
            }
        }
    }

    #[test]
    fn observe_mode_never_enforces(snap in arb_snapshot()) {
        let mut p = policy(vec![app_policy("a", Some(500 * MB)), app_policy("b", Some(100 * MB))]);
        p.apps.iter_mut().for_each(|a| a.mode = Mode::Observe);
        let mut st = EngineState::default();
        for tick in 0..5u64 {
            let s = Snapshot { now: snap.now + Duration::from_secs(tick * 40), ..snap.clone() };
            prop_assert!(decide(&p, &s, &mut st).iter().all(|d| d.mode == Mode::Observe));
        }
    }

    #[test]
    fn at_upper_bound_the_biggest_go_first(snap in arb_snapshot()) {
        let p = policy(vec![app_policy("a", None), app_policy("b", None)]);
        let mut snap = snap;
        snap.host.mem_available = snap.host.mem_total / 20; // 95%: above U
        let d = decide(&p, &snap, &mut EngineState::default());
        let killed: Vec<u64> = d.iter().filter(|d| d.action.name() == "kill").map(|d| {
            let w = d.action.worker().unwrap();
            snap.apps.iter().flat_map(|a| &a.workers).find(|s| s.pid == w.pid).unwrap().private_bytes
        }).collect();
        // Only workers past their min_lifetime (30 s here) and holding 1% of
        // the band between the bounds (10 GB × 10% × 1%) can be chosen.
        let mut all: Vec<u64> = snap.apps.iter().flat_map(|a| a.workers.iter())
            .filter(|w| w.age >= Duration::from_secs(30) && w.private_bytes as f64 >= 0.001 * (10 * GB) as f64)
            .map(|w| w.private_bytes).collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        prop_assert_eq!(&killed[..], &all[..killed.len()]);
        if !all.is_empty() { prop_assert!(!killed.is_empty()); }
    }

    #[test]
    fn scaling_stays_within_bounds_and_does_not_flap(
        steps in prop::collection::vec((0u32..10, prop::collection::vec(any::<bool>(), 1..8)), 1..60),
        steady_queue in 0u32..2,
    ) {
        let p = policy(vec![scaling_app(2, 6, ScaleDown::Stop)]);
        let mut st = EngineState::default();
        for (i, (queued, idle)) in steps.iter().enumerate() {
            for d in decide(&p, &scaling_snap(i as u64 * 100, *queued, idle, &[]), &mut st) {
                match d.action {
                    Action::Grow { count, .. } => prop_assert!(idle.len() as u32 + count <= 6),
                    Action::Shrink { count, .. } => prop_assert!(idle.len() as u32 - count >= 2),
                    _ => {}
                }
            }
        }
        // A steady load: the same backlog and idle pattern every tick. At
        // most one change of direction over a long run.
        let mut st = EngineState::default();
        let idle = [true, true, false, false];
        let mut directions = Vec::new();
        for i in 0..600u64 {
            for d in decide(&p, &scaling_snap(i * 100, steady_queue, &idle, &[]), &mut st) {
                directions.push(d.action.name());
            }
        }
        directions.dedup();
        prop_assert!(directions.len() <= 1, "{directions:?}");
    }
}

#[test]
fn state_does_not_carry_over_to_a_process_that_got_a_dead_workers_pid() {
    let p = policy(vec![app_policy("shop", Some(300 * MB))]);
    let mut st = EngineState::default();
    let snap = snapshot(0, 0.3, vec![("shop", vec![worker(7, 400)])]);
    let first = decide(&p, &snap, &mut st);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(
        !decide(&p, &snap, &mut st)
            .iter()
            .any(|d| d.action.name() == "recycle")
    );
    // The worker died; a new process got PID 7 (and the same scope name).
    let mut reborn = worker(7, 400);
    reborn.starttime = 200;
    let snap = snapshot(1, 0.3, vec![("shop", vec![reborn])]);
    let again = decide(&p, &snap, &mut st);
    assert!(
        again.iter().any(|d| d.action.name() == "recycle"),
        "the new process is a worker of its own: {again:?}"
    );
}

mod connections;
mod inputs;
