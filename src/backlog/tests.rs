//! Decoding of hand-built replies (laid out from the kernel's
//! inet_diag.h/unix_diag.h, not from the crate, so that a disagreement
//! between the two shows), and real dumps of sockets we listen on.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use proptest::prelude::*;
use rustix::net::SocketAddrUnix;

use super::*;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_RQLEN: u16 = 4;

fn nlmsg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut out = Vec::new();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align4(out.len()), 0);
    out
}

fn done(seq: u32) -> Vec<u8> {
    nlmsg(NLMSG_DONE, seq, &0i32.to_ne_bytes())
}

/// struct inet_diag_msg for an IPv4 socket.
fn inet_msg(state: u8, ip: [u8; 4], port: u16, rqueue: u32, wqueue: u32, inode: u32) -> Vec<u8> {
    let mut m = vec![libc::AF_INET as u8, state, 0, 0];
    m.extend_from_slice(&port.to_be_bytes());
    m.extend_from_slice(&0u16.to_be_bytes());
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&ip);
    m.extend_from_slice(&src);
    m.extend_from_slice(&[0u8; 16]); // dst
    m.extend_from_slice(&0u32.to_ne_bytes()); // interface
    m.extend_from_slice(&[0u8; 8]); // cookie
    for v in [0, rqueue, wqueue, 0, inode] {
        m.extend_from_slice(&v.to_ne_bytes()); // expires rqueue wqueue uid inode
    }
    assert_eq!(m.len(), 72);
    m
}

fn nla(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(align4(out.len()), 0);
    out
}

/// struct unix_diag_msg and its attributes.
fn unix_msg(kind: u8, inode: u32, name: Option<&[u8]>, rqlen: Option<(u32, u32)>) -> Vec<u8> {
    let mut m = vec![libc::AF_UNIX as u8, kind, TCP_LISTEN, 0];
    m.extend_from_slice(&inode.to_ne_bytes());
    m.extend_from_slice(&[0u8; 8]);
    if let Some(name) = name {
        m.extend(nla(UNIX_DIAG_NAME, name));
    }
    if let Some((q, max)) = rqlen {
        let mut data = q.to_ne_bytes().to_vec();
        data.extend_from_slice(&max.to_ne_bytes());
        m.extend(nla(UNIX_DIAG_RQLEN, &data));
    }
    m
}

/// struct inet_diag_msg for an IPv6 socket.
fn inet6_msg(state: u8, ip: Ipv6Addr, port: u16, inode: u32) -> Vec<u8> {
    let mut m = inet_msg(state, [0; 4], port, 0, 0, inode);
    m[0] = libc::AF_INET6 as u8;
    m[8..24].copy_from_slice(&ip.octets());
    m
}

/// A unix socket in `state`, as [`unix_msg`] without UNIX_DIAG_RQLEN.
fn unix_conn_msg(state: u8, kind: u8, inode: u32, name: Option<&[u8]>) -> Vec<u8> {
    let mut m = unix_msg(kind, inode, name, None);
    m[2] = state;
    m
}

fn parse(dump: Dump, seq: u32, bytes: &[u8]) -> Result<(Step, Vec<Listener>), BacklogError> {
    let mut out = Vec::new();
    let step = parse_datagram(dump, seq, bytes, &mut out)?;
    Ok((step, out))
}

fn parse_conns(
    dump: Dump,
    seq: u32,
    bytes: &[u8],
) -> Result<(Step, Vec<Connection>), BacklogError> {
    let mut out = Vec::new();
    let step = parse_datagram(dump, seq, bytes, &mut out)?;
    Ok((step, out))
}

