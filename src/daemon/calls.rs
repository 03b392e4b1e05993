//! systemd calls beside the loop: reading the apps' services and setting
//! scopes' memory limits. PID 1 answers in milliseconds, except while it
//! re-executes, creates a thousand scopes, or while the bus itself is
//! stuck: then a call waits for its whole timeout (8 s). Awaited inside
//! the loop, every such call held up the host step, and with it the
//! kills above the upper bound, exactly when the host was in trouble.
//! So the steps start these calls and the loop takes each answer as it
//! comes, like the placements ([`super::discover`]); at most
//! [`CALLS_AT_ONCE`] are under way.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;

use super::Daemon;
use super::signal::Signaller;
use crate::systemd::{ServiceInfo, Systemd, SystemdError};

/// systemd calls under way at once (placements not counted).
pub(super) const CALLS_AT_ONCE: usize = 32;

/// How long a full step waits for the services' answers before it goes
/// on with what it knew: systemd answers these in milliseconds when it
/// is well, and a step that waited longer would hold up the host step.
const SERVICE_WAIT: Duration = Duration::from_millis(250);

/// One call under way: resolves to systemd's answer.
pub(super) type Call = Pin<Box<dyn Future<Output = CallDone>>>;

/// What a call brought back.
pub(super) enum CallDone {
    Service {
        app: String,
        unit: String,
        result: Result<Option<ServiceInfo>, SystemdError>,
    },
    Limits {
        app: String,
        scope: String,
        /// Lifted (no limits), not set to the policy's.
        lift: bool,
        result: Result<(), SystemdError>,
    },
}

impl<S: Systemd, K: Signaller> Daemon<S, K> {
    /// Asks systemd about each app's service (one read per app under
    /// way), and waits a little for the answers: when systemd is well the
    /// step goes on with fresh ones; when it is not, with what it knew,
    /// and the answers are taken when they come.
    pub(super) async fn refresh_services(&mut self) {
        let names: Vec<String> = self.apps.keys().cloned().collect();
        for name in names {
            let app = self.apps.get_mut(&name).expect("listed above");
            app.service_fresh = false;
            if app.reading_service || self.calls.len() >= CALLS_AT_ONCE {
                continue;
            }
            app.reading_service = true;
            let unit = app.policy.unit.clone();
            let systemd = Rc::clone(&self.systemd);
            self.calls.push(Box::pin(async move {
                let result = systemd.service(&unit).await;
                CallDone::Service {
                    app: name,
                    unit,
                    result,
                }
            }));
        }
        let reading = |d: &Self| d.apps.values().any(|a| a.reading_service);
        let _ = tokio::time::timeout(SERVICE_WAIT, async {
            while reading(self) && self.next_call().await {}
        })
        .await;
    }

    /// Starts the memory-limit updates waiting in each app's queue, as
    /// many as there is room for; the rest go at the next step.
    pub(super) fn pump_limits(&mut self) {
        for (name, app) in self.apps.iter_mut() {
            while self.calls.len() < CALLS_AT_ONCE {
                let (scope, lift) = match app.limits_lift.pop_first() {
                    Some(scope) => (scope, true),
                    None => match app.limits_todo.pop_first() {
                        Some(scope) => (scope, false),
                        None => break,
                    },
                };
                let limits = if lift { (None, None) } else { app.limits() };
                let systemd = Rc::clone(&self.systemd);
                let name = name.clone();
                self.calls.push(Box::pin(async move {
                    let result = systemd.set_memory_limits(&scope, limits.0, limits.1).await;
                    CallDone::Limits {
                        app: name,
                        scope,
                        lift,
                        result,
                    }
                }));
            }
        }
    }

    /// Waits for the next answer from systemd, a placement's or another
    /// call's, and takes it; `false` at once when nothing is under way.
    pub async fn next_answer(&mut self) -> bool {
        enum Got {
            Placed(super::discover::Placement),
            Call(CallDone),
        }
        let (placing, calling) = (!self.placing.is_empty(), !self.calls.is_empty());
        let got = {
            let (p, c) = (&mut self.placing, &mut self.calls);
            tokio::select! {
                Some(x) = p.next(), if placing => Got::Placed(x),
                Some(x) = c.next(), if calling => Got::Call(x),
                else => return false,
            }
        };
        match got {
            Got::Placed(x) => self.placed(x),
            Got::Call(x) => self.call_done(x),
        }
        true
    }

    /// Whether systemd calls are under way.
    pub fn calling(&self) -> bool {
        !self.calls.is_empty()
    }

    /// Waits for the next call under way to finish, and takes its
    /// answer; `false` at once when none is under way.
    pub async fn next_call(&mut self) -> bool {
        match self.calls.next().await {
            Some(done) => {
                self.call_done(done);
                true
            }
            None => false,
        }
    }

    pub(super) fn call_done(&mut self, done: CallDone) {
        match done {
            CallDone::Service { app, unit, result } => {
                // The app left the policy, or now names another unit.
                let Some(a) = self.apps.get_mut(&app).filter(|a| a.policy.unit == unit) else {
                    return;
                };
                a.reading_service = false;
                match result {
                    Ok(info) => super::discover::take_service(a, info),
                    Err(e) => tracing::warn!(
                        app = app.as_str(),
                        "failed to read {unit} from systemd: {e}"
                    ),
                }
            }
            CallDone::Limits {
                app,
                scope,
                lift,
                result,
            } => match result {
                Ok(()) => {}
                Err(e) if e.is_gone() => {}
                Err(e) => {
                    tracing::error!(
                        app = app.as_str(),
                        scope = scope.as_str(),
                        "{e}; trying again"
                    );
                    if let Some(a) = self.apps.get_mut(&app) {
                        match lift {
                            true => a.limits_lift.insert(scope),
                            false => a.limits_todo.insert(scope),
                        };
                    }
                }
            },
        }
    }
}
