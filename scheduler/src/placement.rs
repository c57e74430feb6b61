//! Placement: which node a replica goes to. Pure logic over a snapshot of
//! the nodes, no IO, tested table-driven.
//!
//! Filter: the node is alive, not below its `--min-free-disk`, carries
//! every label of the service's node selector, has the memory and CPU the replica requests free after what is
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
    /// Set while it is below its `--min-free-disk` (its heartbeat's words):
    /// it takes no new replicas.
    pub low_disk: Option<String>,
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

/// The best node for the request, or why there is none. One pass over the
/// nodes without allocating; the reason is worked out only when none fits.
pub fn choose<'n>(nodes: &'n [NodeView], request: &Request<'_>) -> Result<&'n NodeView, String> {
    let mut best: Option<(&NodeView, u32, u64)> = None;
    for n in nodes {
        if !fits(n, request) {
            continue;
        }
        let spread = n.per_service.get(request.service).copied().unwrap_or(0);
        let free = n.memory.saturating_sub(n.used_memory);
        let better = match best {
            None => true,
            Some((b, b_spread, b_free)) => {
                (spread, std::cmp::Reverse(free), &n.id)
                    < (b_spread, std::cmp::Reverse(b_free), &b.id)
            }
        };
        if better {
            best = Some((n, spread, free));
        }
    }
    best.map(|(n, _, _)| n)
        .ok_or_else(|| why_not(nodes, request))
}

fn fits(n: &NodeView, request: &Request<'_>) -> bool {
    n.alive
        && n.low_disk.is_none()
        && n.memory.saturating_sub(n.used_memory) >= request.memory
        && n.cpus - n.used_cpus + 1e-9 >= request.cpu
        && request
            .selector
            .iter()
            .all(|(k, v)| n.labels.get(k) == Some(v))
        && request.ports.iter().all(|p| !n.ports.contains(p))
}

/// Why no node fits: the first filter that leaves none.
fn why_not(nodes: &[NodeView], request: &Request<'_>) -> String {
    let alive: Vec<&NodeView> = nodes.iter().filter(|n| n.alive).collect();
    if alive.is_empty() {
        return "no node is alive".into();
    }
    let (alive, low): (Vec<&NodeView>, Vec<&NodeView>) =
        alive.into_iter().partition(|n| n.low_disk.is_none());
    if alive.is_empty() {
        let why: Vec<String> = low
            .iter()
            .map(|n| {
                format!(
                    "node {} has {}",
                    n.name,
                    n.low_disk.as_deref().unwrap_or("")
                )
            })
            .collect();
        return why.join("; ");
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
        return format!("no alive node has the labels {}", wanted.join(","));
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
        return format!(
            "no node has {} MiB free; the most free is {} MiB on {}",
            request.memory,
            free_memory(best),
            best.name
        );
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
        return format!(
            "no node has {} CPUs free; the most free is {:.2} on {}",
            request.cpu,
            free_cpu(best).max(0.0),
            best.name
        );
    }
    let ports: Vec<String> = request.ports.iter().map(u16::to_string).collect();
    format!(
        "host ports {} are taken on every node that fits",
        ports.join(",")
    )
}

/// The nodes of a pass, kept in order of free memory so a choice usually
/// looks at a handful of nodes, not all of them.
pub struct Nodes {
    list: Vec<NodeView>,
    order: std::collections::BTreeSet<(std::cmp::Reverse<u64>, usize)>,
    index: std::collections::HashMap<String, usize>,
}

impl Nodes {
    /// Indexes the nodes (ties in free memory go to the lower id).
    pub fn new(mut list: Vec<NodeView>) -> Self {
        list.sort_by(|a, b| a.id.cmp(&b.id));
        let order = list
            .iter()
            .enumerate()
            .map(|(i, n)| (std::cmp::Reverse(n.memory.saturating_sub(n.used_memory)), i))
            .collect();
        let index = list
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        Self { list, order, index }
    }

