//! What the daemon finds out and the engine decides on: a pause, a freeze
//! the daemon found unsafe, an app without a master.

use super::*;

#[test]
fn a_paused_app_only_observes() {
    let p = policy(vec![app_policy("shop", Some(300 * MB))]);
    let mut snap = snapshot(100, 0.3, vec![("shop", vec![worker(7, 400)])]);
    snap.apps[0].paused = true;
    let d = decide(&p, &snap, &mut EngineState::default());
    assert_eq!(pids(&d, "recycle"), vec![7]);
    assert!(d.iter().all(|d| d.mode == Mode::Observe), "{d:?}");
    assert_eq!(app_mode(&p, "shop", true), Mode::Observe);
    assert_eq!(app_mode(&p, "shop", false), Mode::Enforce);
    // Not paused: carried out.
    snap.apps[0].paused = false;
    let d = decide(&p, &snap, &mut EngineState::default());
    assert!(d.iter().all(|d| d.mode == Mode::Enforce), "{d:?}");
}

#[test]
fn a_refused_freeze_stops_idle_workers_instead() {
    let p = policy(vec![scaling_app(1, 6, ScaleDown::Freeze)]);
    let quiet = [true, true, true];
    let names = |refused: Option<&str>| {
        let mut st = EngineState::default();
        let mut seen = Vec::new();
        for i in 0..=120u64 {
            let mut s = scaling_snap(i * 100, 0, &quiet, &[]);
            s.apps[0].freeze_refused = refused.map(String::from);
            seen.extend(decide(&p, &s, &mut st).into_iter().map(|d| d.action.name()));
        }
        seen
    };
    assert!(names(None).contains(&"freeze"), "{:?}", names(None));
    let refused = names(Some("thunder-lock is on"));
    assert!(
        refused.contains(&"shrink") && !refused.contains(&"freeze"),
        "{refused:?}"
    );
}

#[test]
fn an_app_without_a_master_does_not_scale() {
    let p = policy(vec![scaling_app(2, 6, ScaleDown::Stop)]);
    // Workers exiting one by one as the app stops: below the minimum, a
    // queue left over.
    let mut s = scaling_snap(1000, 5, &[false], &[]);
    s.apps[0].no_master = true;
    let d = decide(&p, &s, &mut EngineState::default());
    assert!(d.is_empty(), "{d:?}");
    s.apps[0].no_master = false;
    let d = decide(&p, &s, &mut EngineState::default());
    assert!(d.iter().any(|d| d.action.name() == "grow"), "{d:?}");
}
