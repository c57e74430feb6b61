//! Claiming builds: the builder's lease, the queue's watch, the claim
//! transaction and the sweep of builds whose builder died.
//!
//! A queued build is a key under `/lb/queue/builds/`; a builder claims it
//! with one transaction that checks both the queue entry and the build
//! record are as it read them, so no build runs twice. While it runs, a key
//! bound to the builder's lease marks it; a build whose builder died (lease
//! gone) is failed by the next builder's sweep.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lb_model::backoff::Backoff;
use lb_model::{Build, BuildStatus, BuildStep};
use lb_store::{Compare, Op, StoreExt, Txn};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::run::Run;
use super::{encode, finish_record, parse_build_name, Worker};

/// Lease of a builder's running marks.
const LEASE_TTL: i64 = 10;
/// How often the lease is kept alive.
const KEEPALIVE: Duration = Duration::from_secs(3);
/// Queue rescans without changes, and sweeps for builds of dead builders.
const RESCAN: Duration = Duration::from_secs(30);

impl Worker {
    /// Claims and runs builds until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let permits = Arc::new(Semaphore::new(self.config.concurrency));
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let lease = match self.store.lease_grant(LEASE_TTL).await {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::warn!(error = %e, "builder: no lease yet");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => continue,
                        _ = &mut shutdown => return,
                    }
                }
            };
            backoff.reset();
            let result = tokio::select! {
                r = self.clone().serve(lease, permits.clone()) => r,
                _ = &mut shutdown => return,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "builder: queue watch lost; again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = &mut shutdown => return,
                }
            }
        }
    }

    /// One lease's life: keep it alive, sweep, claim what is queued. Each
    /// wait is on a timer, the queue's watch or a finished build: an idle
    /// builder sleeps (a permit's `acquire` would return at once while
    /// permits are free, and made this a busy loop).
    async fn serve(self: Arc<Self>, lease: i64, permits: Arc<Semaphore>) -> Result<(), String> {
        let queue = self.keys.build_queue();
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (_, revision) = self.store.list(&queue).await.map_err(|e| e.to_string())?;
        let mut watch = self
            .store
            .watch(&queue, revision + 1)
            .await
            .map_err(|e| e.to_string())?;
        // What woke the loop decides what it does.
        let mut sweep = true;
        let mut claim = true;
        loop {
            if sweep {
                self.sweep().await;
            }
            if claim && permits.available_permits() > 0 {
                self.claim_all(lease, &permits).await?;
            }
            (sweep, claim) = (false, false);
            tokio::select! {
                _ = keepalive.tick() => {
                    self.store.lease_keep_alive(lease).await.map_err(|e| e.to_string())?;
                }
                _ = rescan.tick() => (sweep, claim) = (true, true),
                changes = watch.next() => {
                    match changes {
                        Some(Ok(_)) => claim = true,
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Err("watch ended".into()),
                    }
                }
                // A finished build frees a permit: look again.
                _ = self.freed.notified() => claim = true,
            }
        }
    }

    /// Claims queued builds while permits last; each claimed build runs in
    /// a task of its own.
    pub(crate) async fn claim_all(
        self: &Arc<Self>,
        lease: i64,
        permits: &Arc<Semaphore>,
    ) -> Result<(), String> {
        let (queued, _) = self
            .store
            .list(&self.keys.build_queue())
            .await
            .map_err(|e| e.to_string())?;
        for entry in self.fair_order(queued).await {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                return Ok(());
            };
            let Some(run) = self.claim(lease, &entry).await? else {
                continue;
            };
            let span = tracing::info_span!(
                "build",
                project = %run.pid,
                service = %run.sid,
                number = run.number
            );
            let worker = self.clone();
            tokio::spawn(
                async move {
                    run.execute().await;
                    drop(permit);
                    worker.freed.notify_one();
                }
                .instrument(span),
            );
        }
        Ok(())
    }

    /// The queue in the order builds are to be claimed: round-robin over
    /// users, those with the fewest builds running first, each user's
    /// oldest first (see [`round_robin`]). An entry names its user (the
    /// project's owner, written by the API); an entry without one is
    /// charged to its project's owner as read now.
    async fn fair_order(&self, queued: Vec<lb_store::KeyValue>) -> Vec<lb_store::KeyValue> {
        let mut owners: HashMap<String, String> = HashMap::new();
        let mut owner_of = async |pid: &str| -> String {
            if let Some(owner) = owners.get(pid) {
                return owner.clone();
            }
            let owner = match self.store.get(&self.keys.project(pid)).await {
                Ok(Some(kv)) => serde_json::from_slice::<lb_model::Project>(&kv.value)
                    .map(|p| p.owner)
                    .unwrap_or_default(),
                _ => String::new(),
            };
            owners.insert(pid.to_owned(), owner.clone());
            owner
        };
        let queue = self.keys.build_queue();
        let mut entries = Vec::with_capacity(queued.len());
        for kv in queued {
            let pid = kv
                .key
                .strip_prefix(&queue)
                .and_then(parse_build_name)
                .map(|(pid, _, _)| pid.to_owned())
                .unwrap_or_default();
            let user = match std::str::from_utf8(&kv.value) {
                Ok(uid) if !uid.is_empty() => uid.to_owned(),
                _ => owner_of(&pid).await,
            };
            entries.push(Queued {
                user,
                revision: kv.create_revision,
                entry: kv,
            });
        }
        let mut running: HashMap<String, usize> = HashMap::new();
        let prefix = self.keys.build_claimed_prefix();
        if let Ok((claimed, _)) = self.store.list(&prefix).await {
            for kv in claimed {
                if let Some((pid, _, _)) = kv.key.strip_prefix(&prefix).and_then(parse_build_name) {
                    *running.entry(owner_of(pid).await).or_default() += 1;
                }
            }
        }
        round_robin(entries, &running)
    }

    /// Claims one queue entry: `None` when it is not ours to run (another
    /// builder or a cancel was first, or the entry was stale and is gone).
    pub(crate) async fn claim(
        self: &Arc<Self>,
        lease: i64,
        entry: &lb_store::KeyValue,
    ) -> Result<Option<Run>, String> {
        let stale = || async {
            let _ = self.store.delete(&entry.key).await;
            Ok(None)
        };
        let Some((pid, sid, number)) = entry
            .key
            .strip_prefix(&self.keys.build_queue())
            .and_then(parse_build_name)
        else {
            return stale().await;
        };
        let build_key = self.keys.build(pid, sid, number);
        let build = self
            .store
            .get(&build_key)
            .await
            .map_err(|e| e.to_string())?;
        let Some(build_kv) = build else {
            return stale().await;
        };
        let Ok(mut build) = serde_json::from_slice::<Build>(&build_kv.value) else {
            return stale().await;
        };
        if build.status != BuildStatus::Queued {
            return stale().await;
        }
        build.status = BuildStatus::Cloning;
        build.steps.push(BuildStep {
            name: BuildStatus::Cloning,
            started: lb_model::now(),
            finished: None,
        });
        let txn = Txn::new()
            .when(Compare::ModRevision(entry.key.clone(), entry.mod_revision))
            .when(Compare::ModRevision(
                build_key.clone(),
                build_kv.mod_revision,
            ))
            .then(Op::delete(entry.key.clone()))
            .then(Op::put(build_key.clone(), encode(&build)))
            .then(Op::put(
                self.keys.build_claimed(pid, sid, number),
                self.id.clone().into_bytes(),
            ))
            .then(Op::Put {
                key: self.keys.build_running(pid, sid, number),
                value: self.id.clone().into_bytes(),
                lease,
            });
        let resp = self.store.txn(txn).await.map_err(|e| e.to_string())?;
        if !resp.succeeded {
            return Ok(None); // another builder, or a cancel, was first
        }
        tracing::info!(project = pid, service = sid, number, "build claimed");
        Ok(Some(Run::new(
            self.clone(),
            pid,
            sid,
            number,
            build,
            resp.revision,
        )))
    }

    /// Fails builds whose builder died (claimed, but no live running mark).
    pub(crate) async fn sweep(&self) {
        let prefix = self.keys.build_claimed_prefix();
        let Ok((claimed, _)) = self.store.list(&prefix).await else {
            return;
        };
        for entry in claimed {
            let Some((pid, sid, number)) =
                entry.key.strip_prefix(&prefix).and_then(parse_build_name)
            else {
                continue;
            };
            if matches!(
                self.store
                    .get(&self.keys.build_running(pid, sid, number))
                    .await,
                Ok(Some(_)) | Err(_)
            ) {
                continue;
            }
            let key = self.keys.build(pid, sid, number);
            if let Ok(Some(kv)) = self.store.get(&key).await {
                if let Ok(mut build) = serde_json::from_slice::<Build>(&kv.value) {
                    if !build.status.is_final() {
                        finish_record(
                            &mut build,
                            BuildStatus::Failed,
                            "the builder running this build stopped".into(),
                        );
                        let txn = Txn::new()
                            .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                            .then(Op::put(key, encode(&build)));
                        let _ = self.store.txn(txn).await;
                    }
                }
            }
            let _ = self.store.delete(&entry.key).await;
        }
    }
}

