//! gunicorn: SIGTERM to one worker is its graceful stop (it finishes its
//! requests and exits; the arbiter starts a fresh one); TTIN and TTOU to
//! the arbiter add or remove one worker. gunicorn has no stats socket, so
//! every child of the arbiter is a worker.

use super::ScaleMechanism;

pub const RECYCLE_SIGNAL: i32 = libc::SIGTERM;

pub fn scale(up: bool) -> ScaleMechanism {
    ScaleMechanism::SignalMaster {
        signal: if up { libc::SIGTTIN } else { libc::SIGTTOU },
    }
}
