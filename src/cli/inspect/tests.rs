//! The recommendation and the table on fake stacks, then the real thing on
//! a helper process with threads of known stack sizes.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use super::*;
use crate::paths::HostPaths;
use crate::procfs::ThreadStack;

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

fn stack(tid: u32, main: bool, reserved: u64, resident: u64) -> ThreadStack {
    ThreadStack {
        tid,
        stack_pointer: Some(0x7f00_0000_0000),
        mapping_start: 0x7f00_0000_0000,
        mapping_end: 0x7f00_0000_0000 + reserved,
        reserved_bytes: reserved,
        resident_bytes: resident,
        huge_bytes: 0,
        guard_bytes: if main { 0 } else { 4 * KIB },
        is_main: main,
    }
}

/// A uWSGI worker with `threads = 50`: a main thread and 49 request
/// threads at glibc's default 8 MiB, plus one thread of the app's own.
fn worker() -> Vec<ThreadStack> {
    let mut s = vec![stack(100, true, 132 * KIB, 40 * KIB)];
    for i in 0..49 {
        s.push(stack(
            101 + i,
            false,
            8 * MIB,
            (4 + u64::from(i % 5) * 4) * KIB,
        ));
    }
    s.push(stack(200, false, 256 * KIB, 12 * KIB));
    s
}

#[test]
fn recommends_four_times_the_peak_as_a_power_of_two() {
    let r = recommend(&worker(), 8 * MIB, true).expect("a recommendation");
    assert_eq!(r.threads, 49);
    assert_eq!(r.peak_resident_bytes, 20 * KIB);
    // 4 × 20K = 80K → 128K.
    assert_eq!(r.stack_bytes, 128 * KIB);
    assert_eq!(r.uwsgi_threads_stacksize_kb, Some(128));
    assert_eq!(r.reserved_now_bytes, 49 * 8 * MIB);
    assert_eq!(r.reserved_after_bytes, 49 * 128 * KIB);
    assert_eq!(
        r.threads_stacksize_saves_bytes,
        Some(49 * (8 * MIB - 128 * KIB))
    );
    // LimitSTACK also caps the main thread: at least 1M.
    assert_eq!(r.limit_stack_bytes, MIB);
    assert_eq!(r.limit_stack_saves_bytes, 49 * 7 * MIB);
    assert_eq!(r.saves_reserved_bytes, 49 * (8 * MIB - 128 * KIB));
    assert_eq!(r.saves_resident_bytes, 0);
}

#[test]
fn small_peaks_get_the_floor_and_big_main_stacks_raise_limit_stack() {
    let s = vec![
        stack(1, true, 4 * MIB, 700 * KIB),
        stack(2, false, 8 * MIB, 4 * KIB),
    ];
    let r = recommend(&s, 8 * MIB, false).unwrap();
    assert_eq!(r.stack_bytes, MIN_STACK);
    assert_eq!(r.uwsgi_threads_stacksize_kb, None);
    assert_eq!(r.threads_stacksize_saves_bytes, None);
    // 4 × 700K = 2.7M → 4M.
    assert_eq!(r.limit_stack_bytes, 4 * MIB);
    assert_eq!(r.saves_reserved_bytes, 4 * MIB);
}

#[test]
fn nothing_to_recommend() {
    // Only custom-sized threads.
    let custom = vec![
        stack(1, true, 132 * KIB, 8 * KIB),
        stack(2, false, 256 * KIB, 8 * KIB),
    ];
    assert_eq!(recommend(&custom, 8 * MIB, true), None);
    // Threads that touched so much that no smaller stack is safe.
    let deep = vec![stack(2, false, 8 * MIB, 3 * MIB)];
    assert_eq!(recommend(&deep, 8 * MIB, true), None);
    assert_eq!(recommend(&[], 8 * MIB, true), None);
}

#[test]
fn default_stack_from_the_limits_file() {
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max cpu time              unlimited            unlimited            seconds   \n\
                  Max stack size            8388608              unlimited            bytes     \n";
    assert_eq!(default_stack_from_limits(limits), Some(8 * MIB));
    let unlimited = limits.replace("8388608  ", "unlimited");
    assert_eq!(
        default_stack_from_limits(&unlimited),
        Some(UNLIMITED_DEFAULT)
    );
    let tiny = limits.replace("8388608", "1000   ");
    assert_eq!(default_stack_from_limits(&tiny), Some(16 * KIB));
    let odd = limits.replace("8388608", "8388609");
    assert_eq!(default_stack_from_limits(&odd), Some(8 * MIB + 4096));
    assert_eq!(default_stack_from_limits("Max cpu time 1 1 s\n"), None);
}

