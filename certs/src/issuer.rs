//! The ACME issuer: a controller every API server runs (`lb up` and each
//! `lb api`), of which only the holder of the lease-backed lock at
//! `/lb/acme/lock` works, so a domain is ordered once per cluster.
//!
//! While it holds the lock it makes the certificate records match the
//! domain index (`/lb/index/domains/`), level-triggered:
//!
//! - a claimed exact domain with no usable certificate, or past its
//!   `renew_at` (2/3 into the lifetime), is ordered over HTTP-01;
//! - a failed order leaves the ACME server's message on the record and the
//!   next attempt at a jittered exponential backoff;
//! - a claimed wildcard cannot be validated over HTTP-01: its record says
//!   so (status failed) unless a certificate was uploaded for it;
//! - a record of a released domain is removed, unless it was uploaded.
//!
//! Every record write compares the record's revision and the lock's (a
//! fence), so an issuer that lost the lock writes nothing. Between passes
//! it sleeps on watches of the index and the records and on a timer set to
//! the next renewal or retry: an idle cluster costs nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use instant_acme::Account;
use lb_model::backoff::Backoff;
use lb_model::keys::Keys;
use lb_model::{CertRecord, CertSource, CertStatus, Timestamp};
use lb_store::secrets::Sealer;
use lb_store::{Compare, Op, Shared, StoreExt, Txn};

use crate::acme::{self, Answers, Settings};
use crate::check::read_chain;
use crate::records::decode;
use crate::{CertError, Result};

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How the issuer runs (`--acme-*` flags).
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// Off: the issuer does nothing (uploaded certificates still serve).
    pub enabled: bool,
    /// The ACME directory URL (`--acme-directory`).
    pub directory: String,
    /// The account's contact address (`--acme-email`).
    pub email: Option<String>,
    /// Extra roots to trust the ACME server (`--acme-ca-file`).
    pub ca_file: Option<PathBuf>,
    /// Key spelling.
    pub keys: Keys,
    /// The lock's lease; another server takes over this long after the
    /// holder dies.
    pub lease_ttl: Duration,
    /// The first retry delay after a failed order, doubling (jittered) up
    /// to `retry_max`.
    pub retry_first: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
    /// Waited between writing an HTTP-01 answer and asking the server to
    /// check it, for the ingresses to receive it.
    pub answer_delay: Duration,
    /// How long an order may poll for validation and issuance.
    pub order_timeout: Duration,
    /// A full pass at least this often, changes or not.
    pub resync: Duration,
    /// Written into the lock: who issues.
    pub holder: String,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            directory: LETS_ENCRYPT.to_owned(),
            email: None,
            ca_file: None,
            keys: Keys::default(),
            lease_ttl: Duration::from_secs(10),
            retry_first: Duration::from_secs(300),
            retry_max: Duration::from_secs(12 * 3600),
            answer_delay: Duration::from_secs(2),
            order_timeout: Duration::from_secs(90),
            resync: Duration::from_secs(600),
            holder: format!("lb pid {}", std::process::id()),
        }
    }
}

/// The ACME issuer of one API server.
pub struct Issuer {
    store: Shared,
    sealer: Sealer,
    config: AcmeConfig,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a record of a claimed wildcard says.
fn wildcard_error(domain: &str) -> String {
    format!(
        "{domain} is a wildcard, which ACME cannot validate over HTTP-01: upload a certificate for it"
    )
}

impl Issuer {
    /// An issuer over `store`, sealing keys with `sealer`.
    pub fn new(store: Shared, sealer: Sealer, config: AcmeConfig) -> Self {
        Self {
            store,
            sealer,
            config,
        }
    }

