//! `/proc/meminfo`.

use std::path::Path;

use super::ParseError;

/// Host memory, in bytes (the file says kB; we convert).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    pub buffers: u64,
    pub cached: u64,
    pub shmem: u64,
    pub anon_pages: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

impl MemInfo {
    /// 1 − MemAvailable/MemTotal, the host utilisation the engine compares
    /// with its bounds. 0 for a zero total rather than NaN.
    pub fn utilisation(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        1.0 - (self.available as f64 / self.total as f64)
    }
}

/// Parses `/proc/meminfo`. Every field of [`MemInfo`] is required: each
/// has been in the file since Linux 3.14, so a missing one means the file
/// is not what we think it is.
pub fn parse_meminfo(path: &Path, text: &str) -> Result<MemInfo, ParseError> {
    let mut fields: [Option<u64>; 9] = [None; 9];
    const KEYS: [&str; 9] = [
        "MemTotal",
        "MemFree",
        "MemAvailable",
        "Buffers",
        "Cached",
        "Shmem",
        "AnonPages",
        "SwapTotal",
        "SwapFree",
    ];
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, rest)) = line.split_once(':') else {
            return Err(ParseError::new(
                path,
                format!("line {}: no ':' in {line:?}", n + 1),
            ));
        };
        let Some(slot) = KEYS.iter().position(|k| *k == key) else {
            continue;
        };
        fields[slot] = Some(parse_kb(path, n + 1, rest)?);
    }
    let get = |i: usize| {
        fields[i].ok_or_else(|| ParseError::new(path, format!("missing key {}", KEYS[i])))
    };
    Ok(MemInfo {
        total: get(0)?,
        free: get(1)?,
        available: get(2)?,
        buffers: get(3)?,
        cached: get(4)?,
        shmem: get(5)?,
        anon_pages: get(6)?,
        swap_total: get(7)?,
        swap_free: get(8)?,
    })
}

fn parse_kb(path: &Path, line_no: usize, rest: &str) -> Result<u64, ParseError> {
    let bad = |what: &str| ParseError::new(path, format!("line {line_no}: {what}: {rest:?}"));
    let mut parts = rest.split_whitespace();
    let value: u64 = parts
        .next()
        .ok_or_else(|| bad("no value"))?
        .parse()
        .map_err(|_| bad("value is not a number"))?;
    match (parts.next(), parts.next()) {
        (Some("kB"), None) => value
            .checked_mul(1024)
            .ok_or_else(|| bad("value overflows")),
        _ => Err(bad("expected '<number> kB'")),
    }
}
