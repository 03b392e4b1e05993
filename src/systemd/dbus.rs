//! The [`Systemd`] trait over the system bus, with small hand-written
//! proxies for the few methods used (zbus_systemd would compile thousands
//! of generated ones).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use zbus::Connection;
use zbus::proxy;
use zbus::{OwnedObjectPath, Variant as Value};

use super::{KillWhom, ScopeSpec, ServiceInfo, Systemd, SystemdError};

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;
    fn set_unit_properties(
        &self,
        name: &str,
        runtime: bool,
        properties: &[(&str, Value<'_>)],
    ) -> zbus::Result<()>;
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    fn freeze_unit(&self, name: &str) -> zbus::Result<()>;
    fn thaw_unit(&self, name: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait Service {
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn control_group(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
}

/// How long to wait for any answer from systemd. It answers in
/// milliseconds, except while it re-executes (`systemctl daemon-reexec`,
/// a package upgrade): a call sent just before is answered only once the
/// old PID 1 leaves the bus, which took 19 s in a slow VM. Without a bound
/// the daemon's loop waited that long and missed its watchdog.
const CALL_TIMEOUT: Duration = Duration::from_secs(8);

/// How long to wait for systemd to finish creating a scope.
const JOB_TIMEOUT: Duration = Duration::from_secs(10);

/// Scopes being started, by unit name: [`dispatch_job_results`] hands
/// each the `JobRemoved` signals of its unit (job and result).
type JobWaiters = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<(OwnedObjectPath, String)>>>>;

/// Why the connection to systemd is lost for good, once it is.
type Lost = Arc<Mutex<Option<String>>>;

/// How long the job signals may stay lost before the daemon gives up
/// (exits non-zero, and systemd restarts it).
const RESUBSCRIBE_FOR: Duration = Duration::from_secs(30);

pub struct DbusSystemd {
    conn: Connection,
    lost: Lost,
    manager: ManagerProxy<'static>,
    waiters: JobWaiters,
    /// Object paths of the services looked up so far. A unit's path
    /// follows from its name and systemd loads the unit again when its
    /// path is read, so one `GetUnit` per service is enough: a busy PID 1
    /// answers each call only after the scopes queued before it.
    paths: Mutex<HashMap<String, OwnedObjectPath>>,
}

impl DbusSystemd {
    pub async fn connect() -> Result<Self, SystemdError> {
        let conn = zbus::connection::Builder::system()
            .method_timeout(CALL_TIMEOUT)
            .build()
            .await
            .map_err(SystemdError::Connect)?;
        Self::with_connection(conn).await
    }

    pub async fn with_connection(conn: Connection) -> Result<Self, SystemdError> {
        let manager = ManagerProxy::new(&conn)
            .await
            .map_err(SystemdError::Connect)?;
        // Without a subscription systemd may not send JobRemoved.
        manager.subscribe().await.map_err(SystemdError::Connect)?;
        let removed = manager
            .receive_job_removed()
            .await
            .map_err(SystemdError::Connect)?;
        let waiters = JobWaiters::default();
        let lost = Lost::default();
        tokio::spawn(dispatch_job_results(
            manager.clone(),
            removed,
            waiters.clone(),
            lost.clone(),
        ));
        Ok(Self {
            lost,
            conn,
            manager,
            waiters,
            paths: Mutex::default(),
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Reads every `JobRemoved` signal as it comes, and hands it to the scope
/// waiting for it, if any. One stream, read without pause: zbus queues 64
/// signals per stream, and once a queue is full it reads nothing more on
/// the connection, not even the replies to calls. A stream per scope, read
/// only after systemd answered `StartTransientUnit`, filled up while 32
/// scopes were under way (systemd sends every job's `JobRemoved` to every
/// subscriber), and calls waited for their timeout.
///
/// When the stream ends on a live connection, the daemon subscribes
/// again, with backoff; when the connection itself closed, or
/// subscribing fails for [`RESUBSCRIBE_FOR`], the loss is final.
async fn dispatch_job_results(
    manager: ManagerProxy<'static>,
    mut removed: JobRemovedStream,
    waiters: JobWaiters,
    lost: Lost,
) {
    loop {
        while let Some(signal) = removed.next().await {
            let Ok(args) = signal.args() else { continue };
            let waiters = waiters.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = waiters.get(args.unit.as_str()) {
                let _ = tx.send((args.job.clone(), args.result.clone()));
            }
        }
        tracing::error!("systemd's job signals ended: subscribing again");
        match resubscribe(&manager).await {
            Ok(stream) => {
                tracing::info!("subscribed to systemd's job signals again");
                removed = stream;
            }
            Err(why) => {
                tracing::error!("{why}");
                *lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                return;
            }
        }
    }
}

/// A new stream of job signals, tried with backoff for RESUBSCRIBE_FOR.
async fn resubscribe(manager: &ManagerProxy<'static>) -> Result<JobRemovedStream, String> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        if manager.inner().connection().is_closed() {
            return Err("the connection to the system bus closed".into());
        }
        let tried = async {
            manager.subscribe().await?;
            manager.receive_job_removed().await
        };
        match tried.await {
            Ok(stream) => return Ok(stream),
            Err(e) if started.elapsed() >= RESUBSCRIBE_FOR => {
                return Err(format!(
                    "no job signals from systemd for {RESUBSCRIBE_FOR:?}: {e}"
                ));
            }
            Err(e) => {
                tracing::warn!("subscribing to systemd's job signals: {e}; retrying in {delay:?}")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(4));
    }
}

/// Takes a unit's entry out of the job waiters however its start ends.
struct Waiting<'a> {
    waiters: &'a JobWaiters,
    unit: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.unit);
    }
}

fn call(method: &'static str, unit: &str) -> impl FnOnce(zbus::Error) -> SystemdError {
    let unit = unit.to_owned();
    move |source| SystemdError::Call {
        method,
        unit,
        source,
    }
}

fn is_no_such_unit(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _)
        if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit")
}

fn scope_properties(spec: &ScopeSpec) -> Vec<(&'static str, Value<'_>)> {
    let mut props = vec![
        ("Description", Value::from(spec.description.as_str())),
        ("Slice", Value::from(spec.slice.as_str())),
        ("PIDs", Value::from(vec![spec.pid])),
        ("PartOf", Value::from(vec![spec.part_of.as_str()])),
        ("MemoryAccounting", Value::from(true)),
        // A scope whose worker was OOM-killed must not linger as "failed".
        ("CollectMode", Value::from("inactive-or-failed")),
    ];
    if let Some(high) = spec.memory_high {
        props.push(("MemoryHigh", Value::from(high)));
    }
    if let Some(max) = spec.memory_max {
        props.push(("MemoryMax", Value::from(max)));
    }
    props
}

impl Systemd for DbusSystemd {
    async fn service(&self, unit: &str) -> Result<Option<ServiceInfo>, SystemdError> {
        let known = self
            .paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(unit)
            .cloned();
        let path = match known {
            Some(p) => p,
            // LoadUnit, not GetUnit: a stopped unit that systemd has
            // unloaded is still a unit (GetUnit says NoSuchUnit for it),
            // and only LoadState tells it from a name with no unit file.
            None => match self.manager.load_unit(unit).await {
                Ok(p) => p,
                Err(e) if is_no_such_unit(&e) => return Ok(None),
                Err(e) => return Err(call("look up", unit)(e)),
            },
        };
        let service = ServiceProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(call("look up", unit))?;
        let u = UnitProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(call("look up", unit))?;
        // Asked together: a busy PID 1 (creating 1,000 scopes) takes
        // seconds to answer each, and the loop waits for all of them.
        let (main_pid, control_group, active_state, load_state) = tokio::join!(
            service.main_pid(),
            service.control_group(),
            u.active_state(),
            u.load_state()
        );
        let load_state = load_state.map_err(call("read LoadState of", unit))?;
        // Looked up again next time, in case the path was the trouble, or
        // a unit file appears for a name that had none.
        let remember = load_state == "loaded"
            && main_pid.is_ok()
            && control_group.is_ok()
            && active_state.is_ok();
        let mut paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        match remember {
            true => paths.insert(unit.to_owned(), path),
            false => paths.remove(unit),
        };
        drop(paths);
        if load_state == "not-found" {
            return Ok(None);
        }
        Ok(Some(ServiceInfo {
            main_pid: main_pid.map_err(call("read MainPID of", unit))?,
            control_group: control_group.map_err(call("read ControlGroup of", unit))?,
            active_state: active_state.map_err(call("read ActiveState of", unit))?,
        }))
    }

    async fn start_scope(&self, spec: &ScopeSpec) -> Result<(), SystemdError> {
        // Listen before asking, or the job may finish before we look.
        let (tx, mut results) = mpsc::unbounded_channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.name.clone(), tx);
        let _waiting = Waiting {
            waiters: &self.waiters,
            unit: &spec.name,
        };
        let job = self
            .manager
            .start_transient_unit(&spec.name, "fail", &scope_properties(spec), &[])
            .await
            .map_err(call("start", &spec.name))?;
        let wait = async {
            // Another job of a unit of that name (the scope of an earlier
            // worker with the same PID, being stopped) is not ours.
            while let Some((removed, result)) = results.recv().await {
                if removed == job {
                    return Some(result);
                }
            }
            None
        };
        match tokio::time::timeout(JOB_TIMEOUT, wait).await {
            Ok(Some(result)) if result == "done" => Ok(()),
            Ok(Some(result)) => Err(SystemdError::JobFailed {
                unit: spec.name.clone(),
                result,
            }),
            Ok(None) | Err(_) => Err(SystemdError::JobTimeout {
                unit: spec.name.clone(),
                waited: JOB_TIMEOUT,
            }),
        }
    }

    async fn set_memory_limits(
        &self,
        unit: &str,
        high: Option<u64>,
        max: Option<u64>,
    ) -> Result<(), SystemdError> {
        // u64::MAX is systemd's "infinity": no limit.
        let props = [
            ("MemoryHigh", Value::from(high.unwrap_or(u64::MAX))),
            ("MemoryMax", Value::from(max.unwrap_or(u64::MAX))),
        ];
        self.manager
            .set_unit_properties(unit, true, &props)
            .await
            .map_err(call("set memory limits of", unit))
    }

    async fn kill(&self, unit: &str, whom: KillWhom, signal: i32) -> Result<(), SystemdError> {
        self.manager
            .kill_unit(unit, whom.as_str(), signal)
            .await
            .map_err(call("kill", unit))
    }

    async fn freeze(&self, unit: &str) -> Result<(), SystemdError> {
        self.manager
            .freeze_unit(unit)
            .await
            .map_err(call("freeze", unit))
    }

    fn lost(&self) -> Option<String> {
        if self.conn.is_closed() {
            return Some("the connection to the system bus closed".into());
        }
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn thaw(&self, unit: &str) -> Result<(), SystemdError> {
        self.manager
            .thaw_unit(unit)
            .await
            .map_err(call("thaw", unit))
    }
}
