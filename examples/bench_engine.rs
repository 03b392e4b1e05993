//! Time of one engine decision over 10,000 workers (20 apps × 500), with
//! host memory past the lower bound so every rule has work to do. Prints
//! figures; asserts nothing about speed.
//!
//!   cargo run --release --example bench_engine

use std::path::PathBuf;
use std::time::{Duration, Instant};

use adaptive_workers::engine::{self, AppSample, EngineState, HostSample, Snapshot, WorkerSample};
use adaptive_workers::policy::values::{ByteSize, Span};
use adaptive_workers::policy::{
    AppPolicy, GlobalPolicy, MemoryPolicy, Mode, Policy, ScalingPolicy, ServerKind, UwsgiSettings,
};

const APPS: usize = 20;
const PER_APP: usize = 500;

fn policy() -> Policy {
    let apps = (0..APPS)
        .map(|i| AppPolicy {
            name: format!("app{i}"),
            file: PathBuf::from(format!("/etc/adaptive-workers/policies.d/app{i}.toml")),
            unit: format!("app{i}.service"),
            server: ServerKind::Gunicorn,
            mode: Mode::Enforce,
            memory: MemoryPolicy {
                soft_limit: Some(ByteSize(400 << 20)),
                hard_limit: Some(ByteSize(600 << 20)),
                min_lifetime: Span(Duration::from_secs(10)),
            },
            uwsgi: UwsgiSettings::default(),
            generic: None,
            scaling: Some(ScalingPolicy::defaults(2, PER_APP as u32 + 10)),
        })
        .collect();
    Policy {
        global: GlobalPolicy::default(),
        apps,
    }
}

fn snapshot(now: Duration) -> Snapshot {
    // A cheap deterministic spread of sizes (xorshift).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let apps = (0..APPS)
        .map(|a| AppSample {
            name: format!("app{a}"),
            workers: (0..PER_APP)
                .map(|w| WorkerSample {
                    pid: (a * PER_APP + w + 100) as u32,
                    starttime: 1,
                    scope: format!("aw-app{a}-{}.scope", a * PER_APP + w + 100),
                    private_bytes: (50 << 20) + next() % (380 << 20),
                    age: Duration::from_secs(60 + next() % 3600),
                    frozen: false,
                    idle: Some(next() % 3 == 0),
                    connections: None,
                })
                .collect(),
            backlog: Some(engine::Backlog {
                queued: 0,
                max: 128,
            }),
            stopped_slots: 0,
            unsampled: 0,
            concurrency: None,
            paused: false,
            freeze_refused: None,
            no_master: false,
        })
        .collect();
    Snapshot {
        now,
        host: HostSample {
            mem_total: 256 << 30,
            mem_available: (256u64 << 30) / 10, // 90%: between the bounds
            psi_some_avg10: 1.0,
            psi_full_avg10: 0.0,
        },
        apps,
    }
}

fn main() {
    let policy = policy();
    let runs = 200;
    let mut times = Vec::with_capacity(runs);
    let mut decisions = 0;
    for i in 0..runs {
        // A fresh state each time: the worst case, nothing pending yet.
        let mut state = EngineState::default();
        let snap = snapshot(Duration::from_secs(100 + i as u64));
        let t = Instant::now();
        decisions = engine::decide(&policy, &snap, &mut state).len();
        times.push(t.elapsed());
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / runs as u32;
    println!(
        "engine: one decision over {} workers ({APPS} apps)",
        APPS * PER_APP
    );
    println!("  decisions returned: {decisions}");
    println!(
        "  mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms ({runs} runs)",
        mean.as_secs_f64() * 1e3,
        times[runs / 2].as_secs_f64() * 1e3,
        times[runs * 99 / 100].as_secs_f64() * 1e3
    );
}
