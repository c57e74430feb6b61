//! Deploy records (`lb_model::Deploy`) as their writers keep them: whoever
//! starts a new generation of a service adds its record in the same
//! transaction, through [`start`].

use lb_model::keys::Keys;
use lb_model::{Deploy, DeployOutcome, KEEP_DEPLOYS};

use crate::{encode, Compare, Op, Result, Store};

/// The compares and writes that start `deploy` for a service whose
/// generation was `previous`: its record; the previous deploy marked
/// `superseded` if it had not settled (compared, so a scheduler settling it
/// at the same moment makes the caller's transaction fail and retry); and
/// the record [`KEEP_DEPLOYS`] generations older dropped.
pub async fn start(
    store: &dyn Store,
    keys: &Keys,
    (pid, sid): (&str, &str),
    previous: u64,
    deploy: &Deploy,
) -> Result<(Vec<Compare>, Vec<Op>)> {
    let mut compares = Vec::new();
    let mut ops = vec![Op::put(
        keys.deploy(pid, sid, deploy.generation),
        encode(deploy),
    )];
    let before = keys.deploy(pid, sid, previous);
    if let Some(kv) = store.get(&before).await? {
        if let Ok(mut old) = serde_json::from_slice::<Deploy>(&kv.value) {
            if !old.outcome.settled() {
                let why = format!("{} by {}", deploy.cause, deploy.by);
                old.settle(DeployOutcome::Superseded, why, deploy.started);
                compares.push(Compare::ModRevision(before.clone(), kv.mod_revision));
                ops.push(Op::put(before, encode(&old)));
            }
        }
    }
    if let Some(gone) = deploy.generation.checked_sub(KEEP_DEPLOYS) {
        ops.push(Op::delete(keys.deploy(pid, sid, gone)));
    }
    Ok((compares, ops))
}
