//! Decoding of hand-built, truncated and garbage messages, and real events
//! from this kernel where we may subscribe.

use std::process::Command;

use proptest::prelude::*;

use super::wire::{Msg, walk};
use super::*;

/// A netlink message carrying one proc_event with the given words of
/// event_data.
fn event(what: u32, data: &[u32]) -> Vec<u8> {
    connector_msg(1, 1, 0, 0, what, data)
}

fn connector_msg(idx: u32, val: u32, seq: u32, ack: u32, what: u32, data: &[u32]) -> Vec<u8> {
    let mut ev = Vec::new();
    ev.extend_from_slice(&what.to_ne_bytes());
    ev.extend_from_slice(&0u32.to_ne_bytes()); // cpu
    ev.extend_from_slice(&123_456_789u64.to_ne_bytes()); // timestamp
    for d in data {
        ev.extend_from_slice(&d.to_ne_bytes());
    }
    let mut m = Vec::new();
    let total = 16 + 20 + ev.len();
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    for v in [idx, val, seq, ack] {
        m.extend_from_slice(&v.to_ne_bytes());
    }
    m.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend(ev);
    m.resize((m.len() + 3) & !3, 0);
    m
}

const FORK: u32 = 1;
const EXEC: u32 = 2;
const UID: u32 = 4;
const EXIT: u32 = 0x8000_0000;

#[test]
fn decodes_fork_exec_exit_in_one_datagram() {
    let mut bytes = event(FORK, &[100, 100, 200, 200]);
    bytes.extend(event(EXEC, &[200, 200]));
    bytes.extend(event(UID, &[200, 200, 1000, 1000]));
    bytes.extend(event(EXIT, &[200, 200, 256, 17, 100, 100]));
    let mut out = Vec::new();
    assert_eq!(parse_datagram(&bytes, &mut out), 0);
    assert_eq!(
        out,
        vec![
            ProcEvent::Fork {
                parent_pid: 100,
                parent_tgid: 100,
                child_pid: 200,
                child_tgid: 200
            },
            ProcEvent::Exec {
                pid: 200,
                tgid: 200
            },
            ProcEvent::Exit {
                pid: 200,
                tgid: 200,
                exit_code: 256
            },
        ]
    );
}

#[test]
fn decodes_the_subscription_ack() {
    // The kernel replaces seq with its own counter; ack is ours + 1.
    let bytes = connector_msg(1, 1, 304, 78, 0, &[0]);
    let mut msgs = Vec::new();
    assert_eq!(walk(&bytes, |m| msgs.push(m)), 0);
    assert_eq!(msgs, vec![Msg::Ack { ack: 78, err: 0 }]);

    let refused = connector_msg(1, 1, 5, 78, 0, &[libc::EPERM as u32]);
    let scan = wire::parse_datagram_acks(&refused, &mut Vec::new());
    assert_eq!(scan.ack_for(77), Some(libc::EPERM as u32));
    assert_eq!(scan.ack_for(78), None, "another subscriber's ack");
}

#[test]
fn listen_request_has_the_kernel_layout() {
    let m = wire::listen_request(9);
    let word = |at: usize| u32::from_ne_bytes(m[at..at + 4].try_into().unwrap());
    let half = |at: usize| u16::from_ne_bytes(m[at..at + 2].try_into().unwrap());
    assert_eq!(m.len(), 40);
    assert_eq!(word(0), 40, "nlmsg_len");
    assert_eq!(half(4), 3, "NLMSG_DONE");
    assert_eq!((word(16), word(20)), (1, 1), "CN_IDX_PROC, CN_VAL_PROC");
    assert_eq!(word(28), 9, "ack tag");
    assert_eq!(half(32), 4, "data length");
    assert_eq!(word(36), 1, "PROC_CN_MCAST_LISTEN");
}

#[test]
fn truncated_messages_yield_nothing_and_are_counted() {
    let full = event(FORK, &[100, 100, 200, 200]);
    for cut in 0..full.len() {
        let mut out = Vec::new();
        let malformed = parse_datagram(&full[..cut], &mut out);
        assert!(out.is_empty(), "cut at {cut}: {out:?}");
        assert_eq!(malformed, u64::from(cut > 0), "cut at {cut}");
    }
}

#[test]
fn inconsistent_lengths_and_foreign_messages_are_skipped() {
    // cn_msg.len claims more data than the message holds.
    let mut long = event(EXEC, &[1, 1]);
    long[32..34].copy_from_slice(&500u16.to_ne_bytes());
    // nlmsg_len larger than the datagram.
    let mut beyond = event(EXEC, &[1, 1]);
    beyond[0..4].copy_from_slice(&4096u32.to_ne_bytes());
    // A fork event too short for its four pids.
    let short = event(FORK, &[1, 1, 2]);
    let other_idx = connector_msg(2, 1, 0, 0, EXEC, &[1, 1]);
    for (what, bytes) in [
        ("long", long),
        ("beyond", beyond),
        ("short", short),
        ("idx", other_idx),
    ] {
        let mut out = Vec::new();
        assert_eq!(parse_datagram(&bytes, &mut out), 1, "{what}");
        assert!(out.is_empty(), "{what}: {out:?}");
    }
    // A bad message between two good ones does not hide the first.
    let mut bytes = event(EXEC, &[5, 5]);
    bytes.extend(connector_msg(1, 7, 0, 0, EXEC, &[6, 6]));
    bytes.extend(event(EXEC, &[7, 7]));
    let mut out = Vec::new();
    assert_eq!(parse_datagram(&bytes, &mut out), 1);
    assert_eq!(
        out,
        vec![
            ProcEvent::Exec { pid: 5, tgid: 5 },
            ProcEvent::Exec { pid: 7, tgid: 7 }
        ]
    );
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut out = Vec::new();
        let _ = parse_datagram(&bytes, &mut out);
    }
}

