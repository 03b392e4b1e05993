//! What the host must have before the daemon can do anything: systemd as
//! PID 1 (every scope, limit and kill goes through it) and the unified
//! cgroup v2 hierarchy with the memory controller (every decision reads
//! it). Without them the daemon says what is missing, all of it at once,
//! and exits with [`EXIT_UNSUPPORTED`]; the unit's
//! `RestartPreventExitStatus=` then keeps systemd from restarting it in a
//! loop on a host where it can never work.

use thiserror::Error;

use crate::cgroup::{CgroupError, CgroupFs};
use crate::paths::HostPaths;

/// sysexits.h EX_UNAVAILABLE: "a service is unavailable". Distinct from
/// 1 (a failure a restart may cure, such as the bus not answering yet).
pub const EXIT_UNSUPPORTED: u8 = 69;

/// statfs(2) f_type of a tmpfs (linux/magic.h): what /sys/fs/cgroup is
/// under the legacy and hybrid hierarchies.
const TMPFS_MAGIC: u64 = 0x0102_1994;

#[derive(Debug, Error)]
#[error("this host cannot run adaptive-workers: {}", .problems.join("; "))]
pub struct Unsupported {
    pub problems: Vec<String>,
}

/// Checks the host; returns the cgroup2 mount to read from.
pub fn check(paths: &HostPaths) -> Result<CgroupFs, Unsupported> {
    let mut problems = Vec::new();
    // sd_booted(3): this directory exists only when systemd is PID 1.
    let marker = paths.resolve("/run/systemd/system");
    if !marker.is_dir() {
        problems.push(format!(
            "systemd is not PID 1 ({} does not exist), and workers are placed and limited through systemd",
            marker.display()
        ));
    }
    let cgroups = CgroupFs::open(paths)
        .map_err(|e| problems.push(cgroup_problem(&e)))
        .ok();
    match cgroups {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(Unsupported { problems }),
    }
}

fn cgroup_problem(e: &CgroupError) -> String {
    match e {
        CgroupError::NotCgroup2 { path, magic } if *magic == TMPFS_MAGIC => format!(
            "{} is a tmpfs of cgroup v1 hierarchies (legacy or hybrid mode), not the unified cgroup v2 hierarchy; boot with systemd.unified_cgroup_hierarchy=1",
            path.display()
        ),
        CgroupError::NoMemoryController { .. } => format!(
            "{e}; the memory controller may be held by cgroup v1 or disabled on the kernel command line (cgroup_disable=memory)"
        ),
        _ => format!("cgroup v2 with the memory controller is needed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_without_systemd_or_cgroup2_is_refused_with_both_reasons() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/fs/cgroup")).unwrap();
        let paths = HostPaths::new(dir.path());
        let e = check(&paths).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(e.problems[0].contains("systemd is not PID 1"), "{e}");
        assert!(e.problems[1].contains("not a cgroup2 mount"), "{e}");
        assert!(
            e.to_string()
                .starts_with("this host cannot run adaptive-workers: ")
        );
    }

    #[test]
    fn hints_name_the_way_out() {
        let tmpfs = CgroupError::NotCgroup2 {
            path: "/sys/fs/cgroup".into(),
            magic: TMPFS_MAGIC,
        };
        assert!(cgroup_problem(&tmpfs).contains("systemd.unified_cgroup_hierarchy=1"));
        let no_memory = CgroupError::NoMemoryController {
            path: "/sys/fs/cgroup/cgroup.controllers".into(),
            controllers: "cpu io pids".into(),
        };
        let text = cgroup_problem(&no_memory);
        assert!(
            text.contains("cpu io pids") && text.contains("cgroup_disable=memory"),
            "{text}"
        );
    }
}
