//! The ini reader against uWSGI's own behaviour. Where a test says "uWSGI
//! says", the expected value was printed by Debian's uWSGI 2.0.21
//! (`uwsgi --ini FILE --get KEY` or `--show-config`) on the same input.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/uwsgi")
}

fn parse(text: &str) -> UwsgiIni {
    UwsgiIni::parse(Path::new("/etc/uwsgi/apps-enabled/shop.ini"), text, "uwsgi").expect("parses")
}

#[test]
fn keys_values_comments_and_bare_flags() {
    let ini = parse(
        "; comment\n# comment\n  # indented comment\n[uwsgi]\nmaster\n  processes   =   4  \n\
         c = x ; not a comment\nsocket=/a\nsocket = /b\n\n[other]\nprocesses = 9\n",
    );
    assert_eq!(ini.get("master"), Some(""));
    assert!(ini.flag("master"));
    assert_eq!(ini.get("processes"), Some("4"));
    // uWSGI says: c = x ; not a comment
    assert_eq!(ini.get("c"), Some("x ; not a comment"));
    assert_eq!(ini.get_all("socket"), ["/a", "/b"]);
    assert_eq!(ini.get("socket"), Some("/b"));
    assert_eq!(ini.first("socket").map(|e| e.line), Some(8));
    assert_eq!(ini.last("processes").map(|e| e.line), Some(6));
}

#[test]
fn boolean_forms() {
    let ini = parse(
        "[uwsgi]\na = true\nb = 1\nc = yes\nd\ne = false\nf = 0\ng = Off\nh = no\ni = true\ni = false\n",
    );
    for k in ["a", "b", "c", "d"] {
        assert!(ini.flag(k), "{k}");
    }
    for k in ["e", "f", "g", "h", "i", "missing"] {
        assert!(!ini.flag(k), "{k}");
    }
}

#[test]
fn placeholders_take_the_first_value_and_may_look_ahead() {
    let ini = parse(
        "[uwsgi]\na = first\na = second\nb = %(a)\nafter = %(late)/x\nlate = L\n\
         nope = %(missing)\nsum = %(n + 2 * 3)\nn = 4\ncat = %(n n ++)\nopen = %(a\n",
    );
    // uWSGI says: b = first, after = L, nope = %(missing)
    assert_eq!(ini.get("b"), Some("first"));
    assert_eq!(ini.get("after"), Some("L/x"));
    assert_eq!(ini.get("nope"), Some("%(missing)"));
    assert!(
        ini.notes().iter().any(|n| n.contains("%(missing)")),
        "{:?}",
        ini.notes()
    );
    assert_eq!(ini.get("sum"), Some("18"));
    assert_eq!(ini.get("cat"), Some("45"));
    assert_eq!(ini.get("open"), Some("%(a"));
}

#[test]
fn placeholder_names_are_exact() {
    // uWSGI says: x = %(foo-bar)|1
    let ini = parse("[uwsgi]\nfoo_bar = 1\nx = %(foo-bar)|%(foo_bar)\n");
    assert_eq!(ini.get("x"), Some("%(foo-bar)|1"));
}

#[test]
fn a_placeholder_loop_does_not_hang() {
    let ini = parse("[uwsgi]\na = %(b)\nb = %(a)\n");
    assert_eq!(ini.get("a"), Some(""));
    assert!(ini.notes().iter().any(|n| n.contains("refers to itself")));
}

#[test]
fn magic_variables_refer_to_the_file() {
    let ini = parse("[uwsgi]\nx = %d|%n|%c|%p|%s|%e|%%|%0/%1/%2|%z|%h\n");
    // uWSGI says (for a file /tmp/uw/t3.ini): %d /tmp/uw/, %n t3, %c uw,
    // %% %, an unknown letter nothing.
    assert_eq!(
        ini.get("x"),
        Some(
            "/etc/uwsgi/apps-enabled/|shop|apps-enabled|/etc/uwsgi/apps-enabled/shop.ini|shop.ini|ini|%|etc/uwsgi/apps-enabled||%h"
        )
    );
    assert!(ini.notes().iter().any(|n| n.contains("%z")));
    assert!(ini.notes().iter().any(|n| n.contains("%h depends")));
}

