//! Thread stacks of a process: how much each reserves and how much of it
//! is resident.
//!
//! `/proc/PID/maps` stopped labelling thread stacks (`[stack:TID]`) in
//! Linux 4.5, so a thread's stack is found from its stack pointer: the
//! second-to-last field of `/proc/PID/task/TID/syscall`, located in the
//! process's mappings. Only the main thread's stack keeps a label,
//! `[stack]`.

use std::fs;
use std::path::Path;

use super::{ParseError, ProcError, ProcFs, classify, read_text};

/// One mapping of `/proc/PID/maps` or `/proc/PID/smaps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// e.g. `rw-p`, `---p` (a guard page).
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    /// File path, `[stack]`, `[heap]`, … or empty for anonymous memory.
    pub name: String,
    /// Resident bytes; only `smaps` has them.
    pub rss: Option<u64>,
    /// Of those, bytes in transparent huge pages (`AnonHugePages`).
    pub anon_huge: u64,
}

impl Mapping {
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// One thread's stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadStack {
    pub tid: u32,
    /// `None` only for a main thread that was running on another CPU when
    /// read: its stack is then the `[stack]` mapping, found by its label.
    pub stack_pointer: Option<u64>,
    pub mapping_start: u64,
    pub mapping_end: u64,
    /// The mapping's size: what the stack reserves (without its guard).
    pub reserved_bytes: u64,
    /// The part of it that is in memory (Rss in smaps).
    pub resident_bytes: u64,
    /// Of that, what sits in transparent huge pages: a stack the kernel
    /// backed with a 2 MiB page is resident in full however little of it
    /// the thread touched.
    pub huge_bytes: u64,
    /// Size of the inaccessible (`---p`) mapping right below the stack, the
    /// guard page(s) pthread puts there; 0 if there is none.
    pub guard_bytes: u64,
    pub is_main: bool,
}

/// A thread whose stack could not be found, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedThread {
    pub tid: u32,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackReport {
    pub stacks: Vec<ThreadStack>,
    pub skipped: Vec<SkippedThread>,
}

/// Parses `maps` or `smaps` text into mappings sorted by address. For
/// smaps, the `Rss:` line of each block fills [`Mapping::rss`].
pub fn parse_maps(path: &Path, text: &str) -> Result<Vec<Mapping>, ParseError> {
    let mut out: Vec<Mapping> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let first = match line.split_whitespace().next() {
            Some(f) => f,
            None => continue,
        };
        if first.ends_with(':') {
            // An smaps attribute line of the mapping above it.
            if first == "Rss:" {
                let last = out.last_mut().ok_or_else(|| {
                    ParseError::new(path, format!("line {line_no}: Rss before any mapping"))
                })?;
                last.rss = Some(parse_kb_line(path, line_no, line)?);
            } else if first == "AnonHugePages:" {
                let last = out.last_mut().ok_or_else(|| {
                    ParseError::new(
                        path,
                        format!("line {line_no}: AnonHugePages before any mapping"),
                    )
                })?;
                last.anon_huge = parse_kb_line(path, line_no, line)?;
            }
            continue;
        }
        out.push(parse_map_line(path, line_no, line)?);
    }
    out.sort_by_key(|m| m.start);
    Ok(out)
}

fn parse_map_line(path: &Path, line_no: usize, line: &str) -> Result<Mapping, ParseError> {
    let bad = |what: &str| ParseError::new(path, format!("line {line_no}: {what}: {line:?}"));
    let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad("bad hex number"));
    let mut fields = line.splitn(6, ' ');
    let range = fields.next().ok_or_else(|| bad("no address range"))?;
    let perms = fields.next().ok_or_else(|| bad("no permissions"))?;
    let offset = fields.next().ok_or_else(|| bad("no offset"))?;
    let _dev = fields.next().ok_or_else(|| bad("no device"))?;
    let inode = fields.next().ok_or_else(|| bad("no inode"))?;
    let name = fields.next().unwrap_or("").trim_start();
    let (start, end) = range
        .split_once('-')
        .ok_or_else(|| bad("address range has no '-'"))?;
    let (start, end) = (hex(start)?, hex(end)?);
    if end < start || perms.len() != 4 {
        return Err(bad("malformed mapping"));
    }
    Ok(Mapping {
        start,
        end,
        perms: perms.to_string(),
        offset: hex(offset)?,
        inode: inode.parse().map_err(|_| bad("inode is not a number"))?,
        name: name.to_string(),
        rss: None,
        anon_huge: 0,
    })
}

