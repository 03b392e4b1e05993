//! Scaling a gunicorn gthread app on the connections its workers hold:
//! the class read from the arbiter's command line, the counts from the
//! workers' fds and the accepted connections, and what a failed read does.

use super::*;
use crate::backlog::{Connection, ListenAddr, Listener};
use crate::daemon::backlog::FakeSockets;

const API: &str = "unit = \"api.service\"\nserver = \"gunicorn\"\n[scaling]\nmin_workers = 1\nmax_workers = 6\nspare_idle = 0\ncooldown_up = \"0\"\ncooldown_down = \"0\"\n";
const LISTEN: u64 = 777;

fn addr() -> ListenAddr {
    ListenAddr::Tcp("127.0.0.1:8004".parse().unwrap())
}

/// A gthread arbiter with two workers; each worker holds the listening
/// socket, a backend connection (not a client) and `held` client ones.
async fn gthread_app(held: [u32; 2]) -> (Host, TestDaemon, FakeSockets) {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("api", API));
    let workers = [MASTER + 1, MASTER + 2];
    let cg = d
        .systemd
        .add_service("api.service", MASTER, &[MASTER, workers[0], workers[1]])
        .unwrap();
    h.process(MASTER, 1, &cg);
    h.write(
        &format!("/proc/{MASTER}/cmdline"),
        "/usr/bin/python3\0/usr/bin/gunicorn\0-k\0gthread\0--threads\x004\0app:app\0",
    );
    h.socket_fd(MASTER, 3, LISTEN);
    let sockets = FakeSockets::default();
    {
        let mut s = sockets.state.lock().unwrap();
        s.listeners = vec![Listener {
            inode: LISTEN,
            addr: addr(),
            queue: 0,
            max: 128,
        }];
    }
    for (i, w) in workers.iter().enumerate() {
        h.process(*w, MASTER, &cg);
        h.socket_fd(*w, 3, LISTEN);
        h.socket_fd(*w, 4, 5000 + u64::from(*w));
        h.scope_memory(&scope_cgroup_of("api", *w), 10 * MB);
        hold(&h, &sockets, *w, held[i]);
    }
    d.listeners = Some(Box::new(sockets.clone()));
    full_tick(&mut d).await;
    for w in workers {
        h.scope_memory(&scope_cgroup_of("api", w), 10 * MB);
    }
    full_tick(&mut d).await;
    (h, d, sockets)
}

/// Worker `pid` holds `n` client connections (fds 10..), replacing those
/// it held.
fn hold(h: &Host, sockets: &FakeSockets, pid: u32, n: u32) {
    let dir = h.paths().resolve(format!("/proc/{pid}/fd"));
    for fd in 10..40 {
        let _ = fs::remove_file(dir.join(fd.to_string()));
    }
    let base = u64::from(pid) * 100;
    let mut s = sockets.state.lock().unwrap();
    s.connections.retain(|c| c.inode / 100 != u64::from(pid));
    for i in 0..n {
        let inode = base + u64::from(i);
        h.socket_fd(pid, 10 + i, inode);
        s.connections.push(Connection {
            inode,
            local: addr(),
        });
    }
    // The backend connection each worker holds is on another port.
    s.connections.push(Connection {
        inode: 5000 + u64::from(pid),
        local: ListenAddr::Tcp("127.0.0.1:5432".parse().unwrap()),
    });
}

fn grows(d: &TestDaemon) -> usize {
    d.systemd
        .calls()
        .iter()
        .filter(|c| *c == &format!("kill api.service main {}", libc::SIGTTIN))
        .count()
}

fn shrinks(d: &TestDaemon) -> usize {
    d.systemd
        .calls()
        .iter()
        .filter(|c| *c == &format!("kill api.service main {}", libc::SIGTTOU))
        .count()
}

