//! Reader of the cgroup v2 hierarchy: the memory files of a worker's scope,
//! its processes and events, and the children of a slice.
//!
//! Cgroups are named as systemd names them in `ControlGroup`
//! (`/aw.slice/aw-shop.slice/aw-shop-4242.scope`), relative to the cgroup2
//! mount. Errors carry the path and cause in their message, as in
//! [`crate::procfs`].
//!
//! A worker's scope vanishes when the worker exits; reading it then is
//! [`CgroupError::Gone`], which the daemon handles as "worker gone" rather
//! than as a broken host.

mod files;

#[cfg(test)]
mod real_tests;
#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use crate::paths::HostPaths;
use crate::procfs::{ParseError, Pressure, parse_pressure};

pub use files::{
    CgroupEvents, MemoryEvents, MemoryStat, parse_cgroup_events, parse_limit, parse_memory_events,
    parse_memory_stat, parse_procs, parse_u64,
};

/// statfs(2) f_type of a cgroup2 mount (linux/magic.h).
pub const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

#[derive(Debug, Error)]
pub enum CgroupError {
    /// The cgroup no longer exists (its directory is gone, or the kernel
    /// answered ENODEV for a file of a removed cgroup).
    #[error("failed to read {path}: the cgroup is gone")]
    Gone { path: PathBuf },
    #[error("failed to read {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("failed to statfs {path}: {cause}")]
    Statfs { path: PathBuf, cause: io::Error },
    #[error("failed to open {path}: not a cgroup2 mount (filesystem magic {magic:#x})")]
    NotCgroup2 { path: PathBuf, magic: u64 },
    #[error(
        "failed to open {path}: the memory controller is not available (controllers: {controllers:?})"
    )]
    NoMemoryController { path: PathBuf, controllers: String },
}

impl CgroupError {
    /// True when the cgroup vanished, as opposed to a file that could not
    /// be read or parsed.
    pub fn is_gone(&self) -> bool {
        matches!(self, CgroupError::Gone { .. })
    }

    pub fn path(&self) -> &Path {
        match self {
            CgroupError::Gone { path }
            | CgroupError::Read { path, .. }
            | CgroupError::Statfs { path, .. }
            | CgroupError::NotCgroup2 { path, .. }
            | CgroupError::NoMemoryController { path, .. } => path,
            CgroupError::Parse(e) => &e.path,
        }
    }
}

/// The cgroup2 hierarchy of one host (or a fake tree).
#[derive(Clone, Debug)]
pub struct CgroupFs {
    root: PathBuf,
}

impl CgroupFs {
    /// Opens the host's cgroup2 mount, checking that it is one and that the
    /// memory controller is there: without it there is no `memory.current`
    /// and the daemon cannot work, so better to say so at start.
    pub fn open(paths: &HostPaths) -> Result<Self, CgroupError> {
        Self::open_at(paths.cgroup())
    }

    /// As [`CgroupFs::open`], for a cgroup2 mount at another place (hybrid
    /// hosts mount it at `unified/` below the usual path).
    pub fn open_at(root: impl Into<PathBuf>) -> Result<Self, CgroupError> {
        let root = root.into();
        let stat = rustix::fs::statfs(&root).map_err(|e| CgroupError::Statfs {
            path: root.clone(),
            cause: e.into(),
        })?;
        // f_type is signed on some targets; the magic fits in 32 bits.
        let magic = stat.f_type as u64 & 0xffff_ffff;
        if magic != CGROUP2_SUPER_MAGIC {
            return Err(CgroupError::NotCgroup2 { path: root, magic });
        }
        let path = root.join("cgroup.controllers");
        let controllers = read_text(&path, &root)?;
        if !controllers.split_whitespace().any(|c| c == "memory") {
            let controllers = controllers.trim().to_string();
            return Err(CgroupError::NoMemoryController { path, controllers });
        }
        Ok(Self { root })
    }

