//! Settling deploys: after a pass, each service that needed no change has
//! its current deploy record (`lb_model::Deploy`, written by whoever started
//! the generation) marked `rolled_out` once every wanted replica of the
//! generation serves and no old one is left, or `halted` with the rollout's
//! reason. The scheduler is the one that knows; the write is fenced by its
//! leader key like every other.
//!
//! A settled generation is remembered, so a steady service costs no store
//! read; one still rolling out is looked at again on its next event, or at
//! the moment a running replica would count as up (`lb_model::status`).

use std::time::{Duration, Instant};

use lb_model::keys::Keys;
use lb_model::status::{self, CRASH_WINDOW_SECS, MIN_UP_SECS};
use lb_model::{Deploy, DeployOutcome, ReplicaState, ServiceState};
use lb_store::{encode, Compare, Op, Shared, Txn};

use crate::state::{ServiceKey, State};

/// How a halted rollout's reason begins (see `reconcile`).
const HALTED: &str = "rollout halted";

/// What settling did: the highest revision written, and when to look
/// again at a deploy still in progress.
#[derive(Debug, Default)]
pub struct Settled {
    /// The highest store revision written (0: none).
    pub revision: i64,
    /// The earliest moment a deploy in progress may settle without an
    /// event.
    pub wake: Option<Instant>,
}

/// Settles the current deploy of each of `steady` (services the pass
/// needed to change nothing for).
pub async fn settle(
    store: &Shared,
    keys: &Keys,
    fence: &Compare,
    state: &mut State,
    steady: Vec<ServiceKey>,
) -> lb_store::Result<Settled> {
    let mut done = Settled::default();
    let now = lb_model::now();
    for key in steady {
        let Some(records) = state.services.get(&key) else {
            continue;
        };
        let (Some(meta), Some(spec)) = (&records.meta, &records.spec) else {
            continue;
        };
        let generation = meta.value.generation;
        if state.deploys_settled.get(&key) == Some(&generation)
            || spec.value.state == ServiceState::Paused
        {
            continue;
        }
        let placed: Vec<_> = state
            .replicas
            .get(&key)
            .map(|l| {
                l.values()
                    .map(|p| (&p.replica, p.status.as_ref()))
                    .collect()
            })
            .unwrap_or_default();
        let halted = placed
            .iter()
            .filter(|(r, _)| r.generation == generation)
            .find_map(|(r, _)| r.reason.as_deref().filter(|w| w.starts_with(HALTED)));
        let old = placed.iter().filter(|(r, _)| r.generation != generation);
        let summary = status::summarize(&spec.value, generation, &placed, now);
        let outcome = match halted {
            Some(reason) => Some((DeployOutcome::Halted, reason.to_owned())),
            None if old.count() == 0
                && matches!(
                    summary.state,
                    status::State::Running | status::State::Stopped
                ) =>
            {
                Some((DeployOutcome::RolledOut, String::new()))
            }
            None => None,
        };
        let Some((outcome, reason)) = outcome else {
            // Running replicas count as up after a moment: look again then.
            let up_at = placed
                .iter()
                .filter(|(r, _)| r.generation == generation)
                .filter_map(|(_, s)| s.filter(|s| s.state == ReplicaState::Running))
                .map(|s| {
                    let wait = if s.restarts > 0 {
                        CRASH_WINDOW_SECS
                    } else {
                        MIN_UP_SECS
                    };
                    s.updated + wait + 1
                })
                .filter(|at| *at > now)
                .min();
            if let Some(at) = up_at {
                let at = Instant::now() + Duration::from_secs((at - now) as u64);
                state.timed.insert(key.clone());
                done.wake = Some(done.wake.map_or(at, |w| w.min(at)));
            }
            continue;
        };
        let record_key = keys.deploy(&key.0, &key.1, generation);
        let Some(kv) = store.get(&record_key).await? else {
            // No record (a service older than deploy history).
            state.deploys_settled.insert(key, generation);
            continue;
        };
        let Ok(mut deploy) = serde_json::from_slice::<Deploy>(&kv.value) else {
            state.deploys_settled.insert(key, generation);
            continue;
        };
        if deploy.outcome.settled() {
            state.deploys_settled.insert(key, generation);
            continue;
        }
        deploy.settle(outcome, reason, now);
        let txn = Txn::new()
            .when(fence.clone())
            .when(Compare::ModRevision(record_key.clone(), kv.mod_revision))
            .then(Op::put(record_key, encode(&deploy)));
        let resp = store.txn(txn).await?;
        if resp.succeeded {
            tracing::info!(service = %key.1, generation, outcome = ?deploy.outcome, "deploy settled");
            done.revision = done.revision.max(resp.revision);
            state.deploys_settled.insert(key, generation);
        }
    }
    Ok(done)
}
