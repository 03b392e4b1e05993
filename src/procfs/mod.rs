//! Reader of the host's `/proc`: memory, pressure, and what the daemon
//! needs to know about one process (stat, cgroup, children, sockets, thread
//! stacks).
//!
//! Every path is under the [`HostPaths`] root, so tests point a [`ProcFs`]
//! at a fake tree in a tempdir.
//!
//! Errors carry the path and the cause in their message ("failed to read
//! /proc/42/stat: Permission denied"). The `io::Error` is kept in a `cause`
//! field rather than as an error *source*, so that a chain printer does not
//! print the cause twice.
//!
//! A process that vanished between listing and reading is normal for a
//! daemon that watches workers come and go, so it is its own variant
//! ([`ProcError::Gone`]) rather than a read error: callers drop the worker
//! instead of reporting a broken host.

mod meminfo;
mod pid;
mod pressure;
mod stacks;
mod syscall;

#[cfg(test)]
mod real_tests;
#[cfg(test)]
mod stack_tests;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::paths::HostPaths;

pub use meminfo::{MemInfo, parse_meminfo};
pub use pid::{PidStat, parse_pid_cgroup, parse_pid_stat};
pub use pressure::{Pressure, PressureLine, PsiTrigger, parse_pressure, trigger_spec};
pub use stacks::{Mapping, SkippedThread, StackReport, ThreadStack, parse_maps};
pub use syscall::{SyscallState, parse_syscall};

/// A file's content did not have the shape the kernel documents.
///
/// Shared by the readers of `/proc` and of cgroupfs, which both parse PSI
/// files.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("failed to parse {path}: {what}")]
pub struct ParseError {
    pub path: PathBuf,
    pub what: String,
}

impl ParseError {
    pub fn new(path: &Path, what: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum ProcError {
    /// The process or thread no longer exists (ENOENT on its directory,
    /// or ESRCH).
    #[error("failed to read {path}: the process is gone")]
    Gone { path: PathBuf },
    #[error("failed to read {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("failed to read {path}: {name:?} is not a plain file name")]
    InvalidName { path: PathBuf, name: String },
    #[error("failed to open PSI trigger {path}: {cause}")]
    TriggerOpen { path: PathBuf, cause: io::Error },
    #[error("failed to write PSI trigger {spec:?} to {path}: {cause}")]
    TriggerWrite {
        path: PathBuf,
        spec: String,
        cause: io::Error,
    },
}

impl ProcError {
    /// True when the process (or thread) vanished, as opposed to a file
    /// that could not be read or parsed.
    pub fn is_gone(&self) -> bool {
        matches!(self, ProcError::Gone { .. })
    }

    pub fn path(&self) -> &Path {
        match self {
            ProcError::Gone { path }
            | ProcError::Read { path, .. }
            | ProcError::InvalidName { path, .. }
            | ProcError::TriggerOpen { path, .. }
            | ProcError::TriggerWrite { path, .. } => path,
            ProcError::Parse(e) => &e.path,
        }
    }
}

/// Turns an I/O error on `path` into [`ProcError`], deciding gone vs broken.
///
/// ENOENT alone does not prove the process is gone: a fake tree or a kernel
/// built without some file also gives ENOENT. So the process directory
/// `owner` is checked: only when it is missing too is the process gone.
pub(crate) fn classify(cause: io::Error, path: &Path, owner: Option<&Path>) -> ProcError {
    let gone = match cause.raw_os_error() {
        Some(libc::ESRCH) => true,
        Some(libc::ENOENT) => owner.is_some_and(|dir| !exists(dir)),
        _ => false,
    };
    if gone {
        ProcError::Gone {
            path: path.to_path_buf(),
        }
    } else {
        ProcError::Read {
            path: path.to_path_buf(),
            cause,
        }
    }
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Reads a whole file as UTF-8 text.
pub(crate) fn read_text(path: &Path, owner: Option<&Path>) -> Result<String, ProcError> {
    let bytes = std::fs::read(path).map_err(|e| classify(e, path, owner))?;
    String::from_utf8(bytes).map_err(|_| ParseError::new(path, "content is not UTF-8").into())
}

/// The `/proc` of one host (or of a fake tree).
#[derive(Clone, Debug)]
pub struct ProcFs {
    root: PathBuf,
}

impl ProcFs {
    pub fn new(paths: &HostPaths) -> Self {
        Self { root: paths.proc() }
    }

    /// A reader of the given directory as if it were `/proc`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn meminfo(&self) -> Result<MemInfo, ProcError> {
        let path = self.root.join("meminfo");
        let text = read_text(&path, None)?;
        Ok(parse_meminfo(&path, &text)?)
    }

    /// `/proc/pressure/<resource>`; `resource` is a plain name such as
    /// "memory", "cpu" or "io".
    pub fn pressure_path(&self, resource: &str) -> PathBuf {
        self.root.join("pressure").join(resource)
    }

    pub fn pressure(&self, resource: &str) -> Result<Pressure, ProcError> {
        let path = self.pressure_path(resource);
        if !is_plain_name(resource) {
            return Err(ProcError::InvalidName {
                path,
                name: resource.to_string(),
            });
        }
        let text = read_text(&path, None)?;
        Ok(parse_pressure(&path, &text)?)
    }

    /// `/proc/<pid>`.
    pub fn pid_dir(&self, pid: u32) -> PathBuf {
        self.root.join(pid.to_string())
    }
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}
