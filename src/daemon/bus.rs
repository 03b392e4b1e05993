//! The daemon's own D-Bus interface, on the system bus.
//!
//! Reading (`Status`, `Events`) is open to every user; changing things
//! (`Reload`) is for root only. That split is enforced by the D-Bus policy
//! the package installs (packaging/dbus/), so an unprivileged caller is
//! refused by the bus before the daemon sees the call.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use zbus::{Connection, interface, proxy};

use super::Shared;

pub const BUS_NAME: &str = "org.adaptiveworkers.Daemon";
pub const OBJECT_PATH: &str = "/org/adaptiveworkers/Daemon";

/// Requests from the bus that the main loop carries out.
pub enum Command {
    Reload(oneshot::Sender<Result<String, String>>),
}

struct Api {
    shared: Arc<Mutex<Shared>>,
    commands: mpsc::Sender<Command>,
}

#[interface(name = "org.adaptiveworkers.Daemon1")]
impl Api {
    /// The whole state as JSON: host, apps, workers, counters, problems.
    async fn status(&self) -> String {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::to_string(&shared.status).unwrap_or_default()
    }

    /// The newest `max` decisions and events as a JSON array, oldest first.
    async fn events(&self, max: u32) -> String {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::to_string(&shared.events.recent(max as usize)).unwrap_or_default()
    }

    /// Re-reads the policy files; a bad policy is refused and the current
    /// one stays. Returns what happened.
    async fn reload(&self) -> zbus::fdo::Result<String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Reload(tx))
            .await
            .map_err(|_| zbus::fdo::Error::Failed("the daemon is shutting down".into()))?;
        match rx.await {
            Ok(Ok(msg)) => Ok(msg),
            Ok(Err(msg)) => Err(zbus::fdo::Error::Failed(msg)),
            Err(_) => Err(zbus::fdo::Error::Failed(
                "the daemon is shutting down".into(),
            )),
        }
    }

    #[zbus(property)]
    async fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").into()
    }
}

/// Serves the interface and takes the bus name.
pub async fn serve(
    conn: &Connection,
    shared: Arc<Mutex<Shared>>,
    commands: mpsc::Sender<Command>,
) -> zbus::Result<()> {
    conn.object_server()
        .at(OBJECT_PATH, Api { shared, commands })
        .await?;
    conn.request_name(BUS_NAME).await?;
    Ok(())
}

#[proxy(
    interface = "org.adaptiveworkers.Daemon1",
    default_service = "org.adaptiveworkers.Daemon",
    default_path = "/org/adaptiveworkers/Daemon"
)]
pub trait Daemon1 {
    fn status(&self) -> zbus::Result<String>;
    fn events(&self, max: u32) -> zbus::Result<String>;
    fn reload(&self) -> zbus::Result<String>;
}
