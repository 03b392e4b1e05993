//! The policy loader under a fuzzer, for a fixed time: arbitrary bytes,
//! TOML-ish text, structured policies with wrong keys, types and values,
//! and the shipped examples mutated byte by byte, as the global file and
//! as an app drop-in. Nothing may panic, and every error must name the
//! file and a line and column inside it.
//!
//! `cargo test` gives it a few seconds; AW_FUZZ_SECS=600 for a longer run
//! (its figure is in RELIABILITY.md). A failure prints the smallest input
//! proptest could shrink it to.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::load;
use super::values::{
    MAX_DURATION, MAX_SIZE, megabytes_to_bytes, parse_duration, parse_fraction, parse_size,
};
use crate::paths::HostPaths;

const KEYS: &[&str] = &[
    "unit",
    "server",
    "mode",
    "memory.soft_limit",
    "memory.hard_limit",
    "memory.reload-on-rss",
    "memory.evil-reload-on-rss",
    "memory.min_lifetime",
    "uwsgi.stats",
    "uwsgi.master_fifo",
    "uwsgi.ini",
    "generic.recycle_signal",
    "generic.grow_signal",
    "generic.shrink_signal",
    "scaling.min_workers",
    "scaling.max_workers",
    "scaling.spare_idle",
    "scaling.grow_backlog",
    "scaling.shrink_backlog",
    "scaling.step_up",
    "scaling.step_down",
    "scaling.cooldown_up",
    "scaling.cooldown_down",
    "scaling.scale_down",
    "scaling.sockets",
    "host.lower_bound",
    "host.upper_bound",
    "host.interval",
    "host.psi_stall",
    "host.psi_window",
    "host.cooldown",
    "workers.interval",
    "workers.recycle_deadline",
    "workers.min_lifetime",
    "metrics.listen",
    "memroy.soft_limit",
    "bogus",
];

const VALUES: &[&str] = &[
    "\"shop.service\"",
    "\"shop\"",
    "\"uwsgi\"",
    "\"gunicorn\"",
    "\"generic\"",
    "\"observe\"",
    "\"enforce\"",
    "\"300M\"",
    "\"1G\"",
    "\"0\"",
    "\"-1M\"",
    "\"99999999999999999999T\"",
    "\"1025T\"",
    "17592186044416",
    "\"9223372036854775807s9223372036854775807s\"",
    "\"8761h\"",
    "\"systemd-journald.service\"",
    "\"adaptive-workers.service\"",
    "\"user@0.service\"",
    "100000",
    "65",
    "\"1.5G\"",
    "\"max\"",
    "\"\"",
    "\"85%\"",
    "\"150%\"",
    "\"0.5\"",
    "\"30s\"",
    "\"0s\"",
    "\"100ms\"",
    "\"1y\"",
    "\"SIGHUP\"",
    "\"SIGKILL\"",
    "\"TTIN\"",
    "\"/run/x.sock\"",
    "\"relative/path\"",
    "\"127.0.0.1:8000\"",
    "\"[::1]:9\"",
    "\"stop\"",
    "\"freeze\"",
    "\"é\\u00e9\"",
    "0",
    "1",
    "-1",
    "300",
    "4294967296",
    "9223372036854775807",
    "0.5",
    "-0.0",
    "1e308",
    "nan",
    "inf",
    "true",
    "false",
    "[]",
    "[\"127.0.0.1:1\", 5]",
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
];

/// A policy made of real (and a few misspelt) keys with values of any
/// type, as dotted keys, in tables, or as inline tables.
fn structured() -> impl Strategy<Value = Vec<u8>> {
    let entry = (
        prop::sample::select(KEYS),
        prop::sample::select(VALUES),
        0..3u8,
    );
    prop::collection::vec(entry, 0..14).prop_map(|entries| {
        let mut text = String::new();
        let mut tables = String::new();
        for (key, value, style) in entries {
            match (style, key.split_once('.')) {
                (1, Some((table, field))) => {
                    tables.push_str(&format!("[{table}]\n{field} = {value}\n"))
                }
                (2, Some((table, field))) => {
                    text.push_str(&format!("{table} = {{ {field} = {value} }}\n"))
                }
                _ => text.push_str(&format!("{key} = {value}\n")),
            }
        }
        text.push_str(&tables);
        text.into_bytes()
    })
}

fn toml_ish() -> impl Strategy<Value = Vec<u8>> {
    "[a-z_.\\[\\]={}\"', \\n#0-9%MGKTmsu:/\\\\é-]{0,300}".prop_map(String::into_bytes)
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let sources: Vec<Vec<u8>> = [
        "adaptive-workers.toml",
        "examples/uwsgi-shop.toml",
        "examples/gunicorn-blog.toml",
    ]
    .iter()
    .map(|f| fs::read(examples.join(f)).unwrap_or_default())
    .collect();
    let edit = (any::<prop::sample::Index>(), 0..4u8, any::<u8>());
    (
        prop::sample::select(sources),
        prop::collection::vec(edit, 1..8),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, kind, byte) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => {
                        bytes.remove(i);
                    }
                    2 => bytes.insert(i, byte),
                    _ => bytes.truncate(i),
                }
            }
            bytes
        })
}

