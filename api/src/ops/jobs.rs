//! One-off jobs of a service (see [`lb_model::Job`]): start one, list and
//! read them, cancel one; and what nodes report about them (the start, the
//! end with exit code and output tail). Placement is the scheduler's
//! (`lb_scheduler::jobs`); schedules fire jobs from `lb_scheduler::cron`.
//! The service's schedules, with their next tick and last run, are read
//! here too.

use lb_model::{Assignment, Job, JobEnd, JobRequest, JobState, ReplicaState, ReplicaStatus};
use lb_model::{JobRun, ScheduleRecord};
use lb_store::{Compare, Op, StoreExt, Txn};
use serde::{Deserialize, Serialize};

use super::resolve::{self, LoadedService};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::{decode, encode};
use crate::models::List;

/// Starts a job of a service the caller may reach: written `pending`, the
/// scheduler places it.
pub async fn create(ctx: &Ctx, caller: &Caller, p: &str, s: &str, body: JobRequest) -> Result<Job> {
    body.validate()?;
    let loaded = resolve::service(ctx, caller, p, s).await?;
    if loaded.spec.image.is_none() {
        return Err(ApiError::unprocessable(format!(
            "service {:?} has no image yet: a job runs the service's image",
            loaded.meta.name
        )));
    }
    check_quota(ctx, &loaded).await?;
    let job = Job::new(
        lb_model::ids::new_id(),
        loaded.pid.clone(),
        loaded.meta.id.clone(),
        body.command,
        body.timeout,
        caller.user.id.clone(),
        lb_model::now(),
    );
    let key = ctx.keys.job(&loaded.pid, &loaded.meta.id, &job.id);
    let txn = Txn::new()
        .when(Compare::ModRevision(key.clone(), 0))
        .when(Compare::ModRevision(
            ctx.keys.service_meta(&loaded.pid, &loaded.meta.id),
            loaded.meta_revision,
        ))
        .then(Op::put(key, encode(&job)));
    if !ctx.store.txn(txn).await?.succeeded {
        return Err(ApiError::conflict(format!(
            "service {:?} changed meanwhile: try again",
            loaded.meta.name
        )));
    }
    Ok(job)
}

/// A job counts against its project owner's quota as one more replica of
/// its service's memory while it is not over: refused with 403 naming
/// `replicas` or `memory` when it would pass the limit.
async fn check_quota(ctx: &Ctx, loaded: &LoadedService) -> Result<()> {
    let Some(kv) = ctx.store.get(&ctx.keys.project(&loaded.pid)).await? else {
        return Ok(());
    };
    let owner = decode::<lb_model::Project>(&kv)?.owner;
    let quota = super::quotas::load(ctx, &owner).await?;
    if quota.replicas.is_none() && quota.memory.is_none() {
        return Ok(());
    }
    let usage = super::quotas::usage(ctx, &owner).await?;
    // The jobs not over in the owner's projects, each with its service's
    // memory.
    let (index, _) = ctx
        .store
        .list(&ctx.keys.project_index_prefix(&owner))
        .await?;
    let (mut jobs, mut memory) = (0u64, 0u64);
    for pid in index
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    {
        let (kvs, _) = ctx.store.list(&ctx.keys.project_prefix(&pid)).await?;
        let mut specs = std::collections::HashMap::new();
        for kv in &kvs {
            if let Some(lb_model::keys::Parsed::ServiceSpec { sid, .. }) = ctx.keys.parse(&kv.key) {
                if let Ok(spec) = serde_json::from_slice::<lb_model::ServiceSpec>(&kv.value) {
                    specs.insert(sid.to_owned(), spec.memory);
                }
            }
        }
        for kv in &kvs {
            let Some((_, sid, _)) = ctx.keys.parse_job(&kv.key) else {
                continue;
            };
            let Ok(job) = serde_json::from_slice::<Job>(&kv.value) else {
                continue;
            };
            if !job.state.is_final() {
                jobs += 1;
                memory += specs.get(sid).copied().unwrap_or_default();
            }
        }
    }
    let check = |limit: lb_model::Limit, wanted: u64| {
        quota
            .check(limit, wanted)
            .map_err(|e| super::quotas::exceeded(&e))
    };
    check(lb_model::Limit::Replicas, usage.replicas + jobs + 1)?;
    check(
        lb_model::Limit::Memory,
        usage.memory + memory + loaded.spec.memory,
    )
}

