//! Placement: which node a replica goes to. Pure logic over a snapshot of
//! the nodes, no IO, tested table-driven.
//!
//! Filter: the node is alive, carries every label of the service's node
//! selector, has the memory and CPU the replica requests free after what is
//! already placed on it (capacity minus placed requests: never overcommit),
//! and has the replica's fixed host ports free. Score: fewest replicas of the
//! same service first (spread), then the most free memory (least loaded).

use std::collections::{BTreeMap, HashSet};

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Name (for messages).
    pub name: String,
    /// Whether its channel is up.
    pub alive: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Capacity: memory in MiB.
    pub memory: u64,
    /// Capacity: CPUs.
    pub cpus: f64,
    /// Memory placed on it, MiB.
    pub used_memory: u64,
    /// CPUs placed on it.
    pub used_cpus: f64,
    /// Fixed host ports taken.
    pub ports: HashSet<u16>,
    /// Replicas per service id.
    pub per_service: BTreeMap<String, u32>,
}

/// What a replica asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request<'a> {
    /// Service id (for spreading).
    pub service: &'a str,
    /// Memory, MiB.
    pub memory: u64,
    /// CPUs.
    pub cpu: f64,
    /// Fixed host ports.
    pub ports: Vec<u16>,
    /// Required labels.
    pub selector: &'a BTreeMap<String, String>,
}

/// The best node for the request, or why there is none.
pub fn choose<'n>(nodes: &'n [NodeView], request: &Request<'_>) -> Result<&'n NodeView, String> {
    let alive: Vec<&NodeView> = nodes.iter().filter(|n| n.alive).collect();
    if alive.is_empty() {
        return Err("no node is alive".into());
    }
    let matching: Vec<&NodeView> = alive
        .into_iter()
        .filter(|n| {
            request
                .selector
                .iter()
                .all(|(k, v)| n.labels.get(k) == Some(v))
        })
        .collect();
    if matching.is_empty() {
        let wanted: Vec<String> = request
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        return Err(format!("no alive node has the labels {}", wanted.join(",")));
    }
    let free_memory = |n: &NodeView| n.memory.saturating_sub(n.used_memory);
    let with_memory: Vec<&NodeView> = matching
        .iter()
        .copied()
        .filter(|n| free_memory(n) >= request.memory)
        .collect();
    if with_memory.is_empty() {
        let best = matching
            .iter()
            .max_by_key(|n| free_memory(n))
            .expect("non-empty");
        return Err(format!(
            "no node has {} MiB free; the most free is {} MiB on {}",
            request.memory,
            free_memory(best),
            best.name
        ));
    }
    let free_cpu = |n: &NodeView| n.cpus - n.used_cpus;
    let with_cpu: Vec<&NodeView> = with_memory
        .iter()
        .copied()
        .filter(|n| free_cpu(n) + 1e-9 >= request.cpu)
        .collect();
    if with_cpu.is_empty() {
        let best = with_memory
            .iter()
            .max_by(|a, b| free_cpu(a).total_cmp(&free_cpu(b)))
            .expect("non-empty");
        return Err(format!(
            "no node has {} CPUs free; the most free is {:.2} on {}",
            request.cpu,
            free_cpu(best).max(0.0),
            best.name
        ));
    }
    let with_ports: Vec<&NodeView> = with_cpu
        .iter()
        .copied()
        .filter(|n| request.ports.iter().all(|p| !n.ports.contains(p)))
        .collect();
    if with_ports.is_empty() {
        let ports: Vec<String> = request.ports.iter().map(u16::to_string).collect();
        return Err(format!(
            "host ports {} are taken on every node that fits",
            ports.join(",")
        ));
    }
    Ok(with_ports
        .into_iter()
        .min_by(|a, b| {
            let spread = |n: &NodeView| n.per_service.get(request.service).copied().unwrap_or(0);
            spread(a)
                .cmp(&spread(b))
                .then_with(|| free_memory(b).cmp(&free_memory(a)))
                .then_with(|| a.id.cmp(&b.id))
        })
        .expect("non-empty"))
}

