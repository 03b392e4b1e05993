//! The Prometheus endpoint: off unless `[metrics] listen` is set (the
//! example binds loopback). Text exposition format 0.0.4, rendered from
//! the same state `status` shows, plus counters of every action by reason
//! and outcome, and each worker's thread stacks as `inspect` sees them.
//! A deliberately small HTTP/1.0 responder: GET /metrics and nothing else,
//! one request per connection, bounded reads with a timeout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Shared;
use super::report::{StatusView, WorkerView};
use crate::procfs::ProcFs;

/// A metric family: name, type, help, and how to get the value.
type Family<T> = (
    &'static str,
    &'static str,
    &'static str,
    fn(&T) -> Option<f64>,
);

/// Counts of actions: (app, action, reason kind, outcome) → n.
pub type ActionCounts = std::collections::BTreeMap<(String, String, String, String), u64>;

/// Thread stacks come from each worker's smaps, a walk of every mapping:
/// read at most this often however often the endpoint is scraped.
const STACKS_EVERY: Duration = Duration::from_secs(60);

/// One worker's thread stacks, summed as `inspect` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StackFigures {
    pub threads: usize,
    /// Threads (not the main one) with glibc's default-sized stack.
    pub default_stacks: usize,
    pub reserved_bytes: u64,
    pub resident_bytes: u64,
    /// Address space `inspect`'s recommendation would give back.
    pub saves_reserved_bytes: u64,
}

/// Stack figures by worker PID, and when they were read.
#[derive(Default)]
struct StackCache {
    read_at: Option<Instant>,
    by_pid: BTreeMap<u32, StackFigures>,
}

const REQUEST_MAX: usize = 8 << 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Label values as the format wants them: backslash, quote, newline escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }

    /// A sample of one worker, labelled with its app, PID and scope.
    fn worker_sample(&mut self, name: &str, app: &str, w: &WorkerView, value: f64) {
        let pid = w.pid.to_string();
        self.sample(
            name,
            &[("app", app), ("pid", &pid), ("scope", &w.scope)],
            value,
        );
    }
}

