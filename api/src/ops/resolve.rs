//! Finding what a request names: a project, a service or a node, by id or
//! by name, as the caller may see it. A project is visible to its owner and
//! to admins; to anyone else it does not exist (404, and the name is not
//! confirmed). Nodes are visible to every signed-in user.

use lb_model::ids::is_id;
use lb_model::{Project, ServiceMeta, ServiceSpec};
use lb_store::{Compare, KeyValue, Txn};

use super::get_many;
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::decode;

/// A project as read, with its record's revision.
#[derive(Debug, Clone)]
pub struct LoadedProject {
    /// The project.
    pub project: Project,
    /// The `mod_revision` of its record.
    pub revision: i64,
}

/// A service as read: two records written together, its meta (id,
/// generation, times) and its spec. Its revision is the newer of the two;
/// every write compares both.
#[derive(Debug, Clone)]
pub struct LoadedService {
    /// Project id.
    pub pid: String,
    /// Project name (for messages).
    pub project_name: String,
    /// Meta record.
    pub meta: ServiceMeta,
    /// Its `mod_revision`.
    pub meta_revision: i64,
    /// Spec record.
    pub spec: ServiceSpec,
    /// Its `mod_revision`.
    pub spec_revision: i64,
}

impl LoadedService {
    /// The service's revision: the newer of its two records.
    pub fn revision(&self) -> i64 {
        self.meta_revision.max(self.spec_revision)
    }

    /// A transaction that goes through only if neither record changed.
    pub fn compares(&self, ctx: &Ctx) -> Txn {
        Txn::new()
            .when(Compare::ModRevision(
                ctx.keys.service_meta(&self.pid, &self.meta.id),
                self.meta_revision,
            ))
            .when(Compare::ModRevision(
                ctx.keys.service_spec(&self.pid, &self.meta.id),
                self.spec_revision,
            ))
    }

    /// A service from its two records.
    pub fn from_records(
        pid: &str,
        project_name: &str,
        meta: &KeyValue,
        spec: &KeyValue,
    ) -> Result<Self> {
        Ok(Self {
            pid: pid.to_owned(),
            project_name: project_name.to_owned(),
            meta: decode(meta)?,
            meta_revision: meta.mod_revision,
            spec: decode(spec)?,
            spec_revision: spec.mod_revision,
        })
    }
}

fn project_not_found(reference: &str) -> ApiError {
    ApiError::not_found(format!("project {reference:?} not found"))
}

fn service_not_found(service: &str, project: &str) -> ApiError {
    ApiError::not_found(format!(
        "service {service:?} not found in project {project:?}"
    ))
}

/// The id an index key points at, if the reference is not an id itself and
/// is a valid name with an index entry.
async fn id_of(
    ctx: &Ctx,
    reference: &str,
    index: impl FnOnce() -> String,
) -> Result<Option<String>> {
    if is_id(reference) {
        return Ok(Some(reference.to_owned()));
    }
    if lb_model::validate_name(reference).is_err() {
        return Ok(None);
    }
    Ok(ctx
        .store
        .get(&index())
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Finds a project the caller may see, by id or by (the caller's) name.
pub async fn project(ctx: &Ctx, caller: &Caller, reference: &str) -> Result<LoadedProject> {
    let index = || ctx.keys.project_index(&caller.user.id, reference);
    let id = id_of(ctx, reference, index)
        .await?
        .ok_or_else(|| project_not_found(reference))?;
    let Some(kv) = ctx.store.get(&ctx.keys.project(&id)).await? else {
        return Err(project_not_found(reference));
    };
    let project: Project = decode(&kv)?;
    if project.owner != caller.user.id && !caller.is_admin() {
        return Err(project_not_found(reference));
    }
    Ok(LoadedProject {
        project,
        revision: kv.mod_revision,
    })
}

/// Finds a service of a project the caller may see, by id or name.
pub async fn service(ctx: &Ctx, caller: &Caller, p: &str, s: &str) -> Result<LoadedService> {
    let project = project(ctx, caller, p).await?;
    let pid = project.project.id.clone();
    let name = &project.project.name;
    let sid = id_of(ctx, s, || ctx.keys.service_index(&pid, s))
        .await?
        .ok_or_else(|| service_not_found(s, name))?;
    let records = get_many(
        ctx,
        vec![
            ctx.keys.service_meta(&pid, &sid),
            ctx.keys.service_spec(&pid, &sid),
        ],
    )
    .await?;
    let (Some(meta), Some(spec)) = (&records[0], &records[1]) else {
        return Err(service_not_found(s, name));
    };
    LoadedService::from_records(&pid, name, meta, spec)
}

/// A node's id, from its id or name.
pub async fn node(ctx: &Ctx, reference: &str) -> Result<String> {
    if is_id(reference) {
        return Ok(reference.to_owned());
    }
    match ctx.store.get(&ctx.keys.node_index(reference)).await? {
        Some(kv) => Ok(String::from_utf8_lossy(&kv.value).into_owned()),
        None => Err(ApiError::not_found(format!("node {reference:?} not found"))),
    }
}