/// A service's jobs, newest first, without their output (read one job
/// for it).
pub async fn list(ctx: &Ctx, caller: &Caller, p: &str, s: &str) -> Result<List<Job>> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    let (kvs, _) = ctx
        .store
        .list(&ctx.keys.jobs_prefix(&loaded.pid, &loaded.meta.id))
        .await?;
    let mut items = kvs.iter().map(decode::<Job>).collect::<Result<Vec<_>>>()?;
    items.reverse();
    for job in &mut items {
        job.logs.clear();
    }
    let total = items.len();
    Ok(List { items, total })
}

/// A job of the service, with its record's revision.
async fn load(ctx: &Ctx, loaded: &LoadedService, j: &str) -> Result<(Job, i64)> {
    let not_found = || {
        ApiError::not_found(format!(
            "job {j:?} of service {:?} not found",
            loaded.meta.name
        ))
    };
    if !lb_model::ids::is_id(j) {
        return Err(not_found());
    }
    let kv = ctx
        .store
        .get(&ctx.keys.job(&loaded.pid, &loaded.meta.id, j))
        .await?
        .ok_or_else(not_found)?;
    Ok((decode(&kv)?, kv.mod_revision))
}

/// One job, with its output.
pub async fn get(ctx: &Ctx, caller: &Caller, p: &str, s: &str, j: &str) -> Result<Job> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    Ok(load(ctx, &loaded, j).await?.0)
}

/// Cancels a job not over yet: one not placed is over at once; a placed
/// one is marked, and its node told (through its assignment) to stop the
/// container; the end the node then reports is recorded as `cancelled`.
pub async fn cancel(ctx: &Ctx, caller: &Caller, p: &str, s: &str, j: &str) -> Result<Job> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    for _ in 0..20 {
        let (mut job, revision) = load(ctx, &loaded, j).await?;
        if job.state.is_final() {
            return Err(ApiError::conflict(format!(
                "job {} is already over ({})",
                job.id,
                job.state.as_str()
            )));
        }
        let key = ctx.keys.job(&job.project, &job.service, &job.id);
        let mut txn = Txn::new().when(Compare::ModRevision(key.clone(), revision));
        job.cancel = true;
        let assigned = match &job.node {
            Some(nid) => {
                let akey = ctx.keys.node_replica(nid, &job.id);
                ctx.store.get(&akey).await?.map(|kv| (akey, kv))
            }
            None => None,
        };
        match assigned {
            Some((akey, kv)) => {
                let mut a: Assignment = decode(&kv)?;
                a.job = Some(JobRun {
                    timeout: job.timeout,
                    cancel: true,
                });
                txn = txn
                    .when(Compare::ModRevision(akey.clone(), kv.mod_revision))
                    .then(Op::put(akey, encode(&a)));
            }
            None => {
                let why = format!("cancelled by {}", caller.user.username);
                job.finish(JobState::Cancelled, None, "", why, lb_model::now());
            }
        }
        if ctx
            .store
            .txn(txn.then(Op::put(key, encode(&job))))
            .await?
            .succeeded
        {
            return Ok(job);
        }
    }
    Err(ApiError::conflict("the job kept changing: try again"))
}

