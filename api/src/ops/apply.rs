//! Apply: makes a project match a document ([`lb_model::apply::Document`]):
//! the services it lacks are created (each after those it depends on), the
//! ones that differ are updated (each compared with the revision the plan
//! read, like `If-Match`), and with prune the ones the document does not
//! name are deleted. A document that matches writes nothing.
//!
//! Every change goes through the same operations as the single routes
//! ([`services::create`], [`services::update`], [`services::delete`]), so
//! validation, image checks, domain claims and quotas apply alike. Not one
//! transaction: a failure stops the apply, and the error says what was done
//! before it. A project named by a name the caller has not got yet is
//! created first (through [`projects::create`], with its quota).
//!
//! A document with `scripts` makes the project's stored scripts match too
//! (through [`scripts::create`], [`scripts::put`] and [`scripts::delete`],
//! after the services); one without leaves them alone.

use lb_model::apply::{plan, plan_scripts, Current, CurrentScript, Document, DocumentError, Plan};
use lb_model::ids::is_id;
use lb_model::views::ProjectInput;
use lb_store::StoreExt;
use serde::{Deserialize, Serialize};

use super::resolve::{self, LoadedService};
use super::services::{self, Change};
use super::{get_many, ids_of, projects, scripts};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};

/// How to apply.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Delete the services the document does not name.
    pub prune: bool,
    /// Only answer the plan.
    pub dry_run: bool,
}

/// What an apply did (or, dry, would do).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// The project's name.
    pub project: String,
    /// Whether the project is (or would be) created.
    pub created_project: bool,
    /// Whether nothing was written on purpose.
    pub dry_run: bool,
    /// The changes, planned against the project as read.
    pub plan: Plan,
    /// The changes carried out, in order (`created web`, `updated db`, ...).
    pub done: Vec<String>,
}

/// Applies `doc` to project `p` (a name or id the caller may see).
pub async fn apply(
    ctx: &Ctx,
    caller: &Caller,
    p: &str,
    doc: Document,
    options: Options,
) -> Result<Applied> {
    let problems = doc.check();
    if !problems.is_empty() {
        return Err(invalid(DocumentError::Invalid(problems)));
    }
    let found = match resolve::project(ctx, caller, p).await {
        Ok(project) => Some(project),
        Err(e) if e.status == 404 && !is_id(p) && lb_model::validate_name(p).is_ok() => None,
        Err(e) => return Err(e),
    };
    let name = found
        .as_ref()
        .map_or(p.to_owned(), |f| f.project.name.clone());
    if let Some(wanted) = &doc.project {
        if *wanted != name {
            return Err(ApiError::invalid(
                "project",
                format!("the document is for project {wanted:?}, not {name:?}"),
            ));
        }
    }
    let mut created_project = false;
    let project = match found {
        Some(project) => Some(project),
        None if options.dry_run => {
            created_project = true;
            None
        }
        None => {
            let input = ProjectInput {
                name: name.clone(),
                description: String::new(),
            };
            projects::create(ctx, caller, input).await?;
            created_project = true;
            tracing::info!(project = %name, by = %caller.user.username, "project created by apply");
            Some(resolve::project(ctx, caller, p).await?)
        }
    };
    let loaded = match &project {
        Some(project) => current(ctx, &project.project.id, &project.project.name).await?,
        None => Vec::new(),
    };
    let mut doc = doc;
    // Images into lb's registry are stored by ids: compare the document's
    // as they would be stored, or an unchanged file would differ.
    for service in &loaded {
        if let Some(entry) = doc.services.get_mut(&service.spec.name) {
            let owner = super::images::Owner {
                pid: &service.pid,
                project_name: &service.project_name,
                sid: &service.meta.id,
            };
            super::images::authorize(ctx, &owner, &mut entry.spec)
                .await
                .map_err(|e| under(e, &service.spec.name))?;
        }
    }
    let currents: Vec<Current> = loaded
        .iter()
        .map(|s| Current {
            name: s.spec.name.clone(),
            spec: s.spec.clone(),
            revision: s.revision(),
        })
        .collect();
    let mut plan = plan(&doc, &currents, options.prune);
    if doc.scripts.is_some() {
        let stored = match &project {
            Some(project) => scripts::list(ctx, caller, &project.project.id).await?,
            None => Vec::new(),
        };
        let stored: Vec<CurrentScript> = stored
            .into_iter()
            .map(|v| CurrentScript {
                script: v.script,
                revision: v.revision,
            })
            .collect();
        plan.scripts = plan_scripts(&doc, &stored, options.prune);
    }
    // An update releasing a domain goes before one claiming it.
    plan.updates.sort_by_key(|u| {
        let old = currents.iter().find(|c| c.name == u.name);
        !old.is_some_and(|o| o.spec.domains.iter().any(|d| !u.spec.domains.contains(d)))
    });
    let mut applied = Applied {
        project: name.clone(),
        created_project,
        dry_run: options.dry_run,
        plan,
        done: Vec::new(),
    };
    if options.dry_run {
        return Ok(applied);
    }
    let target = project.map_or(name, |p| p.project.id);
    let steps = applied.plan.deletes.len()
        + applied.plan.updates.len()
        + applied.plan.creates.len()
        + applied.plan.scripts.deletes.len()
        + applied.plan.scripts.updates.len()
        + applied.plan.scripts.creates.len();
    let plan = applied.plan.clone();
    let done = &mut applied.done;
    for delete in &plan.deletes {
        services::delete(ctx, caller, &target, &delete.name, Some(delete.revision))
            .await
            .map_err(|e| stopped(e, &delete.name, done, steps))?;
        done.push(format!("deleted {}", delete.name));
    }
    for update in &plan.updates {
        let change = Change::Replace(Box::new(update.spec.clone()));
        services::update(
            ctx,
            caller,
            &target,
            &update.name,
            Some(update.revision),
            change,
        )
        .await
        .map_err(|e| stopped(e, &update.name, done, steps))?;
        done.push(format!("updated {}", update.name));
    }
    for create in &plan.creates {
        services::create(ctx, caller, &target, create.spec.clone())
            .await
            .map_err(|e| stopped(e, &create.name, done, steps))?;
        done.push(format!("created {}", create.name));
    }
    let wanted = doc.scripts.unwrap_or_default();
    let script_error = |e: ApiError, name: &str, done: &[String]| {
        let mut e = stopped(e, name, done, steps);
        e.field = e.field.map(|f| f.replacen("services.", "scripts.", 1));
        e.message = format!("script{}", e.message.trim_start_matches("service"));
        e
    };
    for delete in &plan.scripts.deletes {
        scripts::delete(ctx, caller, &target, &delete.name, Some(delete.revision))
            .await
            .map_err(|e| script_error(e, &delete.name, done))?;
        done.push(format!("deleted script {}", delete.name));
    }
    for update in &plan.scripts.updates {
        let script = wanted[&update.name].clone();
        scripts::put(
            ctx,
            caller,
            (&target, &update.name),
            Some(update.revision),
            script,
        )
        .await
        .map_err(|e| script_error(e, &update.name, done))?;
        done.push(format!("updated script {}", update.name));
    }
    for name in &plan.scripts.creates {
        scripts::create(ctx, caller, &target, wanted[name].clone())
            .await
            .map_err(|e| script_error(e, name, done))?;
        done.push(format!("created script {name}"));
    }
    tracing::info!(project = %applied.project, by = %caller.user.username, changes = steps, "applied");
    Ok(applied)
}

