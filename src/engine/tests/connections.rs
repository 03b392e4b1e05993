//! Scaling on the connections workers hold (gunicorn gthread, gevent,
//! uvicorn): the accept queue stays empty, the work waits inside.

use super::*;
use crate::adapter::gunicorn::{WorkerClass, Workers};
use crate::engine::scaling::{LoadPlan, load_plan};
use crate::policy::LoadSignal;

const PER: u32 = 4;

fn gthread_app(min: u32, max: u32, spare: u32, scale_down: ScaleDown) -> AppPolicy {
    let mut a = app_policy("api", None);
    a.server = ServerKind::Gunicorn;
    a.scaling = Some(ScalingPolicy {
        spare_idle: spare,
        step_up: 4,
        cooldown_up: Span(Duration::from_secs(1)),
        cooldown_down: Span(Duration::from_secs(10)),
        scale_down,
        ..ScalingPolicy::defaults(min, max)
    });
    a
}

/// Workers holding these connections, an empty accept queue.
fn held(now_ms: u64, conns: &[Option<u32>]) -> Snapshot {
    let workers = conns
        .iter()
        .enumerate()
        .map(|(i, c)| WorkerSample {
            connections: *c,
            idle: c.map(|c| c == 0),
            age: Duration::from_secs(100 + i as u64),
            ..worker(100 + i as u32, 50)
        })
        .collect();
    let mut s = snapshot(0, 0.3, vec![("api", workers)]);
    s.now = Duration::from_millis(now_ms);
    s.apps[0].backlog = Some(Backlog {
        queued: 0,
        max: 128,
    });
    s.apps[0].concurrency = Some(PER);
    s
}

fn counts(conns: &[u32]) -> Vec<Option<u32>> {
    conns.iter().map(|c| Some(*c)).collect()
}

#[test]
fn saturated_workers_grow_the_app_with_an_empty_queue() {
    let p = policy(vec![gthread_app(2, 8, 0, ScaleDown::Stop)]);
    let mut st = EngineState::default();
    // 2 workers of 4 threads hold 12: 4 wait inside, the queue is empty.
    let d = decide(&p, &held(1000, &counts(&[6, 6])), &mut st);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        d[0].action,
        Action::Grow {
            app: "api".into(),
            count: 1
        }
    );
    assert_eq!(
        d[0].reason,
        Reason::ConnectionsWaiting {
            waiting: 4,
            held: 12,
            capacity: 8,
            threshold: 1
        }
    );
    assert_eq!(d[0].reason.kind(), "connections-waiting");
    // 20 held need 5 workers: 3 more at once (step_up 4), after the cool-down.
    // 20 held need 5 workers: 2 more beside the one asked for, after the
    // cool-down.
    assert!(decide(&p, &held(1500, &counts(&[10, 10])), &mut st).is_empty());
    let d = decide(&p, &held(2000, &counts(&[10, 10])), &mut st);
    assert!(
        matches!(d[0].action, Action::Grow { count: 2, .. }),
        "{d:?}"
    );
}

#[test]
fn workers_within_their_threads_do_not_grow() {
    let p = policy(vec![gthread_app(2, 8, 0, ScaleDown::Stop)]);
    let mut st = EngineState::default();
    // Uneven but within capacity: 8 held, 8 served at once.
    for (i, c) in [[4, 4], [6, 2], [5, 3], [8, 0]].iter().enumerate() {
        let d = decide(&p, &held(1000 * (i as u64 + 1), &counts(c)), &mut st);
        assert!(d.is_empty(), "{c:?}: {d:?}");
    }
}

