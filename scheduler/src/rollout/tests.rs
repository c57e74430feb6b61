//! Rollouts simulated step by step against a pretend node that starts and
//! stops containers at once: every rollout must finish, and the invariants
//! (replicas serving, CPU, host ports) must hold after every write.

use std::collections::{BTreeMap, HashSet};

use super::*;
use crate::placement::NodeView;

#[derive(Debug, Clone)]
struct Sim {
    id: String,
    node: Option<String>,
    new: bool,
    /// The container runs.
    running: bool,
    draining: bool,
    /// Placed in this round (started in the next when `slow_start`).
    fresh: bool,
}

/// A cluster and a service to roll out.
struct World {
    /// Nodes: (id, CPUs, CPUs taken by other services).
    nodes: Vec<(&'static str, f64, f64)>,
    desired: usize,
    old_cpu: f64,
    new_cpu: f64,
    ports: Vec<u16>,
    /// The service's `max_unavailable`.
    max_unavailable: usize,
    /// New containers start a round after their placement (so several
    /// can be starting at once).
    slow_start: bool,
}

/// What a finished rollout did.
struct Rolled {
    /// The actions, in order, one word each (`pending` with its reason).
    log: Vec<String>,
    /// The fewest replicas serving at any moment.
    min_serving: usize,
}

fn request<'a>(cpu: f64, ports: &[u16], selector: &'a BTreeMap<String, String>) -> Request<'a> {
    Request {
        service: "s",
        memory: 64,
        cpu,
        ports: ports.to_vec(),
        selector,
    }
}

/// Rolls the service from `old` replicas (all serving) to the new
/// generation; panics when an invariant breaks or it does not finish.
fn roll(world: &World) -> Rolled {
    let selector = BTreeMap::new();
    let mut next = 0;
    let mut fresh = |new: bool| {
        next += 1;
        format!("r{next}{}", if new { "-new" } else { "" })
    };
    // Old replicas spread as placement would place them.
    let mut sims: Vec<Sim> = Vec::new();
    {
        let mut nodes = nodes_of(world, &sims, &selector);
        for _ in 0..world.desired {
            let req = request(world.old_cpu, &world.ports, &selector);
            let node = nodes
                .choose(&req)
                .expect("the old generation fits")
                .id
                .clone();
            nodes.take(&node, &req);
            sims.push(Sim {
                id: fresh(false),
                node: Some(node),
                new: false,
                running: true,
                draining: false,
                fresh: false,
            });
        }
    }
    let mut log = Vec::new();
    let mut min_serving = world.desired;
    for _round in 0..100 {
        let mut nodes = nodes_of(world, &sims, &selector);
        let members: Vec<Member> = sims
            .iter()
            .map(|s| Member {
                id: &s.id,
                node: s.node.as_deref(),
                new: s.new,
                ready: s.running && !s.draining,
                failing: false,
                draining: s.draining,
                stopped: !s.running,
                taken: request(
                    if s.new { world.new_cpu } else { world.old_cpu },
                    &world.ports,
                    &selector,
                ),
            })
            .collect();
        let new_request = request(world.new_cpu, &world.ports, &selector);
        let actions = step(
            &mut nodes,
            &new_request,
            world.desired,
            world.max_unavailable,
            &members,
        );
        drop(members);
        for action in actions {
            match action {
                Action::Place { replica, node } => {
                    log.push("place".to_owned());
                    put(&mut sims, replica, node, &mut fresh);
                }
                Action::Replace { old, replica, node } => {
                    log.push("replace".to_owned());
                    let gone = sims.iter().position(|s| s.id == old).unwrap();
                    assert!(
                        world.ports.is_empty() || !sims[gone].running,
                        "{old} still holds its host port"
                    );
                    sims.remove(gone);
                    put(&mut sims, replica, node, &mut fresh);
                }
                Action::Drain { old } => {
                    log.push("drain".to_owned());
                    sims.iter_mut().find(|s| s.id == old).unwrap().draining = true;
                }
                Action::Remove { old } => {
                    log.push("remove".to_owned());
                    sims.retain(|s| s.id != old);
                }
                Action::Pending { replica, reason } => {
                    log.push(format!("pending: {reason}"));
                    if replica.is_none() {
                        sims.push(Sim {
                            id: fresh(true),
                            node: None,
                            new: true,
                            running: false,
                            draining: false,
                            fresh: false,
                        });
                    }
                }
            }
        }
        invariants(world, &sims);
        let serving = sims.iter().filter(|s| s.running && !s.draining).count();
        min_serving = min_serving.min(serving);
        // The node: placed containers start, drained ones stop.
        for s in &mut sims {
            if s.draining {
                s.running = false;
            } else if s.node.is_some() && world.slow_start && s.fresh {
                s.fresh = false;
            } else if s.node.is_some() {
                s.running = true;
            }
        }
        invariants(world, &sims);
        let serving = sims.iter().filter(|s| s.running && !s.draining).count();
        min_serving = min_serving.min(serving);
        if sims.len() == world.desired && sims.iter().all(|s| s.new && s.running) {
            return Rolled { log, min_serving };
        }
    }
    panic!("the rollout did not finish: {log:?}\n{sims:?}");
}

