//! The daemon when its world misbehaves: systemd failing, timing out or
//! reporting a unit as starting or stopping, and the status view between
//! two samples.

use proptest::prelude::*;

use super::*;

/// A worker already in its scope, as a daemon that ran before left it.
fn scoped_worker(h: &Host, d: &TestDaemon, pid: u32, parent: u32) {
    let cg = scope_cgroup(pid);
    h.write(
        &format!("/sys/fs/cgroup{cg}/cgroup.procs"),
        &format!("{pid}\n"),
    );
    h.write(
        &format!("/sys/fs/cgroup{cg}/cgroup.events"),
        "populated 1\nfrozen 0\n",
    );
    h.scope_memory(&cg, 10 * MB);
    h.process(pid, parent, &cg);
    d.systemd
        .state
        .lock()
        .unwrap()
        .scopes
        .insert(format!("aw-shop-{pid}.scope"), cg);
}

/// A running app whose two workers sit in scopes already, placed by an
/// earlier daemon.
fn shop_in_scopes(h: &Host, d: &TestDaemon) -> Vec<u32> {
    let cg = d
        .systemd
        .add_service("shop.service", MASTER, &[MASTER])
        .unwrap();
    h.process(MASTER, 1, &cg);
    h.process(1, 0, "/init.scope");
    let workers = vec![MASTER + 1, MASTER + 2];
    for w in &workers {
        scoped_worker(h, d, *w, MASTER);
    }
    workers
}

/// /proc as the kernel shows the workers once they are in their scopes
/// (the fake systemd moves them in the cgroup tree only).
fn in_scopes(h: &Host, workers: &[u32]) {
    for w in workers {
        h.process(*w, MASTER, &scope_cgroup(*w));
    }
}

fn kills(d: &TestDaemon) -> Vec<String> {
    calls_of(d, "kill")
}

#[tokio::test]
async fn status_lists_a_worker_placed_since_the_last_sample() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    shop(&h, &d, 2);
    full_tick(&mut d).await;
    let new = MASTER + 10;
    respawned(&h, new);
    // Placed on one host step, published by a later one (within 250 ms).
    fast_tick(&mut d).await;
    tokio::time::sleep(std::time::Duration::from_millis(260)).await;
    d.host_tick().await;
    let view = d.shared.lock().unwrap().status.clone();
    let app = &view.apps[0];
    let w = app
        .workers
        .iter()
        .find(|w| w.pid == new)
        .expect("the new worker is listed");
    assert_eq!(w.state, "new");
    assert_eq!(w.private_bytes, None);
    assert_eq!(w.scope, format!("aw-shop-{new}.scope"));
    assert_eq!(app.workers.len(), d.apps["shop"].workers.len());
    assert_eq!(app.workers.len(), 3);
    assert_eq!(app.counters.placed, 3);
}

