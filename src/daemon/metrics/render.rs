//! The text exposition format 0.0.4 of the daemon's state: one helper per
//! group of families, in the order the endpoint has always written them
//! (`golden.prom` pins the output).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{ActionCounts, StackFigures};
use crate::wire::{AppView, HostView, StatusView, WorkerView};

/// A metric family: name, type, help, and how to get the value.
type Family<T> = (
    &'static str,
    &'static str,
    &'static str,
    fn(&T) -> Option<f64>,
);

/// Label values as the format wants them: backslash, quote, newline escaped.
fn push_escaped(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        for (i, (k, v)) in labels.iter().enumerate() {
            self.0.push(if i == 0 { '{' } else { ',' });
            self.0.push_str(k);
            self.0.push_str("=\"");
            push_escaped(&mut self.0, v);
            self.0.push('"');
        }
        if !labels.is_empty() {
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
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

/// The whole page: the state `status` shows, the action counters, and the
/// stack figures of the workers that have some.
pub fn render(
    status: &StatusView,
    actions: &ActionCounts,
    stacks: &BTreeMap<u32, StackFigures>,
) -> String {
    let workers: usize = status.apps.iter().map(|a| a.workers.len()).sum();
    // About 2 KiB of samples per worker, 1 KiB per app, and the headers.
    let mut o = Out(String::with_capacity(
        8192 + 2048 * workers + 1024 * status.apps.len(),
    ));
    host(&mut o, &status.host);
    app_info(&mut o, &status.apps);
    per_app(&mut o, &status.apps);
    per_worker(&mut o, &status.apps);
    per_stack(&mut o, &status.apps, stacks);
    actions_total(&mut o, actions);
    o.0
}

fn host(o: &mut Out, h: &HostView) {
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
}

fn app_info(o: &mut Out, apps: &[AppView]) {
    o.family(
        "adaptive_workers_app_info",
        "gauge",
        "One per managed app; labels say what it is.",
    );
    for a in apps {
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
}

fn per_app(o: &mut Out, apps: &[AppView]) {
    let per_app: [Family<AppView>; 9] = [
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
            "adaptive_workers_app_held_connections",
            "gauge",
            "Client connections the app's workers hold, when the worker count follows them.",
            |a| {
                a.held_connections()
                    .filter(|_| !a.workers.is_empty())
                    .map(f64::from)
            },
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
        for a in apps {
            if let Some(v) = get(a) {
                o.sample(name, &[("app", &a.name)], v);
            }
        }
    }
}

fn per_worker(o: &mut Out, apps: &[AppView]) {
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
        for a in apps {
            for w in &a.workers {
                if let Some(v) = get(w) {
                    o.worker_sample(name, &a.name, w, v);
                }
            }
        }
    }
}

fn per_stack(o: &mut Out, apps: &[AppView], stacks: &BTreeMap<u32, StackFigures>) {
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
        for a in apps {
            for w in &a.workers {
                if let Some(v) = stacks.get(&w.pid).and_then(get) {
                    o.worker_sample(name, &a.name, w, v);
                }
            }
        }
    }
}

fn actions_total(o: &mut Out, actions: &ActionCounts) {
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
}
