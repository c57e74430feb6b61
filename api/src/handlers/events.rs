//! `GET /api/v1/events`: a websocket of the changes the caller may see —
//! projects, services, replicas, builds and nodes.
//!
//! Without `?revision=` it starts with a snapshot (`{"type": "snapshot",
//! "revision": R, "items": [...]}`) and then streams every change after R, so
//! nothing falls between the two. With `?revision=N` it resumes: changes from
//! N on, no snapshot. Each change is `{"type": "put"|"delete", "kind", "id",
//! "project", "service", "revision", "object"}`. When N was compacted away it
//! sends `{"type": "error", "code": "compacted"}` and closes: reconnect
//! without a revision for a fresh snapshot.
//!
//! A user sees their own projects and everything in them, and the nodes; an
//! admin sees everything. Users, tokens, indexes and settings never appear.

use std::collections::HashSet;

use futures::{SinkExt, StreamExt};
use lb_model::keys::Parsed;
use lb_model::Project;
use lb_store::{Event, KeyValue, StoreExt};
use serde::Deserialize;
use serde_json::{json, Value};
use warp::ws::{Message, WebSocket};

use crate::auth::Caller;
use crate::context::Ctx;

/// `?revision=N` to resume.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Resume from this revision (inclusive).
    pub revision: Option<i64>,
    /// Access token, for clients that cannot set headers on websockets.
    #[allow(dead_code)]
    pub access_token: Option<String>,
}

/// Which keys the caller may see.
struct Visibility {
    admin: bool,
    uid: String,
    projects: HashSet<String>,
}

impl Visibility {
    /// Updates the set of visible projects from a project record change, then
    /// answers whether the key is visible.
    fn visible(&mut self, parsed: &Parsed<'_>, kv: Option<&KeyValue>) -> bool {
        if let (Parsed::Project { pid }, Some(kv)) = (parsed, kv) {
            if let Ok(project) = serde_json::from_slice::<Project>(&kv.value) {
                if project.owner == self.uid {
                    self.projects.insert(pid.to_string());
                }
            }
        }
        match parsed {
            Parsed::NodeMeta { .. } | Parsed::NodeStatus { .. } | Parsed::NodeAlive { .. } => true,
            // Scripts and their runs are not events (bodies, env, output).
            Parsed::Other
            | Parsed::NodeReplica { .. }
            | Parsed::Script { .. }
            | Parsed::ScriptRun { .. } => false,
            Parsed::Project { pid }
            | Parsed::ServiceMeta { pid, .. }
            | Parsed::ServiceSpec { pid, .. }
            | Parsed::Replica { pid, .. }
            | Parsed::ReplicaStatus { pid, .. }
            | Parsed::Build { pid, .. }
            | Parsed::Deploy { pid, .. } => self.admin || self.projects.contains(*pid),
        }
    }
}

/// The kind, id, project and service of a visible key.
fn describe(parsed: &Parsed<'_>) -> (&'static str, String, Option<String>, Option<String>) {
    let s = |x: &str| Some(x.to_owned());
    match parsed {
        Parsed::Project { pid } => ("project", pid.to_string(), None, None),
        Parsed::ServiceMeta { pid, sid } => ("service", sid.to_string(), s(pid), s(sid)),
        Parsed::ServiceSpec { pid, sid } => ("service_spec", sid.to_string(), s(pid), s(sid)),
        Parsed::Replica { pid, sid, rid } => ("replica", rid.to_string(), s(pid), s(sid)),
        Parsed::ReplicaStatus { pid, sid, rid } => {
            ("replica_status", rid.to_string(), s(pid), s(sid))
        }
        Parsed::Build { pid, sid, number } => (
            "build",
            number.trim_start_matches('0').to_string(),
            s(pid),
            s(sid),
        ),
        Parsed::Deploy {
            pid,
            sid,
            generation,
        } => (
            "deploy",
            generation.trim_start_matches('0').to_string(),
            s(pid),
            s(sid),
        ),
        Parsed::NodeMeta { nid } => ("node", nid.to_string(), None, None),
        Parsed::NodeStatus { nid } => ("node_status", nid.to_string(), None, None),
        Parsed::NodeAlive { nid } => ("node_alive", nid.to_string(), None, None),
        Parsed::NodeReplica { .. }
        | Parsed::Script { .. }
        | Parsed::ScriptRun { .. }
        | Parsed::Other => ("other", String::new(), None, None),
    }
}

