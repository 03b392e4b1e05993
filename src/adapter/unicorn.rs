//! Unicorn (Ruby, Rack): SIGQUIT to one worker is its graceful stop (it
//! finishes the request it serves and exits; the master forks a fresh one);
//! TTIN and TTOU to the master add or remove one worker. Unicorn has no
//! stats socket, so every child of the master is a worker. Its workers
//! take one connection at a time: the accept queue shows the load.

use std::path::PathBuf;

use super::ScaleMechanism;
use crate::policy::safe_open::{self, Symlinks};
use crate::procfs::ProcFs;

pub const RECYCLE_SIGNAL: i32 = libc::SIGQUIT;

pub fn scale(up: bool) -> ScaleMechanism {
    ScaleMechanism::SignalMaster {
        signal: if up { libc::SIGTTIN } else { libc::SIGTTOU },
    }
}

/// What `check` reads from Unicorn's configuration file (Ruby, but its
/// settings are plain calls: `preload_app true`, `timeout 30`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub preload_app: Option<bool>,
    /// Seconds before the master kills a worker stuck in one request.
    pub timeout: Option<u64>,
    pub worker_processes: Option<u32>,
}

impl Config {
    /// The settings written as literal calls at the start of a line; a
    /// setting computed in Ruby (`timeout ENV[...]`) stays unknown.
    pub fn parse(text: &str) -> Self {
        let mut c = Config::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            // `timeout 30` or `timeout(30)`
            let end = line
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(line.len());
            let (key, value) = line.split_at(end);
            let value = value.trim();
            let value = match value.strip_prefix('(') {
                Some(v) => v.strip_suffix(')').unwrap_or(v).trim(),
                None => value,
            };
            match key {
                "preload_app" => c.preload_app = value.parse().ok(),
                "timeout" => c.timeout = value.parse().ok(),
                "worker_processes" => c.worker_processes = value.parse().ok(),
                _ => {}
            }
        }
        c
    }
}

/// The configuration file a Unicorn command line names (`-c FILE`,
/// `-cFILE`, `--config-file FILE`, `--config-file=FILE`).
pub fn config_file(argv: &[String]) -> Option<&str> {
    let mut args = argv.iter().map(String::as_str);
    while let Some(a) = args.next() {
        if a == "-c" || a == "--config-file" {
            return args.next();
        }
        if let Some(v) = a.strip_prefix("--config-file=") {
            return Some(v);
        }
        if let Some(v) = a
            .strip_prefix("-c")
            .filter(|v| !v.is_empty() && !a.starts_with("--"))
        {
            return Some(v);
        }
    }
    None
}

/// The configuration of a running master: the file its command line names
/// (Unicorn rewrites its command line into one title, "unicorn master -c
/// FILE config.ru"), a relative path taken from the master's working
/// directory, an absolute one from its root directory (both through
/// /proc/PID, so a master in a chroot or a container is read right).
/// `Ok(None)`: the master was started without one. Read as an app's file:
/// a symlink is refused, at most 1 MiB.
pub fn master_config(procfs: &ProcFs, pid: u32) -> Result<Option<(PathBuf, Config)>, String> {
    let title = procfs.pid_cmdline(pid).map_err(|e| e.to_string())?;
    let argv: Vec<String> = title
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(String::from)
        .collect();
    let Some(file) = config_file(&argv) else {
        return Ok(None);
    };
    let named = PathBuf::from(file);
    let path = match named.strip_prefix("/") {
        Ok(inside) => procfs.pid_dir(pid).join("root").join(inside),
        Err(_) => procfs.pid_dir(pid).join("cwd").join(&named),
    };
    let text = safe_open::read_regular(&path, safe_open::MAX_FILE, Symlinks::Refuse)
        .map_err(|e| format!("{}: {e}", named.display()))?;
    Ok(Some((
        named,
        Config::parse(&String::from_utf8_lossy(&text)),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn config_file_in_each_spelling() {
        for cmd in [
            "/usr/bin/unicorn -c /srv/u.rb config.ru",
            "/usr/bin/unicorn -c/srv/u.rb config.ru",
            "unicorn --config-file /srv/u.rb -E production",
            "unicorn -E production --config-file=/srv/u.rb",
        ] {
            assert_eq!(config_file(&argv(cmd)), Some("/srv/u.rb"), "{cmd}");
        }
        assert_eq!(config_file(&argv("unicorn config.ru")), None);
        assert_eq!(config_file(&argv("unicorn -c")), None);
    }

    #[test]
    fn literal_settings_are_read_computed_ones_stay_unknown() {
        let c = Config::parse(
            "# preload_app false\nworker_processes 4\ntimeout(30)\npreload_app true # shared pages\n\
             listen \"127.0.0.1:8080\", backlog: 64\n",
        );
        assert_eq!(
            c,
            Config {
                preload_app: Some(true),
                timeout: Some(30),
                worker_processes: Some(4)
            }
        );
        let c = Config::parse(
            "worker_processes Integer(ENV['WEB_CONCURRENCY'] || 2)\ntimeout ENV['T']\n",
        );
        assert_eq!(c, Config::default());
    }

    #[test]
    fn recycles_with_quit_and_scales_with_ttin_ttou() {
        assert_eq!(RECYCLE_SIGNAL, libc::SIGQUIT);
        assert_eq!(
            scale(true),
            ScaleMechanism::SignalMaster {
                signal: libc::SIGTTIN
            }
        );
        assert_eq!(
            scale(false),
            ScaleMechanism::SignalMaster {
                signal: libc::SIGTTOU
            }
        );
    }
}