/// Subscribes, or explains why this host does not allow it. Fails the
/// test for any reason other than missing privilege.
fn subscribe_or_explain() -> Option<ProcConnector> {
    match ProcConnector::subscribe() {
        Ok(c) => Some(c),
        Err(e) if e.is_permission_denied() || matches!(e, ProcEventsError::NoAck { .. }) => {
            eprintln!("SKIPPED: the proc connector test could not run here: {e}");
            None
        }
        Err(e) => panic!("subscribe failed: {e}"),
    }
}

/// Drains until `done` says the events seen so far suffice, for at most
/// one second.
fn drain_until(conn: &mut ProcConnector, done: impl Fn(&[ProcEvent]) -> bool) -> Vec<ProcEvent> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut seen = Vec::new();
    while Instant::now() < deadline && !done(&seen) {
        {
            let fd = conn.as_fd();
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            let ts = Timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            };
            let _ = rustix::event::poll(&mut fds, Some(&ts));
        }
        let _ = conn.drain(&mut seen).expect("drain");
    }
    seen
}

#[test]
fn real_fork_exec_exit_of_a_child() {
    let Some(mut conn) = subscribe_or_explain() else {
        return;
    };
    let me = std::process::id();
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    let seen = drain_until(&mut conn, |seen| {
        seen.iter()
            .any(|e| matches!(e, ProcEvent::Exit { pid: p, tgid: t, .. } if *p == pid && *t == pid))
    });
    let fork = seen
        .iter()
        .find(|e| matches!(e, ProcEvent::Fork { child_tgid, .. } if *child_tgid == pid));
    match fork {
        Some(ProcEvent::Fork {
            parent_tgid,
            child_pid,
            ..
        }) => {
            assert_eq!(*parent_tgid, me, "the parent is this test process");
            assert_eq!(*child_pid, pid, "a new process: pid == tgid");
        }
        _ => panic!("no fork event for child {pid} within 1 s: {seen:?}"),
    }
    assert!(
        seen.contains(&ProcEvent::Exec { pid, tgid: pid }),
        "{seen:?}"
    );
    assert!(
        seen.contains(&ProcEvent::Exit {
            pid,
            tgid: pid,
            exit_code: 0
        }),
        "{seen:?}"
    );
}

#[test]
fn real_overrun_is_reported() {
    let Some(mut conn) = subscribe_or_explain() else {
        return;
    };
    // The smallest buffer the kernel allows holds a handful of events.
    rustix::net::sockopt::set_socket_recv_buffer_size(&conn, 1).expect("shrink buffer");
    for _ in 0..30 {
        Command::new("true").status().expect("run true");
    }
    let mut out = Vec::new();
    assert_eq!(conn.drain(&mut out).expect("drain"), Drain::Overrun);
    // The socket keeps working after an overrun (given room again).
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(&conn, RECV_BUFFER).is_err() {
        rustix::net::sockopt::set_socket_recv_buffer_size(&conn, RECV_BUFFER).expect("grow buffer");
    }
    let mut child = Command::new("true").spawn().expect("spawn");
    let pid = child.id();
    child.wait().expect("wait");
    let seen = drain_until(&mut conn, |seen| {
        seen.iter()
            .any(|e| matches!(e, ProcEvent::Exit { tgid, .. } if *tgid == pid))
    });
    assert!(
        seen.iter()
            .any(|e| matches!(e, ProcEvent::Exit { tgid, .. } if *tgid == pid)),
        "{seen:?}"
    );
}

/// Clears CAP_NET_ADMIN from the calling thread's effective set
/// (capabilities are per thread). False if the thread did not have it.
fn drop_net_admin_in_this_thread() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset read and write the two structs we own, in
    // the layout of linux/capability.h version 3.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return false;
        }
        if data[0].effective & (1 << CAP_NET_ADMIN) == 0 {
            return false;
        }
        data[0].effective &= !(1 << CAP_NET_ADMIN);
        libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) == 0
    }
}

/// Before Linux 6.6 the kernel refuses subscribers without CAP_NET_ADMIN;
/// since then it lets them listen. Either way the answer must be one the
/// daemon understands: events that really arrive, or a permission error.
#[test]
fn real_subscription_without_net_admin() {
    let result = std::thread::spawn(|| {
        if !drop_net_admin_in_this_thread() {
            return None;
        }
        Some(ProcConnector::subscribe())
    })
    .join()
    .expect("thread");
    match result {
        None => eprintln!("SKIPPED: this test needs CAP_NET_ADMIN to drop it"),
        Some(Err(e)) => assert!(e.is_permission_denied(), "{e:?}"),
        Some(Ok(mut conn)) => {
            let mut child = Command::new("true").spawn().expect("spawn");
            let pid = child.id();
            child.wait().expect("wait");
            let fork = |seen: &[ProcEvent]| {
                seen.iter()
                    .any(|e| matches!(e, ProcEvent::Fork { child_tgid, .. } if *child_tgid == pid))
            };
            let seen = drain_until(&mut conn, fork);
            assert!(
                fork(&seen),
                "subscribed without CAP_NET_ADMIN but no events: {seen:?}"
            );
        }
    }
}
