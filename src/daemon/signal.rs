//! Signalling one worker without ever hitting a process that merely
//! inherited its PID.
//!
//! A pidfd is opened first: from then on it names one process, whatever
//! happens to the PID. Then the process's start time and cgroup are
//! checked against the worker's: a worker is (PID, start time). If the
//! worker had already exited and its PID been reused, the new process
//! started later (and is not in that scope): nothing is sent; if the
//! worker exits between the check and the signal, the pidfd still names
//! the dead worker and the kernel answers ESRCH.

use rustix::process::{PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
use thiserror::Error;

use crate::procfs::ProcFs;

#[derive(Debug, Error)]
pub enum SignalError {
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    #[error("process {pid} is in {actual}, not in {expected}: not signalling it")]
    NotInScope {
        pid: u32,
        expected: String,
        actual: String,
    },
    #[error(
        "process {pid} started at {actual}, not at {expected}: another process, not signalling it"
    )]
    Replaced {
        pid: u32,
        expected: u64,
        actual: u64,
    },
    #[error("failed to signal process {pid}: {cause}")]
    Failed { pid: u32, cause: std::io::Error },
}

/// Sends a signal to a worker after checking it is still in its scope.
pub trait Signaller {
    /// `starttime` is the worker's, from /proc/PID/stat (clock ticks
    /// after boot).
    fn signal_in_cgroup(
        &self,
        pid: u32,
        starttime: u64,
        cgroup: &str,
        signal: i32,
    ) -> Result<(), SignalError>;
}

/// The real one: pidfd, then the cgroup check, then pidfd_send_signal.
pub struct PidfdSignaller {
    pub procfs: ProcFs,
}

fn io_or_gone(pid: u32, e: rustix::io::Errno) -> SignalError {
    if e == rustix::io::Errno::SRCH {
        SignalError::Gone { pid }
    } else {
        SignalError::Failed {
            pid,
            cause: e.into(),
        }
    }
}

impl Signaller for PidfdSignaller {
    fn signal_in_cgroup(
        &self,
        pid: u32,
        starttime: u64,
        cgroup: &str,
        signal: i32,
    ) -> Result<(), SignalError> {
        let raw = rustix::process::Pid::from_raw(pid as i32).ok_or(SignalError::Gone { pid })?;
        let fd = pidfd_open(raw, PidfdFlags::empty()).map_err(|e| io_or_gone(pid, e))?;
        let failed = |e: crate::procfs::ProcError| match e.is_gone() {
            true => SignalError::Gone { pid },
            false => SignalError::Failed {
                pid,
                cause: std::io::Error::other(e.to_string()),
            },
        };
        let started = self.procfs.pid_stat(pid).map_err(failed)?.starttime;
        if started != starttime {
            return Err(SignalError::Replaced {
                pid,
                expected: starttime,
                actual: started,
            });
        }
        let actual = self.procfs.pid_cgroup(pid).map_err(failed)?;
        if actual != cgroup {
            return Err(SignalError::NotInScope {
                pid,
                expected: cgroup.to_owned(),
                actual,
            });
        }
        let sig = Signal::from_named_raw(signal).ok_or_else(|| SignalError::Failed {
            pid,
            cause: std::io::Error::other(format!("{signal} is not a signal")),
        })?;
        pidfd_send_signal(&fd, sig).map_err(|e| io_or_gone(pid, e))
    }
}

/// Records what would have been sent; for tests of the daemon loop.
#[derive(Default)]
pub struct RecordingSignaller {
    pub sent: std::sync::Mutex<Vec<(u32, String, i32)>>,
}

impl Signaller for RecordingSignaller {
    fn signal_in_cgroup(
        &self,
        pid: u32,
        _starttime: u64,
        cgroup: &str,
        signal: i32,
    ) -> Result<(), SignalError> {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.push((pid, cgroup.to_owned(), signal));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::HostPaths;

    fn start(pid: u32) -> u64 {
        real().procfs.pid_stat(pid).unwrap().starttime
    }

    #[test]
    fn refuses_a_process_that_started_at_another_time() {
        let mut child = sleeper();
        let pid = child.id();
        let s = real();
        let cgroup = s.procfs.pid_cgroup(pid).unwrap();
        let e = s
            .signal_in_cgroup(pid, start(pid) + 1, &cgroup, libc::SIGTERM)
            .unwrap_err();
        assert!(matches!(e, SignalError::Replaced { .. }), "{e}");
        assert!(child.try_wait().unwrap().is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A process of this test's own to signal.
    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap()
    }

    fn real() -> PidfdSignaller {
        PidfdSignaller {
            procfs: ProcFs::new(&HostPaths::system()),
        }
    }

    #[test]
    fn refuses_a_process_outside_the_expected_cgroup() {
        let mut child = sleeper();
        let pid = child.id();
        let e = real()
            .signal_in_cgroup(
                pid,
                start(pid),
                "/aw.slice/aw-x.slice/aw-x-1.scope",
                libc::SIGTERM,
            )
            .unwrap_err();
        assert!(matches!(e, SignalError::NotInScope { .. }), "{e}");
        // It was not signalled: still running.
        assert!(child.try_wait().unwrap().is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn signals_a_process_in_the_expected_cgroup() {
        let mut child = sleeper();
        let pid = child.id();
        let s = real();
        let cgroup = s.procfs.pid_cgroup(pid).unwrap();
        s.signal_in_cgroup(pid, start(pid), &cgroup, libc::SIGTERM)
            .unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn a_reaped_process_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let e = real()
            .signal_in_cgroup(pid, 0, "/", libc::SIGTERM)
            .unwrap_err();
        assert!(matches!(e, SignalError::Gone { .. }), "{e}");
    }
}
