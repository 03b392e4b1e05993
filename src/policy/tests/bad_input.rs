//! Values that used to panic, wrap or reach the daemon unchecked: each must
//! be one policy error naming the file, the line and the key.

use super::{Tree, one_error};
use crate::policy::PolicyError;

const APP: &str = "/etc/adaptive-workers/policies.d/shop.toml";
const GLOBAL: &str = "/etc/adaptive-workers/adaptive-workers.toml";
const HEAD: &str = "unit = \"shop.service\"\nserver = \"uwsgi\"\n";

/// The one error `text` gives as `host_path`, checked to be at `line` and
/// `key` and to say `needle`, as the operator sees it.
fn refused(host_path: &str, text: &str, key: &str, line: usize, needle: &str) -> PolicyError {
    let tree = Tree::new();
    let path = tree.write(host_path, text);
    let e = one_error(&tree);
    let shown = e.to_string();
    assert_eq!(e.file, path, "{shown}");
    assert_eq!(e.key.as_deref(), Some(key), "{shown}");
    assert_eq!(e.position.map(|p| p.0), Some(line), "{shown}");
    let (_, column) = e.position.unwrap();
    let prefix = format!("{}:{line}:{column}: {key}: ", path.display());
    assert!(shown.starts_with(&prefix), "{shown}");
    assert!(e.message.contains(needle), "{shown}");
    e
}

fn scaling(lines: &str) -> String {
    format!("{HEAD}[uwsgi]\nmaster_fifo = \"/run/shop/fifo\"\n[scaling]\n{lines}")
}

#[test]
fn duration_sums_that_overflow_are_too_long() {
    let huge = "9223372036854775807s".repeat(3);
    for (value, needle) in [
        (
            huge.as_str(),
            "is too long: durations go up to 365 days (8760h)",
        ),
        ("18446744073709551615s18446744073709551615s", "too long"),
        ("8761h", "too long"),
        (
            "5000000000000000000000000000000000000000000000000h",
            "too long",
        ),
    ] {
        let text = format!("[host]\ninterval = \"100ms\"\ncooldown = \"{value}\"\n");
        refused(GLOBAL, &text, "host.cooldown", 3, needle);
    }
}

#[test]
fn many_terms_are_summed_without_overflow() {
    let tree = Tree::new();
    let many = "1h".repeat(8760);
    tree.write(GLOBAL, &format!("[host]\ncooldown = \"{many}\"\n"));
    let policy = tree.load().unwrap();
    assert_eq!(policy.global.host.cooldown.0.as_secs(), 365 * 24 * 3600);
    let one_more = format!("[host]\ncooldown = \"{many}1us\"\n");
    refused(GLOBAL, &one_more, "host.cooldown", 2, "too long");
}

#[test]
fn megabytes_that_would_wrap_are_too_large() {
    // 2^44 MB shifted left by 20 wrapped to 0 bytes.
    let text = format!("{HEAD}[memory]\nevil-reload-on-rss = 17592186044416\n");
    let e = refused(APP, &text, "memory.evil-reload-on-rss", 4, "too large");
    assert_eq!(
        e.message,
        "17592186044416 megabytes is too large: sizes go up to 1024T"
    );
    let text = format!("{HEAD}[memory]\nreload-on-rss = 9223372036854775807\n");
    refused(APP, &text, "memory.reload-on-rss", 4, "too large");
    let text = format!("{HEAD}[memory]\nreload-on-rss = 1073741825\n");
    refused(APP, &text, "memory.reload-on-rss", 4, "too large");
}

#[test]
fn sizes_past_the_maximum_are_too_large() {
    for value in [
        "\"99999999999999999999T\"",
        "\"1025T\"",
        "\"1e400K\"",
        "9223372036854775807",
    ] {
        let text = format!("{HEAD}[memory]\nsoft_limit = \"100M\"\nhard_limit = {value}\n");
        refused(APP, &text, "memory.hard_limit", 5, "is too large");
    }
    let text = format!("{HEAD}[memory]\nhard_limit = \"1024T\"\n");
    let tree = Tree::new();
    tree.write(APP, &text);
    assert!(tree.load().is_ok());
}

