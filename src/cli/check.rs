//! `adaptive-workers check`: validate the policy, print the effective one.

use std::path::Path;
use std::process::ExitCode;

use crate::cgroup::CgroupFs;
use crate::paths::HostPaths;
use crate::policy;

pub fn run(root: &Path) -> ExitCode {
    let paths = HostPaths::new(root);
    match policy::load(&paths) {
        Ok(p) => {
            print!("{}", p.to_toml());
            for w in environment_warnings(&paths) {
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
