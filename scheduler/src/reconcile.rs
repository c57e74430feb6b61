//! One scheduling pass: read services, replicas and nodes from the cache,
//! decide per service, and write each service's changes in one transaction
//! fenced by the leader key (a deposed leader's writes fail) and by the
//! service's records (a service changed or deleted meanwhile is redone next
//! pass). Level-triggered: a pass only compares what is with what should
//! be, so a missed or repeated trigger changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use lb_pkg::ids::new_id;
use lb_pkg::keys::{Keys, Parsed};
use lb_pkg::model::{
    Assignment, Node, Replica, ReplicaState, ReplicaStatus, ServiceMeta, ServiceSpec, ServiceState,
};
use lb_pkg::store::{Compare, KeyValue, Op, Shared, StoreExt, Txn};

use crate::placement::{NodeView, Nodes, Request};

/// How long a new replica must run without a restart before a rolling
/// update counts it ready and removes an old one.
const MIN_READY_SECS: i64 = 3;

/// A replica as the pass sees it.
#[derive(Debug, Clone)]
struct Placed {
    replica: Replica,
    status: Option<ReplicaStatus>,
}

impl Placed {
    fn state(&self) -> ReplicaState {
        self.status
            .as_ref()
            .map_or(ReplicaState::Pending, |s| s.state)
    }
}

#[derive(Debug)]
struct Service {
    pid: String,
    meta: ServiceMeta,
    meta_revision: i64,
    spec: ServiceSpec,
    spec_revision: i64,
    replicas: Vec<Placed>,
}

/// The scheduler's memory between passes.
#[derive(Default)]
pub struct Memory {
    /// When each node was first seen not alive.
    dead_since: HashMap<String, Instant>,
}

/// What a pass did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Replicas placed on a node.
    pub placed: usize,
    /// Replicas removed.
    pub removed: usize,
    /// Services whose transaction lost a race (redone next pass).
    pub conflicts: usize,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key = %kv.key, error = %e, "skipping a damaged record");
            None
        }
    }
}

