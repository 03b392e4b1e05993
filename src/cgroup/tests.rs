//! Tests on fake cgroup trees in a tempdir: one success and one failure
//! case per control file, and gone vs broken.

use std::fs;
use std::path::PathBuf;

use tempfile::TempDir;

use super::*;

const SCOPE: &str = "/aw.slice/aw-shop.slice/aw-shop-4242.scope";

struct FakeTree {
    dir: TempDir,
}

impl FakeTree {
    fn new() -> Self {
        Self {
            dir: TempDir::new().expect("tempdir"),
        }
    }

    fn cgroups(&self) -> CgroupFs {
        CgroupFs::new_unchecked(self.dir.path())
    }

    fn write(&self, cg: &str, file: &str, content: &str) -> &Self {
        let dir = self.cgroups().path(cg);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(file), content).expect("write");
        self
    }

    fn mkdir(&self, cg: &str) -> &Self {
        fs::create_dir_all(self.cgroups().path(cg)).expect("mkdir");
        self
    }
}

const MEMORY_STAT: &str = "anon 52428800
file 10485760
kernel 1048576
kernel_stack 65536
pagetables 131072
sec_pagetables 0
percpu 0
sock 4096
vmalloc 0
shmem 8192
zswap 0
file_mapped 2097152
file_dirty 12288
file_writeback 0
swapcached 0
anon_thp 2097152
file_thp 0
shmem_thp 0
inactive_anon 0
active_anon 52420608
inactive_file 10485760
active_file 0
unevictable 0
slab_reclaimable 100000
slab_unreclaimable 200000
slab 300000
pgfault 12345
pgmajfault 0
";

const MEMORY_EVENTS: &str = "low 0\nhigh 17\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";

#[test]
fn path_follows_systemd_names_and_stays_under_root() {
    let tree = FakeTree::new();
    let cg = tree.cgroups();
    let root = tree.dir.path();
    assert_eq!(
        cg.path("/system.slice/x.service"),
        root.join("system.slice/x.service")
    );
    assert_eq!(cg.path("/"), root.to_path_buf());
    assert_eq!(cg.path(""), root.to_path_buf());
    assert_eq!(cg.path("/../../etc"), root.join("etc"));
    assert_eq!(
        cg.file(SCOPE, "memory.pressure"),
        root.join(&SCOPE[1..]).join("memory.pressure")
    );
}

#[test]
fn exists_is_true_only_for_directories() {
    let tree = FakeTree::new();
    tree.write(SCOPE, "memory.current", "1\n");
    let cg = tree.cgroups();
    assert!(cg.exists(SCOPE));
    assert!(!cg.exists("/aw.slice/missing.scope"));
    assert!(!cg.exists(&format!("{SCOPE}/memory.current")));
}

#[test]
fn memory_current_reads_bytes() {
    let tree = FakeTree::new();
    tree.write(SCOPE, "memory.current", "83886080\n");
    assert_eq!(
        tree.cgroups().memory_current(SCOPE).expect("read"),
        83_886_080
    );
}