pub fn render(
    status: &StatusView,
    actions: &ActionCounts,
    stacks: &BTreeMap<u32, StackFigures>,
) -> String {
    let mut o = Out(String::new());
    let h = &status.host;
    let host = [
        ("memory_total_bytes", "Host MemTotal.", h.mem_total as f64),
        (
            "memory_available_bytes",
            "Host MemAvailable.",
            h.mem_available as f64,
        ),
        (
            "memory_utilisation_ratio",
            "1 - MemAvailable/MemTotal.",
            h.utilisation,
        ),
        (
            "memory_lower_bound_ratio",
            "Utilisation above which the biggest workers are recycled.",
            h.lower_bound,
        ),
        (
            "memory_upper_bound_ratio",
            "Utilisation above which the biggest workers are killed.",
            h.upper_bound,
        ),
        (
            "memory_pressure_some_avg10",
            "PSI memory some avg10 (percent).",
            h.psi_some_avg10,
        ),
        (
            "memory_pressure_full_avg10",
            "PSI memory full avg10 (percent).",
            h.psi_full_avg10,
        ),
    ];
    for (name, help, v) in host {
        let name = format!("adaptive_workers_host_{name}");
        o.family(&name, "gauge", help);
        o.sample(&name, &[], v);
    }
    o.family(
        "adaptive_workers_app_info",
        "gauge",
        "One per managed app; labels say what it is.",
    );
    for a in &status.apps {
        let mode = if a.mode == Some(crate::policy::Mode::Observe) {
            "observe"
        } else {
            "enforce"
        };
        o.sample(
            "adaptive_workers_app_info",
            &[
                ("app", &a.name),
                ("unit", &a.unit),
                ("server", &a.server),
                ("mode", mode),
            ],
            1.0,
        );
    }
    let per_app: [Family<super::report::AppView>; 8] = [
        (
            "adaptive_workers_app_workers",
            "gauge",
            "Workers under management.",
            |a| Some(a.workers.len() as f64),
        ),
        (
            "adaptive_workers_app_backlog_connections",
            "gauge",
            "Longest accept queue of the app's listening sockets.",
            |a| a.backlog.map(f64::from),
        ),
        (
            "adaptive_workers_app_backlog_max_connections",
            "gauge",
            "That socket's accept queue limit.",
            |a| a.backlog_max.map(f64::from),
        ),
        (
            "adaptive_workers_app_stopped_slots",
            "gauge",
            "Worker slots without a process (uWSGI cheap).",
            |a| Some(f64::from(a.stopped_slots)),
        ),
        (
            "adaptive_workers_app_soft_limit_bytes",
            "gauge",
            "Per-worker soft limit (scope MemoryHigh).",
            |a| a.soft_limit.map(|v| v as f64),
        ),
        (
            "adaptive_workers_app_hard_limit_bytes",
            "gauge",
            "Per-worker hard limit (scope MemoryMax).",
            |a| a.hard_limit.map(|v| v as f64),
        ),
        (
            "adaptive_workers_placements_total",
            "counter",
            "Workers placed in a scope.",
            |a| Some(a.counters.placed as f64),
        ),
        (
            "adaptive_workers_oom_kills_total",
            "counter",
            "Kernel OOM kills inside the app's worker scopes.",
            |a| Some(a.counters.oom_kills as f64),
        ),
    ];
    for (name, kind, help, get) in per_app {
        o.family(name, kind, help);
        for a in &status.apps {
            if let Some(v) = get(a) {
                o.sample(name, &[("app", &a.name)], v);
            }
        }
    }
    let per_worker: [Family<WorkerView>; 5] = [
        (
            "adaptive_workers_worker_private_bytes",
            "gauge",
            "The worker scope's memory.current: its private memory.",
            |w| w.private_bytes.map(|v| v as f64),
        ),
        (
            "adaptive_workers_worker_anon_bytes",
            "gauge",
            "Anonymous memory charged to the worker scope.",
            |w| w.anon_bytes.map(|v| v as f64),
        ),
        (
            "adaptive_workers_worker_file_bytes",
            "gauge",
            "Page cache charged to the worker scope.",
            |w| w.file_bytes.map(|v| v as f64),
        ),
        (
            "adaptive_workers_worker_frozen",
            "gauge",
            "1 while the worker's scope is frozen.",
            |w| Some(if w.state == "frozen" { 1.0 } else { 0.0 }),
        ),
        (
            "adaptive_workers_worker_memory_high_events_total",
            "counter",
            "Times the worker was throttled at its soft limit.",
            |w| Some(w.memory_high_events as f64),
        ),
    ];
    for (name, kind, help, get) in per_worker {
        o.family(name, kind, help);
        for a in &status.apps {
            for w in &a.workers {
                if let Some(v) = get(w) {
                    o.worker_sample(name, &a.name, w, v);
                }
            }
        }
    }
    let per_stack: [Family<StackFigures>; 5] = [
        (
            "adaptive_workers_worker_threads",
            "gauge",
            "Threads of the worker (stack figures are read at most once a minute).",
            |f| Some(f.threads as f64),
        ),
        (
            "adaptive_workers_worker_default_stacks",
            "gauge",
            "Threads, the main one aside, with glibc's default-sized stack (RLIMIT_STACK).",
            |f| Some(f.default_stacks as f64),
        ),
        (
            "adaptive_workers_worker_stack_reserved_bytes",
            "gauge",
            "Address space the worker's thread stacks reserve.",
            |f| Some(f.reserved_bytes as f64),
        ),
        (
            "adaptive_workers_worker_stack_resident_bytes",
            "gauge",
            "Resident memory of the worker's thread stacks.",
            |f| Some(f.resident_bytes as f64),
        ),
        (
            "adaptive_workers_worker_stack_saving_bytes",
            "gauge",
            "Address space smaller thread stacks would give back (see adaptive-workers inspect).",
            |f| Some(f.saves_reserved_bytes as f64),
        ),
    ];
    for (name, kind, help, get) in per_stack {
        o.family(name, kind, help);
        for a in &status.apps {
            for w in &a.workers {
                if let Some(v) = stacks.get(&w.pid).and_then(get) {
                    o.worker_sample(name, &a.name, w, v);
                }
            }
        }
    }
    o.family(
        "adaptive_workers_actions_total",
        "counter",
        "Decisions by action (recycle, kill, grow, shrink, freeze, thaw), reason and outcome (done, observed, failed).",
    );
    for ((app, action, reason, outcome), n) in actions {
        o.sample(
            "adaptive_workers_actions_total",
            &[
                ("app", app),
                ("action", action),
                ("reason", reason),
                ("outcome", outcome),
            ],
            *n as f64,
        );
    }
    o.0
}

