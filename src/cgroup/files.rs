//! Parsers of cgroup v2 control files. Each takes the file's path (for
//! errors only) and its text, so that they are tested without a tree.

use std::path::Path;

use crate::procfs::ParseError;

/// `memory.stat`, in bytes. `anon`, `file` and `shmem` are required; the
/// others are `None` on kernels that do not report them (`kernel` came in
/// 5.18, for instance), rather than a made-up 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStat {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub kernel: Option<u64>,
    pub kernel_stack: Option<u64>,
    pub pagetables: Option<u64>,
    pub sock: Option<u64>,
    pub file_mapped: Option<u64>,
    pub file_dirty: Option<u64>,
    pub file_writeback: Option<u64>,
    pub anon_thp: Option<u64>,
    pub inactive_anon: Option<u64>,
    pub active_anon: Option<u64>,
    pub inactive_file: Option<u64>,
    pub active_file: Option<u64>,
    pub unevictable: Option<u64>,
    pub slab_reclaimable: Option<u64>,
    pub slab_unreclaimable: Option<u64>,
}

/// `memory.events`: how often each limit was hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryEvents {
    pub low: u64,
    pub high: u64,
    pub max: u64,
    pub oom: u64,
    pub oom_kill: u64,
    /// 0 on kernels before 5.17, which do not count group kills.
    pub oom_group_kill: u64,
}

/// `cgroup.events`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupEvents {
    /// Some process lives in the cgroup or below it.
    pub populated: bool,
    pub frozen: bool,
}

/// A file holding one number, e.g. `memory.current`.
pub fn parse_u64(path: &Path, text: &str) -> Result<u64, ParseError> {
    let value = text.trim();
    if value.is_empty() {
        return Err(ParseError::new(path, "empty file"));
    }
    value
        .parse()
        .map_err(|_| ParseError::new(path, format!("not a number: {value:?}")))
}

/// A limit file (`memory.high`, `memory.max`): a number, or "max" → None.
pub fn parse_limit(path: &Path, text: &str) -> Result<Option<u64>, ParseError> {
    if text.trim() == "max" {
        Ok(None)
    } else {
        parse_u64(path, text).map(Some)
    }
}

/// `cgroup.procs`: one PID a line, returned sorted.
pub fn parse_procs(path: &Path, text: &str) -> Result<Vec<u32>, ParseError> {
    let mut pids = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            l.trim()
                .parse()
                .map_err(|_| ParseError::new(path, format!("line {}: not a PID: {l:?}", n + 1)))
        })
        .collect::<Result<Vec<u32>, _>>()?;
    pids.sort_unstable();
    Ok(pids)
}

/// Calls `f` with each `key value` pair of a flat-keyed file. Every line
/// must have that shape, whatever its key, so that a torn or garbled file
/// is an error rather than a silently short read.
fn for_each_pair(path: &Path, text: &str, mut f: impl FnMut(&str, u64)) -> Result<(), ParseError> {
    for (n, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let (key, value) = match (words.next(), words.next(), words.next()) {
            (None, _, _) => continue,
            (Some(key), Some(value), None) => (key, value),
            _ => {
                return Err(ParseError::new(
                    path,
                    format!("line {}: expected '<key> <number>', found {line:?}", n + 1),
                ));
            }
        };
        let value = value.parse().map_err(|_| {
            ParseError::new(
                path,
                format!("line {}: {key} is not a number: {value:?}", n + 1),
            )
        })?;
        f(key, value);
    }
    Ok(())
}

fn required(path: &Path, key: &str, value: Option<u64>) -> Result<u64, ParseError> {
    value.ok_or_else(|| ParseError::new(path, format!("missing key {key}")))
}

pub fn parse_memory_stat(path: &Path, text: &str) -> Result<MemoryStat, ParseError> {
    let mut s = MemoryStat::default();
    let (mut anon, mut file, mut shmem) = (None, None, None);
    for_each_pair(path, text, |key, v| {
        let slot = match key {
            "anon" => &mut anon,
            "file" => &mut file,
            "shmem" => &mut shmem,
            "kernel" => &mut s.kernel,
            "kernel_stack" => &mut s.kernel_stack,
            "pagetables" => &mut s.pagetables,
            "sock" => &mut s.sock,
            "file_mapped" => &mut s.file_mapped,
            "file_dirty" => &mut s.file_dirty,
            "file_writeback" => &mut s.file_writeback,
            "anon_thp" => &mut s.anon_thp,
            "inactive_anon" => &mut s.inactive_anon,
            "active_anon" => &mut s.active_anon,
            "inactive_file" => &mut s.inactive_file,
            "active_file" => &mut s.active_file,
            "unevictable" => &mut s.unevictable,
            "slab_reclaimable" => &mut s.slab_reclaimable,
            "slab_unreclaimable" => &mut s.slab_unreclaimable,
            _ => return,
        };
        *slot = Some(v);
    })?;
    s.anon = required(path, "anon", anon)?;
    s.file = required(path, "file", file)?;
    s.shmem = required(path, "shmem", shmem)?;
    Ok(s)
}

pub fn parse_memory_events(path: &Path, text: &str) -> Result<MemoryEvents, ParseError> {
    let mut found: [Option<u64>; 6] = [None; 6];
    const KEYS: [&str; 6] = ["low", "high", "max", "oom", "oom_kill", "oom_group_kill"];
    for_each_pair(path, text, |key, v| {
        if let Some(i) = KEYS.iter().position(|k| *k == key) {
            found[i] = Some(v);
        }
    })?;
    Ok(MemoryEvents {
        low: required(path, KEYS[0], found[0])?,
        high: required(path, KEYS[1], found[1])?,
        max: required(path, KEYS[2], found[2])?,
        oom: required(path, KEYS[3], found[3])?,
        oom_kill: required(path, KEYS[4], found[4])?,
        oom_group_kill: found[5].unwrap_or(0),
    })
}

pub fn parse_cgroup_events(path: &Path, text: &str) -> Result<CgroupEvents, ParseError> {
    let (mut populated, mut frozen) = (None, None);
    let mut bad_flag = None;
    for_each_pair(path, text, |key, v| {
        let slot = match key {
            "populated" => &mut populated,
            "frozen" => &mut frozen,
            _ => return,
        };
        match v {
            0 | 1 => *slot = Some(v == 1),
            _ => bad_flag = Some((key.to_string(), v)),
        }
    })?;
    if let Some((key, v)) = bad_flag {
        return Err(ParseError::new(
            path,
            format!("{key} is {v}, expected 0 or 1"),
        ));
    }
    let flag = |key: &str, v: Option<bool>| {
        v.ok_or_else(|| ParseError::new(path, format!("missing key {key}")))
    };
    Ok(CgroupEvents {
        populated: flag("populated", populated)?,
        frozen: flag("frozen", frozen)?,
    })
}
