//! Projects: create, list, read, replace, patch, delete (cascading).
//!
//! A project is visible to its owner and to admins; to anyone else it does
//! not exist (404, and the name is not confirmed).

use lb_model::ids::{is_id, new_id};
use lb_model::keys::Parsed;
use lb_model::Project;
use lb_store::{Compare, KeyValue, Op, StoreExt, Txn};
use warp::http::StatusCode;

use super::{
    decode, encode, json, json_tagged, merge_patch, no_content, paging, retry_or_conflict, Response,
};
use crate::accounts::now;
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::models::{List, Paging, ProjectInput, ProjectView};

/// A project as read, with its record's revision.
pub struct Loaded {
    /// The project.
    pub project: Project,
    /// The `mod_revision` of its record.
    pub revision: i64,
}

impl Loaded {
    fn view(&self) -> ProjectView {
        let p = &self.project;
        ProjectView {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            owner: p.owner.clone(),
            revision: self.revision,
            created: p.created,
            updated: p.updated,
        }
    }
}

fn not_found(reference: &str) -> ApiError {
    ApiError::not_found(format!("project {reference:?} not found"))
}

/// Finds a project the caller may see, by id or by (the caller's) name.
pub async fn resolve(ctx: &Ctx, caller: &Caller, reference: &str) -> Result<Loaded> {
    let id = if is_id(reference) {
        reference.to_owned()
    } else {
        if lb_model::validate_name(reference).is_err() {
            return Err(not_found(reference));
        }
        match ctx
            .store
            .get(&ctx.keys.project_index(&caller.user.id, reference))
            .await?
        {
            Some(kv) => String::from_utf8_lossy(&kv.value).into_owned(),
            None => return Err(not_found(reference)),
        }
    };
    let Some(kv) = ctx.store.get(&ctx.keys.project(&id)).await? else {
        return Err(not_found(reference));
    };
    let project: Project = decode(&kv)?;
    if project.owner != caller.user.id && !caller.is_admin() {
        return Err(not_found(reference));
    }
    Ok(Loaded {
        project,
        revision: kv.mod_revision,
    })
}

/// `POST /projects`.
pub async fn create(ctx: Ctx, caller: Caller, body: ProjectInput) -> Result<Response> {
    let now = now();
    let project = Project {
        id: new_id(),
        name: body.name,
        owner: caller.user.id.clone(),
        description: body.description,
        created: now,
        updated: now,
    };
    project.validate()?;
    let index = ctx.keys.project_index(&project.owner, &project.name);
    let txn = Txn::new()
        .when(Compare::ModRevision(index.clone(), 0))
        .then(Op::put(ctx.keys.project(&project.id), encode(&project)))
        .then(Op::put(index, project.id.clone().into_bytes()));
    let resp = ctx.store.txn(txn).await?;
    if !resp.succeeded {
        return Err(name_taken(&project.name));
    }
    let loaded = Loaded {
        project,
        revision: resp.revision,
    };
    Ok(json_tagged(
        StatusCode::CREATED,
        &loaded.view(),
        loaded.revision,
    ))
}

fn name_taken(name: &str) -> ApiError {
    ApiError::conflict(format!("project name {name:?} is taken")).with_field("name")
}

