//! Listen backlogs of the host's listening sockets, from netlink sock_diag.
//!
//! For a listening socket the kernel reports the accept queue's length and
//! its maximum: `idiag_rqueue`/`idiag_wqueue` for TCP, `UNIX_DIAG_RQLEN`
//! for unix sockets (the only source of truth there: uWSGI's own stats say
//! 0 for unix sockets). The daemon reads this ten times a second, so one
//! socket and one receive buffer are reused, and the kernel is asked for
//! LISTEN sockets only.
//!
//! Messages are encoded and decoded by netlink-packet-sock-diag; the socket
//! itself is plain rustix, which already has netlink addresses and a
//! `recv` that reports truncation (netlink-sys would add the `bytes` crate
//! for nothing). sock_diag sees the daemon's network namespace only.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_STREAM, TCP_LISTEN,
};
use netlink_packet_sock_diag::inet::{self, ExtensionFlags, InetRequest, InetResponse, SocketId};
use netlink_packet_sock_diag::unix::nlas::{Nla as UnixNla, UnixDiagName};
use netlink_packet_sock_diag::unix::{self, ShowFlags, UnixRequest, UnixResponse};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};
use thiserror::Error;

/// Biggest datagram the kernel builds for a dump (netlink_dump() caps its
/// allocation at 32 KiB); twice that leaves room and MSG_TRUNC still tells.
const RECV_BUFFER: usize = 64 * 1024;

/// A kernel that answers a dump request does so at once; this only guards
/// the daemon's loop against a reply that never comes.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum BacklogError {
    #[error("failed to open sock_diag netlink socket: {cause}")]
    Open { cause: io::Error },
    #[error("failed to send sock_diag request for {what}: {cause}")]
    Send {
        what: &'static str,
        cause: io::Error,
    },
    #[error("failed to receive sock_diag reply for {what}: {cause}")]
    Recv {
        what: &'static str,
        cause: io::Error,
    },
    #[error("failed to dump {what}: the kernel answered {cause}")]
    Kernel {
        what: &'static str,
        cause: io::Error,
    },
    #[error("failed to parse sock_diag reply for {what}: {detail}")]
    Parse { what: &'static str, detail: String },
}

/// A listening socket and its accept queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The socket's inode, as in `/proc/PID/fd/N -> socket:[inode]`.
    pub inode: u64,
    pub addr: ListenAddr,
    /// Connections waiting to be accepted.
    pub queue: u32,
    /// The backlog given to listen(2), capped by net.core.somaxconn.
    pub max: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// A unix socket bound to a path, as given to bind(2) (it may be
    /// relative); `None` for an unnamed socket.
    Unix(Option<PathBuf>),
    /// A unix socket in the abstract namespace: the name without its
    /// leading NUL.
    UnixAbstract(Vec<u8>),
}

/// Which dump a request is, for errors and for decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dump {
    Tcp4,
    Tcp6,
    Unix,
}

impl Dump {
    fn what(self) -> &'static str {
        match self {
            Dump::Tcp4 => "TCP/IPv4 listeners",
            Dump::Tcp6 => "TCP/IPv6 listeners",
            Dump::Unix => "unix stream listeners",
        }
    }

    fn request(self) -> SockDiagMessage {
        let inet = |family, socket_id| {
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: inet::StateFlags::LISTEN,
                socket_id,
            })
        };
        match self {
            Dump::Tcp4 => inet(AF_INET, SocketId::new_v4()),
            Dump::Tcp6 => inet(AF_INET6, SocketId::new_v6()),
            Dump::Unix => SockDiagMessage::UnixRequest(UnixRequest {
                state_flags: unix::StateFlags::LISTEN,
                inode: 0,
                show_flags: ShowFlags::NAME | ShowFlags::RQLEN,
                cookie: [0; 8],
            }),
        }
    }
}

