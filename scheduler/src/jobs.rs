//! One-off jobs: placing pending jobs on nodes like replicas, and the
//! jobs' end when the API cannot see it.
//!
//! A job record (`.../services/<sid>/jobs/<jid>`, see [`lb_model::Job`])
//! is written `pending` by the API or by [`crate::cron`]. A pass places
//! each pending job where its service's replica would fit (memory and CPU
//! as the spec asks, its node selector; no host ports): one transaction,
//! fenced by the leader key and the job record's revision, sets the job's
//! node and writes the node an assignment with [`lb_model::JobRun`]. The
//! assignment then counts in [`crate::capacity`] like a replica's. A job
//! that finds no room stays pending with the reason in its `message`.
//!
//! The node reports the job's start and end through the API, which records
//! the end and removes the assignment in one transaction. What the API
//! cannot see, a pass does: a job whose node is lost (gone past the grace)
//! fails with that reason and is not run again (a job may have side
//! effects: running it twice silently is worse than saying it failed); an
//! assignment whose job is gone or over is deleted; a service keeps its
//! newest [`lb_model::JOB_HISTORY`] finished jobs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use lb_model::keys::Keys;
use lb_model::{Assignment, Job, JobRun, JobState, ScheduleRecord, JOB_HISTORY};
use lb_store::{encode, Compare, KeyValue, Op, Shared};

use crate::capacity::node_views;
use crate::commit;
use crate::placement::Request;
use crate::reconcile::{Plan, Unit};
use crate::state::{Held, ServiceKey, State, Versioned};

/// A job record as the scheduler read it.
#[derive(Debug, Clone)]
pub struct JobEntry {
    /// The decoded record.
    pub job: Job,
    /// Its `mod_revision`.
    pub revision: i64,
}

/// The jobs and schedule records of the cluster, kept from the watch.
#[derive(Debug, Default)]
pub struct Jobs {
    /// Every job record, by service, then by id (ids sort by time).
    pub by_service: HashMap<ServiceKey, BTreeMap<String, JobEntry>>,
    /// Jobs not over yet: (service, job id).
    pub active: BTreeSet<(ServiceKey, String)>,
    /// Schedule records: (service, schedule name).
    pub schedules: HashMap<(ServiceKey, String), Versioned<ScheduleRecord>>,
    /// Something changed that a jobs pass must look at.
    pub dirty: bool,
    /// Services whose finished jobs may be beyond the history kept.
    pub prune: BTreeSet<ServiceKey>,
    /// A schedule or its record changed: the cron looks again.
    pub cron_dirty: bool,
}

/// Whether an assignment is a job's (it has no placement record).
pub fn is_job(held: &Held) -> bool {
    held.assignment.as_ref().is_some_and(|a| a.job.is_some())
}

impl Jobs {
    /// Takes in a put of a key the rest of the state does not know.
    pub fn put(&mut self, keys: &Keys, kv: &KeyValue) {
        if let Some((pid, sid, jid)) = keys.parse_job(&kv.key) {
            let key = (pid.to_owned(), sid.to_owned());
            let Ok(job) = serde_json::from_slice::<Job>(&kv.value) else {
                tracing::warn!(key = %kv.key, "skipping a damaged job record");
                return;
            };
            if job.state.is_final() {
                self.active.remove(&(key.clone(), jid.to_owned()));
                self.prune.insert(key.clone());
                // A schedule's `forbid` waits on its running jobs.
                self.cron_dirty |= job.schedule.is_some();
            } else {
                self.active.insert((key.clone(), jid.to_owned()));
            }
            self.by_service.entry(key).or_default().insert(
                jid.to_owned(),
                JobEntry {
                    job,
                    revision: kv.mod_revision,
                },
            );
            self.dirty = true;
        } else if let Some((pid, sid, name)) = keys.parse_schedule_record(&kv.key) {
            if let Ok(value) = serde_json::from_slice::<ScheduleRecord>(&kv.value) {
                let key = ((pid.to_owned(), sid.to_owned()), name.to_owned());
                self.schedules.insert(
                    key,
                    Versioned {
                        value,
                        revision: kv.mod_revision,
                    },
                );
                self.cron_dirty = true;
            }
        }
    }

