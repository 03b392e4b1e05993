//! The daemon's own D-Bus interface, on the system bus.
//!
//! Reading (`Status`, `Events`) is open to every user; changing things
//! (`Reload`) is for root only. That split is enforced by the D-Bus policy
//! the package installs (packaging/dbus/), so an unprivileged caller is
//! refused by the bus before the daemon sees the call.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use zbus::message::Header;
use zbus::{Connection, interface};

use super::Shared;

pub use crate::wire::{BUS_NAME, OBJECT_PATH};

type Reply = oneshot::Sender<Result<String, String>>;

/// Requests from the bus that the main loop carries out.
pub enum Command {
    Reload(Reply),
    RecycleWorker(u32, Reply),
    /// Pause (true) or resume (false) acting on an app.
    Pause(String, bool, Reply),
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
    /// one stays. Returns what happened. Root only.
    async fn reload(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> zbus::fdo::Result<String> {
        root_only(&hdr, conn).await?;
        self.ask(Command::Reload).await
    }

    /// Recycles one managed worker gracefully, as for its soft limit.
    /// Root only.
    async fn recycle_worker(
        &self,
        pid: u32,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> zbus::fdo::Result<String> {
        root_only(&hdr, conn).await?;
        self.ask(|tx| Command::RecycleWorker(pid, tx)).await
    }

    /// Stops acting on an app (its decisions are logged as in observe
    /// mode) until ResumeApp or a restart. Root only.
    async fn pause_app(
        &self,
        app: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> zbus::fdo::Result<String> {
        root_only(&hdr, conn).await?;
        self.ask(|tx| Command::Pause(app, true, tx)).await
    }

    /// Acts on a paused app again. Root only.
    async fn resume_app(
        &self,
        app: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> zbus::fdo::Result<String> {
        root_only(&hdr, conn).await?;
        self.ask(|tx| Command::Pause(app, false, tx)).await
    }

    #[zbus(property)]
    async fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").into()
    }
}

impl Api {
    async fn ask(&self, command: impl FnOnce(Reply) -> Command) -> zbus::fdo::Result<String> {
        let gone = || zbus::fdo::Error::Failed("the daemon is shutting down".into());
        let (tx, rx) = oneshot::channel();
        self.commands.send(command(tx)).await.map_err(|_| gone())?;
        match rx.await {
            Ok(Ok(msg)) => Ok(msg),
            Ok(Err(msg)) => Err(zbus::fdo::Error::Failed(msg)),
            Err(_) => Err(gone()),
        }
    }
}

/// The shipped D-Bus policy already refuses these calls to everyone but
/// root; the daemon checks again, so a loosened bus policy cannot open
/// them up.
async fn root_only(hdr: &Header<'_>, conn: &Connection) -> zbus::fdo::Result<()> {
    let denied = || zbus::fdo::Error::AccessDenied("only root may change adaptive-workers".into());
    let sender = hdr.sender().ok_or_else(denied)?;
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let uid = dbus.get_connection_unix_user(sender.clone().into()).await?;
    if uid == 0 { Ok(()) } else { Err(denied()) }
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
