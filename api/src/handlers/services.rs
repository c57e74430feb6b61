//! Services: create, list, read, replace, patch, delete (cascading), the
//! actions (scale, restart, pause, resume, rollback) and the replica list.
//!
//! A service is two records written together: its meta (id, generation,
//! times) and its spec. Its revision is the newer of the two; every write
//! compares both.

use lb_model::ids::{is_id, new_id};
use lb_model::keys::Parsed;
use lb_model::{
    Build, BuildStatus, Replica, ReplicaState, ReplicaStatus, ServiceMeta, ServiceSpec,
    ServiceState,
};
use lb_store::{Compare, KeyValue, Op, StoreExt, Txn};
use warp::http::StatusCode;

use super::projects::{self, backoff, cleanup, get_many, node_keys};
use super::{
    decode, encode, json, json_tagged, merge_patch, no_content, paging, retry_or_conflict, Response,
};
use crate::accounts::now;
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::models::{
    List, Paging, ReplicaCounts, ReplicaPort, ReplicaView, RollbackRequest, ScaleRequest,
    ServiceStatus, ServiceView,
};

/// A service as read.
pub struct Loaded {
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

impl Loaded {
    /// The service's revision: the newer of its two records.
    pub fn revision(&self) -> i64 {
        self.meta_revision.max(self.spec_revision)
    }

