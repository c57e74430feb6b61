//! One scheduling pass over the services something happened to: decide per
//! service (place pending and missing replicas, remove surplus newest first,
//! move replicas off lost nodes, roll out a new generation one extra replica
//! at a time, update assignments for pause/resume and restarts) and write the
//! decisions. Level-triggered: a pass compares what is with what should be,
//! so a missed or repeated trigger changes nothing.
//!
//! Each decision about one replica is a [`Unit`]: a few keys that must change
//! together (a placement record and its node's assignment). Units are packed
//! into transactions within the store's limits (see [`crate::commit`]), each
//! fenced by the leader key and by its services' records, so a deposed
//! leader writes nothing and a service changed or deleted meanwhile is
//! redone on the next pass.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use lb_model::ids::new_id;
use lb_model::keys::Keys;
use lb_model::{Assignment, Replica, ReplicaState, ServiceState};
use lb_store::{encode, Compare, Op, Shared};

use crate::commit::{self, Batch};
use crate::placement::{NodeView, Nodes, Request};
use crate::state::{Placed, ServiceKey, State};

/// How long a new replica must run without a restart before a rolling
/// update counts it ready and removes an old one.
const MIN_READY_SECS: i64 = 3;

/// What a pass did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Replicas placed on a node.
    pub placed: usize,
    /// Replicas removed.
    pub removed: usize,
    /// Services whose writes lost a race (redone next pass).
    pub conflicts: usize,
    /// Services whose writes the store refused (their replicas say why).
    pub refused: usize,
    /// The highest store revision written.
    pub revision: i64,
}

/// Keys that change together: one replica's decision.
#[derive(Debug, Clone, Default)]
pub struct Unit {
    /// Compares of its own (the replica record as read).
    pub compares: Vec<Compare>,
    /// Its writes.
    pub ops: Vec<Op>,
    /// Replicas it places.
    pub placed: usize,
    /// Replicas it removes.
    pub removed: usize,
    /// The replica placed, when a placement: told why if the write fails.
    pub placing: Option<Replica>,
    /// Why the replica was pending before (not written again when the same).
    pub reason: Option<String>,
}

/// One service's decisions, with the compares that fence them.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The service.
    pub service: ServiceKey,
    /// Its meta and spec as read.
    pub compares: Vec<Compare>,
    /// The decisions.
    pub units: Vec<Unit>,
}

/// A service as one pass reads it.
struct Service<'a> {
    pid: &'a str,
    sid: &'a str,
    meta: &'a lb_model::ServiceMeta,
    spec: &'a lb_model::ServiceSpec,
    replicas: Vec<&'a Placed>,
}

fn request_of<'a>(spec: &'a lb_model::ServiceSpec, service: &'a str) -> Request<'a> {
    Request {
        service,
        memory: spec.memory,
        cpu: spec.cpu,
        ports: spec.ports.iter().filter_map(|p| p.host).collect(),
        selector: &spec.node_selector,
    }
}

/// What a placed replica takes from its node: what its assignment asked
/// for (the version it runs), else the service's current spec.
fn taken<'a>(
    state: &'a State,
    spec: &'a lb_model::ServiceSpec,
    sid: &'a str,
    rid: &str,
) -> Request<'a> {
    match state
        .assignments
        .get(rid)
        .and_then(|h| h.assignment.as_ref())
    {
        Some(a) => Request {
            service: sid,
            memory: a.memory,
            cpu: a.cpu,
            ports: a.ports.iter().filter_map(|p| p.host).collect(),
            selector: &spec.node_selector,
        },
        None => request_of(spec, sid),
    }
}

