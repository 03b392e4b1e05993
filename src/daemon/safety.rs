//! Whether freezing an app's idle workers is safe.
//!
//! With uWSGI's thunder-lock, an idle worker holds a process-shared mutex
//! across epoll_wait/accept: freezing that worker would stop every other
//! worker from accepting. The daemon looks for thunder-lock wherever uWSGI
//! takes options from (the ini files, the command line, UWSGI_*
//! environment variables) and refuses to freeze when it is on, or when it
//! cannot tell. Scaling down then stops workers instead.

use super::model::AppRuntime;
use crate::paths::HostPaths;
use crate::policy::uwsgi_ini::{UwsgiIni, freeze_is_unsafe};
use crate::policy::{ScaleDown, ServerKind};
use crate::procfs::ProcFs;

/// Why this app's workers must not be frozen, if they must not.
pub(super) fn freeze_refusal(
    procfs: &ProcFs,
    paths: &HostPaths,
    app: &AppRuntime,
) -> Option<String> {
    let freezes = app
        .policy
        .scaling
        .as_ref()
        .is_some_and(|s| s.scale_down == ScaleDown::Freeze);
    if !freezes || app.policy.server != ServerKind::Uwsgi {
        return None;
    }
    let master = app.master()?;
    let cmdline = procfs.pid_cmdline(master).unwrap_or_default();
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
    let mut inis: Vec<std::path::PathBuf> = app.policy.uwsgi.ini.iter().cloned().collect();
    let mut args = cmdline.iter();
    while let Some(a) = args.next() {
        if a == "--ini" {
            inis.extend(args.next().map(std::path::PathBuf::from));
        } else if let Some(v) = a.strip_prefix("--ini=") {
            inis.push(v.into());
        }
    }
    if inis.is_empty() {
        return Some("cannot tell whether thunder-lock is on: no uWSGI ini in the policy or on the master's command line".into());
    }
    for ini in &inis {
        match UwsgiIni::read(&paths.resolve(ini)) {
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
