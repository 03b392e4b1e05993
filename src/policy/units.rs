//! Which units a policy may name.
//!
//! A policy makes the daemon place a unit's processes in scopes, signal,
//! freeze and kill them. Done to the daemon itself or to the system's own
//! plumbing, that takes the host down or locks its operators out, so those
//! units are refused whatever the policy file says.

/// Units a policy may never name, with why, as `prefix*suffix` patterns.
///
/// The daemon's own unit: it would freeze or kill itself. The system bus
/// (under each distribution's name) and its `dbus-org.freedesktop.*`
/// aliases of systemd's services: the daemon and systemd talk through it.
/// Every `systemd-*` service (journald, logind, udevd, oomd, resolved,
/// networkd, ...). User managers and their runtime directories, consoles
/// and remote logins: how operators get in to fix things. Other aliases
/// of these units are not known here; systemd resolves them at run time.
const FORBIDDEN_UNITS: &[(&str, &str)] = &[
    ("adaptive-workers.service", "the daemon's own unit"),
    ("dbus.service", "the system bus"),
    ("dbus-broker.service", "the system bus"),
    ("messagebus.service", "the system bus"),
    (
        "dbus-org.freedesktop.*.service",
        "an alias of a systemd service",
    ),
    ("systemd-*.service", "part of systemd"),
    ("user@*.service", "a user's service manager"),
    ("user-runtime-dir@*.service", "a user's runtime directory"),
    ("getty@*.service", "a login console"),
    ("serial-getty@*.service", "a login console"),
    ("autovt@*.service", "a login console"),
    ("container-getty@*.service", "a login console"),
    ("console-getty.service", "a login console"),
    ("emergency.service", "the emergency shell"),
    ("rescue.service", "the rescue shell"),
    ("ssh.service", "remote login"),
    ("sshd.service", "remote login"),
    ("sshd@*.service", "remote login"),
];

/// A `.service` unit name systemd would accept.
pub(super) fn valid_service_name(unit: &str) -> bool {
    let Some(prefix) = unit.strip_suffix(".service") else {
        return false;
    };
    !prefix.is_empty()
        && unit.len() <= 255
        && !prefix.starts_with('@')
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@'))
}

/// Why the daemon must never manage `unit`, if it must not.
pub(super) fn forbidden(unit: &str) -> Option<String> {
    let (pattern, why) = FORBIDDEN_UNITS
        .iter()
        .find(|(pattern, _)| matches(pattern, unit))?;
    let rule = if pattern.contains('*') {
        format!(" (it matches {pattern:?})")
    } else {
        String::new()
    };
    Some(format!(
        "{unit:?} is {why}{rule}: adaptive-workers must never manage it"
    ))
}

/// `pattern` with at most one `*`, which matches any run of characters.
fn matches(pattern: &str, unit: &str) -> bool {
    match pattern.split_once('*') {
        Some((head, tail)) => {
            unit.len() >= head.len() + tail.len() && unit.starts_with(head) && unit.ends_with(tail)
        }
        None => pattern == unit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_units_are_forbidden() {
        for unit in [
            "adaptive-workers.service",
            "dbus.service",
            "dbus-broker.service",
            "dbus-org.freedesktop.login1.service",
            "systemd-journald.service",
            "systemd-logind.service",
            "systemd-udevd.service",
            "systemd-oomd.service",
            "systemd-resolved.service",
            "systemd-networkd.service",
            "user@1000.service",
            "user@.service",
            "user-runtime-dir@0.service",
            "getty@tty1.service",
            "serial-getty@ttyS0.service",
            "sshd.service",
        ] {
            assert!(valid_service_name(unit), "{unit}");
            assert!(forbidden(unit).is_some(), "{unit}");
        }
    }

    #[test]
    fn app_units_are_allowed() {
        for unit in [
            "shop.service",
            "uwsgi-shop.service",
            "uwsgi@shop.service",
            "adaptive-workers-shop.service",
            "my-systemd-app.service",
            "systemd.service",
            "users@x.service",
            "getty.service",
        ] {
            assert_eq!(forbidden(unit), None, "{unit}");
        }
    }

    #[test]
    fn the_reason_is_given() {
        assert_eq!(
            forbidden("systemd-journald.service").unwrap(),
            "\"systemd-journald.service\" is part of systemd (it matches \"systemd-*.service\"): adaptive-workers must never manage it"
        );
        assert_eq!(
            forbidden("adaptive-workers.service").unwrap(),
            "\"adaptive-workers.service\" is the daemon's own unit: adaptive-workers must never manage it"
        );
    }
}