    /// Takes in a delete of a key the rest of the state does not know.
    pub fn delete(&mut self, keys: &Keys, key: &str) {
        if let Some((pid, sid, jid)) = keys.parse_job(key) {
            let service = (pid.to_owned(), sid.to_owned());
            self.active.remove(&(service.clone(), jid.to_owned()));
            if let Some(list) = self.by_service.get_mut(&service) {
                list.remove(jid);
                if list.is_empty() {
                    self.by_service.remove(&service);
                }
            }
            self.dirty = true;
        } else if let Some((pid, sid, name)) = keys.parse_schedule_record(key) {
            self.schedules
                .remove(&((pid.to_owned(), sid.to_owned()), name.to_owned()));
            self.cron_dirty = true;
        }
    }

    /// The job with this id in this service.
    pub fn get(&self, service: &ServiceKey, jid: &str) -> Option<&JobEntry> {
        self.by_service.get(service)?.get(jid)
    }

    /// The jobs of a schedule not over yet.
    pub fn running_of<'a>(
        &'a self,
        service: &'a ServiceKey,
        schedule: &'a str,
    ) -> impl Iterator<Item = &'a JobEntry> + 'a {
        self.by_service
            .get(service)
            .into_iter()
            .flat_map(|l| l.values())
            .filter(move |e| !e.job.state.is_final() && e.job.schedule.as_deref() == Some(schedule))
    }
}

/// The assignment that runs a job: the service's current image, env,
/// command override (the job's), volumes, confinement and limits; no
/// ports, no health check.
fn assignment(
    job: &Job,
    meta: &lb_model::ServiceMeta,
    spec: &lb_model::ServiceSpec,
) -> Option<Assignment> {
    Some(Assignment {
        replica: job.id.clone(),
        project: job.project.clone(),
        service: job.service.clone(),
        service_name: meta.name.clone(),
        generation: meta.generation,
        restart_generation: 0,
        image: spec.image.clone()?,
        memory: spec.memory,
        cpu: spec.cpu,
        env: spec.env.clone(),
        command: Some(job.command.clone()),
        ports: Vec::new(),
        volumes: spec.volumes.clone(),
        running: true,
        stop_timeout: spec.stop_timeout,
        hardening: spec.hardening(),
        health: None,
        job: Some(JobRun {
            timeout: job.timeout,
            cancel: job.cancel,
        }),
    })
}

/// A job's record changed, fenced on the revision it was read at.
fn rewrite(keys: &Keys, entry: &JobEntry, job: &Job) -> (Compare, Op) {
    let key = keys.job(&job.project, &job.service, &job.id);
    (
        Compare::ModRevision(key.clone(), entry.revision),
        Op::put(key, encode(job)),
    )
}

