//! Any other pre-fork master: every child of the service's main process is
//! a worker; the policy names the signal that recycles one gracefully
//! (SIGTERM unless told otherwise) and, optionally, the signals that ask
//! the master for one more or one fewer worker.

use super::ScaleMechanism;
use crate::policy::GenericSettings;

pub fn recycle_signal(settings: Option<&GenericSettings>) -> i32 {
    settings.map_or(libc::SIGTERM, |g| g.recycle_signal.0)
}

pub fn scale(settings: Option<&GenericSettings>, up: bool) -> ScaleMechanism {
    let signal = settings.and_then(|g| if up { g.grow_signal } else { g.shrink_signal });
    match signal {
        Some(s) => ScaleMechanism::SignalMaster { signal: s.0 },
        None => ScaleMechanism::Unsupported {
            why: "set generic.grow_signal and generic.shrink_signal to change the worker count",
        },
    }
}
