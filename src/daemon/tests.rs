//! The daemon's steps on a fake host: fake /proc and cgroup trees, the
//! fake systemd (which moves PIDs between fake cgroups like PID 1 would)
//! and a signaller that records instead of signalling. PIDs are above the
//! kernel's maximum (4194304), so no real process can ever be hit.

use std::fs;
use std::path::Path;

use tempfile::TempDir;

use super::Daemon;
use super::signal::RecordingSignaller;
use crate::cgroup::CgroupFs;
use crate::paths::HostPaths;
use crate::policy::{self, Policy};
use crate::systemd::fake::FakeSystemd;

const MASTER: u32 = 5_000_000;
/// In the app's service, not the master's child: never a worker.
const STRANGER: u32 = MASTER + 10_000;
const MB: u64 = 1 << 20;

struct Host {
    dir: TempDir,
}

impl Host {
    fn new(util: f64) -> Self {
        let h = Host {
            dir: TempDir::new().unwrap(),
        };
        h.set_memory(util);
        h.write("/proc/pressure/memory", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
        h
    }

    fn paths(&self) -> HostPaths {
        HostPaths::new(self.dir.path())
    }

    fn write(&self, host_path: &str, text: &str) {
        let p = self.paths().resolve(host_path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// Host memory: 8 GB total, `util` of it used.
    fn set_memory(&self, util: f64) {
        let total_kb = 8 * 1024 * 1024;
        let avail_kb = ((1.0 - util) * total_kb as f64) as u64;
        self.write(
            "/proc/meminfo",
            &format!(
                "MemTotal: {total_kb} kB\nMemFree: {avail_kb} kB\nMemAvailable: {avail_kb} kB\nBuffers: 0 kB\nCached: 0 kB\nShmem: 0 kB\nAnonPages: 0 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
            ),
        );
    }

    /// A process in /proc, started at boot (so it is old enough for any
    /// minimum lifetime).
    fn process(&self, pid: u32, ppid: u32, cgroup: &str) {
        self.process_started(pid, ppid, cgroup, 1);
    }

    /// A process that started just now, and stays that young however slow
    /// the test (its start time is an hour ahead).
    fn young_process(&self, pid: u32, ppid: u32, cgroup: &str) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let ticks = rustix::param::clock_ticks_per_second();
        self.process_started(pid, ppid, cgroup, (now.tv_sec as u64 + 3600) * ticks);
    }

    /// A process that started `starttime` clock ticks after boot.
    fn process_started(&self, pid: u32, ppid: u32, cgroup: &str, starttime: u64) {
        let mut stat = format!(
            "{pid} (uwsgi) S {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {starttime} 1000000 100"
        );
        stat.extend(std::iter::repeat_n(" 0", 28));
        self.write(&format!("/proc/{pid}/stat"), &stat);
        self.write(&format!("/proc/{pid}/cgroup"), &format!("0::{cgroup}\n"));
    }

    fn exit(&self, pid: u32) {
        fs::remove_dir_all(self.paths().resolve(format!("/proc/{pid}"))).unwrap();
    }

    /// The memory files of a worker scope, as the kernel would show them.
    fn scope_memory(&self, cgroup: &str, bytes: u64) {
        let dir = format!("/sys/fs/cgroup{cgroup}");
        self.write(&format!("{dir}/memory.current"), &format!("{bytes}\n"));
        self.write(
            &format!("{dir}/memory.stat"),
            &format!("anon {bytes}\nfile 0\nshmem 0\n"),
        );
        self.write(
            &format!("{dir}/memory.events"),
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        );
        self.write(&format!("{dir}/memory.pressure"), "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
    }

    fn policy(&self, name: &str, text: &str) -> Policy {
        self.write(
            &format!("/etc/adaptive-workers/policies.d/{name}.toml"),
            text,
        );
        let p = self
            .paths()
            .resolve(format!("/etc/adaptive-workers/policies.d/{name}.toml"));
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
        policy::load(&self.paths()).unwrap()
    }

    fn daemon(&self, policy: Policy) -> Daemon<FakeSystemd, RecordingSignaller> {
        let cg = self.paths().cgroup();
        Daemon::new(
            self.paths(),
            CgroupFs::new_unchecked(&cg),
            FakeSystemd::new(&cg),
            RecordingSignaller::default(),
            policy,
        )
    }

    fn procs(&self, cgroup: &str) -> String {
        fs::read_to_string(
            Path::new(&self.paths().cgroup())
                .join(cgroup.trim_start_matches('/'))
                .join("cgroup.procs"),
        )
        .unwrap_or_default()
    }
}

type TestDaemon = Daemon<FakeSystemd, RecordingSignaller>;

mod connections;
mod faults;

/// The full step (1 Hz), then the answers for the scopes it started, as
/// the loop takes them when systemd sends them.
async fn full_tick(d: &mut TestDaemon) {
    d.worker_tick().await;
    d.settle().await;
}

/// The fast step (10 Hz), and the same.
async fn fast_tick(d: &mut TestDaemon) {
    d.host_tick().await;
    d.settle().await;
}

/// The master forked: the proc connector's event, and the same.
async fn fork_event(d: &mut TestDaemon) {
    d.on_fork(MASTER).await;
    d.settle().await;
}

const SHOP: &str = "unit = \"shop.service\"\nserver = \"uwsgi\"\n[memory]\nsoft_limit = \"300M\"\nhard_limit = \"400M\"\nmin_lifetime = \"0\"\n";

/// A uWSGI-like app: a master and `n` workers in the service cgroup, plus
/// one process in the service that is not the master's child.
fn shop(h: &Host, d: &Daemon<FakeSystemd, RecordingSignaller>, n: u32) -> Vec<u32> {
    let workers: Vec<u32> = (1..=n).map(|i| MASTER + i).collect();
    let mut procs = vec![MASTER, STRANGER];
    procs.extend(&workers);
    let cg = d
        .systemd
        .add_service("shop.service", MASTER, &procs)
        .unwrap();
    h.process(MASTER, 1, &cg);
    h.process(STRANGER, 1, &cg);
    for w in &workers {
        h.process(*w, MASTER, &cg);
    }
    workers
}

/// The master forks a new worker: it appears in the service cgroup.
fn respawned(h: &Host, new: u32) {
    fs::write(
        h.paths()
            .cgroup()
            .join("system.slice/shop.service/cgroup.procs"),
        format!("{MASTER}\n{STRANGER}\n{new}\n"),
    )
    .unwrap();
    h.process(new, MASTER, "/system.slice/shop.service");
}

fn scope_cgroup(pid: u32) -> String {
    format!("/aw.slice/aw-shop.slice/aw-shop-{pid}.scope")
}

#[tokio::test]
async fn every_worker_gets_its_own_scope_with_the_policy_limits() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 3);
    full_tick(&mut d).await;
    assert_eq!(d.apps["shop"].workers.len(), 3);
    for w in &workers {
        let cg = scope_cgroup(*w);
        assert_eq!(h.procs(&cg).trim(), w.to_string());
        let dir = h.paths().cgroup().join(cg.trim_start_matches('/'));
        assert_eq!(
            fs::read_to_string(dir.join("memory.high")).unwrap(),
            (300 * MB).to_string()
        );
        assert_eq!(
            fs::read_to_string(dir.join("memory.max")).unwrap(),
            (400 * MB).to_string()
        );
    }
    // The master and the stranger stay in the service.
    assert_eq!(
        h.procs("/system.slice/shop.service"),
        format!("{MASTER}\n{STRANGER}\n")
    );
    // A respawned worker is placed on the next fast tick.
    let new = MASTER + 10;
    respawned(&h, new);
    fast_tick(&mut d).await;
    assert!(d.apps["shop"].workers.contains_key(&new));
    assert_eq!(h.procs(&scope_cgroup(new)).trim(), new.to_string());
}

#[tokio::test]
async fn soft_limit_sends_uwsgi_sighup_to_that_worker_only() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 3);
    full_tick(&mut d).await;
    h.scope_memory(&scope_cgroup(workers[0]), 100 * MB);
    h.scope_memory(&scope_cgroup(workers[1]), 350 * MB);
    h.scope_memory(&scope_cgroup(workers[2]), 200 * MB);
    full_tick(&mut d).await;
    let sent = d.signaller.sent.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![(workers[1], scope_cgroup(workers[1]), libc::SIGHUP)]
    );
    let events = d.shared.lock().unwrap().events.recent(10);
    let e = events.iter().find(|e| e.action == "recycle").unwrap();
    assert_eq!(e.worker_pid, Some(workers[1]));
    assert!(
        e.reason.contains("above the soft limit 300M"),
        "{}",
        e.reason
    );
    assert_eq!(e.outcome, "done");
    assert_eq!(d.apps["shop"].counters.recycles, 1);
    // Not asked again while it finishes its request.
    full_tick(&mut d).await;
    assert_eq!(d.signaller.sent.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn observe_mode_places_without_limits_and_acts_on_nothing() {
    let h = Host::new(0.97);
    let observe = "unit = \"shop.service\"\nserver = \"uwsgi\"\nmode = \"observe\"\n[memory]\nsoft_limit = \"300M\"\nhard_limit = \"400M\"\nmin_lifetime = \"0\"\n";
    let mut d = h.daemon(h.policy("shop", observe));
    let workers = shop(&h, &d, 2);
    full_tick(&mut d).await;
    let dir = h
        .paths()
        .cgroup()
        .join(scope_cgroup(workers[0]).trim_start_matches('/'));
    assert_eq!(fs::read_to_string(dir.join("memory.max")).unwrap(), "max");
    for w in &workers {
        h.scope_memory(&scope_cgroup(*w), 500 * MB);
    }
    full_tick(&mut d).await;
    assert!(d.signaller.sent.lock().unwrap().is_empty());
    assert!(!d.systemd.calls().iter().any(|c| c.starts_with("kill")));
    let events = d.shared.lock().unwrap().events.recent(10);
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e.outcome == "observed"), "{events:?}");
}