fn assignment(service: &Service<'_>, rid: &str, generation: u64) -> Option<Assignment> {
    let spec = service.spec;
    Some(Assignment {
        replica: rid.to_owned(),
        project: service.pid.to_owned(),
        service: service.sid.to_owned(),
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

/// The nodes with what is placed on them.
fn node_views(state: &State) -> Nodes {
    let mut nodes: BTreeMap<String, NodeView> = state
        .nodes
        .iter()
        .map(|(nid, node)| {
            (
                nid.clone(),
                NodeView {
                    id: node.id.clone(),
                    name: node.name.clone(),
                    alive: state.alive.contains(nid),
                    labels: node.labels.clone(),
                    memory: node.capacity.memory,
                    cpus: node.capacity.cpus,
                    used_memory: 0,
                    used_cpus: 0.0,
                    ports: HashSet::new(),
                    per_service: BTreeMap::new(),
                },
            )
        })
        .collect();
    for (key, list) in &state.replicas {
        let Some(spec) = state.services.get(key).and_then(|r| r.spec.as_ref()) else {
            continue;
        };
        for p in list.values() {
            if let Some(node) = p.replica.node.as_ref().and_then(|n| nodes.get_mut(n)) {
                crate::placement::take(node, &taken(state, &spec.value, &key.1, &p.replica.id));
            }
        }
    }
    Nodes::new(nodes.into_values().collect())
}

/// Plans the dirty services and writes their decisions. Services that wait
/// for capacity or for time are remembered in `state` to be planned again.
pub async fn pass(
    store: &Shared,
    keys: &Keys,
    fence: (&str, i64),
    grace: Duration,
    state: &mut State,
) -> lb_store::Result<Outcome> {
    let now = Instant::now();
    state.due = false;
    let node_wake = state.expire_nodes(grace, now);
    let fence = Compare::ModRevision(fence.0.to_owned(), fence.1);
    let mut outcome = Outcome::default();

    // Assignments whose placement is gone (a deleted service, a replica
    // moved): never leave them to a node.
    if std::mem::take(&mut state.check_assignments) {
        let mut orphans = Vec::new();
        for (rid, held) in &state.assignments {
            let placed_here = state
                .replica_index
                .get(rid)
                .and_then(|key| state.replicas.get(key))
                .and_then(|list| list.get(rid))
                .is_some_and(|p| p.replica.node.as_deref() == Some(held.node.as_str()))
                && state
                    .replica_index
                    .get(rid)
                    .and_then(|key| state.services.get(key))
                    .is_some_and(|r| r.meta.is_some() && r.spec.is_some());
            if !placed_here {
                let key = keys.node_replica(&held.node, rid);
                orphans.push(Unit {
                    compares: vec![Compare::ModRevision(key.clone(), held.revision)],
                    ops: vec![Op::delete(key)],
                    removed: 1,
                    ..Unit::default()
                });
            }
        }
        if !orphans.is_empty() {
            let plan = Plan {
                service: (String::new(), String::new()),
                compares: Vec::new(),
                units: orphans,
            };
            let done = commit::commit(store, &fence, vec![plan]).await?;
            outcome.removed += done.removed;
            outcome.revision = outcome.revision.max(done.revision);
        }
    }

    let mut nodes = node_views(state);
    let dirty = std::mem::take(&mut state.dirty);
    let mut plans = Vec::new();
    let mut wake: Option<Instant> = node_wake;
    for key in dirty {
        let Some(records) = state.services.get(&key) else {
            continue;
        };
        let (Some(meta), Some(spec)) = (&records.meta, &records.spec) else {
            continue;
        };
        let service = Service {
            pid: &key.0,
            sid: &key.1,
            meta: &meta.value,
            spec: &spec.value,
            replicas: state
                .replicas
                .get(&key)
                .map(|l| l.values().collect())
                .unwrap_or_default(),
        };
        let decided = plan(keys, &service, &mut nodes, &state.lost, state);
        if decided.waiting {
            state.waiting.insert(key.clone());
        } else {
            state.waiting.remove(&key);
        }
        if let Some(at) = decided.wake {
            state.timed.insert(key.clone());
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        if decided.units.is_empty() {
            continue;
        }
        plans.push(Plan {
            service: key.clone(),
            compares: vec![
                Compare::ModRevision(keys.service_meta(&key.0, &key.1), meta.revision),
                Compare::ModRevision(keys.service_spec(&key.0, &key.1), spec.revision),
            ],
            units: decided.units,
        });
    }
    state.wake_at = match (state.wake_at, wake) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if plans.is_empty() {
        return Ok(outcome);
    }
    let Batch {
        placed,
        removed,
        conflicts,
        refused,
        revision,
    } = commit::commit(store, &fence, plans).await?;
    // Services whose writes failed are not marked again here: a conflict
    // means a record they compare changed, and its event marks them once the
    // watch shows it (planning before would conflict again); a refused
    // service waits for a change or the resync.
    outcome.placed += placed;
    outcome.removed += removed;
    outcome.conflicts += conflicts.len();
    outcome.refused += refused.len();
    outcome.revision = outcome.revision.max(revision);
    Ok(outcome)
}

/// One service's decisions.
struct Decided {
    units: Vec<Unit>,
    /// Some replica found no node.
    waiting: bool,
    /// Look again at this moment (a new replica becomes ready).
    wake: Option<Instant>,
}

/// Decides one service's changes.
fn plan(
    keys: &Keys,
    service: &Service<'_>,
    nodes: &mut Nodes,
    lost: &HashSet<String>,
    state: &State,
) -> Decided {
    let (pid, sid) = (service.pid, service.sid);
    let mut units = Vec::new();
    let mut waiting = false;
    let mut wake = None;
    let remove = |p: &Placed| {
        let key = keys.replica(pid, sid, &p.replica.id);
        let mut ops = vec![
            Op::delete(key.clone()),
            Op::delete(keys.replica_status(pid, sid, &p.replica.id)),
        ];
        if let Some(nid) = &p.replica.node {
            ops.push(Op::delete(keys.node_replica(nid, &p.replica.id)));
        }
        Unit {
            compares: vec![Compare::ModRevision(key, p.revision)],
            ops,
            removed: 1,
            ..Unit::default()
        }
    };
    let request = request_of(service.spec, sid);
    let generation = service.meta.generation;
    let desired = service.spec.replicas as usize;

    // Replicas on lost nodes go; the count below brings replacements.
    let mut live: Vec<&Placed> = Vec::new();
    for p in &service.replicas {
        if p.replica.node.as_ref().is_some_and(|n| lost.contains(n)) {
            tracing::info!(replica = %p.replica.id, node = ?p.replica.node, "node lost: moving its replica");
            units.push(remove(p));
        } else {
            live.push(p);
        }
    }
    // Newest last, so scale-down takes from the end.
    live.sort_by(|a, b| {
        (a.replica.created, &a.replica.id).cmp(&(b.replica.created, &b.replica.id))
    });
    let (new, old): (Vec<&Placed>, Vec<&Placed>) = live
        .into_iter()
        .partition(|p| p.replica.generation == generation);

    // Place a replica (or record why it cannot be).
    let mut place = |nodes: &mut Nodes, existing: Option<&Placed>| -> Option<Unit> {
        let rid = existing.map_or_else(new_id, |p| p.replica.id.clone());
        let created = existing.map_or_else(lb_model::now, |p| p.replica.created);
        let replica_key = keys.replica(pid, sid, &rid);
        let compare = Compare::ModRevision(replica_key.clone(), existing.map_or(0, |p| p.revision));
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
                    project: pid.to_owned(),
                    service: sid.to_owned(),
                    node: Some(nid.clone()),
                    image: a.image.clone(),
                    generation,
                    reason: None,
                    created,
                };
                Some(Unit {
                    compares: vec![compare],
                    ops: vec![
                        Op::put(replica_key, encode(&replica)),
                        Op::put(keys.node_replica(&nid, &rid), encode(&a)),
                    ],
                    placed: 1,
                    removed: 0,
                    placing: Some(Replica {
                        node: None,
                        ..replica
                    }),
                    reason: existing.and_then(|p| p.replica.reason.clone()),
                })
            }
            Err(reason) => {
                waiting = true;
                if existing.is_some_and(|p| p.replica.reason.as_deref() == Some(reason.as_str())) {
                    return None;
                }
                let replica = Replica {
                    id: rid.clone(),
                    project: pid.to_owned(),
                    service: sid.to_owned(),
                    node: None,
                    image: service.spec.image.clone().unwrap_or_default(),
                    generation,
                    reason: Some(reason),
                    created,
                };
                Some(Unit {
                    compares: vec![compare],
                    ops: vec![Op::put(replica_key, encode(&replica))],
                    ..Unit::default()
                })
            }
        }
    };

    // Pending replicas of this generation: try again.
    for p in &new {
        if p.replica.node.is_none() {
            units.extend(place(nodes, Some(p)));
        }
    }

    if old.is_empty() {
        // Scale.
        for _ in new.len()..desired {
            units.extend(place(nodes, None));
        }
        for p in new.iter().rev().take(new.len().saturating_sub(desired)) {
            units.push(remove(p));
        }
    } else {
        // Rolling update: at most one extra replica, never fewer running
        // than desired; a new replica that fails halts the rollout.
        // Ready: running and never crashed. A replica that restarts is
        // failing, even in the moment it runs again.
        let restarts = |p: &Placed| p.status.as_ref().map_or(0, |s| s.restarts);
        // It must also have stayed up a while: a container that dies at once
        // is reported running first.
        let now = lb_model::now();
        let ready = |p: &Placed| {
            p.state() == ReplicaState::Running
                && restarts(p) == 0
                && p.status
                    .as_ref()
                    .is_some_and(|s| now - s.updated >= MIN_READY_SECS)
        };
        // Running but not yet long enough: look again when it will be.
        for p in &new {
            if p.state() == ReplicaState::Running && restarts(p) == 0 && !ready(p) {
                let updated = p.status.as_ref().map_or(now, |s| s.updated);
                let left = (updated + MIN_READY_SECS - now).clamp(0, MIN_READY_SECS) as u64;
                let at = Instant::now() + Duration::from_secs(left) + Duration::from_millis(50);
                wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
            }
        }
        let running_new = new.iter().filter(|p| ready(p)).count();
        let failing = new.iter().any(|p| {
            restarts(p) > 0 || matches!(p.state(), ReplicaState::Failed | ReplicaState::Exited)
        });
        let unready = new.len() - running_new;
        if failing {
            tracing::info!(service = %sid, "rollout halted: a new replica fails; old replicas keep serving");
        } else {
            if unready == 0 && new.len() < desired && new.len() + old.len() < desired + 1 {
                units.extend(place(nodes, None));
            }
            // Remove old replicas as new ones run.
            let excess = (running_new + old.len()).saturating_sub(desired);
            for p in old.iter().take(excess.min(old.len())) {
                units.push(remove(p));
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
        let Some(nid) = &p.replica.node else { continue };
        let Some(held) = state.assignments.get(&p.replica.id) else {
            continue;
        };
        let Some(a) = &held.assignment else { continue };
        if lost.contains(nid) || &held.node != nid {
            continue;
        }
        let mut next = a.clone();
        next.running = running;
        if a.restart_generation < service.meta.restart_generation && all_running && !restarted_one {
            next.restart_generation = service.meta.restart_generation;
            restarted_one = true;
        }
        if &next != a {
            let key = keys.node_replica(nid, &p.replica.id);
            units.push(Unit {
                compares: vec![Compare::ModRevision(key.clone(), held.revision)],
                ops: vec![Op::put(key, encode(&next))],
                ..Unit::default()
            });
        }
    }
    Decided {
        units,
        waiting,
        wake,
    }
}
