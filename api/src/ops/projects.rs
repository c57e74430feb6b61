//! Projects: create, list, read, replace or patch, delete (cascading to
//! everything in them).

use lb_model::ids::new_id;
use lb_model::{now, Project};
use lb_store::{Compare, Op, Txn};

use super::resolve::{self, LoadedProject};
use super::{cleanup, get_many, ids_of, matches, node_keys, retry_txn, window, Attempt};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::{decode, encode, patched};
use crate::models::{List, Paging, ProjectInput, ProjectView};

/// How a project is shown.
pub fn view(loaded: &LoadedProject) -> ProjectView {
    let p = &loaded.project;
    ProjectView {
        id: p.id.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        owner: p.owner.clone(),
        revision: loaded.revision,
        created: p.created,
        updated: p.updated,
    }
}

fn name_taken(name: &str) -> ApiError {
    ApiError::conflict(format!("project name {name:?} is taken")).with_field("name")
}

/// Creates a project owned by the caller.
pub async fn create(ctx: &Ctx, caller: &Caller, input: ProjectInput) -> Result<ProjectView> {
    let now = now();
    let project = Project {
        id: new_id(),
        name: input.name,
        owner: caller.user.id.clone(),
        description: input.description,
        created: now,
        updated: now,
    };
    project.validate()?;
    super::quotas::check_project(ctx, &project.owner).await?;
    let index = ctx.keys.project_index(&project.owner, &project.name);
    let txn = Txn::new()
        .when(Compare::ModRevision(index.clone(), 0))
        .then(Op::put(ctx.keys.project(&project.id), encode(&project)))
        .then(Op::put(index, project.id.clone().into_bytes()));
    let resp = ctx.store.txn(txn).await?;
    if !resp.succeeded {
        return Err(name_taken(&project.name));
    }
    Ok(view(&LoadedProject {
        project,
        revision: resp.revision,
    }))
}

/// The caller's projects (all of them for an admin), by name.
pub async fn list(ctx: &Ctx, caller: &Caller, paging: &Paging) -> Result<List<ProjectView>> {
    let (offset, limit) = window(paging)?;
    let prefix = if caller.is_admin() {
        ctx.keys.project_index_all()
    } else {
        ctx.keys.project_index_prefix(&caller.user.id)
    };
    let (index, total) = ctx.store.window(&prefix, offset, limit).await?;
    let keys = ids_of(&index)
        .iter()
        .map(|id| ctx.keys.project(id))
        .collect();
    let items = get_many(ctx, keys)
        .await?
        .into_iter()
        .flatten()
        .map(|kv| {
            decode::<Project>(&kv).map(|project| {
                view(&LoadedProject {
                    project,
                    revision: kv.mod_revision,
                })
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(List { items, total })
}

/// One project.
pub async fn get(ctx: &Ctx, caller: &Caller, p: &str) -> Result<ProjectView> {
    Ok(view(&resolve::project(ctx, caller, p).await?))
}

/// A change to a project's name and description.
pub enum Change {
    /// Both replaced.
    Replace(ProjectInput),
    /// A JSON merge patch of both.
    Patch(serde_json::Value),
}

/// Changes a project's name or description with a revision-checked
/// transaction; retried on a concurrent change unless `expected` (the
/// caller's `If-Match`) pinned a revision.
pub async fn update(
    ctx: &Ctx,
    caller: &Caller,
    p: &str,
    expected: Option<i64>,
    change: Change,
) -> Result<ProjectView> {
    let what = format!("project {p:?}");
    retry_txn(expected, &what, || async {
        let loaded = resolve::project(ctx, caller, p).await?;
        if !matches(expected, loaded.revision) {
            return Ok(Attempt::Conflict);
        }
        let input = match &change {
            Change::Replace(input) => ProjectInput {
                name: input.name.clone(),
                description: input.description.clone(),
            },
            Change::Patch(patch) => {
                let current = ProjectInput {
                    name: loaded.project.name.clone(),
                    description: loaded.project.description.clone(),
                };
                patched(&current, patch)?
            }
        };
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
        if !resp.succeeded {
            return Ok(Attempt::Conflict);
        }
        Ok(Attempt::Done(view(&LoadedProject {
            project,
            revision: resp.revision,
        })))
    })
    .await
}

/// Deletes a project: the project, its services with their replicas and
/// builds, and every index key, in one transaction of prefix deletes (it
/// fits any limit whatever the project holds); then the nodes' keys of its
/// replicas (see [`cleanup`]).
pub async fn delete(ctx: &Ctx, caller: &Caller, p: &str, expected: Option<i64>) -> Result<()> {
    let what = format!("project {p:?}");
    retry_txn(expected, &what, || async {
        let loaded = resolve::project(ctx, caller, p).await?;
        if !matches(expected, loaded.revision) {
            return Ok(Attempt::Conflict);
        }
        let pid = loaded.project.id.clone();
        let node_keys = node_keys(ctx, &ctx.keys.project_prefix(&pid)).await?;
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
        let txn = super::domains::release_project(ctx, &pid, txn).await?;
        if !ctx.store.txn(txn).await?.succeeded {
            return Ok(Attempt::Conflict);
        }
        tracing::info!(project = %pid, "project deleted");
        cleanup(ctx, node_keys).await;
        Ok(Attempt::Done(()))
    })
    .await
}
