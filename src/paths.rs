//! One root prefix for every host path.
//!
//! Production uses `/`; tests and `adaptive-workers check --root DIR` use a
//! directory that mirrors the host layout. No other module spells out a host
//! path such as `/sys/fs/cgroup`: they ask a [`HostPaths`] for it.

use std::path::{Component, Path, PathBuf};

/// Where the host's files are, all under one root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPaths {
    root: PathBuf,
}

/// The directories policies are read from, lowest precedence first.
pub const POLICY_DIRS: [&str; 3] = [
    "/usr/lib/adaptive-workers",
    "/run/adaptive-workers",
    "/etc/adaptive-workers",
];

/// The global policy file's name inside each of [`POLICY_DIRS`].
pub const GLOBAL_FILE: &str = "adaptive-workers.toml";

/// The per-app drop-in directory's name inside each of [`POLICY_DIRS`].
pub const DROPIN_DIR: &str = "policies.d";

impl HostPaths {
    /// Paths of the running system.
    pub fn system() -> Self {
        Self::new("/")
    }

    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when this is the running system rather than a test tree.
    pub fn is_system(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The given absolute host path, under this root. Relative components
    /// that would climb above the root (`..`) are dropped, so a path from a
    /// policy can never point outside the root.
    pub fn resolve(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let mut out = self.root.clone();
        for c in host_path.as_ref().components() {
            if let Component::Normal(part) = c {
                out.push(part);
            }
        }
        out
    }

    pub fn proc(&self) -> PathBuf {
        self.resolve("/proc")
    }

    pub fn cgroup(&self) -> PathBuf {
        self.resolve("/sys/fs/cgroup")
    }

    /// The policy directories, lowest precedence first.
    pub fn policy_dirs(&self) -> Vec<PathBuf> {
        POLICY_DIRS.iter().map(|d| self.resolve(d)).collect()
    }

    /// `/dev/null` under this root, for recognising masked drop-ins.
    pub fn dev_null(&self) -> PathBuf {
        self.resolve("/dev/null")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_joins_under_root() {
        let p = HostPaths::new("/tmp/x");
        assert_eq!(p.cgroup(), PathBuf::from("/tmp/x/sys/fs/cgroup"));
        assert_eq!(
            p.resolve("/run/app/stats.sock"),
            PathBuf::from("/tmp/x/run/app/stats.sock")
        );
    }

    #[test]
    fn resolve_cannot_climb_out_of_root() {
        let p = HostPaths::new("/tmp/x");
        assert_eq!(
            p.resolve("/../../etc/shadow"),
            PathBuf::from("/tmp/x/etc/shadow")
        );
    }

    #[test]
    fn system_root_is_identity() {
        let p = HostPaths::system();
        assert!(p.is_system());
        assert_eq!(p.proc(), PathBuf::from("/proc"));
    }
}