/// `GET /projects`: the caller's projects (all of them for an admin), by name.
pub async fn list(ctx: Ctx, caller: Caller, query: Paging) -> Result<Response> {
    let (offset, limit) = paging(&query)?;
    let prefix = if caller.is_admin() {
        ctx.keys.project_index_all()
    } else {
        ctx.keys.project_index_prefix(&caller.user.id)
    };
    let (index, total) = ctx.store.window(&prefix, offset, limit).await?;
    let ids: Vec<String> = index
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect();
    let records = get_many(&ctx, ids.iter().map(|id| ctx.keys.project(id)).collect()).await?;
    let items = records
        .into_iter()
        .flatten()
        .map(|kv| {
            decode::<Project>(&kv).map(|project| {
                Loaded {
                    project,
                    revision: kv.mod_revision,
                }
                .view()
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json(StatusCode::OK, &List { items, total }))
}

/// Reads many keys: at one revision when they fit one transaction (the
/// cache answers any number from memory), else in transactions within the
/// store's limits.
pub async fn get_many(ctx: &Ctx, keys: Vec<String>) -> Result<Vec<Option<KeyValue>>> {
    let mut out = Vec::with_capacity(keys.len());
    let per_txn = ctx.store.limits().max_ops.max(1);
    let chunks: Vec<Vec<String>> = if keys.len() <= per_txn {
        vec![keys]
    } else {
        keys.chunks(per_txn).map(<[String]>::to_vec).collect()
    };
    for chunk in chunks {
        if chunk.is_empty() {
            continue;
        }
        let txn = chunk
            .into_iter()
            .fold(Txn::new(), |t, k| t.then(Op::Get(k)));
        let resp = ctx.store.txn(txn).await?;
        out.extend(resp.results.into_iter().map(|r| match r {
            lb_store::OpResult::Get(kv) => kv,
            _ => None,
        }));
    }
    Ok(out)
}

/// `GET /projects/{p}`.
pub async fn get(ctx: Ctx, caller: Caller, p: String) -> Result<Response> {
    let loaded = resolve(&ctx, &caller, &p).await?;
    Ok(json_tagged(StatusCode::OK, &loaded.view(), loaded.revision))
}

/// `PUT /projects/{p}`: replaces name and description.
pub async fn put(
    ctx: Ctx,
    caller: Caller,
    p: String,
    expected: Option<i64>,
    body: ProjectInput,
) -> Result<Response> {
    update(ctx, caller, p, expected, move |_| {
        Ok(ProjectInput {
            name: body.name.clone(),
            description: body.description.clone(),
        })
    })
    .await
}

/// `PATCH /projects/{p}`: a JSON merge patch of name and description.
pub async fn patch(
    ctx: Ctx,
    caller: Caller,
    p: String,
    expected: Option<i64>,
    body: serde_json::Value,
) -> Result<Response> {
    update(ctx, caller, p, expected, move |current| {
        let mut value = serde_json::to_value(current).map_err(ApiError::internal)?;
        merge_patch(&mut value, &body);
        super::parse_value::<ProjectInput>(value)
    })
    .await
}

/// Reads, changes and writes a project with a revision-checked transaction;
/// retried on a concurrent change unless `If-Match` pinned a revision.
async fn update(
    ctx: Ctx,
    caller: Caller,
    p: String,
    expected: Option<i64>,
    change: impl Fn(&ProjectInput) -> Result<ProjectInput>,
) -> Result<Response> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let loaded = resolve(&ctx, &caller, &p).await?;
        if expected.is_some_and(|e| e != loaded.revision) {
            retry_or_conflict(expected, attempt, &format!("project {p:?}"))?;
        }
        let current = ProjectInput {
            name: loaded.project.name.clone(),
            description: loaded.project.description.clone(),
        };
        let input = change(&current)?;
        let mut project = loaded.project.clone();
        project.name = input.name;
        project.description = input.description;
        project.updated = now();
        project.validate()?;
        let key = ctx.keys.project(&project.id);
        let mut txn = Txn::new().when(Compare::ModRevision(key.clone(), loaded.revision));
        if project.name != loaded.project.name {
            let new_index = ctx.keys.project_index(&project.owner, &project.name);
            if ctx.store.get(&new_index).await?.is_some() {
                return Err(name_taken(&project.name));
            }
            txn = txn
                .when(Compare::ModRevision(new_index.clone(), 0))
                .then(Op::delete(
                    ctx.keys.project_index(&project.owner, &loaded.project.name),
                ))
                .then(Op::put(new_index, project.id.clone().into_bytes()));
        }
        let resp = ctx
            .store
            .txn(txn.then(Op::put(key, encode(&project))))
            .await?;
        if resp.succeeded {
            let loaded = Loaded {
                project,
                revision: resp.revision,
            };
            return Ok(json_tagged(StatusCode::OK, &loaded.view(), loaded.revision));
        }
        retry_or_conflict(expected, attempt, &format!("project {p:?}"))?;
    }
}

/// `DELETE /projects/{p}`: the project, its services with their replicas and
/// builds, and every index key, in one transaction of prefix deletes (it
/// fits any limit whatever the project holds); then the nodes' keys of its
/// replicas (see [`cleanup`]).
pub async fn delete(
    ctx: Ctx,
    caller: Caller,
    p: String,
    expected: Option<i64>,
) -> Result<Response> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let loaded = resolve(&ctx, &caller, &p).await?;
        if expected.is_some_and(|e| e != loaded.revision) {
            retry_or_conflict(expected, attempt, &format!("project {p:?}"))?;
        }
        let pid = loaded.project.id.clone();
        let node_keys = node_keys(&ctx, &ctx.keys.project_prefix(&pid)).await?;
        let txn = Txn::new()
            .when(Compare::ModRevision(
                ctx.keys.project(&pid),
                loaded.revision,
            ))
            .then(Op::DeletePrefix(ctx.keys.project_prefix(&pid)))
            .then(Op::DeletePrefix(ctx.keys.service_index_prefix(&pid)))
            .then(Op::delete(
                ctx.keys
                    .project_index(&loaded.project.owner, &loaded.project.name),
            ));
        if ctx.store.txn(txn).await?.succeeded {
            tracing::info!(project = %pid, "project deleted");
            cleanup(&ctx, node_keys).await;
            return Ok(no_content());
        }
        retry_or_conflict(expected, attempt, &format!("project {p:?}"))?;
        backoff(attempt).await;
    }
}

/// The nodes' keys (`/nodes/<n>/replicas/<r>`) of the replicas placed under
/// `prefix`.
pub async fn node_keys(ctx: &Ctx, prefix: &str) -> Result<Vec<String>> {
    let (kvs, _) = ctx.store.list(prefix).await?;
    let mut keys = Vec::new();
    for kv in &kvs {
        if let Some(Parsed::Replica { rid, .. }) = ctx.keys.parse(&kv.key) {
            let replica: lb_model::Replica = decode(kv)?;
            if let Some(node) = &replica.node {
                keys.push(ctx.keys.node_replica(node, rid));
            }
        }
    }
    Ok(keys)
}

/// After a delete: removes the nodes' keys of the deleted replicas, in
/// transactions within the store's limits, so nodes stop the containers at
/// once. Not atomic with the delete, and needing not be: a placement the
/// scheduler wrote in between, or a key left by a failure here, is an
/// assignment without its replica, which the scheduler deletes on its next
/// pass (its writes compare the service's records, so none lands after the
/// delete).
pub async fn cleanup(ctx: &Ctx, node_keys: Vec<String>) {
    let ops = node_keys.into_iter().map(Op::delete).collect();
    if let Err(e) = ctx.store.write_all(ops).await {
        tracing::warn!(error = %e, "assignments of deleted replicas left to the scheduler");
    }
}

/// A short pause before retrying a delete that lost a race (the cache
/// catches up in milliseconds).
pub async fn backoff(attempt: usize) {
    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt as u64)).await;
}