fn put(
    sims: &mut Vec<Sim>,
    replica: Option<String>,
    node: String,
    fresh: &mut impl FnMut(bool) -> String,
) {
    match replica {
        Some(id) => {
            let s = sims.iter_mut().find(|s| s.id == id).unwrap();
            s.node = Some(node);
            s.fresh = true;
        }
        None => sims.push(Sim {
            id: fresh(true),
            node: Some(node),
            new: true,
            running: false,
            draining: false,
            fresh: true,
        }),
    }
}

/// The nodes with what the other services and the replicas take.
fn nodes_of(world: &World, sims: &[Sim], selector: &BTreeMap<String, String>) -> Nodes {
    let mut nodes = Nodes::new(
        world
            .nodes
            .iter()
            .map(|&(id, cpus, used)| NodeView {
                id: id.into(),
                name: id.into(),
                alive: true,
                low_disk: None,
                labels: BTreeMap::new(),
                memory: 1 << 20,
                cpus,
                used_memory: 0,
                used_cpus: used,
                ports: HashSet::new(),
                per_service: BTreeMap::new(),
            })
            .collect(),
    );
    for s in sims {
        if let Some(node) = &s.node {
            let cpu = if s.new { world.new_cpu } else { world.old_cpu };
            nodes.take(node, &request(cpu, &world.ports, selector));
        }
    }
    nodes
}

/// No node overcommitted, no host port held twice by running containers.
fn invariants(world: &World, sims: &[Sim]) {
    for &(id, cpus, used) in &world.nodes {
        let here: Vec<&Sim> = sims
            .iter()
            .filter(|s| s.node.as_deref() == Some(id))
            .collect();
        let taken: f64 = here
            .iter()
            .map(|s| if s.new { world.new_cpu } else { world.old_cpu })
            .sum();
        assert!(
            used + taken <= cpus + 1e-9,
            "node {id} overcommitted: {sims:?}"
        );
        if !world.ports.is_empty() {
            let running = here.iter().filter(|s| s.running).count();
            assert!(running <= 1, "host ports held twice on {id}: {sims:?}");
        }
    }
}

fn count(log: &[String], word: &str) -> usize {
    log.iter().filter(|l| l.starts_with(word)).count()
}

#[test]
fn a_full_node_rolls_one_replica_by_replacement() {
    // 2 CPUs, 1.5 taken by others, 0.5 by the replica: no room to surge.
    let rolled = roll(&World {
        nodes: vec![("a", 2.0, 1.5)],
        desired: 1,
        old_cpu: 0.5,
        new_cpu: 0.5,
        ports: vec![],
        max_unavailable: 1,
        slow_start: false,
    });
    assert_eq!(count(&rolled.log, "replace"), 1, "{:?}", rolled.log);
    assert_eq!(count(&rolled.log, "place"), 0, "{:?}", rolled.log);
}

