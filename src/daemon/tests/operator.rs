//! What an operator sees and asks for: status, recycle, pause.

use super::*;

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