/// A node reported a job's container's status: `running` starts the job.
pub async fn node_status(ctx: &Ctx, a: &Assignment, status: &ReplicaStatus) -> Result<()> {
    if status.state != ReplicaState::Running {
        return Ok(());
    }
    let key = ctx.keys.job(&a.project, &a.service, &a.replica);
    let Some(kv) = ctx.store.get(&key).await? else {
        return Ok(());
    };
    let mut job: Job = decode(&kv)?;
    if job.state != JobState::Pending {
        return Ok(());
    }
    job.state = JobState::Running;
    job.started = Some(lb_model::now());
    let txn = Txn::new()
        .when(Compare::ModRevision(key.clone(), kv.mod_revision))
        .then(Op::put(key, encode(&job)));
    // Lost to another change: the next report (or the end) comes anyway.
    ctx.store.txn(txn).await?;
    Ok(())
}

/// Node `nid` reported how job `jid` ended: the end is recorded and the
/// assignment removed in one transaction (the node then removes the
/// container). Only a job assigned to that node is touched.
pub async fn node_ended(ctx: &Ctx, nid: &str, jid: &str, end: JobEnd) -> Result<()> {
    let akey = ctx.keys.node_replica(nid, jid);
    for _ in 0..5 {
        let Some(akv) = ctx.store.get(&akey).await? else {
            return Ok(());
        };
        let a: Assignment = decode(&akv)?;
        if a.job.is_none() {
            return Ok(());
        }
        let key = ctx.keys.job(&a.project, &a.service, jid);
        let job = ctx.store.get(&key).await?;
        let mut txn = Txn::new().when(Compare::ModRevision(akey.clone(), akv.mod_revision));
        if let Some(kv) = &job {
            let mut job: Job = decode(kv)?;
            if !job.state.is_final() && job.node.as_deref() == Some(nid) {
                let (mut state, message) = end.outcome(job.timeout);
                if job.cancel && state != JobState::Succeeded {
                    state = JobState::Cancelled;
                }
                let now = lb_model::now();
                job.started.get_or_insert(now);
                job.finish(state, end.exit_code, &end.logs, message, now);
                txn = txn
                    .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                    .then(Op::put(key, encode(&job)));
            }
        }
        if ctx
            .store
            .txn(txn.then(Op::delete(akey.clone())))
            .await?
            .succeeded
        {
            return Ok(());
        }
    }
    Ok(())
}

/// A schedule of a service, as `GET .../schedules` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleView {
    /// The schedule as in the spec.
    #[serde(flatten)]
    pub schedule: lb_model::Schedule,
    /// Its next tick, Unix seconds.
    #[serde(default)]
    pub next_run: Option<i64>,
    /// The last tick handled, Unix seconds.
    #[serde(default)]
    pub last_tick: Option<i64>,
    /// Why the last tick fired nothing, if it did.
    #[serde(default)]
    pub skipped: Option<String>,
    /// The last job it fired (without output).
    #[serde(default)]
    pub last_job: Option<Job>,
}

/// A service's schedules with their next tick and last run.
pub async fn schedules(ctx: &Ctx, caller: &Caller, p: &str, s: &str) -> Result<List<ScheduleView>> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    let now = lb_model::now();
    let mut items = Vec::new();
    for schedule in &loaded.spec.schedules {
        let record = ctx
            .store
            .get(
                &ctx.keys
                    .schedule_record(&loaded.pid, &loaded.meta.id, &schedule.name),
            )
            .await?
            .map(|kv| decode::<ScheduleRecord>(&kv))
            .transpose()?;
        let last_job = match record.as_ref().and_then(|r| r.last_job.as_deref()) {
            Some(jid) => ctx
                .store
                .get(&ctx.keys.job(&loaded.pid, &loaded.meta.id, jid))
                .await?
                .map(|kv| decode::<Job>(&kv))
                .transpose()?
                .map(|mut j| {
                    j.logs.clear();
                    j
                }),
            None => None,
        };
        let from = record.as_ref().map_or(now, |r| r.last_tick.max(now - 1));
        items.push(ScheduleView {
            schedule: schedule.clone(),
            next_run: schedule.next_after(from),
            last_tick: record.as_ref().map(|r| r.last_tick),
            skipped: record.and_then(|r| r.skipped),
            last_job,
        });
    }
    let total = items.len();
    Ok(List { items, total })
}
