//! The systemd unit that runs a uWSGI app as adaptive-workers manages it:
//! uWSGI in the foreground as the service's main process (the daemon finds
//! the workers as the master's children), `Type=notify`, the `KillSignal=`
//! that stops uWSGI for its `die-on-term` setting, and a directory under
//! /run for the stats socket and master FIFO the policy names.
//!
//! One template for every unit `import-uwsgi` suggests, Debian's layout
//! included; the package's example `policies/examples/shop-api.service` is
//! its output for `policies/examples/uwsgi-shop.ini` (a test holds them
//! equal).
//!
//! uWSGI 2.0 and its signals (core/uwsgi.c): without `die-on-term` SIGTERM
//! is a brutal reload (the master goes on) and SIGQUIT stops it; with
//! `die-on-term` SIGTERM stops it and SIGQUIT is the brutal reload, so a
//! `KillSignal=SIGQUIT` unit never stops and `systemctl restart` waits for
//! `TimeoutStopSec` (issue 16).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::policy::uwsgi_ini::UwsgiIni;

/// Who the master runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum RunAs {
    /// `User=`/`Group=` (the ini sets no uid): the directories under /run
    /// are the service's `RuntimeDirectory=`, made for that user.
    User { user: String, group: String },
    /// Started as root, uWSGI drops to the ini's uid/gid itself: the
    /// directories are made for that user before it starts.
    Root { uid: String, gid: String },
}

/// What the unit says, as read from the ini.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct UnitSpec {
    /// The app's name and the unit's file name.
    pub name: String,
    pub unit: String,
    /// `--ini` arguments, in order (host paths).
    pub inis: Vec<PathBuf>,
    pub die_on_term: bool,
    pub run_as: RunAs,
    /// The ini's stats socket, master FIFO, unix sockets and pidfile.
    pub paths: Vec<PathBuf>,
    /// Directories to make whatever the paths say (Debian's run directory).
    pub extra_dirs: Vec<PathBuf>,
    /// `Environment=` (Debian's init script's variables), if any.
    pub environment: Option<String>,
}

/// Options whose value is a file the master creates.
const PATH_KEYS: [&str; 9] = [
    "stats",
    "stats-server",
    "master-fifo",
    "socket",
    "uwsgi-socket",
    "http-socket",
    "shared-socket",
    "pidfile",
    "safe-pidfile",
];

