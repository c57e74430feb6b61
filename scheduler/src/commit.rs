//! Writing a pass's decisions: units packed into transactions within the
//! store's limits (etcd's defaults: 128 operations, 1.5 MiB a request), many
//! in flight at once. A transaction holding several services that fails is
//! retried service by service, so one conflicting or refused service never
//! holds up the others; a service the store refuses (a record too large)
//! is retried replica by replica, and a placement that cannot be written
//! says why on its replica.

use futures::StreamExt;
use lb_model::Replica;
use lb_store::{Compare, Error, Limits, Op, Shared, Txn};

use crate::reconcile::{Plan, Unit};
use crate::state::ServiceKey;

/// Transactions in flight at once.
const IN_FLIGHT: usize = 16;

/// What a commit did.
#[derive(Debug, Default)]
pub struct Batch {
    /// Replicas placed.
    pub placed: usize,
    /// Replicas removed.
    pub removed: usize,
    /// Services whose compares failed (changed meanwhile).
    pub conflicts: Vec<ServiceKey>,
    /// Services the store refused.
    pub refused: Vec<ServiceKey>,
    /// The highest revision written.
    pub revision: i64,
}

/// A transaction and what it carries: (plan, units) pairs.
struct Pack {
    txn: Txn,
    size: usize,
    members: Vec<(usize, Vec<usize>)>,
}

impl Pack {
    fn new(fence: &Compare) -> Self {
        let txn = Txn::new().when(fence.clone());
        Self {
            size: Limits::size(&txn),
            txn,
            members: Vec::new(),
        }
    }

    /// Adds a unit of plan `p` if it fits (or if the pack is empty: a unit
    /// too large alone is sent alone, and refused).
    fn add(&mut self, limits: &Limits, plans: &[Plan], p: usize, u: usize) -> bool {
        let plan = &plans[p];
        let unit = &plan.units[u];
        let joined = self.members.last().is_some_and(|(last, _)| *last == p);
        let mut compares = unit.compares.len();
        let mut size: usize = unit
            .compares
            .iter()
            .map(Limits::compare_size)
            .sum::<usize>()
            + unit.ops.iter().map(Limits::op_size).sum::<usize>();
        if !joined {
            compares += plan.compares.len();
            size += plan
                .compares
                .iter()
                .map(Limits::compare_size)
                .sum::<usize>();
        }
        let fits = self.txn.compares.len() + compares <= limits.max_ops
            && self.txn.success.len() + unit.ops.len() <= limits.max_ops
            && self.size + size <= limits.max_bytes;
        if !fits && !self.members.is_empty() {
            return false;
        }
        if !joined {
            self.txn.compares.extend(plan.compares.iter().cloned());
            self.members.push((p, Vec::new()));
        }
        self.txn.compares.extend(unit.compares.iter().cloned());
        self.txn.success.extend(unit.ops.iter().cloned());
        self.size += size;
        if let Some((_, units)) = self.members.last_mut() {
            units.push(u);
        }
        true
    }
}

/// Packs the given units of the plans into transactions.
fn pack(
    limits: &Limits,
    fence: &Compare,
    plans: &[Plan],
    which: &[(usize, Vec<usize>)],
) -> Vec<Pack> {
    let mut packs = Vec::new();
    let mut current = Pack::new(fence);
    for (p, units) in which {
        for &u in units {
            if !current.add(limits, plans, *p, u) {
                packs.push(std::mem::replace(&mut current, Pack::new(fence)));
                current.add(limits, plans, *p, u);
            }
        }
    }
    if !current.members.is_empty() {
        packs.push(current);
    }
    packs
}

/// Whether the store refused the request itself (too many operations, too
/// large), as opposed to being unreachable.
fn refused(e: &Error) -> bool {
    matches!(e, Error::Invalid(_))
}

fn count(batch: &mut Batch, plans: &[Plan], members: &[(usize, Vec<usize>)], revision: i64) {
    for (p, units) in members {
        for &u in units {
            batch.placed += plans[*p].units[u].placed;
            batch.removed += plans[*p].units[u].removed;
        }
    }
    batch.revision = batch.revision.max(revision);
}