    /// Runs until `shutdown` resolves: waits for the lock, issues while it
    /// holds it, and gives it up (revokes its lease) on shutdown. Errors
    /// are logged and retried; it never gives up.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        if !self.config.enabled {
            tracing::info!("ACME issuance is disabled");
            shutdown.await;
            return;
        }
        let held = AtomicI64::new(0);
        tokio::select! {
            _ = self.lead_forever(&held) => {}
            _ = shutdown => {}
        }
        let lease = held.swap(0, Ordering::SeqCst);
        if lease != 0 {
            if let Err(e) = self.store.lease_revoke(lease).await {
                tracing::warn!("cannot give up the ACME lock: {e}");
            }
        }
    }

    async fn lead_forever(&self, held: &AtomicI64) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            match self.try_lock().await {
                Ok(Some((lease, fence))) => {
                    backoff.reset();
                    held.store(lease, Ordering::SeqCst);
                    tracing::info!(holder = %self.config.holder, "ACME lock taken: this server issues certificates");
                    tokio::select! {
                        _ = self.keep_alive(lease) => {
                            tracing::warn!("ACME lock lost (its lease expired)");
                        }
                        _ = self.lead(lease, fence) => {}
                    }
                    held.store(0, Ordering::SeqCst);
                    let _ = self.store.lease_revoke(lease).await;
                }
                Ok(None) => self.wait_for_release().await,
                Err(e) => {
                    tracing::warn!("cannot take the ACME lock: {e}");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Takes the lock if free: answers its lease and revision (the fence).
    async fn try_lock(&self) -> Result<Option<(i64, i64)>> {
        let key = self.config.keys.acme_lock();
        let ttl = self.config.lease_ttl.as_secs().max(1) as i64;
        let lease = self.store.lease_grant(ttl).await?;
        let claim = Txn::new()
            .when(Compare::ModRevision(key.clone(), 0))
            .then(Op::Put {
                key,
                value: self.config.holder.clone().into_bytes(),
                lease,
            });
        let resp = self.store.txn(claim).await?;
        if resp.succeeded {
            Ok(Some((lease, resp.revision)))
        } else {
            let _ = self.store.lease_revoke(lease).await;
            Ok(None)
        }
    }

    /// Sleeps until the lock is deleted (its holder stopped or its lease
    /// expired), or a while if the watch fails.
    async fn wait_for_release(&self) {
        let key = self.config.keys.acme_lock();
        let fallback = self.config.lease_ttl * 3;
        let wait = async {
            let page = self.store.range(&key, None, 1).await?;
            if !page.kvs.iter().any(|kv| kv.key == key) {
                return Ok::<_, lb_store::Error>(());
            }
            let mut changes = self.store.watch(&key, page.revision + 1).await?;
            while let Some(changes) = changes.next().await {
                let gone = changes?
                    .events
                    .iter()
                    .any(|e| matches!(e, lb_store::Event::Delete(kv) if kv.key == key));
                if gone {
                    break;
                }
            }
            Ok(())
        };
        match tokio::time::timeout(fallback, wait).await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!("cannot watch the ACME lock: {e}");
                tokio::time::sleep(self.config.lease_ttl).await;
            }
        }
    }

    /// Keeps the lease alive; returns when it is lost.
    async fn keep_alive(&self, lease: i64) {
        let ttl = self.config.lease_ttl.max(Duration::from_secs(1));
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(ttl / 3).await;
            match self.store.lease_keep_alive(lease).await {
                Ok(()) => last = tokio::time::Instant::now(),
                Err(lb_store::Error::LeaseNotFound(_)) => return,
                Err(e) => {
                    tracing::warn!("cannot renew the ACME lock: {e}");
                    if last.elapsed() >= ttl {
                        return;
                    }
                }
            }
        }
    }

    /// Issues while the lock is held: passes on every change of the index
    /// or the records, at the next due time, and every `resync`.
    async fn lead(&self, lease: i64, fence: i64) {
        let keys = &self.config.keys;
        let mut account = None;
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let watches = async {
                let revision = self.store.revision().await?;
                let domains = self.store.watch(&keys.domains(), revision + 1).await?;
                let certs = self.store.watch(&keys.certs(), revision + 1).await?;
                Ok::<_, lb_store::Error>(futures::stream::select(domains, certs))
            };
            let mut changes = match watches.await {
                Ok(changes) => changes,
                Err(e) => {
                    tracing::warn!("ACME issuer cannot watch: {e}");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            loop {
                let wait = match self.pass(lease, fence, &mut account).await {
                    Ok(due) => {
                        backoff.reset();
                        let now = lb_model::now();
                        due.map_or(self.config.resync, |at| {
                            Duration::from_secs(at.saturating_sub(now).max(0) as u64)
                        })
                        .min(self.config.resync)
                    }
                    Err(e) => {
                        tracing::warn!("ACME issuer pass failed: {e}");
                        backoff.next_delay()
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    change = changes.next() => match change {
                        Some(Ok(_)) => {
                            // A burst of changes is one pass.
                            while let Some(Some(Ok(_))) =
                                futures::FutureExt::now_or_never(changes.next())
                            {}
                        }
                        _ => break,
                    },
                }
            }
        }
    }

    /// One pass; answers when the next renewal or retry is due.
    async fn pass(
        &self,
        lease: i64,
        fence: i64,
        account: &mut Option<Account>,
    ) -> Result<Option<Timestamp>> {
        let keys = &self.config.keys;
        let prefix = keys.domains();
        let (index, _) = self.store.list(&prefix).await?;
        let claimed: BTreeSet<String> = index
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect();
        let certs = keys.certs();
        let (stored, _) = self.store.list(&certs).await?;
        let mut records: BTreeMap<String, (Option<CertRecord>, i64)> = BTreeMap::new();
        for kv in stored {
            let Some(domain) = kv.key.strip_prefix(&certs) else {
                continue;
            };
            let record = decode(&kv.key, &kv.value)
                .map_err(|e| tracing::warn!("{e}; it will be replaced"))
                .ok();
            records.insert(domain.to_owned(), (record, kv.mod_revision));
        }

        for (domain, (record, revision)) in &records {
            let uploaded = record
                .as_ref()
                .is_some_and(|r| r.source == CertSource::Uploaded);
            if !claimed.contains(domain) && !uploaded {
                let txn = Txn::new()
                    .when(Compare::ModRevision(keys.cert(domain), *revision))
                    .when(Compare::ModRevision(keys.acme_lock(), fence))
                    .then(Op::delete(keys.cert(domain)));
                if self.store.txn(txn).await?.succeeded {
                    tracing::info!(domain, "domain released: its certificate record is removed");
                }
            }
        }

        let mut due: Option<Timestamp> = None;
        for domain in &claimed {
            let (record, revision) = records.remove(domain).unwrap_or((None, 0));
            if record
                .as_ref()
                .is_some_and(|r| r.source == CertSource::Uploaded)
            {
                continue;
            }
            if domain.starts_with("*.") {
                let message = wildcard_error(domain);
                if record.as_ref().and_then(|r| r.error.as_ref()) != Some(&message) {
                    let record = CertRecord {
                        status: CertStatus::Failed,
                        error: Some(message),
                        ..CertRecord::pending(domain, CertSource::Acme)
                    };
                    self.put_fenced(domain, &record, revision, fence).await?;
                }
                continue;
            }
            let at = record.as_ref().map_or(0, due_at);
            if at > lb_model::now() {
                due = Some(due.map_or(at, |d| d.min(at)));
                continue;
            }
            if let Some(at) = self
                .issue(domain, record, revision, lease, fence, account)
                .await?
            {
                due = Some(due.map_or(at, |d| d.min(at)));
            }
        }
        Ok(due)
    }

    /// Orders a certificate for `domain` and records the outcome; answers
    /// when the record is next due (`None` when it changed meanwhile).
    async fn issue(
        &self,
        domain: &str,
        record: Option<CertRecord>,
        revision: i64,
        lease: i64,
        fence: i64,
        account: &mut Option<Account>,
    ) -> Result<Option<Timestamp>> {
        let keys = &self.config.keys;
        let (mut record, revision) = match record {
            Some(record) => (record, revision),
            None => {
                let record = CertRecord::pending(domain, CertSource::Acme);
                match self.put_fenced(domain, &record, revision, fence).await? {
                    Some(revision) => (record, revision),
                    None => return Ok(None),
                }
            }
        };
        tracing::info!(
            domain,
            attempt = record.attempts + 1,
            "ordering a certificate"
        );
        let settings = Settings {
            directory: &self.config.directory,
            email: self.config.email.as_deref(),
            ca_file: self.config.ca_file.as_deref(),
        };
        let answers = Answers {
            store: self.store.as_ref(),
            keys,
            lease,
            delay: self.config.answer_delay,
            poll: self.config.order_timeout,
        };
        let outcome = async {
            let acct = match account {
                Some(acct) => acct.clone(),
                None => {
                    let acct =
                        acme::account(self.store.as_ref(), keys, &self.sealer, &settings, fence)
                            .await?;
                    *account = Some(acct.clone());
                    acct
                }
            };
            let issued = acme::order(&acct, domain, &answers).await?;
            let leaf = read_chain(&issued.chain_pem).map_err(|e| {
                CertError::Acme(format!("the ACME server's certificate cannot be read: {e}"))
            })?;
            Ok::<_, CertError>((issued, leaf))
        }
        .await;
        let now = lb_model::now();
        match outcome {
            Ok((issued, leaf)) => {
                let lifetime = leaf.not_after - leaf.not_before;
                record = CertRecord {
                    status: CertStatus::Issued,
                    names: leaf.names,
                    chain_pem: issued.chain_pem,
                    sealed_key: self.sealer.seal(&issued.key_pem, &keys.cert(domain)),
                    not_after: Some(leaf.not_after),
                    issued_at: Some(now),
                    renew_at: Some(leaf.not_before + lifetime * 2 / 3),
                    ..CertRecord::pending(domain, CertSource::Acme)
                };
                tracing::info!(domain, not_after = leaf.not_after, "certificate issued");
            }
            // The store failing is no fault of the domain's: the pass is
            // retried without counting an attempt.
            Err(CertError::Store(e)) => return Err(CertError::Store(e)),
            Err(e) => {
                let message = e.to_string();
                record.attempts += 1;
                let delay = retry_delay(
                    self.config.retry_first,
                    self.config.retry_max,
                    record.attempts,
                );
                record.next_attempt = Some(now + delay.as_secs().max(1) as i64);
                record.status = if record.usable(now) {
                    CertStatus::Issued
                } else {
                    CertStatus::Failed
                };
                tracing::warn!(domain, attempts = record.attempts, retry_in = ?delay, "certificate order failed: {message}");
                record.error = Some(message);
            }
        }
        Ok(self
            .put_fenced(domain, &record, revision, fence)
            .await?
            .map(|_| due_at(&record)))
    }

    /// Writes a record if it is still at `revision` and the lock is still
    /// ours; answers the new revision.
    async fn put_fenced(
        &self,
        domain: &str,
        record: &CertRecord,
        revision: i64,
        fence: i64,
    ) -> Result<Option<i64>> {
        let keys = &self.config.keys;
        let key = keys.cert(domain);
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), revision))
            .when(Compare::ModRevision(keys.acme_lock(), fence))
            .then(Op::put(key, lb_store::encode(record)));
        let resp = self.store.txn(txn).await?;
        if !resp.succeeded {
            tracing::info!(
                domain,
                "certificate record changed meanwhile (or the lock was lost); not written"
            );
        }
        Ok(resp.succeeded.then_some(resp.revision))
    }
}

