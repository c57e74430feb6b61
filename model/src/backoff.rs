//! Retry delays: exponential from a first delay up to a ceiling, each with up
//! to half again of random jitter so that many clients retrying the same
//! failure (nodes after an API restart, watches after an etcd election) do
//! not come back in step. The one backoff rule of lb; callers sleep on the
//! delays themselves, so this stays free of any runtime.

use std::time::Duration;

/// The delays of one retry sequence.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay before the next attempt (base plus jitter); the base doubles
    /// for the attempt after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base + jitter(base)
    }

    /// The base delay the next call will start from, without jitter.
    pub fn current(&self) -> Duration {
        self.next
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Up to half of `base`, at random.
fn jitter(base: Duration) -> Duration {
    let half = base.as_millis() as u64 / 2;
    Duration::from_millis(rand::random::<u64>() % (half + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_ceiling_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let bases = [100, 200, 400, 700, 700];
        for base in bases {
            let d = b.next_delay().as_millis() as u64;
            assert!(
                (base..=base + base / 2).contains(&d),
                "delay {d} ms outside {base}..={} ms",
                base + base / 2
            );
        }
        b.reset();
        assert_eq!(b.current(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_clients() {
        let delays: std::collections::HashSet<u128> = (0..50)
            .map(|_| {
                Backoff::new(Duration::from_secs(1), Duration::from_secs(1))
                    .next_delay()
                    .as_millis()
            })
            .collect();
        assert!(
            delays.len() > 10,
            "50 clients, {} distinct delays",
            delays.len()
        );
    }
}
