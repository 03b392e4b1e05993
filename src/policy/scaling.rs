//! The `[scaling]` table: how many workers, and how fast that changes.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::fragments::ScalingFrag;
use super::load::{Checker, value};
use super::{ScaleDown, ScalingPolicy, ServerKind, SocketSpec};

/// The most workers a policy may ask for. More than this on one host is a
/// typo (an extra zero), and every worker is a process to fork, a scope to
/// create and a sample to take each interval.
pub(super) const MAX_WORKERS: u32 = 4096;

/// The most workers one decision may add or remove: a bigger burst of
/// forks could exhaust memory before the next sample sees it.
pub(super) const MAX_STEP: u32 = 64;

/// The most connections one worker may be said to serve at once (gunicorn's
/// own default for async workers is 1,000).
pub(super) const MAX_CONCURRENCY: u32 = 100_000;

/// `table` is the span of the [scaling] table, where a missing key goes.
pub(super) fn scaling_policy(
    c: &mut Checker,
    s: ScalingFrag,
    table: Range<usize>,
    server: ServerKind,
) -> ScalingPolicy {
    let min = value(&s.min_workers, 1);
    let max = value(&s.max_workers, min.max(1));
    let d = ScalingPolicy::defaults(min, max);
    check_counts(c, &s, table, min, max);
    let grow = value(&s.grow_backlog, d.grow_backlog);
    let shrink = value(&s.shrink_backlog, d.shrink_backlog);
    if let Some(g) = s.grow_backlog.as_ref().filter(|_| grow <= shrink) {
        let msg = format!("grow_backlog ({grow}) must be above shrink_backlog ({shrink})");
        c.at(g, "scaling.grow_backlog", msg);
    }
    let sockets = s
        .sockets
        .unwrap_or_default()
        .iter()
        .filter_map(|v| match socket_spec(v.get_ref()) {
            Some(spec) => Some(spec),
            None => {
                let msg = format!(
                    "{:?} is neither an address such as \"127.0.0.1:8000\" nor an absolute socket path",
                    v.get_ref()
                );
                c.at(v, "scaling.sockets", msg);
                None
            }
        })
        .collect();
    if let Some(v) = s
        .scale_down
        .as_ref()
        .filter(|v| server == ServerKind::Unicorn && *v.get_ref() == ScaleDown::Freeze)
    {
        let msg = "Unicorn's master kills a worker whose heartbeat stops for its `timeout`, and a frozen worker's stops: use scale_down = \"stop\" (TTOU to the master)".to_string();
        c.at(v, "scaling.scale_down", msg);
    }
    ScalingPolicy {
        min_workers: min,
        max_workers: max,
        spare_idle: value(&s.spare_idle, d.spare_idle),
        grow_backlog: grow,
        shrink_backlog: shrink,
        step_up: value(&s.step_up, d.step_up),
        step_down: value(&s.step_down, d.step_down),
        cooldown_up: value(&s.cooldown_up, d.cooldown_up),
        cooldown_down: value(&s.cooldown_down, d.cooldown_down),
        scale_down: value(&s.scale_down, d.scale_down),
        load: value(&s.load, d.load),
        concurrency: s
            .concurrency
            .as_ref()
            .filter(|v| within(c, v, "scaling.concurrency", MAX_CONCURRENCY))
            .map(|v| *v.get_ref()),
        sockets,
    }
}

/// The worker counts, each within its bounds and none above max_workers.
fn check_counts(c: &mut Checker, s: &ScalingFrag, table: Range<usize>, min: u32, max: u32) {
    let max_ok = match &s.max_workers {
        Some(m) => within(c, m, "scaling.max_workers", MAX_WORKERS),
        None => {
            let e = c.src.error_at(
                Some(table.start..table.start),
                Some("scaling.max_workers"),
                "missing: the most workers to run",
            );
            c.errors.push(e);
            false
        }
    };
    if let Some(m) = &s.min_workers {
        if *m.get_ref() == 0 {
            c.at(m, "scaling.min_workers", "must be at least 1".into());
        } else if max_ok && min > max {
            let msg = format!("min_workers ({min}) must not be above max_workers ({max})");
            c.at(m, "scaling.min_workers", msg);
        }
    }
    for (v, name) in [(&s.step_up, "step_up"), (&s.step_down, "step_down")] {
        let Some(v) = v else { continue };
        if within(c, v, &format!("scaling.{name}"), MAX_STEP) && max_ok {
            not_above_max(c, v, name, max);
        }
    }
    if let Some(v) = s.spare_idle.as_ref().filter(|_| max_ok) {
        not_above_max(c, v, "spare_idle", max);
    }
}

/// Whether `v` is between 1 and `most`; an error at it if not.
fn within(c: &mut Checker, v: &Spanned<u32>, key: &str, most: u32) -> bool {
    let n = *v.get_ref();
    let ok = (1..=most).contains(&n);
    if !ok {
        c.at(v, key, format!("must be between 1 and {most} (it is {n})"));
    }
    ok
}

fn not_above_max(c: &mut Checker, v: &Spanned<u32>, name: &str, max: u32) {
    let n = *v.get_ref();
    if n > max {
        let msg = format!("{name} ({n}) must not be above max_workers ({max})");
        c.at(v, &format!("scaling.{name}"), msg);
    }
}

fn socket_spec(text: &str) -> Option<SocketSpec> {
    if let Ok(addr) = text.parse() {
        return Some(SocketSpec::Tcp(addr));
    }
    let path = Path::new(text);
    path.is_absolute()
        .then(|| SocketSpec::Unix(path.to_path_buf()))
}