/// One jobs pass: places pending jobs, fails jobs on lost nodes, deletes
/// assignments of jobs gone or over, prunes history. Answers the highest
/// revision written (0: nothing).
pub async fn pass(
    store: &Shared,
    keys: &Keys,
    fence: (&str, i64),
    state: &mut State,
) -> lb_store::Result<i64> {
    state.jobs.dirty = false;
    let fence = Compare::ModRevision(fence.0.to_owned(), fence.1);
    let now = lb_model::now();
    let mut nodes = node_views(state);
    let mut units = Vec::new();
    let none = BTreeMap::new();

    for (service, jid) in &state.jobs.active {
        let Some(entry) = state.jobs.get(service, jid) else {
            continue;
        };
        let job = &entry.job;
        let records = state.services.get(service);
        let (meta, spec) = match records.map(|r| (&r.meta, &r.spec)) {
            Some((Some(m), Some(s))) => (&m.value, &s.value),
            // The service is being deleted: its jobs go with it.
            _ => continue,
        };
        match &job.node {
            None if job.cancel => {
                let mut done = job.clone();
                done.finish(
                    JobState::Cancelled,
                    None,
                    "",
                    "cancelled before it started",
                    now,
                );
                let (c, op) = rewrite(keys, entry, &done);
                units.push(Unit {
                    compares: vec![c],
                    ops: vec![op],
                    ..Unit::default()
                });
            }
            None => {
                let Some(a) = assignment(job, meta, spec) else {
                    let why = "the service has no image yet";
                    if job.message != why {
                        let mut waiting = job.clone();
                        waiting.message = why.into();
                        let (c, op) = rewrite(keys, entry, &waiting);
                        units.push(Unit {
                            compares: vec![c],
                            ops: vec![op],
                            ..Unit::default()
                        });
                    }
                    continue;
                };
                let request = Request {
                    service: &job.service,
                    memory: spec.memory,
                    cpu: spec.cpu,
                    ports: Vec::new(),
                    selector: &spec.node_selector,
                };
                let chosen = nodes.choose(&request).map(|n| n.id.clone());
                match chosen {
                    Ok(nid) => {
                        nodes.take(
                            &nid,
                            &Request {
                                selector: &none,
                                ..request
                            },
                        );
                        let mut placed = job.clone();
                        placed.node = Some(nid.clone());
                        placed.image = Some(a.image.clone());
                        placed.message = String::new();
                        let (c, op) = rewrite(keys, entry, &placed);
                        let akey = keys.node_replica(&nid, &job.id);
                        tracing::info!(job = %job.id, node = %nid, "placing a job");
                        units.push(Unit {
                            compares: vec![c, Compare::ModRevision(akey.clone(), 0)],
                            ops: vec![op, Op::put(akey, encode(&a))],
                            placed: 1,
                            ..Unit::default()
                        });
                    }
                    Err(why) => {
                        let why = format!("waiting for room: {why}");
                        if job.message != why {
                            let mut waiting = job.clone();
                            waiting.message = why;
                            let (c, op) = rewrite(keys, entry, &waiting);
                            units.push(Unit {
                                compares: vec![c],
                                ops: vec![op],
                                ..Unit::default()
                            });
                        }
                    }
                }
            }
            Some(nid) => {
                let held = state.assignments.get(&job.id).filter(|h| &h.node == nid);
                let lost = state.lost.contains(nid) || !state.nodes.contains_key(nid);
                let why = if lost {
                    let name = state.nodes.get(nid).map_or(nid.as_str(), |n| &n.name);
                    Some(format!(
                        "node {name} was lost while the job ran; it is not run again"
                    ))
                } else if held.is_none() {
                    Some("its assignment disappeared from its node".to_owned())
                } else {
                    None
                };
                let Some(why) = why else {
                    // Running; a cancel reaches the node through the
                    // assignment (the API writes both), nothing to do here.
                    continue;
                };
                tracing::warn!(job = %job.id, node = %nid, %why, "failing a job");
                let mut failed = job.clone();
                failed.finish(JobState::Failed, None, "", why, now);
                let (c, op) = rewrite(keys, entry, &failed);
                let mut ops = vec![op];
                let mut compares = vec![c];
                if let Some(held) = held {
                    let akey = keys.node_replica(nid, &job.id);
                    compares.push(Compare::ModRevision(akey.clone(), held.revision));
                    ops.push(Op::delete(akey));
                }
                units.push(Unit {
                    compares,
                    ops,
                    ..Unit::default()
                });
            }
        }
    }

    // Assignments of jobs gone (the service deleted) or over (an end
    // recorded while the assignment lived on).
    for (jid, held) in &state.assignments {
        let Some(a) = held.assignment.as_ref().filter(|a| a.job.is_some()) else {
            continue;
        };
        let service = (a.project.clone(), a.service.clone());
        let live = state
            .jobs
            .get(&service, jid)
            .is_some_and(|e| !e.job.state.is_final() && e.job.node.as_deref() == Some(&held.node));
        if !live {
            let akey = keys.node_replica(&held.node, jid);
            units.push(Unit {
                compares: vec![Compare::ModRevision(akey.clone(), held.revision)],
                ops: vec![Op::delete(akey)],
                removed: 1,
                ..Unit::default()
            });
        }
    }

    // History: the newest finished jobs of each service are kept.
    for service in std::mem::take(&mut state.jobs.prune) {
        let Some(list) = state.jobs.by_service.get(&service) else {
            continue;
        };
        let finished: Vec<&JobEntry> = list.values().filter(|e| e.job.state.is_final()).collect();
        let extra = finished.len().saturating_sub(JOB_HISTORY);
        for e in finished.into_iter().take(extra) {
            let key = keys.job(&service.0, &service.1, &e.job.id);
            units.push(Unit {
                compares: vec![Compare::ModRevision(key.clone(), e.revision)],
                ops: vec![Op::delete(key)],
                ..Unit::default()
            });
        }
    }

    if units.is_empty() {
        return Ok(0);
    }
    // One plan per unit: a job that lost a race is redone alone, on the
    // event that changed it.
    let plans = units
        .into_iter()
        .enumerate()
        .map(|(i, u)| Plan {
            // Apart, so a unit that fails is retried alone.
            service: (String::new(), i.to_string()),
            compares: Vec::new(),
            units: vec![u],
        })
        .collect();
    let done = commit::commit(store, &fence, plans).await?;
    if !done.conflicts.is_empty() || !done.refused.is_empty() {
        tracing::debug!(
            conflicts = done.conflicts.len(),
            refused = done.refused.len(),
            "jobs pass"
        );
    }
    Ok(done.revision)
}
