//! `adaptive-workers daemon` on a host that cannot run it: a clear message
//! naming what is missing, exit status 69, no panic, and nothing done.
//! On a host that has systemd as PID 1 and cgroup v2 with the memory
//! controller (where the daemon would start for real) it checks nothing.

use std::path::Path;

use assert_cmd::Command;

fn systemd_and_cgroup2() -> bool {
    let systemd = Path::new("/run/systemd/system").is_dir();
    let memory = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
    systemd && memory
}

#[test]
fn daemon_on_a_host_without_systemd_or_cgroup2_exits_69_with_the_reasons() {
    if systemd_and_cgroup2() {
        eprintln!("this host can run the daemon: nothing to check here (the VM suite does)");
        return;
    }
    let out = Command::cargo_bin("adaptive-workers")
        .unwrap()
        .arg("daemon")
        .env_remove("NOTIFY_SOCKET")
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.starts_with("adaptive-workers: this host cannot run adaptive-workers: "),
        "{stderr}"
    );
    if !Path::new("/run/systemd/system").is_dir() {
        assert!(stderr.contains("systemd is not PID 1"), "{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty());
    // It said so at once, without trying the bus first.
    assert!(!stderr.contains("retrying"), "{stderr}");
}
