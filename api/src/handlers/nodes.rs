//! Node routes: join tokens, joining, the node list, removal, and the node
//! channel (`/api/v1/nodes/connect`), the only way a node daemon reaches lb.
//! The work is in [`crate::ops::nodes`]; the channel's websocket is here.
//!
//! While its channel lives the API holds a lease with the node's `alive`
//! key; the channel carries the node's assignments (the whole set first,
//! then changes) one way and its heartbeats and replica statuses the other.
//!
//! Liveness comes from the node, never from the open socket alone: the
//! lease is renewed only while the node's heartbeats keep arriving (one
//! within the TTL), the API pings the node every [`PING`] and closes the
//! channel (revoking the lease) when nothing at all came from the node for
//! [`SILENCE`]. A node that is stopped or cut off while its TCP connection
//! stays open thus loses its `alive` key within [`SILENCE`].

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use lb_model::ingress::RouteTable;
use lb_model::keys::Parsed;
use lb_model::protocol::{FromNode, ToNode};
use lb_model::{now, Assignment};
use lb_store::{Event, Op, StoreExt, Txn};
use serde::Deserialize;
use tracing::Instrument;
use warp::http::StatusCode;
use warp::ws::{Message, WebSocket};

use super::{json, no_content, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::Result;
use crate::ops::nodes;

pub use crate::ops::nodes::{
    authenticate as authenticate_node, forget_by_name, issue_join_token, JOIN_TOKEN_PREFIX,
    NODE_CREDENTIAL_PREFIX,
};

/// TTL of a node's `alive` lease, in seconds.
pub const ALIVE_TTL: i64 = 10;
/// How often the API pings a node over its channel.
pub const PING: Duration = Duration::from_secs(1);
/// A node from which nothing (no message, no pong) came for this long is
/// gone: its channel is closed and its lease revoked.
pub const SILENCE: Duration = Duration::from_secs(3);
/// How long one store call renewing the lease may take before the channel
/// is given up (a store out of reach must not keep a node "alive").
const RENEW_TIMEOUT: Duration = Duration::from_secs(5);

/// `POST /nodes/join-tokens`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenRequest {
    /// Seconds the token stays valid (default 3600, at most 7 days).
    #[serde(default)]
    pub ttl: Option<u64>,
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

/// `POST /nodes/join-tokens` (admin): a single-use token for `lb node`.
pub async fn create_join_token(
    ctx: Ctx,
    caller: Caller,
    body: JoinTokenRequest,
) -> Result<Response> {
    let (token, expires) = nodes::create_join_token(&ctx, &caller, body.ttl).await?;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({"token": token, "expires": expires}),
    ))
}

/// `POST /nodes/join`: exchanges a join token for a node credential.
pub async fn join(ctx: Ctx, body: JoinRequest) -> Result<Response> {
    let joined = nodes::join(&ctx, &body.token, body.name, body.labels).await?;
    Ok(json(StatusCode::CREATED, &joined))
}

/// `GET /nodes`: every node, by name (any signed-in user).
pub async fn list(ctx: Ctx, _caller: Caller) -> Result<Response> {
    Ok(json(StatusCode::OK, &nodes::list(&ctx).await?))
}

/// `GET /nodes/{n}`.
pub async fn get(ctx: Ctx, _caller: Caller, n: String) -> Result<Response> {
    Ok(json(StatusCode::OK, &nodes::get(&ctx, &n).await?))
}

/// `DELETE /nodes/{n}` (admin): revokes the credential and forgets the node.
pub async fn delete(ctx: Ctx, caller: Caller, n: String) -> Result<Response> {
    nodes::delete(&ctx, &caller, &n).await?;
    Ok(no_content())
}