fn parse_kb_line(path: &Path, line_no: usize, line: &str) -> Result<u64, ParseError> {
    let bad = || {
        ParseError::new(
            path,
            format!("line {line_no}: expected '<key>: <n> kB': {line:?}"),
        )
    };
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    match (words.next(), words.next()) {
        (Some("kB"), None) => value.checked_mul(1024).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// The user stack pointer from a `task/TID/syscall` file: the second-to-
/// last field, in hex. `None` when the thread was running ("running"),
/// since the kernel only samples stopped or blocked threads.
pub(crate) fn parse_syscall_sp(path: &Path, text: &str) -> Result<Option<u64>, ParseError> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields == ["running"] {
        return Ok(None);
    }
    // "-1 SP PC" when blocked outside a syscall, "NR A1..A6 SP PC" inside.
    if fields.len() != 3 && fields.len() != 9 {
        return Err(ParseError::new(
            path,
            format!("expected 3 or 9 fields, found {}", fields.len()),
        ));
    }
    let sp = fields[fields.len() - 2];
    let digits = sp
        .strip_prefix("0x")
        .ok_or_else(|| ParseError::new(path, format!("stack pointer is not 0x-hex: {sp:?}")))?;
    u64::from_str_radix(digits, 16)
        .map(Some)
        .map_err(|_| ParseError::new(path, format!("stack pointer is not 0x-hex: {sp:?}")))
}

/// Field 29 (kstkesp) of a `stat` file, or None when the kernel hides it
/// (it shows 0 except for exiting or core-dumping threads).
fn parse_kstkesp(path: &Path, bytes: &[u8]) -> Result<Option<u64>, ParseError> {
    let close = bytes
        .iter()
        .rposition(|&b| b == b')')
        .ok_or_else(|| ParseError::new(path, "no ')' after comm"))?;
    let tail = std::str::from_utf8(&bytes[close + 1..])
        .map_err(|_| ParseError::new(path, "fields are not UTF-8"))?;
    let value = tail
        .split_whitespace()
        .nth(29 - 3)
        .ok_or_else(|| ParseError::new(path, "truncated: no field 29"))?;
    let sp: u64 = value
        .parse()
        .map_err(|_| ParseError::new(path, format!("field 29 is not a number: {value:?}")))?;
    Ok((sp != 0).then_some(sp))
}

impl ProcFs {
    /// Every thread's stack; threads whose stack cannot be found are left
    /// out. See [`ProcFs::thread_stack_report`] for why.
    pub fn thread_stacks(&self, pid: u32) -> Result<Vec<ThreadStack>, ProcError> {
        Ok(self.thread_stack_report(pid)?.stacks)
    }

    /// Every thread's stack, and the threads skipped with the reason.
    ///
    /// Stack pointers are read before the mappings, so that a thread
    /// started in between is simply not listed rather than pointing into
    /// a mapping we have not seen. Mappings and Rss both come from one read
    /// of `smaps` (its block headers are `maps` lines), which keeps them
    /// consistent and saves reading `maps` as well.
    pub fn thread_stack_report(&self, pid: u32) -> Result<StackReport, ProcError> {
        let mut report = StackReport::default();
        let mut sps = Vec::new();
        for tid in self.tids(pid)? {
            match self.thread_sp(pid, tid) {
                Ok(sp) => sps.push((tid, sp)),
                Err(ProcError::Gone { .. }) => report.skipped.push(skip(tid, "thread exited")),
                Err(e) => return Err(e),
            }
        }
        let dir = self.pid_dir(pid);
        let smaps_path = dir.join("smaps");
        let bytes = fs::read(&smaps_path).map_err(|e| classify(e, &smaps_path, Some(&dir)))?;
        // File names in mappings are arbitrary bytes; stacks are anonymous.
        let maps = parse_maps(&smaps_path, &String::from_utf8_lossy(&bytes))?;
        for (tid, sp) in sps {
            match locate(&maps, tid, tid == pid, sp) {
                Ok(stack) => report.stacks.push(stack),
                Err(reason) => report.skipped.push(skip(tid, &reason)),
            }
        }
        Ok(report)
    }

    /// A thread's stack pointer: from `syscall`, or when the thread was
    /// running, from kstkesp in its `stat`.
    fn thread_sp(&self, pid: u32, tid: u32) -> Result<Option<u64>, ProcError> {
        let task = self.pid_dir(pid).join("task").join(tid.to_string());
        let syscall = task.join("syscall");
        if let Some(sp) = parse_syscall_sp(&syscall, &read_text(&syscall, Some(&task))?)? {
            return Ok(Some(sp));
        }
        let stat = task.join("stat");
        let bytes = fs::read(&stat).map_err(|e| classify(e, &stat, Some(&task)))?;
        Ok(parse_kstkesp(&stat, &bytes)?)
    }
}

fn skip(tid: u32, reason: &str) -> SkippedThread {
    SkippedThread {
        tid,
        reason: reason.to_string(),
    }
}

/// Finds the stack mapping of one thread in `maps` (sorted by address).
fn locate(
    maps: &[Mapping],
    tid: u32,
    is_main: bool,
    sp: Option<u64>,
) -> Result<ThreadStack, String> {
    let index = match sp {
        Some(sp) => {
            // Mappings do not overlap, so the candidate is the last one
            // starting at or below the stack pointer.
            let i = maps.partition_point(|m| m.start <= sp);
            match i.checked_sub(1) {
                Some(i) if maps[i].contains(sp) => i,
                _ => return Err(format!("stack pointer {sp:#x} is in no mapping")),
            }
        }
        None if is_main => maps
            .iter()
            .position(|m| m.name == "[stack]")
            .ok_or_else(|| "main thread was running and there is no [stack] mapping".to_string())?,
        None => return Err("thread was running; the kernel gave no stack pointer".to_string()),
    };
    let m = &maps[index];
    let guard_bytes = match index.checked_sub(1).map(|i| &maps[i]) {
        Some(below) if below.end == m.start && below.perms.starts_with("---") => below.size(),
        _ => 0,
    };
    let resident_bytes = m
        .rss
        .ok_or_else(|| format!("mapping {:x}-{:x} has no Rss", m.start, m.end))?;
    Ok(ThreadStack {
        tid,
        stack_pointer: sp,
        mapping_start: m.start,
        mapping_end: m.end,
        reserved_bytes: m.size(),
        resident_bytes,
        huge_bytes: m.anon_huge,
        guard_bytes,
        is_main,
    })
}
