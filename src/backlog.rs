//! Listen backlogs of the host's listening sockets, from netlink sock_diag.
//!
//! For a listening socket the kernel reports the accept queue's length and
//! its maximum: `idiag_rqueue`/`idiag_wqueue` for TCP, `UNIX_DIAG_RQLEN`
//! for unix sockets (the only source of truth there: uWSGI's own stats say
//! 0 for unix sockets). The daemon reads this ten times a second, so one
//! socket and one receive buffer are reused, and the kernel is asked for
//! LISTEN sockets only.
//!
//! It also lists the server ends of accepted connections
//! ([`SockDiag::connections_into`]), so that a connection can be told
//! apart from one still waiting in the accept queue, and matched to the
//! listener it came from with [`accepted_on`].
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
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_STREAM, TCP_ESTABLISHED, TCP_LISTEN,
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

/// A client connection a server accepted: the server's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The socket's inode, as in `/proc/PID/fd/N -> socket:[inode]`.
    pub inode: u64,
    /// Its local address: for TCP the address and port it was accepted
    /// on; for unix the listener's path (an accepted unix socket carries
    /// its listener's name).
    pub local: ListenAddr,
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
    /// LISTEN sockets.
    Tcp4,
    Tcp6,
    Unix,
    /// Connected TCP sockets whose local port is this one.
    Tcp4Conns(u16),
    Tcp6Conns(u16),
    /// Connected unix stream sockets.
    UnixConns,
}

impl Dump {
    fn what(self) -> &'static str {
        match self {
            Dump::Tcp4 => "TCP/IPv4 listeners",
            Dump::Tcp6 => "TCP/IPv6 listeners",
            Dump::Unix => "unix stream listeners",
            Dump::Tcp4Conns(_) => "TCP/IPv4 connections",
            Dump::Tcp6Conns(_) => "TCP/IPv6 connections",
            Dump::UnixConns => "unix stream connections",
        }
    }

    fn request(self) -> SockDiagMessage {
        let inet = |family, states, socket_id| {
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states,
                socket_id,
            })
        };
        // A non-zero source port makes the kernel skip every socket with
        // another local port (inet_diag_dump_icsk), so a busy host's
        // outgoing connections are not copied out ten times a second.
        let on_port = |port, id| SocketId {
            source_port: port,
            ..id
        };
        // Not CLOSE_WAIT: that is mostly a client that read its answer and
        // closed while the worker waits to read the next request of a
        // keep-alive connection; under load a worker notices late, and
        // such sockets (16 beside 24 clients in the VM) are no work.
        let connected = inet::StateFlags::ESTABLISHED;
        let unix = |state_flags, show_flags| {
            SockDiagMessage::UnixRequest(UnixRequest {
                state_flags,
                inode: 0,
                show_flags,
                cookie: [0; 8],
            })
        };
        match self {
            Dump::Tcp4 => inet(AF_INET, inet::StateFlags::LISTEN, SocketId::new_v4()),
            Dump::Tcp6 => inet(AF_INET6, inet::StateFlags::LISTEN, SocketId::new_v6()),
            Dump::Unix => unix(unix::StateFlags::LISTEN, ShowFlags::NAME | ShowFlags::RQLEN),
            Dump::Tcp4Conns(port) => inet(AF_INET, connected, on_port(port, SocketId::new_v4())),
            Dump::Tcp6Conns(port) => inet(AF_INET6, connected, on_port(port, SocketId::new_v6())),
            Dump::UnixConns => unix(unix::StateFlags::ESTABLISHED, ShowFlags::NAME),
        }
    }
}

/// What the messages of a dump decode into, so that listeners and
/// connections share the request and receive loop.
trait Entry: Sized {
    /// `None` for a socket the dump does not list.
    fn from_inet(dump: Dump, r: &InetResponse) -> Option<Self>;
    /// As [`Entry::from_inet`]; an error for a reply the kernel should not
    /// have sent (an attribute the request asked for is missing).
    fn from_unix(dump: Dump, r: &UnixResponse) -> Result<Option<Self>, String>;
}

impl Entry for Listener {
    fn from_inet(_: Dump, r: &InetResponse) -> Option<Self> {
        tcp_listener(r)
    }

    fn from_unix(_: Dump, r: &UnixResponse) -> Result<Option<Self>, String> {
        unix_listener(r)
    }
}

impl Entry for Connection {
    fn from_inet(dump: Dump, r: &InetResponse) -> Option<Self> {
        tcp_connection(dump, r)
    }