#[test]
fn quiet_connections_shrink_the_app_after_the_cool_down() {
    let p = policy(vec![gthread_app(1, 8, 1, ScaleDown::Stop)]);
    let mut st = EngineState::default();
    // 4 workers (16 at once) hold 1 connection: 3 are free, 1 kept spare.
    let quiet = counts(&[1, 0, 0, 0]);
    let mut shrinks = Vec::new();
    for i in 0..=120u64 {
        for d in decide(&p, &held(i * 100, &quiet), &mut st) {
            shrinks.push((i * 100, d));
        }
    }
    let (at, d) = shrinks.first().expect("the app never shrank");
    assert!((10_000..11_000).contains(at), "shrank at {at} ms");
    assert_eq!(
        d.action,
        Action::Shrink {
            app: "api".into(),
            count: 1
        }
    );
    assert!(
        matches!(
            d.reason,
            Reason::SpareCapacity {
                capacity: 16,
                spare: 1,
                ..
            }
        ),
        "{:?}",
        d.reason
    );
}

#[test]
fn unknown_counts_never_shrink_or_park() {
    for scale_down in [ScaleDown::Stop, ScaleDown::Freeze] {
        let p = policy(vec![gthread_app(1, 8, 0, scale_down)]);
        let mut st = EngineState::default();
        // One worker's fds could not be read: its load is unknown, not 0.
        let conns = [Some(0), None, Some(0), Some(0)];
        for i in 0..400u64 {
            let d = decide(&p, &held(i * 100, &conns), &mut st);
            assert!(d.is_empty(), "{scale_down:?} at {} ms: {d:?}", i * 100);
        }
    }
}

#[test]
fn freeze_parks_workers_that_hold_nothing() {
    let p = policy(vec![gthread_app(1, 8, 0, ScaleDown::Freeze)]);
    let mut st = EngineState::default();
    let quiet = counts(&[2, 0, 1, 0]);
    let mut frozen = BTreeSet::new();
    for i in 0..=120u64 {
        for d in decide(&p, &held(i * 100, &quiet), &mut st) {
            if let Action::Freeze { worker } = &d.action {
                frozen.insert(worker.pid);
            }
        }
    }
    // 3 held of 16: 2 whole workers free with half a worker to spare, and
    // only those holding nothing are parked.
    assert!(!frozen.is_empty(), "nothing was parked");
    assert!(frozen.is_subset(&BTreeSet::from([101, 103])), "{frozen:?}");
}

/// A steady load of `load` requests at a time, spread over the workers
/// with a jitter, the decisions carried out at once.
fn run_steady(load: u32, spare: u32, seed: u64, samples: u64) -> (u32, Vec<&'static str>) {
    let p = policy(vec![gthread_app(1, 12, spare, ScaleDown::Stop)]);
    let mut st = EngineState::default();
    let mut n = 1u32;
    let mut x = seed | 1;
    let mut changes = Vec::new();
    for i in 0..samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Now and then a request arrives before another ends: one more.
        let now_load = load + u32::from(x.is_multiple_of(7));
        let mut conns = vec![now_load / n; n as usize];
        for c in conns.iter_mut().take((now_load % n) as usize) {
            *c += 1;
        }
        for d in decide(&p, &held(i * 100, &counts(&conns)), &mut st) {
            match d.action {
                Action::Grow { count, .. } => {
                    n += count;
                    changes.push("grow");
                }
                Action::Shrink { count, .. } => {
                    n -= count;
                    changes.push("shrink");
                }
                other => panic!("{other:?}"),
            }
        }
    }
    (n, changes)
}

proptest! {
    #[test]
    fn a_steady_load_settles_and_never_flaps(load in 1u32..40, spare in 0u32..2, seed in any::<u64>()) {
        // 3 minutes at 10 samples a second.
        let (n, changes) = run_steady(load, spare, seed, 1800);
        let needed = load.div_ceil(PER);
        prop_assert!(n >= needed.min(12), "{n} workers for {load} at once: {changes:?}");
        prop_assert!(n <= (needed + spare + 1).min(12), "{n} workers for {load} at once: {changes:?}");
        // Grows, then holds: a shrink never follows a grow.
        let reversals = changes.windows(2).filter(|w| w[0] != w[1]).count();
        prop_assert!(reversals == 0, "{load} at once, spare {spare}: {changes:?}");
    }
}

fn gunicorn(argv: &str) -> Workers {
    Workers::from_argv(
        &argv
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>(),
    )
}

