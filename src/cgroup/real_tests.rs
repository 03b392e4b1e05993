//! Tests against this machine's real cgroup2 hierarchy. They create one
//! throw-away cgroup below our own and remove it; where the host does not
//! allow that they say so and check what they can.

use std::fs;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::procfs::ProcFs;

/// Mount points of cgroup2 file systems, from /proc/self/mounts.
fn cgroup2_mounts() -> Vec<PathBuf> {
    let mounts = HostPaths::system().proc().join("self/mounts");
    let text = fs::read_to_string(&mounts).expect("mounts");
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .collect()
}

#[test]
fn real_open_checks_mount_and_memory_controller() {
    let mounts = cgroup2_mounts();
    if mounts.is_empty() {
        eprintln!("no cgroup2 mount on this host: only the negative case can run");
    }
    for mount in mounts {
        let controllers =
            fs::read_to_string(mount.join("cgroup.controllers")).expect("controllers");
        let has_memory = controllers.split_whitespace().any(|c| c == "memory");
        match CgroupFs::open_at(&mount) {
            Ok(_) => assert!(has_memory, "{mount:?} opened without memory controller"),
            Err(CgroupError::NoMemoryController { .. }) => assert!(!has_memory),
            Err(e) => panic!("{mount:?}: {e}"),
        }
    }
    // procfs is a real mount but not cgroup2.
    let err = CgroupFs::open_at(HostPaths::system().proc()).unwrap_err();
    assert!(
        matches!(err, CgroupError::NotCgroup2 { magic: 0x9fa0, .. }),
        "{err:?}"
    );
}

/// A cgroup made for one test, removed on drop with its process killed.
struct TestCgroup {
    dir: PathBuf,
    child: Option<Child>,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = fs::write(self.dir.join("cgroup.freeze"), "0");
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn real_scope_lifecycle_populated_frozen_gone() {
    let Some(mount) = cgroup2_mounts().into_iter().next() else {
        eprintln!("SKIPPED: no cgroup2 mount on this host");
        return;
    };
    let procfs = ProcFs::new(&HostPaths::system());
    let own = procfs.pid_cgroup(std::process::id()).expect("own cgroup");
    let cgroups = CgroupFs::new_unchecked(&mount);
    let name = format!("aw-test-{}", std::process::id());
    let cg = format!("{}/{name}", own.trim_end_matches('/'));
    let dir = cgroups.path(&cg);
    if let Err(e) = fs::create_dir(&dir) {
        eprintln!("SKIPPED: cannot create a cgroup at {dir:?} here: {e}");
        return;
    }
    let mut guard = TestCgroup {
        dir: dir.clone(),
        child: None,
    };
    assert!(cgroups.exists(&cg));
    assert!(cgroups.children(&own).expect("children").contains(&name));
    assert_eq!(cgroups.procs(&cg).expect("procs"), Vec::<u32>::new());
    assert!(!cgroups.events(&cg).expect("events").populated);

    let child = Command::new("sleep").arg("30").spawn().expect("spawn");
    let pid = child.id();
    guard.child = Some(child);
    fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("move the child");
    assert_eq!(cgroups.procs(&cg).expect("procs"), vec![pid]);
    assert_eq!(procfs.pid_cgroup(pid).expect("child cgroup"), cg);
    assert_eq!(
        cgroups.events(&cg).expect("events"),
        CgroupEvents {
            populated: true,
            frozen: false
        }
    );
    if dir.join("memory.pressure").exists() {
        cgroups.memory_pressure(&cg).expect("memory.pressure");
    }

    fs::write(dir.join("cgroup.freeze"), "1").expect("freeze");
    wait_for("frozen", || cgroups.events(&cg).is_ok_and(|e| e.frozen));
    fs::write(dir.join("cgroup.freeze"), "0").expect("thaw");

    if let Some(mut child) = guard.child.take() {
        child.kill().expect("kill");
        child.wait().expect("wait");
    }
    wait_for("not populated", || {
        cgroups.events(&cg).is_ok_and(|e| !e.populated)
    });
    fs::remove_dir(&dir).expect("rmdir");
    assert!(!cgroups.exists(&cg));
    assert!(cgroups.procs(&cg).unwrap_err().is_gone());
    assert!(cgroups.events(&cg).unwrap_err().is_gone());
}
