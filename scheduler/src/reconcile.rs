//! One scheduling pass over the services something happened to: decide per
//! service (place pending and missing replicas, remove surplus newest first,
//! move replicas off lost nodes, roll out a new generation one replica at a
//! time as [`crate::rollout`] decides, update assignments for pause/resume
//! and restarts) and write the decisions. Level-triggered: a pass compares
//! what is with what should be, so a missed or repeated trigger changes
//! nothing.
//!
//! Each decision about one replica is a [`Unit`]: a few keys that must change
//! together (a placement record and its node's assignment). Units are packed
//! into transactions within the store's limits (see [`crate::commit`]), each
//! fenced by the leader key and by its services' records, so a deposed
//! leader writes nothing and a service changed or deleted meanwhile is
//! redone on the next pass.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lb_model::ids::new_id;
use lb_model::keys::Keys;
use lb_model::{Assignment, Health, Replica, ReplicaState, ServiceState};
use lb_store::{encode, Compare, Op, Shared};

use crate::capacity::{node_views, request_of, taken};
use crate::commit::{self, Batch};
use crate::placement::Nodes;
use crate::rollout::{self, Action, Member};
use crate::state::{Placed, ServiceKey, State};

/// How long a new replica without a health check must run without a
/// restart before a rolling update counts it ready and removes an old one.
/// One with a check (the spec's or the image's) is ready once healthy.
const MIN_READY_SECS: i64 = 3;
/// Beyond its check's deadline ([`lb_model::HealthCheck::deadline_secs`]),
/// how long a new replica still `starting` is given (clocks, reporting)
/// before it halts the rollout.
const HEALTH_MARGIN_SECS: i64 = 5;

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
        hardening: spec.hardening(),
        health: spec
            .health
            .as_ref()
            .map(|h| h.with_port(spec.ingress_port())),
        job: None,
    })
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
            if crate::jobs::is_job(held) {
                // A job's assignment has no placement: see `jobs`.
                continue;
            }
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
    let mut steady = Vec::new();
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
            steady.push(key.clone());
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
    // Services left as they are: their deploys may have settled.
    let settled = crate::deploys::settle(store, keys, &fence, state, steady).await?;
    outcome.revision = outcome.revision.max(settled.revision);
    if let Some(at) = settled.wake {
        wake = Some(wake.map_or(at, |w| w.min(at)));
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

    // Replicas on lost nodes go, and on nodes that no longer exist (a
    // node forgotten before this scheduler's listing, as `lb up` does to
    // its old local node after a restore); the count below brings
    // replacements.
    let mut live: Vec<&Placed> = Vec::new();
    for p in &service.replicas {
        if p.replica
            .node
            .as_ref()
            .is_some_and(|n| lost.contains(n) || !state.nodes.contains_key(n))
        {
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

    // Write a placement on `node` (or record on the replica why it has none).
    let mut write = |existing: Option<&Placed>, node: Result<String, String>| -> Option<Unit> {
        let rid = existing.map_or_else(new_id, |p| p.replica.id.clone());
        let created = existing.map_or_else(lb_model::now, |p| p.replica.created);
        let replica_key = keys.replica(pid, sid, &rid);
        let compare = Compare::ModRevision(replica_key.clone(), existing.map_or(0, |p| p.revision));
        let decision = match assignment(service, &rid, generation) {
            None => {
                Err("waiting for an image: the service has no image yet (build one)".to_owned())
            }
            Some(a) => node.map(|n| (n, a)),
        };
        match decision {
            Ok((nid, a)) => {
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
    // Choose a node and take the request from it (nothing without an
    // image, nothing while paused: a paused replica reserves no room).
    let has_image = service.spec.image.is_some();
    let paused = service.spec.state == ServiceState::Paused;
    let choose = |nodes: &mut Nodes| -> Result<String, String> {
        let nid = nodes.choose(&request)?.id.clone();
        if has_image && !paused {
            nodes.take(&nid, &request);
        }
        Ok(nid)
    };

    // Replicas a rollout stops, replaces or removes: left alone below.
    let mut touched: HashSet<&str> = HashSet::new();
    // Old replicas told to stop for a replacement: kept stopped below.
    let mut draining: HashSet<&str> = HashSet::new();
    let assigned = |p: &Placed| {
        state
            .assignments
            .get(&p.replica.id)
            .filter(|h| p.replica.node.as_ref() == Some(&h.node))
            .and_then(|h| h.assignment.as_ref())
    };
    if old.is_empty() {
        // Pending replicas: try again.
        for p in &new {
            if p.replica.node.is_none() {
                units.extend(write(Some(p), choose(nodes)));
            }
        }
        // Scale.
        for _ in new.len()..desired {
            units.extend(write(None, choose(nodes)));
        }
        for p in new.iter().rev().take(new.len().saturating_sub(desired)) {
            units.push(remove(p));
        }
    } else if has_image {
        // Rolling update (see [`crate::rollout`]). A new replica is ready
        // when it runs and never crashed (a replica that restarts is
        // failing, even in the moment it runs again), and either passes
        // its health check or, having none, has stayed up a while: a
        // container that dies at once is reported running first.
        let restarts = |p: &Placed| p.status.as_ref().map_or(0, |s| s.restarts);
        let now = lb_model::now();
        let health = |p: &Placed| p.status.as_ref().and_then(|s| s.health);
        let ready = |p: &Placed| {
            p.state() == ReplicaState::Running
                && restarts(p) == 0
                && match health(p) {
                    Some(h) => h == Health::Healthy,
                    None => p
                        .status
                        .as_ref()
                        .is_some_and(|s| now - s.updated >= MIN_READY_SECS),
                }
        };
        // Still `starting` this long after it started: it never will pass.
        let deadline = service
            .spec
            .health
            .as_ref()
            .map(|h| h.deadline_secs() as i64 + HEALTH_MARGIN_SECS);
        let since_start = |p: &Placed| {
            let s = p.status.as_ref()?;
            (s.state == ReplicaState::Running && s.health == Some(Health::Starting))
                .then_some(s.health_since.unwrap_or(s.updated))
        };
        let timed_out =
            |p: &Placed| matches!((deadline, since_start(p)), (Some(d), Some(at)) if now - at >= d);
        // Running but not yet long enough, or not yet healthy: look again
        // when it will be ready, or past its deadline.
        for p in &new {
            if p.state() != ReplicaState::Running || restarts(p) > 0 || ready(p) {
                continue;
            }
            let left = match (health(p), deadline, since_start(p)) {
                (None, ..) => {
                    let updated = p.status.as_ref().map_or(now, |s| s.updated);
                    (updated + MIN_READY_SECS - now).clamp(0, MIN_READY_SECS)
                }
                (_, Some(d), Some(at)) => (at + d - now).clamp(0, d),
                // A health change is an event of its own.
                _ => continue,
            };
            let at = Instant::now() + Duration::from_secs(left as u64) + Duration::from_millis(50);
            wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        }
        let failing = |p: &Placed| {
            restarts(p) > 0
                || matches!(p.state(), ReplicaState::Failed | ReplicaState::Exited)
                || health(p) == Some(Health::Unhealthy)
                || timed_out(p)
        };
        let halted = new.iter().any(|p| failing(p));
        let running = service.spec.state == ServiceState::Running;
        let members: Vec<Member> = new
            .iter()
            .chain(&old)
            .map(|p| {
                let is_new = p.replica.generation == generation;
                let told_to_run = assigned(p).is_some_and(|a| a.running);
                let drained = !is_new && running && !halted && assigned(p).is_some();
                let drained = drained && !told_to_run;
                if drained {
                    draining.insert(p.replica.id.as_str());
                }
                Member {
                    id: &p.replica.id,
                    node: p.replica.node.as_deref(),
                    new: is_new,
                    ready: if is_new {
                        ready(p)
                    } else {
                        // Serving: running, and healthy or unchecked.
                        p.status.as_ref().is_some_and(|s| s.takes_traffic()) && told_to_run
                    },
                    failing: is_new && failing(p),
                    draining: drained,
                    stopped: !matches!(
                        p.state(),
                        ReplicaState::Running | ReplicaState::Starting | ReplicaState::Stopping
                    ),
                    taken: taken(state, service.spec, sid, &p.replica.id),
                }
            })
            .collect();
        if halted {
            tracing::info!(service = %sid, "rollout halted: a new replica fails; old replicas keep serving");
        }
        // The service says why it halted, on the failing replica's record
        // (and no longer once none fails).
        let halt = new.iter().find(|p| failing(p));
        for p in &new {
            let reason = match halt {
                Some(h) if h.replica.id == p.replica.id => Some(halt_reason(p)),
                _ => None,
            };
            let stale = p
                .replica
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with(HALTED));
            if p.replica.node.is_none()
                || p.replica.reason == reason
                || (reason.is_none() && !stale)
            {
                continue;
            }
            let key = keys.replica(pid, sid, &p.replica.id);
            let record = Replica {
                reason,
                ..p.replica.clone()
            };
            units.push(Unit {
                compares: vec![Compare::ModRevision(key.clone(), p.revision)],
                ops: vec![Op::put(key, encode(&record))],
                ..Unit::default()
            });
        }
        let by_id = |id: &str| {
            service
                .replicas
                .iter()
                .copied()
                .find(|p| p.replica.id == id)
        };
        let max_unavailable = service
            .spec
            .max_unavailable
            .map_or(rollout::MAX_UNAVAILABLE, |n| n as usize);
        for action in rollout::step(nodes, &request, desired, max_unavailable, &members) {
            match action {
                Action::Place { replica, node } => {
                    units.extend(write(replica.as_deref().and_then(by_id), Ok(node)));
                }
                Action::Pending { replica, reason } => {
                    units.extend(write(replica.as_deref().and_then(by_id), Err(reason)));
                }
                Action::Remove { old } => {
                    if let Some(p) = by_id(&old) {
                        touched.insert(&p.replica.id);
                        units.push(remove(p));
                    }
                }
                Action::Replace { old, replica, node } => {
                    let (Some(p), Some(mut unit)) = (
                        by_id(&old),
                        write(replica.as_deref().and_then(by_id), Ok(node)),
                    ) else {
                        continue;
                    };
                    // One unit: the old goes only if the new is written.
                    touched.insert(&p.replica.id);
                    let gone = remove(p);
                    unit.compares.extend(gone.compares);
                    unit.ops.extend(gone.ops);
                    unit.removed += gone.removed;
                    units.push(unit);
                }
                Action::Drain { old } => {
                    let Some(p) = by_id(&old) else { continue };
                    let Some(nid) = &p.replica.node else { continue };
                    let Some(held) = state.assignments.get(&p.replica.id) else {
                        continue;
                    };
                    let Some(a) = &held.assignment else { continue };
                    touched.insert(&p.replica.id);
                    let key = keys.node_replica(nid, &p.replica.id);
                    units.push(Unit {
                        compares: vec![
                            Compare::ModRevision(key.clone(), held.revision),
                            Compare::ModRevision(keys.replica(pid, sid, &old), p.revision),
                        ],
                        ops: vec![Op::put(
                            key,
                            encode(&Assignment {
                                running: false,
                                ..a.clone()
                            }),
                        )],
                        ..Unit::default()
                    });
                }
            }
        }
    } else if new.len() < desired || new.iter().any(|p| p.replica.node.is_none()) {
        // A new generation without an image yet (a build to come): the old
        // replicas keep serving, and the new one says what it waits for.
        let slot = new.iter().copied().find(|p| p.replica.node.is_none());
        units.extend(write(slot, Err(String::new())));
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
        if lost.contains(nid) || &held.node != nid || touched.contains(p.replica.id.as_str()) {
            continue;
        }
        let mut next = a.clone();
        next.running = running && !draining.contains(p.replica.id.as_str());
        if next.running && !a.running && !crate::capacity::reserves(state, a) {
            // Resumed: it takes room again, where it is if that node has
            // room, else it goes and a new replica is placed where there is.
            let request = crate::capacity::request_of(service.spec, sid);
            if nodes.fits(nid, &request) {
                nodes.take(nid, &request);
            } else {
                tracing::info!(replica = %p.replica.id, node = %nid, "resumed: no room left on its node, moving it");
                units.push(remove(p));
                continue;
            }
        }
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

/// How a halted rollout's reason begins.
const HALTED: &str = "rollout halted: ";

/// Why a new replica halts its rollout, from its status: the last health
/// check's failure when there is one ("rollout halted: replica R never
/// became healthy (GET /healthz: 503)"), else what its node said.
fn halt_reason(p: &Placed) -> String {
    let id = &p.replica.id;
    let Some(s) = &p.status else {
        return format!("{HALTED}replica {id} fails");
    };
    let checked = s.health.is_some() || !s.health_message.is_empty();
    let why = if !s.health_message.is_empty() {
        s.health_message.clone()
    } else if !s.message.is_empty() {
        s.message.clone()
    } else if let Some(code) = s.exit_code {
        format!("exit code {code}")
    } else {
        format!("{:?}", s.state).to_lowercase()
    };
    if checked {
        format!("{HALTED}replica {id} never became healthy ({why})")
    } else {
        format!("{HALTED}replica {id} keeps failing ({why})")
    }
}