/// The 400 of a document that cannot be applied: a syntax error with its
/// line and column, or every key at fault (the field names the first).
pub fn invalid(e: DocumentError) -> ApiError {
    match &e {
        DocumentError::Syntax { .. } => ApiError::bad_request(e.to_string()),
        DocumentError::Invalid(problems) => match problems.first() {
            Some(first) => ApiError::invalid(first.field.clone(), e.to_string()),
            None => ApiError::bad_request(e.to_string()),
        },
    }
}

/// Every service of a project, as read.
async fn current(ctx: &Ctx, pid: &str, project_name: &str) -> Result<Vec<LoadedService>> {
    let (index, _) = ctx.store.list(&ctx.keys.service_index_prefix(pid)).await?;
    let ids = ids_of(&index);
    let keys = ids
        .iter()
        .flat_map(|sid| {
            [
                ctx.keys.service_meta(pid, sid),
                ctx.keys.service_spec(pid, sid),
            ]
        })
        .collect();
    let records = get_many(ctx, keys).await?;
    let mut out = Vec::with_capacity(ids.len());
    for pair in records.chunks(2) {
        if let [Some(meta), Some(spec)] = pair {
            out.push(LoadedService::from_records(pid, project_name, meta, spec)?);
        }
    }
    Ok(out)
}

/// An error of one service's change, its field under the service's key.
fn under(mut e: ApiError, service: &str) -> ApiError {
    e.field = Some(match e.field.take() {
        Some(field) => format!("services.{service}.{field}"),
        None => format!("services.{service}"),
    });
    e
}

/// The error that stopped an apply, saying what was done before it.
fn stopped(e: ApiError, service: &str, done: &[String], steps: usize) -> ApiError {
    let mut e = under(e, service);
    let before = if done.is_empty() {
        "nothing was changed".to_owned()
    } else {
        format!(
            "{} of {steps} changes were made ({})",
            done.len(),
            done.join(", ")
        )
    };
    e.message = format!("service {service:?}: {}; {before}", e.message);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_apply_says_what_it_did() {
        let e = stopped(
            ApiError::invalid("memory", "5 MiB is out of range"),
            "web",
            &["created db".into()],
            3,
        );
        assert_eq!(e.status, 400);
        assert_eq!(e.field.as_deref(), Some("services.web.memory"));
        assert_eq!(
            e.message,
            "service \"web\": 5 MiB is out of range; 1 of 3 changes were made (created db)"
        );
        let e = stopped(ApiError::conflict("changed"), "db", &[], 1);
        assert_eq!(
            (e.status.as_u16(), e.field.as_deref()),
            (409, Some("services.db"))
        );
        assert!(e.message.ends_with("nothing was changed"), "{}", e.message);
    }
}
