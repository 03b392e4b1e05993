//! Tests against this machine's real `/proc`.

use std::net::TcpListener;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::paths::HostPaths;

fn real() -> ProcFs {
    ProcFs::new(&HostPaths::system())
}

#[test]
fn real_meminfo_matches_sysinfo() {
    let m = real().meminfo().expect("meminfo");
    // SAFETY: sysinfo only writes into the struct we pass.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::sysinfo(&mut info) }, 0);
    // Both come from totalram_pages: a unit slip (kB vs bytes) shows here.
    assert_eq!(m.total, info.totalram as u64 * info.mem_unit as u64);
    assert!(m.available <= m.total && m.free <= m.total, "{m:?}");
    assert!((0.0..=1.0).contains(&m.utilisation()));
}

#[test]
fn real_memory_pressure_has_some_and_full() {
    let p = real().pressure("memory").expect("pressure");
    assert!(
        p.full.is_some(),
        "memory pressure always has a full line: {p:?}"
    );
    assert!(p.some.total_us >= p.full.expect("full").total_us, "{p:?}");
}

#[test]
fn real_pid_stat_of_self() {
    let procfs = real();
    let me = std::process::id();
    let st = procfs.pid_stat(me).expect("stat");
    assert_eq!(st.pid, me);
    assert_eq!(
        st.ppid,
        rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
    );
    let comm = std::fs::read_to_string(procfs.pid_dir(me).join("comm")).expect("comm");
    assert_eq!(st.comm, comm.trim_end_matches('\n'));
    assert!(
        st.num_threads >= 1 && st.starttime > 0 && st.rss_pages > 0,
        "{st:?}"
    );
}

#[test]
fn real_children_and_cgroup_of_self() {
    let procfs = real();
    let mut child = Command::new("sleep")
        .arg("10")
        .spawn()
        .expect("spawn sleep");
    let children = procfs.children(std::process::id());
    let child_cg = procfs.pid_cgroup(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(children.expect("children").contains(&child.id()));
    let own_cg = procfs.pid_cgroup(std::process::id()).expect("cgroup");
    assert!(own_cg.starts_with('/'), "{own_cg}");
    assert_eq!(
        child_cg.expect("child cgroup"),
        own_cg,
        "a child starts in its parent's cgroup"
    );
    let err = procfs.pid_stat(child.id()).unwrap_err();
    assert!(err.is_gone(), "a reaped child is gone: {err:?}");
}

#[test]
fn real_socket_inodes_of_self() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let inode = rustix::fs::fstat(listener.as_fd()).expect("fstat").st_ino;
    let inodes = real().socket_inodes(std::process::id()).expect("inodes");
    assert!(inodes.contains(&inode), "{inode} not in {inodes:?}");
}

#[test]
fn real_psi_trigger_arms_and_polls() {
    let path = real().pressure_path("memory");
    // A 2 s window is accepted even without CAP_SYS_RESOURCE.
    let trigger = PsiTrigger::open(
        &path,
        false,
        Duration::from_millis(100),
        Duration::from_secs(2),
    )
    .expect("arm trigger");
    assert_eq!(trigger.spec(), "some 100000 2000000");
    // No assertion on firing: that needs memory pressure. Polling must work.
    trigger.wait(Duration::from_millis(10)).expect("poll");
    let full = PsiTrigger::open(
        &path,
        true,
        Duration::from_millis(100),
        Duration::from_secs(2),
    );
    assert!(full.is_ok(), "{full:?}");
}
