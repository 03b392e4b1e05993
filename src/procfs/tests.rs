//! Tests on fake `/proc` trees in a tempdir: one success and one failure
//! case per file, and gone vs broken.

use std::fs;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use super::*;

struct FakeProc {
    dir: TempDir,
}

impl FakeProc {
    fn new() -> Self {
        Self {
            dir: TempDir::new().expect("tempdir"),
        }
    }

    fn write(&self, rel: &str, content: &str) -> &Self {
        self.write_bytes(rel, content.as_bytes())
    }

    fn write_bytes(&self, rel: &str, content: &[u8]) -> &Self {
        let path = self.dir.path().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
        self
    }

    fn mkdir(&self, rel: &str) -> &Self {
        fs::create_dir_all(self.dir.path().join(rel)).expect("mkdir");
        self
    }

    fn symlink(&self, rel: &str, target: &str) -> &Self {
        let path = self.dir.path().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, path).expect("symlink");
        self
    }

    fn procfs(&self) -> ProcFs {
        ProcFs::at(self.dir.path())
    }
}

const MEMINFO: &str = "MemTotal:       16000000 kB
MemFree:         2000000 kB
MemAvailable:    4000000 kB
Buffers:          100000 kB
Cached:          3000000 kB
SwapCached:            0 kB
AnonPages:       9000000 kB
Shmem:             50000 kB
SwapTotal:       1000000 kB
SwapFree:         900000 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

#[test]
fn meminfo_is_in_bytes() {
    let fake = FakeProc::new();
    fake.write("meminfo", MEMINFO);
    let m = fake.procfs().meminfo().expect("meminfo");
    assert_eq!(m.total, 16_000_000 * 1024);
    assert_eq!(m.available, 4_000_000 * 1024);
    assert_eq!(m.free, 2_000_000 * 1024);
    assert_eq!(m.anon_pages, 9_000_000 * 1024);
    assert_eq!(m.swap_free, 900_000 * 1024);
    assert!((m.utilisation() - 0.75).abs() < 1e-9);
}

#[test]
fn meminfo_missing_file_is_a_read_error_with_path() {
    let fake = FakeProc::new();
    let err = fake.procfs().meminfo().unwrap_err();
    assert!(matches!(err, ProcError::Read { .. }), "{err:?}");
    assert!(!err.is_gone());
    let msg = err.to_string();
    assert!(
        msg.starts_with("failed to read ") && msg.contains("meminfo"),
        "{msg}"
    );
}

#[test]
fn meminfo_garbage_value_names_file_and_line() {
    let fake = FakeProc::new();
    fake.write("meminfo", &MEMINFO.replace("4000000 kB", "lots kB"));
    let msg = fake.procfs().meminfo().unwrap_err().to_string();
    assert!(
        msg.contains("meminfo") && msg.contains("line 3") && msg.contains("not a number"),
        "{msg}"
    );
}

#[test]
fn meminfo_truncated_line_and_missing_key_are_errors() {
    let fake = FakeProc::new();
    fake.write(
        "meminfo",
        &MEMINFO.replace("MemAvailable:    4000000 kB", "MemAvailable:"),
    );
    let err = fake.procfs().meminfo().unwrap_err();
    assert!(matches!(err, ProcError::Parse(_)), "{err:?}");

    let without = MEMINFO
        .lines()
        .filter(|l| !l.starts_with("MemAvailable"))
        .collect::<Vec<_>>();
    fake.write("meminfo", &without.join("\n"));
    let msg = fake.procfs().meminfo().unwrap_err().to_string();
    assert!(msg.contains("missing key MemAvailable"), "{msg}");

    fake.write("meminfo", "MemTotal 12 kB\n");
    assert!(
        fake.procfs().meminfo().is_err(),
        "a line without ':' must not parse"
    );
}

const PSI: &str = "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n\
                   full avg10=0.50 avg60=0.10 avg300=0.00 total=4567\n";

#[test]
fn pressure_parses_some_and_full() {
    let fake = FakeProc::new();
    fake.write("pressure/memory", PSI);
    let p = fake.procfs().pressure("memory").expect("pressure");
    assert_eq!(p.some.avg10, 1.5);
    assert_eq!(p.some.avg60, 0.25);
    assert_eq!(p.some.total_us, 123_456);
    let full = p.full.expect("full line");
    assert_eq!(full.avg10, 0.5);
    assert_eq!(full.total_us, 4567);
}