/// Records a placement in the snapshot, so the next choice sees it.
pub fn take(node: &mut NodeView, request: &Request<'_>) {
    node.used_memory += request.memory;
    node.used_cpus += request.cpu;
    node.ports.extend(&request.ports);
    *node
        .per_service
        .entry(request.service.to_owned())
        .or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, memory: u64, used: u64, labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            id: id.into(),
            name: id.into(),
            alive: true,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            memory,
            cpus: 2.0,
            used_memory: used,
            used_cpus: 0.0,
            ports: HashSet::new(),
            per_service: BTreeMap::new(),
        }
    }

    /// Places `count` replicas asking `memory` each; compares the nodes
    /// chosen (or the first error) with `expect`.
    fn check(
        mut nodes: Vec<NodeView>,
        memory: u64,
        selector: &[(&str, &str)],
        count: usize,
        expect: &str,
    ) {
        let selector: BTreeMap<String, String> = selector
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let request = Request {
            service: "s",
            memory,
            cpu: 0.5,
            ports: vec![],
            selector: &selector,
        };
        let mut got = Vec::new();
        for _ in 0..count {
            match choose(&nodes, &request) {
                Ok(n) => {
                    let id = n.id.clone();
                    got.push(id.clone());
                    let n = nodes.iter_mut().find(|n| n.id == id).unwrap();
                    take(n, &request);
                }
                Err(e) => {
                    got.push(format!("error: {e}"));
                    break;
                }
            }
        }
        assert_eq!(got.join(" "), expect);
    }

    #[test]
    fn placement_table() {
        // Spread one service across nodes before stacking.
        check(
            vec![node("a", 1000, 0, &[]), node("b", 1000, 0, &[])],
            100,
            &[],
            4,
            "a b a b",
        );
        // Least loaded first.
        check(
            vec![node("a", 1000, 800, &[]), node("b", 1000, 100, &[])],
            100,
            &[],
            1,
            "b",
        );
        // Never overcommit; say how much the best node has.
        check(
            vec![node("n1", 1000, 900, &[]), node("n2", 1000, 700, &[])],
            512,
            &[],
            1,
            "error: no node has 512 MiB free; the most free is 300 MiB on n2",
        );
        check(
            vec![node("a", 300, 0, &[])],
            100,
            &[],
            4,
            "a a a error: no node has 100 MiB free; the most free is 0 MiB on a",
        );
        // Node selectors.
        check(
            vec![
                node("a", 1000, 0, &[("zone", "x")]),
                node("b", 1000, 0, &[("zone", "y")]),
            ],
            10,
            &[("zone", "y")],
            2,
            "b b",
        );
        check(
            vec![node("a", 1000, 0, &[])],
            10,
            &[("gpu", "yes")],
            1,
            "error: no alive node has the labels gpu=yes",
        );
        let mut dead = node("a", 1000, 0, &[]);
        dead.alive = false;
        check(vec![dead], 10, &[], 1, "error: no node is alive");
    }

    #[test]
    fn cpu_and_host_ports_are_resources() {
        let selector = BTreeMap::new();
        let mut nodes = vec![node("a", 1000, 0, &[]), node("b", 1000, 0, &[])];
        let request = Request {
            service: "s",
            memory: 10,
            cpu: 1.5,
            ports: vec![8080],
            selector: &selector,
        };
        let first = choose(&nodes, &request).unwrap().id.clone();
        take(nodes.iter_mut().find(|n| n.id == first).unwrap(), &request);
        let second = choose(&nodes, &request).unwrap().id.clone();
        assert_ne!(first, second, "port 8080 is taken on {first}");
        take(nodes.iter_mut().find(|n| n.id == second).unwrap(), &request);
        let err = choose(&nodes, &request).unwrap_err();
        assert!(err.contains("CPUs"), "{err}");
    }
}