#[tokio::test]
async fn above_the_upper_bound_the_biggest_scope_is_killed_through_systemd() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 3);
    full_tick(&mut d).await;
    h.scope_memory(&scope_cgroup(workers[0]), 100 * MB);
    h.scope_memory(&scope_cgroup(workers[1]), 250 * MB);
    h.scope_memory(&scope_cgroup(workers[2]), 200 * MB);
    full_tick(&mut d).await;
    // 8 GB at 95.4%: back to the midpoint of the bounds (90%) needs 442M,
    // which the two biggest (250M + 200M) free; the third is spared.
    h.set_memory(0.954);
    fast_tick(&mut d).await;
    let kills = calls_of(&d, "kill");
    assert_eq!(
        kills,
        vec![
            format!("kill aw-shop-{}.scope all 9", workers[1]),
            format!("kill aw-shop-{}.scope all 9", workers[2])
        ]
    );
    assert_eq!(d.apps["shop"].counters.kills, 2);
    assert!(
        d.signaller.sent.lock().unwrap().is_empty(),
        "kills never go through bare PIDs"
    );
}

#[tokio::test]
async fn a_restarted_daemon_adopts_scopes_and_creates_none() {
    let h = Host::new(0.3);
    let policy = h.policy("shop", SHOP);
    let mut first = h.daemon(policy.clone());
    let workers = shop(&h, &first, 2);
    full_tick(&mut first).await;
    let scopes = first.systemd.state.lock().unwrap().scopes.clone();

    let mut second = h.daemon(policy);
    second.systemd.state.lock().unwrap().services =
        first.systemd.state.lock().unwrap().services.clone();
    second.systemd.state.lock().unwrap().scopes = scopes;
    full_tick(&mut second).await;
    assert_eq!(second.apps["shop"].workers.len(), 2);
    assert!(second.apps["shop"].workers.values().all(|w| w.adopted));
    assert!(
        !second
            .systemd
            .calls()
            .iter()
            .any(|c| c.starts_with("start")),
        "{:?}",
        second.systemd.calls()
    );
    assert_eq!(second.apps["shop"].counters.adopted, 2);
    let mut adopted: Vec<u32> = second.apps["shop"].workers.keys().copied().collect();
    adopted.sort_unstable();
    assert_eq!(adopted, workers);
}