impl UnitSpec {
    /// The spec for `ini`, read from the host path `host` (the first
    /// `--ini`), run by `unit`.
    pub(super) fn from_ini(name: &str, unit: &str, ini: &UwsgiIni, inis: Vec<PathBuf>) -> Self {
        let run_as = match ini.get("uid") {
            Some(uid) => RunAs::Root {
                uid: uid.to_owned(),
                gid: ini.get("gid").unwrap_or(uid).to_owned(),
            },
            None => RunAs::User {
                user: "www-data".into(),
                group: "www-data".into(),
            },
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        for e in ini
            .entries()
            .iter()
            .filter(|e| PATH_KEYS.contains(&e.key.as_str()))
        {
            let v = e.value.split(',').next().unwrap_or("").trim();
            let p = PathBuf::from(v);
            if p.is_absolute() && !paths.contains(&p) {
                paths.push(p);
            }
        }
        Self {
            name: name.to_owned(),
            unit: unit.to_owned(),
            inis,
            die_on_term: ini.flag("die-on-term"),
            run_as,
            paths,
            extra_dirs: Vec::new(),
            environment: None,
        }
    }

    /// The directories under /run the paths are in (each once, in order),
    /// and the paths that are in none.
    fn run_dirs(&self) -> (Vec<PathBuf>, Vec<&Path>) {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut outside = Vec::new();
        for p in &self.paths {
            let dir = p.parent().map(|d| match d.strip_prefix("/var/run") {
                Ok(rest) => Path::new("/run").join(rest),
                Err(_) => d.to_path_buf(),
            });
            match dir {
                Some(d) if d.starts_with("/run") && d != Path::new("/run") => {
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
                _ => outside.push(p.as_path()),
            }
        }
        for d in &self.extra_dirs {
            if !dirs.contains(d) {
                dirs.push(d.clone());
            }
        }
        (dirs, outside)
    }

    /// The unit file's text.
    pub(super) fn render(&self) -> String {
        let mut u = String::new();
        let main_ini = self
            .inis
            .last()
            .map_or(String::new(), |p| p.display().to_string());
        comment(
            &mut u,
            &format!(
                "{}: runs the uWSGI app \"{}\" ({main_ini}) as adaptive-workers manages it; made by `adaptive-workers import-uwsgi`. Copy it to /etc/systemd/system/, then run `systemctl daemon-reload` and `systemctl enable --now {}`.",
                self.unit, self.name, self.unit
            ),
        );
        u += "\n[Unit]\n";
        let _ = writeln!(u, "Description=uWSGI app {}", self.name);
        u += "After=network.target\n\n[Service]\n";
        comment(
            &mut u,
            "uWSGI in the foreground (no daemonize in the ini): its master is the service's main process, and adaptive-workers finds the workers as the master's children. uWSGI tells systemd itself when its workers are up.",
        );
        u += "Type=notify\nNotifyAccess=all\n";
        if let Some(env) = &self.environment {
            let _ = writeln!(u, "Environment={env}");
        }
        let (dirs, outside) = self.run_dirs();
        if let RunAs::Root { uid, gid } = &self.run_as
            && !dirs.is_empty()
        {
            comment(
                &mut u,
                &format!(
                    "uWSGI starts as root and drops to uid {uid} itself (the ini's uid/gid): make its directories for that user first."
                ),
            );
            for d in &dirs {
                let _ = writeln!(
                    u,
                    "ExecStartPre=/usr/bin/install -d -o {uid} -g {gid} -m 755 {}",
                    d.display()
                );
            }
        }
        let args: Vec<String> = self
            .inis
            .iter()
            .map(|p| format!("--ini {}", p.display()))
            .collect();
        let _ = writeln!(u, "ExecStart=/usr/bin/uwsgi {}", args.join(" "));
        comment(&mut u, "SIGHUP: uWSGI's graceful reload of every worker.");
        u += "ExecReload=/bin/kill -HUP $MAINPID\n";
        if self.die_on_term {
            comment(
                &mut u,
                "The ini sets die-on-term: uWSGI stops on SIGTERM. Not SIGQUIT: with die-on-term that is uWSGI's brutal reload, the master goes on, and `systemctl stop` or `restart` waits for TimeoutStopSec. (Without die-on-term, uWSGI 2.0 takes SIGTERM for the brutal reload and stops on SIGQUIT: then KillSignal=SIGQUIT.)",
            );
            u += "KillSignal=SIGTERM\n";
        } else {
            comment(
                &mut u,
                "The ini does not set die-on-term: uWSGI 2.0 stops on SIGQUIT and takes SIGTERM, systemd's default, for a brutal reload (the master goes on). With die-on-term = true use KillSignal=SIGTERM instead: then SIGQUIT is the brutal reload, and `systemctl stop` or `restart` waits for TimeoutStopSec.",
            );
            u += "KillSignal=SIGQUIT\n";
        }
        if let RunAs::User { user, group } = &self.run_as {
            comment(
                &mut u,
                "Who the app runs as (the ini sets no uid; uWSGI's uid/gid are for a master started as root).",
            );
            let _ = writeln!(u, "User={user}\nGroup={group}");
            if !dirs.is_empty() {
                let rel: Vec<String> = dirs
                    .iter()
                    .map(|d| d.strip_prefix("/run").unwrap_or(d).display().to_string())
                    .collect();
                let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                comment(
                    &mut u,
                    &format!(
                        "{} for {}: systemd makes it for User= at start and removes it at stop. 0750: adaptive-workers reaches the stats socket and the master FIFO with its CAP_DAC_OVERRIDE, nobody else needs to.",
                        shown.join(" and "),
                        self.listed_paths()
                    ),
                );
                let _ = writeln!(u, "RuntimeDirectory={}", rel.join(" "));
                u += "RuntimeDirectoryMode=0750\n";
            }
        }
        if !outside.is_empty() {
            let shown: Vec<String> = outside.iter().map(|p| p.display().to_string()).collect();
            comment(
                &mut u,
                &format!(
                    "Not in a directory of its own under /run: {}. Make sure the app's user may create it there.",
                    shown.join(", ")
                ),
            );
        }
        u += "Restart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n";
        u
    }

    fn listed_paths(&self) -> String {
        let shown: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        match shown.len() {
            0 => "the app's files".into(),
            1 => shown[0].clone(),
            n => format!("{} and {}", shown[..n - 1].join(", "), shown[n - 1]),
        }
    }
}

/// A comment paragraph, wrapped at 72 columns, never inside a `command`.
fn comment(out: &mut String, text: &str) {
    let mut words: Vec<String> = Vec::new();
    let mut open = false;
    for w in text.split_whitespace() {
        match words.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(w);
            }
            _ => words.push(w.to_owned()),
        }
        if w.matches('`').count() % 2 == 1 {
            open = !open;
        }
    }
    let mut line = String::from("#");
    for word in &words {
        if line.len() > 1 && line.len() + 1 + word.len() > 72 {
            let _ = writeln!(out, "{line}");
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    let _ = writeln!(out, "{line}");
}