    fn compares(&self, ctx: &Ctx) -> Txn {
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
}

fn not_found(service: &str, project: &str) -> ApiError {
    ApiError::not_found(format!(
        "service {service:?} not found in project {project:?}"
    ))
}

/// Finds a service of a project the caller may see, by id or name.
pub async fn resolve(ctx: &Ctx, caller: &Caller, p: &str, s: &str) -> Result<Loaded> {
    let project = projects::resolve(ctx, caller, p).await?;
    let pid = project.project.id.clone();
    let sid = if is_id(s) {
        s.to_owned()
    } else {
        if lb_model::validate_name(s).is_err() {
            return Err(not_found(s, &project.project.name));
        }
        match ctx.store.get(&ctx.keys.service_index(&pid, s)).await? {
            Some(kv) => String::from_utf8_lossy(&kv.value).into_owned(),
            None => return Err(not_found(s, &project.project.name)),
        }
    };
    let records = get_many(
        ctx,
        vec![
            ctx.keys.service_meta(&pid, &sid),
            ctx.keys.service_spec(&pid, &sid),
        ],
    )
    .await?;
    let (Some(meta), Some(spec)) = (&records[0], &records[1]) else {
        return Err(not_found(s, &project.project.name));
    };
    Ok(Loaded {
        pid,
        project_name: project.project.name,
        meta: decode(meta)?,
        meta_revision: meta.mod_revision,
        spec: decode(spec)?,
        spec_revision: spec.mod_revision,
    })
}

/// Placements and statuses of a service's replicas, in id order.
async fn replicas(
    ctx: &Ctx,
    pid: &str,
    sid: &str,
) -> Result<Vec<(Replica, Option<ReplicaStatus>)>> {
    let (kvs, _) = ctx.store.list(&ctx.keys.replicas_prefix(pid, sid)).await?;
    let mut out: Vec<(Replica, Option<ReplicaStatus>)> = Vec::new();
    for kv in &kvs {
        match ctx.keys.parse(&kv.key) {
            Some(Parsed::Replica { .. }) => out.push((decode(kv)?, None)),
            Some(Parsed::ReplicaStatus { rid, .. }) => {
                // The status key sorts right after its placement.
                if let Some(last) = out.last_mut().filter(|(r, _)| r.id == rid) {
                    last.1 = Some(decode(kv)?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

async fn view(ctx: &Ctx, loaded: &Loaded) -> Result<ServiceView> {
    let replicas = replicas(ctx, &loaded.pid, &loaded.meta.id).await?;
    let mut counts = ReplicaCounts {
        desired: if loaded.spec.state == ServiceState::Paused {
            0
        } else {
            loaded.spec.replicas
        },
        total: replicas.len() as u32,
        ..Default::default()
    };
    for (_, status) in &replicas {
        match status.as_ref().map_or(ReplicaState::Pending, |s| s.state) {
            ReplicaState::Running => counts.running += 1,
            ReplicaState::Pending | ReplicaState::Starting => counts.pending += 1,
            ReplicaState::Failed | ReplicaState::Exited => counts.failed += 1,
            ReplicaState::Stopping => {}
        }
    }
    Ok(ServiceView {
        id: loaded.meta.id.clone(),
        name: loaded.meta.name.clone(),
        project: loaded.pid.clone(),
        revision: loaded.revision(),
        created: loaded.meta.created,
        updated: loaded.meta.updated,
        spec: loaded.spec.clone(),
        status: ServiceStatus {
            state: loaded.spec.state,
            generation: loaded.meta.generation,
            restart_generation: loaded.meta.restart_generation,
            replicas: counts,
        },
    })
}

async fn reply(ctx: &Ctx, status: StatusCode, loaded: &Loaded) -> Result<Response> {
    let view = view(ctx, loaded).await?;
    Ok(json_tagged(status, &view, loaded.revision()))
}

/// `POST /projects/{p}/services`.
pub async fn create(ctx: Ctx, caller: Caller, p: String, spec: ServiceSpec) -> Result<Response> {
    spec.validate()?;
    let project = projects::resolve(&ctx, &caller, &p).await?;
    let pid = project.project.id.clone();
    let now = now();
    let meta = ServiceMeta {
        id: new_id(),
        name: spec.name.clone(),
        project: pid.clone(),
        created: now,
        updated: now,
        generation: 1,
        restart_generation: 0,
    };
    let index = ctx.keys.service_index(&pid, &spec.name);
    // The project must still exist: a service is never created into a
    // project deleted meanwhile.
    let txn = Txn::new()
        .when(Compare::ModRevision(
            ctx.keys.project(&pid),
            project.revision,
        ))
        .when(Compare::ModRevision(index.clone(), 0))
        .then(Op::put(
            ctx.keys.service_meta(&pid, &meta.id),
            encode(&meta),
        ))
        .then(Op::put(
            ctx.keys.service_spec(&pid, &meta.id),
            encode(&spec),
        ))
        .then(Op::put(index.clone(), meta.id.clone().into_bytes()));
    let resp = ctx.store.txn(txn).await?;
    if !resp.succeeded {
        if ctx.store.get(&index).await?.is_some() {
            return Err(name_taken(&spec.name, &project.project.name));
        }
        // The project changed or went away: answer as a fresh read would.
        projects::resolve(&ctx, &caller, &p).await?;
        return Err(ApiError::conflict(format!(
            "project {p:?} changed meanwhile; try again"
        )));
    }
    let loaded = Loaded {
        pid,
        project_name: project.project.name,
        meta,
        meta_revision: resp.revision,
        spec,
        spec_revision: resp.revision,
    };
    reply(&ctx, StatusCode::CREATED, &loaded).await
}

fn name_taken(name: &str, project: &str) -> ApiError {
    ApiError::conflict(format!(
        "service name {name:?} is taken in project {project:?}"
    ))
    .with_field("name")
}

/// `GET /projects/{p}/services`: by name.
pub async fn list(ctx: Ctx, caller: Caller, p: String, query: Paging) -> Result<Response> {
    let (offset, limit) = paging(&query)?;
    let project = projects::resolve(&ctx, &caller, &p).await?;
    let pid = project.project.id.clone();
    let (index, total) = ctx
        .store
        .window(&ctx.keys.service_index_prefix(&pid), offset, limit)
        .await?;
    let ids: Vec<String> = index
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect();
    let keys = ids
        .iter()
        .flat_map(|sid| {
            [
                ctx.keys.service_meta(&pid, sid),
                ctx.keys.service_spec(&pid, sid),
            ]
        })
        .collect();
    let records = get_many(&ctx, keys).await?;
    let mut items = Vec::with_capacity(ids.len());
    for pair in records.chunks(2) {
        if let [Some(meta), Some(spec)] = pair {
            let loaded = loaded_from(&pid, &project.project.name, meta, spec)?;
            items.push(view(&ctx, &loaded).await?);
        }
    }
    Ok(json(StatusCode::OK, &List { items, total }))
}

fn loaded_from(pid: &str, project_name: &str, meta: &KeyValue, spec: &KeyValue) -> Result<Loaded> {
    Ok(Loaded {
        pid: pid.to_owned(),
        project_name: project_name.to_owned(),
        meta: decode(meta)?,
        meta_revision: meta.mod_revision,
        spec: decode(spec)?,
        spec_revision: spec.mod_revision,
    })
}

/// `GET /projects/{p}/services/{s}`.
pub async fn get(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    let loaded = resolve(&ctx, &caller, &p, &s).await?;
    reply(&ctx, StatusCode::OK, &loaded).await
}

/// Reads, changes and writes a service in a transaction comparing both
/// records; retried on a concurrent change unless `If-Match` pinned the
/// revision. `change` edits the meta and spec in place.
async fn update(
    ctx: &Ctx,
    caller: &Caller,
    p: &str,
    s: &str,
    expected: Option<i64>,
    change: impl Fn(&mut ServiceMeta, &mut ServiceSpec) -> Result<()>,
) -> Result<Response> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let loaded = resolve(ctx, caller, p, s).await?;
        let what = format!("service {s:?} in project {p:?}");
        if expected.is_some_and(|e| e != loaded.revision()) {
            retry_or_conflict(expected, attempt, &what)?;
        }
        let mut meta = loaded.meta.clone();
        let mut spec = loaded.spec.clone();
        change(&mut meta, &mut spec)?;
        spec.validate()?;
        meta.record_change(&loaded.spec, &spec, now());
        let pid = &loaded.pid;
        let sid = &meta.id;
        let mut txn = loaded.compares(ctx);
        if spec.name != loaded.spec.name {
            let new_index = ctx.keys.service_index(pid, &spec.name);
            if ctx.store.get(&new_index).await?.is_some() {
                return Err(name_taken(&spec.name, &loaded.project_name));
            }
            txn = txn
                .when(Compare::ModRevision(new_index.clone(), 0))
                .then(Op::delete(ctx.keys.service_index(pid, &loaded.spec.name)))
                .then(Op::put(new_index, sid.clone().into_bytes()));
        }
        let txn = txn
            .then(Op::put(ctx.keys.service_meta(pid, sid), encode(&meta)))
            .then(Op::put(ctx.keys.service_spec(pid, sid), encode(&spec)));
        let resp = ctx.store.txn(txn).await?;
        if resp.succeeded {
            let updated = Loaded {
                meta,
                spec,
                meta_revision: resp.revision,
                spec_revision: resp.revision,
                ..loaded
            };
            return reply(ctx, StatusCode::OK, &updated).await;
        }
        retry_or_conflict(expected, attempt, &what)?;
    }
}

/// `PUT /projects/{p}/services/{s}`: replaces the spec.
pub async fn put(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    expected: Option<i64>,
    body: ServiceSpec,
) -> Result<Response> {
    update(&ctx, &caller, &p, &s, expected, |_, spec| {
        *spec = body.clone();
        Ok(())
    })
    .await
}

/// `PATCH /projects/{p}/services/{s}`: a JSON merge patch of the spec.
pub async fn patch(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    expected: Option<i64>,
    body: serde_json::Value,
) -> Result<Response> {
    update(&ctx, &caller, &p, &s, expected, |_, spec| {
        let mut value = serde_json::to_value(&*spec).map_err(ApiError::internal)?;
        merge_patch(&mut value, &body);
        *spec = super::parse_value(value)?;
        Ok(())
    })
    .await
}

/// `POST .../scale`.
pub async fn scale(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    expected: Option<i64>,
    body: ScaleRequest,
) -> Result<Response> {
    update(&ctx, &caller, &p, &s, expected, |_, spec| {
        spec.replicas = body.replicas;
        Ok(())
    })
    .await
}

/// `POST .../{restart|pause|resume}`.
pub async fn action(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    action: String,
    expected: Option<i64>,
) -> Result<Response> {
    update(&ctx, &caller, &p, &s, expected, |meta, spec| {
        match action.as_str() {
            "restart" => meta.restart_generation += 1,
            "pause" => spec.state = ServiceState::Paused,
            "resume" => spec.state = ServiceState::Running,
            other => return Err(ApiError::not_found(format!("no action {other:?}"))),
        }
        Ok(())
    })
    .await
}

/// `POST .../rollback`: runs a earlier successful build's image again.
pub async fn rollback(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    expected: Option<i64>,
    body: RollbackRequest,
) -> Result<Response> {
    let loaded = resolve(&ctx, &caller, &p, &s).await?;
    let Some(kv) = ctx
        .store
        .get(&ctx.keys.build(&loaded.pid, &loaded.meta.id, body.build))
        .await?
    else {
        return Err(ApiError::not_found(format!(
            "build {} of service {s:?} not found",
            body.build
        ))
        .with_field("build"));
    };
    let build: Build = decode(&kv)?;
    let image = match (&build.status, &build.image, &build.digest) {
        (BuildStatus::Succeeded, Some(image), Some(digest)) => {
            let repo = image.split('@').next().unwrap_or(image);
            let repo = repo
                .rsplit_once(':')
                .filter(|(_, tag)| !tag.contains('/'))
                .map_or(repo, |(r, _)| r);
            format!("{repo}@{digest}")
        }
        _ => {
            return Err(ApiError::unprocessable(format!(
                "build {} did not succeed: only a successful build can be rolled back to",
                body.build
            ))
            .with_field("build"))
        }
    };
    update(&ctx, &caller, &p, &s, expected, |_, spec| {
        spec.image = Some(image.clone());
        Ok(())
    })
    .await
}

/// `DELETE /projects/{p}/services/{s}`: the service, its replicas, builds
/// and index key, in one transaction of prefix deletes; then the nodes' keys
/// of its replicas (see `projects::cleanup`).
pub async fn delete(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    expected: Option<i64>,
) -> Result<Response> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let loaded = resolve(&ctx, &caller, &p, &s).await?;
        let what = format!("service {s:?} in project {p:?}");
        if expected.is_some_and(|e| e != loaded.revision()) {
            retry_or_conflict(expected, attempt, &what)?;
        }
        let prefix = ctx.keys.service_prefix(&loaded.pid, &loaded.meta.id);
        let node_keys = node_keys(&ctx, &prefix).await?;
        let txn = loaded
            .compares(&ctx)
            .then(Op::DeletePrefix(prefix.clone()))
            .then(Op::DeletePrefix(
                ctx.keys.images(&loaded.pid, &loaded.meta.id),
            ))
            .then(Op::delete(
                ctx.keys.service_index(&loaded.pid, &loaded.spec.name),
            ));
        if ctx.store.txn(txn).await?.succeeded {
            tracing::info!(service = %loaded.meta.id, "service deleted");
            cleanup(&ctx, node_keys).await;
            return Ok(no_content());
        }
        retry_or_conflict(expected, attempt, &what)?;
        backoff(attempt).await;
    }
}

/// `GET .../replicas`.
pub async fn list_replicas(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    let loaded = resolve(&ctx, &caller, &p, &s).await?;
    let items: Vec<ReplicaView> = replicas(&ctx, &loaded.pid, &loaded.meta.id)
        .await?
        .into_iter()
        .map(|(replica, status)| {
            let status = status.unwrap_or_default();
            let ports = if status.ports.is_empty() {
                loaded
                    .spec
                    .ports
                    .iter()
                    .map(|p| ReplicaPort {
                        container: p.container,
                        host: p.host,
                    })
                    .collect()
            } else {
                status
                    .ports
                    .iter()
                    .map(|p| ReplicaPort {
                        container: p.container,
                        host: Some(p.host),
                    })
                    .collect()
            };
            let message = if status.message.is_empty() {
                replica.reason.clone().unwrap_or_default()
            } else {
                status.message
            };
            ReplicaView {
                id: replica.id,
                node: replica.node,
                state: status.state,
                image: replica.image,
                generation: replica.generation,
                ports,
                restarts: status.restarts,
                message,
            }
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &List {
            total: items.len(),
            items,
        },
    ))
}

/// `?tail=&follow=&replica=` of the logs route.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Lines from the end (default 100, at most 10,000).
    pub tail: Option<u32>,
    /// Keep streaming new output (chunked text, or a websocket).
    pub follow: Option<bool>,
    /// The replica (default: the first running one).
    pub replica: Option<String>,
    /// A browser's token on a websocket (read by the authentication).
    #[serde(default, rename = "access_token")]
    pub _access_token: Option<String>,
}

impl LogsQuery {
    /// `tail`, checked.
    pub fn tail(&self) -> Result<u32> {
        let tail = self.tail.unwrap_or(100);
        if tail > 10_000 {
            return Err(ApiError::invalid(
                "tail",
                format!("{tail} is more than 10000"),
            ));
        }
        Ok(tail)
    }
}

/// `POST .../exec`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// The replica (default: the first running one).
    #[serde(default)]
    pub replica: Option<String>,
    /// Seconds before it is given up (default 30, at most 300).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// A command to run: 1 to 1000 arguments, no NUL bytes.
pub fn check_command(command: &[String]) -> Result<()> {
    if command.is_empty() || command.len() > 1000 {
        return Err(ApiError::invalid(
            "command",
            "must hold 1 to 1000 arguments",
        ));
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid("command", "an argument holds a NUL byte"));
    }
    Ok(())
}

/// The replica a stream goes to: the one named (of this service), or the
/// first running one. Answers it with its node.
pub async fn stream_target(
    ctx: &Ctx,
    loaded: &Loaded,
    replica: Option<&str>,
) -> Result<(String, String)> {
    let replicas = replicas(ctx, &loaded.pid, &loaded.meta.id).await?;
    let chosen = match replica {
        Some(rid) => replicas.iter().find(|(r, _)| r.id == rid).ok_or_else(|| {
            ApiError::not_found(format!(
                "replica {rid:?} not found in service {:?}",
                loaded.meta.name
            ))
            .with_field("replica")
        })?,
        None => replicas
            .iter()
            .find(|(_, s)| s.as_ref().is_some_and(|s| s.state == ReplicaState::Running))
            .ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "service {:?} has no running replica",
                    loaded.meta.name
                ))
            })?,
    };
    let node = chosen.0.node.clone().ok_or_else(|| {
        ApiError::unprocessable(format!(
            "replica {:?} is not placed on a node yet",
            chosen.0.id
        ))
    })?;
    Ok((chosen.0.id.clone(), node))
}

