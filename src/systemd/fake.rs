//! A stand-in for systemd in fast tests: it acts on a fake cgroup tree the
//! way PID 1 would (moving a PID into a new scope's `cgroup.procs`, writing
//! `memory.high`/`memory.max`, removing a scope whose processes were
//! killed) and records every call. Never used outside tests; never what a
//! feature is proven on.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{KillWhom, ScopeSpec, ServiceInfo, Systemd, SystemdError};

#[derive(Debug, Default)]
pub struct FakeState {
    pub services: BTreeMap<String, ServiceInfo>,
    /// One line per call, e.g. "start aw-shop-7.scope".
    pub calls: Vec<String>,
    /// Scopes systemd would have: name → cgroup path.
    pub scopes: BTreeMap<String, String>,
    /// Make the next `start_scope` fail with this job result.
    pub fail_next_start: Option<String>,
    /// `start_scope` calls under way now, and the most at once.
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// What goes wrong, by method ("service", "start", "limits", "kill",
    /// "freeze", "thaw"): a real PID 1 fails, times out and hangs, and a
    /// daemon tested only against one that never does is tested only on
    /// its happy path.
    pub faults: Faults,
}

#[derive(Debug, Default)]
pub struct Faults {
    /// Every call of these methods fails with this message.
    pub fail: BTreeMap<&'static str, String>,
    /// Every call of these methods fails as a timed-out call does.
    pub time_out: BTreeSet<&'static str>,
    /// Calls of these methods never answer (a PID 1 that is stuck); the
    /// caller's own deadline is all that ends them.
    pub hang: BTreeSet<&'static str>,
    /// systemd's job signals ended: no scope start ever learns its result.
    pub jobs_ended: bool,
    /// The connection is lost for good (see [`Systemd::lost`]).
    pub lost: Option<String>,
}

pub struct FakeSystemd {
    cgroup_root: PathBuf,
    pub state: Mutex<FakeState>,
}

fn fake_err(method: &'static str, unit: &str, message: impl ToString) -> SystemdError {
    SystemdError::Fake {
        method,
        unit: unit.to_owned(),
        message: message.to_string(),
    }
}

fn read_procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn write_procs(dir: &Path, pids: &[u32]) -> std::io::Result<()> {
    let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
    fs::write(dir.join("cgroup.procs"), text)
}

impl FakeSystemd {
    pub fn new(cgroup_root: impl Into<PathBuf>) -> Self {
        Self {
            cgroup_root: cgroup_root.into(),
            state: Mutex::new(FakeState::default()),
        }
    }

    fn dir(&self, cgroup: &str) -> PathBuf {
        self.cgroup_root.join(cgroup.trim_start_matches('/'))
    }

    /// A running service with its processes in its cgroup.
    pub fn add_service(&self, unit: &str, main_pid: u32, procs: &[u32]) -> std::io::Result<String> {
        let cgroup = format!("/system.slice/{unit}");
        let dir = self.dir(&cgroup);
        fs::create_dir_all(&dir)?;
        write_procs(&dir, procs)?;
        self.lock().services.insert(
            unit.to_owned(),
            ServiceInfo {
                main_pid,
                control_group: cgroup.clone(),
                active_state: "active".into(),
            },
        );
        Ok(cgroup)
    }

    /// Sets the ActiveState systemd reports for a service.
    pub fn set_state(&self, unit: &str, state: &str) {
        if let Some(s) = self.lock().services.get_mut(unit) {
            s.active_state = state.to_owned();
        }
    }

    /// Sets the main PID systemd reports for a service (0: none).
    pub fn set_main_pid(&self, unit: &str, pid: u32) {
        if let Some(s) = self.lock().services.get_mut(unit) {
            s.main_pid = pid;
        }
    }

