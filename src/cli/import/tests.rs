//! Every fixture imported, and each policy loaded back through the real
//! loader from a temporary host tree.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::policy::{AppPolicy, ScaleDown, SocketSpec};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/uwsgi")
}

fn args(ini: PathBuf) -> Args {
    Args {
        ini,
        section: None,
        unit: None,
        name: None,
        write: false,
        force: false,
        root: PathBuf::from("/"),
    }
}

fn import_fixture(file: &str) -> Imported {
    import(&HostPaths::system(), &args(fixtures().join(file))).expect("imports")
}

/// Writes the policy into a fresh host tree and loads it as the daemon does.
fn load_back(imported: &Imported) -> AppPolicy {
    let root = TempDir::new().unwrap();
    let paths = HostPaths::new(root.path());
    write_dropin(&paths, imported, false).expect("writes");
    let policy = crate::policy::load(&paths).unwrap_or_else(|e| {
        panic!("does not load: {e}\n{}", imported.policy);
    });
    policy.app(&imported.name).expect("the app").clone()
}

fn mib(n: u64) -> Option<crate::policy::values::ByteSize> {
    Some(crate::policy::values::ByteSize(n << 20))
}

fn has_note(i: &Imported, text: &str) -> bool {
    i.notes.iter().any(|n| n.contains(text))
}

#[test]
fn plain_app() {
    let i = import_fixture("plain.ini");
    assert_eq!(
        (i.name.as_str(), i.unit.as_str()),
        ("plain", "plain.service")
    );
    assert!(
        i.policy
            .starts_with("# adaptive-workers policy for \"plain\", imported from "),
        "{}",
        i.policy
    );
    let app = load_back(&i);
    assert_eq!(app.memory.soft_limit, mib(250));
    assert_eq!(app.memory.hard_limit, None);
    assert_eq!(app.memory.min_lifetime.0, Duration::from_secs(10));
    assert_eq!(app.uwsgi.stats, Some(PathBuf::from("/run/blog/stats.sock")));
    assert_eq!(app.uwsgi.ini, Some(fixtures().join("plain.ini")));
    assert_eq!(app.scaling, None);
    assert!(has_note(&i, "harakiri: not mapped"), "{:#?}", i.notes);
    assert!(has_note(&i, "max-requests: not mapped"));
    assert!(has_note(&i, "a fixed count of 4 workers"));
    assert!(has_note(&i, "no --unit given"));
}

#[test]
fn cheaper_mode_with_limits() {
    let i = import_fixture("cheaper.ini");
    let app = load_back(&i);
    assert_eq!(app.memory.soft_limit, mib(300));
    assert_eq!(app.memory.hard_limit, mib(400));
    assert_eq!(app.memory.min_lifetime.0, Duration::from_secs(30));
    assert_eq!(app.uwsgi.master_fifo, Some(PathBuf::from("/run/shop/fifo")));
    assert_eq!(app.uwsgi.stats, Some(PathBuf::from("/run/shop/stats.sock")));
    let s = app.scaling.expect("scaling");
    assert_eq!((s.min_workers, s.max_workers, s.step_up), (2, 6, 2));
    assert_eq!(s.scale_down, ScaleDown::Stop);
    assert_eq!(
        s.sockets,
        [
            SocketSpec::Unix("/run/shop/uwsgi.sock".into()),
            SocketSpec::Tcp("0.0.0.0:8001".parse().unwrap())
        ]
    );
    assert!(
        has_note(&i, "cheaper-rss-limit-soft: not mapped"),
        "{:#?}",
        i.notes
    );
    assert!(has_note(&i, "reload-on-as: not mapped"));
    assert!(has_note(&i, "uWSGI starts 3 workers"));
    assert!(has_note(&i, "count RSS, shared pages included"));
    assert!(
        i.policy
            .contains("# reload-on-rss = 300, cheaper.ini:15 (MB)"),
        "{}",
        i.policy
    );
}