#[test]
fn decodes_tcp_listeners_and_skips_other_states() {
    let mut bytes = nlmsg(
        SOCK_DIAG_BY_FAMILY,
        7,
        &inet_msg(TCP_LISTEN, [127, 0, 0, 1], 8080, 3, 5, 4242),
    );
    bytes.extend(nlmsg(
        SOCK_DIAG_BY_FAMILY,
        7,
        &inet_msg(1, [10, 0, 0, 1], 9, 100, 0, 1),
    ));
    let (step, out) = parse(Dump::Tcp4, 7, &bytes).expect("parse");
    assert_eq!(step, Step::More, "no NLMSG_DONE yet");
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
    assert_eq!(
        out,
        vec![Listener {
            inode: 4242,
            addr: ListenAddr::Tcp(addr),
            queue: 3,
            max: 5
        }]
    );

    let (step, out) = parse(Dump::Tcp4, 7, &done(7)).expect("parse");
    assert_eq!((step, out.len()), (Step::Done, 0));
}

#[test]
fn decodes_unix_listeners() {
    let mut bytes = nlmsg(
        SOCK_DIAG_BY_FAMILY,
        1,
        &unix_msg(1, 11, Some(b"/run/app.sock\0"), Some((2, 128))),
    );
    bytes.extend(nlmsg(
        SOCK_DIAG_BY_FAMILY,
        1,
        &unix_msg(1, 12, Some(b"\0hidden"), Some((0, 5))),
    ));
    bytes.extend(nlmsg(
        SOCK_DIAG_BY_FAMILY,
        1,
        &unix_msg(1, 13, None, Some((0, 1))),
    ));
    // SOCK_SEQPACKET listener: not a stream socket, left out.
    bytes.extend(nlmsg(
        SOCK_DIAG_BY_FAMILY,
        1,
        &unix_msg(5, 14, None, Some((0, 1))),
    ));
    bytes.extend(done(1));
    let (step, out) = parse(Dump::Unix, 1, &bytes).expect("parse");
    assert_eq!(step, Step::Done);
    assert_eq!(
        out,
        vec![
            Listener {
                inode: 11,
                addr: ListenAddr::Unix(Some("/run/app.sock".into())),
                queue: 2,
                max: 128
            },
            Listener {
                inode: 12,
                addr: ListenAddr::UnixAbstract(b"hidden".to_vec()),
                queue: 0,
                max: 5
            },
            Listener {
                inode: 13,
                addr: ListenAddr::Unix(None),
                queue: 0,
                max: 1
            },
        ]
    );
}

#[test]
fn skips_messages_of_an_earlier_dump() {
    let mut bytes = nlmsg(
        SOCK_DIAG_BY_FAMILY,
        6,
        &inet_msg(TCP_LISTEN, [127, 0, 0, 1], 1, 0, 5, 1),
    );
    bytes.extend(done(6));
    let (step, out) = parse(Dump::Tcp4, 7, &bytes).expect("parse");
    assert_eq!((step, out.len()), (Step::More, 0));
}

#[test]
fn kernel_error_is_reported() {
    let mut payload = (-libc::EPERM).to_ne_bytes().to_vec();
    payload.extend_from_slice(&[0u8; 16]); // the request's header
    let err = parse(Dump::Unix, 3, &nlmsg(NLMSG_ERROR, 3, &payload)).unwrap_err();
    match &err {
        BacklogError::Kernel { cause, .. } => assert_eq!(cause.kind(), ErrorKind::PermissionDenied),
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("failed to dump unix stream listeners"),
        "{err}"
    );
}

#[test]
fn malformed_replies_are_errors_not_panics() {
    let good = nlmsg(
        SOCK_DIAG_BY_FAMILY,
        1,
        &inet_msg(TCP_LISTEN, [127, 0, 0, 1], 1, 0, 5, 1),
    );
    for cut in [1, 15, 16, 40, good.len() - 1] {
        let err = parse(Dump::Tcp4, 1, &good[..cut]).unwrap_err();
        assert!(
            matches!(err, BacklogError::Parse { .. }),
            "cut at {cut}: {err:?}"
        );
    }
    let mut zero_len = good.clone();
    zero_len[..4].copy_from_slice(&0u32.to_ne_bytes());
    assert!(parse(Dump::Tcp4, 1, &zero_len).is_err());

    let no_rqlen = nlmsg(
        SOCK_DIAG_BY_FAMILY,
        1,
        &unix_msg(1, 11, Some(b"/a\0"), None),
    );
    let err = parse(Dump::Unix, 1, &no_rqlen).unwrap_err();
    assert!(err.to_string().contains("UNIX_DIAG_RQLEN"), "{err}");

    let bad_af = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &[99u8; 20]);
    assert!(parse(Dump::Tcp4, 1, &bad_af).is_err());
}