#[tokio::test]
async fn saturated_gthread_workers_grow_the_app_with_an_empty_queue() {
    let (_h, mut d, sockets) = gthread_app([6, 6]).await;
    let plan = d.apps["api"].load.clone().expect("a plan");
    assert_eq!(plan.per_worker(), Some(4), "{plan:?}");
    assert!(plan.why().contains("gthread"), "{}", plan.why());
    fast_tick(&mut d).await;
    let counts: Vec<_> = d.apps["api"]
        .workers
        .values()
        .map(|w| w.connections)
        .collect();
    assert_eq!(
        counts,
        vec![Some(6), Some(6)],
        "the backend connections are not clients"
    );
    assert_eq!(
        sockets.state.lock().unwrap().asked,
        Some((vec![8004], false)),
        "only the app's port is dumped"
    );
    assert!(grows(&d) >= 1, "{:?}", d.systemd.calls());
    let events = d.shared.lock().unwrap().events.recent(10);
    let grow = events
        .iter()
        .find(|e| e.action == "grow")
        .expect("a grow event");
    assert!(grow.reason.contains("connections wait"), "{grow:?}");
}

#[tokio::test]
async fn workers_holding_nothing_are_idle_and_the_app_shrinks() {
    let (h, mut d, sockets) = gthread_app([1, 0]).await;
    fast_tick(&mut d).await;
    let idle: Vec<_> = d.apps["api"].workers.values().map(|w| w.idle).collect();
    assert_eq!(idle, vec![Some(false), Some(true)]);
    assert!(shrinks(&d) >= 1, "{:?}", d.systemd.calls());
    assert_eq!(grows(&d), 0);
    // Busy again: no longer idle.
    hold(&h, &sockets, MASTER + 2, 3);
    fast_tick(&mut d).await;
    assert_eq!(d.apps["api"].workers[&(MASTER + 2)].idle, Some(false));
}

#[tokio::test]
async fn a_failed_connection_dump_holds_scaling_still() {
    // Each holds one: nothing to do yet.
    let (h, mut d, sockets) = gthread_app([1, 1]).await;
    sockets.state.lock().unwrap().fail_connections = true;
    // Quiet, but unseen: no evidence to shrink on.
    hold(&h, &sockets, MASTER + 1, 0);
    hold(&h, &sockets, MASTER + 2, 0);
    let before = d.systemd.calls().len();
    for _ in 0..5 {
        full_tick(&mut d).await;
        fast_tick(&mut d).await;
    }
    let counts: Vec<_> = d.apps["api"]
        .workers
        .values()
        .map(|w| (w.connections, w.idle))
        .collect();
    assert_eq!(counts, vec![(None, None), (None, None)]);
    let after = &d.systemd.calls()[before..];
    assert!(
        !after
            .iter()
            .any(|c| c.contains(" main ") || c.starts_with("freeze")),
        "acted on counts it could not read: {after:?}"
    );
    // Seen again: the quiet app shrinks.
    sockets.state.lock().unwrap().fail_connections = false;
    full_tick(&mut d).await;
    fast_tick(&mut d).await;
    let after = &d.systemd.calls()[before..];
    let ttou = format!("kill api.service main {}", libc::SIGTTOU);
    assert!(after.contains(&ttou), "{after:?}");
}

#[tokio::test]
async fn a_sync_arbiter_keeps_the_accept_queue() {
    let (h, mut d, sockets) = gthread_app([6, 6]).await;
    h.write(
        &format!("/proc/{MASTER}/cmdline"),
        "/usr/bin/python3\0/usr/bin/gunicorn\0--workers\x002\0app:app\0",
    );
    // A new arbiter (same PID in this fake): the plan is read again.
    d.apps.get_mut("api").unwrap().load_for = None;
    full_tick(&mut d).await;
    let plan = d.apps["api"].load.clone().expect("a plan");
    assert_eq!(plan.per_worker(), None, "{plan:?}");
    sockets.state.lock().unwrap().asked = None;
    fast_tick(&mut d).await;
    assert_eq!(
        sockets.state.lock().unwrap().asked,
        None,
        "no connection dump"
    );
    assert!(
        d.apps["api"]
            .workers
            .values()
            .all(|w| w.connections.is_none())
    );
}
