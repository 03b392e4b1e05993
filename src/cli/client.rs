//! Talking to the running daemon over its D-Bus interface, for every
//! subcommand that reads from it (status, events, top, inspect APP) or
//! asks it to act (reload, recycle, pause, resume).

use anyhow::anyhow;
use zbus::fdo;

use crate::wire::Daemon1Proxy;
use crate::wire::{Event, StatusView};

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

/// What became of a request the daemon was asked to carry out (reload,
/// recycle, pause, resume), from the error its call returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not root. `by_bus`: the system bus's policy refused the call before
    /// it reached the daemon; otherwise the daemon's own check did.
    /// `detail` is the first clause of the message (no rule dump).
    Denied { by_bus: bool, detail: String },
    /// The daemon refused for another reason, and says why.
    Refused(String),
    /// The daemon could not be asked (not running, no bus, no answer).
    Unreachable,
}

/// The first clause of a bus message: dbus-daemon's denial goes on with
/// the rules it matched and every field of the message ("Rejected send
/// message, 2 matched rules; type="method_call", sender=…").
fn first_clause(text: &str) -> String {
    let end = text.find([',', ';', '\n']).unwrap_or(text.len());
    text[..end].trim().to_owned()
}

/// Sorts the error of a changing call. zbus turns every error named
/// org.freedesktop.DBus.Error.* into [`zbus::Error::FDO`]: a denial by
/// the bus's policy (AccessDenied, "Rejected send message, …") and the
/// daemon's own `fdo::Error::AccessDenied` alike, and the daemon's other
/// refusals (`fdo::Error::Failed`); other names stay `MethodError`.
pub fn classify(e: &zbus::Error) -> Refusal {
    let denied = |detail: &str| Refusal::Denied {
        by_bus: detail.starts_with("Rejected send message"),
        detail: first_clause(detail),
    };
    match e {
        zbus::Error::FDO(f) => match f.as_ref() {
            fdo::Error::AccessDenied(m) => denied(m),
            fdo::Error::Failed(m) => Refusal::Refused(m.clone()),
            _ => Refusal::Unreachable,
        },
        zbus::Error::MethodError(name, m, _) if name.as_str().ends_with(".AccessDenied") => {
            denied(m.as_deref().unwrap_or_default())
        }
        zbus::Error::MethodError(_, Some(m), _) => Refusal::Refused(m.clone()),
        _ => Refusal::Unreachable,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fdo_error(e: fdo::Error) -> zbus::Error {
        zbus::Error::FDO(Box::new(e))
    }

    #[test]
    fn a_denial_by_the_bus_policy_keeps_only_its_first_clause() {
        // As dbus-daemon 1.14 words it (issue 16).
        let e = fdo_error(fdo::Error::AccessDenied(
            "Rejected send message, 2 matched rules; type=\"method_call\", sender=\":1.11\" (uid=65534 pid=812 comm=\"adaptive-workers recycle 1\") interface=\"org.adaptiveworkers.Daemon1\" member=\"RecycleWorker\"".into(),
        ));
        assert_eq!(
            classify(&e),
            Refusal::Denied {
                by_bus: true,
                detail: "Rejected send message".into()
            }
        );
    }

    #[test]
    fn the_daemons_own_denial_and_its_other_refusals() {
        let e = fdo_error(fdo::Error::AccessDenied(
            "only root may change adaptive-workers".into(),
        ));
        assert_eq!(
            classify(&e),
            Refusal::Denied {
                by_bus: false,
                detail: "only root may change adaptive-workers".into()
            }
        );
        let e = fdo_error(fdo::Error::Failed("no managed worker has PID 1".into()));
        assert_eq!(
            classify(&e),
            Refusal::Refused("no managed worker has PID 1".into())
        );
    }

    #[test]
    fn no_daemon_is_unreachable() {
        let e = fdo_error(fdo::Error::ServiceUnknown(
            "The name org.adaptiveworkers.Daemon was not provided by any .service files".into(),
        ));
        assert_eq!(classify(&e), Refusal::Unreachable);
        assert_eq!(classify(&zbus::Error::InvalidReply), Refusal::Unreachable);
    }
}
