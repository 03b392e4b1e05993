//! `adaptive-workers check`: validate the policy, print the effective one.

use std::path::Path;
use std::process::ExitCode;

use crate::cgroup::CgroupFs;
use crate::paths::HostPaths;
use crate::policy::uwsgi_ini::{UwsgiIni, cheaper_manual_problem, freeze_is_unsafe};
use crate::policy::{self, AppPolicy, ScaleDown, ServerKind};

pub fn run(root: &Path) -> ExitCode {
    let paths = HostPaths::new(root);
    match policy::load(&paths) {
        Ok(p) => {
            print!("{}", p.to_toml());
            let app_warnings = p.apps.iter().flat_map(|a| scaling_warnings(&paths, a));
            for w in environment_warnings(&paths).into_iter().chain(app_warnings) {
                eprintln!("warning: {w}");
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
