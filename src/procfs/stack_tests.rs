//! Thread-stack tests: a fake tree with a known layout, and this very
//! process, checked against what glibc says about its own threads.

use std::fs;
use std::sync::mpsc;
use std::thread;

use tempfile::TempDir;

use super::*;

// A process 100 with a main thread, a pthread with a guard page, a thread
// that was running, and one whose stack pointer is nowhere.
const SMAPS: &str = "\
55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                  12 kB
Pss:                  12 kB
VmFlags: rd wr mr mw me ac
7f0000000000-7f0000001000 ---p 00000000 00:00 0 
Size:                  4 kB
Rss:                   0 kB
7f0000001000-7f0000201000 rw-p 00000000 00:00 0 
Size:               2048 kB
Rss:                  64 kB
7f0000201000-7f0000202000 r-xp 00001000 fe:00 1234                       /usr/lib/lib a.so
Size:                  4 kB
Rss:                   4 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  40 kB
";

/// A thread's stat line whose field 29 (kstkesp) is `sp`.
fn stat(sp: u64) -> String {
    format!("101 (w) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 4 0 1 1 1 1 1 1 1 {sp} 0 0 0 0\n")
}

fn fake_process() -> TempDir {
    let dir = TempDir::new().expect("tempdir");
    let w = |rel: &str, text: &str| {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    };
    w("100/smaps", SMAPS);
    w(
        "100/task/100/syscall",
        "0 0x3 0x7ffc00010000 0x1000 0x0 0x0 0x0 0x7ffc00020ef0 0x7f00000011ec\n",
    );
    w("100/task/101/syscall", "-1 0x7f00001ffd10 0x7f0000201829\n");
    w("100/task/102/syscall", "running\n");
    w("100/task/102/stat", &stat(0));
    w(
        "100/task/103/syscall",
        "202 0x1 0x89 0x0 0x0 0x0 0x0 0x1234 0x7f0000201829\n",
    );
    dir
}

#[test]
fn fake_tree_stacks_are_found_by_stack_pointer() {
    let dir = fake_process();
    let report = ProcFs::at(dir.path())
        .thread_stack_report(100)
        .expect("report");
    assert_eq!(report.stacks.len(), 2, "{report:#?}");

    let main = &report.stacks[0];
    assert_eq!((main.tid, main.is_main), (100, true));
    assert_eq!(main.stack_pointer, Some(0x7ffc_0002_0ef0));
    assert_eq!(
        (main.mapping_start, main.mapping_end),
        (0x7ffc_0000_0000, 0x7ffc_0002_1000)
    );
    assert_eq!(main.reserved_bytes, 132 * 1024);
    assert_eq!(main.resident_bytes, 40 * 1024);

    let worker = &report.stacks[1];
    assert_eq!((worker.tid, worker.is_main), (101, false));
    assert_eq!(worker.mapping_start, 0x7f00_0000_1000);
    assert_eq!(worker.reserved_bytes, 2 << 20);
    assert_eq!(worker.resident_bytes, 64 * 1024);
    assert_eq!(worker.guard_bytes, 4096);

    let skipped: Vec<u32> = report.skipped.iter().map(|s| s.tid).collect();
    assert_eq!(skipped, vec![102, 103], "{report:#?}");
    assert!(report.skipped[0].reason.contains("running"));
    assert!(report.skipped[1].reason.contains("0x1234"));
}

#[test]
fn running_main_thread_falls_back_to_the_stack_label() {
    let dir = fake_process();
    fs::write(dir.path().join("100/task/100/syscall"), "running\n").expect("write");
    fs::write(dir.path().join("100/task/100/stat"), stat(0)).expect("write");
    let stacks = ProcFs::at(dir.path()).thread_stacks(100).expect("stacks");
    let main = stacks.iter().find(|s| s.is_main).expect("main thread");
    assert_eq!(main.stack_pointer, None);
    assert_eq!(main.mapping_start, 0x7ffc_0000_0000);
}

#[test]
fn running_thread_uses_kstkesp_when_the_kernel_shows_it() {
    let dir = fake_process();
    fs::write(dir.path().join("100/task/102/stat"), stat(0x7f00_0010_0000)).expect("write");
    let stacks = ProcFs::at(dir.path()).thread_stacks(100).expect("stacks");
    let t = stacks
        .iter()
        .find(|s| s.tid == 102)
        .expect("thread 102 found through kstkesp");
    assert_eq!(t.stack_pointer, Some(0x7f00_0010_0000));
    assert_eq!(t.mapping_start, 0x7f00_0000_1000);
}

#[test]
fn file_names_that_are_not_utf8_do_not_break_stacks() {
    let dir = fake_process();
    let mut smaps = SMAPS
        .replace("/usr/lib/lib a.so", "/srv/app/\u{1}x.so")
        .into_bytes();
    let at = smaps
        .windows(2)
        .position(|w| w == b"\x01x")
        .expect("marker");
    smaps[at] = 0xff;
    fs::write(dir.path().join("100/smaps"), smaps).expect("write");
    let stacks = ProcFs::at(dir.path()).thread_stacks(100).expect("stacks");
    assert_eq!(stacks.len(), 2);
}