    /// The same choice as [`choose`]: fewest replicas of the service, then
    /// most free memory, then lowest id. Walking nodes from the most free,
    /// the first fitting node without a replica of the service wins at once.
    pub fn choose(&self, request: &Request<'_>) -> Result<&NodeView, String> {
        let mut best: Option<(u32, std::cmp::Reverse<u64>, usize)> = None;
        for &(free, i) in &self.order {
            let n = &self.list[i];
            if !fits(n, request) {
                continue;
            }
            let spread = n.per_service.get(request.service).copied().unwrap_or(0);
            if spread == 0 {
                return Ok(n);
            }
            if best.is_none_or(|b| (spread, free, i) < b) {
                best = Some((spread, free, i));
            }
        }
        best.map(|(_, _, i)| &self.list[i])
            .ok_or_else(|| why_not(&self.list, request))
    }

    /// Whether the request fits on the node `id` now.
    pub fn fits(&self, id: &str, request: &Request<'_>) -> bool {
        self.index
            .get(id)
            .is_some_and(|&i| fits(&self.list[i], request))
    }

    /// Records a placement on the node `id`.
    pub fn take(&mut self, id: &str, request: &Request<'_>) {
        self.update(id, |n| take(n, request));
    }

    /// Gives back what a placement on the node `id` took (a replica that
    /// goes in the same decision as the one that replaces it).
    pub fn release(&mut self, id: &str, request: &Request<'_>) {
        self.update(id, |n| release(n, request));
    }

    fn update(&mut self, id: &str, change: impl FnOnce(&mut NodeView)) {
        let Some(&i) = self.index.get(id) else { return };
        let n = &mut self.list[i];
        self.order
            .remove(&(std::cmp::Reverse(n.memory.saturating_sub(n.used_memory)), i));
        change(n);
        self.order
            .insert((std::cmp::Reverse(n.memory.saturating_sub(n.used_memory)), i));
    }
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

/// Undoes [`take`].
pub fn release(node: &mut NodeView, request: &Request<'_>) {
    node.used_memory = node.used_memory.saturating_sub(request.memory);
    node.used_cpus = (node.used_cpus - request.cpu).max(0.0);
    for p in &request.ports {
        node.ports.remove(p);
    }
    if let Some(count) = node.per_service.get_mut(request.service) {
        *count = count.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, memory: u64, used: u64, labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            id: id.into(),
            name: id.into(),
            alive: true,
            low_disk: None,
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
        // A node below its --min-free-disk takes nothing new; the reason
        // names it when no other node fits.
        let low = "3% disk free (1.2GiB of 40.0GiB), below --min-free-disk 10%";
        let mut full = node("n1", 1000, 0, &[]);
        full.low_disk = Some(low.into());
        check(
            vec![full.clone(), node("n2", 100, 0, &[])],
            50,
            &[],
            3,
            "n2 n2 error: no node has 50 MiB free; the most free is 0 MiB on n2",
        );
        check(vec![full], 10, &[], 1, &format!("error: node n1 has {low}"));
    }

    #[test]
    fn the_index_chooses_as_the_scan_does() {
        let selector = BTreeMap::new();
        let mut plain: Vec<NodeView> = (0..20)
            .map(|i| {
                node(
                    &format!("n{i:02}"),
                    1000 + (i * 37 % 300) as u64,
                    (i * 53 % 400) as u64,
                    &[],
                )
            })
            .collect();
        let mut indexed = Nodes::new(plain.clone());
        for round in 0..200 {
            let service = format!("s{}", round % 3);
            let request = Request {
                service: &service,
                memory: 7 + (round % 5) * 11,
                cpu: 0.01,
                ports: vec![],
                selector: &selector,
            };
            let a = choose(&plain, &request).map(|n| n.id.clone());
            let b = indexed.choose(&request).map(|n| n.id.clone());
            assert_eq!(a, b, "round {round}");
            let Ok(id) = a else { break };
            take(plain.iter_mut().find(|n| n.id == id).unwrap(), &request);
            indexed.take(&id, &request);
        }
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