    /// No checks: for tests on fake trees.
    pub fn new_unchecked(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a cgroup named as systemd's `ControlGroup`. `..`
    /// and other non-name components are dropped, so a name can never
    /// point outside the mount.
    pub fn path(&self, cg: &str) -> PathBuf {
        let mut out = self.root.clone();
        for c in Path::new(cg).components() {
            if let Component::Normal(part) = c {
                out.push(part);
            }
        }
        out
    }

    pub fn exists(&self, cg: &str) -> bool {
        fs::symlink_metadata(self.path(cg)).is_ok_and(|m| m.is_dir())
    }

    /// Bytes charged to the cgroup: for a worker's scope, the memory it
    /// dirtied since it was moved there (see DESIGN.md).
    pub fn memory_current(&self, cg: &str) -> Result<u64, CgroupError> {
        self.read_parsed(cg, "memory.current", parse_u64)
    }

    pub fn memory_stat(&self, cg: &str) -> Result<MemoryStat, CgroupError> {
        self.read_parsed(cg, "memory.stat", parse_memory_stat)
    }

    pub fn memory_events(&self, cg: &str) -> Result<MemoryEvents, CgroupError> {
        self.read_parsed(cg, "memory.events", parse_memory_events)
    }

    pub fn memory_pressure(&self, cg: &str) -> Result<Pressure, CgroupError> {
        self.read_parsed(cg, "memory.pressure", parse_pressure)
    }

    /// `memory.high`; `None` for "max" (no limit).
    pub fn memory_high(&self, cg: &str) -> Result<Option<u64>, CgroupError> {
        self.read_parsed(cg, "memory.high", parse_limit)
    }

    /// `memory.max`; `None` for "max" (no limit).
    pub fn memory_max(&self, cg: &str) -> Result<Option<u64>, CgroupError> {
        self.read_parsed(cg, "memory.max", parse_limit)
    }

    /// PIDs in `cgroup.procs`, sorted.
    pub fn procs(&self, cg: &str) -> Result<Vec<u32>, CgroupError> {
        self.read_parsed(cg, "cgroup.procs", parse_procs)
    }

    pub fn events(&self, cg: &str) -> Result<CgroupEvents, CgroupError> {
        self.read_parsed(cg, "cgroup.events", parse_cgroup_events)
    }

    /// Path of a cgroup's control file, e.g. for a [`crate::procfs::PsiTrigger`]
    /// on `memory.pressure`.
    pub fn file(&self, cg: &str, name: &str) -> PathBuf {
        self.path(cg).join(name)
    }

    /// Names of the child cgroups, sorted.
    pub fn children(&self, cg: &str) -> Result<Vec<String>, CgroupError> {
        let dir = self.path(cg);
        let entries = fs::read_dir(&dir).map_err(|e| classify(e, &dir, &dir))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| classify(e, &dir, &dir))?;
            let is_dir = match entry.file_type() {
                Ok(t) => t.is_dir(),
                // Removed since the listing: not a child any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(classify(e, &entry.path(), &dir)),
            };
            if !is_dir {
                continue;
            }
            let name = entry.file_name().into_string().map_err(|name| {
                ParseError::new(&dir, format!("child name is not UTF-8: {name:?}"))
            })?;
            names.push(name);
        }
        names.sort_unstable();
        Ok(names)
    }

    fn read_parsed<T>(
        &self,
        cg: &str,
        file: &str,
        parse: impl FnOnce(&Path, &str) -> Result<T, ParseError>,
    ) -> Result<T, CgroupError> {
        let dir = self.path(cg);
        let path = dir.join(file);
        let text = read_text(&path, &dir)?;
        Ok(parse(&path, &text)?)
    }
}

fn read_text(path: &Path, dir: &Path) -> Result<String, CgroupError> {
    let bytes = fs::read(path).map_err(|e| classify(e, path, dir))?;
    String::from_utf8(bytes).map_err(|_| ParseError::new(path, "content is not UTF-8").into())
}

/// Gone vs broken. ENOENT on a file of a cgroup whose directory is still
/// there means the controller is not enabled for it, which is a
/// configuration problem, not a vanished worker.
fn classify(cause: io::Error, path: &Path, dir: &Path) -> CgroupError {
    let gone = match cause.raw_os_error() {
        // The kernel's answer for a file of a cgroup removed while open.
        Some(libc::ENODEV) => true,
        Some(libc::ENOENT) => fs::symlink_metadata(dir).is_err(),
        _ => false,
    };
    if gone {
        CgroupError::Gone {
            path: path.to_path_buf(),
        }
    } else {
        CgroupError::Read {
            path: path.to_path_buf(),
            cause,
        }
    }
}