fn fake_report() -> Report {
    let stacks = worker();
    let views = stacks
        .iter()
        .map(|s| StackView {
            tid: s.tid,
            main: s.is_main,
            default_sized: !s.is_main && s.reserved_bytes == 8 * MIB,
            reserved_bytes: s.reserved_bytes,
            resident_bytes: s.resident_bytes,
            guard_bytes: s.guard_bytes,
        })
        .collect::<Vec<_>>();
    let p = ProcessReport {
        pid: 4242,
        comm: "uwsgi".into(),
        role: "worker".into(),
        threads: 51,
        default_stack_bytes: 8 * MIB,
        reserved_bytes: views.iter().map(|s| s.reserved_bytes).sum(),
        resident_bytes: views.iter().map(|s| s.resident_bytes).sum(),
        guard_bytes: views.iter().map(|s| s.guard_bytes).sum(),
        stacks: views,
        skipped: vec![SkippedView {
            tid: 300,
            reason: "thread was running; the kernel gave no stack pointer".into(),
        }],
        recommendation: recommend(&stacks, 8 * MIB, true),
    };
    let mut master = p.clone();
    master.pid = 4200;
    master.role = "master".into();
    master.recommendation = None;
    master.stacks.truncate(1);
    finish("shop (uwsgi-shop.service)".into(), vec![master, p])
}

#[test]
fn renders_a_table_and_the_recommendation() {
    let text = render(&fake_report());
    assert!(
        text.starts_with("inspect shop (uwsgi-shop.service): 2 process(es)\n"),
        "{text}"
    );
    assert!(
        text.contains("PID 4242 (uwsgi, worker): 51 threads; stacks reserve 392M"),
        "{text}"
    );
    assert!(text.contains("default thread stack 8M"), "{text}");
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("101 "))
        .unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, ["101", "default", "8M", "4K", "4K"]);
    let main = text
        .lines()
        .find(|l| l.trim_start().starts_with("100 "))
        .unwrap();
    assert!(main.contains("main"), "{main}");
    assert!(
        text.contains("     300  skipped: thread was running"),
        "{text}"
    );
    assert!(text.contains("threads-stacksize = 128"), "{text}");
    assert!(text.contains("LimitSTACK=1M"), "{text}");
    assert!(
        text.contains("49 threads reserve the default 8M stack"),
        "{text}"
    );
    assert!(text.contains("no recommendation"), "{text}");
    assert!(
        text.contains("all processes together: the recommendation saves 386M"),
        "{text}"
    );
}

#[test]
fn json_has_the_numbers() {
    let json: serde_json::Value = serde_json::to_value(fake_report()).unwrap();
    let worker = &json["processes"][1];
    assert_eq!(worker["pid"], 4242);
    assert_eq!(worker["recommendation"]["uwsgi_threads_stacksize_kb"], 128);
    assert_eq!(worker["stacks"][1]["reserved_bytes"], 8 * MIB);
    assert_eq!(worker["skipped"][0]["tid"], 300);
    assert!(json["processes"][0].get("recommendation").is_none());
}

/// Processes this test started, killed however the test ends.
struct Helpers(Vec<u32>, Option<Child>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(*pid as i32).expect("pid"),
                rustix::process::Signal::KILL,
            );
        }
        if let Some(c) = &mut self.1 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const HELPER: &str = r#"
import os, sys, threading, time
def start():
    ev = threading.Event()
    threading.stack_size(256 * 1024)
    threading.Thread(target=ev.wait, daemon=True).start()
    threading.stack_size(0)
    threading.Thread(target=ev.wait, daemon=True).start()
    time.sleep(0.2)
if len(sys.argv) > 1 and os.fork() == 0:
    start()
    os.write(1, b"child %d\n" % os.getpid())
    time.sleep(60)
    os._exit(0)
start()
os.write(1, b"main %d\n" % os.getpid())
time.sleep(60)
"#;

