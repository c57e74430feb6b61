//! Crash bookkeeping of one replica: how often it was restarted, how it last
//! ended, and when it may be started again. Restarts back off exponentially
//! (from [`FIRST_BACKOFF`], doubling to [`MAX_BACKOFF`], with jitter, by
//! `lb_model::backoff`), so a replica that keeps crashing does not keep the
//! engine busy.

use std::time::Duration;

use lb_model::backoff::Backoff;
use tokio::time::Instant;

use crate::runtime::Exit;

/// The wait after the first restart (or failed create).
pub(super) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The ceiling of the wait.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Crash bookkeeping of one replica.
#[derive(Debug)]
pub(super) struct Crashes {
    /// Restarts after a crash (starting a created container is none).
    pub restarts: u32,
    /// How the container last ended.
    pub last_exit: Option<Exit>,
    /// No start before this.
    pub retry_at: Option<Instant>,
    /// The container whose exit `last_exit` is, read since lb last started
    /// it: while backing off, it is not inspected again.
    pub inspected: Option<String>,
    /// Why its container is being stopped for failing its health checks:
    /// the restart that follows takes it as its reason.
    pub stopping_unhealthy: Option<String>,
    /// Why the last restart was for failing health checks (`None` when it
    /// was for an exit).
    pub unhealthy: Option<String>,
    backoff: Backoff,
}

impl Default for Crashes {
    fn default() -> Self {
        Self {
            restarts: 0,
            last_exit: None,
            retry_at: None,
            inspected: None,
            stopping_unhealthy: None,
            unhealthy: None,
            backoff: Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        }
    }
}

impl Crashes {
    /// Whether a start must still wait at `now`.
    pub fn backing_off(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|at| at > now)
    }

    /// A start (or a failed attempt) at `now`: the next waits out one more
    /// step of the backoff. Answers when it may come.
    pub fn hold_off(&mut self, now: Instant) -> Instant {
        let at = now + self.backoff.next_delay();
        self.retry_at = Some(at);
        at
    }
}

/// The message of a running replica last restarted for failing its checks.
pub(super) fn unhealthy_message(why: &str) -> String {
    format!("restarted: unhealthy ({why})")
}

/// The message of a replica waiting out its backoff.
pub(super) fn backoff_message(exit: &Exit) -> &'static str {
    if exit.oom_killed {
        "killed: out of memory"
    } else {
        "exited; restarting with backoff"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_one_second_to_a_minute() {
        let mut c = Crashes::default();
        let now = Instant::now();
        assert!(!c.backing_off(now), "a new replica starts at once");
        for base in [1, 2, 4, 8, 16, 32, 60, 60, 60] {
            let base = Duration::from_secs(base);
            let wait = c.hold_off(now) - now;
            // Jitter adds up to half again, so nodes do not retry in step.
            assert!(
                base <= wait && wait <= base + base / 2,
                "waited {wait:?} for a base of {base:?}"
            );
            assert!(c.backing_off(now));
            assert!(c.backing_off(now + wait - Duration::from_millis(1)));
            assert!(!c.backing_off(now + wait));
        }
    }

    #[test]
    fn the_message_says_why() {
        let oom = Exit {
            code: Some(137),
            oom_killed: true,
        };
        assert_eq!(backoff_message(&oom), "killed: out of memory");
        assert_eq!(
            backoff_message(&Exit::default()),
            "exited; restarting with backoff"
        );
    }
}
