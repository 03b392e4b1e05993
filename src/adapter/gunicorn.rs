//! gunicorn: SIGTERM to one worker is its graceful stop (it finishes its
//! requests and exits; the arbiter starts a fresh one); TTIN and TTOU to
//! the arbiter add or remove one worker. gunicorn has no stats socket, so
//! every child of the arbiter is a worker.

use super::ScaleMechanism;
use crate::procfs::ProcFs;

pub const RECYCLE_SIGNAL: i32 = libc::SIGTERM;

pub fn scale(up: bool) -> ScaleMechanism {
    ScaleMechanism::SignalMaster {
        signal: if up { libc::SIGTTIN } else { libc::SIGTTOU },
    }
}

/// gunicorn's worker classes, as far as scaling cares: how a worker takes
/// its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerClass {
    /// One request at a time; the rest wait in the accept queue.
    Sync,
    /// A thread pool; the main thread accepts up to `worker_connections`
    /// and queues them for the threads.
    Gthread,
    Gevent,
    Eventlet,
    Tornado,
    /// `uvicorn.workers.UvicornWorker` and its H11 variant (ASGI).
    Uvicorn,
    /// A class this does not know, as given.
    Other(String),
}

impl WorkerClass {
    fn from_name(name: &str) -> Self {
        let n = name.to_ascii_lowercase();
        if n.contains("uvicorn") {
            Self::Uvicorn
        } else if n.contains("gthread") || n.ends_with("threadworker") {
            Self::Gthread
        } else if n.contains("gevent") {
            Self::Gevent
        } else if n.contains("eventlet") {
            Self::Eventlet
        } else if n.contains("tornado") {
            Self::Tornado
        } else if n == "sync" || n.ends_with("sync") || n.ends_with("syncworker") {
            Self::Sync
        } else {
            Self::Other(name.to_string())
        }
    }

    /// Whether a worker of this class empties the accept queue at once,
    /// whatever it can serve: then the queue stays near 0 under any load.
    pub fn accepts_eagerly(&self) -> bool {
        !matches!(self, Self::Sync | Self::Other(_))
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Sync => "sync",
            Self::Gthread => "gthread",
            Self::Gevent => "gevent",
            Self::Eventlet => "eventlet",
            Self::Tornado => "tornado",
            Self::Uvicorn => "uvicorn",
            Self::Other(name) => name,
        }
    }
}

/// gunicorn's default `--worker-connections`.
pub const DEFAULT_WORKER_CONNECTIONS: u32 = 1000;

/// How a gunicorn arbiter's workers serve, from its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workers {
    pub class: WorkerClass,
    /// `--threads` (gthread's pool size).
    pub threads: u32,
    /// `--worker-connections`: the most clients one gthread or async worker
    /// holds at once.
    pub worker_connections: u32,
    /// `-t`/`--timeout`: the arbiter kills a worker that has not sent its
    /// heartbeat for this long (0: never). `None`: not on the command
    /// line, so gunicorn's default (30 s) or a config file's.
    pub timeout: Option<u64>,
}

impl Workers {
    /// Reads `-k`/`--worker-class`, `--threads`, `--worker-connections`
    /// and `-t`/`--timeout` from the arbiter's argv, in either
    /// `--opt value` or `--opt=value` form. A config file or GUNICORN_CMD_ARGS is not read: a policy
    /// that depends on one names `load` and `concurrency` itself.
    pub fn from_argv(argv: &[String]) -> Self {
        let mut class = None;
        let mut threads = 1;
        let mut conns = DEFAULT_WORKER_CONNECTIONS;
        let mut timeout = None;
        let mut args = argv.iter().skip(1);
        while let Some(arg) = args.next() {
            let (key, inline) = match arg.split_once('=') {
                Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
                _ => match short_with_value(arg) {
                    Some((k, v)) => (k, Some(v.to_string())),
                    None => (arg.as_str(), None),
                },
            };
            if !matches!(
                key,
                "-k" | "--worker-class" | "--threads" | "--worker-connections" | "-t" | "--timeout"
            ) {
                continue;
            }
            let Some(value) = inline.or_else(|| args.next().cloned()) else {
                break;
            };
            match key {
                "-k" | "--worker-class" => class = Some(WorkerClass::from_name(&value)),
                "--threads" => threads = value.parse().unwrap_or(threads),
                "-t" | "--timeout" => timeout = value.parse().ok(),
                _ => conns = value.parse().unwrap_or(conns),
            }
        }
        // gunicorn runs sync workers with more than one thread as gthread.
        let class = match class.unwrap_or(WorkerClass::Sync) {
            WorkerClass::Sync if threads > 1 => WorkerClass::Gthread,
            c => c,
        };
        Self {
            class,
            threads: threads.max(1),
            worker_connections: conns.max(1),
            timeout,
        }
    }