#[test]
fn memory_current_errors() {
    let tree = FakeTree::new();
    let cg = tree.cgroups();

    let err = cg.memory_current(SCOPE).unwrap_err();
    assert!(err.is_gone(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("failed to read ") && msg.contains("aw-shop-4242.scope/memory.current"),
        "{msg}"
    );

    // The scope is there but has no memory.current: memory controller not
    // enabled for it. Broken, not gone.
    tree.mkdir(SCOPE);
    let err = cg.memory_current(SCOPE).unwrap_err();
    assert!(
        matches!(err, CgroupError::Read { .. }) && !err.is_gone(),
        "{err:?}"
    );

    for bad in ["", "12 34\n", "lots\n", "-5\n"] {
        tree.write(SCOPE, "memory.current", bad);
        let err = cg.memory_current(SCOPE).unwrap_err();
        assert!(matches!(err, CgroupError::Parse(_)), "{bad:?}: {err:?}");
        assert!(err.to_string().starts_with("failed to parse "), "{err}");
    }
}

#[test]
fn memory_stat_reads_known_keys_and_ignores_others() {
    let tree = FakeTree::new();
    tree.write(SCOPE, "memory.stat", MEMORY_STAT);
    let s = tree.cgroups().memory_stat(SCOPE).expect("read");
    assert_eq!(s.anon, 52_428_800);
    assert_eq!(s.file, 10_485_760);
    assert_eq!(s.shmem, 8192);
    assert_eq!(s.kernel, Some(1_048_576));
    assert_eq!(s.sock, Some(4096));
    assert_eq!(s.file_mapped, Some(2_097_152));
    assert_eq!(s.file_dirty, Some(12_288));
    assert_eq!(s.anon_thp, Some(2_097_152));
    assert_eq!(s.slab_unreclaimable, Some(200_000));
}

#[test]
fn memory_stat_optional_keys_are_none_not_zero() {
    let tree = FakeTree::new();
    tree.write(SCOPE, "memory.stat", "anon 1\nfile 2\nshmem 3\n");
    let s = tree.cgroups().memory_stat(SCOPE).expect("read");
    assert_eq!((s.anon, s.file, s.shmem), (1, 2, 3));
    assert_eq!(s.kernel, None);
    assert_eq!(s.sock, None);
}

#[test]
fn memory_stat_errors() {
    let tree = FakeTree::new();
    let cg = tree.cgroups();
    assert!(cg.memory_stat(SCOPE).unwrap_err().is_gone());

    let without_anon: String = MEMORY_STAT
        .lines()
        .filter(|l| !l.starts_with("anon "))
        .map(|l| format!("{l}\n"))
        .collect();
    tree.write(SCOPE, "memory.stat", &without_anon);
    let msg = cg.memory_stat(SCOPE).unwrap_err().to_string();
    assert!(
        msg.contains("memory.stat") && msg.contains("missing key anon"),
        "{msg}"
    );

    tree.write(SCOPE, "memory.stat", "anon 1\nfile 2\nshmem\n");
    let msg = cg.memory_stat(SCOPE).unwrap_err().to_string();
    assert!(msg.contains("line 3"), "truncated line: {msg}");

    tree.write(SCOPE, "memory.stat", "anon 1\nfile two\nshmem 3\n");
    let msg = cg.memory_stat(SCOPE).unwrap_err().to_string();
    assert!(msg.contains("file is not a number"), "{msg}");

    tree.write(SCOPE, "memory.stat", "\u{0}\u{1}garbage");
    assert!(matches!(cg.memory_stat(SCOPE), Err(CgroupError::Parse(_))));
}

#[test]
fn memory_events_reads_counters() {
    let tree = FakeTree::new();
    tree.write(SCOPE, "memory.events", MEMORY_EVENTS);
    let e = tree.cgroups().memory_events(SCOPE).expect("read");
    assert_eq!(
        e,
        MemoryEvents {
            low: 0,
            high: 17,
            max: 3,
            oom: 1,
            oom_kill: 1,
            oom_group_kill: 0
        }
    );

    // Kernels before 5.17 have no oom_group_kill.
    tree.write(
        SCOPE,
        "memory.events",
        "low 0\nhigh 2\nmax 0\noom 0\noom_kill 0\n",
    );
    let e = tree.cgroups().memory_events(SCOPE).expect("read");
    assert_eq!((e.high, e.oom_group_kill), (2, 0));
}

#[test]
fn memory_events_errors() {
    let tree = FakeTree::new();
    let cg = tree.cgroups();
    assert!(cg.memory_events(SCOPE).unwrap_err().is_gone());

    tree.write(SCOPE, "memory.events", "low 0\nhigh 2\nmax 0\noom 0\n");
    let msg = cg.memory_events(SCOPE).unwrap_err().to_string();
    assert!(msg.contains("missing key oom_kill"), "{msg}");

    tree.write(
        SCOPE,
        "memory.events",
        "low 0\nhigh 2 3\nmax 0\noom 0\noom_kill 0\n",
    );
    assert!(matches!(
        cg.memory_events(SCOPE),
        Err(CgroupError::Parse(_))
    ));
}

#[test]
fn memory_pressure_reuses_the_psi_parser() {
    let tree = FakeTree::new();
    let cg = tree.cgroups();
    tree.write(
        SCOPE,
        "memory.pressure",
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=999\nfull avg10=2.00 avg60=1.00 avg300=0.50 total=55\n",
    );
    let p = cg.memory_pressure(SCOPE).expect("read");
    assert_eq!(p.some.avg10, 12.5);
    assert_eq!(p.full.map(|f| f.total_us), Some(55));

    tree.write(SCOPE, "memory.pressure", "some avg10=12.50\n");
    let msg = cg.memory_pressure(SCOPE).unwrap_err().to_string();
    assert!(
        msg.contains("memory.pressure") && msg.contains("line 1"),
        "{msg}"
    );
}

#[test]
fn limits_read_max_as_none() {
    let tree = FakeTree::new();
    let cg = tree.cgroups();
    tree.write(SCOPE, "memory.high", "max\n")
        .write(SCOPE, "memory.max", "104857600\n");
    assert_eq!(cg.memory_high(SCOPE).expect("high"), None);
    assert_eq!(cg.memory_max(SCOPE).expect("max"), Some(104_857_600));

    tree.write(SCOPE, "memory.high", "maximum\n");
    assert!(matches!(cg.memory_high(SCOPE), Err(CgroupError::Parse(_))));
    fs::remove_file(cg.file(SCOPE, "memory.max")).expect("rm");
    assert!(matches!(
        cg.memory_max(SCOPE),
        Err(CgroupError::Read { .. })
    ));
}

#[test]
fn procs_are_sorted_pids() {
    let tree = FakeTree::new();
    let cg = tree.cgroups();
    tree.write(SCOPE, "cgroup.procs", "4242\n17\n");
    assert_eq!(cg.procs(SCOPE).expect("procs"), vec![17, 4242]);
    tree.write(SCOPE, "cgroup.procs", "");
    assert_eq!(cg.procs(SCOPE).expect("procs"), Vec::<u32>::new());

    tree.write(SCOPE, "cgroup.procs", "17\nx18\n");
    let msg = cg.procs(SCOPE).unwrap_err().to_string();
    assert!(
        msg.contains("cgroup.procs") && msg.contains("line 2"),
        "{msg}"
    );
}

#[test]
fn events_read_flags() {
    let tree = FakeTree::new();
    let cg = tree.cgroups();
    tree.write(SCOPE, "cgroup.events", "populated 1\nfrozen 0\n");
    assert_eq!(
        cg.events(SCOPE).expect("events"),
        CgroupEvents {
            populated: true,
            frozen: false
        }
    );

    tree.write(SCOPE, "cgroup.events", "populated 2\nfrozen 0\n");
    let msg = cg.events(SCOPE).unwrap_err().to_string();
    assert!(msg.contains("populated is 2"), "{msg}");
    tree.write(SCOPE, "cgroup.events", "populated 1\n");
    assert!(
        cg.events(SCOPE)
            .unwrap_err()
            .to_string()
            .contains("missing key frozen")
    );
}

#[test]
fn children_are_sorted_directory_names() {
    let tree = FakeTree::new();
    let slice = "/aw.slice/aw-shop.slice";
    tree.mkdir(&format!("{slice}/c.scope"))
        .mkdir(&format!("{slice}/a.scope"))
        .mkdir(&format!("{slice}/b.scope"))
        .write(slice, "cgroup.procs", "")
        .write(slice, "memory.current", "0\n");
    let names = tree.cgroups().children(slice).expect("children");
    assert_eq!(names, vec!["a.scope", "b.scope", "c.scope"]);
    assert!(
        tree.cgroups()
            .children("/aw.slice/nope.slice")
            .unwrap_err()
            .is_gone()
    );
}

#[test]
fn open_refuses_what_is_not_cgroup2() {
    let tree = FakeTree::new();
    let err = CgroupFs::open_at(tree.dir.path()).unwrap_err();
    assert!(matches!(err, CgroupError::NotCgroup2 { .. }), "{err:?}");
    assert!(err.to_string().contains("not a cgroup2 mount"), "{err}");

    let paths = HostPaths::new(tree.dir.path());
    let err = CgroupFs::open(&paths).unwrap_err();
    let expected: PathBuf = paths.cgroup();
    assert!(
        matches!(&err, CgroupError::Statfs { path, .. } if *path == expected),
        "{err:?}"
    );
}
