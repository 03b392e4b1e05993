//! `adaptive-workers check --root DIR`, run as a user would.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use assert_cmd::Command;
use tempfile::TempDir;

fn write(root: &Path, host_path: &str, text: &str) {
    let p = root.join(host_path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
}

fn check(root: &Path) -> (i32, String, String) {
    let out = Command::cargo_bin("adaptive-workers")
        .unwrap()
        .args(["check", "--root"])
        .arg(root)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_valid_policy_prints_the_effective_one_and_exits_0() {
    let dir = TempDir::new().unwrap();
    write(
        dir.path(),
        "/etc/adaptive-workers/policies.d/shop.toml",
        "unit = \"shop.service\"\nserver = \"uwsgi\"\n[memory]\nreload-on-rss = 300\n",
    );
    let (code, out, _) = check(dir.path());
    assert_eq!(code, 0);
    assert!(
        out.contains("[apps.shop.memory]\nsoft_limit = \"300M\""),
        "{out}"
    );
}

#[test]
fn errors_name_file_line_column_and_key_and_exit_1() {
    let dir = TempDir::new().unwrap();
    write(
        dir.path(),
        "/etc/adaptive-workers/adaptive-workers.toml",
        "[host]\nlower_bound = \"95%\"\nupper_bound = \"90%\"\n",
    );
    write(
        dir.path(),
        "/etc/adaptive-workers/policies.d/shop.toml",
        "unit = \"shop.service\"\nserver = \"uwsgy\"\n",
    );
    let (code, out, err) = check(dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        out.is_empty(),
        "nothing on stdout for an invalid policy: {out}"
    );
    let global = dir
        .path()
        .join("etc/adaptive-workers/adaptive-workers.toml");
    assert!(err.contains(&format!("{}:2:15: host.lower_bound: the lower bound (95.0%) must be below the upper bound (90.0%)", global.display())), "{err}");
    assert!(
        err.contains("shop.toml:2:10: server: unknown variant `uwsgy`"),
        "{err}"
    );
    assert!(
        err.ends_with("2 errors in the policy: not valid\n"),
        "{err}"
    );
}

#[test]
fn uwsgi_scaling_without_cheaper_manual_or_with_thunder_lock_is_warned_about() {
    let dir = TempDir::new().unwrap();
    write(
        dir.path(),
        "/etc/uwsgi/shop.ini",
        "[uwsgi]\nmaster = true\nprocesses = 6\nthunder-lock = true\n",
    );
    write(
        dir.path(),
        "/etc/adaptive-workers/policies.d/shop.toml",
        "unit = \"shop.service\"\nserver = \"uwsgi\"\n[uwsgi]\nini = \"/etc/uwsgi/shop.ini\"\nstats = \"/run/shop/stats.sock\"\n[scaling]\nmin_workers = 2\nmax_workers = 6\nscale_down = \"freeze\"\n",
    );
    let (code, _, err) = check(dir.path());
    assert_eq!(code, 0, "warnings do not make the policy invalid: {err}");
    assert!(
        err.contains("warning: ") && err.contains("needs uwsgi.master_fifo"),
        "{err}"
    );
    assert!(err.contains("cheaper-algo = manual"), "{err}");
    assert!(err.contains("thunder-lock is on"), "{err}");
    // With cheaper mode, a FIFO and no thunder-lock: no warning about them.
    write(
        dir.path(),
        "/etc/uwsgi/shop.ini",
        "[uwsgi]\nmaster = true\nprocesses = 6\ncheaper-algo = manual\ncheaper = 2\nmaster-fifo = /run/shop/fifo\n",
    );
    write(
        dir.path(),
        "/etc/adaptive-workers/policies.d/shop.toml",
        "unit = \"shop.service\"\nserver = \"uwsgi\"\n[uwsgi]\nini = \"/etc/uwsgi/shop.ini\"\nstats = \"/run/shop/stats.sock\"\nmaster_fifo = \"/run/shop/fifo\"\n[scaling]\nmin_workers = 2\nmax_workers = 6\nscale_down = \"freeze\"\n",
    );
    let (code, _, err) = check(dir.path());
    assert_eq!(code, 0);
    assert!(
        !err.lines()
            .any(|l| l.starts_with("warning:") && l.contains("shop.toml")),
        "{err}"
    );
    // What the worker count follows is said as a note.
    assert!(
        err.contains(
            "shop.toml: scaling follows the backlog: uwsgi workers take one connection at a time"
        ),
        "{err}"
    );
}

#[test]
fn under_a_root_systemd_is_not_asked_about_units() {
    // The tree is another host's: this host's systemd does not know its
    // units, and saying so would be noise.
    let dir = TempDir::new().unwrap();
    write(
        dir.path(),
        "/etc/adaptive-workers/policies.d/ghost.toml",
        "unit = \"acc-ghost.service\"\nserver = \"uwsgi\"\n",
    );
    let (code, _, err) = check(dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("acc-ghost.service"), "{err}");
    assert!(!err.contains("systemd"), "{err}");
}