#[test]
fn the_plan_follows_the_worker_class_or_the_policy() {
    let mut sp = ScalingPolicy::defaults(1, 4);
    let gthread = gunicorn("gunicorn -k gthread --threads 4 app");
    let plan = load_plan(&sp, ServerKind::Gunicorn, Some(&gthread));
    assert_eq!(plan.per_worker(), Some(4));
    assert!(
        plan.why().contains("gthread") && plan.why().contains("--threads 4"),
        "{}",
        plan.why()
    );
    // sync: the accept queue shows the load.
    let sync = gunicorn("gunicorn --workers 3 app");
    assert_eq!(sync.class, WorkerClass::Sync);
    let plan = load_plan(&sp, ServerKind::Gunicorn, Some(&sync));
    assert!(matches!(plan, LoadPlan::Backlog { .. }), "{plan:?}");
    // Not read yet, and uWSGI: the accept queue.
    assert_eq!(
        load_plan(&sp, ServerKind::Gunicorn, None).per_worker(),
        None
    );
    assert_eq!(
        load_plan(&sp, ServerKind::Uwsgi, Some(&gthread)).per_worker(),
        None
    );
    // uvicorn: gunicorn's worker_connections unless the policy says.
    let uvicorn = gunicorn("gunicorn -k uvicorn.workers.UvicornWorker app:asgi");
    assert_eq!(
        load_plan(&sp, ServerKind::Gunicorn, Some(&uvicorn)).per_worker(),
        Some(1000)
    );
    sp.concurrency = Some(2);
    let plan = load_plan(&sp, ServerKind::Gunicorn, Some(&uvicorn));
    assert_eq!(plan.per_worker(), Some(2));
    assert!(
        plan.why().contains("concurrency in the policy"),
        "{}",
        plan.why()
    );
    // The policy's word over the class.
    sp.load = LoadSignal::Backlog;
    assert_eq!(
        load_plan(&sp, ServerKind::Gunicorn, Some(&gthread)).per_worker(),
        None
    );
    sp.load = LoadSignal::Connections;
    sp.concurrency = None;
    assert_eq!(
        load_plan(&sp, ServerKind::Generic, None).per_worker(),
        Some(1)
    );
    assert_eq!(
        load_plan(&sp, ServerKind::Gunicorn, Some(&gthread)).per_worker(),
        Some(4)
    );
}

#[test]
fn workers_asked_for_are_counted_until_they_come() {
    // max 6, step_up 4: the app server forks in its own time.
    let p = policy(vec![gthread_app(2, 6, 0, ScaleDown::Stop)]);
    let mut st = EngineState::default();
    let grown = |d: &[Decision]| -> u32 {
        d.iter()
            .map(|d| match d.action {
                Action::Grow { count, .. } => count,
                _ => 0,
            })
            .sum()
    };
    // 2 workers hold 40: 4 more asked for.
    assert_eq!(
        grown(&decide(&p, &held(1000, &counts(&[20, 20])), &mut st)),
        4
    );
    // The forks have not come yet: nothing more, however long the queue,
    // for as long as they may take.
    for ms in [2000, 5000, 10_900] {
        let d = decide(&p, &held(ms, &counts(&[20, 20])), &mut st);
        assert!(d.is_empty(), "at {ms} ms, before the 4 came: {d:?}");
    }
    // They never came: what is seen is believed again.
    let d = decide(&p, &held(11_100, &counts(&[20, 20])), &mut st);
    assert_eq!(grown(&d), 4, "{d:?}");
    // Two came (4 of 6): 2 more may be asked for once they all have.
    let mut st = EngineState::default();
    assert_eq!(
        grown(&decide(&p, &held(1000, &counts(&[20, 20])), &mut st)),
        4
    );
    let d = decide(&p, &held(2000, &counts(&[10, 10, 10, 10])), &mut st);
    assert!(d.is_empty(), "{d:?}");
    let d = decide(&p, &held(3000, &counts(&[7, 7, 7, 7, 6, 6])), &mut st);
    assert!(d.is_empty(), "at max_workers: {d:?}");
}