/// Runs one pass. `fence` is the leader key and its revision.
pub async fn pass(
    store: &Shared,
    keys: &Keys,
    fence: (&str, i64),
    grace: Duration,
    memory: &mut Memory,
) -> lb_pkg::store::Result<Outcome> {
    let (node_kvs, _) = store.list(&keys.nodes()).await?;
    let (project_kvs, _) = store.list(&keys.projects()).await?;

    // Nodes, with what is placed on them.
    let mut nodes: BTreeMap<String, NodeView> = BTreeMap::new();
    let mut alive: HashSet<String> = HashSet::new();
    let mut assignments: Vec<(String, String, KeyValue)> = Vec::new();
    for kv in &node_kvs {
        match keys.parse(&kv.key) {
            Some(Parsed::NodeMeta { nid }) => {
                if let Some(node) = decode::<Node>(kv) {
                    nodes.insert(
                        nid.to_owned(),
                        NodeView {
                            id: node.id,
                            name: node.name,
                            alive: false,
                            labels: node.labels,
                            memory: node.capacity.memory,
                            cpus: node.capacity.cpus,
                            used_memory: 0,
                            used_cpus: 0.0,
                            ports: HashSet::new(),
                            per_service: BTreeMap::new(),
                        },
                    );
                }
            }
            Some(Parsed::NodeAlive { nid }) => {
                alive.insert(nid.to_owned());
            }
            Some(Parsed::NodeReplica { nid, rid }) => {
                assignments.push((nid.to_owned(), rid.to_owned(), kv.clone()))
            }
            _ => {}
        }
    }
    let now = Instant::now();
    for (nid, node) in nodes.iter_mut() {
        node.alive = alive.contains(nid);
        if node.alive {
            memory.dead_since.remove(nid);
        } else {
            memory.dead_since.entry(nid.clone()).or_insert(now);
        }
    }
    let lost: HashSet<String> = memory
        .dead_since
        .iter()
        .filter(|(_, since)| now.duration_since(**since) >= grace)
        .map(|(nid, _)| nid.clone())
        .collect();

    // Services and their replicas.
    let mut services: BTreeMap<(String, String), Service> = BTreeMap::new();
    let mut metas: HashMap<(String, String), (ServiceMeta, i64)> = HashMap::new();
    let mut specs: HashMap<(String, String), (ServiceSpec, i64)> = HashMap::new();
    let mut replicas: HashMap<(String, String), Vec<Placed>> = HashMap::new();
    for kv in &project_kvs {
        match keys.parse(&kv.key) {
            Some(Parsed::ServiceMeta { pid, sid }) => {
                if let Some(m) = decode(kv) {
                    metas.insert((pid.into(), sid.into()), (m, kv.mod_revision));
                }
            }
            Some(Parsed::ServiceSpec { pid, sid }) => {
                if let Some(s) = decode(kv) {
                    specs.insert((pid.into(), sid.into()), (s, kv.mod_revision));
                }
            }
            Some(Parsed::Replica { pid, sid, .. }) => {
                if let Some(r) = decode(kv) {
                    replicas
                        .entry((pid.into(), sid.into()))
                        .or_default()
                        .push(Placed {
                            replica: r,
                            status: None,
                        });
                }
            }
            Some(Parsed::ReplicaStatus { pid, sid, rid }) => {
                if let Some(list) = replicas.get_mut(&(pid.to_owned(), sid.to_owned())) {
                    if let Some(p) = list.iter_mut().find(|p| p.replica.id == rid) {
                        p.status = decode(kv);
                    }
                }
            }
            _ => {}
        }
    }
    for (key, (meta, meta_revision)) in metas {
        let Some((spec, spec_revision)) = specs.remove(&key) else {
            continue;
        };
        services.insert(
            key.clone(),
            Service {
                pid: key.0.clone(),
                meta,
                meta_revision,
                spec,
                spec_revision,
                replicas: replicas.remove(&key).unwrap_or_default(),
            },
        );
    }

    // What each node holds, from the placements of live services.
    let mut placed_on: HashMap<String, (String, String)> = HashMap::new();
    for service in services.values() {
        for p in &service.replicas {
            if let Some(nid) = &p.replica.node {
                placed_on.insert(p.replica.id.clone(), (nid.clone(), service.meta.id.clone()));
                if let Some(node) = nodes.get_mut(nid) {
                    let request = request_of(&service.spec, &service.meta.id);
                    crate::placement::take(node, &request);
                }
            }
        }
    }

    let mut outcome = Outcome::default();
    let fence = Compare::ModRevision(fence.0.to_owned(), fence.1);

    // Assignments whose placement is gone: never leave them to a node.
    let mut orphans = Txn::new().when(fence.clone());
    let mut orphan_count = 0;
    for (nid, rid, kv) in &assignments {
        if placed_on.get(rid).is_none_or(|(n, _)| n != nid) {
            orphans = orphans
                .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                .then(Op::delete(kv.key.clone()));
            orphan_count += 1;
        }
    }
    if orphan_count > 0 {
        store.txn(orphans).await?;
        outcome.removed += orphan_count;
    }
    let current: HashMap<String, Assignment> = assignments
        .iter()
        .filter_map(|(_, rid, kv)| decode::<Assignment>(kv).map(|a| (rid.clone(), a)))
        .collect();

    let mut node_list = Nodes::new(nodes.into_values().collect());
    // Services' changes go in batches of transactions merged into one, for
    // throughput; a merged transaction that loses a race is retried service
    // by service, so one conflict never holds up the others.
    let mut batch: Vec<(Txn, usize, usize)> = Vec::new();
    let mut batch_ops = 0;
    for service in services.values() {
        let (txn, placed, removed) = plan(keys, service, &mut node_list, &lost, &current);
        if txn.success.is_empty() {
            continue;
        }
        let txn = txn
            .when(Compare::ModRevision(
                keys.service_meta(&service.pid, &service.meta.id),
                service.meta_revision,
            ))
            .when(Compare::ModRevision(
                keys.service_spec(&service.pid, &service.meta.id),
                service.spec_revision,
            ));
        batch_ops += txn.success.len() + txn.compares.len();
        batch.push((txn, placed, removed));
        if batch_ops >= BATCH_OPS {
            commit(store, &fence, std::mem::take(&mut batch), &mut outcome).await?;
            batch_ops = 0;
        }
    }
    commit(store, &fence, batch, &mut outcome).await?;
    Ok(outcome)
}

/// Operations merged into one transaction at most (etcd must allow more:
/// `--max-txn-ops`, see `MAX_TXN_OPS`).
const BATCH_OPS: usize = 4_000;

