//! `adaptive-workers check`: validate the policy, print the effective one.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::adapter::{gunicorn, unicorn};
use crate::cgroup::CgroupFs;
use crate::engine::scaling::load_plan;
use crate::paths::HostPaths;
use crate::policy::uwsgi_ini::{UwsgiIni, cheaper_manual_problem, freeze_is_unsafe};
use crate::policy::{self, AppPolicy, LoadSignal, ScaleDown, ServerKind};
use crate::procfs::ProcFs;
use crate::systemd::Systemd;
use crate::systemd::dbus::DbusSystemd;

/// How long `check` waits for the system bus and for each answer of
/// systemd's: it is a quick look, never a reason to hang or fail.
const SYSTEMD_TIMEOUT: Duration = Duration::from_secs(2);

pub fn run(root: &Path) -> ExitCode {
    let paths = HostPaths::new(root);
    match policy::load(&paths) {
        Ok(p) => {
            print!("{}", p.to_toml());
            let mut warnings = environment_warnings(&paths);
            warnings.extend(p.apps.iter().flat_map(|a| scaling_warnings(&paths, a)));
            // Under --root the policies are for another host, whose units
            // this host's systemd does not know.
            let mut notes = Vec::new();
            let mut main_pids = BTreeMap::new();
            if paths.is_system() && !p.apps.is_empty() {
                let (w, n) = ask_systemd(&p.apps, &mut main_pids);
                warnings.extend(w);
                notes.extend(n);
            }
            for app in &p.apps {
                let pid = main_pids.get(&app.name).copied();
                let (note, warning) = scaling_signal(&paths, app, pid);
                notes.extend(note);
                warnings.extend(warning);
                let (note, warning) = unicorn_config(&paths, app, pid);
                notes.extend(note);
                warnings.extend(warning);
                warnings.extend(gunicorn_freeze(&paths, app, pid));
            }
            for w in warnings {
                eprintln!("warning: {w}");
            }
            for n in notes {
                eprintln!("note: {n}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            let n = errors.0.len();
            eprintln!(
                "{n} error{} in the policy: not valid",
                if n == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

/// What a uWSGI app with `[scaling]` needs that its policy or its ini
/// (when the policy names a readable one) lacks.
fn scaling_warnings(paths: &HostPaths, app: &AppPolicy) -> Vec<String> {
    let (Some(scaling), ServerKind::Uwsgi) = (&app.scaling, app.server) else {
        return Vec::new();
    };
    let file = app.file.display();
    let mut w = Vec::new();
    if app.uwsgi.master_fifo.is_none() {
        w.push(format!("{file}: [scaling] on uWSGI needs uwsgi.master_fifo: the daemon changes the worker count through it"));
    }
    if app.uwsgi.stats.is_none() {
        w.push(format!("{file}: [scaling] on uWSGI needs uwsgi.stats: without it the daemon cannot tell idle workers or cheap slots, and will not scale"));
    }
    let Some(ini) = &app.uwsgi.ini else {
        w.push(format!("{file}: set uwsgi.ini so that check can verify the uWSGI side (cheaper-algo = manual, thunder-lock)"));
        return w;
    };
    match UwsgiIni::read(&paths.resolve(ini)) {
        Ok(parsed) => {
            w.extend(cheaper_manual_problem(&parsed).map(|p| format!("{file}: {p}")));
            if scaling.scale_down == ScaleDown::Freeze {
                w.extend(
                    freeze_is_unsafe(&parsed)
                        .map(|p| format!("{file}: {p}; the daemon will stop idle workers instead")),
                );
            }
        }
        Err(e) => w.push(format!("{file}: cannot check the uWSGI side: {e}")),
    }
    w
}

/// What an app's scaling will follow and why (the engine's own
/// [`load_plan`]), from the running arbiter's command line when systemd
/// named one; and a warning where gunicorn's own sizes would make the
/// connection signal blind (async workers serve up to 1,000 at once).
fn scaling_signal(
    paths: &HostPaths,
    app: &AppPolicy,
    main_pid: Option<u32>,
) -> (Option<String>, Option<String>) {
    let Some(sp) = &app.scaling else {
        return (None, None);
    };
    let file = app.file.display();
    let workers = main_pid
        .filter(|p| *p != 0 && app.server == ServerKind::Gunicorn)
        .and_then(|pid| gunicorn::Workers::read(&ProcFs::new(paths), pid));
    if app.server == ServerKind::Gunicorn && sp.load == LoadSignal::Auto && workers.is_none() {
        let note = format!(
            "{file}: scaling follows the connections each worker holds for gunicorn's gthread, gevent, eventlet, tornado and uvicorn workers, the accept queue for sync ones: the class is read from the arbiter's command line once it runs"
        );
        return (Some(note), None);
    }
    let plan = load_plan(sp, app.server, workers.as_ref());
    let note = format!(
        "{file}: scaling follows the {}: {}",
        plan.signal(),
        plan.why()
    );
    let blind = workers.filter(|w| {
        sp.concurrency.is_none()
            && plan.per_worker().is_some()
            && !matches!(
                w.class,
                gunicorn::WorkerClass::Gthread | gunicorn::WorkerClass::Sync
            )
    });
    let warning = blind.map(|w| {
        format!(
            "{file}: gunicorn's {} workers take up to --worker-connections ({}) at once, so the app would grow only past that many per worker: set scaling.concurrency to what one worker really serves at once",
            w.class.name(),
            w.worker_connections
        )
    });
    (Some(note), warning)
}

/// A gunicorn app with `scale_down = "freeze"` whose arbiter would kill
/// a frozen worker (its `--timeout`): the daemon will stop idle workers
/// instead, as it says in its journal.
fn gunicorn_freeze(paths: &HostPaths, app: &AppPolicy, main_pid: Option<u32>) -> Option<String> {
    let sp = app.scaling.as_ref()?;
    if app.server != ServerKind::Gunicorn || sp.scale_down != ScaleDown::Freeze {
        return None;
    }
    let file = app.file.display();
    let workers = match main_pid.filter(|p| *p != 0) {
        Some(pid) => match gunicorn::Workers::read(&ProcFs::new(paths), pid) {
            Some(w) => w,
            None => {
                return Some(format!(
                    "{file}: scale_down = \"freeze\": the arbiter's command line (PID {pid}) cannot be read, so whether a frozen worker would be killed for its heartbeat is not known; the daemon stops idle workers until it can tell"
                ));
            }
        },
        // Not running: gunicorn's default --timeout.
        None => gunicorn::Workers::from_argv(&[]),
    };
    let why = workers.freeze_refusal()?;
    Some(format!(
        "{file}: scale_down = \"freeze\": {why}; the daemon stops idle workers instead"
    ))
}

/// What a running Unicorn master's configuration file says, and what in it
/// works against the policy: without `preload_app true` each worker loads
/// the app itself, so nothing is shared with the master and the whole app
/// counts in each worker's scope; a `worker_processes` outside
/// [scaling]'s range is changed at once.
fn unicorn_config(
    paths: &HostPaths,
    app: &AppPolicy,
    main_pid: Option<u32>,
) -> (Option<String>, Vec<String>) {
    let file = app.file.display();
    let Some(pid) = main_pid.filter(|p| *p != 0 && app.server == ServerKind::Unicorn) else {
        return (None, Vec::new());
    };
    let (cfg, c) = match unicorn::master_config(&ProcFs::new(paths), pid) {
        Ok(Some(found)) => found,
        Ok(None) => {
            let note = format!(
                "{file}: the Unicorn master (PID {pid}) runs without -c: Unicorn's defaults (worker_processes 1, timeout 60, preload_app false)"
            );
            return (Some(note), vec![no_preload(app, "Unicorn's default")]);
        }
        Err(e) => {
            let note = format!(
                "{file}: cannot read the Unicorn master's configuration (PID {pid}): {e}: not checked"
            );
            return (Some(note), Vec::new());
        }
    };
    let shown = |v: Option<String>| v.unwrap_or_else(|| "not a literal".into());
    let note = format!(
        "{file}: the Unicorn master (PID {pid}) reads {}: worker_processes {}, timeout {}, preload_app {}",
        cfg.display(),
        shown(c.worker_processes.map(|n| n.to_string())),
        shown(c.timeout.map(|t| format!("{t} s"))),
        shown(c.preload_app.map(|p| p.to_string())),
    );
    let mut w = Vec::new();
    if c.preload_app != Some(true) {
        w.push(no_preload(app, &cfg.display().to_string()));
    }
    let outside = app
        .scaling
        .as_ref()
        .zip(c.worker_processes)
        .filter(|(sp, n)| *n < sp.min_workers || *n > sp.max_workers);
    if let Some((sp, n)) = outside {
        w.push(format!(
            "{file}: {} starts {n} workers, outside [scaling]'s {}..={}: the daemon changes the count with TTIN/TTOU as soon as it runs",
            cfg.display(),
            sp.min_workers,
            sp.max_workers
        ));
    }
    (Some(note), w)
}

fn no_preload(app: &AppPolicy, source: &str) -> String {
    format!(
        "{}: {source} has no preload_app true: each worker loads the app itself, so the whole app is private memory of every worker (none of it shared with the master) and counts against soft_limit and hard_limit; set preload_app true, or limits that allow for the app's full size",
        app.file.display()
    )
}

/// Things that do not make the policy invalid but will stop the daemon
/// from doing its job on this host.
fn environment_warnings(paths: &HostPaths) -> Vec<String> {
    let mut w = Vec::new();
    if let Err(e) = CgroupFs::open(paths) {
        w.push(format!(
            "{e}: the daemon needs cgroup v2 with the memory controller"
        ));
    }
    let pressure = paths.resolve("/proc/pressure/memory");
    if !pressure.exists() {
        w.push(format!(
            "{} is missing: no PSI (kernel without CONFIG_PSI or psi=0)",
            pressure.display()
        ));
    }
    w
}

/// Asks this host's systemd about the apps' units: warnings for units it
/// does not know, and a note when it could not be asked.
fn ask_systemd(
    apps: &[AppPolicy],
    main_pids: &mut BTreeMap<String, u32>,
) -> (Vec<String>, Option<String>) {
    let not_asked = |why: String| Some(not_checked(&why));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return (Vec::new(), not_asked(e.to_string())),
    };
    rt.block_on(async {
        match connect_systemd().await {
            Ok(sd) => unit_warnings(&sd, apps, main_pids).await,
            Err(why) => (Vec::new(), not_asked(why)),
        }
    })
}

async fn connect_systemd() -> Result<DbusSystemd, String> {
    let connect = async {
        let conn = zbus::connection::Builder::system()
            .method_timeout(SYSTEMD_TIMEOUT)
            .build()
            .await
            .map_err(|e| format!("no system bus: {e}"))?;
        DbusSystemd::with_connection(conn)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(SYSTEMD_TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {SYSTEMD_TIMEOUT:?}")))
}

/// One warning per app whose unit systemd has no trace of (LoadState
/// not-found: a typo, or a unit file not installed yet); the daemon would
/// only report it "not found" and manage nothing. The second value is a
/// note when systemd stopped answering: the units not asked about are not
/// warned about.
pub(crate) async fn unit_warnings<S: Systemd>(
    sd: &S,
    apps: &[AppPolicy],
    main_pids: &mut BTreeMap<String, u32>,
) -> (Vec<String>, Option<String>) {
    let mut w = Vec::new();
    for app in apps {
        let why = match tokio::time::timeout(SYSTEMD_TIMEOUT, sd.service(&app.unit)).await {
            Ok(Ok(Some(s))) => {
                main_pids.insert(app.name.clone(), s.main_pid);
                continue;
            }
            Ok(Ok(None)) => {
                w.push(unit_warning(app));
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {SYSTEMD_TIMEOUT:?}"),
        };
        return (w, Some(not_checked(&why)));
    }
    (w, None)
}

/// The one note said when systemd could not be asked.
fn not_checked(why: &str) -> String {
    format!("systemd could not be asked whether the policies' units exist ({why}): not checked")
}

fn unit_warning(app: &AppPolicy) -> String {
    let at = match unit_line(&app.file) {
        Some(line) => format!("{}:{line}", app.file.display()),
        None => app.file.display().to_string(),
    };
    format!(
        "{at}: unit \"{}\" is not known to systemd (LoadState=not-found): check the name",
        app.unit
    )
}

/// The line of the `unit` key in a policy file, read from the file (the
/// loaded policy keeps no positions).
fn unit_line(file: &Path) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct UnitKey {
        unit: toml::Spanned<String>,
    }
    let text = fs::read_to_string(file).ok()?;
    let key: UnitKey = toml::from_str(&text).ok()?;
    let start = key.unit.span().start;
    Some(text.get(..start)?.matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tempfile::TempDir;

    use super::*;
    use crate::systemd::fake::FakeSystemd;

    fn policy_tree(files: &[(&str, &str)]) -> (TempDir, Vec<AppPolicy>) {
        let root = TempDir::new().unwrap();
        let dir = root.path().join("etc/adaptive-workers/policies.d");
        fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            let f = dir.join(name);
            fs::write(&f, text).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        }
        let p = policy::load(&HostPaths::new(root.path())).expect("valid");
        (root, p.apps)
    }

    #[tokio::test]
    async fn a_unit_systemd_does_not_know_is_warned_about_with_file_and_line() {
        let (root, apps) = policy_tree(&[
            (
                "ghost.toml",
                "# a typo in the unit's name\nserver = \"uwsgi\"\n\n  unit   =  \"acc-ghost.service\"\n",
            ),
            ("shop.toml", "unit = \"shop.service\"\nserver = \"uwsgi\"\n"),
        ]);
        let sd = FakeSystemd::new(root.path().join("cgroup"));
        sd.add_service("shop.service", 10, &[10]).unwrap();
        // A unit that exists but is stopped is no typo.
        sd.set_state("shop.service", "inactive");
        let (w, note) = unit_warnings(&sd, &apps, &mut BTreeMap::new()).await;
        let file = root
            .path()
            .join("etc/adaptive-workers/policies.d/ghost.toml");
        assert_eq!(
            w,
            [format!(
                "{}:4: unit \"acc-ghost.service\" is not known to systemd (LoadState=not-found): check the name",
                file.display()
            )]
        );
        assert_eq!(note, None);
        assert_eq!(
            sd.calls(),
            ["service acc-ghost.service", "service shop.service"]
        );
    }

    #[tokio::test]
    async fn systemd_that_cannot_be_asked_gives_one_note_and_no_warning() {
        let (root, apps) = policy_tree(&[
            ("a.toml", "unit = \"a.service\"\nserver = \"uwsgi\"\n"),
            ("b.toml", "unit = \"b.service\"\nserver = \"uwsgi\"\n"),
        ]);
        let sd = FakeSystemd::new(root.path().join("cgroup"));
        sd.state
            .lock()
            .unwrap()
            .faults
            .fail
            .insert("service", "Access denied".into());
        let (w, note) = unit_warnings(&sd, &apps, &mut BTreeMap::new()).await;
        assert!(w.is_empty(), "{w:?}");
        let note = note.expect("a note");
        assert!(
            note.starts_with("systemd could not be asked whether the policies' units exist (")
                && note.contains("Access denied"),
            "{note}"
        );
        assert_eq!(sd.calls(), ["service a.service"], "asked once, not per app");
    }

    #[test]
    fn the_unit_line_is_read_from_the_file() {
        let dir = TempDir::new().unwrap();
        let f = dir.path().join("p.toml");
        fs::write(
            &f,
            "# unit = \"commented.service\"\n\n[memory]\nsoft_limit = \"1G\"\n",
        )
        .unwrap();
        assert_eq!(unit_line(&f), None, "no top-level unit key");
        fs::write(&f, "# unit = \"commented.service\"\nunit = \"x.service\"\n").unwrap();
        assert_eq!(unit_line(&f), Some(2));
    }

    #[test]
    fn check_says_what_scaling_follows_and_warns_about_async_sizes() {
        let api = "unit = \"api.service\"\nserver = \"gunicorn\"\n[scaling]\nmax_workers = 4\n";
        let (root, apps) = policy_tree(&[
            ("api.toml", api),
            (
                "shop.toml",
                "unit = \"shop.service\"\nserver = \"uwsgi\"\n[scaling]\nmax_workers = 4\n",
            ),
        ]);
        let paths = HostPaths::new(root.path());
        let (api, shop) = (&apps[0], &apps[1]);
        let cmdline = |argv: &str| {
            let f = root.path().join("proc/321/cmdline");
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, argv.replace(' ', "\0")).unwrap();
        };
        // Not running: what auto will do, in general.
        let (note, warning) = scaling_signal(&paths, api, None);
        assert!(
            note.unwrap()
                .contains("read from the arbiter's command line")
        );
        assert_eq!(warning, None);
        cmdline("/usr/bin/python3 /usr/bin/gunicorn -k gthread --threads 4 app:app");
        let (note, warning) = scaling_signal(&paths, api, Some(321));
        let note = note.unwrap();
        assert!(
            note.contains("follows the connections") && note.contains("--threads 4"),
            "{note}"
        );
        assert_eq!(warning, None);
        cmdline("/usr/bin/python3 /usr/bin/gunicorn -k uvicorn.workers.UvicornWorker app:asgi");
        let (_, warning) = scaling_signal(&paths, api, Some(321));
        assert!(warning.unwrap().contains("set scaling.concurrency"));
        cmdline("/usr/bin/python3 /usr/bin/gunicorn --workers 3 app:app");
        let (note, _) = scaling_signal(&paths, api, Some(321));
        assert!(note.unwrap().contains("follows the backlog"));
        let (note, _) = scaling_signal(&paths, shop, Some(321));
        assert!(
            note.unwrap()
                .contains("uwsgi workers take one connection at a time")
        );
    }

    #[test]
    fn check_reads_the_unicorn_masters_config_through_its_proc_dir() {
        let shelf = "unit = \"shelf.service\"\nserver = \"unicorn\"\n[scaling]\nmin_workers = 2\nmax_workers = 4\n";
        let (root, apps) = policy_tree(&[("shelf.toml", shelf)]);
        let paths = HostPaths::new(root.path());
        let app = &apps[0];
        let proc_dir = root.path().join("proc/321");
        fs::create_dir_all(proc_dir.join("root/srv")).unwrap();
        fs::create_dir_all(proc_dir.join("cwd")).unwrap();
        // Unicorn's title: one argument, the original ones after "master".
        let title = |t: &str| fs::write(proc_dir.join("cmdline"), format!("{t}\0\0\0")).unwrap();
        title("unicorn master -c /srv/u.rb config.ru");
        fs::write(
            proc_dir.join("root/srv/u.rb"),
            "worker_processes 6\ntimeout 30\npreload_app true\n",
        )
        .unwrap();
        let (note, w) = unicorn_config(&paths, app, Some(321));
        assert!(
            note.unwrap()
                .ends_with("reads /srv/u.rb: worker_processes 6, timeout 30 s, preload_app true")
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("starts 6 workers, outside [scaling]'s 2..=4"),
            "{w:?}"
        );

        // Relative to the master's working directory; computed settings.
        title("unicorn master -c config/unicorn.rb");
        fs::create_dir_all(proc_dir.join("cwd/config")).unwrap();
        fs::write(
            proc_dir.join("cwd/config/unicorn.rb"),
            "worker_processes Integer(ENV['N'] || 2)\n",
        )
        .unwrap();
        let (note, w) = unicorn_config(&paths, app, Some(321));
        assert!(
            note.unwrap()
                .contains("reads config/unicorn.rb: worker_processes not a literal")
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("has no preload_app true"), "{w:?}");

        // An app's symlink is not followed: a note, no findings.
        std::os::unix::fs::symlink("/etc/shadow", proc_dir.join("cwd/evil.rb")).unwrap();
        title("unicorn master -c evil.rb");
        let (note, w) = unicorn_config(&paths, app, Some(321));
        let note = note.unwrap();
        assert!(
            note.contains("cannot read") && note.contains("evil.rb"),
            "{note}"
        );
        assert!(w.is_empty(), "{w:?}");

        // No -c: Unicorn's defaults, which do not preload.
        title("unicorn master config.ru");
        let (note, w) = unicorn_config(&paths, app, Some(321));
        assert!(note.unwrap().contains("runs without -c"));
        assert!(
            w[0].contains("Unicorn's default has no preload_app true"),
            "{w:?}"
        );

        // Not running, or not Unicorn: nothing said.
        assert_eq!(unicorn_config(&paths, app, None), (None, Vec::new()));
    }

    #[test]
    fn check_warns_when_gunicorn_would_kill_a_frozen_worker() {
        let api = "unit = \"api.service\"\nserver = \"gunicorn\"\n[scaling]\nmax_workers = 4\nscale_down = \"freeze\"\n";
        let (root, apps) = policy_tree(&[("api.toml", api)]);
        let paths = HostPaths::new(root.path());
        let w = gunicorn_freeze(&paths, &apps[0], None).expect("warned");
        assert!(
            w.contains("30 s by default") && w.ends_with("the daemon stops idle workers instead"),
            "{w}"
        );
        let f = root.path().join("proc/321/cmdline");
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(&f, "/usr/bin/python3\0/usr/bin/gunicorn\0-t\090\0app:app\0").unwrap();
        let w = gunicorn_freeze(&paths, &apps[0], Some(321)).expect("warned");
        assert!(w.contains("--timeout (90 s)"), "{w}");
        fs::write(&f, "gunicorn\0--timeout=0\0app:app\0").unwrap();
        assert_eq!(gunicorn_freeze(&paths, &apps[0], Some(321)), None);
        let w = gunicorn_freeze(&paths, &apps[0], Some(999)).expect("warned");
        assert!(w.contains("cannot be read"), "{w}");
    }
}
