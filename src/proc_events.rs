//! Process events (fork, exec, exit) from the kernel's netlink proc
//! connector, so that a respawned worker is moved into its scope within
//! milliseconds instead of at the next scan.
//!
//! Hand-rolled with rustix: the crates that cover the connector are
//! unmaintained or pull in an async runtime of their own, and the protocol
//! is three fixed structs. Every length is checked before a field is read;
//! a malformed message is counted and skipped, never a panic.
//!
//! Events carry PIDs of the initial PID namespace, and the kernel only
//! serves subscribers there; before Linux 6.6 they also need
//! CAP_NET_ADMIN.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};
use thiserror::Error;

mod wire;

#[cfg(test)]
mod tests;

pub use wire::parse_datagram;

/// Kernel's receive buffer for the socket. A fork storm (a master
/// respawning all workers at once) must not overrun it between two
/// drains; 4 MiB holds some 5,000 events.
const RECV_BUFFER: usize = 4 << 20;

/// How long subscribe() waits for the kernel to acknowledge.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum ProcEventsError {
    #[error("failed to open the proc connector socket: {cause}")]
    Open { cause: io::Error },
    #[error("failed to bind the proc connector socket to CN_IDX_PROC: {cause}")]
    Bind { cause: io::Error },
    #[error("failed to send PROC_CN_MCAST_LISTEN to the proc connector: {cause}")]
    Send { cause: io::Error },
    #[error("failed to subscribe to the proc connector: the kernel answered {cause}")]
    Refused { cause: io::Error },
    #[error(
        "failed to subscribe to the proc connector: no acknowledgement within {timeout:?} \
         (not in the initial user and PID namespace?)"
    )]
    NoAck { timeout: Duration },
    #[error("failed to receive from the proc connector: {cause}")]
    Recv { cause: io::Error },
}

impl ProcEventsError {
    /// True when the kernel refused for lack of privilege (CAP_NET_ADMIN
    /// before Linux 6.6): the daemon then runs on scans alone.
    pub fn is_permission_denied(&self) -> bool {
        match self {
            ProcEventsError::Bind { cause }
            | ProcEventsError::Refused { cause }
            | ProcEventsError::Send { cause } => cause.kind() == io::ErrorKind::PermissionDenied,
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcEvent {
    /// `child_pid` is the new task's thread id; a new process has
    /// `child_pid == child_tgid`, a new thread does not.
    Fork {
        parent_pid: u32,
        parent_tgid: u32,
        child_pid: u32,
        child_tgid: u32,
    },
    Exec {
        pid: u32,
        tgid: u32,
    },
    /// Sent for every exiting thread; the process is gone when
    /// `pid == tgid`. `exit_code` is the wait status.
    Exit {
        pid: u32,
        tgid: u32,
        exit_code: u32,
    },
}

/// What a drain saw.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// Every event since the last drain was read.
    Complete,
    /// The kernel dropped events (ENOBUFS): what was read is true, but
    /// some events are missing, so the caller must rescan.
    Overrun,
}

/// A subscription to the proc connector.
#[derive(Debug)]
pub struct ProcConnector {
    fd: OwnedFd,
    buf: Vec<u8>,
    /// Events that arrived while subscribe() waited for its ack.
    pending: Vec<ProcEvent>,
    malformed: u64,
}

impl ProcConnector {
    /// Opens a non-blocking NETLINK_CONNECTOR socket bound to CN_IDX_PROC
    /// and sends PROC_CN_MCAST_LISTEN, then waits for the kernel's
    /// acknowledgement, because when it refuses (no CAP_NET_ADMIN before
    /// Linux 6.6, or outside the initial namespaces) the socket otherwise
    /// just stays silent, forever.
    pub fn subscribe() -> Result<Self, ProcEventsError> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::CONNECTOR),
        )
        .map_err(|e| ProcEventsError::Open { cause: e.into() })?;
        // Going past net.core.rmem_max needs CAP_NET_ADMIN; without it,
        // take what rmem_max allows.
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, RECV_BUFFER).is_err() {
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, RECV_BUFFER);
        }
        let addr = SocketAddrNetlink::new(0, wire::CN_IDX_PROC);
        rustix::net::bind(&fd, &addr).map_err(|e| ProcEventsError::Bind { cause: e.into() })?;
        // A per-call tag tells our ack from other subscribers'. Events
        // carry ack 0, so the tag must not be -1.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tag = (std::process::id() ^ nanos) | 1;
        let tag = if tag == u32::MAX { 1 } else { tag };
        let request = wire::listen_request(tag);
        let kernel = SocketAddrNetlink::new(0, 0);
        rustix::net::sendto(&fd, &request, SendFlags::empty(), &kernel)
            .map_err(|e| ProcEventsError::Send { cause: e.into() })?;
        let mut conn = Self {
            fd,
            buf: vec![0; 8192],
            pending: Vec::new(),
            malformed: 0,
        };
        conn.wait_for_ack(tag)?;
        Ok(conn)
    }

    fn wait_for_ack(&mut self, tag: u32) -> Result<(), ProcEventsError> {
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ProcEventsError::NoAck {
                    timeout: ACK_TIMEOUT,
                });
            }
            let ts = Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(ProcEventsError::Recv { cause: e.into() }),
            }
            while let Some(len) = self.recv_one()? {
                let mut pending = std::mem::take(&mut self.pending);
                let parsed = wire::parse_datagram_acks(&self.buf[..len], &mut pending);
                self.pending = pending;
                self.malformed += parsed.malformed;
                match parsed.ack_for(tag) {
                    Some(0) => return Ok(()),
                    Some(errno) => {
                        let cause = io::Error::from_raw_os_error(errno as i32);
                        return Err(ProcEventsError::Refused { cause });
                    }
                    None => {}
                }
            }
        }
    }

    /// Reads every pending message without blocking, appending the
    /// events to `out`; returns once the socket would block.
    pub fn drain(&mut self, out: &mut Vec<ProcEvent>) -> Result<Drain, ProcEventsError> {
        out.append(&mut self.pending);
        let mut status = Drain::Complete;
        loop {
            match self.recv_one() {
                Ok(Some(len)) => {
                    self.malformed += wire::parse_datagram(&self.buf[..len], out);
                }
                Ok(None) => return Ok(status),
                // The kernel reports a dropped message once, then the
                // queue goes on: keep draining what is there.
                Err(ProcEventsError::Recv { cause })
                    if cause.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    status = Drain::Overrun;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One datagram from the kernel into `buf`: its length, or None when
    /// nothing is waiting. Datagrams from user space are dropped: only
    /// the kernel speaks for CN_IDX_PROC.
    fn recv_one(&mut self) -> Result<Option<usize>, ProcEventsError> {
        loop {
            let flags = RecvFlags::DONTWAIT | RecvFlags::TRUNC;
            let (_, len, from) = match rustix::net::recvfrom(&self.fd, &mut self.buf[..], flags) {
                Ok(r) => r,
                Err(Errno::AGAIN) => return Ok(None),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(ProcEventsError::Recv { cause: e.into() }),
            };
            let from_kernel = from
                .and_then(|a| SocketAddrNetlink::try_from(a).ok())
                .is_some_and(|a| a.pid() == 0);
            if !from_kernel || len > self.buf.len() {
                self.malformed += 1;
                continue;
            }
            return Ok(Some(len));
        }
    }

    /// Messages skipped since subscribing because they were short,
    /// garbled, oversized or not from the kernel.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

impl AsFd for ProcConnector {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for ProcConnector {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
