//! Whether freezing an app's idle workers is safe.
//!
//! With uWSGI's thunder-lock, an idle worker holds a process-shared mutex
//! across epoll_wait/accept: freezing that worker would stop every other
//! worker from accepting. The daemon looks for thunder-lock wherever uWSGI
//! takes options from (the ini files, the command line, UWSGI_*
//! environment variables) and refuses to freeze when it is on, or when it
//! cannot tell. Scaling down then stops workers instead.
//!
//! gunicorn's arbiter kills a worker whose heartbeat stops for
//! `--timeout` (30 s by default), and a frozen worker's stops: freezing
//! is refused unless the arbiter's command line says `--timeout 0`.
//!
//! The master's command line names most of those files, and the app can
//! rewrite it: to a FIFO, to `/dev/zero`, to a file of any size. So the
//! files it names are read as [`UwsgiIni::read_named_by_app`] reads them
//! (regular files only, never through a symlink, at most 1 MiB each), on a
//! thread of their own rather than the loop's, and once per master (its
//! PID and start time) rather than at every step. Until the verdict is in,
//! freezing is refused: never allowed on a guess.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::model::AppRuntime;
use crate::adapter::gunicorn;
use crate::paths::HostPaths;
use crate::policy::uwsgi_ini::{UwsgiIni, freeze_is_unsafe};
use crate::policy::{ScaleDown, ServerKind};
use crate::procfs::ProcFs;

/// How long a full step waits for the checks it started: reading a few
/// small files takes a millisecond, and a step that waited longer would
/// hold up the host step. A check still running is taken at a later step.
pub(super) const CHECK_WAIT: Duration = Duration::from_millis(250);

/// The refusal while the check runs.
pub(super) const PENDING: &str = "checking whether freezing is safe";

/// Ini files on one command line that are read at most (uWSGI takes any
/// number; real ones name one or two).
const MAX_INIS: usize = 16;

/// What a verdict is for: the master's PID and start time (together they
/// name one process for good), and the policy's `uwsgi.ini`.
pub type FreezeKey = (u32, u64, Option<PathBuf>);

/// A check under way, and what it is for.
pub type FreezeCheck = (FreezeKey, oneshot::Receiver<Option<String>>);

fn freezes(app: &AppRuntime) -> bool {
    matches!(app.policy.server, ServerKind::Uwsgi | ServerKind::Gunicorn)
        && app
            .policy
            .scaling
            .as_ref()
            .is_some_and(|s| s.scale_down == ScaleDown::Freeze)
}

/// The app's master, as a key; `Err`: why it cannot be had.
fn key(procfs: &ProcFs, app: &AppRuntime) -> Option<Result<FreezeKey, String>> {
    if !freezes(app) {
        return None;
    }
    let master = app.master()?;
    Some(
        procfs
            .pid_stat(master)
            .map(|s| (master, s.starttime, app.policy.uwsgi.ini.clone()))
            .map_err(|e| format!("cannot tell whether thunder-lock is on: {e}")),
    )
}

/// Starts the check of the app's master if it has none and none is under
/// way, so that every app's check runs while the step waits for the first.
pub(super) fn start_check(procfs: &ProcFs, paths: &HostPaths, app: &mut AppRuntime) {
    if let Some(Ok(key)) = key(procfs, app)
        && app.freeze_check.is_none()
        && app.freeze_checked.as_ref() != Some(&key)
    {
        // A failure to start is said by freeze_refusal, which tries again.
        let _ = spawn_check(procfs, paths, app, key);
    }
}