#[test]
fn a_full_node_rolls_three_replicas_one_down_at_a_time() {
    let rolled = roll(&World {
        nodes: vec![("a", 2.0, 0.5)],
        desired: 3,
        old_cpu: 0.5,
        new_cpu: 0.5,
        ports: vec![],
        max_unavailable: 1,
        slow_start: false,
    });
    assert_eq!(count(&rolled.log, "replace"), 3, "{:?}", rolled.log);
    assert_eq!(rolled.min_serving, 2, "never below replicas - 1");
}

#[test]
fn max_unavailable_takes_that_many_down_at_once_and_no_more() {
    // 4 replicas filling the node: two replaced at a time.
    let world = |max_unavailable| World {
        nodes: vec![("a", 2.0, 0.0)],
        desired: 4,
        old_cpu: 0.5,
        new_cpu: 0.5,
        ports: vec![],
        max_unavailable,
        slow_start: true,
    };
    let rolled = roll(&world(2));
    assert_eq!(count(&rolled.log, "replace"), 4, "{:?}", rolled.log);
    assert_eq!(rolled.min_serving, 2, "replicas - max_unavailable");
    let rolled = roll(&world(1));
    assert_eq!(rolled.min_serving, 3, "replicas - 1 by default");
}

#[test]
fn a_fixed_host_port_rolls_stop_first() {
    // Room enough for CPU, but the old replica holds port 30080.
    let rolled = roll(&World {
        nodes: vec![("a", 2.0, 0.0)],
        desired: 1,
        old_cpu: 0.5,
        new_cpu: 0.5,
        ports: vec![30080],
        max_unavailable: 1,
        slow_start: false,
    });
    assert_eq!(
        rolled.log,
        [
            "drain",
            "pending: host ports 30080 are taken on every node that fits; replacing replica r1 in place: waiting for it to stop",
            "replace",
        ]
    );
}

#[test]
fn host_ports_on_three_nodes_roll_one_node_at_a_time() {
    let rolled = roll(&World {
        nodes: vec![("a", 2.0, 0.0), ("b", 2.0, 0.0), ("c", 2.0, 0.0)],
        desired: 3,
        old_cpu: 0.5,
        new_cpu: 0.5,
        ports: vec![30080],
        max_unavailable: 1,
        slow_start: false,
    });
    assert_eq!(count(&rolled.log, "drain"), 3, "{:?}", rolled.log);
    assert_eq!(rolled.min_serving, 2, "never below replicas - 1");
}

#[test]
fn with_room_it_surges_and_nothing_goes_down() {
    let rolled = roll(&World {
        nodes: vec![("a", 2.0, 0.0)],
        desired: 2,
        old_cpu: 0.5,
        new_cpu: 0.5,
        ports: vec![],
        max_unavailable: 1,
        slow_start: false,
    });
    assert_eq!(count(&rolled.log, "place"), 2, "{:?}", rolled.log);
    assert_eq!(count(&rolled.log, "replace"), 0, "{:?}", rolled.log);
    assert_eq!(rolled.min_serving, 2, "zero downtime");
}

#[test]
fn the_new_generation_asking_less_surges_into_the_room() {
    // 0.1 CPU free; the new generation asks 0.1 (the new default).
    let rolled = roll(&World {
        nodes: vec![("a", 2.0, 1.4)],
        desired: 1,
        old_cpu: 0.5,
        new_cpu: 0.1,
        ports: vec![],
        max_unavailable: 1,
        slow_start: false,
    });
    assert_eq!(rolled.log, ["place", "remove"]);
}

#[test]
fn a_failing_new_replica_halts() {
    let selector = BTreeMap::new();
    let world = World {
        nodes: vec![("a", 2.0, 0.0)],
        desired: 1,
        old_cpu: 0.5,
        new_cpu: 0.5,
        ports: vec![],
        max_unavailable: 1,
        slow_start: false,
    };
    let mut nodes = nodes_of(&world, &[], &selector);
    let member = |id, new, failing| Member {
        id,
        node: Some("a"),
        new,
        ready: !new,
        failing,
        draining: false,
        stopped: false,
        taken: request(0.5, &[], &selector),
    };
    let members = [member("old", false, false), member("new", true, true)];
    let actions = step(&mut nodes, &request(0.5, &[], &selector), 1, 1, &members);
    assert_eq!(actions, []);
}