/// Serves one node's channel until it closes or the credential is revoked.
pub async fn channel(ctx: Ctx, nid: String, socket: WebSocket) {
    // The span follows the future, not the thread: other tasks' log lines
    // never land inside it.
    let span = tracing::info_span!("node channel", node = %nid);
    async {
        if let Err(err) = run_channel(&ctx, &nid, socket).await {
            tracing::warn!(node = %nid, error = %err, "node channel ended");
        }
    }
    .instrument(span)
    .await
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
        // The scheduler publishes its grace; the node stops its replicas
        // after that long without the API (it must assume they moved).
        let grace_ms = ctx
            .store
            .get(&ctx.keys.cluster("node-grace"))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|kv| String::from_utf8_lossy(&kv.value).trim().parse::<u64>().ok());
        send(&mut tx, &ToNode::Desired { replicas, registry, grace_ms }).await?;
        let mut watch = ctx.store.watch(&prefix, revision + 1).await.map_err(|e| e.to_string())?;
        let ttl = Duration::from_secs(ALIVE_TTL as u64);
        let mut keepalive = tokio::time::interval(ttl / 3);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ping = tokio::time::interval(PING);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The last frame of any kind, and the last hello or heartbeat.
        let mut heard = tokio::time::Instant::now();
        let mut heartbeat = heard;
        // Ingress nodes (they say so in their hello) follow the route table.
        let mut routes = None;
        loop {
            tokio::select! {
                _ = keepalive.tick() => {
                    // Renewed only for a node that still speaks: a socket
                    // left open by a stopped or cut-off node keeps nothing.
                    if heartbeat.elapsed() >= ttl {
                        return Err(format!("no heartbeat for {} s", heartbeat.elapsed().as_secs()));
                    }
                    let renew = async {
                        if ctx.store.get(&ctx.keys.node_credential(nid)).await.map_err(|e| e.to_string())?.is_none() {
                            return Err("credential revoked".to_string());
                        }
                        ctx.store.lease_keep_alive(lease).await.map_err(|e| e.to_string())
                    };
                    tokio::time::timeout(RENEW_TIMEOUT, renew)
                        .await
                        .map_err(|_| "the store did not renew the lease in time".to_string())??;
                }
                _ = ping.tick() => deliver(&mut tx, Message::ping(Vec::new())).await?,
                _ = tokio::time::sleep_until(heard + SILENCE) => {
                    return Err(format!("node silent for {} ms", heard.elapsed().as_millis()));
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
                table = next_table(&mut routes) => {
                    send(&mut tx, &ToNode::Routes(Box::new((*table).clone()))).await?;
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
                    heard = tokio::time::Instant::now();
                    let Ok(text) = message.to_str() else { continue };
                    match serde_json::from_str::<FromNode>(text) {
                        Ok(msg) => {
                            if matches!(msg, FromNode::Hello { .. } | FromNode::Heartbeat(_)) {
                                heartbeat = heard;
                            }
                            if let FromNode::Hello { ingress: true, .. } = &msg {
                                let mut follow = ctx.routes.subscribe();
                                let table = follow.borrow_and_update().clone();
                                send(&mut tx, &ToNode::Routes(Box::new((*table).clone()))).await?;
                                routes = Some(follow);
                            }
                            nodes::apply(ctx, nid, msg).await?
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable message from node"),
                    }
                }
            }
        }
    }
    .await;
    // The socket is closed first, and the revoke bounded: a store out of
    // reach (the lease then lapses on its own) must not hold the channel.
    drop((tx, rx));
    ctx.streams.detach(nid, connection);
    let _ = tokio::time::timeout(RENEW_TIMEOUT, ctx.store.lease_revoke(lease)).await;
    tracing::info!(node = %nid, "node disconnected");
    result
}

/// The next route table for an ingress node; never, for other nodes.
async fn next_table(
    routes: &mut Option<tokio::sync::watch::Receiver<std::sync::Arc<RouteTable>>>,
) -> std::sync::Arc<RouteTable> {
    if let Some(rx) = routes {
        if rx.changed().await.is_ok() {
            return rx.borrow_and_update().clone();
        }
    }
    std::future::pending().await
}

async fn send(
    tx: &mut futures::stream::SplitSink<WebSocket, Message>,
    message: &ToNode,
) -> std::result::Result<(), String> {
    let text = serde_json::to_string(message).map_err(|e| e.to_string())?;
    deliver(tx, Message::text(text)).await
}

/// Sends one frame; a node that does not take it within [`SILENCE`] (its
/// socket buffers full: stopped, or cut off) is gone, so a send never holds
/// the channel's loop past the silence deadline.
async fn deliver(
    tx: &mut futures::stream::SplitSink<WebSocket, Message>,
    message: Message,
) -> std::result::Result<(), String> {
    match tokio::time::timeout(SILENCE, tx.send(message)).await {
        Ok(sent) => sent.map_err(|e| e.to_string()),
        Err(_) => Err(format!("node took no frame for {} ms", SILENCE.as_millis())),
    }
}