    fn from_unix(_: Dump, r: &UnixResponse) -> Result<Option<Self>, String> {
        Ok(unix_connection(r))
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

    /// The server ends of accepted connections: TCP sockets in
    /// ESTABLISHED whose local port is one of `tcp_ports`
    /// (IPv4 and IPv6, one dump per port and family, which the kernel
    /// filters by port), and, when `unix` is true, connected unix stream
    /// sockets that have a name. A unix socket's name is its listener's
    /// for a socket accept(2) returned, and none for a client's end unless
    /// the client bound one itself. Sockets with inode 0 are left out: they
    /// wait in an accept queue, and nobody has accepted them yet. `out` is
    /// cleared first.
    pub fn connections_into(
        &mut self,
        tcp_ports: &[u16],
        unix: bool,
        out: &mut Vec<Connection>,
    ) -> Result<(), BacklogError> {
        out.clear();
        for &port in tcp_ports {
            // Port 0 in the request would mean any port.
            if port == 0 {
                continue;
            }
            for dump in [Dump::Tcp4Conns(port), Dump::Tcp6Conns(port)] {
                self.dump(dump, out)?;
            }
        }
        if unix {
            self.dump(Dump::UnixConns, out)?;
        }
        Ok(())
    }

    fn dump<T: Entry>(&mut self, dump: Dump, out: &mut Vec<T>) -> Result<(), BacklogError> {
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

/// Decodes one datagram of a dump reply, appending listeners or
/// connections. Messages with another sequence number are the rest of an
/// earlier dump that was cut short by an error, and are skipped.
fn parse_datagram<T: Entry>(
    dump: Dump,
    seq: u32,
    mut bytes: &[u8],
    out: &mut Vec<T>,
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
                if let Some(e) = T::from_inet(dump, &r) {
                    out.push(e);
                }
            }
            NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(r)) => {
                if let Some(e) = T::from_unix(dump, &r).map_err(parse_err)? {
                    out.push(e);
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

/// The socket's local address.
fn inet_local(r: &InetResponse) -> SocketAddr {
    let id = &r.header.socket_id;
    match id.source_address {
        IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, id.source_port, 0, id.interface_id)),
        ip => SocketAddr::new(ip, id.source_port),
    }
}

fn tcp_listener(r: &InetResponse) -> Option<Listener> {
    let h = &r.header;
    if h.state != TCP_LISTEN {
        return None;
    }
    // For a listener, rqueue is the accept queue and wqueue its maximum.
    Some(Listener {
        inode: h.inode.into(),
        addr: ListenAddr::Tcp(inet_local(r)),
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
    Ok(Some(Listener {
        inode: h.inode.into(),
        addr: unix_name(r).unwrap_or(ListenAddr::Unix(None)),
        queue,
        max,
    }))
}

/// The unix socket's name, if it has one.
fn unix_name(r: &UnixResponse) -> Option<ListenAddr> {
    match r.name()? {
        UnixDiagName::Pathname(p) => Some(ListenAddr::Unix(Some(PathBuf::from(p)))),
        UnixDiagName::Abstract(name) => Some(ListenAddr::UnixAbstract(name.clone())),
    }
}

/// An accepted TCP connection of a [`Dump::Tcp4Conns`] or
/// [`Dump::Tcp6Conns`] dump. The state and port are checked again, as the
/// kernel's own filter is only an optimisation here.
fn tcp_connection(dump: Dump, r: &InetResponse) -> Option<Connection> {
    let (Dump::Tcp4Conns(port) | Dump::Tcp6Conns(port)) = dump else {
        return None;
    };
    let h = &r.header;
    let connected = h.state == TCP_ESTABLISHED;
    // Inode 0: no struct socket yet, the connection is still in the accept
    // queue.
    if !connected || h.inode == 0 || h.socket_id.source_port != port {
        return None;
    }
    Some(Connection {
        inode: h.inode.into(),
        local: ListenAddr::Tcp(inet_local(r)),
    })
}

/// A connected, named unix stream socket with an inode: one accept(2)
/// returned (or a client that bound a name of its own before connecting,
/// which sock_diag cannot tell apart).
fn unix_connection(r: &UnixResponse) -> Option<Connection> {
    let h = &r.header;
    if h.state != TCP_ESTABLISHED || h.kind != SOCK_STREAM || h.inode == 0 {
        return None;
    }
    Some(Connection {
        inode: h.inode.into(),
        local: unix_name(r)?,
    })
}

/// Whether `conn`, a [`Connection`]'s local address, was accepted on a
/// listener bound to `listener`.
///
/// TCP: the same port, and the listener's address either equal to the
/// connection's or unspecified, with v4-mapped IPv6 addresses taken in
/// their IPv4 form. A 0.0.0.0 listener accepts IPv4 only. A [::] listener
/// accepts IPv6 and, unless IPV6_V6ONLY, IPv4 clients too, but their
/// sockets are AF_INET6 with a v4-mapped address: an AF_INET connection is
/// never a [::] listener's, it belongs to a 0.0.0.0 one beside a V6ONLY
/// [::] listener on the same port. Scope ids are not compared.
///
/// Unix: the same path, or the same abstract name; an unnamed listener
/// has no connections to match. Anything else is false.
pub fn accepted_on(listener: &ListenAddr, conn: &ListenAddr) -> bool {
    match (listener, conn) {
        (ListenAddr::Tcp(l), ListenAddr::Tcp(c)) => {
            if l.port() != c.port() {
                return false;
            }
            let conn_ip = c.ip().to_canonical();
            match l.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => conn_ip.is_ipv4(),
                IpAddr::V6(ip) if ip.is_unspecified() => c.is_ipv6(),
                ip => ip.to_canonical() == conn_ip,
            }
        }
        (ListenAddr::Unix(Some(l)), ListenAddr::Unix(Some(c))) => l == c,
        (ListenAddr::UnixAbstract(l), ListenAddr::UnixAbstract(c)) => l == c,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
