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

fn parse(dump: Dump, seq: u32, bytes: &[u8]) -> Result<(Step, Vec<Listener>), BacklogError> {
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

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse(Dump::Unix, 1, &bytes);
        let _ = parse(Dump::Tcp6, 1, &bytes);
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

fn inode_of(fd: &OwnedFd) -> u64 {
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