    /// Applies the faults set for `method`, after recording the call.
    async fn fault(&self, method: &'static str, unit: &str) -> Result<(), SystemdError> {
        let (hang, fail, time_out) = {
            let st = self.lock();
            (
                st.faults.hang.contains(method),
                st.faults.fail.get(method).cloned(),
                st.faults.time_out.contains(method),
            )
        };
        if hang {
            std::future::pending::<()>().await;
        }
        if time_out {
            return Err(fake_err(method, unit, "Timeout was reached"));
        }
        match fail {
            Some(message) => Err(fake_err(method, unit, message)),
            None => Ok(()),
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn scope_dir(&self, unit: &str) -> Option<PathBuf> {
        self.lock().scopes.get(unit).map(|cg| self.dir(cg))
    }

    /// Takes the PID out of whichever service cgroup holds it.
    fn take_from_services(&self, pid: u32) -> bool {
        let groups: Vec<String> = self
            .lock()
            .services
            .values()
            .map(|s| s.control_group.clone())
            .collect();
        for cg in groups {
            let dir = self.dir(&cg);
            let mut procs = read_procs(&dir);
            if let Some(i) = procs.iter().position(|p| *p == pid) {
                procs.remove(i);
                return write_procs(&dir, &procs).is_ok();
            }
        }
        false
    }
}

fn limit_text(v: Option<u64>) -> String {
    v.map_or("max".into(), |v| v.to_string())
}

impl Systemd for FakeSystemd {
    async fn service(&self, unit: &str) -> Result<Option<ServiceInfo>, SystemdError> {
        self.lock().calls.push(format!("service {unit}"));
        self.fault("service", unit).await?;
        Ok(self.lock().services.get(unit).cloned())
    }

    async fn start_scope(&self, spec: &ScopeSpec) -> Result<(), SystemdError> {
        {
            let mut st = self.lock();
            st.in_flight += 1;
            st.max_in_flight = st.max_in_flight.max(st.in_flight);
        }
        // A real call waits for systemd: let other calls start meanwhile.
        tokio::task::yield_now().await;
        self.lock().in_flight -= 1;
        if let Err(e) = self.fault("start", &spec.name).await {
            self.lock().calls.push(format!("start {}", spec.name));
            return Err(e);
        }
        if self.lock().faults.jobs_ended {
            self.lock().calls.push(format!("start {}", spec.name));
            return Err(SystemdError::JobTimeout {
                unit: spec.name.clone(),
                waited: std::time::Duration::ZERO,
            });
        }
        {
            let mut st = self.lock();
            st.calls.push(format!("start {}", spec.name));
            if let Some(result) = st.fail_next_start.take() {
                return Err(SystemdError::JobFailed {
                    unit: spec.name.clone(),
                    result,
                });
            }
            if st.scopes.contains_key(&spec.name) {
                return Err(fake_err("start", &spec.name, "Unit already exists"));
            }
        }
        if !self.take_from_services(spec.pid) {
            return Err(SystemdError::JobFailed {
                unit: spec.name.clone(),
                result: "failed".into(),
            });
        }
        let cgroup = format!("/aw.slice/{}/{}", spec.slice, spec.name);
        let dir = self.dir(&cgroup);
        let io = |e: std::io::Error| fake_err("start", &spec.name, e);
        fs::create_dir_all(&dir).map_err(io)?;
        write_procs(&dir, &[spec.pid]).map_err(io)?;
        fs::write(dir.join("memory.high"), limit_text(spec.memory_high)).map_err(io)?;
        fs::write(dir.join("memory.max"), limit_text(spec.memory_max)).map_err(io)?;
        fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").map_err(io)?;
        self.lock().scopes.insert(spec.name.clone(), cgroup);
        Ok(())
    }

    async fn set_memory_limits(
        &self,
        unit: &str,
        high: Option<u64>,
        max: Option<u64>,
    ) -> Result<(), SystemdError> {
        self.lock().calls.push(format!(
            "limits {unit} {} {}",
            limit_text(high),
            limit_text(max)
        ));
        self.fault("limits", unit).await?;
        let dir = self
            .scope_dir(unit)
            .ok_or_else(|| SystemdError::NoSuchUnit { unit: unit.into() })?;
        let io = |e: std::io::Error| fake_err("set memory limits of", unit, e);
        fs::write(dir.join("memory.high"), limit_text(high)).map_err(io)?;
        fs::write(dir.join("memory.max"), limit_text(max)).map_err(io)
    }

    async fn kill(&self, unit: &str, whom: KillWhom, signal: i32) -> Result<(), SystemdError> {
        self.lock()
            .calls
            .push(format!("kill {unit} {} {signal}", whom.as_str()));
        self.fault("kill", unit).await?;
        let Some(dir) = self.scope_dir(unit) else {
            // Signals to services are recorded only.
            return match self.lock().services.contains_key(unit) {
                true => Ok(()),
                false => Err(SystemdError::NoSuchUnit { unit: unit.into() }),
            };
        };
        if signal == libc::SIGKILL {
            // The worker dies and systemd collects the empty scope.
            let _ = fs::remove_dir_all(&dir);
            self.lock().scopes.remove(unit);
        }
        Ok(())
    }

    async fn freeze(&self, unit: &str) -> Result<(), SystemdError> {
        self.lock().calls.push(format!("freeze {unit}"));
        self.fault("freeze", unit).await?;
        let dir = self
            .scope_dir(unit)
            .ok_or_else(|| SystemdError::NoSuchUnit { unit: unit.into() })?;
        fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 1\n")
            .map_err(|e| fake_err("freeze", unit, e))
    }

    fn lost(&self) -> Option<String> {
        self.lock().faults.lost.clone()
    }

    async fn thaw(&self, unit: &str) -> Result<(), SystemdError> {
        self.lock().calls.push(format!("thaw {unit}"));
        self.fault("thaw", unit).await?;
        let dir = self
            .scope_dir(unit)
            .ok_or_else(|| SystemdError::NoSuchUnit { unit: unit.into() })?;
        fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n")
            .map_err(|e| fake_err("thaw", unit, e))
    }
}
