//! Failover across the members of an etcd cluster. lb is given every
//! member's endpoint (`--etcd e1,e2,e3`); like etcd's own Go client it talks
//! to one member at a time (one client per endpoint, connected on first use)
//! and moves to the next when that member fails: a refused connection, a
//! request without an answer within [`REQUEST_TIMEOUT`] (a member cut off
//! or frozen keeps its TCP connections open and answers nothing), or a
//! member without a leader. HTTP/2 keep-alive pings find a dead connection
//! under a long-lived watch.
//!
//! What is retried on the next member: reads and lease renewals always;
//! writes only when they cannot have reached etcd (the connection was
//! refused, the member has no leader). A write that may have been applied
//! (no answer in time) is reported as [`Error::Unavailable`], and the
//! caller decides, as with any lost answer. Such a write may land much
//! later, after writes made since: a frozen member reads the request from
//! its socket when it runs again (seen in `tests/etcd_cluster.rs`: a put
//! without an answer applied 40 revisions later). Only a conditional write
//! (`put_if`, `create`) is safe to retry.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client as ec;

use super::map_err;
use crate::{Error, Result};

/// How long one request to one member may take before the next member is
/// tried.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle connection is pinged, and how long the answer may take.
pub(super) const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// Whether a failed request may be sent again, to another member.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Reads and renewals: repeating them changes nothing.
    Always,
    /// Writes: only when the request cannot have been applied.
    NotSent,
}

/// One client per member and the member in use.
pub(super) struct Members {
    endpoints: Vec<String>,
    options: ec::ConnectOptions,
    clients: Vec<tokio::sync::Mutex<Option<ec::Client>>>,
    current: AtomicUsize,
}

/// How a request to one member failed.
enum Failure {
    /// The member cannot be reached, or answered it cannot serve: the
    /// request was not applied.
    NotSent(Error),
    /// No answer in time: the request may have been applied.
    Lost(Error),
    /// etcd answered with an error: not a matter of the member.
    Answered(Error),
}

fn classify(err: ec::Error) -> Failure {
    let text = err.to_string();
    let not_sent = text.contains("connect")
        || text.contains("no leader")
        || text.contains("not capable")
        || text.contains("unhealthy cluster");
    let mapped = map_err(err);
    match mapped {
        Error::Unavailable(_) if not_sent => Failure::NotSent(mapped),
        Error::Unavailable(_) => Failure::Lost(mapped),
        other => Failure::Answered(other),
    }
}

impl Members {
    /// Clients for `endpoints` (none connected yet).
    pub(super) fn new(endpoints: &[String], options: ec::ConnectOptions) -> Self {
        let options = options
            .with_keep_alive(KEEP_ALIVE, KEEP_ALIVE)
            .with_keep_alive_while_idle(true);
        Self {
            endpoints: endpoints.to_vec(),
            options,
            clients: endpoints
                .iter()
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            current: AtomicUsize::new(0),
        }
    }

    /// The member in use.
    pub(super) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.endpoints.len()
    }

    /// Member `i` failed: use the next one (unless another caller already
    /// moved on).
    pub(super) fn failed(&self, i: usize) {
        let next = (i + 1) % self.endpoints.len();
        if self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && self.endpoints.len() > 1
        {
            tracing::warn!(
                from = %self.endpoints[i],
                to = %self.endpoints[next],
                "etcd member failed, using the next one"
            );
        }
    }

    /// Member `i`'s client, connected now if it is not yet.
    pub(super) async fn client(&self, i: usize) -> Result<ec::Client> {
        let mut slot = self.clients[i].lock().await;
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        let endpoint = &self.endpoints[i];
        let client = tokio::time::timeout(
            REQUEST_TIMEOUT,
            ec::Client::connect([endpoint], Some(self.options.clone())),
        )
        .await
        .map_err(|_| Error::Unavailable(format!("{endpoint}: connection timed out")))?
        .map_err(|e| Error::Unavailable(format!("{endpoint}: {e}")))?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs `request` on the member in use, and on the next ones after a
    /// failure `retry` allows, for at most two rounds of the members.
    pub(super) async fn call<T, F, Fut>(&self, retry: Retry, request: F) -> Result<T>
    where
        F: Fn(ec::Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, ec::Error>>,
    {
        let rounds = self.endpoints.len() * 2;
        let mut last = None;
        for attempt in 0..rounds {
            let i = self.current();
            let failure = match self.client(i).await {
                Err(err) => Failure::NotSent(err),
                Ok(client) => match tokio::time::timeout(REQUEST_TIMEOUT, request(client)).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(err)) => classify(err),
                    Err(_) => Failure::Lost(Error::Unavailable(format!(
                        "{}: no answer within {REQUEST_TIMEOUT:?}",
                        self.endpoints[i]
                    ))),
                },
            };
            let err = match failure {
                Failure::Answered(err) => return Err(err),
                Failure::Lost(err) => {
                    self.failed(i);
                    if retry == Retry::NotSent {
                        return Err(err);
                    }
                    err
                }
                Failure::NotSent(err) => {
                    self.failed(i);
                    err
                }
            };
            tracing::debug!(error = %err, attempt, "etcd request failed, trying the next member");
            last = Some(err);
            // A full round failed: the cluster may be electing a leader.
            if (attempt + 1) % self.endpoints.len() == 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("no etcd endpoint".into())))
    }
}
