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

    /// Process `pid` holds socket `inode` as file descriptor `fd`
    /// (/proc/PID/fd/FD -> socket:[INODE]), in place of what it held there.
    fn socket_fd(&self, pid: u32, fd: u32, inode: u64) {
        let dir = self.paths().resolve(format!("/proc/{pid}/fd"));
        fs::create_dir_all(&dir).unwrap();
        let _ = fs::remove_file(dir.join(fd.to_string()));
        std::os::unix::fs::symlink(format!("socket:[{inode}]"), dir.join(fd.to_string())).unwrap();
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
mod memory;
mod operator;
mod placement;
mod scaling;
mod stats;

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
    h.socket_fd(MASTER, 3, 777);
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
