//! Cron: fires the services' schedules (`schedules` in a spec, see
//! [`lb_model::Schedule`]), each tick as one job, exactly once cluster-wide.
//!
//! Only the scheduler leader fires, and each firing is one transaction that
//! compares the leader key's revision (a deposed leader writes nothing) and
//! the schedule's record (`.../schedules/<name>`, its last tick) at the
//! revision the decision was made from, and writes the record with the new
//! tick beside the new job. Two schedulers that both think a tick is due
//! (a failover with a lagging view) cannot both write it: the second's
//! compare fails, and it reads the tick as done.
//!
//! A tick is the latest one after the last handled and not after now, so
//! ticks missed while no scheduler ran fire once, not once each. A schedule
//! without a record (new) starts counting from when it is first seen. With
//! `concurrency: forbid` a tick while an earlier run of the schedule is not
//! over fires nothing (the record says why); `replace` cancels the earlier
//! runs in the same transaction; `allow` fires beside them.
//!
//! The leader's loop sleeps until the next tick of any schedule
//! ([`pass`] answers when that is), so an idle cluster wakes for nothing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lb_model::ids::new_id;
use lb_model::keys::Keys;
use lb_model::{Concurrency, Job, JobRun, JobState, ScheduleRecord, Timestamp};
use lb_store::{encode, Compare, Op, Shared, Txn};

use crate::state::State;

/// What one cron pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fired {
    /// Jobs created.
    pub jobs: usize,
    /// Ticks skipped (`forbid` with a run still going).
    pub skipped: usize,
    /// The highest revision written (0: nothing).
    pub revision: i64,
    /// The next tick of any schedule, Unix seconds.
    pub next: Option<Timestamp>,
}

/// The current time, in Unix milliseconds.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// When (by the monotonic clock) the Unix second `at` begins.
pub fn instant_of(at: Timestamp) -> Instant {
    // A few milliseconds late rather than early: the tick is then due.
    let wait = (at * 1000 - now_ms()).max(0) as u64 + 5;
    Instant::now() + Duration::from_millis(wait)
}

/// Fires every schedule due at `now` (Unix seconds) and answers what it
/// did and when the next tick is.
pub async fn pass(
    store: &Shared,
    keys: &Keys,
    fence: (&str, i64),
    state: &mut State,
    now: Timestamp,
) -> lb_store::Result<Fired> {
    state.jobs.cron_dirty = false;
    let fence = Compare::ModRevision(fence.0.to_owned(), fence.1);
    let mut fired = Fired::default();
    let mut next: Option<Timestamp> = None;
    for (service, records) in &state.services {
        let (Some(_meta), Some(spec)) = (&records.meta, &records.spec) else {
            continue;
        };
        for schedule in &spec.value.schedules {
            let rkey = keys.schedule_record(&service.0, &service.1, &schedule.name);
            let record = state
                .jobs
                .schedules
                .get(&(service.clone(), schedule.name.clone()));
            let (last, revision) = match record {
                Some(r) => (r.value.last_tick, r.revision),
                None => {
                    // New: count from now; the record's event brings the
                    // next look.
                    let start = ScheduleRecord {
                        last_tick: now,
                        last_job: None,
                        skipped: None,
                    };
                    let txn = Txn::new()
                        .when(fence.clone())
                        .when(Compare::ModRevision(rkey.clone(), 0))
                        .then(Op::put(rkey, encode(&start)));
                    let resp = store.txn(txn).await?;
                    if resp.succeeded {
                        fired.revision = fired.revision.max(resp.revision);
                    }
                    if let Some(t) = schedule.next_after(now) {
                        next = Some(next.map_or(t, |n| n.min(t)));
                    }
                    continue;
                }
            };
            let Some(tick) = schedule.due(last, now) else {
                if let Some(t) = schedule.next_after(last) {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
                continue;
            };
            let running: Vec<_> = state.jobs.running_of(service, &schedule.name).collect();
            let mut txn = Txn::new()
                .when(fence.clone())
                .when(Compare::ModRevision(rkey.clone(), revision));
            let mut record = ScheduleRecord {
                last_tick: tick,
                last_job: record.and_then(|r| r.value.last_job.clone()),
                skipped: None,
            };
            if schedule.concurrency == Concurrency::Forbid && !running.is_empty() {
                record.skipped = Some(format!(
                    "the run of {} was not over (concurrency: forbid)",
                    running[0].job.id
                ));
                fired.skipped += 1;
                tracing::info!(schedule = %schedule.name, tick, "tick skipped: a run is not over");
            } else {
                if schedule.concurrency == Concurrency::Replace {
                    for old in &running {
                        txn = cancel(keys, txn, state, old, now);
                    }
                }
                let mut job = Job::new(
                    new_id(),
                    service.0.clone(),
                    service.1.clone(),
                    schedule.command.clone(),
                    schedule.timeout,
                    format!("schedule:{}", schedule.name),
                    now,
                );
                job.schedule = Some(schedule.name.clone());
                job.tick = Some(tick);
                let jkey = keys.job(&service.0, &service.1, &job.id);
                txn = txn
                    .when(Compare::ModRevision(jkey.clone(), 0))
                    .then(Op::put(jkey, encode(&job)));
                record.last_job = Some(job.id.clone());
            }
            let resp = store.txn(txn.then(Op::put(rkey, encode(&record)))).await?;
            if resp.succeeded {
                fired.revision = fired.revision.max(resp.revision);
                if let (None, Some(job)) = (&record.skipped, &record.last_job) {
                    fired.jobs += 1;
                    tracing::info!(schedule = %schedule.name, tick, %job, "schedule fired");
                }
            } else {
                // Another writer got there first (or the leadership is
                // gone): the record's event brings a fresh look.
                tracing::info!(schedule = %schedule.name, tick, "tick already handled");
            }
            if let Some(t) = schedule.next_after(tick.max(now)) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
    }
    fired.next = next;
    Ok(fired)
}

/// Adds to `txn` the cancel of a job replaced by its schedule's next run:
/// not yet placed, it is over at once; placed, its node is told to stop it
/// (its end is then recorded as cancelled).
fn cancel(
    keys: &Keys,
    txn: Txn,
    state: &State,
    old: &crate::jobs::JobEntry,
    now: Timestamp,
) -> Txn {
    let job = &old.job;
    let jkey = keys.job(&job.project, &job.service, &job.id);
    let mut updated = job.clone();
    updated.cancel = true;
    let mut txn = txn.when(Compare::ModRevision(jkey.clone(), old.revision));
    match &job.node {
        None => {
            updated.finish(
                JobState::Cancelled,
                None,
                "",
                "replaced by its schedule's next run",
                now,
            );
        }
        Some(nid) => {
            if let Some(held) = state.assignments.get(&job.id).filter(|h| &h.node == nid) {
                if let Some(a) = &held.assignment {
                    let akey = keys.node_replica(nid, &job.id);
                    let mut a = a.clone();
                    a.job = Some(JobRun {
                        timeout: job.timeout,
                        cancel: true,
                    });
                    txn = txn
                        .when(Compare::ModRevision(akey.clone(), held.revision))
                        .then(Op::put(akey, encode(&a)));
                }
            }
        }
    }
    txn.then(Op::put(jkey, encode(&updated)))
}
