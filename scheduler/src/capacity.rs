//! Capacity accounting: what each node has placed on it. A replica takes
//! what its node was told to run (its assignment: the spec of the generation
//! it was placed with), not the service's current spec, so a rollout never
//! waits on its own old replicas; a placement whose assignment is not seen
//! takes the current spec. A paused replica (told not to run, of a paused
//! service or of the current generation) takes nothing: a paused service
//! reserves no room, and its replicas take room again only when resumed
//! where they fit (see `reconcile`).

use std::collections::{BTreeMap, HashSet};

use crate::placement::{take, NodeView, Nodes, Request};
use crate::state::State;

/// What a replica of the service asks for, by its current spec.
pub fn request_of<'a>(spec: &'a lb_model::ServiceSpec, service: &'a str) -> Request<'a> {
    Request {
        service,
        memory: spec.memory,
        cpu: spec.cpu,
        ports: spec.ports.iter().filter_map(|p| p.host).collect(),
        selector: &spec.node_selector,
    }
}

/// What an assignment asked its node for.
fn of_assignment<'a>(
    a: &'a lb_model::Assignment,
    selector: &'a BTreeMap<String, String>,
) -> Request<'a> {
    Request {
        service: &a.service,
        memory: a.memory,
        cpu: a.cpu,
        ports: a.ports.iter().filter_map(|p| p.host).collect(),
        selector,
    }
}

/// Whether an assignment holds room on its node: not when it is paused
/// (told not to run while its service is paused, or of the service's
/// current generation: resumed, and not yet given room again). An old
/// generation's replica told to stop for its replacement still holds it.
pub fn reserves(state: &State, a: &lb_model::Assignment) -> bool {
    if a.running {
        return true;
    }
    let Some(records) = state.services.get(&(a.project.clone(), a.service.clone())) else {
        return true;
    };
    let paused = records
        .spec
        .as_ref()
        .is_some_and(|s| s.value.state == lb_model::ServiceState::Paused);
    let current = records
        .meta
        .as_ref()
        .is_some_and(|m| m.value.generation == a.generation);
    !(paused || current)
}

/// What a placed replica takes from its node: what its assignment asked
/// for (the version it runs), else the service's current spec; nothing
/// while it is paused.
pub fn taken<'a>(
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
        Some(a) if !reserves(state, a) => Request {
            memory: 0,
            cpu: 0.0,
            ports: Vec::new(),
            ..of_assignment(a, &spec.node_selector)
        },
        Some(a) => of_assignment(a, &spec.node_selector),
        None => request_of(spec, sid),
    }
}

/// The nodes with what is placed on them.
pub fn node_views(state: &State) -> Nodes {
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
                    low_disk: state.low_disk.get(nid).cloned(),
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
    // What nodes were told to run, each as its own generation asked for
    // (a rollout never waits on its own old replicas' current spec).
    let none = BTreeMap::new();
    for held in state.assignments.values() {
        let (Some(a), Some(node)) = (&held.assignment, nodes.get_mut(&held.node)) else {
            continue;
        };
        if !reserves(state, a) {
            // Counted for spreading only.
            *node.per_service.entry(a.service.clone()).or_default() += 1;
            continue;
        }
        take(node, &of_assignment(a, &none));
    }
    // Placements whose assignment is not seen (damaged): the current spec.
    for (key, list) in &state.replicas {
        let Some(spec) = state.services.get(key).and_then(|r| r.spec.as_ref()) else {
            continue;
        };
        for p in list.values() {
            let Some(nid) = p.replica.node.as_ref() else {
                continue;
            };
            let assigned = state
                .assignments
                .get(&p.replica.id)
                .is_some_and(|h| &h.node == nid && h.assignment.is_some());
            if let (false, Some(node)) = (assigned, nodes.get_mut(nid)) {
                take(node, &request_of(&spec.value, &key.1));
            }
        }
    }
    Nodes::new(nodes.into_values().collect())
}