const TCP_SYN_RECV: u8 = 3;
const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE_WAIT: u8 = 8;

fn tcp4(ip: [u8; 4], port: u16) -> ListenAddr {
    ListenAddr::Tcp(SocketAddr::from((ip, port)))
}

fn tcp6(ip: &str, port: u16) -> ListenAddr {
    let ip: Ipv6Addr = ip.parse().expect("ipv6");
    ListenAddr::Tcp(SocketAddr::from((ip, port)))
}

#[test]
fn decodes_tcp_connections_and_skips_other_states_and_queued_ones() {
    let msgs = [
        inet_msg(TCP_ESTABLISHED, [127, 0, 0, 1], 8000, 0, 0, 10),
        inet_msg(TCP_CLOSE_WAIT, [127, 0, 0, 1], 8000, 0, 0, 11),
        inet_msg(TCP_LISTEN, [127, 0, 0, 1], 8000, 0, 5, 12),
        inet_msg(TCP_TIME_WAIT, [127, 0, 0, 1], 8000, 0, 0, 13),
        inet_msg(TCP_SYN_RECV, [127, 0, 0, 1], 8000, 0, 0, 14),
        // In the accept queue: no struct socket, so no inode.
        inet_msg(TCP_ESTABLISHED, [127, 0, 0, 1], 8000, 0, 0, 0),
        // Another port: what a kernel that ignored the request's port
        // would send, e.g. a client's end.
        inet_msg(TCP_ESTABLISHED, [127, 0, 0, 1], 40000, 0, 0, 15),
    ];
    let mut bytes: Vec<u8> = msgs
        .iter()
        .flat_map(|m| nlmsg(SOCK_DIAG_BY_FAMILY, 4, m))
        .collect();
    bytes.extend(done(4));
    let (step, out) = parse_conns(Dump::Tcp4Conns(8000), 4, &bytes).expect("parse");
    assert_eq!(step, Step::Done);
    let local = tcp4([127, 0, 0, 1], 8000);
    assert_eq!(out, vec![Connection { inode: 10, local }]);

    // The same reply read as listeners keeps the listener only.
    let (_, listeners) = parse(Dump::Tcp4, 4, &bytes).expect("parse");
    assert_eq!(listeners.iter().map(|l| l.inode).collect::<Vec<_>>(), [12]);
    // And a listener dump's reply read as connections yields none: the port
    // to keep is the connection dump's.
    let (_, out) = parse_conns(Dump::Tcp4, 4, &bytes).expect("parse");
    assert_eq!(out, []);
}

#[test]
fn decodes_tcp6_connections_with_v4_mapped_addresses() {
    let mapped: Ipv6Addr = "::ffff:127.0.0.1".parse().expect("ipv6");
    let mut bytes = nlmsg(
        SOCK_DIAG_BY_FAMILY,
        2,
        &inet6_msg(TCP_ESTABLISHED, Ipv6Addr::LOCALHOST, 8000, 20),
    );
    bytes.extend(nlmsg(
        SOCK_DIAG_BY_FAMILY,
        2,
        &inet6_msg(TCP_ESTABLISHED, mapped, 8000, 21),
    ));
    let (step, out) = parse_conns(Dump::Tcp6Conns(8000), 2, &bytes).expect("parse");
    assert_eq!(step, Step::More);
    assert_eq!(
        out,
        vec![
            Connection {
                inode: 20,
                local: tcp6("::1", 8000)
            },
            Connection {
                inode: 21,
                local: tcp6("::ffff:127.0.0.1", 8000)
            },
        ]
    );
}