fn item(kind_type: &str, parsed: &Parsed<'_>, kv: &KeyValue) -> Value {
    let (kind, id, project, service) = describe(parsed);
    let object = if kind_type == "delete" {
        Value::Null
    } else {
        serde_json::from_slice(&kv.value).unwrap_or(Value::Null)
    };
    json!({
        "type": kind_type, "kind": kind, "id": id, "project": project, "service": service,
        "revision": kv.mod_revision, "object": object,
    })
}

/// Serves one events websocket until the client goes or the server stops.
pub async fn serve(ctx: Ctx, caller: Caller, query: EventsQuery, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let result = stream(&ctx, &caller, query.revision, &mut tx, &mut rx).await;
    if let Err(message) = result {
        let _ = tx.send(Message::text(message.to_string())).await;
    }
    let _ = tx.send(Message::close()).await;
}

async fn stream(
    ctx: &Ctx,
    caller: &Caller,
    from: Option<i64>,
    tx: &mut futures::stream::SplitSink<WebSocket, Message>,
    rx: &mut futures::stream::SplitStream<WebSocket>,
) -> Result<(), Value> {
    let internal = |e: lb_store::Error| json!({"type": "error", "code": "unavailable", "message": e.to_string()});
    let mut vis = Visibility {
        admin: caller.is_admin(),
        uid: caller.user.id.clone(),
        projects: HashSet::new(),
    };
    let (own, _) = ctx
        .store
        .list(&ctx.keys.project_index_prefix(&caller.user.id))
        .await
        .map_err(internal)?;
    vis.projects.extend(
        own.iter()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
    );
    let root = ctx.keys.all();
    let start = match from {
        Some(revision) if revision > 0 => revision,
        Some(revision) => {
            return Err(
                json!({"type": "error", "code": "invalid", "message": format!("revision {revision} must be positive")}),
            )
        }
        None => {
            let (kvs, revision) = ctx.store.list(&root).await.map_err(internal)?;
            let mut items = Vec::new();
            for kv in &kvs {
                if let Some(parsed) = ctx.keys.parse(&kv.key) {
                    if vis.visible(&parsed, Some(kv)) {
                        items.push(item("put", &parsed, kv));
                    }
                }
            }
            let snapshot = json!({"type": "snapshot", "revision": revision, "items": items});
            if tx.send(Message::text(snapshot.to_string())).await.is_err() {
                return Ok(());
            }
            revision + 1
        }
    };
    let mut watch = match ctx.store.watch(&root, start).await {
        Ok(watch) => watch,
        Err(lb_store::Error::Compacted {
            compact_revision, ..
        }) => return Err(compacted(start, compact_revision)),
        Err(e) => return Err(internal(e)),
    };
    loop {
        tokio::select! {
            changes = watch.next() => {
                let changes = match changes {
                    Some(Ok(changes)) => changes,
                    Some(Err(lb_store::Error::Compacted { compact_revision, .. })) => {
                        return Err(compacted(start, compact_revision))
                    }
                    Some(Err(e)) => return Err(internal(e)),
                    None => return Ok(()),
                };
                for event in &changes.events {
                    let (kind_type, kv) = match event {
                        Event::Put(kv) => ("put", kv),
                        Event::Delete(kv) => ("delete", kv),
                    };
                    let Some(parsed) = ctx.keys.parse(&kv.key) else { continue };
                    let value = matches!(event, Event::Put(_)).then_some(kv);
                    if !vis.visible(&parsed, value) {
                        continue;
                    }
                    if tx.send(Message::text(item(kind_type, &parsed, kv).to_string())).await.is_err() {
                        return Ok(());
                    }
                    if let (Parsed::Project { pid }, "delete") = (&parsed, kind_type) {
                        vis.projects.remove(*pid);
                    }
                }
            }
            incoming = rx.next() => {
                match incoming {
                    Some(Ok(message)) if message.is_close() => return Ok(()),
                    Some(Ok(_)) => {}
                    _ => return Ok(()),
                }
            }
        }
    }
}

fn compacted(start: i64, compact_revision: i64) -> Value {
    json!({
        "type": "error", "code": "compacted",
        "message": format!("revision {start} was compacted (oldest kept is {compact_revision}); reconnect without a revision for a snapshot"),
    })
}