#[tokio::test]
async fn reload_with_new_limits_updates_existing_scopes() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 1);
    full_tick(&mut d).await;
    d.set_policy(h.policy("shop", &SHOP.replace("400M", "500M")));
    full_tick(&mut d).await;
    let dir = h
        .paths()
        .cgroup()
        .join(scope_cgroup(workers[0]).trim_start_matches('/'));
    assert_eq!(
        fs::read_to_string(dir.join("memory.max")).unwrap(),
        (500 * MB).to_string()
    );
}

#[tokio::test]
async fn a_worker_whose_scope_vanished_is_forgotten() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 2);
    full_tick(&mut d).await;
    for w in &workers {
        h.scope_memory(&scope_cgroup(*w), 10 * MB);
    }
    fs::remove_dir_all(
        h.paths()
            .cgroup()
            .join(scope_cgroup(workers[0]).trim_start_matches('/')),
    )
    .unwrap();
    h.exit(workers[0]);
    full_tick(&mut d).await;
    assert_eq!(
        d.apps["shop"].workers.keys().copied().collect::<Vec<_>>(),
        vec![workers[1]]
    );
}

#[tokio::test]
async fn failed_placement_is_retried_later_not_in_a_loop() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    shop(&h, &d, 1);
    d.systemd.state.lock().unwrap().fail_next_start = Some("failed".into());
    full_tick(&mut d).await;
    assert!(d.apps["shop"].workers.is_empty());
    assert_eq!(d.apps["shop"].counters.placement_failures, 1);
    for _ in 0..5 {
        fast_tick(&mut d).await;
    }
    let starts = starts(&d);
    assert_eq!(starts, 1, "no retry before the back-off");
}

#[tokio::test]
async fn unreadable_meminfo_means_no_decision() {
    let h = Host::new(0.99);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 2);
    full_tick(&mut d).await;
    for w in &workers {
        h.scope_memory(&scope_cgroup(*w), 350 * MB);
    }
    h.write("/proc/meminfo", "garbage\n");
    full_tick(&mut d).await;
    fast_tick(&mut d).await;
    assert!(d.signaller.sent.lock().unwrap().is_empty());
    assert!(!d.systemd.calls().iter().any(|c| c.starts_with("kill")));
}

#[tokio::test]
async fn status_view_shows_workers_and_limits() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 2);
    full_tick(&mut d).await;
    h.scope_memory(&scope_cgroup(workers[0]), 123 * MB);
    full_tick(&mut d).await;
    let view = d.shared.lock().unwrap().status.clone();
    assert_eq!(view.apps.len(), 1);
    let app = &view.apps[0];
    assert_eq!(app.master_pid, Some(MASTER));
    assert_eq!(app.soft_limit, Some(300 * MB));
    let w = app.workers.iter().find(|w| w.pid == workers[0]).unwrap();
    assert_eq!(w.private_bytes, Some(123 * MB));
    assert_eq!(w.scope, format!("aw-shop-{}.scope", workers[0]));
    assert!(
        d.status_line()
            .starts_with("1 apps, 2 workers, host memory 30%"),
        "{}",
        d.status_line()
    );
}