#[test]
fn environment_and_files_in_values() {
    let dir = TempDir::new().unwrap();
    let name = dir.path().join("hostname");
    fs::write(&name, "web1\n").unwrap();
    let ini = parse(&format!(
        "[uwsgi]\nhome = $(HOME)/x\nnode = @({})\ngone = @(/no/such/file)\n",
        name.display()
    ));
    assert_eq!(ini.get("home"), Some("$(HOME)/x"));
    assert_eq!(ini.get("node"), Some("web1"));
    assert_eq!(ini.get("gone"), Some("@(/no/such/file)"));
    assert!(ini.notes().iter().any(|n| n.contains("$(HOME)")));
}

#[test]
fn sections_by_name_and_includes_in_place() {
    let dir = TempDir::new().unwrap();
    let main = dir.path().join("app.ini");
    fs::write(
        &main,
        "[uwsgi]\na = 1\nini = :other\nini = %dsub/inc.ini\nb = 2\n[other]\nfrom_other = %n\n",
    )
    .unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(dir.path().join("sub/inc.ini"), "[uwsgi]\ninc = %n %c\n").unwrap();
    let ini = UwsgiIni::read(&main).unwrap();
    let keys: Vec<_> = ini.entries().iter().map(|e| e.key.as_str()).collect();
    // uWSGI says the options are in this order ("expand asap").
    assert_eq!(keys, ["a", "ini", "from_other", "ini", "inc", "b"]);
    assert_eq!(ini.get("from_other"), Some("app"));
    assert_eq!(ini.get("inc"), Some("inc sub"));
    assert_eq!(ini.files().len(), 3);

    let other = UwsgiIni::read(Path::new(&format!("{}:other", main.display()))).unwrap();
    assert_eq!(other.get("from_other"), Some("app"));
    assert_eq!(other.get("a"), None);
}

#[test]
fn an_include_loop_is_an_error_at_its_line() {
    let dir = TempDir::new().unwrap();
    let main = dir.path().join("loop.ini");
    fs::write(&main, "[uwsgi]\nx = 1\nini = %p\n").unwrap();
    let err = UwsgiIni::read(&main).unwrap_err().to_string();
    assert!(err.contains("loop.ini:3: includes nest deeper"), "{err}");
}

#[test]
fn a_missing_include_names_the_including_line() {
    let dir = TempDir::new().unwrap();
    let main = dir.path().join("a.ini");
    fs::write(&main, "[uwsgi]\n\ninclude = /no/such.ini\n").unwrap();
    let err = UwsgiIni::read(&main).unwrap_err().to_string();
    assert!(
        err.contains("a.ini:3: failed to read the file included here: No such file"),
        "{err}"
    );
}

