//! Scaling on the accept queue: growth through systemd, freezing where
//! it is safe, and counts that must not mislead.

use super::*;

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
    h.socket_fd(MASTER, 3, 777);
    h.socket_fd(MASTER, 4, 778);
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
