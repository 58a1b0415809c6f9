//! When to replace a worker that died unexpectedly: exponential backoff, capped, reset after a
//! stable run, and an optional limit on restarts in a window (pm2's `exp_backoff_restart_delay`
//! and `max_restarts`). Kept per place, so one crash-looping place neither slows nor stops the
//! others (pm2 and Kubernetes' `CrashLoopBackOff` count per process). Pure logic over instants,
//! so it is tested without processes or clocks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The respawn settings ([`Cluster::respawn`](crate::Cluster::respawn)), applied to each place
/// on its own: the backoff and the restart limit of a place count only that place's deaths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespawnPolicy {
    /// Whether dead workers are replaced at all.
    pub enabled: bool,
    /// The first delay; each quick death in a row (in one place) doubles it.
    pub initial_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// A worker that lived this long resets its place's delay to `initial_delay`.
    pub stable_after: Duration,
    /// `None` (the default): a place whose workers keep dying is retried for ever, every
    /// `max_delay` at most, while the other places serve. `Some(n)`: after `n` respawns of
    /// one place within `window`, that place stops being respawned
    /// ([`Event::RespawnHalted`](crate::Event::RespawnHalted)); the others go on.
    pub max_restarts: Option<usize>,
    /// The window for `max_restarts`.
    pub window: Duration,
}

impl Default for RespawnPolicy {
    fn default() -> Self {
        RespawnPolicy {
            enabled: true,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(15),
            stable_after: Duration::from_secs(30),
            max_restarts: None,
            window: Duration::from_secs(60),
        }
    }
}

/// The decision for one death.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Respawn after this delay.
    After(Duration),
    /// Stop respawning, for this reason.
    Halt(String),
}

/// The running state: recent respawns and the current backoff step.
#[derive(Debug, Default)]
pub(crate) struct Respawner {
    step: u32,
    recent: VecDeque<Instant>,
    halted: Option<String>,
}

impl Respawner {
    /// A worker that lived `uptime` died unexpectedly at `now`.
    pub(crate) fn on_death(
        &mut self,
        policy: &RespawnPolicy,
        now: Instant,
        uptime: Duration,
    ) -> Decision {
        if let Some(reason) = &self.halted {
            return Decision::Halt(reason.clone());
        }
        while self.recent.front().is_some_and(|&t| now.duration_since(t) > policy.window) {
            self.recent.pop_front();
        }
        if policy.max_restarts.is_some_and(|max| self.recent.len() >= max) {
            let reason = format!(
                "{} respawns within {:?}: workers keep dying, not respawning any more",
                self.recent.len(),
                policy.window
            );
            self.halted = Some(reason.clone());
            return Decision::Halt(reason);
        }
        if uptime >= policy.stable_after {
            self.step = 0;
        }
        let factor = 1u32.checked_shl(self.step).unwrap_or(u32::MAX);
        let delay = policy.initial_delay.saturating_mul(factor).min(policy.max_delay);
        self.step = self.step.saturating_add(1);
        self.recent.push_back(now);
        Decision::After(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_up_to_the_cap_and_reset_after_a_stable_run() {
        let policy = RespawnPolicy {
            max_delay: ms(1000),
            max_restarts: Some(100),
            stable_after: ms(5000),
            ..RespawnPolicy::default()
        };
        let mut r = Respawner::default();
        let start = Instant::now();
        let quick = ms(10);
        let delays: Vec<Decision> =
            (0..6).map(|i| r.on_death(&policy, start + ms(i * 10), quick)).collect();
        let expected = [100, 200, 400, 800, 1000, 1000].map(|d| Decision::After(ms(d)));
        assert_eq!(delays, expected);
        // A worker that lived past `stable_after` starts the sequence again.
        assert_eq!(r.on_death(&policy, start + ms(100), ms(5000)), Decision::After(ms(100)));
        assert_eq!(r.on_death(&policy, start + ms(110), quick), Decision::After(ms(200)));
    }

    #[test]
    fn too_many_restarts_in_the_window_halt_for_good() {
        let policy =
            RespawnPolicy { max_restarts: Some(3), window: ms(1000), ..RespawnPolicy::default() };
        let mut r = Respawner::default();
        let t = Instant::now();
        for i in 0..3 {
            assert!(matches!(r.on_death(&policy, t + ms(i), ms(1)), Decision::After(_)));
        }
        let Decision::Halt(reason) = r.on_death(&policy, t + ms(3), ms(1)) else {
            panic!("no halt")
        };
        assert!(reason.contains("3 respawns within"), "{reason}");
        // Halted stays halted, even after the window.
        assert!(matches!(r.on_death(&policy, t + ms(5000), ms(1)), Decision::Halt(_)));
    }

    #[test]
    fn without_a_limit_a_place_is_retried_for_ever_at_the_capped_delay() {
        let policy = RespawnPolicy { max_delay: ms(800), ..RespawnPolicy::default() };
        let mut r = Respawner::default();
        let t = Instant::now();
        let decisions: Vec<Decision> =
            (0..1000).map(|i| r.on_death(&policy, t + ms(i), ms(1))).collect();
        assert!(decisions.iter().all(|d| matches!(d, Decision::After(_))), "never halts");
        assert_eq!(decisions.last(), Some(&Decision::After(ms(800))), "capped");
    }

    #[test]
    fn restarts_older_than_the_window_do_not_count() {
        let policy =
            RespawnPolicy { max_restarts: Some(2), window: ms(1000), ..RespawnPolicy::default() };
        let mut r = Respawner::default();
        let t = Instant::now();
        assert!(matches!(r.on_death(&policy, t, ms(1)), Decision::After(_)));
        assert!(matches!(r.on_death(&policy, t + ms(10), ms(1)), Decision::After(_)));
        // Both earlier restarts are out of the window now.
        assert!(matches!(r.on_death(&policy, t + ms(2000), ms(1)), Decision::After(_)));
    }
}