#[tokio::test]
async fn a_building_backlog_makes_gunicorn_grow_through_systemd() {
    use crate::backlog::{ListenAddr, Listener};
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy(
        "blog",
        "unit = \"blog.service\"\nserver = \"gunicorn\"\n[scaling]\nmin_workers = 2\nmax_workers = 4\ngrow_backlog = 3\ncooldown_up = \"0\"\n",
    ));
    let workers: Vec<u32> = vec![MASTER + 1, MASTER + 2];
    let cg = d
        .systemd
        .add_service("blog.service", MASTER, &[MASTER, workers[0], workers[1]])
        .unwrap();
    h.process(MASTER, 1, &cg);
    for w in &workers {
        h.process(*w, MASTER, &cg);
    }
    // The arbiter holds the listening socket (inode 777) and a client one.
    let fd_dir = h.paths().resolve(format!("/proc/{MASTER}/fd"));
    fs::create_dir_all(&fd_dir).unwrap();
    std::os::unix::fs::symlink("socket:[777]", fd_dir.join("3")).unwrap();
    std::os::unix::fs::symlink("socket:[778]", fd_dir.join("4")).unwrap();
    let listener = |queue| Listener {
        inode: 777,
        addr: ListenAddr::Tcp("127.0.0.1:8002".parse().unwrap()),
        queue,
        max: 128,
    };
    let other = Listener {
        inode: 999,
        addr: ListenAddr::Tcp("127.0.0.1:22".parse().unwrap()),
        queue: 50,
        max: 128,
    };
    d.listeners = Some(Box::new(vec![listener(0), other.clone()]));
    full_tick(&mut d).await;
    assert_eq!(
        d.apps["blog"].listen_inodes,
        vec![777],
        "only the arbiter's listener"
    );
    assert!(!d.systemd.calls().iter().any(|c| c.contains("main")));

    d.listeners = Some(Box::new(vec![listener(5), other]));
    fast_tick(&mut d).await;
    assert_eq!(d.apps["blog"].backlog.map(|b| b.queued), Some(5));
    let grows: Vec<String> = d
        .systemd
        .calls()
        .into_iter()
        .filter(|c| c.contains("main"))
        .collect();
    assert_eq!(
        grows,
        vec![format!("kill blog.service main {}", libc::SIGTTIN)]
    );
    assert_eq!(d.apps["blog"].counters.grows, 1);
}

#[tokio::test]
async fn an_operator_can_recycle_a_managed_worker_and_nothing_else() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 2);
    full_tick(&mut d).await;
    let msg = d.recycle_worker(workers[0]).await.unwrap();
    assert!(
        msg.contains(&format!("recycling worker {}", workers[0])),
        "{msg}"
    );
    assert_eq!(
        d.signaller.sent.lock().unwrap().clone(),
        vec![(workers[0], scope_cgroup(workers[0]), libc::SIGHUP)]
    );
    // Not twice, not the master, not a stranger.
    assert!(
        d.recycle_worker(workers[0])
            .await
            .unwrap_err()
            .contains("already")
    );
    assert!(
        d.recycle_worker(MASTER)
            .await
            .unwrap_err()
            .contains("not a managed worker")
    );
    assert!(
        d.recycle_worker(STRANGER)
            .await
            .unwrap_err()
            .contains("not a managed worker")
    );
    assert_eq!(d.signaller.sent.lock().unwrap().len(), 1);
    let counts = d.shared.lock().unwrap().actions.clone();
    assert_eq!(
        counts.get(&(
            "shop".into(),
            "recycle".into(),
            "operator".into(),
            "done".into()
        )),
        Some(&1)
    );
}

#[tokio::test]
async fn a_paused_app_is_only_observed() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 2);
    full_tick(&mut d).await;
    d.pause("shop", true).unwrap();
    assert!(d.pause("nope", true).is_err());
    h.scope_memory(&scope_cgroup(workers[0]), 350 * MB);
    full_tick(&mut d).await;
    assert!(d.signaller.sent.lock().unwrap().is_empty());
    assert!(d.shared.lock().unwrap().status.apps[0].paused);
    let events = d.shared.lock().unwrap().events.recent(5);
    assert_eq!(events.last().map(|e| e.outcome.as_str()), Some("observed"));
    // Limits stay on the scopes while paused.
    let dir = h
        .paths()
        .cgroup()
        .join(scope_cgroup(workers[0]).trim_start_matches('/'));
    assert_eq!(
        fs::read_to_string(dir.join("memory.max")).unwrap(),
        (400 * MB).to_string()
    );
    d.pause("shop", false).unwrap();
    // Resumed: the decision is taken again and carried out, for the
    // biggest first (one at a time for two workers).
    h.scope_memory(&scope_cgroup(workers[1]), 360 * MB);
    full_tick(&mut d).await;
    let sent = d.signaller.sent.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![(workers[1], scope_cgroup(workers[1]), libc::SIGHUP)]
    );
}