/// Binds the endpoint and serves it in the background; returns the
/// address bound (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    procfs: ProcFs,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!("metrics on http://{addr}/metrics");
    let stacks = Arc::new(tokio::sync::Mutex::new(StackCache::default()));
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((sock, _)) => {
                    tokio::spawn(answer(sock, shared.clone(), procfs.clone(), stacks.clone()));
                }
                Err(e) => {
                    tracing::warn!("metrics: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(addr)
}

async fn read_request(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < REQUEST_MAX {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines().next().map(str::to_owned)
}

/// Every managed worker's stack figures, read again when older than
/// STACKS_EVERY (in a blocking thread: smaps walks are slow). A worker
/// that appeared since has none until the next read; one that is gone or
/// unreadable has none.
async fn stack_figures(
    procfs: &ProcFs,
    cache: &tokio::sync::Mutex<StackCache>,
    status: &StatusView,
) -> BTreeMap<u32, StackFigures> {
    let mut cache = cache.lock().await;
    if cache.read_at.is_some_and(|t| t.elapsed() < STACKS_EVERY) {
        return cache.by_pid.clone();
    }
    let pids: Vec<u32> = status
        .apps
        .iter()
        .flat_map(|a| a.workers.iter().map(|w| w.pid))
        .collect();
    let procfs = procfs.clone();
    let read = tokio::task::spawn_blocking(move || {
        pids.into_iter()
            .filter_map(|pid| {
                let p = crate::cli::inspect::inspect_process(&procfs, pid, "worker").ok()?;
                let figures = StackFigures {
                    threads: p.threads,
                    default_stacks: p.stacks.iter().filter(|s| s.default_sized).count(),
                    reserved_bytes: p.reserved_bytes,
                    resident_bytes: p.resident_bytes,
                    saves_reserved_bytes: p.recommendation.map_or(0, |r| r.saves_reserved_bytes),
                };
                Some((pid, figures))
            })
            .collect()
    })
    .await;
    cache.by_pid = read.unwrap_or_default();
    cache.read_at = Some(Instant::now());
    cache.by_pid.clone()
}

async fn answer(
    mut sock: TcpStream,
    shared: Arc<Mutex<Shared>>,
    procfs: ProcFs,
    stacks: Arc<tokio::sync::Mutex<StackCache>>,
) {
    let Ok(Some(line)) = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut sock)).await
    else {
        return;
    };
    let mut parts = line.split_whitespace();
    let (status, ctype, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => {
            let (status, actions) = {
                let s = shared.lock().unwrap_or_else(|e| e.into_inner());
                (s.status.clone(), s.actions.clone())
            };
            let stacks = stack_figures(&procfs, &stacks, &status).await;
            let body = render(&status, &actions, &stacks);
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        }
        (Some("GET"), Some(_)) => ("404 Not Found", "text/plain", "try /metrics\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics only\n".to_owned(),
        ),
    };
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::report::{AppView, WorkerView};

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
        assert!(text.contains("adaptive_workers_worker_frozen{app=\"sh\\\"op\",pid=\"42\",scope=\"aw-shop-42.scope\"} 1\n"));
        assert!(text.contains("adaptive_workers_actions_total{app=\"shop\",action=\"recycle\",reason=\"soft-limit\",outcome=\"done\"} 3\n"));
        assert!(text.contains("adaptive_workers_app_backlog_connections{app=\"sh\\\"op\"} 3\n"));
        assert!(text.contains("adaptive_workers_worker_default_stacks{app=\"sh\\\"op\",pid=\"42\",scope=\"aw-shop-42.scope\"} 49\n"), "{text}");
        assert!(text.contains("adaptive_workers_worker_stack_saving_bytes{app=\"sh\\\"op\",pid=\"42\",scope=\"aw-shop-42.scope\"} 404750336\n"), "{text}");
        // A worker without figures (not read yet, or gone) has no sample.
        let none = render(&view(), &actions, &BTreeMap::new());
        assert!(!none.contains("adaptive_workers_worker_threads{"), "{none}");
    }

    #[tokio::test]
    async fn stack_figures_are_read_from_proc_and_kept_a_minute() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let parked = std::thread::spawn(move || rx.recv().ok());
        let me = std::process::id();
        let mut status = view();
        status.apps[0].workers[0].pid = me;
        let cache = tokio::sync::Mutex::new(StackCache::default());
        let procfs = ProcFs::at("/proc");
        let first = stack_figures(&procfs, &cache, &status).await;
        let mine = first[&me];
        assert!(mine.threads >= 2, "{mine:?}");
        assert!(
            mine.reserved_bytes >= mine.resident_bytes && mine.resident_bytes > 0,
            "{mine:?}"
        );
        // Within the minute nothing is read again: not even a new worker.
        status.apps[0].workers[0].pid = 1;
        assert_eq!(stack_figures(&procfs, &cache, &status).await, first);
        // A worker that cannot be read has no figures.
        cache.lock().await.read_at = None;
        status.apps[0].workers[0].pid = u32::MAX;
        assert!(stack_figures(&procfs, &cache, &status).await.is_empty());
        tx.send(()).unwrap();
        parked.join().unwrap();
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
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(ok.contains("adaptive_workers_app_workers{app=\"sh\\\"op\"} 1"));
        assert!(get("/").await.starts_with("HTTP/1.0 404"));
    }
}
