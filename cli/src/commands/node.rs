//! `lbc node ls | get`.

use lb_model::views::{List, NodeView};

use crate::args::NodeCmd;
use crate::client::{segment, typed};
use crate::error::Result;
use crate::output::{age, number, paint_state, Shown, Table};
use crate::session::Session;

fn labels(node: &NodeView) -> String {
    node.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `alive`, `lost`, or why an alive node is not ready (`isolation not
/// enforced`, `low disk`).
fn alive(node: &NodeView, color: bool) -> String {
    match node.state.as_str() {
        // An API that does not say (older): alive or lost.
        "" | "ready" => paint_state(if node.alive { "alive" } else { "lost" }, color),
        state => paint_state(state, color),
    }
}

/// What keeps the node from isolating its tenants, one per line.
fn problems(node: &NodeView) -> String {
    node.status
        .as_ref()
        .map(|s| s.problems.join("\n"))
        .unwrap_or_default()
}

fn memory(node: &NodeView) -> String {
    let total = node.capacity.memory;
    match &node.status {
        Some(status) => format!("{}/{total} MiB free", status.free_memory),
        None => format!("{total} MiB"),
    }
}

fn containers(node: &NodeView) -> String {
    node.status
        .as_ref()
        .map(|s| s.containers.to_string())
        .unwrap_or_default()
}

/// Runs `lbc node ...`.
pub async fn run(session: &mut Session, cmd: NodeCmd) -> Result<()> {
    let client = session.client()?;
    let color = session.out.color;
    match cmd {
        NodeCmd::Ls => {
            let list = client.get("/nodes").await?;
            let items = typed::<List<NodeView>>(&list)?.items;
            let table = Table {
                headers: vec![
                    "NAME",
                    "STATUS",
                    "CPUS",
                    "MEMORY",
                    "CONTAINERS",
                    "LABELS",
                    "AGE",
                ],
                rows: items
                    .iter()
                    .map(|n| {
                        vec![
                            n.name.clone(),
                            alive(n, color),
                            number(n.capacity.cpus),
                            memory(n),
                            containers(n),
                            labels(n),
                            age(n.created),
                        ]
                    })
                    .collect(),
            };
            let ids = items.into_iter().map(|n| n.id).collect();
            session.out.show(Shown::List {
                value: list,
                table,
                ids,
            })
        }
        NodeCmd::Get { name } => {
            let value = client.get(&format!("/nodes/{}", segment(&name))).await?;
            let node: NodeView = typed(&value)?;
            let load = node
                .status
                .as_ref()
                .map(|s| {
                    s.load_average
                        .iter()
                        .map(|x| format!("{x:.2}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let fields = vec![
                ("Name", node.name.clone()),
                ("Id", node.id.clone()),
                ("Status", alive(&node, color)),
                ("Address", node.address.clone()),
                ("Labels", labels(&node)),
                ("CPUs", number(node.capacity.cpus)),
                ("Memory", memory(&node)),
                ("Disk", format!("{} MiB", node.capacity.disk)),
                ("Containers", containers(&node)),
                ("Load average", load),
                ("Problems", problems(&node)),
                ("Age", age(node.created)),
            ];
            session.out.show(Shown::One {
                id: node.id,
                fields,
                value,
            })
        }
    }
}