#[tokio::test]
async fn many_workers_are_placed_with_bounded_calls_in_flight() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    shop(&h, &d, 200);
    let at_once = super::discover::PLACE_AT_ONCE;
    d.worker_tick().await;
    // The step started as many scopes as may be under way, and waits for
    // none of them: the loop (its host tick and its watchdog) goes on
    // while systemd works.
    assert_eq!(d.apps["shop"].placing.len(), at_once);
    assert!(d.apps["shop"].workers.is_empty());
    // With those under way, a tick starts no more.
    d.host_tick().await;
    assert_eq!(d.apps["shop"].placing.len(), at_once);
    assert_eq!(starts(&d), 0);
    // As the answers come, the fast ticks start the next ones.
    let mut ticks = 0;
    while d.apps["shop"].workers.len() < 200 && ticks < 100 {
        fast_tick(&mut d).await;
        ticks += 1;
    }
    assert_eq!(d.apps["shop"].workers.len(), 200);
    assert_eq!(
        ticks,
        200usize.div_ceil(at_once),
        "200 workers, {at_once} at a time"
    );
    assert!(d.apps["shop"].placing.is_empty());
    assert_eq!(starts(&d), 200, "each placed once");
    let max = d.systemd.state.lock().unwrap().max_in_flight;
    assert!(max > 1, "placements run concurrently ({max})");
    assert!(
        max <= at_once,
        "{max} StartTransientUnit calls in flight at once"
    );
}

#[tokio::test]
async fn only_as_many_children_as_can_be_placed_are_looked_at() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 200);
    let at_once = super::discover::PLACE_AT_ONCE;
    d.worker_tick().await;
    assert_eq!(d.apps["shop"].placing.len(), at_once);
    // 192 children wait in the service; a look for 3 reads 3 of them,
    // none of those under way.
    let some = d.candidates("shop", 3);
    assert_eq!(some.len(), 3);
    assert!(
        some.iter()
            .all(|s| !d.apps["shop"].placing.contains(&s.pid))
    );
    assert!(some.iter().all(|s| workers.contains(&s.pid)));
    assert_eq!(d.candidates("shop", usize::MAX).len(), 200 - at_once);
    // A look with no room left reads nothing.
    assert!(d.candidates("shop", 0).is_empty());
}

#[tokio::test]
async fn a_scope_made_before_its_answer_came_is_placed_not_adopted() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 1);
    d.worker_tick().await;
    assert_eq!(d.apps["shop"].placing.len(), 1);
    // systemd has made the scope and moved the worker; its answer is on
    // the way when the next full step looks at the slice.
    let cgroup = scope_cgroup(workers[0]);
    h.write(
        &format!("/sys/fs/cgroup{cgroup}/cgroup.procs"),
        &format!("{}\n", workers[0]),
    );
    h.process(workers[0], MASTER, &cgroup);
    d.worker_tick().await;
    assert_eq!(
        d.apps["shop"].counters.adopted, 0,
        "adopted while being placed"
    );
    assert!(d.apps["shop"].workers.is_empty());
    d.settle().await;
    assert_eq!(d.apps["shop"].counters.placed, 1);
    assert_eq!(starts(&d), 1);
}

#[tokio::test]
async fn memory_current_is_read_at_every_step_the_other_files_in_turn() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 1);
    full_tick(&mut d).await;
    let cgroup = scope_cgroup(workers[0]);
    let memory = |d: &TestDaemon| {
        let m = d.apps["shop"].workers[&workers[0]].memory.clone().unwrap();
        (m.current, m.anon)
    };
    h.scope_memory(&cgroup, 10 * MB);
    full_tick(&mut d).await;
    assert_eq!(memory(&d), (10 * MB, 10 * MB), "a new worker: every file");
    h.scope_memory(&cgroup, 20 * MB);
    let mut steps = 0;
    while memory(&d).1 != 20 * MB {
        full_tick(&mut d).await;
        assert_eq!(memory(&d).0, 20 * MB, "memory.current at every step");
        steps += 1;
        assert!(steps <= super::sense::DETAIL_EVERY, "memory.stat not read");
    }
    // Read just now: not again at the next step.
    h.scope_memory(&cgroup, 30 * MB);
    full_tick(&mut d).await;
    assert_eq!(memory(&d), (30 * MB, 20 * MB));
}