#[test]
fn pressure_without_full_line_has_none() {
    let fake = FakeProc::new();
    fake.write(
        "pressure/cpu",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n",
    );
    let p = fake.procfs().pressure("cpu").expect("pressure");
    assert_eq!(p.full, None);
    assert_eq!(p.some.total_us, 9);
}

#[test]
fn pressure_errors() {
    let fake = FakeProc::new();
    let procfs = fake.procfs();
    assert!(matches!(
        procfs.pressure("memory"),
        Err(ProcError::Read { .. })
    ));

    let cases = [
        ("garbage", "hello world\n"),
        (
            "bad number",
            "some avg10=x avg60=0.00 avg300=0.00 total=1\n",
        ),
        ("truncated", "some avg10=0.00 avg60=0.00\n"),
        (
            "no some",
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n",
        ),
        (
            "not a number",
            "some avg10=NaN avg60=0.00 avg300=0.00 total=1\n",
        ),
        ("negative", "some avg10=-1 avg60=0.00 avg300=0.00 total=1\n"),
        (
            "repeated",
            "some avg10=0 avg60=0 avg300=0 total=1\nsome avg10=0 avg60=0 avg300=0 total=1\n",
        ),
        ("empty", ""),
    ];
    for (what, text) in cases {
        fake.write("pressure/memory", text);
        let err = procfs.pressure("memory").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ProcError::Parse(_)), "{what}: {err:?}");
        assert!(
            msg.starts_with("failed to parse ") && msg.contains("pressure/memory"),
            "{what}: {msg}"
        );
    }
}

#[test]
fn pressure_refuses_names_that_are_paths() {
    let fake = FakeProc::new();
    fake.write("meminfo", MEMINFO);
    let err = fake.procfs().pressure("../meminfo").unwrap_err();
    assert!(matches!(err, ProcError::InvalidName { .. }), "{err:?}");
}

#[test]
fn trigger_spec_is_in_microseconds() {
    let spec = trigger_spec(false, Duration::from_millis(150), Duration::from_secs(1));
    assert_eq!(spec, "some 150000 1000000");
    let spec = trigger_spec(true, Duration::from_millis(50), Duration::from_millis(500));
    assert_eq!(spec, "full 50000 500000");
}

