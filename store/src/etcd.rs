//! The etcd backend: the store interface over etcd v3 (3.4 and later) through
//! `etcd-client`. This module is the only place lb talks to etcd.
//!
//! Watches survive a lost connection: the stream re-establishes itself from
//! the revision after the last event it delivered, so a restart of etcd (or a
//! failover to another member) loses and repeats nothing.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client as ec;
use lb_model::backoff::Backoff;
use tokio::sync::mpsc;

use members::{Members, Retry};

use super::{
    prefix_end, Changes, Compare, Error, Event, KeyValue, Limits, Op, OpResult, Page, Result,
    Store, Txn, TxnResponse, WatchStream,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

mod members;

/// How lb proves itself to etcd: a CA to trust, a client certificate and
/// its key (PEM files), and an etcd user with its password. All optional;
/// TLS needs `https://` endpoints.
#[derive(Clone, Default)]
pub struct EtcdAccess {
    /// The CA certificate etcd's server certificate must chain to.
    pub ca_cert: Option<PathBuf>,
    /// The client certificate (etcd's `--client-cert-auth`).
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
    /// The etcd user.
    pub user: Option<String>,
    /// The etcd user's password (from the environment, never a flag).
    pub password: Option<String>,
}

impl std::fmt::Debug for EtcdAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAccess")
            .field("ca_cert", &self.ca_cert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl EtcdAccess {
    /// The TLS options, when a CA or a client certificate is given.
    fn tls(&self) -> Result<Option<ec::TlsOptions>> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let mut tls = ec::TlsOptions::new();
        let mut any = false;
        if let Some(ca) = &self.ca_cert {
            tls = tls.ca_certificate(ec::Certificate::from_pem(read(ca)?));
            any = true;
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(ec::Identity::from_pem(read(cert)?, read(key)?));
                any = true;
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(Error::Invalid(
                    "an etcd client certificate needs its key (--etcd-key)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::Invalid(
                    "an etcd client key needs its certificate (--etcd-cert)".into(),
                ))
            }
        }
        Ok(any.then_some(tls))
    }

    /// The user and password, when a user is given.
    fn user(&self) -> Result<Option<(String, String)>> {
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => Ok(Some((user.clone(), password.clone()))),
            (Some(user), None) => Err(Error::Invalid(format!(
                "etcd user {user:?} needs a password (LB_ETCD_PASSWORD)"
            ))),
            (None, _) => Ok(None),
        }
    }
}

/// A store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: ec::Client,
    /// One client per member, with failover: what every request but
    /// [`Store::snapshot`] goes through.
    members: std::sync::Arc<Members>,
    endpoints: Vec<String>,
    limits: Limits,
    key_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

fn map_err(err: ec::Error) -> Error {
    match err {
        ec::Error::GRpcStatus(status) => {
            let message = status.message().to_owned();
            if message.contains("lease not found") {
                // The id is not in the status; callers that know it rewrite.
                Error::LeaseNotFound(0)
            } else if message.contains("too many operations")
                || message.contains("too large")
                || message.contains("duplicate key")
            {
                Error::Invalid(message)
            } else if matches!(
                status.code(),
                tonic_code::Unavailable | tonic_code::DeadlineExceeded | tonic_code::Cancelled
            ) {
                Error::Unavailable(message)
            } else {
                Error::Backend(message)
            }
        }
        ec::Error::TransportError(e) => Error::Unavailable(e.to_string()),
        ec::Error::IoError(e) => Error::Unavailable(e.to_string()),
        other => Error::Backend(other.to_string()),
    }
}

use tonic::Code as tonic_code;

fn convert_kv(kv: &ec::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|_| Error::Backend("key is not utf-8".into()))?
            .to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    })
}

fn prefix_options(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let end = prefix_end(prefix);
    // An empty prefix means every key: etcd spells that range "\0".."\0".
    if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (
            prefix.as_bytes().to_vec(),
            if end.is_empty() { vec![0] } else { end },
        )
    }
}