/// A uWSGI app that scales down by freezing, with its ini at
/// /etc/uwsgi/scale.ini; returns the daemon after two quiet ticks.
async fn quiet_freezing_app(ini: &str) -> (Host, Daemon<FakeSystemd, RecordingSignaller>) {
    use crate::backlog::{ListenAddr, Listener};
    let h = Host::new(0.3);
    h.write("/etc/uwsgi/scale.ini", ini);
    let mut d = h.daemon(h.policy(
        "scale",
        "unit = \"scale.service\"\nserver = \"uwsgi\"\n[uwsgi]\nini = \"/etc/uwsgi/scale.ini\"\nmaster_fifo = \"/run/scale/fifo\"\n[scaling]\nmin_workers = 1\nmax_workers = 4\nspare_idle = 0\ncooldown_down = \"0\"\nscale_down = \"freeze\"\n",
    ));
    let workers = [MASTER + 1, MASTER + 2];
    let cg = d
        .systemd
        .add_service("scale.service", MASTER, &[MASTER, workers[0], workers[1]])
        .unwrap();
    h.process(MASTER, 1, &cg);
    h.write(
        &format!("/proc/{MASTER}/cmdline"),
        "uwsgi\0--ini\0/etc/uwsgi/scale.ini\0",
    );
    let fd_dir = h.paths().resolve(format!("/proc/{MASTER}/fd"));
    fs::create_dir_all(&fd_dir).unwrap();
    std::os::unix::fs::symlink("socket:[777]", fd_dir.join("3")).unwrap();
    for w in workers {
        h.process(w, MASTER, &cg);
        // Idle: blocked in epoll_wait.
        h.write(
            &format!("/proc/{w}/syscall"),
            "232 0x4 0x7ffc 0x1 0xffffffff 0x0 0x0 0x7ffc 0x7f5a\n",
        );
        h.scope_memory(&scope_cgroup_of("scale", w), 10 * MB);
    }
    d.listeners = Some(Box::new(vec![Listener {
        inode: 777,
        addr: ListenAddr::Tcp("127.0.0.1:8003".parse().unwrap()),
        queue: 0,
        max: 128,
    }]));
    full_tick(&mut d).await;
    for w in workers {
        h.scope_memory(&scope_cgroup_of("scale", w), 10 * MB);
    }
    full_tick(&mut d).await;
    full_tick(&mut d).await;
    (h, d)
}

fn scope_cgroup_of(app: &str, pid: u32) -> String {
    format!("/aw.slice/aw-{app}.slice/aw-{app}-{pid}.scope")
}

#[tokio::test]
async fn thunder_lock_means_stop_not_freeze() {
    let (_h, d) = quiet_freezing_app("[uwsgi]\nmaster = true\nthunder-lock = true\n").await;
    let why = d.apps["scale"]
        .freeze_refused
        .clone()
        .expect("freeze refused");
    assert!(why.contains("thunder-lock"), "{why}");
    assert!(
        !d.systemd.calls().iter().any(|c| c.starts_with("freeze")),
        "{:?}",
        d.systemd.calls()
    );
    let events = d.shared.lock().unwrap().events.recent(10);
    assert!(events.iter().any(|e| e.action == "shrink"), "{events:?}");
    let view = d.shared.lock().unwrap().status.clone();
    assert!(
        view.apps[0]
            .freeze_refused
            .as_deref()
            .is_some_and(|w| w.contains("thunder-lock"))
    );
}

#[tokio::test]
async fn without_thunder_lock_idle_workers_are_frozen() {
    let (_h, d) = quiet_freezing_app("[uwsgi]\nmaster = true\n").await;
    assert_eq!(d.apps["scale"].freeze_refused, None);
    assert!(
        d.systemd
            .calls()
            .iter()
            .any(|c| c.starts_with("freeze aw-scale-")),
        "{:?}",
        d.systemd.calls()
    );
}

#[tokio::test]
async fn a_recycled_worker_loses_its_memory_high_but_keeps_memory_max() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 2);
    full_tick(&mut d).await;
    h.scope_memory(&scope_cgroup(workers[0]), 350 * MB);
    h.scope_memory(&scope_cgroup(workers[1]), 10 * MB);
    full_tick(&mut d).await;
    let dir = |pid: u32| {
        h.paths()
            .cgroup()
            .join(scope_cgroup(pid).trim_start_matches('/'))
    };
    assert_eq!(
        fs::read_to_string(dir(workers[0]).join("memory.high")).unwrap(),
        "max"
    );
    assert_eq!(
        fs::read_to_string(dir(workers[0]).join("memory.max")).unwrap(),
        (400 * MB).to_string()
    );
    // The others keep the soft limit as their brake.
    assert_eq!(
        fs::read_to_string(dir(workers[1]).join("memory.high")).unwrap(),
        (300 * MB).to_string()
    );
    // Through systemd, for that scope only.
    let lifts = calls_of(&d, "limits ");
    assert_eq!(
        lifts,
        vec![format!(
            "limits aw-shop-{}.scope max {}",
            workers[0],
            400 * MB
        )]
    );
    assert_eq!(d.signaller.sent.lock().unwrap().len(), 1);
}

/// A child of the master appears in the service cgroup.
fn fork(h: &Host, pid: u32, young: bool) {
    let procs = h
        .paths()
        .cgroup()
        .join("system.slice/shop.service/cgroup.procs");
    let mut text = fs::read_to_string(&procs).unwrap();
    text.push_str(&format!("{pid}\n"));
    fs::write(&procs, text).unwrap();
    match young {
        true => h.young_process(pid, MASTER, "/system.slice/shop.service"),
        false => h.process(pid, MASTER, "/system.slice/shop.service"),
    }
}

/// The fake systemd's calls so far that start with `prefix`.
fn calls_of(d: &Daemon<FakeSystemd, RecordingSignaller>, prefix: &str) -> Vec<String> {
    d.systemd
        .calls()
        .into_iter()
        .filter(|c| c.starts_with(prefix))
        .collect()
}

fn starts(d: &Daemon<FakeSystemd, RecordingSignaller>) -> usize {
    calls_of(d, "start").len()
}