#[test]
fn broken_fixture_names_file_and_line() {
    let path = fixtures().join("broken.ini");
    let err = UwsgiIni::read(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:5: ", path.display())), "{err}");
    assert!(err.contains("no closing ']'"), "{err}");
}

#[test]
fn other_errors() {
    let p = Path::new("/x.ini");
    let err = UwsgiIni::parse(p, "[uwsgi]\n = 5\n", "uwsgi")
        .unwrap_err()
        .to_string();
    assert_eq!(err, "/x.ini:2: no option name before '='");
    let err = UwsgiIni::parse(p, "[app]\na = 1\n", "uwsgi")
        .unwrap_err()
        .to_string();
    assert_eq!(err, "/x.ini: has no [uwsgi] section");
    let err = UwsgiIni::read(Path::new("/no/such/dir/x.ini"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("failed to read /no/such/dir/x.ini: "),
        "{err}"
    );
    let dir = TempDir::new().unwrap();
    let bad = dir.path().join("bin.ini");
    fs::write(&bad, b"[uwsgi]\na = 1\nb = \xff\n").unwrap();
    let err = UwsgiIni::read(&bad).unwrap_err().to_string();
    assert!(err.ends_with("bin.ini:3: not UTF-8 text"), "{err}");
}

#[test]
fn debian_layout_with_default_ini_preset_and_root() {
    // As Debian's init script runs an app: default.ini first, then the
    // app's file through its apps-enabled symlink, with deb-confnamespace
    // and deb-confname from the environment.
    let root = fixtures().join("debian");
    let opts = ReadOptions {
        root: Some(root),
        preset: vec![
            ("deb-confnamespace".into(), "app".into()),
            ("deb-confname".into(), "shop".into()),
        ],
        before: vec![PathBuf::from("/usr/share/uwsgi/conf/default.ini")],
    };
    let ini = UwsgiIni::read_with(Path::new("/etc/uwsgi/apps-enabled/shop.ini"), &opts).unwrap();
    // uWSGI says all of these (run in the fixture directory).
    assert_eq!(ini.get("chdir"), Some("/srv/shop"));
    assert_eq!(ini.get("module"), Some("shop.wsgi:app"));
    assert_eq!(ini.get("master-fifo"), Some("/run/uwsgi/app/shop/fifo"));
    assert_eq!(ini.get("stats"), Some("/run/uwsgi/app/shop/stats.sock"));
    assert_eq!(
        ini.get("logto"),
        Some("/var/log/uwsgi/apps-enabled/shop.log")
    );
    assert_eq!(ini.get("socket"), Some("/run/uwsgi/app/shop/socket"));
    assert_eq!(ini.first("workers").map(|e| e.value.as_str()), Some("2"));
    assert_eq!(ini.get("workers"), Some("5"));
    assert!(ini.flag("master"));
    assert_eq!(
        ini.last("socket").map(|e| e.file.clone()),
        Some(PathBuf::from("/usr/share/uwsgi/conf/default.ini"))
    );
}

#[test]
fn underscore_spellings_are_found_not_merged() {
    let ini = parse("[uwsgi]\nreload_on_rss = 200\nmy_var = 1\n");
    assert_eq!(ini.get("reload-on-rss"), None);
    let found = ini.underscore_spellings(&["reload-on-rss"]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1, "reload-on-rss");
    assert_eq!(found[0].0.line, 2);
}

#[test]
fn freeze_is_unsafe_with_thunder_lock() {
    assert!(freeze_is_unsafe(&parse("[uwsgi]\nmaster\n")).is_none());
    assert!(freeze_is_unsafe(&parse("[uwsgi]\nthunder-lock = false\n")).is_none());
    let why = freeze_is_unsafe(&parse("[uwsgi]\nmaster\nthunder-lock\n")).unwrap();
    assert!(why.contains("shop.ini:3: thunder-lock"), "{why}");
    assert!(why.contains("\"stop\""), "{why}");
}

#[test]
fn cheaper_manual_problem_says_what_is_missing() {
    let ok =
        parse("[uwsgi]\nprocesses = 6\ncheaper = 2\ncheaper-algo = manual\nmaster-fifo = /run/f\n");
    assert_eq!(cheaper_manual_problem(&ok), None);
    let none = cheaper_manual_problem(&parse("[uwsgi]\nprocesses = 4\n")).unwrap();
    assert!(none.contains("cheaper-algo = manual"), "{none}");
    assert!(none.contains("cheaper = N"), "{none}");
    assert!(none.contains("master-fifo"), "{none}");
    assert!(!none.contains("processes = N"), "{none}");
    let spare = cheaper_manual_problem(&parse(
        "[uwsgi]\nworkers = 2\ncheaper = 2\ncheaper-algo = spare\nmaster-fifo = /f\n",
    ))
    .unwrap();
    assert!(spare.contains("it is \"spare\""), "{spare}");
    assert!(spare.contains("processes above cheaper"), "{spare}");
}

#[test]
fn numbers_as_strtoul_reads_them() {
    assert_eq!(leading_number("300"), 300);
    assert_eq!(leading_number(" 300M"), 300);
    assert_eq!(leading_number("x"), 0);
    assert_eq!(leading_number(""), 0);
    assert_eq!(leading_number("99999999999999999999999"), u64::MAX);
}

#[test]
fn placeholder_maths_saturates_instead_of_overflowing() {
    let ini = parse(
        "[uwsgi]\nn = 9223372036854775807\nup = %(n ++)\nm = -9223372036854775808\ndown = %(m --)\n",
    );
    assert_eq!(ini.get("up"), Some("9223372036854775807"));
    assert_eq!(ini.get("down"), Some("-9223372036854775808"));
}

#[test]
fn specs_with_sections() {
    assert_eq!(
        split_spec(Path::new("/a/b.ini:app")),
        (PathBuf::from("/a/b.ini"), "app".into())
    );
    assert_eq!(
        split_spec(Path::new("/a/b.ini")),
        (PathBuf::from("/a/b.ini"), "uwsgi".into())
    );
    assert_eq!(
        split_spec(Path::new("/a:b/c.ini")),
        (PathBuf::from("/a:b/c.ini"), "uwsgi".into())
    );
}

/// Runs `f` on a thread and fails the test if it takes over 5 s (reading
/// a FIFO would block until a writer comes).
fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(5))
        .expect("did not return within 5 s")
}

fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
}

#[test]
fn a_fifo_named_as_ini_is_refused_at_once_naming_it() {
    let dir = TempDir::new().unwrap();
    let fifo = dir.path().join("evil.fifo");
    mkfifo(&fifo);
    let f = fifo.clone();
    let err = within_5s(move || UwsgiIni::read_named_by_app(&f))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "failed to read {}: is a FIFO, not a regular file",
            fifo.display()
        )
    );
    // Included, by an app's file or an administrator's: the same.
    let fifo = dir.path().join("evil.ini");
    mkfifo(&fifo);
    let main = dir.path().join("main.ini");
    fs::write(&main, format!("[uwsgi]\ninclude = {}\n", fifo.display())).unwrap();
    let m = main.clone();
    let err = within_5s(move || UwsgiIni::read(&m))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(
            "main.ini:2: failed to read the file included here: is a FIFO, not a regular file"
        ),
        "{err}"
    );
}

#[test]
fn devices_and_symlinks_named_by_an_app_are_refused() {
    let dir = TempDir::new().unwrap();
    let link = dir.path().join("zero.ini");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let err = within_5s(|| UwsgiIni::read_named_by_app(Path::new("/dev/zero")))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "failed to read /dev/zero: is a character device, not a regular file"
    );
    let l = link.clone();
    let err = within_5s(move || UwsgiIni::read_named_by_app(&l))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "failed to read {}: is a symbolic link, not a regular file",
            link.display()
        )
    );
    // An administrator's path may be a symlink (Debian's apps-enabled);
    // its target is checked all the same.
    let err = within_5s(move || UwsgiIni::read(&link))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("is a character device, not a regular file"),
        "{err}"
    );
    let good = dir.path().join("good.ini");
    fs::write(&good, "[uwsgi]\nmaster\n").unwrap();
    let enabled = dir.path().join("enabled.ini");
    std::os::unix::fs::symlink(&good, &enabled).unwrap();
    assert!(UwsgiIni::read(&enabled).unwrap().flag("master"));
    assert!(UwsgiIni::read_named_by_app(&enabled).is_err());
    assert!(UwsgiIni::read_named_by_app(&good).unwrap().flag("master"));
}

#[test]
fn an_oversized_ini_is_refused() {
    let dir = TempDir::new().unwrap();
    let big = dir.path().join("big.ini");
    let mut text = b"[uwsgi]\n".to_vec();
    text.resize(MAX_FILE as usize + 1, b'#');
    fs::write(&big, &text).unwrap();
    let err = UwsgiIni::read_named_by_app(&big).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("failed to read {}: larger than 1 MiB", big.display())
    );
    // Files under the cap each, but too much together.
    text.truncate(MAX_FILE as usize - 100);
    fs::write(&big, &text).unwrap();
    let main = dir.path().join("main.ini");
    let include = format!("include = {}\n", big.display());
    fs::write(&main, format!("[uwsgi]\n{}", include.repeat(3))).unwrap();
    let err = UwsgiIni::read(&main).unwrap_err().to_string();
    assert!(
        err.ends_with("main.ini:4: failed to read the file included here: with the files read before it, more than 2 MiB"),
        "{err}"
    );
}

#[test]
fn errors_do_not_say_what_the_line_says() {
    let dir = TempDir::new().unwrap();
    let secret = "hunter2-s3cret";
    for (text, what) in [
        (
            format!("[uwsgi]\n[{secret}\n"),
            "a section header with no closing ']'",
        ),
        (
            format!("[uwsgi]\n= {secret}\n"),
            "no option name before '='",
        ),
        (
            format!("[uwsgi]\ninclude = /no/{secret}.ini\n"),
            "failed to read the file included here: No such file or directory (os error 2)",
        ),
    ] {
        let path = dir.path().join("app.ini");
        fs::write(&path, &text).unwrap();
        let err = UwsgiIni::read_named_by_app(&path).unwrap_err().to_string();
        assert_eq!(err, format!("{}:2: {what}", path.display()));
        assert!(!err.contains(secret), "{err}");
    }
    let err = UwsgiIni::read_named_by_app(&dir.path().join("bin.ini"))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("No such file or directory (os error 2)"),
        "{err}"
    );
}

