//! `adaptive-workers import-uwsgi` as a command: policy on stdout, notes on
//! stderr, errors naming file and line, --write and --force.

use std::path::Path;

use assert_cmd::Command;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/uwsgi")
        .join(name)
        .display()
        .to_string()
}

fn aw() -> Command {
    Command::cargo_bin("adaptive-workers").expect("binary")
}

#[test]
fn prints_the_policy_and_notes_apart() {
    let out = aw()
        .args(["import-uwsgi", &fixture("cheaper.ini")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stdout.contains("soft_limit = \"300M\""), "{stdout}");
    assert!(!stdout.contains("note:"), "{stdout}");
    assert!(stderr.lines().all(|l| l.starts_with("note: ")
        || l.starts_with(' ')
        || l.is_empty()
        || !l.contains("soft_limit")));
    assert!(stderr.contains("note: "), "{stderr}");
}

#[test]
fn a_broken_ini_fails_naming_file_and_line() {
    let out = aw()
        .args(["import-uwsgi", &fixture("broken.ini")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("{}:5: ", fixture("broken.ini"))),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn write_then_refuse_then_force() {
    let root = tempfile::TempDir::new().unwrap();
    let r = root.path().display().to_string();
    // With --root, the ini is a host path inside that tree.
    std::fs::create_dir_all(root.path().join("etc/uwsgi")).unwrap();
    std::fs::copy(
        fixture("thunder.ini"),
        root.path().join("etc/uwsgi/api.ini"),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut c = aw();
        c.args(["import-uwsgi", "/etc/uwsgi/api.ini", "--root", &r]);
        c.args(extra);
        c.output().unwrap()
    };
    let first = run(&["--write"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stderr = String::from_utf8(first.stderr).unwrap();
    assert!(stderr.contains("wrote "), "{stderr}");
    assert!(
        stderr.contains("next: adaptive-workers check --root"),
        "{stderr}"
    );
    assert!(
        root.path()
            .join("etc/adaptive-workers/policies.d/api.toml")
            .is_file()
    );
    let second = run(&["--write"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("--force"));
    assert!(run(&["--write", "--force"]).status.success());
    let check = aw().args(["check", "--root", &r]).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn a_missing_ini_under_a_root_says_so() {
    let root = tempfile::TempDir::new().unwrap();
    let r = root.path().display().to_string();
    let out = aw()
        .args(["import-uwsgi", "/etc/uwsgi/none.ini", "--root", &r])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "/etc/uwsgi/none.ini is not there (under --root {r})"
        )),
        "{stderr}"
    );
}

#[test]
fn help_has_an_example() {
    let out = aw().args(["import-uwsgi", "--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Example: adaptive-workers import-uwsgi"),
        "{text}"
    );
}

#[test]
fn prints_the_example_unit_for_the_example_ini() {
    let root = tempfile::TempDir::new().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples");
    std::fs::create_dir_all(root.path().join("etc/uwsgi")).unwrap();
    std::fs::copy(
        examples.join("uwsgi-shop.ini"),
        root.path().join("etc/uwsgi/shop.ini"),
    )
    .unwrap();
    let out = aw()
        .args([
            "import-uwsgi",
            "/etc/uwsgi/shop.ini",
            "--unit",
            "shop-api.service",
            "--root",
        ])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    // The note, then the unit indented by two spaces, as the VM scenario
    // 86-operator takes it out and compares it with the installed example.
    let mut unit = String::new();
    let mut on = false;
    for line in stderr.lines() {
        if line.starts_with("note: ") {
            on = line.starts_with("note: a unit that runs this ini");
            continue;
        }
        if on {
            unit += line.strip_prefix("  ").unwrap_or(line);
            unit += "\n";
        }
    }
    let example = std::fs::read_to_string(examples.join("shop-api.service")).unwrap();
    assert_eq!(unit, example);
    let policy = String::from_utf8(out.stdout).unwrap();
    assert!(policy.contains("unit = \"shop-api.service\""), "{policy}");
    assert!(
        policy.contains("stats = \"/run/shop/stats.sock\""),
        "{policy}"
    );
    assert!(
        policy.contains("master_fifo = \"/run/shop/master.fifo\""),
        "{policy}"
    );
}
