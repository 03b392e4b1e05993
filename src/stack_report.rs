//! How much stack each thread of a process reserves and touches, and what
//! shrinking the stacks would save: what `adaptive-workers inspect` prints
//! and the daemon's metrics count.
//!
//! glibc gives a thread made with default attributes a stack of the
//! RLIMIT_STACK soft limit (8 MiB on most hosts; 2 MiB on x86_64 when the
//! limit is unlimited). uWSGI's `threads-stacksize = N` (KB: uWSGI passes
//! `N * 1024` to `pthread_attr_setstacksize`) shrinks only the threads uWSGI
//! makes itself; `LimitSTACK=` on the service shrinks every default-sized
//! thread, and also caps how far the main thread's stack may grow.
//!
//! The reservation is address space, not memory: it counts against
//! `RLIMIT_AS`, uWSGI's `reload-on-as`/`limit-as` and strict overcommit
//! (`vm.overcommit_memory = 2`); the pages a stack touched are its resident
//! part, and that is what a smaller stack would not change.
use std::fs;

use anyhow::{Context, anyhow};
use serde::Serialize;

use crate::procfs::{ProcError, ProcFs, ThreadStack};

/// The recommended stack is this many times the largest resident stack:
/// resident pages are a high-water mark of what the threads needed *so
/// far*; deeper recursion, a rarer code path or an exception unwinding
/// needs more, and running out of stack is a crash, not a slowdown.
pub const MARGIN: u64 = 4;
/// Never recommend less than this (uWSGI and glibc accept 16 KiB, but
/// Python and C extensions want room).
pub const MIN_STACK: u64 = 64 << 10;
/// `LimitSTACK=` also caps the main thread's stack: never below this.
pub const MIN_LIMIT_STACK: u64 = 1 << 20;
/// glibc's default when RLIMIT_STACK is unlimited (ARCH_STACK_DEFAULT_SIZE
/// on x86_64).
pub(crate) const UNLIMITED_DEFAULT: u64 = 2 << 20;
const PAGE: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub target: String,
    pub processes: Vec<ProcessReport>,
    /// Address space all recommendations together would give back.
    pub total_saves_reserved_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    /// master, worker, child or process.
    pub role: String,
    pub threads: usize,
    /// The stack a thread gets from glibc by default in this process.
    pub default_stack_bytes: u64,
    pub reserved_bytes: u64,
    pub resident_bytes: u64,
    pub guard_bytes: u64,
    pub stacks: Vec<StackView>,
    pub skipped: Vec<SkippedView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<Recommendation>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StackView {
    pub tid: u32,
    pub main: bool,
    /// The stack is glibc's default size (not set by the program).
    pub default_sized: bool,
    pub reserved_bytes: u64,
    pub resident_bytes: u64,
    pub guard_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedView {
    pub tid: u32,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Recommendation {
    /// Threads with a default-sized stack (the main thread excluded).
    pub threads: usize,
    /// The most any of them has resident.
    pub peak_resident_bytes: u64,
    /// The stack size recommended for them.
    pub stack_bytes: u64,
    /// uWSGI's `threads-stacksize` (KB) for that size, for uWSGI processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uwsgi_threads_stacksize_kb: Option<u64>,
    /// `LimitSTACK=` for the service (at least what the main thread needs).
    pub limit_stack_bytes: u64,
    pub reserved_now_bytes: u64,
    /// Reserved with the recommended stack size (uWSGI's setting).
    pub reserved_after_bytes: u64,
    /// What `threads-stacksize` would save, if every one of these threads
    /// is uWSGI's own (uWSGI processes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads_stacksize_saves_bytes: Option<u64>,
    /// What `LimitSTACK=` would save.
    pub limit_stack_saves_bytes: u64,
    /// The better of the two that applies: address space given back.
    pub saves_reserved_bytes: u64,
    /// Resident memory a smaller stack would give back (pages past the new
    /// size); zero when every thread fits with room to spare.
    pub saves_resident_bytes: u64,
    /// Default-sized stacks the kernel backed with transparent huge pages,
    /// and what those hold: resident in full however little was touched.
    pub huge_page_stacks: usize,
    pub huge_page_bytes: u64,
}

/// The recommendation for one process, if shrinking would save anything.
pub fn recommend(
    stacks: &[ThreadStack],
    default_stack: u64,
    uwsgi: bool,
) -> Option<Recommendation> {
    let shrinkable: Vec<&ThreadStack> = stacks
        .iter()
        .filter(|s| default_sized(s, default_stack))
        .collect();
    // A stack backed by a transparent huge page is resident in full (2 MiB)
    // however little the thread touched, so it says nothing about what the
    // threads need: judge from the stacks without one, or, if every stack
    // has one, from what lies outside the huge page.
    let small_pages = || shrinkable.iter().filter(|s| s.huge_bytes == 0);
    let peak = match small_pages().map(|s| s.resident_bytes).max() {
        Some(p) => p,
        None => shrinkable
            .iter()
            .map(|s| s.resident_bytes.saturating_sub(s.huge_bytes).max(PAGE))
            .max()?,
    };
    let huge: Vec<&&ThreadStack> = shrinkable.iter().filter(|s| s.huge_bytes > 0).collect();
    let stack = round_up(
        peak.saturating_mul(MARGIN)
            .max(MIN_STACK)
            .next_power_of_two(),
    );
    if stack >= default_stack {
        return None;
    }
    let main_resident = stacks
        .iter()
        .filter(|s| s.is_main)
        .map(|s| s.resident_bytes)
        .max()
        .unwrap_or(0);
    let limit = stack
        .max(round_up(
            main_resident.saturating_mul(MARGIN).next_power_of_two(),
        ))
        .max(MIN_LIMIT_STACK)
        .min(default_stack);
    let n = shrinkable.len() as u64;
    let after = n * stack;
    let by_limit = n * (default_stack - limit);
    let by_uwsgi = uwsgi.then_some(n * default_stack - after);
    Some(Recommendation {
        threads: shrinkable.len(),
        peak_resident_bytes: peak,
        stack_bytes: stack,
        uwsgi_threads_stacksize_kb: uwsgi.then_some(stack >> 10),
        limit_stack_bytes: limit,
        reserved_now_bytes: n * default_stack,
        reserved_after_bytes: after,
        threads_stacksize_saves_bytes: by_uwsgi,
        limit_stack_saves_bytes: by_limit,
        saves_reserved_bytes: by_uwsgi.unwrap_or(0).max(by_limit),
        saves_resident_bytes: shrinkable
            .iter()
            .map(|s| s.resident_bytes.saturating_sub(stack))
            .sum(),
        huge_page_stacks: huge.len(),
        huge_page_bytes: huge.iter().map(|s| s.huge_bytes).sum(),
    })
}

/// A thread stack of glibc's default size. The kernel merges a stack's
/// mapping with an adjacent anonymous mapping of the same flags, so the
/// mapping can be larger than the stack: seen 8 MiB + 16 KiB, and 8 MiB +
/// 1 MiB (CPython's allocator maps 1 MiB arenas, and one landed above a
/// stack). Up to half the default again counts as the default.
pub(crate) fn default_sized(s: &ThreadStack, default_stack: u64) -> bool {
    !s.is_main
        && s.reserved_bytes >= default_stack
        && s.reserved_bytes - default_stack < default_stack / 2
}

fn round_up(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE) * PAGE
}

/// The default thread stack glibc picks from a `/proc/PID/limits` text.
pub fn default_stack_from_limits(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max stack size"))?;
    let soft = line["Max stack size".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(UNLIMITED_DEFAULT);
    }
    let bytes: u64 = soft.parse().ok()?;
    Some(round_up(bytes.max(16 << 10)))
}

/// One process's report, read from `procfs`.
pub fn inspect_process(procfs: &ProcFs, pid: u32, role: &str) -> anyhow::Result<ProcessReport> {
    let gone = |e: ProcError| -> anyhow::Error {
        if e.is_gone() {
            anyhow!("process {pid} is gone (or never was)")
        } else {
            anyhow!("process {pid}: {e}")
        }
    };
    let stat = procfs.pid_stat(pid).map_err(gone)?;
    let limits_path = procfs.pid_dir(pid).join("limits");
    let limits = fs::read_to_string(&limits_path)
        .with_context(|| format!("process {pid}: failed to read {}", limits_path.display()))?;
    let default_stack = default_stack_from_limits(&limits).ok_or_else(|| {
        anyhow!(
            "process {pid}: no \"Max stack size\" in {}",
            limits_path.display()
        )
    })?;
    let report = procfs.thread_stack_report(pid).map_err(gone)?;
    let uwsgi = is_server(procfs, pid, &stat.comm) == Some("uwsgi");
    let stacks: Vec<StackView> = report
        .stacks
        .iter()
        .map(|s| StackView {
            tid: s.tid,
            main: s.is_main,
            default_sized: default_sized(s, default_stack),
            reserved_bytes: s.reserved_bytes,
            resident_bytes: s.resident_bytes,
            guard_bytes: s.guard_bytes,
        })
        .collect();
    Ok(ProcessReport {
        pid,
        comm: stat.comm.clone(),
        role: role.to_string(),
        threads: report.stacks.len() + report.skipped.len(),
        default_stack_bytes: default_stack,
        reserved_bytes: stacks.iter().map(|s| s.reserved_bytes).sum(),
        resident_bytes: stacks.iter().map(|s| s.resident_bytes).sum(),
        guard_bytes: stacks.iter().map(|s| s.guard_bytes).sum(),
        stacks,
        skipped: report
            .skipped
            .iter()
            .map(|s| SkippedView {
                tid: s.tid,
                reason: s.reason.clone(),
            })
            .collect(),
        recommendation: recommend(&report.stacks, default_stack, uwsgi),
    })
}

/// "uwsgi" or "gunicorn" when the process looks like one (by its name or
/// command line).
fn is_server(procfs: &ProcFs, pid: u32, comm: &str) -> Option<&'static str> {
    let cmdline = fs::read(procfs.pid_dir(pid).join("cmdline")).unwrap_or_default();
    let text = format!(
        "{comm} {}",
        String::from_utf8_lossy(&cmdline).replace('\0', " ")
    );
    ["uwsgi", "gunicorn"].into_iter().find(|s| text.contains(s))
}

