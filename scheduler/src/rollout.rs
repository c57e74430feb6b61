//! Rolling a service to a new generation, one step per pass (pure logic, no
//! IO). A new replica goes where there is room (surge: no replica down); a
//! node that has no room replaces an old replica in place, one at a time and
//! never leaving fewer than `replicas - max_unavailable` running (the
//! spec's `max_unavailable`, by default [`MAX_UNAVAILABLE`]); an old
//! replica that holds a fixed host port the new one needs is stopped first
//! and replaced once its node reports it stopped. A new replica that fails
//! halts the rollout; old replicas keep serving.

use crate::placement::{Nodes, Request};

/// How many replicas a replacement may take down at once, unless the
/// service's `max_unavailable` says otherwise. It also bounds how many new
/// replicas start at once.
pub const MAX_UNAVAILABLE: usize = 1;

/// A replica of the service as a rollout sees it.
#[derive(Debug, Clone)]
pub struct Member<'a> {
    /// Replica id.
    pub id: &'a str,
    /// Its node, when placed.
    pub node: Option<&'a str>,
    /// Of the generation being rolled out.
    pub new: bool,
    /// Serving: a new replica healthy (or, without a health check, running
    /// long enough) and never restarted; an old one running, healthy or
    /// unchecked, and not told to stop. Old replicas go only as new ones
    /// are ready, so none is removed before its successor is healthy.
    pub ready: bool,
    /// A new replica that restarted, exited, turned unhealthy or never
    /// became healthy in time: the rollout halts.
    pub failing: bool,
    /// An old replica told to stop so its place can be taken.
    pub draining: bool,
    /// Its container does not run (stopped, exited, never started): it holds
    /// no host port.
    pub stopped: bool,
    /// What it holds on its node (its own generation's request).
    pub taken: Request<'a>,
}

/// One decision of a rollout step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Place a new replica (the pending one named, or a fresh one) on a node
    /// that has room.
    Place {
        /// The pending new replica, `None` for a fresh one.
        replica: Option<String>,
        /// The node.
        node: String,
    },
    /// Remove an old replica and place the new one on the room it frees,
    /// in one write.
    Replace {
        /// The old replica.
        old: String,
        /// The pending new replica, `None` for a fresh one.
        replica: Option<String>,
        /// The node.
        node: String,
    },
    /// Tell an old replica's node to stop it (its host port is needed).
    Drain {
        /// The old replica.
        old: String,
    },
    /// Remove an old replica (a new one serves in its stead, or it never
    /// ran).
    Remove {
        /// The old replica.
        old: String,
    },
    /// The new replica waits, and says why.
    Pending {
        /// The pending new replica, `None` for a fresh one.
        replica: Option<String>,
        /// Why it waits.
        reason: String,
    },
}

/// The next step of a rollout of a service wanting `desired` replicas of
/// `request`, never leaving fewer than `desired - max_unavailable` serving
/// and starting at most `max_unavailable` new replicas at once; `members`
/// are its replicas, oldest first. Takes what it places from `nodes`. Empty
/// when halted or waiting for new replicas to become ready.
pub fn step(
    nodes: &mut Nodes,
    request: &Request<'_>,
    desired: usize,
    max_unavailable: usize,
    members: &[Member<'_>],
) -> Vec<Action> {
    let max_unavailable = max_unavailable.max(1);
    let (new, old): (Vec<&Member>, Vec<&Member>) = members.iter().partition(|m| m.new);
    if new.iter().any(|m| m.failing) {
        return Vec::new();
    }
    let mut actions = Vec::new();
    // Old replicas that were never placed hold nothing and serve nothing.
    let (placed, unplaced): (Vec<&Member>, Vec<&Member>) =
        old.into_iter().partition(|m| m.node.is_some());
    for m in &unplaced {
        actions.push(Action::Remove {
            old: m.id.to_owned(),
        });
    }
    let mut old = placed;
    // Those not serving go first.
    old.sort_by_key(|m| m.ready && !m.draining);
    let ready_new = new.iter().filter(|m| m.ready).count();
    // Old replicas go as new ones serve.
    let excess = (ready_new + old.len()).saturating_sub(desired);
    if excess > 0 {
        for m in old.iter().take(excess) {
            actions.push(Action::Remove {
                old: m.id.to_owned(),
            });
        }
        return actions;
    }
    // At most `max_unavailable` new replicas starting at once (one by
    // default).
    let starting = new.iter().filter(|m| m.node.is_some() && !m.ready).count();
    if starting >= max_unavailable {
        return actions;
    }
    let slot = new
        .iter()
        .find(|m| m.node.is_none())
        .map(|m| m.id.to_owned());
    if slot.is_none() && new.len() >= desired {
        return actions;
    }
    // Surge where there is room.
    let why = match nodes.choose(request) {
        Ok(n) => {
            let node = n.id.clone();
            nodes.take(&node, request);
            actions.push(Action::Place {
                replica: slot,
                node,
            });
            return actions;
        }
        Err(why) => why,
    };
    // A replica told to stop is awaited before anything else goes down.
    if let Some(m) = old.iter().find(|m| m.draining && !m.stopped) {
        actions.push(Action::Pending {
            replica: slot,
            reason: format!(
                "{why}; replacing replica {} in place: waiting for it to stop",
                m.id
            ),
        });
        return actions;
    }
    // Otherwise replace in place.
    let serving = ready_new + old.iter().filter(|m| m.ready && !m.draining).count();
    let floor = desired.saturating_sub(max_unavailable);
    let mut held_by_floor = false;
    for m in &old {
        let Some(node) = m.node else { continue };
        if m.ready && !m.draining && serving <= floor {
            held_by_floor = true;
            continue;
        }
        nodes.release(node, &m.taken);
        let fits = nodes.choose(request).map(|n| n.id.clone());
        let Ok(target) = fits else {
            nodes.take(node, &m.taken);
            continue;
        };
        let shares_port = request.ports.iter().any(|p| m.taken.ports.contains(p));
        if shares_port && !m.stopped {
            // Stop first: the port is free only once its container is.
            nodes.take(node, &m.taken);
            actions.push(Action::Drain {
                old: m.id.to_owned(),
            });
            actions.push(Action::Pending {
                replica: slot,
                reason: format!(
                    "{why}; replacing replica {} in place: waiting for it to stop",
                    m.id
                ),
            });
            return actions;
        }
        nodes.take(&target, request);
        actions.push(Action::Replace {
            old: m.id.to_owned(),
            replica: slot,
            node: target,
        });
        return actions;
    }
    let reason = if held_by_floor {
        format!("{why}; replacing an old replica in place would leave fewer than {floor} running")
    } else {
        why
    };
    actions.push(Action::Pending {
        replica: slot,
        reason,
    });
    actions
}

#[cfg(test)]
mod tests;
