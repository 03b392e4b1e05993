//! Workers that die right after they start (a broken deploy, a crash at
//! import, a master respawning a worker that cannot live) would otherwise
//! cost one `StartTransientUnit` each, as fast as the master respawns
//! them, plus a log line each: the daemon would hammer PID 1 exactly when
//! the host is already in trouble. After [`STREAK`] such deaths in a row,
//! new workers of that app are placed only once they have lived a while
//! (1 s, doubling up to 30 s while it goes on); workers that die sooner
//! cost nothing. One worker placed since then that lives [`STABLE`] ends
//! it.

use std::time::{Duration, Instant};

/// A worker that dies this soon after it was placed died young.
pub const YOUNG: Duration = Duration::from_secs(1);
/// Young deaths in a row that start (or lengthen) the delay.
pub const STREAK: u32 = 5;
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(30);
/// A worker placed under the delay that lives this long ends it.
pub const STABLE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default)]
pub struct YoungDeaths {
    streak: u32,
    /// How old a new worker must be before it is placed; zero normally.
    pub delay: Duration,
    /// When the delay started.
    pub since: Option<Instant>,
    /// When the delay last changed: workers placed before say nothing of
    /// it (8 placements under way that all fail as an app stops must not
    /// double it four times over).
    changed: Option<Instant>,
}

impl YoungDeaths {
    /// A worker placed (or whose placement began) at `placed_at` died
    /// `lived` after it was placed (zero: during its placement). Returns
    /// the new delay when it changed.
    pub fn died(&mut self, lived: Duration, placed_at: Instant) -> Option<Duration> {
        if lived >= YOUNG {
            self.streak = 0;
            return None;
        }
        if self.changed.is_some_and(|c| placed_at < c) {
            return None;
        }
        self.streak += 1;
        if self.streak < STREAK {
            return None;
        }
        self.streak = 0;
        let next = match self.delay {
            d if d.is_zero() => FIRST_DELAY,
            d => (d * 2).min(MAX_DELAY),
        };
        if next == self.delay {
            return None;
        }
        self.delay = next;
        self.since.get_or_insert_with(Instant::now);
        self.changed = Some(Instant::now());
        Some(next)
    }

    /// A worker placed at `placed_at` is still alive: ends the delay if it
    /// was placed under it and has lived [`STABLE`]. True when it ended.
    pub fn alive(&mut self, placed_at: Instant) -> bool {
        let ended = self
            .since
            .is_some_and(|since| placed_at >= since && placed_at.elapsed() >= STABLE);
        if ended {
            *self = Self::default();
        }
        ended
    }
}

/// Notes that a worker of app `name` died `lived` after its placement,
/// unless the daemon itself asked it to go; logs when placement is held
/// back.
pub(super) fn note_death(
    young: &mut YoungDeaths,
    name: &str,
    pid: u32,
    (placed_at, lived): (Instant, Duration),
    asked: bool,
) {
    if asked {
        return;
    }
    if let Some(delay) = young.died(lived, placed_at) {
        tracing::warn!(
            app = name,
            worker_pid = pid,
            "workers of {name} die right after they start ({STREAK} in a row, the last {lived:?} after placement): placing new ones only once they have lived {delay:?}"
        );
    }
}

/// Ends the delay of app `name` when one of its workers, placed at
/// `placed`, lives again.
pub(super) fn note_survivors(
    young: &mut YoungDeaths,
    name: &str,
    mut placed: impl Iterator<Item = Instant>,
) {
    if young.since.is_none() {
        return;
    }
    if placed.any(|at| young.alive(at)) {
        tracing::info!(
            app = name,
            "workers of {name} live again: placing new ones at once"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_young_deaths_start_a_delay_that_doubles_up_to_30_s() {
        let mut y = YoungDeaths::default();
        for _ in 0..4 {
            assert_eq!(y.died(Duration::from_millis(100), Instant::now()), None);
        }
        assert_eq!(
            y.died(Duration::ZERO, Instant::now()),
            Some(Duration::from_secs(1))
        );
        let mut delays = vec![];
        for _ in 0..40 {
            delays.extend(y.died(Duration::from_millis(10), Instant::now()));
        }
        let secs: Vec<u64> = delays.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 30]);
    }

    #[test]
    fn a_worker_that_lives_breaks_the_streak() {
        let mut y = YoungDeaths::default();
        for _ in 0..4 {
            y.died(Duration::ZERO, Instant::now());
        }
        y.died(Duration::from_secs(5), Instant::now());
        for _ in 0..4 {
            assert_eq!(y.died(Duration::ZERO, Instant::now()), None);
        }
        assert!(y.delay.is_zero());
    }

    #[test]
    fn deaths_of_workers_placed_before_the_delay_changed_do_not_lengthen_it() {
        let mut y = YoungDeaths::default();
        let before = Instant::now();
        for _ in 0..5 {
            y.died(Duration::ZERO, before);
        }
        assert_eq!(y.delay, Duration::from_secs(1));
        // Placements begun before the delay, all failing at once.
        for _ in 0..20 {
            assert_eq!(y.died(Duration::ZERO, before), None);
        }
        assert_eq!(y.delay, Duration::from_secs(1));
        // Workers placed under the delay that still die young lengthen it.
        let mut delays = vec![];
        for _ in 0..5 {
            delays.extend(y.died(Duration::ZERO, Instant::now()));
        }
        assert_eq!(delays, vec![Duration::from_secs(2)]);
    }

    #[test]
    fn a_stable_worker_placed_under_the_delay_ends_it() {
        let mut y = YoungDeaths::default();
        let before = Instant::now().checked_sub(Duration::from_secs(60)).unwrap();
        for _ in 0..5 {
            y.died(Duration::ZERO, Instant::now());
        }
        // Placed before the delay began (an old worker): no proof.
        assert!(!y.alive(before));
        // Placed under the delay, but only just.
        assert!(!y.alive(Instant::now()));
        assert!(!y.delay.is_zero());
        let since = y.since.unwrap();
        // Pretend it was placed then and lived STABLE since.
        let mut aged = y.clone();
        aged.since = since.checked_sub(STABLE * 2);
        assert!(aged.alive(since.checked_sub(STABLE).unwrap()));
        assert!(aged.delay.is_zero() && aged.since.is_none());
    }
}