impl EtcdStore {
    /// The same store, held to `limits` (the cluster's `--max-txn-ops` and
    /// `--max-request-bytes`).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The same store, with the cluster's keys in files under `dir` (the
    /// same on every host) rather than in etcd; see [`crate::secrets`].
    pub fn with_key_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.key_dir = dir;
        self
    }

    /// Connects to the endpoints and checks that etcd answers.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        Self::connect_with(endpoints, &EtcdAccess::default()).await
    }

    /// Connects with TLS files and a user (`access`) and checks that etcd
    /// answers.
    pub async fn connect_with(endpoints: &[String], access: &EtcdAccess) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::Invalid("no etcd endpoint given".into()));
        }
        let mut options = ec::ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        if let Some(tls) = access.tls()? {
            options = options.with_tls(tls);
        }
        if let Some((user, password)) = access.user()? {
            options = options.with_user(user, password);
        }
        let members = std::sync::Arc::new(Members::new(endpoints, options.clone()));
        let shown = endpoints.join(",");
        let unreachable =
            |e: String| Error::Unavailable(format!("cannot reach etcd at {shown}: {e}"));
        let client = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            ec::Client::connect(endpoints, Some(options)),
        )
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let store = Self {
            client,
            members,
            endpoints: endpoints.to_vec(),
            limits: Limits::default(),
            key_dir: None,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, store.revision()).await {
            Err(_) => return Err(unreachable("timed out".into())),
            Ok(Err(Error::Unavailable(e))) => return Err(unreachable(e)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) => {}
        }
        Ok(store)
    }

    fn convert_op(op: &Op) -> ec::TxnOp {
        match op {
            Op::Put { key, value, lease } => {
                let options = (*lease != 0).then(|| ec::PutOptions::new().with_lease(*lease));
                ec::TxnOp::put(key.as_str(), value.clone(), options)
            }
            Op::Delete(key) => ec::TxnOp::delete(key.as_str(), None),
            Op::DeletePrefix(prefix) => {
                let (start, end) = prefix_options(prefix);
                ec::TxnOp::delete(start, Some(ec::DeleteOptions::new().with_range(end)))
            }
            Op::Get(key) => ec::TxnOp::get(key.as_str(), None),
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .members
            .call(Retry::Always, |c| async move {
                c.kv_client().get(key, None).await
            })
            .await?;
        resp.kvs().first().map(convert_kv).transpose()
    }

    async fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        let (mut start, end) = prefix_options(prefix);
        if let Some(after) = after {
            if after.as_bytes() >= start.as_slice() {
                start = after.as_bytes().to_vec();
                start.push(0);
            }
        }
        let options = ec::GetOptions::new()
            .with_range(end)
            .with_limit(limit as i64);
        let resp = self
            .members
            .call(Retry::Always, |c| {
                let (start, options) = (start.clone(), options.clone());
                async move { c.kv_client().get(start, Some(options)).await }
            })
            .await?;
        let kvs = resp
            .kvs()
            .iter()
            .map(convert_kv)
            .collect::<Result<Vec<_>>>()?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(Page {
            kvs,
            more: resp.more(),
            revision,
        })
    }

    async fn snapshot(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        // Pages of a bounded size, every one read at the first page's
        // revision: together one consistent copy.
        const PAGE: i64 = 1000;
        let (first, end) = prefix_options(prefix);
        let mut start = first;
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            let mut options = ec::GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let resp = self
                .client
                .kv_client()
                .get(start.clone(), Some(options))
                .await
                .map_err(map_err)?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                out.push(convert_kv(kv)?);
            }
            match (resp.more(), out.last()) {
                (true, Some(last)) => {
                    start = last.key.as_bytes().to_vec();
                    start.push(0);
                }
                _ => return Ok((out, revision)),
            }
        }
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn key_dir(&self) -> Option<std::path::PathBuf> {
        self.key_dir.clone()
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.limits.check(&txn)?;
        let compares = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision(key, rev) => {
                    ec::Compare::mod_revision(key.as_str(), ec::CompareOp::Equal, *rev)
                }
            })
            .collect::<Vec<_>>();
        let request = ec::Txn::new()
            .when(compares)
            .and_then(txn.success.iter().map(Self::convert_op).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(Self::convert_op).collect::<Vec<_>>());
        let resp = self
            .members
            .call(Retry::NotSent, |c| {
                let request = request.clone();
                async move { c.kv_client().txn(request).await }
            })
            .await
            .map_err(|e| {
                match e {
                    // Name the lease when the request carried exactly one.
                    Error::LeaseNotFound(_) => {
                        let lease =
                            txn.success
                                .iter()
                                .chain(&txn.failure)
                                .find_map(|op| match op {
                                    Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                                    _ => None,
                                });
                        Error::LeaseNotFound(lease.unwrap_or(0))
                    }
                    other => other,
                }
            })?;
        let results = resp
            .op_responses()
            .into_iter()
            .map(|r| {
                Ok(match r {
                    ec::TxnOpResponse::Put(_) => OpResult::Put,
                    ec::TxnOpResponse::Delete(d) => OpResult::Deleted(d.deleted()),
                    ec::TxnOpResponse::Get(g) => {
                        OpResult::Get(g.kvs().first().map(convert_kv).transpose()?)
                    }
                    ec::TxnOpResponse::Txn(_) => {
                        return Err(Error::Backend("nested transactions are not used".into()))
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TxnResponse {
            succeeded: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
            results,
        })
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let from = if from_revision <= 0 {
            self.revision().await? + 1
        } else {
            from_revision
        };
        // Open the first watch here so an unreachable etcd is an error now.
        let first = open_watch(&self.members, prefix, from).await?;
        let (tx, rx) = mpsc::channel::<Result<Changes>>(256);
        tokio::spawn(run_watch(
            self.members.clone(),
            prefix.to_owned(),
            from,
            first,
            tx,
        ));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn revision(&self) -> Result<i64> {
        let options = ec::GetOptions::new().with_count_only();
        let resp = self
            .members
            .call(Retry::Always, |c| {
                let options = options.clone();
                async move { c.kv_client().get("/", Some(options)).await }
            })
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let compacted = self
            .members
            .call(Retry::Always, |c| async move {
                match c.kv_client().compact(revision, None).await {
                    Ok(_) => Ok(()),
                    Err(ec::Error::GRpcStatus(s)) if s.message().contains("compacted") => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await;
        compacted
    }

    async fn lease_grant(&self, ttl_secs: i64) -> Result<i64> {
        if ttl_secs < 1 {
            return Err(Error::Invalid(format!(
                "lease ttl {ttl_secs}s out of range"
            )));
        }
        let resp = self
            .members
            .call(Retry::NotSent, |c| async move {
                c.lease_client().grant(ttl_secs, None).await
            })
            .await?;
        Ok(resp.id())
    }

    async fn lease_keep_alive(&self, lease: i64) -> Result<()> {
        // Opening the keep-alive stream sends one renewal and waits for its
        // answer (an expired lease answers a TTL of 0, an error here): that
        // is the whole renewal, one message to etcd.
        let renewed = self
            .members
            .call(Retry::Always, |c| async move {
                match c.lease_client().keep_alive(lease).await {
                    Ok(_) => Ok(Ok(())),
                    Err(ec::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                        Ok(Err(Error::LeaseNotFound(lease)))
                    }
                    Err(e) => Err(e),
                }
            })
            .await;
        match renewed {
            Ok(answer) => answer,
            Err(Error::LeaseNotFound(_)) => Err(Error::LeaseNotFound(lease)),
            Err(other) => Err(other),
        }
    }

    async fn lease_revoke(&self, lease: i64) -> Result<()> {
        let revoked = self
            .members
            .call(Retry::Always, |c| async move {
                c.lease_client().revoke(lease).await
            })
            .await;
        match revoked {
            Ok(_) => Ok(()),
            Err(Error::LeaseNotFound(_)) => Err(Error::LeaseNotFound(lease)),
            Err(other) => Err(other),
        }
    }
}

type OpenWatch = (ec::Watcher, ec::WatchStream);

/// Opens a watch. `etcd-client` consumes etcd's "created" response; a
/// compacted start arrives next, as a canceled response with the compaction
/// revision, and becomes the stream's [`Error::Compacted`] item.
async fn open_watch(members: &Members, prefix: &str, from: i64) -> Result<OpenWatch> {
    let (start, end) = prefix_options(prefix);
    let options = ec::WatchOptions::new()
        .with_range(end)
        .with_start_revision(from);
    members
        .call(Retry::Always, |c| {
            let (start, options) = (start.clone(), options.clone());
            async move { c.watch_client().watch(start, Some(options)).await }
        })
        .await
}

/// Feeds a watch's events into `tx`, re-opening the watch after connection
/// losses from the revision after the last one delivered.
async fn run_watch(
    members: std::sync::Arc<Members>,
    prefix: String,
    mut next: i64,
    first: OpenWatch,
    tx: mpsc::Sender<Result<Changes>>,
) {
    let mut current = Some(first);
    let mut backoff = Backoff::new(Duration::from_millis(100), WATCH_RETRY_MAX);
    loop {
        let (watcher, mut stream) = match current.take() {
            Some(open) => open,
            None => {
                let opened = tokio::select! {
                    opened = open_watch(&members, &prefix, next) => opened,
                    _ = tx.closed() => return,
                };
                match opened {
                    Ok(open) => open,
                    Err(err @ Error::Compacted { .. }) => {
                        let _ = tx.send(Err(err)).await;
                        return;
                    }
                    Err(err) => {
                        tracing::debug!(%prefix, error = %err, "watch re-open failed, retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                            _ = tx.closed() => return,
                        }
                        continue;
                    }
                }
            }
        };
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = tx.closed() => return,
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) | Err(_) => break,
            };
            if resp.compact_revision() > 0 {
                let err = Error::Compacted {
                    requested: next,
                    compact_revision: resp.compact_revision(),
                };
                let _ = tx.send(Err(err)).await;
                return;
            }
            if resp.canceled() {
                break;
            }
            backoff.reset();
            let mut last = next - 1;
            let mut batch: Option<Changes> = None;
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let kv = match convert_kv(kv) {
                    Ok(kv) => kv,
                    Err(err) => {
                        let _ = tx.send(Err(err)).await;
                        return;
                    }
                };
                last = last.max(kv.mod_revision);
                let revision = kv.mod_revision;
                let event = match event.event_type() {
                    ec::EventType::Put => Event::Put(kv),
                    ec::EventType::Delete => Event::Delete(KeyValue {
                        value: Vec::new(),
                        ..kv
                    }),
                };
                match &mut batch {
                    Some(b) if b.revision == revision => b.events.push(event),
                    _ => {
                        if let Some(done) = batch.replace(Changes {
                            revision,
                            events: vec![event],
                        }) {
                            if tx.send(Ok(done)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            if let Some(done) = batch {
                if tx.send(Ok(done)).await.is_err() {
                    return;
                }
            }
            // One response carries whole revisions: resume after the last.
            next = last + 1;
        }
        drop(watcher);
        // The member may be gone (or frozen: the keep-alive pings found it
        // silent): re-open on the next one.
        members.failed(members.current());
        tracing::debug!(%prefix, next, "watch stream lost, re-opening");
    }
}