#[tokio::test]
async fn a_graceful_stop_of_the_app_kills_no_worker() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    shop(&h, &d, 3);
    full_tick(&mut d).await;
    assert_eq!(d.apps["shop"].workers.len(), 3);
    // systemctl stop: the master waits for its workers to finish their
    // requests; systemd reports the unit as stopping meanwhile.
    d.systemd.set_state("shop.service", "deactivating");
    for _ in 0..5 {
        full_tick(&mut d).await;
        fast_tick(&mut d).await;
    }
    assert!(kills(&d).is_empty(), "{:?}", d.systemd.calls());
    assert!(d.signaller.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_daemon_started_while_systemd_does_not_answer_kills_no_worker() {
    for fault in ["fail", "time out"] {
        let h = Host::new(0.3);
        let mut d = h.daemon(h.policy("shop", SHOP));
        let workers = shop_in_scopes(&h, &d);
        {
            let mut st = d.systemd.state.lock().unwrap();
            match fault {
                "fail" => {
                    st.faults.fail.insert("service", "Connection reset".into());
                }
                _ => {
                    st.faults.time_out.insert("service");
                }
            }
        }
        for _ in 0..3 {
            full_tick(&mut d).await;
        }
        assert!(kills(&d).is_empty(), "{fault}: {:?}", d.systemd.calls());
        // systemd answers again: the workers are adopted, not killed.
        d.systemd.state.lock().unwrap().faults = Default::default();
        full_tick(&mut d).await;
        assert!(kills(&d).is_empty(), "{fault}: {:?}", d.systemd.calls());
        let mut managed: Vec<u32> = d.apps["shop"].workers.keys().copied().collect();
        managed.sort();
        assert_eq!(managed, workers, "{fault}");
    }
}

#[tokio::test]
async fn orphans_of_a_crashed_master_wait_for_systemd_and_obey_pause() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop_in_scopes(&h, &d);
    full_tick(&mut d).await;
    // The master crashes; its workers are reparented to PID 1 while
    // systemd restarts the service.
    h.exit(MASTER);
    d.on_exit(MASTER);
    for w in &workers {
        h.process(*w, 1, &scope_cgroup(*w));
    }
    d.systemd.set_state("shop.service", "activating");
    d.systemd.set_main_pid("shop.service", 0);
    full_tick(&mut d).await;
    assert!(kills(&d).is_empty(), "while activating: {:?}", kills(&d));
    // Paused: the decision is logged, nothing is done.
    d.pause("shop", true).unwrap();
    d.systemd.set_state("shop.service", "failed");
    full_tick(&mut d).await;
    assert!(kills(&d).is_empty(), "while paused: {:?}", kills(&d));
    let events = d.shared.lock().unwrap().events.recent(10);
    let reaps: Vec<_> = events.iter().filter(|e| e.action == "reap").collect();
    assert_eq!(reaps.len(), 2, "{events:?}");
    assert!(reaps.iter().all(|e| e.outcome == "observed"));
    assert!(reaps[0].reason.contains("outlived its master"));
    // Resumed: the stopped service's orphans are reaped.
    d.pause("shop", false).unwrap();
    d.apps.get_mut("shop").unwrap().orphans_checked_for = None;
    full_tick(&mut d).await;
    let mut want: Vec<String> = workers
        .iter()
        .map(|w| format!("kill aw-shop-{w}.scope all 9"))
        .collect();
    want.sort();
    let mut got = kills(&d);
    got.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_unit_systemd_does_not_know_is_told_apart_from_a_stopped_one() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    full_tick(&mut d).await;
    let view = d.shared.lock().unwrap().status.clone();
    assert_eq!(view.apps[0].unit_state.as_deref(), Some("not-found"));
    shop(&h, &d, 1);
    d.systemd.set_state("shop.service", "inactive");
    full_tick(&mut d).await;
    let view = d.shared.lock().unwrap().status.clone();
    assert_eq!(view.apps[0].unit_state.as_deref(), Some("inactive"));
    assert_eq!(view.apps[0].master_pid, None);
}

/// One answer of systemd about the service, for the property below.
#[derive(Clone, Debug)]
enum Answer {
    State(&'static str),
    Fail,
    TimeOut,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        Just(Answer::State("active")),
        Just(Answer::State("reloading")),
        Just(Answer::State("activating")),
        Just(Answer::State("deactivating")),
        Just(Answer::Fail),
        Just(Answer::TimeOut),
    ]
}