#[test]
fn debian_app_gets_its_own_unit() {
    let root = fixtures().join("debian");
    let mut a = args(PathBuf::from("/etc/uwsgi/apps-enabled/shop.ini"));
    a.root = root.clone();
    let i = import(&HostPaths::new(&root), &a).expect("imports");
    assert_eq!(i.unit, "uwsgi-shop.service");
    assert!(
        i.policy
            .contains("(also read: /usr/share/uwsgi/conf/default.ini)"),
        "{}",
        i.policy
    );
    let app = load_back(&i);
    // The file the suggested unit runs (apps-enabled's link is removed).
    assert_eq!(
        app.uwsgi.ini,
        Some(PathBuf::from("/etc/uwsgi/apps-available/shop.ini"))
    );
    assert_eq!(
        app.uwsgi.stats,
        Some(PathBuf::from("/run/uwsgi/app/shop/stats.sock"))
    );
    assert_eq!(
        app.uwsgi.master_fifo,
        Some(PathBuf::from("/run/uwsgi/app/shop/fifo"))
    );
    assert_eq!(app.memory.soft_limit, mib(180));
    let s = app.scaling.expect("scaling");
    assert_eq!((s.min_workers, s.max_workers), (1, 5));
    assert_eq!(
        s.sockets,
        [SocketSpec::Unix("/run/uwsgi/app/shop/socket".into())]
    );
    assert!(has_note(&i, "MainPID=0"), "{:#?}", i.notes);
    assert!(has_note(
        &i,
        "ExecStart=/usr/bin/uwsgi --ini /usr/share/uwsgi/conf/default.ini --ini /etc/uwsgi/apps-available/shop.ini"
    ));
    assert!(has_note(&i, "-o www-data -g www-data"));
    assert!(has_note(
        &i,
        "then: /etc/init.d/uwsgi stop shop; rm /etc/uwsgi/apps-enabled/shop.ini;"
    ));
    assert!(has_note(&i, "uwsgi-app@shop.service is no fit"));
    assert!(has_note(
        &i,
        "master, no-orphans, pidfile, socket, chown-socket"
    ));
}

#[test]
fn debian_app_with_a_path_inside_the_root_and_explicit_unit() {
    let root = fixtures().join("debian");
    let mut a = args(root.join("etc/uwsgi/apps-available/shop.ini"));
    a.root = root.clone();
    a.unit = Some("shop-api.service".into());
    a.name = Some("shop-api".into());
    let i = import(&HostPaths::new(&root), &a).expect("imports");
    assert_eq!(
        (i.name.as_str(), i.unit.as_str()),
        ("shop-api", "shop-api.service")
    );
    assert!(!has_note(&i, "MainPID=0"));
    let app = load_back(&i);
    assert_eq!(
        app.uwsgi.ini,
        Some(PathBuf::from("/etc/uwsgi/apps-available/shop.ini"))
    );
    // Still read with Debian's default.ini and names.
    assert_eq!(
        app.uwsgi.stats,
        Some(PathBuf::from("/run/uwsgi/app/shop/stats.sock"))
    );
}

#[test]
fn thunder_lock_and_tcp_stats() {
    let i = import_fixture("thunder.ini");
    let app = load_back(&i);
    assert_eq!(app.uwsgi.stats, None);
    assert!(
        has_note(
            &i,
            "\"127.0.0.1:9191\" is a TCP stats address and cannot be used"
        ),
        "{:#?}",
        i.notes
    );
    assert!(has_note(&i, "thunder-lock is on"));
    assert!(i.policy.contains("scale_down = \"stop\""));
    let s = app.scaling.expect("scaling");
    assert_eq!(
        (s.min_workers, s.max_workers, s.scale_down),
        (2, 8, ScaleDown::Stop)
    );
    assert_eq!(
        s.sockets,
        [SocketSpec::Tcp("0.0.0.0:8003".parse().unwrap())]
    );
    // reload_on_rss is ignored by uWSGI: not imported, but said.
    assert_eq!(app.memory.soft_limit, None);
    assert!(has_note(&i, "ignores \"reload_on_rss\""));
    assert_eq!(app.memory.hard_limit, mib(180));
}

