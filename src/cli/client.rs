//! Talking to the running daemon over its D-Bus interface, for every
//! subcommand that reads from it (status, events, top, inspect APP) or
//! asks it to act (reload, recycle, pause, resume).

use anyhow::anyhow;

use crate::daemon::bus::Daemon1Proxy;
use crate::daemon::report::{Event, StatusView};

/// A one-line error: the daemon is not there, or the bus is not.
pub fn unreachable_daemon(e: zbus::Error) -> anyhow::Error {
    let text = e.to_string();
    if text.contains("ServiceUnknown") || text.contains("was not provided") {
        anyhow!(
            "the daemon is not running (nothing owns org.adaptiveworkers.Daemon on the system bus); \
             start it with: systemctl start adaptive-workers"
        )
    } else {
        anyhow!("cannot ask the daemon: {text}")
    }
}

pub async fn connect() -> anyhow::Result<Daemon1Proxy<'static>> {
    let conn = zbus::Connection::system()
        .await
        .map_err(|e| anyhow!("cannot reach the daemon: no system bus ({e})"))?;
    Daemon1Proxy::new(&conn).await.map_err(unreachable_daemon)
}

/// The status JSON as the daemon sent it.
pub async fn status_text(proxy: &Daemon1Proxy<'_>) -> anyhow::Result<String> {
    proxy.status().await.map_err(unreachable_daemon)
}

pub async fn status_of(proxy: &Daemon1Proxy<'_>) -> anyhow::Result<StatusView> {
    let text = status_text(proxy).await?;
    serde_json::from_str(&text).map_err(|e| anyhow!("the daemon's answer is not status JSON: {e}"))
}

/// The events JSON as the daemon sent it.
pub async fn events_text(proxy: &Daemon1Proxy<'_>, max: u32) -> anyhow::Result<String> {
    proxy.events(max).await.map_err(unreachable_daemon)
}

pub async fn events_of(proxy: &Daemon1Proxy<'_>, max: u32) -> anyhow::Result<Vec<Event>> {
    let text = events_text(proxy, max).await?;
    serde_json::from_str(&text).map_err(|e| anyhow!("the daemon's answer is not events JSON: {e}"))
}

/// The daemon's status, for subcommands that need only that.
pub async fn fetch_status() -> anyhow::Result<StatusView> {
    status_of(&connect().await?).await
}
