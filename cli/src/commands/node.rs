//! `lbc node ls | get`.

use serde_json::Value;

use crate::args::NodeCmd;
use crate::client::segment;
use crate::error::Result;
use crate::output::{age, paint_state, s, Shown, Table};
use crate::session::Session;

fn labels(node: &Value) -> String {
    node["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn alive(node: &Value, color: bool) -> String {
    let word = if node["alive"].as_bool().unwrap_or(false) {
        "alive"
    } else {
        "lost"
    };
    paint_state(word, color)
}

fn memory(node: &Value) -> String {
    let total = node["capacity"]["memory"].as_u64();
    let free = node["status"]["free_memory"].as_u64();
    match (free, total) {
        (Some(f), Some(t)) => format!("{f}/{t} MiB free"),
        (None, Some(t)) => format!("{t} MiB"),
        _ => String::new(),
    }
}

/// Runs `lbc node ...`.
pub async fn run(session: &mut Session, cmd: NodeCmd) -> Result<()> {
    let client = session.client()?;
    let color = session.out.color;
    match cmd {
        NodeCmd::Ls => {
            let list = client.get("/nodes").await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
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
                            s(n, "name"),
                            alive(n, color),
                            s(&n["capacity"], "cpus"),
                            memory(n),
                            s(&n["status"], "containers"),
                            labels(n),
                            age(n, "created"),
                        ]
                    })
                    .collect(),
            };
            let ids = items.iter().map(|n| s(n, "id")).collect();
            session.out.show(Shown::List {
                value: list,
                table,
                ids,
            })
        }
        NodeCmd::Get { name } => {
            let node = client.get(&format!("/nodes/{}", segment(&name))).await?;
            let load = node["status"]["load_average"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| format!("{:.2}", x.as_f64().unwrap_or(0.0)))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let fields = vec![
                ("Name", s(&node, "name")),
                ("Id", s(&node, "id")),
                ("Status", alive(&node, color)),
                ("Address", s(&node, "address")),
                ("Labels", labels(&node)),
                ("CPUs", s(&node["capacity"], "cpus")),
                ("Memory", memory(&node)),
                ("Disk", format!("{} MiB", s(&node["capacity"], "disk"))),
                ("Containers", s(&node["status"], "containers")),
                ("Load average", load),
                ("Age", age(&node, "created")),
            ];
            session.out.show(Shown::One {
                id: s(&node, "id"),
                fields,
                value: node,
            })
        }
    }
}
