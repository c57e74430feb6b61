//! Nodes: join tokens, joining, credentials, the node list, removal, and
//! what a node's messages change in the store.
//!
//! A node authenticates with its credential (`lbn_<node id>_<secret>`, kept
//! hashed in the store). A node sees and reports only its own replicas.

use std::collections::BTreeMap;

use lb_model::ids::{is_id, new_id};
use lb_model::protocol::FromNode;
use lb_model::{check_name, now, validate_label, Assignment, Capacity, Node};
use lb_store::{Compare, Op, StoreExt, Txn};
use serde::{Deserialize, Serialize};

use super::{get_many, ids_of, resolve};
use crate::auth::{constant_time_eq, hash_secret, Caller};
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::{decode, encode};
use crate::models::{List, NodeView};

/// Prefix of join tokens.
pub const JOIN_TOKEN_PREFIX: &str = "lbj_";
/// Prefix of node credentials.
pub const NODE_CREDENTIAL_PREFIX: &str = "lbn_";

#[derive(Debug, Serialize, Deserialize)]
struct JoinTokenRecord {
    hash: String,
    expires: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CredentialRecord {
    hash: String,
    created: i64,
}

/// A node that joined: its id, name and credential (shown once).
#[derive(Debug, Serialize)]
pub struct Joined {
    /// The node's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `lbn_<id>_<secret>`.
    pub credential: String,
}

fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Nodes (their addresses, capacity, labels, what runs where) are the
/// operator's: only an admin reads them.
pub fn check_reader(caller: &Caller) -> Result<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only an admin sees the nodes"))
    }
}

/// A single-use join token valid for `ttl` seconds (10 s to 7 days),
/// made by an admin; answers the token and its expiry.
pub async fn create_join_token(
    ctx: &Ctx,
    caller: &Caller,
    ttl: Option<u64>,
) -> Result<(String, i64)> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden("only an admin creates join tokens"));
    }
    let ttl = ttl.unwrap_or(3600);
    if !(10..=7 * 86400).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl",
            format!("{ttl} s is out of range (10 s to 7 days)"),
        ));
    }
    Ok(issue_join_token(ctx.store.as_ref(), &ctx.keys, ttl).await?)
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

/// Exchanges a join token for a node credential. The token is deleted in
/// the same transaction that creates the node, so it works once.
pub async fn join(
    ctx: &Ctx,
    token: &str,
    name: String,
    labels: BTreeMap<String, String>,
) -> Result<Joined> {
    let refused = || {
        ApiError::unauthorized("join token invalid, used or expired: ask an admin for a new one")
    };
    let rest = token.strip_prefix(JOIN_TOKEN_PREFIX).ok_or_else(refused)?;
    let (id, secret) = rest.split_once('_').ok_or_else(refused)?;
    if !is_id(id) {
        return Err(refused());
    }
    check_name("name", &name)?;
    for (k, v) in &labels {
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
    let index = ctx.keys.node_index(&name);
    if ctx.store.get(&index).await?.is_some() {
        return Err(ApiError::conflict(format!("node name {name:?} is taken")).with_field("name"));
    }
    let node = Node {
        id: new_id(),
        name,
        labels,
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
    Ok(Joined {
        credential: format!("{NODE_CREDENTIAL_PREFIX}{}_{credential_secret}", node.id),
        id: node.id,
        name: node.name,
    })
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
pub async fn authenticate(ctx: &Ctx, token: &str) -> Result<String> {
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
    let records = get_many(
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
    Ok(Some(NodeView::new(node, status, records[2].is_some())))
}

/// Every node, by name.
pub async fn list(ctx: &Ctx) -> Result<List<NodeView>> {
    let (index, _) = ctx.store.list(&ctx.keys.node_index("")).await?;
    let mut items = Vec::new();
    for nid in ids_of(&index) {
        items.extend(view(ctx, &nid).await?);
    }
    Ok(List {
        total: items.len(),
        items,
    })
}

/// One node, by id or name.
pub async fn get(ctx: &Ctx, n: &str) -> Result<NodeView> {
    let nid = resolve::node(ctx, n).await?;
    view(ctx, &nid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("node {n:?} not found")))
}

/// Revokes a node's credential and forgets the node (admin); its open
/// channel closes within a heartbeat.
pub async fn delete(ctx: &Ctx, caller: &Caller, n: &str) -> Result<()> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden("only an admin removes nodes"));
    }
    let nid = resolve::node(ctx, n).await?;
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
    Ok(())
}

/// Applies one message from node `nid` to the store (answers to requests
/// go to the waiting streams).
pub async fn apply(ctx: &Ctx, nid: &str, message: FromNode) -> std::result::Result<(), String> {
    let err = |e: lb_store::Error| e.to_string();
    match message {
        FromNode::Hello {
            address, capacity, ..
        } => {
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
        FromNode::JobEnded { job, end } => {
            super::jobs::node_ended(ctx, nid, &job, end)
                .await
                .map_err(|e| e.message)?;
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
            if assignment.job.is_some() {
                // A job's container: its record follows (no placement).
                return super::jobs::node_status(ctx, &assignment, &status)
                    .await
                    .map_err(|e| e.message);
            }
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
