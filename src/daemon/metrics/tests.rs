use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

use super::bodies::{Bodies, StackCache, refresh_stacks};
use super::*;
use crate::wire::Counters;
use crate::wire::{AppView, HostView, StatusView, WorkerView};

fn view() -> StatusView {
    StatusView {
        apps: vec![AppView {
            name: "sh\"op".into(),
            unit: "shop.service".into(),
            server: "uwsgi".into(),
            soft_limit: Some(300 << 20),
            backlog: Some(3),
            backlog_max: Some(100),
            workers: vec![WorkerView {
                pid: 42,
                scope: "aw-shop-42.scope".into(),
                private_bytes: Some(1234),
                state: "frozen".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Three apps (one observed, one without workers, one with every
/// character a label must escape), optional figures present and absent.
fn rich_view() -> StatusView {
    let worker = |pid: u32, state: &str| WorkerView {
        pid,
        scope: format!("aw-shop-{pid}.scope"),
        private_bytes: Some(u64::from(pid) << 20),
        anon_bytes: Some(u64::from(pid) << 19),
        file_bytes: pid.is_multiple_of(2).then_some(4096),
        state: state.into(),
        memory_high_events: u64::from(pid % 5),
        ..Default::default()
    };
    let app = |name: &str, unit: &str, server: &str| AppView {
        name: name.into(),
        unit: unit.into(),
        server: server.into(),
        ..Default::default()
    };
    StatusView {
        version: "1.2.3".into(),
        host: HostView {
            mem_total: 2 << 30,
            mem_available: 1_234_567_890,
            utilisation: 0.425_123_456_789,
            psi_some_avg10: 1.25,
            psi_full_avg10: 0.0,
            lower_bound: 0.8,
            upper_bound: 0.9,
        },
        apps: vec![
            AppView {
                soft_limit: Some(200 << 20),
                hard_limit: Some(300 << 20),
                backlog: Some(0),
                backlog_max: Some(100),
                stopped_slots: 2,
                counters: Counters {
                    placed: 7,
                    oom_kills: 1,
                    ..Default::default()
                },
                workers: vec![
                    worker(101, "running"),
                    worker(102, "frozen"),
                    worker(103, "idle"),
                ],
                ..app("shop", "uwsgi-shop.service", "uwsgi")
            },
            AppView {
                mode: Some(crate::policy::Mode::Observe),
                workers: vec![WorkerView {
                    connections: Some(3),
                    ..worker(201, "busy")
                }],
                ..app("b\\l\"o\ng", "gunicorn-blog.service", "gunicorn")
            },
            AppView {
                mode: Some(crate::policy::Mode::Enforce),
                ..app("empty", "empty.service", "gunicorn")
            },
        ],
        problems: vec!["a problem".into()],
        ..Default::default()
    }
}

fn rich_actions() -> ActionCounts {
    let key = |a: &str, b: &str, c: &str, d: &str| (a.into(), b.into(), c.into(), d.into());
    ActionCounts::from([
        (key("shop", "recycle", "soft-limit", "done"), 3),
        (key("shop", "kill", "hard-limit", "failed"), 1),
        (key("b\\l\"o\ng", "grow", "backlog", "observed"), 12),
    ])
}

fn rich_stacks() -> BTreeMap<u32, StackFigures> {
    let figures = StackFigures {
        threads: 50,
        default_stacks: 49,
        reserved_bytes: 392 << 20,
        resident_bytes: 600 << 10,
        saves_reserved_bytes: 386 << 20,
    };
    let one = |threads| StackFigures {
        threads,
        ..Default::default()
    };
    // 999 is no worker's: no sample.
    BTreeMap::from([(101, figures), (201, one(1)), (999, one(3))])
}

#[test]
fn every_sample_belongs_to_a_declared_family() {
    let mut actions = ActionCounts::new();
    actions.insert(
        (
            "shop".into(),
            "recycle".into(),
            "soft-limit".into(),
            "done".into(),
        ),
        3,
    );
    let stacks = BTreeMap::from([(
        42,
        StackFigures {
            threads: 50,
            default_stacks: 49,
            reserved_bytes: 392 << 20,
            resident_bytes: 600 << 10,
            saves_reserved_bytes: 386 << 20,
        },
    )]);
    let text = render(&view(), &actions, &stacks);
    let mut declared = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(["gauge", "counter"].contains(&kind), "{line}");
            assert!(kind != "counter" || name.ends_with("_total"), "{line}");
            declared.insert(name.to_owned());
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(declared.contains(name), "undeclared: {line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
    assert!(text.contains("adaptive_workers_worker_private_bytes{app=\"sh\\\"op\",pid=\"42\",scope=\"aw-shop-42.scope\"} 1234\n"), "{text}");
    assert!(text.contains(
        "adaptive_workers_worker_frozen{app=\"sh\\\"op\",pid=\"42\",scope=\"aw-shop-42.scope\"} 1\n"
    ));
    assert!(text.contains("adaptive_workers_actions_total{app=\"shop\",action=\"recycle\",reason=\"soft-limit\",outcome=\"done\"} 3\n"));
    assert!(text.contains("adaptive_workers_app_backlog_connections{app=\"sh\\\"op\"} 3\n"));
    assert!(text.contains("adaptive_workers_worker_default_stacks{app=\"sh\\\"op\",pid=\"42\",scope=\"aw-shop-42.scope\"} 49\n"), "{text}");
    assert!(text.contains("adaptive_workers_worker_stack_saving_bytes{app=\"sh\\\"op\",pid=\"42\",scope=\"aw-shop-42.scope\"} 404750336\n"), "{text}");
    // A worker without figures (not read yet, or gone) has no sample.
    let none = render(&view(), &actions, &BTreeMap::new());
    assert!(!none.contains("adaptive_workers_worker_threads{"), "{none}");
}

/// The page, byte for byte, as the endpoint wrote it before `render` was
/// split into one helper per group of families (promtool and dashboards
/// read it).
#[test]
fn render_writes_what_it_always_wrote() {
    let text = render(&rich_view(), &rich_actions(), &rich_stacks());
    let want = include_str!("golden.prom");
    for (i, (got, want)) in text.lines().zip(want.lines()).enumerate() {
        assert_eq!(got, want, "line {}", i + 1);
    }
    assert_eq!(text, want);
}

#[tokio::test]
async fn stack_figures_are_read_from_proc_and_kept_a_minute() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let parked = std::thread::spawn(move || rx.recv().ok());
    let me = std::process::id();
    let mut status = view();
    status.apps[0].workers[0].pid = me;
    let mut cache = StackCache::default();
    let procfs = ProcFs::at("/proc");
    assert!(refresh_stacks(&procfs, &mut cache, &status).await);
    let first = cache.by_pid.clone();
    let mine = first[&me];
    assert!(mine.threads >= 2, "{mine:?}");
    assert!(
        mine.reserved_bytes >= mine.resident_bytes && mine.resident_bytes > 0,
        "{mine:?}"
    );
    // Within the minute nothing is read again: not even a new worker.
    status.apps[0].workers[0].pid = 1;
    assert!(!refresh_stacks(&procfs, &mut cache, &status).await);
    assert_eq!(cache.by_pid, first);
    // A worker that cannot be read has no figures.
    cache.read_at = None;
    status.apps[0].workers[0].pid = u32::MAX;
    assert!(refresh_stacks(&procfs, &mut cache, &status).await);
    assert!(cache.by_pid.is_empty());
    tx.send(()).unwrap();
    parked.join().unwrap();
}

#[test]
fn a_throttle_says_once_per_period_and_counts_the_rest() {
    let mut t = Throttle::new(Duration::from_secs(60));
    assert_eq!(t.due(), Some(0));
    assert_eq!(t.due(), None);
    assert_eq!(t.due(), None);
    t.said_at = Some(Instant::now() - Duration::from_secs(61));
    assert_eq!(t.due(), Some(2));
}

/// Production's shape, test's times.
fn quick() -> Limits {
    Limits {
        connections: 4,
        read_timeout: Duration::from_millis(300),
        request_max: 8 << 10,
        render_timeout: Duration::from_secs(2),
        write_timeout: Duration::from_millis(300),
        reuse_for: Duration::from_millis(50),
        accept_pause: Duration::from_millis(10),
        log_every: Duration::from_secs(60),
    }
}

struct Running {
    endpoint: Endpoint,
    shared: Arc<Mutex<Shared>>,
    _proc: tempfile::TempDir,
}

/// An endpoint on a free loopback port showing `view()`, with no worker
/// stacks to read.
async fn running(limits: Limits) -> Running {
    let shared = Arc::new(Mutex::new(Shared::default()));
    shared.lock().unwrap().status = view();
    let proc = tempfile::tempdir().unwrap();
    let endpoint = serve_with(
        "127.0.0.1:0".parse().unwrap(),
        shared.clone(),
        ProcFs::at(proc.path()),
        limits,
    )
    .await
    .unwrap();
    Running {
        endpoint,
        shared,
        _proc: proc,
    }
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// A whole 200 answer's body: the head says so and Content-Length is right.
fn body_of(answer: &str) -> &str {
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{head}"
    );
    body
}

#[tokio::test]
async fn serves_metrics_over_http() {
    let shared = Arc::new(Mutex::new(Shared::default()));
    shared.lock().unwrap().status = view();
    let proc = tempfile::tempdir().unwrap();
    let addr = serve(
        "127.0.0.1:0".parse().unwrap(),
        shared,
        ProcFs::at(proc.path()),
    )
    .await
    .unwrap();
    let ok = get(addr, "/metrics").await;
    assert!(body_of(&ok).contains("adaptive_workers_app_workers{app=\"sh\\\"op\"} 1"));
    assert!(get(addr, "/").await.starts_with("HTTP/1.0 404"));
    assert!(get(addr, "/x").await.contains("\r\n\r\ntry /metrics\n"));
}

/// Issue 11: a flood of connections that send nothing. Past the cap they
/// are closed at once (told 503), the ones served are dropped when their
/// read time is up, never more than the cap are served at once, and then a
/// scrape gets its whole page.
#[tokio::test]
async fn idle_connections_past_the_cap_are_closed_at_once() {
    let limits = quick();
    let cap = limits.connections;
    let r = running(limits).await;
    let stats = r.endpoint.stats.clone();
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..cap + 50 {
        let mut s = TcpStream::connect(r.endpoint.addr).await.unwrap();
        idle.push(tokio::spawn(async move {
            let mut got = Vec::new();
            // The end, or a reset: either way closed.
            let _ = s.read_to_end(&mut got).await;
            (got, started.elapsed())
        }));
    }
    let (mut busy, mut dropped) = (0, 0);
    for c in idle {
        let (got, after) = timeout(Duration::from_secs(5), c).await.unwrap().unwrap();
        if got == BUSY {
            busy += 1;
        } else {
            assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
            assert!(after >= limits.read_timeout, "dropped after {after:?}");
            dropped += 1;
        }
    }
    assert_eq!((busy, dropped), (50, cap));
    assert_eq!(stats.refused.load(Ordering::Relaxed), 50);
    assert_eq!(stats.most_serving.load(Ordering::Relaxed), cap);
    let page = timeout(Duration::from_secs(2), get(r.endpoint.addr, "/metrics"))
        .await
        .expect("a scrape after the flood");
    assert!(body_of(&page).ends_with("\n"));
    assert!(page.contains("adaptive_workers_app_workers{app=\"sh\\\"op\"} 1\n"));
    assert_eq!(stats.most_serving.load(Ordering::Relaxed), cap);
    // Closed before given back: nothing is left served.
    assert_eq!(stats.serving.load(Ordering::Relaxed), 0);
}

/// Issue 11: a request trickling in a byte every 50 ms, each byte well
/// within the read time: dropped when the whole request's time is up.
#[tokio::test]
async fn a_slow_request_is_dropped_when_its_time_is_up() {
    let limits = quick();
    let r = running(limits).await;
    let (mut rd, mut wr) = TcpStream::connect(r.endpoint.addr)
        .await
        .unwrap()
        .into_split();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = sent.clone();
    let trickle = tokio::spawn(async move {
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ";
        for b in request.iter().chain(std::iter::repeat(&b'a')).take(200) {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            counted.fetch_add(1, Ordering::Relaxed);
            sleep(Duration::from_millis(50)).await;
        }
    });
    let started = Instant::now();
    let mut got = Vec::new();
    let closed = timeout(Duration::from_secs(3), rd.read_to_end(&mut got)).await;
    let after = started.elapsed();
    assert!(closed.is_ok(), "still connected after {after:?}");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(
        after >= limits.read_timeout - Duration::from_millis(50),
        "{after:?}"
    );
    assert!(
        sent.load(Ordering::Relaxed) < 100,
        "dropped only at the end"
    );
    trickle.abort();
    assert_eq!(r.endpoint.stats.serving.load(Ordering::Relaxed), 0);
}

fn bodies(limits: &Limits) -> (Bodies, Arc<Stats>, tempfile::TempDir) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    shared.lock().unwrap().status = view();
    let proc = tempfile::tempdir().unwrap();
    let stats = Arc::new(Stats::default());
    let b = Bodies::start(
        shared,
        ProcFs::at(proc.path()),
        limits.reuse_for,
        stats.clone(),
    );
    (b, stats, proc)
}

/// A client that asks and never reads is dropped when the write time is
/// up (the pipe holds 64 bytes: the page does not fit).
#[tokio::test]
async fn a_client_that_does_not_read_is_dropped() {
    let limits = quick();
    let (bodies, _, _proc) = bodies(&limits);
    let (mut client, mut server) = tokio::io::duplex(64);
    client
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    timeout(
        Duration::from_secs(3),
        converse(&mut server, &limits, &bodies),
    )
    .await
    .expect("still writing");
    assert!(started.elapsed() >= limits.write_timeout);
    let mut first = [0; 16];
    client.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.0 200 OK\r");
}

/// At most `request_max` bytes of a request are read, whatever follows.
#[tokio::test]
async fn a_long_request_is_read_no_further_than_the_cap() {
    let limits = quick();
    let (bodies, _, _proc) = bodies(&limits);
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    let junk = vec![b'A'; 64 << 10];
    client.write_all(&junk).await.unwrap();
    timeout(
        Duration::from_secs(3),
        converse(&mut server, &limits, &bodies),
    )
    .await
    .expect("still reading");
    drop(server);
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 405"), "{answer}");
    // What was not read is still in the pipe.
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    client.write_all(&junk).await.unwrap();
    assert_eq!(
        read_request(&mut server, limits.request_max)
            .await
            .unwrap()
            .len(),
        limits.request_max
    );
    let mut rest = vec![0; junk.len()];
    drop(client);
    let left = server.read(&mut rest).await.unwrap();
    assert!(left > 0);
}

/// Issue 11: the page is rendered once per change of state, not once per
/// connection, and a change shows once `reuse_for` has passed.
#[tokio::test]
async fn the_page_is_rendered_once_per_change() {
    let limits = quick();
    let r = running(limits).await;
    let addr = r.endpoint.addr;
    let renders = || r.endpoint.stats.renders.load(Ordering::Relaxed);
    let first = get(addr, "/metrics").await;
    for _ in 0..20 {
        assert_eq!(get(addr, "/metrics").await, first);
    }
    let together =
        futures_util::future::join_all((0..limits.connections).map(|_| get(addr, "/metrics")))
            .await;
    assert!(together.iter().all(|p| *p == first));
    // Past reuse_for the state is read again, but it has not changed.
    sleep(limits.reuse_for * 2).await;
    assert_eq!(get(addr, "/metrics").await, first);
    assert_eq!(renders(), 1);

    r.shared.lock().unwrap().status.apps[0].backlog = Some(7);
    sleep(limits.reuse_for * 2).await;
    let page = get(addr, "/metrics").await;
    assert!(
        page.contains("adaptive_workers_app_backlog_connections{app=\"sh\\\"op\"} 7\n"),
        "{page}"
    );
    assert_eq!(renders(), 2);

    let key = (
        "shop".into(),
        "kill".into(),
        "hard-limit".into(),
        "done".into(),
    );
    r.shared.lock().unwrap().actions.insert(key, 1);
    sleep(limits.reuse_for * 2).await;
    let page = get(addr, "/metrics").await;
    assert!(page.contains("adaptive_workers_actions_total{app=\"shop\",action=\"kill\",reason=\"hard-limit\",outcome=\"done\"} 1\n"), "{page}");
    assert_eq!(renders(), 3);
}