/// Runs the daemon through a sequence of systemd answers about a service
/// whose master is alive all along; returns the kill calls it made and
/// the signals it sent.
fn run_answers(answers: &[Answer], placed_before: bool) -> (Vec<String>, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let h = Host::new(0.3);
        let mut d = h.daemon(h.policy("shop", SHOP));
        match placed_before {
            true => {
                shop_in_scopes(&h, &d);
            }
            false => {
                shop(&h, &d, 2);
            }
        }
        for a in answers {
            {
                let mut st = d.systemd.state.lock().unwrap();
                st.faults = Default::default();
                match a {
                    Answer::State(s) => {
                        st.services.get_mut("shop.service").unwrap().active_state = (*s).into()
                    }
                    Answer::Fail => {
                        st.faults.fail.insert("service", "Connection reset".into());
                    }
                    Answer::TimeOut => {
                        st.faults.time_out.insert("service");
                    }
                }
            }
            full_tick(&mut d).await;
            fast_tick(&mut d).await;
        }
        let sent = d.signaller.sent.lock().unwrap().len();
        (kills(&d), sent)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// For any sequence of systemd answers and failures, no worker whose
    /// master is alive and whose service is active, starting or stopping
    /// is ever killed or signalled.
    #[test]
    fn no_worker_of_a_live_master_is_ever_killed(
        answers in proptest::collection::vec(answer(), 1..8),
        placed_before in any::<bool>(),
    ) {
        let (kills, sent) = run_answers(&answers, placed_before);
        prop_assert!(kills.is_empty(), "{:?}: {:?}", answers, kills);
        prop_assert_eq!(sent, 0);
    }
}

#[test]
fn nothing_is_acted_on_in_observe_mode_even_for_real_orphans() {
    // The master is dead and systemd says the unit failed: in observe
    // mode the reap is only logged.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let h = Host::new(0.3);
        let observe = SHOP.replacen(
            "server = \"uwsgi\"\n",
            "server = \"uwsgi\"\nmode = \"observe\"\n",
            1,
        );
        let mut d = h.daemon(h.policy("shop", &observe));
        let workers = shop_in_scopes(&h, &d);
        h.exit(MASTER);
        for w in &workers {
            h.process(*w, 1, &scope_cgroup(*w));
        }
        d.systemd.set_state("shop.service", "failed");
        full_tick(&mut d).await;
        assert!(kills(&d).is_empty(), "{:?}", kills(&d));
        let events = d.shared.lock().unwrap().events.recent(10);
        assert!(
            events
                .iter()
                .any(|e| e.action == "reap" && e.outcome == "observed"),
            "{events:?}"
        );
    });
}

/// Runs `step` with a bound far above anything the daemon should take:
/// without its own deadlines it would wait for a hung systemd forever.
async fn within_bound<F: std::future::Future>(what: &str, step: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(20), step)
        .await
        .unwrap_or_else(|_| panic!("{what} waited for a hung systemd"))
}

#[tokio::test]
async fn above_the_upper_bound_a_kill_does_not_wait_for_a_hung_pid_1() {
    for fault in ["hang", "fail"] {
        let h = Host::new(0.3);
        let mut d = h.daemon(h.policy("shop", SHOP));
        let workers = shop(&h, &d, 3);
        full_tick(&mut d).await;
        in_scopes(&h, &workers);
        h.scope_memory(&scope_cgroup(workers[0]), 10 * MB);
        h.scope_memory(&scope_cgroup(workers[1]), 290 * MB);
        h.scope_memory(&scope_cgroup(workers[2]), 200 * MB);
        full_tick(&mut d).await;
        {
            let mut st = d.systemd.state.lock().unwrap();
            for m in ["service", "kill", "limits", "freeze", "thaw", "start"] {
                match fault {
                    "hang" => st.faults.hang.insert(m),
                    _ => st
                        .faults
                        .fail
                        .insert(m, "Connection reset".into())
                        .is_none(),
                };
            }
        }
        // The full step goes on without systemd's answers...
        within_bound("the full step", d.worker_tick()).await;
        // ...and the host step kills the biggest workers without it: at
        // 95.4% of 8 GB, 434M to free, which the two biggest free.
        h.set_memory(0.954);
        within_bound("the host step", d.host_tick()).await;
        let sent = d.signaller.sent.lock().unwrap().clone();
        assert_eq!(
            sent,
            vec![
                (workers[1], scope_cgroup(workers[1]), libc::SIGKILL),
                (workers[2], scope_cgroup(workers[2]), libc::SIGKILL)
            ],
            "{fault}"
        );
        let events = d.shared.lock().unwrap().events.recent(5);
        let kills: Vec<_> = events.iter().filter(|e| e.action == "kill").collect();
        assert_eq!(kills.len(), 2, "{fault}: {events:?}");
        assert!(
            kills.iter().all(|e| e.outcome == "done"),
            "{fault}: {events:?}"
        );
        if fault == "hang" {
            // Once systemd timed out, the next kill does not wait for it.
            assert_eq!(calls_of(&d, "kill").len(), 1, "{:?}", calls_of(&d, "kill"));
        }
    }
}