/// Why this app's workers must not be frozen, if they must not: the
/// verdict for its master, waiting for it until `deadline` if it is being
/// worked out ([`PENDING`] after that). The caller keeps what this returns
/// in `app.freeze_refused`, which holds the verdict for
/// `app.freeze_checked`.
pub(super) async fn freeze_refusal(
    procfs: &ProcFs,
    paths: &HostPaths,
    app: &mut AppRuntime,
    deadline: Instant,
) -> Option<String> {
    let key = match key(procfs, app) {
        Some(Ok(key)) => key,
        other => {
            // A verdict is for one master: with none, or another, it is gone.
            app.freeze_checked = None;
            return other.and_then(Result::err);
        }
    };
    loop {
        if let Some((_, done)) = app.freeze_check.as_mut() {
            let Ok(result) = tokio::time::timeout_at(deadline, done).await else {
                return Some(PENDING.into());
            };
            let (checked, _) = app.freeze_check.take().expect("matched above");
            if checked == key {
                app.freeze_checked = Some(key);
                return result.unwrap_or_else(|_| {
                    Some(
                        "cannot tell whether freezing is safe: the check ended without a verdict"
                            .into(),
                    )
                });
            }
            // For a master gone since: start over for this one.
        }
        if app.freeze_checked.as_ref() == Some(&key) {
            return app.freeze_refused.clone();
        }
        app.freeze_checked = None;
        if let Err(e) = spawn_check(procfs, paths, app, key.clone()) {
            return Some(format!(
                "cannot tell whether freezing is safe: failed to start the check: {e}"
            ));
        }
    }
}

/// Works out the verdict for `key` on a thread of its own. Not tokio's
/// blocking pool: the runtime would wait for a read that never ends (a
/// file on a hung network mount) when the daemon stops.
fn spawn_check(
    procfs: &ProcFs,
    paths: &HostPaths,
    app: &mut AppRuntime,
    key: FreezeKey,
) -> std::io::Result<()> {
    let (tx, rx) = oneshot::channel();
    let (procfs, paths) = (procfs.clone(), paths.clone());
    let (master, ini, server) = (key.0, key.2.clone(), app.policy.server);
    std::thread::Builder::new()
        .name("aw-freeze-check".into())
        .spawn(move || {
            let verdict = match server {
                ServerKind::Gunicorn => gunicorn_verdict(&procfs, master),
                _ => verdict(&procfs, &paths, master, ini),
            };
            let _ = tx.send(verdict);
        })?;
    app.freeze_check = Some((key, rx));
    Ok(())
}

/// The verdict for a gunicorn arbiter, from its command line.
fn gunicorn_verdict(procfs: &ProcFs, master: u32) -> Option<String> {
    #[cfg(test)]
    tests::counted(master);
    match procfs.pid_cmdline(master) {
        Ok(argv) => gunicorn::Workers::from_argv(&argv).freeze_refusal(),
        Err(e) => Some(format!("cannot tell gunicorn's --timeout: {e}")),
    }
}