#[test]
fn decodes_named_unix_connections_only() {
    let msgs = [
        unix_conn_msg(TCP_ESTABLISHED, 1, 30, Some(b"/run/app.sock\0")),
        unix_conn_msg(TCP_ESTABLISHED, 1, 31, Some(b"\0hidden")),
        // A client's end: connected, but unnamed.
        unix_conn_msg(TCP_ESTABLISHED, 1, 32, None),
        // Still in the listener's queue.
        unix_conn_msg(TCP_ESTABLISHED, 1, 0, Some(b"/run/app.sock\0")),
        // The listener itself, and a SOCK_SEQPACKET connection.
        unix_conn_msg(TCP_LISTEN, 1, 33, Some(b"/run/app.sock\0")),
        unix_conn_msg(TCP_ESTABLISHED, 5, 34, Some(b"/run/app.sock\0")),
    ];
    let mut bytes: Vec<u8> = msgs
        .iter()
        .flat_map(|m| nlmsg(SOCK_DIAG_BY_FAMILY, 9, m))
        .collect();
    bytes.extend(done(9));
    let (step, out) = parse_conns(Dump::UnixConns, 9, &bytes).expect("parse");
    assert_eq!(step, Step::Done);
    assert_eq!(
        out,
        vec![
            Connection {
                inode: 30,
                local: ListenAddr::Unix(Some("/run/app.sock".into()))
            },
            Connection {
                inode: 31,
                local: ListenAddr::UnixAbstract(b"hidden".to_vec())
            },
        ]
    );
}

