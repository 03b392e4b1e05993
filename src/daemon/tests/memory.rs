//! Memory: soft and hard limits on the scopes, host bounds, reloads, and
//! reads that fail.

use super::*;

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
        assert!(
            steps <= crate::daemon::sense::DETAIL_EVERY,
            "memory.stat not read"
        );
    }
    // Read just now: not again at the next step.
    h.scope_memory(&cgroup, 30 * MB);
    full_tick(&mut d).await;
    assert_eq!(memory(&d), (30 * MB, 20 * MB));
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