#[tokio::test]
async fn workers_that_die_right_after_placement_hold_back_placement() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    shop(&h, &d, 0);
    full_tick(&mut d).await;
    // A worker that cannot live: placed, dead within a second, respawned.
    for i in 0..super::backoff::STREAK {
        let pid = MASTER + 10 + i;
        fork(&h, pid, true);
        fork_event(&mut d).await;
        assert!(d.apps["shop"].workers.contains_key(&pid), "placed at once");
        h.exit(pid);
        d.on_exit(pid);
    }
    assert_eq!(starts(&d), 5);
    assert_eq!(
        d.apps["shop"].young.delay,
        std::time::Duration::from_secs(1)
    );
    // The next young one waits: no call to systemd for it, however often
    // the daemon looks.
    fork(&h, MASTER + 20, true);
    fork_event(&mut d).await;
    for _ in 0..10 {
        fast_tick(&mut d).await;
    }
    assert_eq!(starts(&d), 5, "{:?}", d.systemd.calls());
    assert!(!d.apps["shop"].workers.contains_key(&(MASTER + 20)));
    // One that has lived the delay is placed.
    fork(&h, MASTER + 21, false);
    fast_tick(&mut d).await;
    assert_eq!(starts(&d), 6);
    // Once it has lived long in its scope, new workers are placed at once.
    let w = d
        .apps
        .get_mut("shop")
        .unwrap()
        .workers
        .get_mut(&(MASTER + 21))
        .unwrap();
    w.placed_at = w.placed_at.checked_sub(super::backoff::STABLE).unwrap();
    let since = d.apps["shop"].young.since.unwrap();
    d.apps.get_mut("shop").unwrap().young.since = since.checked_sub(super::backoff::STABLE * 2);
    full_tick(&mut d).await;
    assert!(d.apps["shop"].young.delay.is_zero());
    assert!(d.apps["shop"].workers.contains_key(&(MASTER + 20)));
    assert_eq!(starts(&d), 7);
}

#[tokio::test]
async fn workers_the_daemon_recycled_are_not_young_deaths() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 6);
    full_tick(&mut d).await;
    for w in &workers {
        d.recycle_worker(*w).await.unwrap();
        h.exit(*w);
        d.on_exit(*w);
    }
    assert!(d.apps["shop"].young.delay.is_zero());
}

/// A uWSGI app whose stats socket (under the host root) is served by
/// `answer`: `Some(bytes)` written then closed, `None` accepted and never
/// answered. Returns the number of connections made to it so far.
fn stats_server(
    h: &Host,
    answer: Option<&'static [u8]>,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::sync::atomic::Ordering;
    let path = h.paths().resolve("/run/shop/stats.sock");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            match answer {
                Some(bytes) => {
                    use tokio::io::AsyncWriteExt;
                    let _ = s.write_all(bytes).await;
                }
                None => held.push(s),
            }
        }
    });
    count
}

const SHOP_STATS: &str = "unit = \"shop.service\"\nserver = \"uwsgi\"\n[memory]\nsoft_limit = \"300M\"\n[uwsgi]\nstats = \"/run/shop/stats.sock\"\n";

/// The shop under uWSGI's cheaper mode, its count set by the daemon (2–6).
fn cheaper_shop() -> String {
    format!(
        "{SHOP_STATS}master_fifo = \"/run/shop/fifo\"\n[scaling]\nmin_workers = 2\nmax_workers = 6\n"
    )
}

#[tokio::test]
async fn an_app_whose_workers_have_no_sample_yet_is_not_below_its_minimum() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", &cheaper_shop()));
    // uWSGI in cheaper mode: 3 workers and 3 cheap slots.
    stats_server(
        &h,
        Some(
            br#"{"listen_queue":0,"workers":[{"pid":5000001,"status":"idle"},{"pid":5000002,"status":"idle"},{"pid":5000003,"status":"idle"},{"pid":0,"status":"cheap"},{"pid":0,"status":"cheap"},{"pid":0,"status":"cheap"}]}"#,
        ),
    );
    shop(&h, &d, 3);
    // The daemon's first step: it decides while the scopes are under way,
    // and the fast steps decide before the next full step has read them.
    d.worker_tick().await;
    assert_eq!(d.apps["shop"].placing.len(), 3);
    d.host_tick().await;
    d.settle().await;
    assert_eq!(d.apps["shop"].workers.len(), 3);
    d.host_tick().await;
    let events = d.shared.lock().unwrap().events.recent(10);
    assert!(
        events.iter().all(|e| e.action != "grow"),
        "grew an app whose workers had no sample yet: {events:?}"
    );
}

#[tokio::test]
async fn an_app_being_stopped_is_not_grown() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", &cheaper_shop()));
    stats_server(
        &h,
        Some(
            br#"{"listen_queue":0,"workers":[{"pid":5000001,"status":"idle"},{"pid":5000002,"status":"idle"},{"pid":0,"status":"cheap"}]}"#,
        ),
    );
    let workers = shop(&h, &d, 2);
    full_tick(&mut d).await;
    full_tick(&mut d).await;
    // systemctl stop: the master and its workers exit before the next
    // full step asks systemd about the service.
    for pid in workers.iter().copied().chain([MASTER]) {
        h.exit(pid);
        d.on_exit(pid);
    }
    d.host_tick().await;
    let events = d.shared.lock().unwrap().events.recent(10);
    assert!(
        events.iter().all(|e| e.action != "grow"),
        "grew an app that was being stopped: {events:?}"
    );
}