#[test]
fn connection_dump_errors_name_the_dump() {
    let mut payload = (-libc::EINVAL).to_ne_bytes().to_vec();
    payload.extend_from_slice(&[0u8; 16]);
    let err = parse_conns(Dump::Tcp6Conns(80), 3, &nlmsg(NLMSG_ERROR, 3, &payload)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to dump TCP/IPv6 connections"),
        "{err}"
    );
    let good = nlmsg(
        SOCK_DIAG_BY_FAMILY,
        1,
        &inet_msg(TCP_ESTABLISHED, [127, 0, 0, 1], 80, 0, 0, 1),
    );
    for cut in [1, 15, 16, 40, good.len() - 1] {
        let err = parse_conns(Dump::Tcp4Conns(80), 1, &good[..cut]).unwrap_err();
        assert!(
            matches!(err, BacklogError::Parse { .. }),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn accepted_on_matches_tcp_by_port_and_address() {
    let yes = [
        (tcp4([127, 0, 0, 1], 80), tcp4([127, 0, 0, 1], 80)),
        (tcp4([0, 0, 0, 0], 80), tcp4([10, 1, 2, 3], 80)),
        (tcp6("::1", 80), tcp6("::1", 80)),
        (tcp6("::", 80), tcp6("2001:db8::1", 80)),
        // An IPv4 client of a dual-stack listener.
        (tcp6("::", 80), tcp6("::ffff:10.1.2.3", 80)),
        // v4-mapped addresses compare as IPv4.
        (tcp6("::ffff:127.0.0.1", 80), tcp6("::ffff:127.0.0.1", 80)),
        (tcp6("::ffff:127.0.0.1", 80), tcp4([127, 0, 0, 1], 80)),
        (tcp4([127, 0, 0, 1], 80), tcp6("::ffff:127.0.0.1", 80)),
        (tcp4([0, 0, 0, 0], 80), tcp6("::ffff:10.1.2.3", 80)),
    ];
    for (listener, conn) in &yes {
        assert!(accepted_on(listener, conn), "{listener:?} {conn:?}");
    }
    let no = [
        (tcp4([127, 0, 0, 1], 80), tcp4([127, 0, 0, 1], 81)),
        (tcp4([0, 0, 0, 0], 80), tcp4([127, 0, 0, 1], 81)),
        (tcp6("::", 80), tcp6("::1", 81)),
        (tcp4([127, 0, 0, 1], 80), tcp4([127, 0, 0, 2], 80)),
        (tcp6("::1", 80), tcp6("::2", 80)),
        // 0.0.0.0 accepts IPv4 only.
        (tcp4([0, 0, 0, 0], 80), tcp6("::1", 80)),
        // An AF_INET socket is never a [::] listener's.
        (tcp6("::", 80), tcp4([127, 0, 0, 1], 80)),
        (tcp6("::1", 80), tcp4([127, 0, 0, 1], 80)),
        (tcp4([127, 0, 0, 1], 80), tcp6("::1", 80)),
    ];
    for (listener, conn) in &no {
        assert!(!accepted_on(listener, conn), "{listener:?} {conn:?}");
    }
}

#[test]
fn accepted_on_matches_unix_by_name() {
    let path = |p: &str| ListenAddr::Unix(Some(p.into()));
    let abs = |n: &[u8]| ListenAddr::UnixAbstract(n.to_vec());
    assert!(accepted_on(&path("/run/a.sock"), &path("/run/a.sock")));
    assert!(accepted_on(&path("a.sock"), &path("a.sock")));
    assert!(accepted_on(&abs(b"a"), &abs(b"a")));
    assert!(!accepted_on(&path("/run/a.sock"), &path("/run/b.sock")));
    assert!(!accepted_on(&abs(b"a"), &abs(b"b")));
    assert!(!accepted_on(&path("a"), &abs(b"a")));
    assert!(!accepted_on(&abs(b"a"), &path("a")));
    assert!(!accepted_on(
        &ListenAddr::Unix(None),
        &ListenAddr::Unix(None)
    ));
    assert!(!accepted_on(&path("/run/a.sock"), &ListenAddr::Unix(None)));
    // TCP and unix never match.
    assert!(!accepted_on(
        &path("/run/a.sock"),
        &tcp4([127, 0, 0, 1], 80)
    ));
    assert!(!accepted_on(&tcp4([0, 0, 0, 0], 80), &path("/run/a.sock")));
    assert!(!accepted_on(&tcp6("::", 80), &abs(b"a")));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse(Dump::Unix, 1, &bytes);
        let _ = parse(Dump::Tcp6, 1, &bytes);
        let _ = parse_conns(Dump::UnixConns, 1, &bytes);
        let _ = parse_conns(Dump::Tcp4Conns(80), 1, &bytes);
    }
}

/// Polls sock_diag until the listener with `inode` shows `queue`
/// connections, and returns it.
fn wait_for_queue(diag: &mut SockDiag, inode: u64, queue: u32) -> Listener {
    let start = Instant::now();
    loop {
        let found = diag
            .listeners()
            .expect("listeners")
            .into_iter()
            .find(|l| l.inode == inode);
        match found {
            Some(l) if l.queue == queue => return l,
            other if start.elapsed() > Duration::from_secs(2) => {
                panic!("listener {inode} never had {queue} queued: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn inode_of(fd: impl AsFd) -> u64 {
    rustix::fs::fstat(fd).expect("fstat").st_ino
}

/// A TCP listener on `ip` with a backlog of 5 and three connections that
/// are never accepted.
fn check_tcp(ip: IpAddr) {
    let family = if ip.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(family, SocketType::STREAM, None).expect("socket");
    rustix::net::bind(&fd, &SocketAddr::new(ip, 0)).expect("bind");
    rustix::net::listen(&fd, 5).expect("listen");
    let local =
        SocketAddr::try_from(rustix::net::getsockname(&fd).expect("getsockname")).expect("inet");
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(local).expect("connect"))
        .collect();
    let mut diag = SockDiag::new().expect("sock_diag");
    let l = wait_for_queue(&mut diag, inode_of(&fd), 3);
    assert_eq!(l.max, 5);
    assert_eq!(l.addr, ListenAddr::Tcp(local));
    drop(clients);
}

#[test]
fn real_tcp4_backlog() {
    check_tcp(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn real_tcp6_backlog() {
    check_tcp(IpAddr::V6(Ipv6Addr::LOCALHOST));
}

#[test]
fn real_unix_backlog_with_path_and_abstract_name() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let path = dir.path().join("app.sock");
    let name = format!("aw-test-{}", std::process::id());
    let cases = [
        (
            SocketAddrUnix::new(&path).expect("path"),
            ListenAddr::Unix(Some(path.clone())),
        ),
        (
            SocketAddrUnix::new_abstract_name(name.as_bytes()).expect("name"),
            ListenAddr::UnixAbstract(name.clone().into_bytes()),
        ),
    ];
    for (addr, expected) in cases {
        let fd =
            rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).expect("socket");
        rustix::net::bind(&fd, &addr).expect("bind");
        rustix::net::listen(&fd, 5).expect("listen");
        let clients: Vec<UnixStream> = (0..3).map(|_| connect_unix(&addr)).collect();
        let mut diag = SockDiag::new().expect("sock_diag");
        let l = wait_for_queue(&mut diag, inode_of(&fd), 3);
        assert_eq!(l.max, 5);
        assert_eq!(l.addr, expected);
        drop(clients);
    }
}

fn connect_unix(addr: &SocketAddrUnix) -> UnixStream {
    let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).expect("socket");
    rustix::net::connect(&fd, addr).expect("connect");
    UnixStream::from(fd)
}
#[test]
fn real_socket_is_reused_and_each_call_starts_afresh() {
    let mut diag = SockDiag::new().expect("sock_diag");
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    rustix::net::bind(&fd, &SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
    rustix::net::listen(&fd, 7).expect("listen");
    let inode = inode_of(&fd);
    let mut out = Vec::new();
    for _ in 0..20 {
        diag.listeners_into(&mut out).expect("listeners");
        assert_eq!(
            out.iter().filter(|l| l.inode == inode).count(),
            1,
            "{out:?}"
        );
    }
    drop(fd);
    diag.listeners_into(&mut out).expect("listeners");
    assert!(
        out.iter().all(|l| l.inode != inode),
        "closed listener still listed"
    );
}

/// A connection dump's TCP sockets as the kernel sent them, before any
/// of our own filtering, to see what the kernel's filters let through.
#[derive(Debug)]
struct Raw {
    port: u16,
    inode: u64,
}

impl Entry for Raw {
    fn from_inet(_: Dump, r: &InetResponse) -> Option<Self> {
        Some(Raw {
            port: r.header.socket_id.source_port,
            inode: r.header.inode.into(),
        })
    }

    fn from_unix(_: Dump, _: &UnixResponse) -> Result<Option<Self>, String> {
        Ok(None)
    }
}

fn raw_dump(diag: &mut SockDiag, dump: Dump) -> Vec<Raw> {
    let mut out = Vec::new();
    diag.dump(dump, &mut out).expect("dump");
    out
}

/// Polls until `check` holds for a raw dump, and returns that dump.
fn wait_for_raw(diag: &mut SockDiag, dump: Dump, check: impl Fn(&[Raw]) -> bool) -> Vec<Raw> {
    let start = Instant::now();
    loop {
        let raw = raw_dump(diag, dump);
        if check(&raw) {
            return raw;
        }
        if start.elapsed() > Duration::from_secs(2) {
            panic!("{dump:?} never got there: {raw:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP listener on `ip` (or None if the address is not available here)
/// and its address.
fn tcp_listener_on(ip: IpAddr) -> Option<(OwnedFd, SocketAddr)> {
    let family = if ip.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(family, SocketType::STREAM, None).ok()?;
    if ip.is_ipv6() && ip.is_unspecified() {
        // Dual stack, whatever net.ipv6.bindv6only says.
        rustix::net::sockopt::set_ipv6_v6only(&fd, false).ok()?;
    }
    rustix::net::bind(&fd, &SocketAddr::new(ip, 0)).ok()?;
    rustix::net::listen(&fd, 5).expect("listen");
    let local =
        SocketAddr::try_from(rustix::net::getsockname(&fd).expect("getsockname")).expect("inet");
    Some((fd, local))
}

fn accept(listener: &OwnedFd) -> OwnedFd {
    rustix::net::accept(listener).expect("accept")
}

fn conn_dump(port: u16, ip: IpAddr) -> Dump {
    if ip.is_ipv4() {
        Dump::Tcp4Conns(port)
    } else {
        Dump::Tcp6Conns(port)
    }
}

/// Three clients connect to a listener on `ip`; two are accepted. Only
/// those two are listed, until their client closes (CLOSE_WAIT) or they
/// are closed.
fn check_tcp_connections(ip: IpAddr) {
    let Some((fd, local)) = tcp_listener_on(ip) else {
        eprintln!("skipped: cannot listen on {ip}");
        return;
    };
    let port = local.port();
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(local).expect("connect"))
        .collect();
    let accepted = [accept(&fd), accept(&fd)];
    let accepted_inodes: Vec<u64> = accepted.iter().map(inode_of).collect();
    let mut diag = SockDiag::new().expect("sock_diag");

    // The kernel sends the third connection too, from the accept queue,
    // with inode 0.
    let raw = wait_for_raw(&mut diag, conn_dump(port, ip), |raw| raw.len() == 3);
    assert!(raw.iter().all(|r| r.port == port), "{raw:?}");
    assert_eq!(raw.iter().filter(|r| r.inode == 0).count(), 1, "{raw:?}");

    let mut out = Vec::new();
    diag.connections_into(&[port], false, &mut out)
        .expect("connections");
    let mut inodes: Vec<u64> = out.iter().map(|c| c.inode).collect();
    inodes.sort_unstable();
    let mut expected = accepted_inodes.clone();
    expected.sort_unstable();
    assert_eq!(inodes, expected, "{out:?}");
    for c in &out {
        assert_eq!(c.local, ListenAddr::Tcp(local), "{out:?}");
        assert!(accepted_on(&ListenAddr::Tcp(local), &c.local));
    }
    for client in &clients {
        assert!(!inodes.contains(&inode_of(client)));
    }

    // The client of the first accepted socket closes: the server's end is
    // in CLOSE_WAIT, still held but no work (a keep-alive connection whose
    // client is done), so no longer listed.
    let peer = SocketAddr::try_from(
        rustix::net::getpeername(&accepted[0])
            .expect("getpeername")
            .expect("peer"),
    )
    .expect("inet");
    let (closed, _open): (Vec<TcpStream>, Vec<TcpStream>) = clients
        .into_iter()
        .partition(|c| c.local_addr().expect("local_addr") == peer);
    assert_eq!(closed.len(), 1);
    drop(closed);
    wait_for_raw(&mut diag, conn_dump(port, ip), |raw| {
        !raw.iter().any(|r| r.inode == accepted_inodes[0])
    });
    diag.connections_into(&[port], false, &mut out)
        .expect("connections");
    assert_eq!(
        out.iter().map(|c| c.inode).collect::<Vec<_>>(),
        [accepted_inodes[1]]
    );

    // Closed by the server: gone.
    let [_first, second] = accepted;
    drop(second);
    diag.connections_into(&[port], false, &mut out)
        .expect("connections");
    assert_eq!(out, Vec::new());
}

#[test]
fn real_tcp4_connections() {
    check_tcp_connections(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn real_tcp6_connections() {
    check_tcp_connections(IpAddr::V6(Ipv6Addr::LOCALHOST));
}

#[test]
fn real_connections_on_another_port_are_left_out_by_the_kernel() {
    let (a, a_addr) = tcp_listener_on(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("listen");
    let (b, b_addr) = tcp_listener_on(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("listen");
    let _clients = [
        TcpStream::connect(a_addr).expect("connect"),
        TcpStream::connect(b_addr).expect("connect"),
    ];
    let (on_a, on_b) = (accept(&a), accept(&b));
    let mut diag = SockDiag::new().expect("sock_diag");

    // What the kernel itself sends for port A: nothing on port B, and no
    // client end (whose local port is an ephemeral one).
    let raw = raw_dump(&mut diag, Dump::Tcp4Conns(a_addr.port()));
    assert!(
        raw.iter().all(|r| r.port == a_addr.port()),
        "the kernel ignored the port: {raw:?}"
    );
    assert!(raw.iter().any(|r| r.inode == inode_of(&on_a)), "{raw:?}");
    assert!(raw.iter().all(|r| r.inode != inode_of(&on_b)), "{raw:?}");

    let mut out = Vec::new();
    diag.connections_into(&[a_addr.port()], false, &mut out)
        .expect("connections");
    assert_eq!(
        out,
        [Connection {
            inode: inode_of(&on_a),
            local: ListenAddr::Tcp(a_addr)
        }]
    );
    diag.connections_into(&[a_addr.port(), b_addr.port()], false, &mut out)
        .expect("connections");
    let mut inodes: Vec<u64> = out.iter().map(|c| c.inode).collect();
    inodes.sort_unstable();
    let mut expected = vec![inode_of(&on_a), inode_of(&on_b)];
    expected.sort_unstable();
    assert_eq!(inodes, expected);
    diag.connections_into(&[], false, &mut out)
        .expect("connections");
    assert_eq!(out, []);
}

#[test]
fn real_ipv4_client_of_a_dual_stack_listener_is_v4_mapped() {
    let Some((fd, local)) = tcp_listener_on(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) else {
        eprintln!("skipped: no IPv6");
        return;
    };
    let _client = TcpStream::connect((Ipv4Addr::LOCALHOST, local.port())).expect("connect");
    let accepted = accept(&fd);
    let mut diag = SockDiag::new().expect("sock_diag");
    let mut out = Vec::new();
    diag.connections_into(&[local.port()], false, &mut out)
        .expect("connections");
    let conn = out
        .iter()
        .find(|c| c.inode == inode_of(&accepted))
        .unwrap_or_else(|| panic!("accepted socket not listed: {out:?}"));
    assert_eq!(conn.local, tcp6("::ffff:127.0.0.1", local.port()));
    assert!(accepted_on(&ListenAddr::Tcp(local), &conn.local));
    assert!(!accepted_on(
        &tcp6("::", local.port().wrapping_add(1)),
        &conn.local
    ));
}

#[test]
fn real_unix_connections_with_path_and_abstract_name() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let path = dir.path().join("conn.sock");
    let name = format!("aw-conn-test-{}", std::process::id());
    let cases = [
        (
            SocketAddrUnix::new(&path).expect("path"),
            ListenAddr::Unix(Some(path.clone())),
        ),
        (
            SocketAddrUnix::new_abstract_name(name.as_bytes()).expect("name"),
            ListenAddr::UnixAbstract(name.clone().into_bytes()),
        ),
    ];
    let mut diag = SockDiag::new().expect("sock_diag");
    let mut out = Vec::new();
    for (addr, expected) in cases {
        let fd =
            rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).expect("socket");
        rustix::net::bind(&fd, &addr).expect("bind");
        rustix::net::listen(&fd, 5).expect("listen");
        // One accepted, one left in the queue.
        let clients = [connect_unix(&addr), connect_unix(&addr)];
        let accepted = accept(&fd);
        diag.connections_into(&[], true, &mut out)
            .expect("connections");
        let ours: Vec<&Connection> = out.iter().filter(|c| c.local == expected).collect();
        assert_eq!(
            ours,
            [&Connection {
                inode: inode_of(&accepted),
                local: expected.clone()
            }]
        );
        assert!(accepted_on(&expected, &ours[0].local));
        for client in &clients {
            assert!(out.iter().all(|c| c.inode != inode_of(client)), "{out:?}");
        }
        // The listener is not a connection.
        assert!(out.iter().all(|c| c.inode != inode_of(&fd)));

        diag.connections_into(&[], false, &mut out)
            .expect("connections");
        assert_eq!(out, []);
    }
}