/// One NETLINK_SOCK_DIAG socket, reused across calls.
#[derive(Debug)]
pub struct SockDiag {
    fd: OwnedFd,
    seq: u32,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl SockDiag {
    pub fn new() -> Result<Self, BacklogError> {
        let open = |e: rustix::io::Errno| BacklogError::Open { cause: e.into() };
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            Some(netlink::SOCK_DIAG),
        )
        .map_err(open)?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(RECV_TIMEOUT),
        )
        .map_err(open)?;
        Ok(Self {
            fd,
            seq: 0,
            request: Vec::new(),
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// Every LISTEN socket of the network namespace: TCP over IPv4 and
    /// IPv6, and unix stream sockets.
    pub fn listeners(&mut self) -> Result<Vec<Listener>, BacklogError> {
        let mut out = Vec::new();
        self.listeners_into(&mut out)?;
        Ok(out)
    }

    /// As [`SockDiag::listeners`], into a vector the caller reuses.
    pub fn listeners_into(&mut self, out: &mut Vec<Listener>) -> Result<(), BacklogError> {
        out.clear();
        for dump in [Dump::Tcp4, Dump::Tcp6, Dump::Unix] {
            self.dump(dump, out)?;
        }
        Ok(())
    }

    fn dump(&mut self, dump: Dump, out: &mut Vec<Listener>) -> Result<(), BacklogError> {
        let what = dump.what();
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(dump.request()));
        msg.finalize();
        self.request.clear();
        self.request.resize(msg.buffer_len(), 0);
        msg.serialize(&mut self.request);
        rustix::net::send(&self.fd, &self.request, SendFlags::empty()).map_err(|e| {
            BacklogError::Send {
                what,
                cause: e.into(),
            }
        })?;
        loop {
            let (_, len) = rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::TRUNC)
                .map_err(|e| BacklogError::Recv {
                    what,
                    cause: e.into(),
                })?;
            if len > self.buf.len() {
                let detail = format!(
                    "datagram of {len} bytes does not fit {} bytes",
                    self.buf.len()
                );
                return Err(BacklogError::Parse { what, detail });
            }
            if parse_datagram(dump, self.seq, &self.buf[..len], out)? == Step::Done {
                return Ok(());
            }
        }
    }
}

impl AsFd for SockDiag {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    More,
    Done,
}

/// Decodes one datagram of a dump reply, appending listeners. Messages
/// with another sequence number are the rest of an earlier dump that was
/// cut short by an error, and are skipped.
fn parse_datagram(
    dump: Dump,
    seq: u32,
    mut bytes: &[u8],
    out: &mut Vec<Listener>,
) -> Result<Step, BacklogError> {
    let what = dump.what();
    let parse_err = |detail: String| BacklogError::Parse { what, detail };
    while !bytes.is_empty() {
        let msg = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
            .map_err(|e| parse_err(format!("{e}")))?;
        let len = msg.header.length as usize;
        // deserialize() checked len against the buffer; a zero length would
        // loop forever.
        if len < 16 || len > bytes.len() {
            return Err(parse_err(format!("message length {len} is invalid")));
        }
        bytes = &bytes[align4(len).min(bytes.len())..];
        if msg.header.sequence_number != seq {
            continue;
        }
        match msg.payload {
            NetlinkPayload::Done(_) => return Ok(Step::Done),
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(BacklogError::Kernel {
                    what,
                    cause: e.to_io(),
                });
            }
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                if let Some(l) = tcp_listener(&r) {
                    out.push(l);
                }
            }
            NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(r)) => {
                if let Some(l) = unix_listener(&r).map_err(parse_err)? {
                    out.push(l);
                }
            }
            _ => {}
        }
    }
    Ok(Step::More)
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn tcp_listener(r: &InetResponse) -> Option<Listener> {
    let h = &r.header;
    if h.state != TCP_LISTEN {
        return None;
    }
    let addr = match h.socket_id.source_address {
        IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(
            ip,
            h.socket_id.source_port,
            0,
            h.socket_id.interface_id,
        )),
        ip => SocketAddr::new(ip, h.socket_id.source_port),
    };
    // For a listener, rqueue is the accept queue and wqueue its maximum.
    Some(Listener {
        inode: h.inode.into(),
        addr: ListenAddr::Tcp(addr),
        queue: h.recv_queue,
        max: h.send_queue,
    })
}

fn unix_listener(r: &UnixResponse) -> Result<Option<Listener>, String> {
    let h = &r.header;
    if h.state != TCP_LISTEN || h.kind != SOCK_STREAM {
        return Ok(None);
    }
    let (queue, max) = r
        .nlas
        .iter()
        .find_map(|nla| match nla {
            UnixNla::ReceiveQueueLength(q, m) => Some((*q, *m)),
            _ => None,
        })
        .ok_or_else(|| format!("unix socket {} has no UNIX_DIAG_RQLEN", h.inode))?;
    let addr = match r.name() {
        Some(UnixDiagName::Pathname(p)) => ListenAddr::Unix(Some(PathBuf::from(p))),
        Some(UnixDiagName::Abstract(name)) => ListenAddr::UnixAbstract(name.clone()),
        None => ListenAddr::Unix(None),
    };
    Ok(Some(Listener {
        inode: h.inode.into(),
        addr,
        queue,
        max,
    }))
}

#[cfg(test)]
mod tests;
