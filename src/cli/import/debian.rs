//! Debian's uWSGI layout (bookworm, uwsgi 2.0.21-5.1), as read from the
//! package:
//!
//! - `/etc/init.d/uwsgi` starts one uWSGI per `/etc/uwsgi/apps-enabled/*.ini`
//!   as `uwsgi --ini /usr/share/uwsgi/conf/default.ini --ini FILE
//!   --daemonize /var/log/uwsgi/app/NAME.log`, with `UWSGI_DEB_CONFNAMESPACE=app`
//!   and `UWSGI_DEB_CONFNAME=NAME` in the environment (default.ini uses them
//!   as `%(deb-confnamespace)` and `%(deb-confname)` for the pidfile and the
//!   socket under /run/uwsgi/app/NAME/). The inherited file is
//!   `INHERITED_CONFIG` in /etc/default/uwsgi.
//! - systemd runs that script as `uwsgi.service`, a unit made by
//!   systemd-sysv-generator with `Type=forking`, `GuessMainPID=no`,
//!   `RemainAfterExit=yes` and no `PIDFile=` (the script's LSB header names
//!   none). So `uwsgi.service` has MainPID 0 and its one cgroup holds the
//!   daemonized masters of every enabled app.
//! - The package also ships `uwsgi-app@.service` (`Type=notify`,
//!   `ExecStart=/usr/bin/uwsgi --ini /etc/uwsgi/apps-available/%i.ini`,
//!   `DynamicUser=yes`, `KillSignal=SIGQUIT`) and a socket unit for it. It
//!   is not enabled by default and does not read default.ini.
//!
//! The daemon finds an app's workers as children of its service's main
//! process, so an app run by the init script cannot be managed: the notes
//! say so and give a unit of its own that runs the app as the script does.

use std::fs;
use std::path::{Path, PathBuf};

use super::unit::UnitSpec;
use crate::paths::HostPaths;
use crate::policy::uwsgi_ini::{ReadOptions, UwsgiIni};

const ENABLED: &str = "/etc/uwsgi/apps-enabled";
const AVAILABLE: &str = "/etc/uwsgi/apps-available";
const DEFAULT_INI: &str = "/usr/share/uwsgi/conf/default.ini";

/// An app in Debian's layout.
pub(super) struct Layout {
    /// `deb-confname`: the file name without `.ini`.
    confname: String,
    host_ini: PathBuf,
    enabled: bool,
    /// The apps-enabled file is a symlink (into apps-available).
    symlink: bool,
    /// default.ini (or INHERITED_CONFIG), if it is there.
    default_ini: Option<PathBuf>,
    default_wanted: PathBuf,
    /// A unit file of the dedicated name already exists.
    unit_exists: Option<PathBuf>,
}

/// The layout, if `host` is an ini in /etc/uwsgi/apps-{enabled,available}.
pub(super) fn layout(paths: &HostPaths, host: &Path, _name: &str) -> Option<Layout> {
    let dir = host.parent()?;
    let enabled = dir == Path::new(ENABLED);
    if !enabled && dir != Path::new(AVAILABLE) {
        return None;
    }
    if host.extension().is_none_or(|e| e != "ini") {
        return None;
    }
    let confname = host.file_stem()?.to_string_lossy().into_owned();
    let default_wanted = inherited_config(paths);
    let default_ini = paths
        .resolve(&default_wanted)
        .is_file()
        .then(|| default_wanted.clone());
    let unit = format!("uwsgi-{confname}.service");
    let unit_exists = [
        "/etc/systemd/system",
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
    ]
    .iter()
    .map(|d| Path::new(d).join(&unit))
    .find(|p| paths.resolve(p).exists());
    let symlink = paths
        .resolve(host)
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink());
    Some(Layout {
        confname,
        host_ini: host.to_path_buf(),
        enabled,
        symlink,
        default_ini,
        default_wanted,
        unit_exists,
    })
}

/// `INHERITED_CONFIG=` from /etc/default/uwsgi, or Debian's default.
fn inherited_config(paths: &HostPaths) -> PathBuf {
    let text = fs::read_to_string(paths.resolve("/etc/default/uwsgi")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("INHERITED_CONFIG="))
        .map(|v| v.trim().trim_matches(['"', '\'']))
        .rfind(|v| v.starts_with('/'))
        .map_or_else(|| PathBuf::from(DEFAULT_INI), PathBuf::from)
}

impl Layout {
    /// Read as the init script runs it.
    pub(super) fn read_options(&self) -> ReadOptions {
        ReadOptions {
            root: None,
            preset: vec![
                ("deb-confnamespace".into(), "app".into()),
                ("deb-confname".into(), self.confname.clone()),
            ],
            before: self.default_ini.iter().cloned().collect(),
        }
    }

    /// The ini the dedicated unit runs: after the steps in the notes, an
    /// enabled app's file is in apps-available.
    pub(super) fn runs_from(&self) -> PathBuf {
        Path::new(AVAILABLE).join(format!("{}.ini", self.confname))
    }