/// `GET .../logs`: the last lines of a replica's output, as text.
pub async fn logs(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    query: LogsQuery,
) -> Result<Response> {
    let tail = query.tail()?;
    let loaded = resolve(&ctx, &caller, &p, &s).await?;
    let (replica, node) = stream_target(&ctx, &loaded, query.replica.as_deref()).await?;
    if query.follow == Some(true) {
        return super::streams::follow_text(&ctx, &node, &replica, tail).await;
    }
    let make = |request| lb_model::protocol::ToNode::Logs {
        request,
        replica: replica.clone(),
        tail,
    };
    match ctx
        .streams
        .ask(&node, make, std::time::Duration::from_secs(30))
        .await?
    {
        lb_model::protocol::FromNode::Logs {
            result: Ok(text), ..
        } => {
            use warp::Reply;
            Ok(
                warp::reply::with_header(text, "content-type", "text/plain; charset=utf-8")
                    .into_response(),
            )
        }
        lb_model::protocol::FromNode::Logs {
            result: Err(message),
            ..
        } => Err(ApiError::unprocessable(message)),
        _ => Err(ApiError::internal(
            "a node answered logs with something else",
        )),
    }
}

/// `POST .../exec`: runs a command in a replica; answers its exit code and
/// output.
pub async fn exec(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    body: ExecRequest,
) -> Result<Response> {
    check_command(&body.command)?;
    let timeout = body.timeout.unwrap_or(30);
    if !(1..=300).contains(&timeout) {
        return Err(ApiError::invalid(
            "timeout",
            format!("{timeout} s is out of range (1–300)"),
        ));
    }
    let loaded = resolve(&ctx, &caller, &p, &s).await?;
    let (replica, node) = stream_target(&ctx, &loaded, body.replica.as_deref()).await?;
    let command = body.command.clone();
    let make = |request| lb_model::protocol::ToNode::Exec {
        request,
        replica: replica.clone(),
        command,
        timeout,
    };
    let limit = std::time::Duration::from_secs(timeout + 5);
    match ctx.streams.ask(&node, make, limit).await? {
        lb_model::protocol::FromNode::Exec {
            result: Ok(output), ..
        } => Ok(json(StatusCode::OK, &output)),
        lb_model::protocol::FromNode::Exec {
            result: Err(message),
            ..
        } => Err(ApiError::unprocessable(message)),
        _ => Err(ApiError::internal(
            "a node answered exec with something else",
        )),
    }
}