/// A PID: the process, and when it is a uWSGI or gunicorn master, its
/// children too.
pub fn inspect_pid(procfs: &ProcFs, pid: u32) -> anyhow::Result<Report> {
    let stat = procfs.pid_stat(pid).map_err(|e| {
        if e.is_gone() {
            anyhow!("no process {pid}")
        } else {
            anyhow!("process {pid}: {e}")
        }
    })?;
    let parent_comm = procfs
        .pid_stat(stat.ppid)
        .map(|s| s.comm)
        .unwrap_or_default();
    let master = is_server(procfs, pid, &stat.comm).is_some()
        && is_server(procfs, stat.ppid, &parent_comm).is_none();
    let children = if master {
        procfs.children(pid).unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut processes = vec![inspect_process(
        procfs,
        pid,
        if children.is_empty() {
            "process"
        } else {
            "master"
        },
    )?];
    for child in children {
        match inspect_process(procfs, child, "child") {
            Ok(p) => processes.push(p),
            // A worker that exited meanwhile is not an error.
            Err(e) if e.to_string().contains("is gone") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(finish(pid.to_string(), processes))
}

pub(crate) fn finish(target: String, processes: Vec<ProcessReport>) -> Report {
    let total = processes
        .iter()
        .filter_map(|p| p.recommendation.as_ref())
        .map(|r| r.saves_reserved_bytes)
        .sum();
    Report {
        target,
        processes,
        total_saves_reserved_bytes: total,
    }
}