/// A queue entry with the user it is charged to.
#[derive(Debug)]
pub(crate) struct Queued {
    /// The user (project owner) whose build it is.
    pub user: String,
    /// When it was queued (the entry's create revision).
    pub revision: i64,
    /// The entry.
    pub entry: lb_store::KeyValue,
}

/// The order to claim queued builds in, so that one user's many builds do
/// not starve another's one: round-robin over users, one build each per
/// round, users with fewer builds `running` first (then the one whose
/// oldest build waited longest), and each user's builds oldest first.
pub(crate) fn round_robin(
    entries: Vec<Queued>,
    running: &HashMap<String, usize>,
) -> Vec<lb_store::KeyValue> {
    let total = entries.len();
    let mut by_user: BTreeMap<String, Vec<Queued>> = BTreeMap::new();
    for q in entries {
        by_user.entry(q.user.clone()).or_default().push(q);
    }
    let mut users: Vec<(usize, i64, String, VecDeque<Queued>)> = by_user
        .into_iter()
        .map(|(user, mut list)| {
            list.sort_by_key(|q| (q.revision, q.entry.key.clone()));
            let oldest = list.first().map_or(i64::MAX, |q| q.revision);
            let busy = running.get(&user).copied().unwrap_or(0);
            (busy, oldest, user, list.into())
        })
        .collect();
    users.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        for (_, _, _, list) in &mut users {
            if let Some(q) = list.pop_front() {
                out.push(q.entry);
            }
        }
    }
    out
}