/// Starts the helper (as a pretend gunicorn master with a child when
/// `master`), with RLIMIT_STACK at 4 MiB; returns the PIDs it printed.
fn spawn_helper(master: bool) -> Option<(Helpers, Vec<(String, u32)>)> {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", HELPER]);
    if master {
        cmd.arg("gunicorn");
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
    unsafe {
        cmd.pre_exec(|| {
            let lim = rustix::process::Rlimit {
                current: Some(4 << 20),
                maximum: None,
            };
            rustix::process::setrlimit(rustix::process::Resource::Stack, lim)?;
            Ok(())
        });
    }
    let Ok(mut child) = cmd.spawn() else {
        eprintln!("python3 is not installed: skipping the real inspect test");
        return None;
    };
    let out = child.stdout.take().expect("stdout");
    let mut helpers = Helpers(Vec::new(), Some(child));
    let mut lines = BufReader::new(out).lines();
    let mut pids = Vec::new();
    for _ in 0..if master { 2 } else { 1 } {
        let line = lines.next().expect("a line").expect("text");
        let (who, pid) = line.split_once(' ').expect("who pid");
        let pid: u32 = pid.parse().expect("pid");
        helpers.0.push(pid);
        pids.push((who.to_string(), pid));
    }
    Some((helpers, pids))
}

fn check_threads(p: &ProcessReport) {
    assert_eq!(p.default_stack_bytes, 4 * MIB, "RLIMIT_STACK of the helper");
    let custom: Vec<_> = p
        .stacks
        .iter()
        .filter(|s| !s.main && !s.default_sized)
        .collect();
    let default: Vec<_> = p.stacks.iter().filter(|s| s.default_sized).collect();
    assert!(
        custom.iter().any(|s| s.reserved_bytes == 256 * KIB),
        "{p:#?}"
    );
    assert!(
        default.iter().any(|s| s.reserved_bytes == 4 * MIB),
        "{p:#?}"
    );
    assert!(default.iter().all(|s| s.guard_bytes > 0), "{p:#?}");
    assert!(p.stacks.iter().any(|s| s.main));
    let r = p.recommendation.as_ref().expect("a recommendation");
    assert_eq!(r.threads, default.len());
    assert!(r.stack_bytes < 4 * MIB);
}

#[test]
fn real_process_with_known_stack_sizes() {
    let Some((_helpers, pids)) = spawn_helper(false) else {
        return;
    };
    let procfs = ProcFs::new(&HostPaths::system());
    let report = inspect_pid(&procfs, pids[0].1).expect("inspects");
    assert_eq!(report.processes.len(), 1);
    assert_eq!(report.processes[0].role, "process");
    check_threads(&report.processes[0]);
    let text = render(&report);
    assert!(text.contains("  custom        256K"), "{text}");
    assert!(text.contains("  default         4M"), "{text}");
}

#[test]
fn real_master_and_its_child() {
    let Some((_helpers, pids)) = spawn_helper(true) else {
        return;
    };
    let main = pids
        .iter()
        .find(|(w, _)| w == "main")
        .unwrap_or_else(|| panic!("{pids:?}"))
        .1;
    let child = pids.iter().find(|(w, _)| w == "child").unwrap().1;
    let report = inspect_pid(&ProcFs::new(&HostPaths::system()), main).expect("inspects");
    let roles: Vec<(u32, &str)> = report
        .processes
        .iter()
        .map(|p| (p.pid, p.role.as_str()))
        .collect();
    assert_eq!(roles, [(main, "master"), (child, "child")]);
    for p in &report.processes {
        check_threads(p);
    }
}

#[test]
fn a_missing_pid_is_named() {
    let err = inspect_pid(&ProcFs::new(&HostPaths::system()), u32::MAX - 1).unwrap_err();
    assert_eq!(err.to_string(), format!("no process {}", u32::MAX - 1));
}

#[test]
fn a_stack_merged_with_its_neighbour_is_still_default_sized() {
    let mut stacks = worker();
    stacks[1].reserved_bytes = 8 * MIB + 16 * KIB;
    stacks[2].reserved_bytes = 8 * MIB + 48 * KIB;
    stacks[3].reserved_bytes = 9 * MIB; // with a 1 MiB Python arena above
    stacks[4].reserved_bytes = 12 * MIB; // not a default stack
    let r = recommend(&stacks, 8 * MIB, true).unwrap();
    assert_eq!(r.threads, 48, "49 default-sized, one of them 12M");
}

#[test]
fn huge_page_backed_stacks_do_not_hide_the_recommendation() {
    // Some of the 49 request threads got a 2 MiB transparent huge page at
    // the top of their stack: resident 2M, touched a few KiB.
    let mut stacks = worker();
    for s in stacks.iter_mut().filter(|s| !s.is_main).take(5) {
        s.resident_bytes = 2 * MIB;
        s.huge_bytes = 2 * MIB;
    }
    let r = recommend(&stacks, 8 * MIB, true).expect("still worth shrinking");
    assert!(r.stack_bytes < 2 * MIB, "{r:?}");
    assert_eq!(r.huge_page_stacks, 5);
    assert_eq!(r.huge_page_bytes, 10 * MIB);
    // Each huge-page stack gives back what lies past the new size.
    assert!(
        r.saves_resident_bytes >= 5 * (2 * MIB - r.stack_bytes),
        "{r:?}"
    );
    // Every stack on a huge page: judged from what lies outside it.
    for s in stacks.iter_mut().filter(|s| !s.is_main) {
        s.resident_bytes = 2 * MIB + 8 * KIB;
        s.huge_bytes = 2 * MIB;
    }
    let r = recommend(&stacks, 8 * MIB, true).expect("still worth shrinking");
    assert_eq!(r.peak_resident_bytes, 8 * KIB);
}