#[test]
fn system_units_are_refused() {
    for unit in [
        "adaptive-workers.service",
        "dbus.service",
        "dbus-broker.service",
        "systemd-journald.service",
        "systemd-logind.service",
        "systemd-udevd.service",
        "systemd-oomd.service",
        "user@0.service",
        "user-runtime-dir@1000.service",
        "getty@tty1.service",
        "serial-getty@ttyS0.service",
    ] {
        let text = format!("unit = \"{unit}\"\nserver = \"generic\"\n");
        let e = refused(
            APP,
            &text,
            "unit",
            1,
            "adaptive-workers must never manage it",
        );
        assert_eq!(e.position, Some((1, 8)));
        assert!(e.message.starts_with(&format!("{unit:?} is ")), "{e}");
    }
}

#[test]
fn max_workers_is_bounded() {
    for (n, line) in [("100000", 7), ("0", 7)] {
        let text = scaling(&format!("min_workers = 1\nmax_workers = {n}\n"));
        let e = refused(
            APP,
            &text,
            "scaling.max_workers",
            line,
            "between 1 and 4096",
        );
        assert_eq!(e.message, format!("must be between 1 and 4096 (it is {n})"));
    }
    // Past u32: the type says so, still at the key.
    let text = scaling("max_workers = 4294967296\n");
    refused(APP, &text, "scaling.max_workers", 6, "u32");
    let tree = Tree::new();
    tree.write(APP, &scaling("max_workers = 4096\n"));
    assert_eq!(
        tree.load().unwrap().apps[0]
            .scaling
            .as_ref()
            .unwrap()
            .max_workers,
        4096
    );
}

#[test]
fn steps_are_bounded() {
    for key in ["step_up", "step_down"] {
        let text = scaling(&format!("max_workers = 4000\n{key} = 1000\n"));
        let e = refused(APP, &text, &format!("scaling.{key}"), 7, "between 1 and 64");
        assert_eq!(e.message, "must be between 1 and 64 (it is 1000)");
        let text = scaling(&format!("max_workers = 4\n{key} = 10\n"));
        let e = refused(APP, &text, &format!("scaling.{key}"), 7, "max_workers");
        assert_eq!(
            e.message,
            format!("{key} (10) must not be above max_workers (4)")
        );
        let text = scaling(&format!("max_workers = 4\n{key} = 0\n"));
        refused(APP, &text, &format!("scaling.{key}"), 7, "(it is 0)");
    }
}

#[test]
fn spare_idle_is_bounded() {
    let text = scaling("max_workers = 4\nspare_idle = 50\n");
    let e = refused(APP, &text, "scaling.spare_idle", 7, "max_workers");
    assert_eq!(
        e.message,
        "spare_idle (50) must not be above max_workers (4)"
    );
}

#[test]
fn load_signal_and_concurrency_are_checked() {
    // [scaling] starts on line 5 of scaling(); max_workers is line 6.
    let text = scaling("max_workers = 4\nconcurrency = 0\n");
    refused(
        APP,
        &text,
        "scaling.concurrency",
        7,
        "must be between 1 and 100000",
    );
    let text = scaling("max_workers = 4\nconcurrency = 100001\n");
    refused(
        APP,
        &text,
        "scaling.concurrency",
        7,
        "must be between 1 and 100000",
    );
    let text = scaling("max_workers = 4\nload = \"threads\"\n");
    refused(APP, &text, "scaling.load", 7, "auto");
    let tree = Tree::new();
    tree.write(
        APP,
        &scaling("max_workers = 4\nload = \"connections\"\nconcurrency = 8\n"),
    );
    let p = tree.load().unwrap();
    let s = p.apps[0].scaling.as_ref().unwrap();
    assert_eq!(
        (s.load, s.concurrency),
        (crate::policy::LoadSignal::Connections, Some(8))
    );
}
