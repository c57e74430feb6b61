//! Capacity accounting: what each node has placed on it. A replica takes
//! what its node was told to run (its assignment: the spec of the generation
//! it was placed with), not the service's current spec, so a rollout never
//! waits on its own old replicas; a placement whose assignment is not seen
//! takes the current spec.

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

/// What a placed replica takes from its node: what its assignment asked
/// for (the version it runs), else the service's current spec.
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
