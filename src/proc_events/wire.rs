//! The proc connector's wire format (linux/netlink.h, linux/connector.h,
//! linux/cn_proc.h), read field by field with every length checked.
//!
//! A datagram holds netlink messages; each carries a `cn_msg` whose data
//! is one `proc_event`:
//!
//! ```text
//! nlmsghdr  (16): len u32, type u16, flags u16, seq u32, pid u32
//! cn_msg    (20): idx u32, val u32, seq u32, ack u32, len u16, flags u16
//! proc_event(16+): what u32, cpu u32, timestamp_ns u64, event_data
//! ```

use super::ProcEvent;

pub(crate) const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_DONE: u16 = 3;
const CN_MSG_LEN: usize = 20;
const EVENT_HEADER_LEN: usize = 16;

const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 1;
const PROC_EVENT_EXEC: u32 = 2;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// The subscription message. The kernel answers with an event whose ack
/// field is ours plus one; its seq field is overwritten with a per-CPU
/// counter, so `ack` is what identifies the answer.
///
/// The payload is the 4-byte
/// `enum proc_cn_mcast_op` rather than 6.6's 8-byte `proc_input` with an
/// event filter: kernels before 6.6 silently ignore anything but 4 bytes.
pub(crate) fn listen_request(ack: u32) -> Vec<u8> {
    let total = NLMSG_HDRLEN + CN_MSG_LEN + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&std::process::id().to_ne_bytes());
    for v in [CN_IDX_PROC, CN_VAL_PROC, 0, ack] {
        m.extend_from_slice(&v.to_ne_bytes());
    }
    m.extend_from_slice(&4u16.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    m
}

/// One decoded message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Msg {
    Event(ProcEvent),
    /// The kernel's answer to a subscription: the request's ack field
    /// plus one, and an errno (0 = subscribed).
    Ack {
        ack: u32,
        err: u32,
    },
    /// A well-formed event of a kind we do not use (uid, comm, …).
    Ignored,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let bytes = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(bytes.try_into().ok()?))
}

/// Decodes every message of a datagram, calling `on` for each; returns
/// how many were malformed. A bad length stops the walk, since nothing
/// after it can be located.
pub(crate) fn walk(mut bytes: &[u8], mut on: impl FnMut(Msg)) -> u64 {
    let mut malformed = 0;
    while !bytes.is_empty() {
        let Some(len) = u32_at(bytes, 0).map(|l| l as usize) else {
            return malformed + 1;
        };
        if len < NLMSG_HDRLEN || len > bytes.len() {
            return malformed + 1;
        }
        match decode(&bytes[..len]) {
            Some(msg) => on(msg),
            None => malformed += 1,
        }
        let next = (len + 3) & !3;
        bytes = bytes.get(next..).unwrap_or(&[]);
    }
    malformed
}

/// One netlink message, `b` cut to its length.
fn decode(b: &[u8]) -> Option<Msg> {
    if u16_at(b, 4)? != NLMSG_DONE {
        // The connector sends everything as NLMSG_DONE.
        return None;
    }
    let cn = b.get(NLMSG_HDRLEN..)?;
    if u32_at(cn, 0)? != CN_IDX_PROC || u32_at(cn, 4)? != CN_VAL_PROC {
        return None;
    }
    let ack = u32_at(cn, 12)?;
    let data_len = usize::from(u16_at(cn, 16)?);
    let ev = cn.get(CN_MSG_LEN..CN_MSG_LEN.checked_add(data_len)?)?;
    let what = u32_at(ev, 0)?;
    let d = ev.get(EVENT_HEADER_LEN..)?;
    Some(match what {
        PROC_EVENT_NONE => Msg::Ack {
            ack,
            err: u32_at(d, 0)?,
        },
        PROC_EVENT_FORK => Msg::Event(ProcEvent::Fork {
            parent_pid: u32_at(d, 0)?,
            parent_tgid: u32_at(d, 4)?,
            child_pid: u32_at(d, 8)?,
            child_tgid: u32_at(d, 12)?,
        }),
        PROC_EVENT_EXEC => Msg::Event(ProcEvent::Exec {
            pid: u32_at(d, 0)?,
            tgid: u32_at(d, 4)?,
        }),
        PROC_EVENT_EXIT => Msg::Event(ProcEvent::Exit {
            pid: u32_at(d, 0)?,
            tgid: u32_at(d, 4)?,
            exit_code: u32_at(d, 8)?,
        }),
        _ => Msg::Ignored,
    })
}

/// Appends the fork, exec and exit events of one datagram to `out`;
/// returns how many messages were malformed and skipped.
pub fn parse_datagram(bytes: &[u8], out: &mut Vec<ProcEvent>) -> u64 {
    walk(bytes, |msg| {
        if let Msg::Event(e) = msg {
            out.push(e);
        }
    })
}

/// Result of parsing a datagram while waiting for a subscription ack.
pub(crate) struct AckScan {
    pub malformed: u64,
    acks: Vec<(u32, u32)>,
}

impl AckScan {
    /// The errno of the kernel's answer to the request sent with ack
    /// field `ack`, if this datagram holds it.
    pub fn ack_for(&self, ack: u32) -> Option<u32> {
        let expected = ack.wrapping_add(1);
        self.acks
            .iter()
            .find(|(a, _)| *a == expected)
            .map(|(_, err)| *err)
    }
}

pub(crate) fn parse_datagram_acks(bytes: &[u8], out: &mut Vec<ProcEvent>) -> AckScan {
    let mut acks = Vec::new();
    let malformed = walk(bytes, |msg| match msg {
        Msg::Event(e) => out.push(e),
        Msg::Ack { ack, err } => acks.push((ack, err)),
        Msg::Ignored => {}
    });
    AckScan { malformed, acks }
}