/// The delay before the attempt after `attempts` failed ones: from
/// `first`, doubling (jittered) up to `max`.
fn retry_delay(first: Duration, max: Duration, attempts: u32) -> Duration {
    let mut backoff = Backoff::new(first, max);
    let mut delay = backoff.next_delay();
    for _ in 1..attempts.min(64) {
        delay = backoff.next_delay();
    }
    delay
}

/// When a record wants the issuer next: its renewal once issued, and not
/// before a retry that is due.
fn due_at(record: &CertRecord) -> Timestamp {
    let retry = record.next_attempt.unwrap_or(0);
    match record.status {
        CertStatus::Issued => record.renew_at.unwrap_or(0).max(retry),
        CertStatus::Pending | CertStatus::Failed => retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: CertStatus, renew_at: Option<i64>, next: Option<i64>) -> CertRecord {
        CertRecord {
            status,
            renew_at,
            next_attempt: next,
            ..CertRecord::pending("a.example.com", CertSource::Acme)
        }
    }

    #[test]
    fn due_times_follow_renewals_and_retries() {
        let check = |r: CertRecord, expect: i64| assert_eq!(due_at(&r), expect, "{r:?}");
        check(record(CertStatus::Pending, None, None), 0);
        check(record(CertStatus::Failed, None, Some(50)), 50);
        check(record(CertStatus::Issued, Some(100), None), 100);
        // A failed renewal waits for its retry.
        check(record(CertStatus::Issued, Some(100), Some(150)), 150);
    }

    #[test]
    fn retry_delays_grow_to_the_ceiling() {
        let delay = |attempts| {
            retry_delay(Duration::from_secs(10), Duration::from_secs(100), attempts).as_secs()
        };
        assert!((10..=15).contains(&delay(1)));
        assert!((20..=30).contains(&delay(2)));
        assert!((100..=150).contains(&delay(9)));
        assert!((100..=150).contains(&delay(u32::MAX)));
    }
}