#[test]
fn incomplete_cheaper_mode_writes_scaling_commented_out() {
    let dir = TempDir::new().unwrap();
    let ini = dir.path().join("half.ini");
    fs::write(
        &ini,
        "[uwsgi]\nmaster\nprocesses = 4\ncheaper = 1\nsocket = @abstract\nstats = rel.sock\n",
    )
    .unwrap();
    let i = import(&HostPaths::system(), &args(ini)).unwrap();
    assert!(i.policy.contains("# [scaling]"), "{}", i.policy);
    assert!(has_note(&i, "cheaper-algo = manual"), "{:#?}", i.notes);
    assert!(has_note(&i, "\"@abstract\" is neither"));
    assert!(has_note(
        &i,
        "\"rel.sock\" is not an absolute unix socket path"
    ));
    assert_eq!(load_back(&i).scaling, None);
}

#[test]
fn odd_memory_values() {
    let dir = TempDir::new().unwrap();
    let ini = dir.path().join("odd.ini");
    fs::write(&ini, "[uwsgi]\nmaster\nreload-on-rss = 500\nevil-reload-on-rss = 400\nmin-worker-lifetime = 5s\ndaemonize = /var/log/x\n").unwrap();
    let i = import(&HostPaths::system(), &args(ini.clone())).unwrap();
    let app = load_back(&i);
    assert_eq!(
        (app.memory.soft_limit, app.memory.hard_limit),
        (None, mib(400))
    );
    assert!(
        has_note(&i, "only the hard limit is imported"),
        "{:#?}",
        i.notes
    );
    assert!(has_note(&i, "\"5s\" is read by uWSGI as 5"));
    assert!(has_note(&i, "uWSGI detaches from its service"));

    fs::write(&ini, "[uwsgi]\nreload-on-rss = 0\n").unwrap();
    let i = import(&HostPaths::system(), &args(ini)).unwrap();
    assert_eq!(load_back(&i).memory.soft_limit, None);
    assert!(has_note(&i, "0 turns reload-on-rss off"));
    assert!(has_note(&i, "master is not on"));
}

#[test]
fn broken_ini_names_file_and_line() {
    let err = import(&HostPaths::system(), &args(fixtures().join("broken.ini")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("broken.ini:5: "), "{err}");
}

#[test]
fn bad_names_are_refused() {
    let mut a = args(fixtures().join("plain.ini"));
    a.name = Some("my app".into());
    let err = import(&HostPaths::system(), &a).unwrap_err().to_string();
    assert!(err.contains("--name"), "{err}");
}

#[test]
fn write_refuses_to_overwrite_without_force() {
    let root = TempDir::new().unwrap();
    let paths = HostPaths::new(root.path());
    let i = import_fixture("cheaper.ini");
    let path = write_dropin(&paths, &i, false).unwrap();
    assert_eq!(
        path,
        root.path()
            .join("etc/adaptive-workers/policies.d/cheaper.toml")
    );
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    let err = write_dropin(&paths, &i, false).unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
    fs::write(&path, "garbage").unwrap();
    write_dropin(&paths, &i, true).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), i.policy);
}

#[test]
fn every_import_checks_itself_through_the_loader() {
    for f in ["plain.ini", "cheaper.ini", "thunder.ini"] {
        check_loads(&import_fixture(f)).unwrap();
    }
    let mut bad = import_fixture("plain.ini");
    bad.policy += "\nbogus = 1\n";
    let err = check_loads(&bad).unwrap_err().to_string();
    assert!(err.contains("does not load"), "{err}");
}

/// What `import-uwsgi /etc/uwsgi/shop.ini --unit shop-api.service` makes of
/// the package's example ini, on a host tree holding only that file.
fn import_example() -> Imported {
    let root = TempDir::new().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples");
    fs::create_dir_all(root.path().join("etc/uwsgi")).unwrap();
    fs::copy(
        examples.join("uwsgi-shop.ini"),
        root.path().join("etc/uwsgi/shop.ini"),
    )
    .unwrap();
    let mut a = args(PathBuf::from("/etc/uwsgi/shop.ini"));
    a.root = root.path().to_path_buf();
    a.unit = Some("shop-api.service".into());
    import(&HostPaths::new(root.path()), &a).expect("imports")
}