#[tokio::test]
async fn a_process_that_is_not_the_worker_any_more_is_not_killed_directly() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 2);
    full_tick(&mut d).await;
    in_scopes(&h, &workers);
    h.scope_memory(&scope_cgroup(workers[0]), 290 * MB);
    h.scope_memory(&scope_cgroup(workers[1]), 290 * MB);
    full_tick(&mut d).await;
    d.systemd.state.lock().unwrap().faults.hang.insert("kill");
    // The worker exited; its PID now names a process elsewhere, which the
    // scope's stale list still shows.
    h.process(workers[0], 1, "/user.slice/other.scope");
    h.set_memory(0.96);
    within_bound("the host step", d.host_tick()).await;
    let sent = d.signaller.sent.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![(workers[1], scope_cgroup(workers[1]), libc::SIGKILL)],
        "only the worker still in its scope"
    );
}

#[tokio::test]
async fn a_scope_that_got_another_process_is_not_managed_and_its_limits_go() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    let workers = shop(&h, &d, 1);
    d.worker_tick().await;
    assert_eq!(d.apps["shop"].placing.len(), 1);
    // Before systemd acts on the PID, the worker dies and an unrelated
    // process (started later, not the master's child) gets its PID.
    h.process_started(workers[0], 1, "/system.slice/shop.service", 999);
    d.settle().await;
    assert!(d.apps["shop"].workers.is_empty());
    assert_eq!(d.apps["shop"].counters.placement_failures, 1);
    assert_eq!(
        calls_of(&d, "limits"),
        vec![format!("limits aw-shop-{}.scope max max", workers[0])]
    );
    assert!(d.signaller.sent.lock().unwrap().is_empty());
    assert!(calls_of(&d, "kill").is_empty());
}

#[tokio::test]
async fn per_pid_maps_forget_processes_that_are_gone() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    shop(&h, &d, 1);
    full_tick(&mut d).await;
    let gone = MASTER + 77;
    {
        let app = d.apps.get_mut("shop").unwrap();
        app.not_workers.insert((gone, 1));
        app.not_workers.insert((STRANGER, 1));
        app.retry_after.insert(gone, std::time::Instant::now());
    }
    full_tick(&mut d).await;
    let app = &d.apps["shop"];
    assert!(app.retry_after.is_empty());
    assert_eq!(
        app.not_workers.iter().copied().collect::<Vec<_>>(),
        vec![(STRANGER, 1)],
        "a process still there is kept"
    );
}

#[tokio::test]
async fn when_the_job_stream_ends_placements_fail_and_are_retried_not_acted_on() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    shop(&h, &d, 2);
    d.systemd.state.lock().unwrap().faults.jobs_ended = true;
    full_tick(&mut d).await;
    assert!(d.apps["shop"].workers.is_empty());
    assert_eq!(d.apps["shop"].counters.placement_failures, 2);
    assert_eq!(
        d.apps["shop"].retry_after.len(),
        2,
        "retried later, not in a loop"
    );
    assert!(kills(&d).is_empty());
    assert!(d.signaller.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_active_unit_without_a_main_pid_has_nothing_managed() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP));
    shop(&h, &d, 2);
    d.systemd.set_main_pid("shop.service", 0);
    full_tick(&mut d).await;
    assert!(d.apps["shop"].workers.is_empty());
    assert_eq!(starts(&d), 0);
    assert!(d.apps["shop"].missing_logged, "said once");
}