/// Writes the plans' units. Store errors other than a refusal end the
/// commit (the pass is redone once the store answers).
pub async fn commit(store: &Shared, fence: &Compare, plans: Vec<Plan>) -> lb_store::Result<Batch> {
    let limits = store.limits();
    let all: Vec<(usize, Vec<usize>)> = plans
        .iter()
        .enumerate()
        .map(|(p, plan)| (p, (0..plan.units.len()).collect()))
        .collect();
    let packs = pack(&limits, fence, &plans, &all);
    let mut results = futures::stream::iter(packs)
        .map(|pack| async move {
            let result = store.txn(pack.txn).await;
            (pack.members, result)
        })
        .buffer_unordered(IN_FLIGHT);
    let mut batch = Batch::default();
    let mut again: Vec<(usize, Vec<usize>)> = Vec::new();
    while let Some((members, result)) = results.next().await {
        match result {
            Ok(resp) if resp.succeeded => count(&mut batch, &plans, &members, resp.revision),
            Ok(_) if members.len() == 1 => {
                batch.conflicts.push(plans[members[0].0].service.clone())
            }
            Ok(_) => again.extend(members),
            Err(e) if refused(&e) => again.extend(members),
            Err(e) => return Err(e),
        }
    }
    drop(results);
    // Service by service: a failed merged transaction says nothing about
    // which of its services changed.
    let mut by_plan: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (p, units) in again {
        by_plan.entry(p).or_default().extend(units);
    }
    for (p, units) in by_plan {
        let mut conflict = false;
        let mut refusal = None;
        for pack in self::pack(&limits, fence, &plans, &[(p, units)]) {
            match store.txn(pack.txn).await {
                Ok(resp) if resp.succeeded => {
                    count(&mut batch, &plans, &pack.members, resp.revision)
                }
                Ok(_) => conflict = true,
                Err(e) if refused(&e) => {
                    // Unit by unit: what fits goes in, what cannot says why.
                    for (p, units) in &pack.members {
                        for &u in units {
                            match one(store, fence, &plans[*p], &plans[*p].units[u]).await {
                                Ok(Some(revision)) => {
                                    count(&mut batch, &plans, &[(*p, vec![u])], revision)
                                }
                                Ok(None) => conflict = true,
                                Err(e) if refused(&e) => {
                                    tracing::warn!(service = ?plans[*p].service, error = %e, "the store refused a placement");
                                    if let Some(replica) = &plans[*p].units[u].placing {
                                        let why = format!("cannot write the placement: {e}");
                                        let _ = pending(
                                            store,
                                            fence,
                                            &plans[*p],
                                            &plans[*p].units[u],
                                            replica,
                                            why,
                                        )
                                        .await;
                                    }
                                    refusal = Some(e.to_string());
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if refusal.is_some() {
            batch.refused.push(plans[p].service.clone());
        } else if conflict {
            batch.conflicts.push(plans[p].service.clone());
        }
    }
    Ok(batch)
}

/// Writes one unit alone; `None` when a compare failed.
async fn one(
    store: &Shared,
    fence: &Compare,
    plan: &Plan,
    unit: &Unit,
) -> lb_store::Result<Option<i64>> {
    let mut txn = Txn::new().when(fence.clone());
    txn.compares.extend(plan.compares.iter().cloned());
    txn.compares.extend(unit.compares.iter().cloned());
    txn.success.extend(unit.ops.iter().cloned());
    let resp = store.txn(txn).await?;
    Ok(resp.succeeded.then_some(resp.revision))
}

/// Records on a replica that could not be placed why.
async fn pending(
    store: &Shared,
    fence: &Compare,
    plan: &Plan,
    unit: &Unit,
    replica: &Replica,
    reason: String,
) -> lb_store::Result<()> {
    let Some(Op::Put { key, .. }) = unit.ops.first() else {
        return Ok(());
    };
    // Written once: the same reason again would be a change that wakes the
    // next pass, which would fail the same way, for ever.
    if unit.reason.as_deref() == Some(reason.as_str()) {
        return Ok(());
    }
    let replica = Replica {
        reason: Some(reason),
        node: None,
        ..replica.clone()
    };
    let record = Unit {
        compares: unit.compares.clone(),
        ops: vec![Op::put(
            key.clone(),
            serde_json::to_vec(&replica).unwrap_or_default(),
        )],
        ..Unit::default()
    };
    one(store, fence, plan, &record).await.map(|_| ())
}
