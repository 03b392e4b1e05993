//! PSI: pressure files (`/proc/pressure/*`, a cgroup's `*.pressure`) and
//! pressure triggers.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};

use super::{ParseError, ProcError};

/// One line of a pressure file: share of wall time (in percent) some or
/// all tasks were stalled, over 10 s, 60 s and 300 s, and the total stall
/// time in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PressureLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
}

/// A pressure file. `full` is `None` where the kernel has no such line
/// (host-wide `cpu` before Linux 5.13).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pressure {
    pub some: PressureLine,
    pub full: Option<PressureLine>,
}

/// Parses a PSI file's text; `path` only names the file in errors.
pub fn parse_pressure(path: &Path, text: &str) -> Result<Pressure, ParseError> {
    let mut some = None;
    let mut full = None;
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let mut fields = line.split_whitespace();
        let slot = match fields.next() {
            None => continue,
            Some("some") => &mut some,
            Some("full") => &mut full,
            Some(other) => {
                return Err(ParseError::new(
                    path,
                    format!("line {line_no}: expected 'some' or 'full', found {other:?}"),
                ));
            }
        };
        if slot.is_some() {
            return Err(ParseError::new(
                path,
                format!("line {line_no}: repeated line {line:?}"),
            ));
        }
        *slot = Some(parse_line(path, line_no, fields)?);
    }
    let some = some.ok_or_else(|| ParseError::new(path, "no 'some' line"))?;
    Ok(Pressure { some, full })
}

fn parse_line<'a>(
    path: &Path,
    line_no: usize,
    fields: impl Iterator<Item = &'a str>,
) -> Result<PressureLine, ParseError> {
    let bad = |what: String| ParseError::new(path, format!("line {line_no}: {what}"));
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for field in fields {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| bad(format!("expected key=value, found {field:?}")))?;
        let avg = || match value.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(bad(format!("{key} is not a percentage: {value:?}"))),
        };
        match key {
            "avg10" => avg10 = Some(avg()?),
            "avg60" => avg60 = Some(avg()?),
            "avg300" => avg300 = Some(avg()?),
            "total" => {
                total = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| bad(format!("total is not a number: {value:?}")))?,
                )
            }
            // Newer kernels may add fields; the four above are what we use.
            _ => {}
        }
    }
    match (avg10, avg60, avg300, total) {
        (Some(avg10), Some(avg60), Some(avg300), Some(total_us)) => Ok(PressureLine {
            avg10,
            avg60,
            avg300,
            total_us,
        }),
        _ => Err(bad("missing one of avg10, avg60, avg300, total".into())),
    }
}

/// The text written to a pressure file to arm a trigger, e.g.
/// `some 150000 1000000` (stall and window in microseconds).
pub fn trigger_spec(full: bool, stall: Duration, window: Duration) -> String {
    let kind = if full { "full" } else { "some" };
    format!("{kind} {} {}", stall.as_micros(), window.as_micros())
}

/// Bounds the kernel enforces on a trigger window (kernel/sched/psi.c).
const WINDOW_MIN: Duration = Duration::from_millis(500);
const WINDOW_MAX: Duration = Duration::from_secs(10);

/// An armed PSI trigger: the pressure file open read-write with a trigger
/// written to it. The kernel signals POLLPRI on the fd whenever the stall
/// time within one window passes the threshold; the owner polls for it
/// (the daemon through tokio's `AsyncFd` with `Interest::PRIORITY`).
///
/// One trigger per fd: that is how the kernel keys them. Closing the fd
/// removes it.
#[derive(Debug)]
pub struct PsiTrigger {
    fd: OwnedFd,
    path: PathBuf,
    spec: String,
}

impl PsiTrigger {
    /// Arms a trigger on `path` (`/proc/pressure/memory` or a cgroup's
    /// `memory.pressure`). Without CAP_SYS_RESOURCE the kernel only accepts
    /// windows that are a multiple of 2 s.
    pub fn open(
        path: &Path,
        full: bool,
        stall: Duration,
        window: Duration,
    ) -> Result<Self, ProcError> {
        let spec = trigger_spec(full, stall, window);
        let invalid = |msg: &str| ProcError::TriggerWrite {
            path: path.to_path_buf(),
            spec: spec.clone(),
            cause: io::Error::new(io::ErrorKind::InvalidInput, msg),
        };
        // The kernel answers all of these with a bare EINVAL; say which.
        if stall.is_zero() || stall > window {
            return Err(invalid("stall must be above zero and at most the window"));
        }
        if !(WINDOW_MIN..=WINDOW_MAX).contains(&window) {
            return Err(invalid("window must be between 500 ms and 10 s"));
        }
        let flags = OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd =
            rustix::fs::open(path, flags, Mode::empty()).map_err(|e| ProcError::TriggerOpen {
                path: path.to_path_buf(),
                cause: e.into(),
            })?;
        // psi_write() overwrites the last byte it copies with NUL, so the
        // terminator must be ours or the window loses its last digit.
        let mut buf = spec.clone().into_bytes();
        buf.push(0);
        rustix::io::write(&fd, &buf).map_err(|e| ProcError::TriggerWrite {
            path: path.to_path_buf(),
            spec: spec.clone(),
            cause: e.into(),
        })?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            spec,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The trigger as written, e.g. `some 150000 1000000`.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Blocks up to `timeout` for the trigger to fire; true if it did.
    /// For synchronous callers and tests; the daemon polls the fd itself.
    pub fn wait(&self, timeout: Duration) -> Result<bool, ProcError> {
        let ts = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&self.fd, PollFlags::PRI)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => Ok(false),
            Ok(_) => {
                let events = fds[0].revents();
                if events.contains(PollFlags::ERR) {
                    // The kernel reports POLLERR once the pressure file's
                    // cgroup is removed.
                    return Err(ProcError::Gone {
                        path: self.path.clone(),
                    });
                }
                Ok(events.contains(PollFlags::PRI))
            }
            Err(e) if e == rustix::io::Errno::INTR => Ok(false),
            Err(e) => Err(ProcError::Read {
                path: self.path.clone(),
                cause: e.into(),
            }),
        }
    }
}

impl AsFd for PsiTrigger {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PsiTrigger {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
