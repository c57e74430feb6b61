//! Load balancing: round-robin over a route's replicas, one counter per
//! service, and the replica to retry on when connecting to the first fails.

use std::collections::HashMap;
use std::sync::Mutex;

/// Round-robin counters, one per service.
#[derive(Debug, Default)]
pub struct Balancer {
    next: Mutex<HashMap<String, usize>>,
}

impl Balancer {
    /// The replicas (indices into `n`) to try for one request of `service`,
    /// in order: the next in turn, then, when there are two or more, the
    /// one after it for a retry.
    pub fn pick(&self, service: &str, n: usize) -> Vec<usize> {
        if n == 0 {
            return vec![];
        }
        let first = match self.next.lock() {
            Ok(mut next) => {
                let counter = match next.get_mut(service) {
                    Some(c) => c,
                    None => next.entry(service.to_string()).or_default(),
                };
                let first = *counter % n;
                *counter = counter.wrapping_add(1);
                first
            }
            Err(_) => 0,
        };
        if n == 1 {
            vec![first]
        } else {
            vec![first, (first + 1) % n]
        }
    }

    /// Forgets services that are no longer routed.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut next) = self.next.lock() {
            next.retain(|k, _| keep(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_take_turns_per_service() {
        let b = Balancer::default();
        let firsts: Vec<usize> = (0..6).map(|_| b.pick("a", 3)[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
        // Another service's traffic does not skew the turns of the first.
        assert_eq!(b.pick("b", 2), [0, 1]);
        assert_eq!(b.pick("a", 3), [0, 1]);
        assert_eq!(b.pick("a", 3), [1, 2]);
        assert_eq!(b.pick("a", 3), [2, 0]);
    }

    #[test]
    fn one_replica_has_no_retry_and_none_has_nothing() {
        let b = Balancer::default();
        assert_eq!(b.pick("a", 1), [0]);
        assert!(b.pick("a", 0).is_empty());
        b.retain(|_| false);
        assert_eq!(b.pick("a", 2), [0, 1]);
    }
}