    /// Why this arbiter's idle workers must not be frozen: it kills a
    /// worker whose heartbeat stops for `--timeout` (a frozen worker beats
    /// no more: SIGABRT waits for the thaw, the SIGKILL a second later
    /// does not), then forks a fresh one. Only `--timeout 0` on the
    /// command line turns that off.
    pub fn freeze_refusal(&self) -> Option<String> {
        let timeout = match self.timeout {
            Some(0) => return None,
            Some(t) => format!("{t} s"),
            None => "30 s by default".into(),
        };
        Some(format!(
            "gunicorn's arbiter kills a worker whose heartbeat stops for --timeout ({timeout}), and a frozen worker's stops: freezing needs --timeout 0 on its command line"
        ))
    }

    /// The arbiter `pid`'s, from /proc/PID/cmdline; `None` when it cannot
    /// be read (it is gone, or hidden).
    pub fn read(procfs: &ProcFs, pid: u32) -> Option<Self> {
        procfs
            .pid_cmdline(pid)
            .ok()
            .map(|argv| Self::from_argv(&argv))
    }

    /// What one worker serves at once, and what says so: 1 for sync, its
    /// threads for gthread, `--worker-connections` for the async classes.
    pub fn concurrency(&self) -> (u32, String) {
        match self.class {
            WorkerClass::Sync | WorkerClass::Other(_) => (1, "one at a time".into()),
            WorkerClass::Gthread => (self.threads, format!("--threads {}", self.threads)),
            _ => (
                self.worker_connections,
                format!("--worker-connections {}", self.worker_connections),
            ),
        }
    }
}

/// `-kgthread`, `-t30`: a short option with its value in the same argument.
fn short_with_value(arg: &str) -> Option<(&'static str, &str)> {
    if arg.starts_with("--") {
        return None;
    }
    ["-k", "-t"].into_iter().find_map(|k| {
        arg.strip_prefix(k)
            .filter(|v| !v.is_empty())
            .map(|v| (k, v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn timeout_in_each_spelling_and_what_it_means_for_freezing() {
        for (line, timeout) in [
            ("gunicorn app:app", None),
            ("gunicorn -t 0 app:app", Some(0)),
            ("gunicorn -t0 app:app", Some(0)),
            ("gunicorn --timeout 0 app:app", Some(0)),
            ("gunicorn --timeout=120 -k gthread app:app", Some(120)),
            ("gunicorn --timeout never app:app", None),
        ] {
            let w = Workers::from_argv(&argv(line));
            assert_eq!(w.timeout, timeout, "{line}");
            assert_eq!(w.freeze_refusal().is_none(), timeout == Some(0), "{line}");
        }
        let w = Workers::from_argv(&argv("gunicorn -t30 -kgthread --threads 4 a"));
        assert_eq!((w.timeout, &w.class), (Some(30), &WorkerClass::Gthread));
        assert!(w.freeze_refusal().unwrap().contains("--timeout (30 s)"));
    }

    #[test]
    fn reads_the_worker_class_and_its_sizes() {
        let cases = [
            ("/usr/bin/gunicorn app:app", WorkerClass::Sync, 1, 1),
            (
                "gunicorn -k gthread --threads 4 app:app",
                WorkerClass::Gthread,
                4,
                4,
            ),
            (
                "gunicorn --worker-class=gthread --threads=8 app",
                WorkerClass::Gthread,
                8,
                8,
            ),
            ("gunicorn --threads 3 app", WorkerClass::Gthread, 3, 3),
            (
                "gunicorn -kgevent --worker-connections 200 a",
                WorkerClass::Gevent,
                1,
                200,
            ),
            (
                "gunicorn -k uvicorn.workers.UvicornWorker a",
                WorkerClass::Uvicorn,
                1,
                1000,
            ),
            (
                "gunicorn -k egg:gunicorn#eventlet a",
                WorkerClass::Eventlet,
                1,
                1000,
            ),
            (
                "gunicorn --worker-class gunicorn.workers.sync.SyncWorker a",
                WorkerClass::Sync,
                1,
                1,
            ),
            (
                "gunicorn -k mypkg.Custom a",
                WorkerClass::Other("mypkg.Custom".into()),
                1,
                1,
            ),
            // A bad number keeps the default; a missing value is ignored.
            (
                "gunicorn -k gthread --threads lots a",
                WorkerClass::Gthread,
                1,
                1,
            ),
            ("gunicorn --threads", WorkerClass::Sync, 1, 1),
        ];
        for (line, class, threads, concurrency) in cases {
            let w = Workers::from_argv(&argv(line));
            assert_eq!(w.class, class, "{line}");
            assert_eq!(w.threads, threads, "{line}");
            assert_eq!(w.concurrency().0, concurrency, "{line}");
        }
    }

    #[test]
    fn only_classes_that_queue_inside_accept_eagerly() {
        assert!(!WorkerClass::Sync.accepts_eagerly());
        assert!(!WorkerClass::Other("x".into()).accepts_eagerly());
        for c in [
            WorkerClass::Gthread,
            WorkerClass::Gevent,
            WorkerClass::Uvicorn,
        ] {
            assert!(c.accepts_eagerly(), "{c:?}");
        }
    }
}