#[cfg(test)]
mod round_robin_tests {
    use super::*;

    /// `queue`: (user, revision) per entry; `running`: builds running per
    /// user; `expect`: the users in claim order.
    fn check(queue: &[(&str, i64)], running: &[(&str, usize)], expect: &[&str]) {
        let entries = queue
            .iter()
            .map(|(user, revision)| Queued {
                user: (*user).to_owned(),
                revision: *revision,
                entry: lb_store::KeyValue {
                    key: format!("/lb/queue/builds/{user}.{revision}"),
                    value: Vec::new(),
                    create_revision: *revision,
                    mod_revision: *revision,
                    version: 1,
                    lease: 0,
                },
            })
            .collect();
        let running = running.iter().map(|(u, n)| ((*u).to_owned(), *n)).collect();
        let order: Vec<String> = round_robin(entries, &running)
            .into_iter()
            .map(|kv| kv.key.rsplit('/').next().unwrap().to_owned())
            .collect();
        let expect: Vec<String> = expect.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(order, expect);
    }

    #[test]
    fn users_take_turns_oldest_first() {
        // One user's long queue does not hold up another's single build.
        check(
            &[("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 5)],
            &[],
            &["a.1", "b.5", "a.2", "a.3", "a.4"],
        );
        // Within a user, oldest first whatever the key order.
        check(&[("a", 9), ("a", 3), ("b", 5)], &[], &["a.3", "b.5", "a.9"]);
        // Three users, one round each.
        check(
            &[("c", 1), ("a", 2), ("b", 3), ("a", 4), ("c", 5), ("b", 6)],
            &[],
            &["c.1", "a.2", "b.3", "c.5", "a.4", "b.6"],
        );
        // Nothing queued.
        check(&[], &[("a", 2)], &[]);
    }

    #[test]
    fn users_with_builds_running_go_last() {
        // a holds both permits; when one frees, b's build is next.
        check(
            &[("a", 1), ("a", 2), ("a", 3), ("b", 50)],
            &[("a", 2)],
            &["b.50", "a.1", "a.2", "a.3"],
        );
        // Fewer running first, then the longest waiting.
        check(
            &[("a", 1), ("b", 2), ("c", 3)],
            &[("a", 1), ("b", 1)],
            &["c.3", "a.1", "b.2"],
        );
    }
}