#[test]
fn stack_errors() {
    let dir = fake_process();
    let procfs = ProcFs::at(dir.path());
    assert!(procfs.thread_stacks(555).unwrap_err().is_gone());

    fs::write(dir.path().join("100/task/101/syscall"), "-1 nothex 0x1\n").expect("write");
    let msg = procfs.thread_stacks(100).unwrap_err().to_string();
    assert!(
        msg.contains("101/syscall") && msg.contains("0x-hex"),
        "{msg}"
    );

    fs::write(
        dir.path().join("100/task/101/syscall"),
        "-1 0x7f00001ffd10\n",
    )
    .expect("write");
    assert!(matches!(
        procfs.thread_stacks(100),
        Err(ProcError::Parse(_))
    ));

    let dir = fake_process();
    let procfs = ProcFs::at(dir.path());
    fs::write(
        dir.path().join("100/smaps"),
        SMAPS.replace("Rss:                  64 kB", "Rss: 64"),
    )
    .expect("write");
    let msg = procfs.thread_stacks(100).unwrap_err().to_string();
    assert!(msg.contains("100/smaps") && msg.contains("line"), "{msg}");

    fs::write(
        dir.path().join("100/smaps"),
        "7f0000000000-7f0000001000 ---p\n",
    )
    .expect("write");
    assert!(matches!(
        procfs.thread_stacks(100),
        Err(ProcError::Parse(_))
    ));

    fs::remove_file(dir.path().join("100/smaps")).expect("rm");
    let err = procfs.thread_stacks(100).unwrap_err();
    assert!(
        matches!(err, ProcError::Read { .. }),
        "process dir exists, smaps missing: {err:?}"
    );
}

#[test]
fn maps_parse_keeps_names_with_spaces() {
    let maps = parse_maps(std::path::Path::new("maps"), SMAPS).expect("parse");
    assert_eq!(maps.len(), 5);
    assert_eq!(maps[3].name, "/usr/lib/lib a.so");
    assert_eq!(maps[3].offset, 0x1000);
    assert_eq!(maps[3].inode, 1234);
    assert_eq!(maps[1].perms, "---p");
}

/// What glibc says about the calling thread's stack: (lowest address,
/// size, guard size).
fn pthread_stack() -> (u64, u64, u64) {
    // SAFETY: pthread_getattr_np fills the attr we own and destroy; the
    // getters only read it.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
        let mut addr = std::ptr::null_mut();
        let mut size = 0;
        let mut guard = 0;
        assert_eq!(libc::pthread_attr_getstack(&attr, &mut addr, &mut size), 0);
        assert_eq!(libc::pthread_attr_getguardsize(&attr, &mut guard), 0);
        libc::pthread_attr_destroy(&mut attr);
        (addr as u64, size as u64, guard as u64)
    }
}

struct Probe {
    /// The stack size asked for; None for pthread's default.
    asked: Option<u64>,
    tid: u32,
    local: u64,
    stack: (u64, u64, u64),
}

/// Touches `touch` bytes of stack, reports where it is, then blocks until
/// `release` is dropped, so that the kernel can sample its stack pointer.
fn probe(
    asked: Option<u64>,
    touch: usize,
    report: mpsc::Sender<Probe>,
    release: mpsc::Receiver<()>,
) {
    let mut buf = vec![0u8; 0];
    touch_stack(touch, &mut buf);
    let local = 0u8;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let p = Probe {
        asked,
        tid,
        local: &local as *const u8 as u64,
        stack: pthread_stack(),
    };
    report.send(p).expect("send");
    let _ = release.recv();
}

#[inline(never)]
fn touch_stack(bytes: usize, sink: &mut Vec<u8>) {
    let mut page = [0u8; 4096];
    page[0] = 1;
    std::hint::black_box(&mut page);
    if bytes > 4096 {
        touch_stack(bytes - 4096, sink);
    }
    sink.push(page[0]);
}

extern "C" fn raw_pthread(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: arg is the Box'ed channel pair the spawner leaked for us.
    let (tx, rx) = *unsafe { Box::from_raw(arg as *mut (mpsc::Sender<Probe>, mpsc::Receiver<()>)) };
    probe(None, 0, tx, rx);
    std::ptr::null_mut()
}