#[tokio::test]
async fn garbage_from_the_stats_socket_places_nothing() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP_STATS));
    stats_server(
        &h,
        Some(b"HTTP/1.1 200 OK\r\n\r\n{\"workers\": [{\"pid\": \"x\"}"),
    );
    shop(&h, &d, 3);
    full_tick(&mut d).await;
    fast_tick(&mut d).await;
    assert!(d.apps["shop"].workers.is_empty());
    assert_eq!(starts(&d), 0, "placed on a guess: {:?}", d.systemd.calls());
}

#[tokio::test]
async fn a_hanging_stats_socket_places_nothing_and_is_not_asked_every_tick() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP_STATS));
    let connections = stats_server(&h, None);
    shop(&h, &d, 3);
    full_tick(&mut d).await;
    for _ in 0..10 {
        fast_tick(&mut d).await;
    }
    assert!(d.apps["shop"].workers.is_empty());
    assert_eq!(starts(&d), 0);
    // Each try costs the whole timeout (500 ms) of a loop that should tick
    // at 10 Hz: the first fails, the next ones wait for the retry time.
    let tries = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        tries <= 2,
        "{tries} connections in one worker tick and 10 host ticks"
    );
}

#[tokio::test]
async fn unreadable_worker_memory_is_never_a_reason_to_act() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 3);
    full_tick(&mut d).await;
    // One scope's files truncated, one garbled, one fine but small; the
    // host far above the upper bound.
    let dir = |pid: u32| format!("/sys/fs/cgroup{}", scope_cgroup(pid));
    h.scope_memory(&scope_cgroup(workers[0]), 350 * MB);
    h.write(&format!("{}/memory.current", dir(workers[0])), "");
    h.scope_memory(&scope_cgroup(workers[1]), 350 * MB);
    h.write(&format!("{}/memory.current", dir(workers[1])), "3670016x\n");
    h.write(&format!("{}/memory.stat", dir(workers[1])), "anon\n");
    h.scope_memory(&scope_cgroup(workers[2]), 10 * MB);
    h.set_memory(0.99);
    full_tick(&mut d).await;
    fast_tick(&mut d).await;
    let acted: Vec<String> = d
        .systemd
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("kill") || c.starts_with("limits"))
        .collect();
    for bad in &workers[..2] {
        assert!(
            !acted.iter().any(|c| c.contains(&bad.to_string())),
            "{acted:?}"
        );
        assert!(
            !d.signaller.sent.lock().unwrap().iter().any(|s| s.0 == *bad),
            "signalled a worker whose memory could not be read"
        );
    }
    // They are still managed (a bad read is not an exit); the one whose
    // memory was read may be acted on, per policy.
    for bad in &workers[..2] {
        assert!(d.apps["shop"].workers.contains_key(bad));
    }
}

#[tokio::test]
async fn workers_that_outlived_their_master_have_their_scopes_killed() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 2);
    full_tick(&mut d).await;
    assert_eq!(d.apps["shop"].workers.len(), 2);
    // A worker's own child shares its scope: not an orphan.
    let grandchild = MASTER + 20;
    h.process(grandchild, workers[1], &scope_cgroup(workers[1]));
    fs::write(
        h.paths()
            .cgroup()
            .join(scope_cgroup(workers[1]).trim_start_matches('/'))
            .join("cgroup.procs"),
        format!("{}\n{grandchild}\n", workers[1]),
    )
    .unwrap();
    full_tick(&mut d).await;
    assert!(
        !d.systemd.calls().iter().any(|c| c.starts_with("kill")),
        "{:?}",
        d.systemd.calls()
    );

    // The master crashes: worker 1 is reparented to PID 1; worker 2 has
    // already exited, its child is reparented too; systemd starts a new
    // master.
    h.process(1, 0, "/init.scope");
    h.exit(MASTER);
    h.process(workers[0], 1, &scope_cgroup(workers[0]));
    h.exit(workers[1]);
    d.on_exit(workers[1]);
    h.process(grandchild, 1, &scope_cgroup(workers[1]));
    fs::write(
        h.paths()
            .cgroup()
            .join(scope_cgroup(workers[1]).trim_start_matches('/'))
            .join("cgroup.procs"),
        format!("{grandchild}\n"),
    )
    .unwrap();
    let new_master = MASTER + 50;
    h.process(new_master, 1, "/system.slice/shop.service");
    d.systemd.set_main_pid("shop.service", new_master);
    full_tick(&mut d).await;
    let kills = calls_of(&d, "kill");
    assert_eq!(
        kills,
        workers
            .iter()
            .map(|w| format!("kill aw-shop-{w}.scope all 9"))
            .collect::<Vec<_>>()
    );
    assert!(d.apps["shop"].workers.is_empty());
    // Checked once per master, not on every tick.
    full_tick(&mut d).await;
    assert_eq!(calls_of(&d, "kill").len(), 2);
}