#[test]
fn includes_are_bounded_in_depth_and_number() {
    let dir = TempDir::new().unwrap();
    // Each file includes the next one twice: 2^10 files without a bound.
    for i in 0..10 {
        let next = format!("include = {}/f{}.ini\n", dir.path().display(), i + 1);
        fs::write(
            dir.path().join(format!("f{i}.ini")),
            format!("[uwsgi]\n{next}{next}"),
        )
        .unwrap();
    }
    fs::write(dir.path().join("f10.ini"), "[uwsgi]\nmaster\n").unwrap();
    let err = UwsgiIni::read(&dir.path().join("f0.ini"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 64 files to read: a loop?"), "{err}");
    let many = "[uwsgi]\n".to_string() + &"a = 1\n".repeat(MAX_ENTRIES + 1);
    let err = UwsgiIni::parse(Path::new("/x.ini"), &many, "uwsgi")
        .unwrap_err()
        .to_string();
    assert_eq!(err, "/x.ini:10002: more than 10000 options");
}

#[test]
fn expansion_is_bounded() {
    // Each placeholder doubles the one before: 2^40 bytes unbounded.
    let mut text = format!("[uwsgi]\nk0 = {}\n", "x".repeat(4096));
    for i in 1..=40 {
        text += &format!("k{i} = %(k{0})%(k{0})\n", i - 1);
    }
    let err = UwsgiIni::parse(Path::new("/x.ini"), &text, "uwsgi")
        .unwrap_err()
        .to_string();
    assert!(err.contains("add more than 1 MiB"), "{err}");
    // Empty leaves: no bytes, but 2^40 look-ups.
    let text = text.replace(&"x".repeat(4096), "");
    let err = UwsgiIni::parse(Path::new("/x.ini"), &text, "uwsgi")
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 10000 look-ups"), "{err}");
    // A chain of placeholders thousands deep would overflow the stack.
    let mut text = "[uwsgi]\nk0 = x\n".to_string();
    for i in 1..5000 {
        text += &format!("k{i} = %(k{})\n", i - 1);
    }
    let err = UwsgiIni::parse(Path::new("/x.ini"), &text, "uwsgi")
        .unwrap_err()
        .to_string();
    assert_eq!(err, "/x.ini:35: placeholders nest deeper than 32");
    let text = "[uwsgi]\nk0 = x\n".to_string()
        + &(1..32)
            .map(|i| format!("k{i} = %(k{})\n", i - 1))
            .collect::<String>();
    let ini = UwsgiIni::parse(Path::new("/x.ini"), &text, "uwsgi").unwrap();
    assert_eq!(ini.get("k31"), Some("x"));
    // Magic variables: each %p is the file's path.
    let line = "a = ".to_string() + &"%p".repeat(40_000) + "\n";
    let text = "[uwsgi]\n".to_string() + &line.repeat(10);
    let err = UwsgiIni::parse(
        Path::new("/etc/uwsgi/a-rather-long-name.ini"),
        &text,
        "uwsgi",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("add more than 1 MiB"), "{err}");
}

#[test]
fn at_file_reads_only_regular_files() {
    let dir = TempDir::new().unwrap();
    let fifo = dir.path().join("f.fifo");
    mkfifo(&fifo);
    let value = dir.path().join("value");
    fs::write(&value, "42\n").unwrap();
    let text = format!(
        "[uwsgi]\nz = @(/dev/zero)\nf = @({})\nv = @({})\n",
        fifo.display(),
        value.display()
    );
    let ini = within_5s(move || UwsgiIni::parse(Path::new("/x.ini"), &text, "uwsgi").unwrap());
    assert_eq!(ini.get("z"), Some("@(/dev/zero)"));
    assert!(ini.get("f").is_some_and(|v| v.starts_with("@(")));
    assert_eq!(ini.get("v"), Some("42"));
}