#[test]
fn real_stacks_of_this_process_match_glibc() {
    let (tx, rx) = mpsc::channel();
    let mut releases = Vec::new();
    let mut handles = Vec::new();
    for size in [2 << 20, 1 << 20] {
        let (rel_tx, rel_rx) = mpsc::channel::<()>();
        let tx = tx.clone();
        let h = thread::Builder::new()
            .stack_size(size)
            .spawn(move || probe(Some(size as u64), 256 * 1024, tx, rel_rx))
            .expect("spawn");
        handles.push(h);
        releases.push(rel_tx);
    }
    // A thread with pthread's default attributes, as C extensions make.
    let (rel_tx, rel_rx) = mpsc::channel::<()>();
    releases.push(rel_tx);
    let arg = Box::into_raw(Box::new((tx.clone(), rel_rx))) as *mut libc::c_void;
    let mut raw: libc::pthread_t = 0;
    // SAFETY: raw_pthread takes ownership of arg; we join it below.
    assert_eq!(
        unsafe { libc::pthread_create(&mut raw, std::ptr::null(), raw_pthread, arg) },
        0
    );

    let probes: Vec<Probe> = (0..3).map(|_| rx.recv().expect("probe")).collect();
    let report = report_with_all(&probes);
    drop(releases);
    for h in handles {
        h.join().expect("join");
    }
    // SAFETY: raw was created above and is joined once.
    assert_eq!(unsafe { libc::pthread_join(raw, std::ptr::null_mut()) }, 0);
    check_probes(&report, &probes);
}

/// Our stack report once every probe shows up in it: a probe that has
/// sent but not yet blocked in recv() is "running", without a stack
/// pointer, so on a busy machine it takes a few tries.
fn report_with_all(probes: &[Probe]) -> StackReport {
    let procfs = ProcFs::new(&crate::paths::HostPaths::system());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let report = procfs
            .thread_stack_report(std::process::id())
            .expect("report");
        let all = probes
            .iter()
            .all(|p| report.stacks.iter().any(|s| s.tid == p.tid));
        if all || std::time::Instant::now() > deadline {
            return report;
        }
        thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn check_probes(report: &StackReport, probes: &[Probe]) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut limit) },
        0
    );
    for p in probes {
        let s = report
            .stacks
            .iter()
            .find(|s| s.tid == p.tid)
            .unwrap_or_else(|| panic!("no stack for thread {}: {report:#?}", p.tid));
        let sp = s
            .stack_pointer
            .expect("a blocked thread has a stack pointer");
        let (addr, size, guard) = p.stack;
        assert!(s.mapping_start <= sp && sp < s.mapping_end, "{s:?}");
        assert!(
            s.mapping_start <= p.local && p.local < s.mapping_end,
            "{s:?}"
        );
        // The kernel may merge the stack with an adjacent anonymous
        // mapping (another test's thread made in the meantime): the
        // mapping found holds the stack, and may be larger.
        assert!(
            s.mapping_start <= addr && addr + size <= s.mapping_end,
            "{s:?} does not hold {addr:#x}+{size:#x}"
        );
        if (s.mapping_start, s.reserved_bytes) != (addr, size) {
            continue;
        }
        assert_eq!(s.guard_bytes, guard, "{s:?}");
        assert!(guard >= 4096, "{s:?}");
        assert!(!s.is_main);
        match p.asked {
            Some(asked) => {
                // glibc may hand out a cached, larger stack of a thread
                // that exited (another test's): what pthread says the
                // thread has was checked above.
                assert!(s.reserved_bytes >= asked, "{s:?}");
                // These threads touched 256 KiB of their stacks.
                assert!(s.resident_bytes >= 256 * 1024, "{s:?}");
                assert!(s.resident_bytes <= s.reserved_bytes, "{s:?}");
            }
            None if limit.rlim_cur == 8 << 20 => {
                assert_eq!(
                    s.reserved_bytes,
                    8 << 20,
                    "pthread's default stack is RLIMIT_STACK"
                );
            }
            None => {}
        }
    }
    let main = report
        .stacks
        .iter()
        .find(|s| s.is_main)
        .expect("main thread's stack");
    let maps_path = crate::paths::HostPaths::system().proc().join("self/maps");
    let maps = fs::read_to_string(&maps_path).expect("maps");
    let maps = parse_maps(&maps_path, &maps).expect("parse");
    let label = maps.iter().find(|m| m.name == "[stack]").expect("[stack]");
    assert_eq!(main.mapping_start, label.start, "{main:?}");
}

#[test]
fn a_stack_on_a_transparent_huge_page_says_so() {
    let smaps = SMAPS.replace(
        "Size:               2048 kB\nRss:                  64 kB\n",
        "Size:               2048 kB\nRss:                2048 kB\nAnonHugePages:      2048 kB\n",
    );
    let maps = parse_maps(std::path::Path::new("/proc/100/smaps"), &smaps).unwrap();
    let stack = maps.iter().find(|m| m.start == 0x7f00_0000_1000).unwrap();
    assert_eq!(stack.rss, Some(2048 << 10));
    assert_eq!(stack.anon_huge, 2048 << 10);
    assert!(
        maps.iter()
            .filter(|m| m.start != 0x7f00_0000_1000)
            .all(|m| m.anon_huge == 0)
    );
    let bad = SMAPS.replace("Rss:                  64 kB", "AnonHugePages: lots");
    assert!(parse_maps(std::path::Path::new("/proc/100/smaps"), &bad).is_err());
}
