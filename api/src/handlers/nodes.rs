//! Nodes: join tokens, joining, the node list, removal, and the node channel
//! (`/api/v1/nodes/connect`), the only way a node daemon reaches lb.
//!
//! A node authenticates with its credential (`lbn_<node id>_<secret>`, kept
//! hashed in the store). While its channel lives the API holds a lease with
//! the node's `alive` key; the channel carries the node's assignments (the
//! whole set first, then changes) one way and its heartbeats and replica
//! statuses the other. A node sees and reports only its own replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use lb_model::ids::{is_id, new_id};
use lb_model::keys::Parsed;
use lb_model::protocol::{FromNode, ToNode};
use lb_model::{check_name, validate_label, Assignment, Capacity, Node, NodeStatus};
use lb_store::{Compare, Event, Op, StoreExt, Txn};
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;
use warp::ws::{Message, WebSocket};

use super::{decode, encode, json, no_content, Response};
use crate::accounts::now;
use crate::auth::{constant_time_eq, hash_secret, Caller};
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::models::List;

/// Prefix of join tokens.
pub const JOIN_TOKEN_PREFIX: &str = "lbj_";
/// Prefix of node credentials.
pub const NODE_CREDENTIAL_PREFIX: &str = "lbn_";
/// TTL of a node's `alive` lease, in seconds.
pub const ALIVE_TTL: i64 = 10;

/// `POST /nodes/join-tokens`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenRequest {
    /// Seconds the token stays valid (default 3600, at most 7 days).
    #[serde(default)]
    pub ttl: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct JoinTokenRecord {
    hash: String,
    expires: i64,
}

/// `POST /nodes/join`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The join token.
    pub token: String,
    /// The node's name, a DNS label unique in the cluster.
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CredentialRecord {
    hash: String,
    created: i64,
}

/// A node as listed.
#[derive(Debug, Serialize)]
pub struct NodeView {
    id: String,
    name: String,
    labels: BTreeMap<String, String>,
    address: String,
    alive: bool,
    capacity: Capacity,
    status: Option<NodeStatus>,
    created: i64,
}

fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST /nodes/join-tokens` (admin): a single-use token for `lb node`.
pub async fn create_join_token(
    ctx: Ctx,
    caller: Caller,
    body: JoinTokenRequest,
) -> Result<Response> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden("only an admin creates join tokens"));
    }
    let ttl = body.ttl.unwrap_or(3600);
    if !(10..=7 * 86400).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl",
            format!("{ttl} s is out of range (10 s to 7 days)"),
        ));
    }
    let (token, expires) = issue_join_token(ctx.store.as_ref(), &ctx.keys, ttl).await?;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({"token": token, "expires": expires}),
    ))
}

/// Stores a new single-use join token valid for `ttl` seconds; answers the
/// token (shown once) and its expiry. `lb up` uses it to join its own node.
pub async fn issue_join_token(
    store: &dyn lb_store::Store,
    keys: &lb_model::keys::Keys,
    ttl: u64,
) -> std::result::Result<(String, i64), lb_store::Error> {
    let id = new_id();
    let secret = random_secret();
    let record = JoinTokenRecord {
        hash: hash_secret(&secret),
        expires: now() + ttl as i64,
    };
    store.put(&keys.join_token(&id), encode(&record)).await?;
    Ok((format!("{JOIN_TOKEN_PREFIX}{id}_{secret}"), record.expires))
}

/// `POST /nodes/join`: exchanges a join token for a node credential. The
/// token is deleted in the same transaction that creates the node, so it
/// works once.
pub async fn join(ctx: Ctx, body: JoinRequest) -> Result<Response> {
    let refused = || {
        ApiError::unauthorized("join token invalid, used or expired: ask an admin for a new one")
    };
    let rest = body
        .token
        .strip_prefix(JOIN_TOKEN_PREFIX)
        .ok_or_else(refused)?;
    let (id, secret) = rest.split_once('_').ok_or_else(refused)?;
    if !is_id(id) {
        return Err(refused());
    }
    check_name("name", &body.name)?;
    for (k, v) in &body.labels {
        validate_label(k, v).map_err(|m| ApiError::invalid("labels", m))?;
    }
    let key = ctx.keys.join_token(id);
    let kv = ctx.store.get(&key).await?.ok_or_else(refused)?;
    let record: JoinTokenRecord = decode(&kv)?;
    if !constant_time_eq(record.hash.as_bytes(), hash_secret(secret).as_bytes())
        || record.expires < now()
    {
        return Err(refused());
    }
    let index = ctx.keys.node_index(&body.name);
    if ctx.store.get(&index).await?.is_some() {
        return Err(
            ApiError::conflict(format!("node name {:?} is taken", body.name)).with_field("name"),
        );
    }
    let node = Node {
        id: new_id(),
        name: body.name.clone(),
        labels: body.labels,
        address: String::new(),
        capacity: Capacity::default(),
        created: now(),
    };
    let credential_secret = random_secret();
    let credential = CredentialRecord {
        hash: hash_secret(&credential_secret),
        created: now(),
    };
    let txn = Txn::new()
        .when(Compare::ModRevision(key.clone(), kv.mod_revision))
        .when(Compare::ModRevision(index.clone(), 0))
        .then(Op::delete(key))
        .then(Op::put(ctx.keys.node_meta(&node.id), encode(&node)))
        .then(Op::put(
            ctx.keys.node_credential(&node.id),
            encode(&credential),
        ))
        .then(Op::put(index, node.id.clone().into_bytes()));
    if !ctx.store.txn(txn).await?.succeeded {
        return Err(refused());
    }
    tracing::info!(node = %node.id, name = %node.name, "node joined");
    let token = format!("{NODE_CREDENTIAL_PREFIX}{}_{credential_secret}", node.id);
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({"id": node.id, "name": node.name, "credential": token}),
    ))
}

/// Removes the node of this name, if any, with its credential and
/// assignments (for `lb up`, which owns its local node).
pub async fn forget_by_name(
    store: &dyn lb_store::Store,
    keys: &lb_model::keys::Keys,
    name: &str,
) -> std::result::Result<(), lb_store::Error> {
    let index = keys.node_index(name);
    let Some(kv) = store.get(&index).await? else {
        return Ok(());
    };
    let nid = String::from_utf8_lossy(&kv.value).into_owned();
    let txn = Txn::new()
        .when(Compare::ModRevision(index.clone(), kv.mod_revision))
        .then(Op::DeletePrefix(keys.node_prefix(&nid)))
        .then(Op::delete(index));
    store.txn(txn).await?;
    Ok(())
}

/// Resolves a node credential to the node id.
pub async fn authenticate_node(ctx: &Ctx, token: &str) -> Result<String> {
    let refused = || ApiError::unauthorized("node credential invalid or revoked");
    let rest = token
        .strip_prefix(NODE_CREDENTIAL_PREFIX)
        .ok_or_else(refused)?;
    let (nid, secret) = rest.split_once('_').ok_or_else(refused)?;
    if !is_id(nid) {
        return Err(refused());
    }
    let kv = ctx
        .store
        .get(&ctx.keys.node_credential(nid))
        .await?
        .ok_or_else(refused)?;
    let record: CredentialRecord = decode(&kv)?;
    if !constant_time_eq(record.hash.as_bytes(), hash_secret(secret).as_bytes()) {
        return Err(refused());
    }
    Ok(nid.to_owned())
}

async fn view(ctx: &Ctx, nid: &str) -> Result<Option<NodeView>> {
    let records = super::projects::get_many(
        ctx,
        vec![
            ctx.keys.node_meta(nid),
            ctx.keys.node_status(nid),
            ctx.keys.node_alive(nid),
        ],
    )
    .await?;
    let Some(meta) = &records[0] else {
        return Ok(None);
    };
    let node: Node = decode(meta)?;
    let status = records[1].as_ref().map(decode).transpose()?;
    Ok(Some(NodeView {
        id: node.id,
        name: node.name,
        labels: node.labels,
        address: node.address,
        alive: records[2].is_some(),
        capacity: node.capacity,
        status,
        created: node.created,
    }))
}

/// `GET /nodes`: every node, by name (any signed-in user).
pub async fn list(ctx: Ctx, _caller: Caller) -> Result<Response> {
    let (index, _) = ctx.store.list(&ctx.keys.node_index("")).await?;
    let mut items = Vec::new();
    for kv in index {
        let nid = String::from_utf8_lossy(&kv.value).into_owned();
        items.extend(view(&ctx, &nid).await?);
    }
    Ok(json(
        StatusCode::OK,
        &List {
            total: items.len(),
            items,
        },
    ))
}

async fn resolve(ctx: &Ctx, reference: &str) -> Result<String> {
    if is_id(reference) {
        return Ok(reference.to_owned());
    }
    match ctx.store.get(&ctx.keys.node_index(reference)).await? {
        Some(kv) => Ok(String::from_utf8_lossy(&kv.value).into_owned()),
        None => Err(ApiError::not_found(format!("node {reference:?} not found"))),
    }
}

/// `GET /nodes/{n}`.
pub async fn get(ctx: Ctx, _caller: Caller, n: String) -> Result<Response> {
    let nid = resolve(&ctx, &n).await?;
    match view(&ctx, &nid).await? {
        Some(node) => Ok(json(StatusCode::OK, &node)),
        None => Err(ApiError::not_found(format!("node {n:?} not found"))),
    }
}

/// `DELETE /nodes/{n}` (admin): revokes the credential and forgets the node;
/// its open channel closes within a heartbeat.
pub async fn delete(ctx: Ctx, caller: Caller, n: String) -> Result<Response> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden("only an admin removes nodes"));
    }
    let nid = resolve(&ctx, &n).await?;
    let Some(meta) = ctx.store.get(&ctx.keys.node_meta(&nid)).await? else {
        return Err(ApiError::not_found(format!("node {n:?} not found")));
    };
    let node: Node = decode(&meta)?;
    let txn = Txn::new()
        .when(Compare::ModRevision(meta.key.clone(), meta.mod_revision))
        .then(Op::DeletePrefix(ctx.keys.node_prefix(&nid)))
        .then(Op::delete(ctx.keys.node_index(&node.name)));
    if !ctx.store.txn(txn).await?.succeeded {
        return Err(ApiError::conflict(format!(
            "node {n:?} changed meanwhile; try again"
        )));
    }
    tracing::info!(node = %nid, "node removed and its credential revoked");
    Ok(no_content())
}

/// Serves one node's channel until it closes or the credential is revoked.
pub async fn channel(ctx: Ctx, nid: String, socket: WebSocket) {
    let span = tracing::info_span!("node channel", node = %nid);
    let _guard = span.enter();
    if let Err(err) = run_channel(&ctx, &nid, socket).await {
        tracing::warn!(node = %nid, error = %err, "node channel ended");
    }
}

async fn run_channel(ctx: &Ctx, nid: &str, socket: WebSocket) -> std::result::Result<(), String> {
    let (mut tx, mut rx) = socket.split();
    let lease = ctx
        .store
        .lease_grant(ALIVE_TTL)
        .await
        .map_err(|e| e.to_string())?;
    let mut alive = Txn::new().then(Op::Put {
        key: ctx.keys.node_alive(nid),
        value: serde_json::json!({"since": now()}).to_string().into_bytes(),
        lease,
    });
    if let Some(peers) = ctx.streams.peers() {
        // Other instances forward this node's streams here.
        alive = alive.then(Op::Put {
            key: ctx.keys.node_channel(nid),
            value: peers.url.clone().into_bytes(),
            lease,
        });
    }
    ctx.store.txn(alive).await.map_err(|e| e.to_string())?;
    tracing::info!(node = %nid, "node connected");
    let (connection, mut requests) = ctx.streams.attach(nid);
    let result = async {
        let prefix = ctx.keys.node_replicas(nid);
        let (kvs, revision) = ctx.store.list(&prefix).await.map_err(|e| e.to_string())?;
        let replicas = kvs.iter().filter_map(|kv| serde_json::from_slice::<Assignment>(&kv.value).ok()).collect();
        let registry = ctx
            .store
            .get(&ctx.keys.cluster("registry"))
            .await
            .map_err(|e| e.to_string())?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        send(&mut tx, &ToNode::Desired { replicas, registry }).await?;
        let mut watch = ctx.store.watch(&prefix, revision + 1).await.map_err(|e| e.to_string())?;
        let mut keepalive = tokio::time::interval(Duration::from_secs((ALIVE_TTL / 3).max(1) as u64));
        loop {
            tokio::select! {
                _ = keepalive.tick() => {
                    if ctx.store.get(&ctx.keys.node_credential(nid)).await.map_err(|e| e.to_string())?.is_none() {
                        return Err("credential revoked".to_string());
                    }
                    ctx.store.lease_keep_alive(lease).await.map_err(|e| e.to_string())?;
                }
                changes = watch.next() => {
                    let changes = match changes {
                        Some(Ok(changes)) => changes,
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Err("watch ended".into()),
                    };
                    for event in changes.events {
                        let message = match event {
                            Event::Put(kv) => match serde_json::from_slice::<Assignment>(&kv.value) {
                                Ok(a) => ToNode::Put(Box::new(a)),
                                Err(e) => { tracing::warn!(key = %kv.key, error = %e, "bad assignment"); continue }
                            },
                            Event::Delete(kv) => match ctx.keys.parse(&kv.key) {
                                Some(Parsed::NodeReplica { rid, .. }) => ToNode::Delete { replica: rid.to_owned() },
                                _ => continue,
                            },
                        };
                        send(&mut tx, &message).await?;
                    }
                }
                request = requests.recv() => {
                    if let Some(request) = request {
                        send(&mut tx, &request).await?;
                    }
                }
                incoming = rx.next() => {
                    let message = match incoming {
                        Some(Ok(m)) if m.is_close() => return Ok(()),
                        Some(Ok(m)) => m,
                        _ => return Ok(()),
                    };
                    let Ok(text) = message.to_str() else { continue };
                    match serde_json::from_str::<FromNode>(text) {
                        Ok(msg) => handle(ctx, nid, msg).await?,
                        Err(e) => tracing::warn!(error = %e, "unreadable message from node"),
                    }
                }
            }
        }
    }
    .await;
    ctx.streams.detach(nid, connection);
    let _ = ctx.store.lease_revoke(lease).await;
    tracing::info!(node = %nid, "node disconnected");
    result
}

async fn send(
    tx: &mut futures::stream::SplitSink<WebSocket, Message>,
    message: &ToNode,
) -> std::result::Result<(), String> {
    let text = serde_json::to_string(message).map_err(|e| e.to_string())?;
    tx.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())
}

/// Applies one message from a node.
async fn handle(ctx: &Ctx, nid: &str, message: FromNode) -> std::result::Result<(), String> {
    let err = |e: lb_store::Error| e.to_string();
    match message {
        FromNode::Hello { address, capacity } => {
            let key = ctx.keys.node_meta(nid);
            for _ in 0..5 {
                let Some(kv) = ctx.store.get(&key).await.map_err(err)? else {
                    return Err("node removed".into());
                };
                let mut node: Node =
                    serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?;
                node.address = address.chars().take(255).collect();
                node.capacity = capacity.clone();
                if ctx
                    .store
                    .put_if(&key, encode(&node), kv.mod_revision)
                    .await
                    .map_err(err)?
                    .is_some()
                {
                    break;
                }
            }
        }
        FromNode::Heartbeat(status) => {
            ctx.store
                .put(&ctx.keys.node_status(nid), encode(&status))
                .await
                .map_err(err)?;
        }
        answer @ (FromNode::Logs { .. }
        | FromNode::Exec { .. }
        | FromNode::Output { .. }
        | FromNode::End { .. }) => ctx.streams.answer(answer),
        FromNode::Status { replica, status } => {
            // Only a replica assigned to this node, and only while its
            // placement exists: a node never writes into other services.
            let Some(kv) = ctx
                .store
                .get(&ctx.keys.node_replica(nid, &replica))
                .await
                .map_err(err)?
            else {
                return Ok(());
            };
            let Ok(assignment) = serde_json::from_slice::<Assignment>(&kv.value) else {
                return Ok(());
            };
            let placement = ctx
                .keys
                .replica(&assignment.project, &assignment.service, &replica);
            let Some(placed) = ctx.store.get(&placement).await.map_err(err)? else {
                return Ok(());
            };
            let txn = Txn::new()
                .when(Compare::ModRevision(placement, placed.mod_revision))
                .then(Op::put(
                    ctx.keys
                        .replica_status(&assignment.project, &assignment.service, &replica),
                    encode(&status),
                ));
            ctx.store.txn(txn).await.map_err(err)?;
        }
    }
    Ok(())
}
