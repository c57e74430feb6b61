//! One-off jobs on the node: an assignment with [`lb_model::JobRun`] set
//! gets one container, started once and never restarted. While it runs it
//! is reported `running`; at its time limit (counted from when this daemon
//! saw it start) or when the job is cancelled (`cancel` in its assignment)
//! it is stopped with the service's grace period; once it has exited, an
//! operation reads its exit code and the tail of its output and the node
//! sends [`FromNode::JobEnded`]. The container stays until the API, having
//! recorded the end, removes the assignment (then it goes as any
//! unassigned container does). The end is sent again on every new
//! connection until then, so a message lost with a connection is not lost.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lb_model::protocol::FromNode;
use lb_model::{Assignment, JobEnd, ReplicaState, JOB_LOG_MAX};
use tokio::time::Instant;

use super::ops::Op;
use super::spec::spec_hash;
use super::Reconciler;
use crate::runtime::{Container, Runtime};

/// Lines of output read at a job's end (then cut to [`JOB_LOG_MAX`] bytes).
const LOG_LINES: u32 = 5000;

/// Why a job's container was stopped by the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stopped {
    TimedOut,
    Cancelled,
}

/// The node's memory of its jobs.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    /// When each job's container was first seen running (its time limit
    /// counts from then).
    started: HashMap<String, Instant>,
    /// Jobs whose container the node stopped, and why.
    stopped: HashMap<String, Stopped>,
    /// Jobs that could not start, with why: not tried again.
    failed: HashMap<String, String>,
    /// Jobs whose end was sent on this connection.
    ended: HashSet<String>,
}

impl Jobs {
    /// Forgets jobs no longer assigned.
    pub fn retain(&mut self, assigned: impl Fn(&str) -> bool) {
        self.started.retain(|j, _| assigned(j));
        self.stopped.retain(|j, _| assigned(j));
        self.failed.retain(|j, _| assigned(j));
        self.ended.retain(|j| assigned(j));
    }

    /// A new connection: every end not yet acted on is sent again.
    pub fn reconnected(&mut self) {
        self.ended.clear();
    }

    /// When the next running job reaches its time limit.
    pub fn next_deadline<'a>(
        &self,
        desired: impl Iterator<Item = &'a Assignment>,
        now: Instant,
    ) -> Option<Instant> {
        desired
            .filter_map(|a| {
                let run = a.job.as_ref()?;
                let started = self.started.get(&a.replica)?;
                Some(*started + Duration::from_secs(run.timeout))
            })
            .filter(|at| *at > now)
            .min()
    }
}

impl<R: Runtime> Reconciler<R> {
    /// Decides on one job with no operation in flight.
    pub(super) async fn reconcile_job(
        &mut self,
        a: &Assignment,
        mut found: Vec<Container>,
        used: &mut HashSet<u16>,
        now: Instant,
    ) {
        let Some(run) = a.job.clone() else { return };
        if self.jobs.ended.contains(&a.replica) {
            // Sent: the API removes the assignment, and the container with it.
            return;
        }
        found.sort_by_key(|c| c.state != "running");
        let mut found = found.into_iter();
        let current = found.next();
        let extra: Vec<(String, u32)> = found.map(|c| (c.id, 0)).collect();
        if !extra.is_empty() {
            self.spawn(&a.replica, Op::Remove(extra));
            return;
        }
        let Some(c) = current else {
            let error = if let Some(why) = self.jobs.failed.get(&a.replica) {
                Some(why.clone())
            } else if self.jobs.started.contains_key(&a.replica) {
                Some("its container disappeared".to_owned())
            } else if run.cancel {
                None
            } else {
                self.create(a, spec_hash(a), used, now).await;
                return;
            };
            let end = JobEnd {
                exit_code: None,
                logs: String::new(),
                timed_out: false,
                cancelled: error.is_none(),
                error,
            };
            self.send_job_end(&a.replica, end).await;
            return;
        };
        if c.state == "running" {
            let started = *self.jobs.started.entry(a.replica.clone()).or_insert(now);
            self.report(a, ReplicaState::Running, Some(&c), "", None)
                .await;
            let why = if run.cancel {
                Some(Stopped::Cancelled)
            } else if now >= started + Duration::from_secs(run.timeout) {
                Some(Stopped::TimedOut)
            } else {
                None
            };
            if let Some(why) = why {
                if self.jobs.stopped.insert(a.replica.clone(), why).is_none() {
                    tracing::info!(?why, "stopping a job");
                }
                let op = Op::Stop {
                    id: c.id.clone(),
                    grace: a.stop_timeout,
                };
                self.spawn(&a.replica, op);
            }
            return;
        }
        // Exited (or never started): read how it ended, and report it.
        self.jobs.started.entry(a.replica.clone()).or_insert(now);
        let op = Op::JobEnd {
            container: c.id.clone(),
            replica: a.replica.clone(),
            lines: LOG_LINES,
        };
        self.spawn(&a.replica, op);
    }

    /// Takes in what an ended job's container left: its end is reported.
    pub(super) async fn job_ended(
        &mut self,
        a: &Assignment,
        exit: crate::runtime::Exit,
        logs: String,
    ) {
        let stopped = self.jobs.stopped.get(&a.replica).copied();
        let cancelled =
            stopped == Some(Stopped::Cancelled) || a.job.as_ref().is_some_and(|r| r.cancel);
        let end = JobEnd {
            exit_code: exit.code,
            logs: lb_model::log_tail(&logs, JOB_LOG_MAX),
            timed_out: stopped == Some(Stopped::TimedOut) && !cancelled,
            cancelled,
            error: exit.oom_killed.then(|| "killed: out of memory".to_owned()),
        };
        self.send_job_end(&a.replica, end).await;
    }

    /// A job could not start: it ends failed at once (a failed operation
    /// asks for no pass), and is not tried again.
    pub(super) async fn job_failed(&mut self, a: &Assignment, message: &str) {
        tracing::warn!(%message, "job cannot start");
        self.jobs
            .failed
            .insert(a.replica.clone(), message.to_owned());
        let end = JobEnd {
            exit_code: None,
            logs: String::new(),
            timed_out: false,
            cancelled: false,
            error: Some(message.to_owned()),
        };
        self.send_job_end(&a.replica, end).await;
    }

    async fn send_job_end(&mut self, job: &str, end: JobEnd) {
        tracing::info!(%job, code = ?end.exit_code, "job ended");
        self.jobs.ended.insert(job.to_owned());
        let _ = self
            .out
            .send(FromNode::JobEnded {
                job: job.to_owned(),
                end,
            })
            .await;
    }
}