fn input() -> impl Strategy<Value = (bool, Vec<u8>)> {
    let text = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        toml_ish(),
        structured(),
        structured(),
        mutated(),
        mutated(),
    ];
    (any::<bool>(), text)
}

/// Inputs accepted; refused though valid TOML; refused as not TOML.
static OUTCOMES: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

fn count(outcome: usize) {
    OUTCOMES[outcome].fetch_add(1, Ordering::Relaxed);
}

/// Writes the input as the global file or as the drop-in `fuzz.toml`,
/// loads, and checks what came back.
fn check(dir: &Path, global: bool, bytes: &[u8]) -> Result<(), TestCaseError> {
    let paths = HostPaths::new(dir);
    let etc = paths.resolve("/etc/adaptive-workers");
    let file: PathBuf = if global {
        etc.join("adaptive-workers.toml")
    } else {
        etc.join("policies.d/fuzz.toml")
    };
    let _ = fs::remove_file(etc.join("adaptive-workers.toml"));
    let _ = fs::remove_file(etc.join("policies.d/fuzz.toml"));
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, bytes).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let Err(errors) = load(&paths) else {
        count(0);
        return Ok(());
    };
    let toml = std::str::from_utf8(bytes).is_ok_and(|t| t.parse::<toml::Table>().is_ok());
    count(if toml { 1 } else { 2 });
    prop_assert!(!errors.0.is_empty());
    let lines = bytes.iter().filter(|b| **b == b'\n').count() + 1;
    for e in &errors.0 {
        let shown = e.to_string();
        prop_assert_eq!(&e.file, &file, "{}", shown);
        let Some((line, column)) = e.position else {
            return Err(TestCaseError::fail(format!("no line in: {shown}")));
        };
        prop_assert!(line >= 1 && line <= lines && column >= 1, "{}", shown);
        let prefix = format!("{}:{line}:{column}: ", file.display());
        prop_assert!(shown.starts_with(&prefix), "{}", shown);
        prop_assert!(!e.message.trim().is_empty(), "{}", shown);
    }
    Ok(())
}

#[test]
fn the_policy_loader_survives_a_fuzzer() {
    let budget = std::env::var("AW_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(3), Duration::from_secs);
    let dir = tempfile::TempDir::new().unwrap();
    let config = Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let strategy = input();
    let started = Instant::now();
    let mut rounds = 0u64;
    while rounds == 0 || started.elapsed() < budget {
        // A runner runs `cases` inputs once; a new one (random seed) each round.
        let mut runner = TestRunner::new(config.clone());
        if let Err(e) = runner.run(&strategy, |(global, bytes)| {
            check(dir.path(), global, &bytes)
        }) {
            panic!("{e}");
        }
        rounds += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let [ok, wrong, broken] = OUTCOMES.each_ref().map(|n| n.load(Ordering::Relaxed));
    let cases = ok + wrong + broken;
    eprintln!(
        "policy fuzz: {cases} inputs in {secs:.1} s ({:.0}/s): {ok} accepted, {wrong} valid TOML refused, {broken} not TOML refused; no panic, every error with file:line:column",
        cases as f64 / secs
    );
}

/// Duration and size text: terms of many digits (f64 infinity at ~310),
/// many terms in a row, stray units and dots, and any string at all.
fn value_text() -> impl Strategy<Value = String> {
    let term = "([0-9]{0,25}|[0-9]{305,320}|[0-9.]{0,8})(us|ms|s|sec|m|min|h|K|M|G|T|B|iB|e|%| )?";
    prop_oneof![
        prop::collection::vec(term, 0..16).prop_map(|t| t.concat()),
        "[0-9]{1,20}(h|s|T|K)".prop_map(|t| t.repeat(50)),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(Config { cases: 1000, failure_persistence: None, ..Config::default() })]

    /// No text makes a value parser panic, and what they accept is in bounds.
    #[test]
    fn value_parsers_never_panic(text in value_text(), mb in any::<u64>()) {
        if let Ok(d) = parse_duration(&text) {
            prop_assert!(d <= MAX_DURATION, "{:?} gave {:?}", text, d);
        }
        if let Ok(b) = parse_size(&text) {
            prop_assert!(b <= MAX_SIZE, "{:?} gave {}", text, b);
        }
        if let Ok(f) = parse_fraction(&text) {
            prop_assert!((0.0..=1.0).contains(&f), "{:?} gave {}", text, f);
        }
        match megabytes_to_bytes(mb) {
            Ok(b) => prop_assert!(b <= MAX_SIZE && b == mb << 20),
            Err(e) => prop_assert!(e.contains("too large"), "{}", e),
        }
    }
}