#[test]
fn trigger_rejects_bad_windows_before_opening() {
    // The path does not exist: these must fail on validation, not on open.
    let path = Path::new("/nonexistent/pressure/memory");
    for (stall, window) in [(2000, 1000), (0, 1000), (100, 200), (100, 11_000)] {
        let err = PsiTrigger::open(
            path,
            false,
            Duration::from_millis(stall),
            Duration::from_millis(window),
        )
        .unwrap_err();
        assert!(
            matches!(err, ProcError::TriggerWrite { .. }),
            "{stall}/{window}: {err:?}"
        );
    }
    let err = PsiTrigger::open(
        path,
        false,
        Duration::from_millis(100),
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(matches!(err, ProcError::TriggerOpen { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/pressure/memory"));
}

// Field 3 onwards of a real stat line, after the comm.
const STAT_TAIL: &str = "S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 30 0 0 20 0 3 0 \
                         987654 123456789 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 0 17 1 \
                         0 0 0 0 0 0 0 0 0 0 0 0 0\n";

#[test]
fn pid_stat_parses_comm_with_spaces_and_parens() {
    let fake = FakeProc::new();
    fake.write(
        "4242/stat",
        &format!("4242 (uwsgi (worker 1)) x) {STAT_TAIL}"),
    );
    let st = fake.procfs().pid_stat(4242).expect("stat");
    assert_eq!(st.pid, 4242);
    assert_eq!(st.comm, "uwsgi (worker 1)) x");
    assert_eq!(st.state, 'S');
    assert_eq!(st.ppid, 1);
    assert_eq!(st.utime, 150);
    assert_eq!(st.stime, 30);
    assert_eq!(st.num_threads, 3);
    assert_eq!(st.starttime, 987_654);
    assert_eq!(st.vsize, 123_456_789);
    assert_eq!(st.rss_pages, 2500);
}

#[test]
fn pid_stat_keeps_non_utf8_comm() {
    let fake = FakeProc::new();
    let mut bytes = b"7 (a\xffb) ".to_vec();
    bytes.extend_from_slice(STAT_TAIL.as_bytes());
    fake.write_bytes("7/stat", &bytes);
    let st = fake.procfs().pid_stat(7).expect("stat");
    assert_eq!(st.comm, "a\u{fffd}b");
}

#[test]
fn pid_stat_gone_vs_broken() {
    let fake = FakeProc::new();
    let err = fake.procfs().pid_stat(99).unwrap_err();
    assert!(err.is_gone(), "no /proc/99 at all: {err:?}");
    assert!(err.to_string().contains("99/stat"));

    fake.mkdir("99");
    let err = fake.procfs().pid_stat(99).unwrap_err();
    assert!(
        !err.is_gone(),
        "the process exists but its stat is missing: {err:?}"
    );
    assert!(matches!(err, ProcError::Read { .. }));
}

#[test]
fn pid_stat_truncated_and_garbage() {
    let fake = FakeProc::new();
    fake.write("5/stat", "5 (sh) S 1 5 5 0\n");
    let msg = fake.procfs().pid_stat(5).unwrap_err().to_string();
    assert!(msg.contains("5/stat") && msg.contains("truncated"), "{msg}");

    fake.write("5/stat", "garbage without parentheses\n");
    assert!(matches!(
        fake.procfs().pid_stat(5),
        Err(ProcError::Parse(_))
    ));

    fake.write(
        "5/stat",
        &format!("5 (sh) {}", STAT_TAIL.replacen("S 1 ", "S x ", 1)),
    );
    let msg = fake.procfs().pid_stat(5).unwrap_err().to_string();
    assert!(msg.contains("field 4"), "{msg}");
}

#[test]
fn pid_cgroup_takes_the_v2_line() {
    let fake = FakeProc::new();
    fake.write(
        "10/cgroup",
        "4:memory:/user.slice\n0::/aw.slice/aw-shop.slice/w:1.scope\n1:name=systemd:/x\n",
    );
    assert_eq!(
        fake.procfs().pid_cgroup(10).expect("cgroup"),
        "/aw.slice/aw-shop.slice/w:1.scope"
    );
}

#[test]
fn pid_cgroup_errors() {
    let fake = FakeProc::new();
    assert!(fake.procfs().pid_cgroup(10).unwrap_err().is_gone());
    fake.write("10/cgroup", "4:memory:/user.slice\n");
    let msg = fake.procfs().pid_cgroup(10).unwrap_err().to_string();
    assert!(
        msg.contains("10/cgroup") && msg.contains("no cgroup v2"),
        "{msg}"
    );
    fake.write("10/cgroup", "0::relative\n");
    assert!(matches!(
        fake.procfs().pid_cgroup(10),
        Err(ProcError::Parse(_))
    ));
}

#[test]
fn children_is_the_union_over_threads() {
    let fake = FakeProc::new();
    fake.write("20/task/20/children", "31 30 ")
        .write("20/task/21/children", "30 40\n")
        .write("20/task/22/children", "")
        .mkdir("20/task/not-a-tid");
    assert_eq!(
        fake.procfs().children(20).expect("children"),
        vec![30, 31, 40]
    );
    assert_eq!(fake.procfs().tids(20).expect("tids"), vec![20, 21, 22]);
}

#[test]
fn children_errors() {
    let fake = FakeProc::new();
    assert!(fake.procfs().children(20).unwrap_err().is_gone());

    fake.write("20/task/20/children", "30 x\n");
    let msg = fake.procfs().children(20).unwrap_err().to_string();
    assert!(
        msg.contains("20/task/20/children") && msg.contains("\"x\""),
        "{msg}"
    );

    // The thread exists but the kernel has no children file: broken.
    fs::remove_file(fake.dir.path().join("20/task/20/children")).expect("rm");
    let err = fake.procfs().children(20).unwrap_err();
    assert!(matches!(err, ProcError::Read { .. }), "{err:?}");
}

#[test]
fn socket_inodes_reads_fd_links() {
    let fake = FakeProc::new();
    fake.symlink("30/fd/0", "/dev/null")
        .symlink("30/fd/3", "socket:[5005]")
        .symlink("30/fd/4", "pipe:[77]")
        .symlink("30/fd/5", "socket:[12]")
        .symlink("30/fd/6", "socket:[5005]")
        .symlink("30/fd/7", "socket:[oops]");
    assert_eq!(
        fake.procfs().socket_inodes(30).expect("inodes"),
        vec![12, 5005]
    );
}

#[test]
fn socket_inodes_gone_vs_broken() {
    let fake = FakeProc::new();
    assert!(fake.procfs().socket_inodes(30).unwrap_err().is_gone());
    fake.mkdir("30");
    let err = fake.procfs().socket_inodes(30).unwrap_err();
    assert!(matches!(err, ProcError::Read { .. }), "{err:?}");
}