    pub(super) fn unit(&self) -> String {
        format!("uwsgi-{}.service", self.confname)
    }

    pub(super) fn read_notes(&self) -> Vec<String> {
        match &self.default_ini {
            Some(d) => vec![format!(
                "read as Debian's init script runs it: {} first, with deb-confnamespace = app and deb-confname = {}",
                d.display(),
                self.confname
            )],
            None => vec![format!(
                "{} is not there: options and placeholders Debian's apps take from it (master, socket, %(deb-confname)) are missing",
                self.default_wanted.display()
            )],
        }
    }

    /// Who runs the app now, whether the daemon can manage it, and what to
    /// do instead.
    pub(super) fn unit_notes(&self, ini: &UwsgiIni) -> Vec<String> {
        let name = &self.confname;
        let unit = self.unit();
        let mut notes = Vec::new();
        if self.enabled {
            notes.push(format!(
                "{} is started by Debian's init script /etc/init.d/uwsgi, which systemd runs as uwsgi.service \
                 (made by systemd-sysv-generator: Type=forking, GuessMainPID=no, no PIDFile=). So uwsgi.service has \
                 no main PID (MainPID=0) and holds the daemonized masters of every app in {ENABLED} in one cgroup. \
                 adaptive-workers finds an app's workers as children of its service's main process: it cannot manage \
                 an app run that way",
                self.host_ini.display()
            ));
        } else {
            notes.push(format!(
                "{} is in {AVAILABLE} only: Debian's init script does not run it (only {ENABLED})",
                self.host_ini.display()
            ));
        }
        let available = Path::new(AVAILABLE).join(format!("{name}.ini"));
        match &self.unit_exists {
            Some(p) => notes.push(format!(
                "the policy names {unit}, and {} exists: check that it runs uWSGI in the foreground with \
                 --ini {}, so that its main PID is the master",
                p.display(),
                available.display()
            )),
            None => {
                let mut steps = Vec::new();
                if self.enabled {
                    // Not `service uwsgi stop NAME`: under systemd that is
                    // `systemctl stop uwsgi.service`, which stops every app.
                    steps.push(format!("/etc/init.d/uwsgi stop {name}"));
                    if self.symlink {
                        steps.push(format!("rm {ENABLED}/{name}.ini"));
                    } else {
                        steps.push(format!("mv {ENABLED}/{name}.ini {AVAILABLE}/"));
                    }
                }
                steps.push("systemctl daemon-reload".into());
                steps.push(format!("systemctl enable --now {unit}"));
                notes.push(format!(
                    "run {name} in a service of its own, which the policy names: create /etc/systemd/system/{unit}:\n{}\
                     then: {}{}",
                    super::indent(&self.unit_spec(ini, &unit).render()),
                    steps.join("; "),
                    if self.enabled {
                        format!(" (the init script would otherwise start {name} a second time)")
                    } else {
                        String::new()
                    }
                ));
            }
        }
        let inherited = self.inherited_keys(ini);
        notes.push(if inherited.is_empty() {
            format!(
                "Debian's uwsgi-app@{name}.service would also do (Type=notify, the master is its main PID; it runs \
                 {} without default.ini, with DynamicUser=yes): then give --unit uwsgi-app@{name}.service",
                available.display()
            )
        } else {
            format!(
                "Debian's uwsgi-app@{name}.service is no fit as it stands: it does not read default.ini, which gives \
                 this app {}",
                inherited.join(", ")
            )
        });
        notes
    }

    /// Options the app takes from default.ini and does not set itself.
    fn inherited_keys(&self, ini: &UwsgiIni) -> Vec<String> {
        let Some(default) = &self.default_ini else {
            return Vec::new();
        };
        let mut keys: Vec<String> = ini
            .entries()
            .iter()
            .filter(|e| &e.file == default && e.key != "declare-option")
            .filter(|e| {
                !ini.entries()
                    .iter()
                    .any(|o| o.key == e.key && o.file != *default && o.line > 0)
            })
            .map(|e| e.key.clone())
            .collect();
        keys.dedup();
        keys
    }

    /// A unit that runs the app as the init script does, in the
    /// foreground (Type=notify: uWSGI tells systemd when it is ready, and
    /// its master is the main PID): default.ini first, the init script's
    /// variables, its run directory made for default.ini's uid.
    pub(super) fn unit_spec(&self, ini: &UwsgiIni, unit: &str) -> UnitSpec {
        let name = &self.confname;
        let inis = self
            .default_ini
            .iter()
            .cloned()
            .chain([self.runs_from()])
            .collect();
        let mut spec = UnitSpec::from_ini(name, unit, ini, inis);
        spec.environment = Some(format!(
            "UWSGI_DEB_CONFNAMESPACE=app UWSGI_DEB_CONFNAME={name}"
        ));
        spec.extra_dirs = vec![PathBuf::from(format!("/run/uwsgi/app/{name}"))];
        spec
    }
}