/// The verdict for one uWSGI master: blocking reads of its command line, its
/// environment and the ini files.
fn verdict(
    procfs: &ProcFs,
    paths: &HostPaths,
    master: u32,
    policy_ini: Option<PathBuf>,
) -> Option<String> {
    #[cfg(test)]
    tests::counted(master);
    let cmdline = match procfs.pid_cmdline(master) {
        Ok(c) => c,
        Err(e) => return Some(format!("cannot tell whether thunder-lock is on: {e}")),
    };
    if cmdline
        .iter()
        .any(|a| a == "--thunder-lock" || a == "--thunder_lock")
    {
        return Some("the uWSGI master runs with --thunder-lock".into());
    }
    let environ = procfs.pid_environ(master).unwrap_or_default();
    if environ.iter().any(|e| {
        e.starts_with("UWSGI_THUNDER_LOCK=") && !e.ends_with("=0") && !e.ends_with("=false")
    }) {
        return Some("the uWSGI master has UWSGI_THUNDER_LOCK in its environment".into());
    }
    let mut named = Vec::new();
    let mut args = cmdline.iter();
    while let Some(a) = args.next() {
        if a == "--ini" {
            named.extend(args.next().map(PathBuf::from));
        } else if let Some(v) = a.strip_prefix("--ini=") {
            named.push(v.into());
        }
    }
    if policy_ini.is_none() && named.is_empty() {
        return Some("cannot tell whether thunder-lock is on: no uWSGI ini in the policy or on the master's command line".into());
    }
    if named.len() > MAX_INIS {
        return Some(format!(
            "cannot tell whether thunder-lock is on: the master's command line names more than {MAX_INIS} ini files"
        ));
    }
    // The policy's file is the administrator's (it may be a symlink, as in
    // Debian's apps-enabled); the others are the app's.
    let policy_ini = policy_ini.map(|p| UwsgiIni::read(&paths.resolve(p)));
    let named = named
        .iter()
        .map(|p| UwsgiIni::read_named_by_app(&paths.resolve(p)));
    for read in policy_ini.into_iter().chain(named) {
        match read {
            Ok(parsed) => {
                if let Some(why) = freeze_is_unsafe(&parsed) {
                    return Some(why);
                }
            }
            Err(e) => return Some(format!("cannot tell whether thunder-lock is on: {e}")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::Path;
    use std::sync::Mutex;

    use tempfile::TempDir;

    use super::*;
    use crate::systemd::ServiceInfo;

    /// Verdicts worked out, by master PID (tests run at once: each has
    /// its own PIDs).
    static CHECKS: Mutex<BTreeMap<u32, usize>> = Mutex::new(BTreeMap::new());

    pub(super) fn counted(master: u32) {
        *CHECKS.lock().unwrap().entry(master).or_default() += 1;
    }

    fn checks(master: u32) -> usize {
        CHECKS.lock().unwrap().get(&master).copied().unwrap_or(0)
    }

    fn mkfifo(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
    }

    /// A host tree with /proc under `proc` and everything else under
    /// `root` (`/` for the real /dev/zero), and one uWSGI app that scales
    /// down by freezing.
    struct Host {
        dir: TempDir,
        root: PathBuf,
    }

    impl Host {
        fn new(real_root: bool) -> Self {
            let dir = TempDir::new().unwrap();
            let root = if real_root {
                PathBuf::from("/")
            } else {
                dir.path().join("root")
            };
            Host { dir, root }
        }

        fn procfs(&self) -> ProcFs {
            ProcFs::at(self.dir.path().join("proc"))
        }

        fn paths(&self) -> HostPaths {
            HostPaths::new(&self.root)
        }

        /// An app with `ini` as the policy's uwsgi.ini, if any.
        fn app(&self, ini: Option<&str>, master: u32) -> AppRuntime {
            let etc = self.dir.path().join("policy");
            let dropins = etc.join("etc/adaptive-workers/policies.d");
            fs::create_dir_all(&dropins).unwrap();
            let ini = ini.map_or(String::new(), |i| format!("ini = \"{i}\"\n"));
            let file = dropins.join("scale.toml");
            fs::write(
                &file,
                format!(
                    "unit = \"scale.service\"\nserver = \"uwsgi\"\n[uwsgi]\n{ini}master_fifo = \"/run/scale/fifo\"\n[scaling]\nmin_workers = 1\nmax_workers = 4\nscale_down = \"freeze\"\n"
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
            let policy = crate::policy::load(&HostPaths::new(&etc)).unwrap();
            let mut app = AppRuntime::new(policy.apps[0].clone(), &self.paths());
            app.service = Some(ServiceInfo {
                main_pid: master,
                control_group: "/system.slice/scale.service".into(),
                active_state: "active".into(),
            });
            app
        }

        /// The master's /proc entry: started `starttime` ticks after boot.
        fn master(&self, pid: u32, starttime: u64, cmdline: &[&str]) {
            let dir = self.dir.path().join(format!("proc/{pid}"));
            fs::create_dir_all(&dir).unwrap();
            let mut stat = format!(
                "{pid} (uwsgi) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {starttime} 1000000 100"
            );
            stat.extend(std::iter::repeat_n(" 0", 28));
            fs::write(dir.join("stat"), stat).unwrap();
            let cmdline: String = cmdline.iter().map(|a| format!("{a}\0")).collect();
            let _ = fs::remove_file(dir.join("cmdline"));
            fs::write(dir.join("cmdline"), cmdline).unwrap();
        }

        /// A host file (under the root).
        fn write(&self, host: &str, text: &[u8]) -> PathBuf {
            let p = self.paths().resolve(host);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, text).unwrap();
            p
        }

        /// What the daemon's step would keep, as check_freeze_safety does.
        async fn step(&self, app: &mut AppRuntime, wait: Duration) -> Option<String> {
            start_check(&self.procfs(), &self.paths(), app);
            let deadline = Instant::now() + wait;
            let refusal = tokio::time::timeout(
                Duration::from_secs(10),
                freeze_refusal(&self.procfs(), &self.paths(), app, deadline),
            )
            .await
            .expect("the step waits for the check no longer than it said");
            app.freeze_refused = refusal.clone();
            refusal
        }

        /// Steps until the verdict is in.
        async fn verdict(&self, app: &mut AppRuntime) -> Option<String> {
            for _ in 0..20 {
                let r = self.step(app, Duration::from_millis(500)).await;
                if r.as_deref() != Some(PENDING) {
                    return r;
                }
            }
            panic!("no verdict within 10 s");
        }
    }

    #[tokio::test]
    async fn a_fifo_named_as_ini_refuses_freezing_at_once_naming_it() {
        let h = Host::new(false);
        let fifo = h.paths().resolve("/run/evil.fifo");
        mkfifo(&fifo);
        h.master(
            5_100_001,
            7,
            &["uwsgi", "--ini", "/run/evil.fifo", "--ini", "/dev/zero"],
        );
        let mut app = h.app(None, 5_100_001);
        let started = std::time::Instant::now();
        let why = h.verdict(&mut app).await.expect("refused");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            why,
            format!(
                "cannot tell whether thunder-lock is on: failed to read {}: is a FIFO, not a regular file",
                fifo.display()
            )
        );
    }

    #[tokio::test]
    async fn dev_zero_and_a_symlink_to_it_refuse_freezing() {
        // The real /dev/zero (the host root is /).
        let h = Host::new(true);
        h.master(5_100_011, 7, &["uwsgi", "--ini=/dev/zero"]);
        let mut app = h.app(None, 5_100_011);
        let why = h.verdict(&mut app).await.expect("refused");
        assert!(
            why.ends_with("failed to read /dev/zero: is a character device, not a regular file"),
            "{why}"
        );
        // Under a host root, /dev/zero there a symlink to the real one.
        let h = Host::new(false);
        let link = h.paths().resolve("/dev/zero");
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        h.master(5_100_012, 7, &["uwsgi", "--ini", "/dev/zero"]);
        let mut app = h.app(None, 5_100_012);
        let why = h.verdict(&mut app).await.expect("refused");
        assert!(
            why.ends_with("is a symbolic link, not a regular file"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn an_oversized_ini_refuses_freezing() {
        let h = Host::new(false);
        let mut text = b"[uwsgi]\nmaster = true\n".to_vec();
        text.resize(3 << 20, b'#');
        let big = h.write("/srv/app/big.ini", &text);
        h.master(5_100_021, 7, &["uwsgi", "--ini", "/srv/app/big.ini"]);
        let mut app = h.app(None, 5_100_021);
        let why = h.verdict(&mut app).await.expect("refused");
        assert!(
            why.ends_with(&format!(
                "failed to read {}: larger than 1 MiB",
                big.display()
            )),
            "{why}"
        );
    }

    #[tokio::test]
    async fn a_refusal_does_not_say_what_a_line_says() {
        let h = Host::new(false);
        let ini = h.write(
            "/srv/app/app.ini",
            b"[uwsgi]\nmaster = true\n[password=hunter2\n",
        );
        h.master(5_100_031, 7, &["uwsgi", "--ini", "/srv/app/app.ini"]);
        let mut app = h.app(None, 5_100_031);
        let why = h.verdict(&mut app).await.expect("refused");
        assert_eq!(
            why,
            format!(
                "cannot tell whether thunder-lock is on: {}:3: a section header with no closing ']'",
                ini.display()
            )
        );
        assert!(!why.contains("hunter2"), "{why}");
    }

    #[tokio::test]
    async fn the_verdict_is_worked_out_once_per_master() {
        let h = Host::new(false);
        h.write("/etc/uwsgi/scale.ini", b"[uwsgi]\nmaster = true\n");
        h.write("/srv/app/app.ini", b"[uwsgi]\nprocesses = 4\n");
        let master = 5_100_041;
        let argv = ["uwsgi", "--ini", "/srv/app/app.ini"];
        h.master(master, 7, &argv);
        let mut app = h.app(Some("/etc/uwsgi/scale.ini"), master);
        assert_eq!(h.verdict(&mut app).await, None);
        assert_eq!(checks(master), 1);
        assert_eq!(
            app.freeze_checked,
            Some((master, 7, Some(PathBuf::from("/etc/uwsgi/scale.ini"))))
        );
        // Not read again for the same master, at any number of steps.
        h.write("/srv/app/app.ini", b"[uwsgi]\nthunder-lock = true\n");
        for _ in 0..5 {
            assert_eq!(h.step(&mut app, Duration::ZERO).await, None);
        }
        assert_eq!(checks(master), 1);
        // The same PID, but another process (another start time): again.
        h.master(master, 8, &argv);
        let why = h.verdict(&mut app).await.expect("refused");
        assert!(
            why.contains("app.ini:2: thunder-lock: thunder-lock is on"),
            "{why}"
        );
        assert_eq!(checks(master), 2);
        for _ in 0..3 {
            assert_eq!(h.step(&mut app, Duration::ZERO).await, Some(why.clone()));
        }
        assert_eq!(checks(master), 2);
        // No master: no verdict kept; the master back: checked again.
        app.service = None;
        assert_eq!(h.step(&mut app, Duration::ZERO).await, None);
        app.service = h.app(None, master).service;
        assert_eq!(h.verdict(&mut app).await, Some(why));
        assert_eq!(checks(master), 3);
    }

    #[tokio::test]
    async fn while_the_check_runs_freezing_is_refused() {
        let h = Host::new(false);
        h.write("/srv/app/app.ini", b"[uwsgi]\nmaster = true\n");
        let master = 5_100_051;
        h.master(master, 7, &["uwsgi"]);
        // A command line that is not there yet: the check waits for it.
        let cmdline = h.dir.path().join(format!("proc/{master}/cmdline"));
        fs::remove_file(&cmdline).unwrap();
        mkfifo(&cmdline);
        let mut app = h.app(None, master);
        for _ in 0..3 {
            let r = h.step(&mut app, Duration::from_millis(20)).await;
            assert_eq!(r.as_deref(), Some(PENDING));
        }
        // One check at a time, however many steps.
        assert!(app.freeze_check.is_some());
        let feed = std::thread::spawn(move || {
            fs::write(&cmdline, "uwsgi\0--ini\0/srv/app/app.ini\0").unwrap()
        });
        assert_eq!(h.verdict(&mut app).await, None);
        feed.join().unwrap();
        assert_eq!(checks(master), 1);
    }

    #[tokio::test]
    async fn an_app_that_does_not_freeze_is_not_checked() {
        let h = Host::new(false);
        let master = 5_100_061;
        h.master(master, 7, &["uwsgi", "--ini", "/run/evil.fifo"]);
        let mut app = h.app(None, master);
        app.policy.scaling.as_mut().unwrap().scale_down = ScaleDown::Stop;
        assert_eq!(h.step(&mut app, Duration::ZERO).await, None);
        assert!(app.freeze_check.is_none());
        assert_eq!(checks(master), 0);
    }

    #[tokio::test]
    async fn gunicorn_freezes_only_with_timeout_0_on_its_command_line() {
        let h = Host::new(false);
        let master = 5_100_071;
        let mut app = h.app(None, master);
        app.policy.server = ServerKind::Gunicorn;
        h.master(
            master,
            7,
            &["/usr/bin/python3", "/usr/bin/gunicorn", "app:app"],
        );
        let why = h.verdict(&mut app).await.expect("refused");
        assert!(why.contains("--timeout (30 s by default)"), "{why}");
        // A new arbiter, with the heartbeat check off.
        h.master(master + 1, 8, &["gunicorn", "--timeout", "0", "app:app"]);
        app.service.as_mut().unwrap().main_pid = master + 1;
        assert_eq!(h.verdict(&mut app).await, None);
        // One that cannot be read is refused, and says why.
        app.service.as_mut().unwrap().main_pid = master + 2;
        h.master(master + 2, 9, &["gunicorn"]);
        fs::remove_file(h.dir.path().join(format!("proc/{}/cmdline", master + 2))).unwrap();
        let why = h.verdict(&mut app).await.expect("refused");
        assert!(
            why.starts_with("cannot tell gunicorn's --timeout: "),
            "{why}"
        );
    }
}