#[test]
fn the_example_unit_is_what_import_makes_of_the_example_ini() {
    let i = import_example();
    let unit = i.unit_file.clone().expect("a unit");
    if std::env::var_os("AW_WRITE_EXAMPLES").is_some() {
        fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples/shop-api.service"),
            &unit,
        )
        .unwrap();
    }
    assert_eq!(
        unit,
        include_str!("../../../policies/examples/shop-api.service"),
        "policies/examples/shop-api.service differs from what import-uwsgi makes of \
         policies/examples/uwsgi-shop.ini: regenerate it with AW_WRITE_EXAMPLES=1 cargo test example_unit"
    );
    // The unit is in the notes, as import-uwsgi prints it.
    let note = i
        .notes
        .iter()
        .find(|n| n.starts_with("a unit that runs this ini"))
        .expect("the unit in the notes");
    let shown: String = note
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    assert_eq!(shown, unit);
    // What the example policy expects of it.
    let policy = load_back(&i);
    assert_eq!(
        policy.uwsgi.stats,
        Some(PathBuf::from("/run/shop/stats.sock"))
    );
    assert_eq!(
        policy.uwsgi.master_fifo,
        Some(PathBuf::from("/run/shop/master.fifo"))
    );
}

#[test]
fn the_unit_runs_uwsgi_in_the_foreground_with_the_kill_signal_for_die_on_term() {
    let i = import_example();
    let unit = i.unit_file.unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/uwsgi --ini /etc/uwsgi/shop.ini",
        "KillSignal=SIGTERM",
        "User=www-data",
        "RuntimeDirectory=shop",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} in\n{unit}");
    }
    // Without die-on-term, uWSGI stops on SIGQUIT.
    let dir = TempDir::new().unwrap();
    let ini = dir.path().join("api.ini");
    fs::write(
        &ini,
        "[uwsgi]\nmaster = true\nuid = api\nstats = /run/api/stats.sock\nsocket = /tmp/api.sock\n",
    )
    .unwrap();
    let unit = import(&HostPaths::system(), &args(ini.clone()))
        .unwrap()
        .unit_file
        .unwrap();
    assert!(unit.contains("\nKillSignal=SIGQUIT\n"), "{unit}");
    assert!(
        unit.starts_with("# api.service: runs the uWSGI app \"api\" ("),
        "{unit}"
    );
    assert!(
        unit.contains(&format!(
            "\nExecStart=/usr/bin/uwsgi --ini {}\n",
            ini.display()
        )),
        "{unit}"
    );
    // uWSGI drops to the ini's uid itself: its directory is made for it.
    assert!(
        unit.contains("\nExecStartPre=/usr/bin/install -d -o api -g api -m 755 /run/api\n"),
        "{unit}"
    );
    assert!(!unit.contains("User="), "{unit}");
    assert!(
        unit.contains("Not in a directory of its own under /run: /tmp/api.sock."),
        "{unit}"
    );
    // A template's instance gets none.
    let mut a = args(ini);
    a.unit = Some("uwsgi-app@api.service".into());
    assert_eq!(import(&HostPaths::system(), &a).unwrap().unit_file, None);
}

#[test]
fn debian_units_stop_uwsgi_with_sigquit_unless_die_on_term() {
    let root = fixtures().join("debian");
    let mut a = args(PathBuf::from("/etc/uwsgi/apps-enabled/shop.ini"));
    a.root = root.clone();
    let i = import(&HostPaths::new(&root), &a).expect("imports");
    let unit = i.unit_file.clone().expect("a unit");
    assert!(unit.contains("\nKillSignal=SIGQUIT\n"), "{unit}");
    assert!(
        unit.contains("\nEnvironment=UWSGI_DEB_CONFNAMESPACE=app UWSGI_DEB_CONFNAME=shop\n"),
        "{unit}"
    );
    assert!(
        unit.contains(
            "\nExecStartPre=/usr/bin/install -d -o www-data -g www-data -m 755 /run/uwsgi/app/shop\n"
        ),
        "{unit}"
    );
    // The notes show it once, indented, as before.
    assert!(has_note(&i, "  [Unit]\n  Description=uWSGI app shop\n"));
    assert!(!has_note(&i, "a unit that runs this ini"));
}
