//! Placement: each worker in its own scope, adoption after a restart,
//! retries, bounded calls, young deaths and workers that outlived their
//! master.

use super::*;

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
async fn many_workers_are_placed_with_bounded_calls_in_flight() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    shop(&h, &d, 200);
    let at_once = crate::daemon::discover::PLACE_AT_ONCE;
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
    let at_once = crate::daemon::discover::PLACE_AT_ONCE;
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
async fn workers_that_die_right_after_placement_hold_back_placement() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    shop(&h, &d, 0);
    full_tick(&mut d).await;
    // A worker that cannot live: placed, dead within a second, respawned.
    for i in 0..crate::daemon::backoff::STREAK {
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
    w.placed_at = w
        .placed_at
        .checked_sub(crate::daemon::backoff::STABLE)
        .unwrap();
    let since = d.apps["shop"].young.since.unwrap();
    d.apps.get_mut("shop").unwrap().young.since =
        since.checked_sub(crate::daemon::backoff::STABLE * 2);
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
