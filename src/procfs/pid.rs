//! Per-process files: `stat`, `cgroup`, `task/*/children`, `fd/*`.

use std::fs;
use std::io;
use std::path::Path;

use super::{ParseError, ProcError, ProcFs, classify, read_text};

/// The fields of `/proc/PID/stat` the daemon uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidStat {
    pub pid: u32,
    /// The command name, at most 15 bytes, lossily decoded: it is whatever
    /// the process set, and may hold spaces, parentheses or invalid UTF-8.
    pub comm: String,
    /// R, S, D, Z, T, t, X, I, …
    pub state: char,
    pub ppid: u32,
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    pub num_threads: u32,
    /// Start time after boot, in clock ticks: with `pid` it identifies a
    /// process across PID reuse.
    pub starttime: u64,
    /// Virtual memory size, in bytes.
    pub vsize: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// Parses `/proc/PID/stat`. The comm field is delimited by the *last* ')'
/// because a process may put ')' and spaces into its own name.
pub fn parse_pid_stat(path: &Path, bytes: &[u8]) -> Result<PidStat, ParseError> {
    let bad = |what: &str| ParseError::new(path, what);
    let open = bytes
        .iter()
        .position(|&b| b == b'(')
        .ok_or_else(|| bad("no '(' before comm"))?;
    let close = bytes
        .iter()
        .rposition(|&b| b == b')')
        .ok_or_else(|| bad("no ')' after comm"))?;
    if close < open {
        return Err(bad("')' before '('"));
    }
    let head = std::str::from_utf8(&bytes[..open]).map_err(|_| bad("pid is not UTF-8"))?;
    let pid = head
        .trim()
        .parse()
        .map_err(|_| bad("pid is not a number"))?;
    let comm = String::from_utf8_lossy(&bytes[open + 1..close]).into_owned();
    let tail = std::str::from_utf8(&bytes[close + 1..]).map_err(|_| bad("fields are not UTF-8"))?;
    // fields[0] is field 3 (state) of proc(5).
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let field = |n: usize| -> Result<&str, ParseError> {
        fields
            .get(n - 3)
            .copied()
            .ok_or_else(|| ParseError::new(path, format!("truncated: no field {n}")))
    };
    let num = |n: usize| -> Result<u64, ParseError> {
        let v = field(n)?;
        v.parse()
            .map_err(|_| ParseError::new(path, format!("field {n} is not a number: {v:?}")))
    };
    let small = |n: usize| -> Result<u32, ParseError> {
        u32::try_from(num(n)?)
            .map_err(|_| ParseError::new(path, format!("field {n} is out of range")))
    };
    let mut state_chars = field(3)?.chars();
    let state = match (state_chars.next(), state_chars.next()) {
        (Some(c), None) => c,
        _ => return Err(bad("field 3 (state) is not one character")),
    };
    Ok(PidStat {
        pid,
        comm,
        state,
        ppid: small(4)?,
        utime: num(14)?,
        stime: num(15)?,
        num_threads: small(20)?,
        starttime: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

/// Extracts the cgroup v2 path from `/proc/PID/cgroup` (the `0::` line).
pub fn parse_pid_cgroup(path: &Path, text: &str) -> Result<String, ParseError> {
    for line in text.lines() {
        // "hierarchy-ID:controllers:path"; the path itself may hold ':'.
        let mut parts = line.splitn(3, ':');
        if let (Some("0"), Some(""), Some(cg)) = (parts.next(), parts.next(), parts.next()) {
            if !cg.starts_with('/') {
                return Err(ParseError::new(
                    path,
                    format!("cgroup path is not absolute: {cg:?}"),
                ));
            }
            return Ok(cg.to_string());
        }
    }
    Err(ParseError::new(path, "no cgroup v2 ('0::') line"))
}

impl ProcFs {
    pub fn pid_stat(&self, pid: u32) -> Result<PidStat, ProcError> {
        let dir = self.pid_dir(pid);
        let path = dir.join("stat");
        let bytes = fs::read(&path).map_err(|e| classify(e, &path, Some(&dir)))?;
        Ok(parse_pid_stat(&path, &bytes)?)
    }

    /// The process's cgroup v2 path, e.g. `/system.slice/app.service`.
    pub fn pid_cgroup(&self, pid: u32) -> Result<String, ProcError> {
        let dir = self.pid_dir(pid);
        let path = dir.join("cgroup");
        let text = read_text(&path, Some(&dir))?;
        Ok(parse_pid_cgroup(&path, &text)?)
    }

    /// Children of every thread of `pid`, sorted and without duplicates.
    /// A pre-fork master's workers may be forked by any of its threads, so
    /// reading only `task/PID/children` would miss some.
    pub fn children(&self, pid: u32) -> Result<Vec<u32>, ProcError> {
        let mut out = Vec::new();
        for tid in self.tids(pid)? {
            let task = self.pid_dir(pid).join("task").join(tid.to_string());
            let path = task.join("children");
            let text = match read_text(&path, Some(&task)) {
                Ok(text) => text,
                // The thread exited since the listing: it has no children.
                Err(ProcError::Gone { .. }) => continue,
                Err(e) => return Err(e),
            };
            for word in text.split_whitespace() {
                let child = word.parse().map_err(|_| {
                    ParseError::new(&path, format!("child pid is not a number: {word:?}"))
                })?;
                out.push(child);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Thread ids of `pid` from `/proc/PID/task`, sorted.
    pub fn tids(&self, pid: u32) -> Result<Vec<u32>, ProcError> {
        let dir = self.pid_dir(pid);
        let task_dir = dir.join("task");
        let entries = fs::read_dir(&task_dir).map_err(|e| classify(e, &task_dir, Some(&dir)))?;
        let mut tids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| classify(e, &task_dir, Some(&dir)))?;
            // Anything but a number is not a thread; skip rather than fail.
            if let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                tids.push(tid);
            }
        }
        tids.sort_unstable();
        Ok(tids)
    }

    /// The command line, one argument each (lossily decoded).
    pub fn pid_cmdline(&self, pid: u32) -> Result<Vec<String>, ProcError> {
        self.nul_separated(pid, "cmdline")
    }

    /// The environment the process started with, as `KEY=value` strings.
    pub fn pid_environ(&self, pid: u32) -> Result<Vec<String>, ProcError> {
        self.nul_separated(pid, "environ")
    }

    fn nul_separated(&self, pid: u32, file: &str) -> Result<Vec<String>, ProcError> {
        let dir = self.pid_dir(pid);
        let path = dir.join(file);
        let bytes = fs::read(&path).map_err(|e| classify(e, &path, Some(&dir)))?;
        Ok(bytes
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect())
    }

    /// Inodes of the sockets `pid` holds open, sorted and without
    /// duplicates; matched against sock_diag listeners to find which
    /// process owns a listening socket.
    pub fn socket_inodes(&self, pid: u32) -> Result<Vec<u64>, ProcError> {
        let dir = self.pid_dir(pid);
        let fd_dir = dir.join("fd");
        let entries = fs::read_dir(&fd_dir).map_err(|e| classify(e, &fd_dir, Some(&dir)))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| classify(e, &fd_dir, Some(&dir)))?;
            let link = entry.path();
            let target = match fs::read_link(&link) {
                Ok(t) => t,
                // Closed since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(classify(e, &link, Some(&dir))),
            };
            if let Some(inode) = socket_inode(&target) {
                out.push(inode);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

/// `socket:[12345]` → 12345; anything else → None.
fn socket_inode(target: &Path) -> Option<u64> {
    let s = target.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}