/// Commits a batch of per-service transactions, merged; on a lost race, one
/// by one.
async fn commit(
    store: &Shared,
    fence: &Compare,
    batch: Vec<(Txn, usize, usize)>,
    outcome: &mut Outcome,
) -> lb_pkg::store::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    if batch.len() > 1 {
        let mut merged = Txn::new().when(fence.clone());
        for (txn, _, _) in &batch {
            merged.compares.extend(txn.compares.iter().cloned());
            merged.success.extend(txn.success.iter().cloned());
        }
        if store.txn(merged).await?.succeeded {
            for (_, placed, removed) in &batch {
                outcome.placed += placed;
                outcome.removed += removed;
            }
            return Ok(());
        }
    }
    for (txn, placed, removed) in batch {
        if store.txn(txn.when(fence.clone())).await?.succeeded {
            outcome.placed += placed;
            outcome.removed += removed;
        } else {
            outcome.conflicts += 1;
        }
    }
    Ok(())
}

fn request_of<'a>(spec: &'a ServiceSpec, service: &'a str) -> Request<'a> {
    Request {
        service,
        memory: spec.memory,
        cpu: spec.cpu,
        ports: spec.ports.iter().filter_map(|p| p.host).collect(),
        selector: &spec.node_selector,
    }
}

fn assignment(service: &Service, rid: &str, generation: u64) -> Option<Assignment> {
    let spec = &service.spec;
    Some(Assignment {
        replica: rid.to_owned(),
        project: service.pid.clone(),
        service: service.meta.id.clone(),
        service_name: service.meta.name.clone(),
        generation,
        restart_generation: service.meta.restart_generation,
        image: spec.image.clone()?,
        memory: spec.memory,
        cpu: spec.cpu,
        env: spec.env.clone(),
        command: spec.command.clone(),
        ports: spec.ports.clone(),
        volumes: spec.volumes.clone(),
        running: spec.state == ServiceState::Running,
        stop_timeout: spec.stop_timeout,
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("models serialize")
}

/// Decides one service's changes: the operations to write, and how many
/// replicas they place and remove.
fn plan(
    keys: &Keys,
    service: &Service,
    nodes: &mut Nodes,
    lost: &HashSet<String>,
    current: &HashMap<String, Assignment>,
) -> (Txn, usize, usize) {
    let (pid, sid) = (&service.pid, &service.meta.id);
    let mut txn = Txn::new();
    let (mut placed, mut removed) = (0, 0);
    let remove = |txn: Txn, p: &Placed| {
        let mut txn = txn
            .then(Op::delete(keys.replica(pid, sid, &p.replica.id)))
            .then(Op::delete(keys.replica_status(pid, sid, &p.replica.id)));
        if let Some(nid) = &p.replica.node {
            txn = txn.then(Op::delete(keys.node_replica(nid, &p.replica.id)));
        }
        txn
    };
    let request = request_of(&service.spec, sid);
    let generation = service.meta.generation;
    let desired = service.spec.replicas as usize;

    // Replicas on lost nodes go; the count below brings replacements.
    let mut live: Vec<Placed> = Vec::new();
    for p in &service.replicas {
        if p.replica.node.as_ref().is_some_and(|n| lost.contains(n)) {
            tracing::info!(replica = %p.replica.id, node = ?p.replica.node, "node lost: moving its replica");
            txn = remove(txn, p);
            removed += 1;
        } else {
            live.push(p.clone());
        }
    }
    // Newest last, so scale-down takes from the end.
    live.sort_by(|a, b| {
        (a.replica.created, &a.replica.id).cmp(&(b.replica.created, &b.replica.id))
    });
    let (new, old): (Vec<Placed>, Vec<Placed>) = live
        .into_iter()
        .partition(|p| p.replica.generation == generation);

    // Place a replica (or record why it cannot be).
    let place = |txn: Txn, nodes: &mut Nodes, existing: Option<&Placed>| -> (Txn, bool) {
        let rid = existing.map_or_else(new_id, |p| p.replica.id.clone());
        let created = existing.map_or_else(now_secs, |p| p.replica.created);
        let replica_key = keys.replica(pid, sid, &rid);
        let decision = match assignment(service, &rid, generation) {
            None => {
                Err("waiting for an image: the service has no image yet (build one)".to_owned())
            }
            Some(a) => nodes.choose(&request).map(|n| (n.id.clone(), a)),
        };
        match decision {
            Ok((nid, a)) => {
                nodes.take(&nid, &request);
                let replica = Replica {
                    id: rid.clone(),
                    project: pid.clone(),
                    service: sid.clone(),
                    node: Some(nid.clone()),
                    image: a.image.clone(),
                    generation,
                    reason: None,
                    created,
                };
                let txn = match existing {
                    None => txn.when(Compare::ModRevision(replica_key.clone(), 0)),
                    Some(_) => txn,
                };
                (
                    txn.then(Op::put(replica_key, encode(&replica)))
                        .then(Op::put(keys.node_replica(&nid, &rid), encode(&a))),
                    true,
                )
            }
            Err(reason) => {
                if existing.is_some_and(|p| p.replica.reason.as_deref() == Some(reason.as_str())) {
                    return (txn, false);
                }
                let replica = Replica {
                    id: rid.clone(),
                    project: pid.clone(),
                    service: sid.clone(),
                    node: None,
                    image: service.spec.image.clone().unwrap_or_default(),
                    generation,
                    reason: Some(reason),
                    created,
                };
                (txn.then(Op::put(replica_key, encode(&replica))), false)
            }
        }
    };

    // Pending replicas of this generation: try again.
    let mut new_live = Vec::new();
    for p in new {
        if p.replica.node.is_none() {
            let (t, ok) = place(txn, nodes, Some(&p));
            txn = t;
            if ok {
                placed += 1;
            }
        }
        new_live.push(p);
    }
    let new = new_live;

    if old.is_empty() {
        // Scale.
        for _ in new.len()..desired {
            let (t, ok) = place(txn, nodes, None);
            txn = t;
            if ok {
                placed += 1;
            }
        }
        for p in new.iter().rev().take(new.len().saturating_sub(desired)) {
            txn = remove(txn, p);
            removed += 1;
        }
    } else {
        // Rolling update: at most one extra replica, never fewer running
        // than desired; a new replica that fails halts the rollout.
        // Ready: running and never crashed. A replica that restarts is
        // failing, even in the moment it runs again.
        let restarts = |p: &Placed| p.status.as_ref().map_or(0, |s| s.restarts);
        // It must also have stayed up a while: a container that dies at once
        // is reported running first.
        let ready = |p: &Placed| {
            p.state() == ReplicaState::Running
                && restarts(p) == 0
                && p.status
                    .as_ref()
                    .is_some_and(|s| now_secs() - s.updated >= MIN_READY_SECS)
        };
        let running_new = new.iter().filter(|p| ready(p)).count();
        let failing = new.iter().any(|p| {
            restarts(p) > 0 || matches!(p.state(), ReplicaState::Failed | ReplicaState::Exited)
        });
        let unready = new.len() - running_new;
        if failing {
            tracing::info!(service = %sid, "rollout halted: a new replica fails; old replicas keep serving");
        } else {
            if unready == 0 && new.len() < desired && new.len() + old.len() < desired + 1 {
                let (t, ok) = place(txn, nodes, None);
                txn = t;
                if ok {
                    placed += 1;
                }
            }
            // Remove old replicas as new ones run.
            let excess = (running_new + old.len()).saturating_sub(desired);
            for p in old.iter().take(excess.min(old.len())) {
                txn = remove(txn, p);
                removed += 1;
            }
        }
    }

    // Assignments follow pause/resume at once, restarts one at a time.
    let running = service.spec.state == ServiceState::Running;
    let all_running = service
        .replicas
        .iter()
        .all(|p| p.state() == ReplicaState::Running);
    let mut restarted_one = false;
    for p in &service.replicas {
        let (Some(nid), Some(a)) = (&p.replica.node, current.get(&p.replica.id)) else {
            continue;
        };
        if lost.contains(nid) {
            continue;
        }
        let mut next = a.clone();
        next.running = running;
        if a.restart_generation < service.meta.restart_generation && all_running && !restarted_one {
            next.restart_generation = service.meta.restart_generation;
            restarted_one = true;
        }
        if &next != a {
            txn = txn.then(Op::put(
                keys.node_replica(nid, &p.replica.id),
                encode(&next),
            ));
        }
    }
    // Every write for the service touches its `placements` key: the API's
    // deletes compare it, so none misses a node key written here.
    if !txn.success.is_empty() {
        txn = txn.then(Op::put(keys.service_placements(pid, sid), b"1".to_vec()));
    }
    (txn, placed, removed)
}
