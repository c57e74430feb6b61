//! The ACME issuer against a real ACME server: Debian's `pebble`, with
//! validation on, run by [`lb_testing::pebble::Pebble`] (its DNS answers
//! every name with 127.0.0.1). Pebble's `httpPort` is a tiny HTTP server
//! here that answers `/.well-known/acme-challenge/<token>` from the store,
//! as the ingress does from its route table. Issued chains are checked with
//! `openssl verify` against pebble's root. The store is the embedded one,
//! and a real etcd (one connection per issuer) for the two-issuer case.
//! `tests/acme.rs` at the root runs the same through lb's real ingress.
//!
//! Needs /usr/bin/pebble, /usr/bin/pebble-challtestsrv, openssl and curl
//! (`contrib/deps.sh --test`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lb_certs::{AcmeConfig, Issuer};
use lb_model::keys::Keys;
use lb_model::{CertRecord, CertSource, CertStatus};
use lb_store::embedded::EmbeddedStore;
use lb_store::etcd::EtcdStore;
use lb_store::secrets::Sealer;
use lb_store::{Event, Shared, StoreExt};
use lb_testing::pebble::{run, Pebble};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long any one wait of these tests may take before it fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// The HTTP-01 responder: answers challenges from the store (or wrongly,
/// when told to), counting the requests.
struct Responder {
    port: u16,
    wrong: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

async fn responder(store: Shared, keys: Keys) -> Responder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let wrong = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (w, h) = (wrong.clone(), hits.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (store, keys, wrong, hits) = (store.clone(), keys.clone(), w.clone(), h.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&buf);
                let path = head.split(' ').nth(1).unwrap_or("");
                let answer = match path.strip_prefix("/.well-known/acme-challenge/") {
                    Some(token) => store
                        .get(&keys.acme_challenge(token))
                        .await
                        .ok()
                        .flatten()
                        .map(|kv| kv.value),
                    None => None,
                };
                let (status, body) = match answer {
                    Some(_) if wrong.load(Ordering::SeqCst) => ("200 OK", b"wrong".to_vec()),
                    Some(body) => ("200 OK", body),
                    None => ("404 Not Found", b"no such challenge".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(&body).await;
            });
        }
    });
    Responder { port, wrong, hits }
}

/// Pebble, its DNS, the responder and a store.
struct Acme {
    store: Shared,
    keys: Keys,
    sealer: Sealer,
    responder: Responder,
    /// With etcd, each issuer gets its own connection, as API servers do.
    etcd: Option<lb_testing::EtcdServer>,
    pebble: Pebble,
    /// The embedded store's files.
    _store_dir: tempfile::TempDir,
}

impl Acme {
    /// On the embedded store.
    async fn start() -> Acme {
        Self::start_on(None).await
    }

    /// On `etcd`, or the embedded store.
    async fn start_on(etcd: Option<lb_testing::EtcdServer>) -> Acme {
        let store_dir = tempfile::tempdir().unwrap();
        let store: Shared = match &etcd {
            Some(etcd) => Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap()),
            None => Arc::new(
                EmbeddedStore::open_dir(&store_dir.path().join("store"))
                    .await
                    .unwrap(),
            ),
        };
        let keys = Keys::default();
        let responder = responder(store.clone(), keys.clone()).await;

        let pebble = Pebble::start(responder.port).await;

        Acme {
            store,
            keys,
            sealer: Sealer::from_key([9; 32]),
            responder,
            etcd,
            pebble,
            _store_dir: store_dir,
        }
    }

    fn config(&self, holder: &str) -> AcmeConfig {
        AcmeConfig {
            enabled: true,
            directory: self.pebble.directory().to_owned(),
            email: Some("ops@lbtest.com".into()),
            ca_file: Some(self.pebble.ca_file()),
            keys: self.keys.clone(),
            lease_ttl: Duration::from_secs(3),
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(2),
            answer_delay: Duration::ZERO,
            order_timeout: Duration::from_secs(30),
            resync: Duration::from_secs(600),
            holder: holder.into(),
        }
    }

    /// Starts an issuer; dropping the answer stops it.
    async fn issuer(&self, holder: &str) -> tokio::sync::oneshot::Sender<()> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let store: Shared = match &self.etcd {
            Some(etcd) => Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap()),
            None => self.store.clone(),
        };
        let issuer = Issuer::new(store, self.sealer.clone(), self.config(holder));
        tokio::spawn(issuer.run(async move {
            let _ = stopped.await;
        }));
        stop
    }

    async fn claim(&self, domain: &str) {
        self.store
            .put(
                &self.keys.domain(domain),
                br#"{"project":"P","service":"S"}"#.to_vec(),
            )
            .await
            .unwrap();
    }

    /// Polls the domain's record until `done` holds, or fails showing it.
    async fn wait_record(&self, domain: &str, done: impl Fn(&CertRecord) -> bool) -> CertRecord {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let record = lb_certs::get(self.store.as_ref(), &self.keys, domain)
                .await
                .unwrap();
            if let Some(record) = record.as_ref().filter(|r| done(r)) {
                return record.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the record of {domain} never reached the expected state: {record:?}\npebble log:\n{}",
                self.pebble.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Checks with openssl that `record`'s chain leads to pebble's root,
    /// names `domain`, and goes with the key the store serves for it.
    async fn verify(&self, domain: &str, record: &CertRecord) {
        let path = self.pebble.dir();
        // Pebble's root, as root.pem beside the files below.
        self.pebble.root_file();
        let leaf_end = record.chain_pem.find("-----END CERTIFICATE-----").unwrap()
            + "-----END CERTIFICATE-----".len();
        std::fs::write(path.join("leaf.pem"), &record.chain_pem[..leaf_end]).unwrap();
        std::fs::write(path.join("chain.pem"), &record.chain_pem).unwrap();
        let verified = run(
            path,
            "openssl",
            &[
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "chain.pem",
                "-purpose",
                "sslserver",
                "-verify_hostname",
                domain,
                "leaf.pem",
            ],
        );
        assert!(verified.contains("leaf.pem: OK"), "{verified}");

        let served = lb_certs::certificates(self.store.as_ref(), &self.keys, &self.sealer)
            .await
            .unwrap();
        let cert = served
            .iter()
            .find(|c| c.domains == [domain])
            .unwrap_or_else(|| panic!("no certificate served for {domain}"));
        assert_eq!(cert.chain_pem, record.chain_pem);
        std::fs::write(path.join("served.key"), &cert.key_pem).unwrap();
        let from_cert = run(
            path,
            "openssl",
            &["x509", "-in", "leaf.pem", "-noout", "-pubkey"],
        );
        let from_key = run(path, "openssl", &["pkey", "-in", "served.key", "-pubout"]);
        assert_eq!(from_cert, from_key, "the served key is not the leaf's");
    }
}

#[tokio::test]
async fn issues_renews_and_releases() {
    let acme = Acme::start().await;
    let _issuer = acme.issuer("issuer-a").await;
    let domain = "app.lbtest.com";
    acme.claim(domain).await;

    let first = acme
        .wait_record(domain, |r| r.status != CertStatus::Pending)
        .await;
    assert_eq!(first.status, CertStatus::Issued, "{first:?}");
    assert_eq!(first.source, CertSource::Acme);
    assert_eq!(first.names, vec![domain.to_string()]);
    assert_eq!(first.error, None);
    assert!(acme.responder.hits.load(Ordering::SeqCst) >= 1);
    let (not_after, renew_at) = (first.not_after.unwrap(), first.renew_at.unwrap());
    let issued_at = first.issued_at.unwrap();
    assert!(issued_at < renew_at && renew_at < not_after, "{first:?}");
    acme.verify(domain, &first).await;
    // The key is sealed at rest, and the HTTP-01 answers are gone.
    let raw = acme
        .store
        .get(&acme.keys.cert(domain))
        .await
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&raw.value).contains("PRIVATE KEY"));
    let (answers, _) = acme.store.list(&acme.keys.acme_challenges()).await.unwrap();
    assert!(answers.is_empty(), "HTTP-01 answers left behind");
    let account = acme
        .store
        .get(&acme.keys.acme_account())
        .await
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&account.value).contains("key_pkcs8"));

    // Renewal: the time comes (the record says it is due in 2 s, as if
    // 2/3 of the lifetime had passed); the issuer wakes on its timer.
    let mut due = first.clone();
    due.renew_at = Some(lb_model::now() + 2);
    acme.store
        .put(&acme.keys.cert(domain), lb_store::encode(&due))
        .await
        .unwrap();
    let renewed = acme
        .wait_record(domain, |r| r.chain_pem != first.chain_pem)
        .await;
    assert_eq!(renewed.status, CertStatus::Issued, "{renewed:?}");
    assert!(
        renewed.renew_at.unwrap() > lb_model::now() + 60,
        "{renewed:?}"
    );
    acme.verify(domain, &renewed).await;

    // A wildcard cannot be validated over HTTP-01: failed, saying so.
    acme.claim("*.lbtest.com").await;
    let wildcard = acme
        .wait_record("*.lbtest.com", |r| r.status == CertStatus::Failed)
        .await;
    assert!(
        wildcard.error.as_deref().unwrap_or("").contains("HTTP-01"),
        "{wildcard:?}"
    );

    // Released domains lose their ACME records.
    for name in [domain, "*.lbtest.com"] {
        acme.store.delete(&acme.keys.domain(name)).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !lb_certs::list(acme.store.as_ref(), &acme.keys)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "records of released domains were never removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_wrong_answer_fails_with_pebbles_message_then_retries() {
    let acme = Acme::start().await;
    acme.responder.wrong.store(true, Ordering::SeqCst);
    let _issuer = acme.issuer("issuer-a").await;
    let domain = "broken.lbtest.com";
    acme.claim(domain).await;

    let failed = acme
        .wait_record(domain, |r| r.status == CertStatus::Failed)
        .await;
    let error = failed.error.clone().unwrap_or_default();
    eprintln!("the order failed with: {error}");
    // Pebble's own words: the answer did not match the key authorization.
    assert!(
        error.contains("did not match")
            && error.contains(r#""wrong""#)
            && error.contains("unauthorized"),
        "{failed:?}"
    );
    assert_eq!(failed.attempts, 1);
    assert!(failed.next_attempt.is_some());
    assert!(failed.chain_pem.is_empty() && failed.sealed_key.is_empty());

    // Fixed: the retry (after the backoff) succeeds.
    acme.responder.wrong.store(false, Ordering::SeqCst);
    let issued = acme
        .wait_record(domain, |r| r.status == CertStatus::Issued)
        .await;
    assert_eq!(issued.attempts, 0);
    assert_eq!(issued.error, None);
    acme.verify(domain, &issued).await;
}

#[tokio::test]
async fn two_issuers_order_once_and_hand_over() {
    two_issuers(Acme::start().await).await;
}

#[tokio::test]
async fn two_issuers_on_etcd_order_once_and_hand_over() {
    let etcd = lb_testing::EtcdServer::start().await;
    two_issuers(Acme::start_on(Some(etcd)).await).await;
}

/// Two issuers (two API servers) at once: one order; when the holder
/// stops, the other issues.
async fn two_issuers(acme: Acme) {
    let start = acme.store.revision().await.unwrap();
    let stop_a = acme.issuer("issuer-a").await;
    let stop_b = acme.issuer("issuer-b").await;
    let domain = "once.lbtest.com";
    acme.claim(domain).await;
    let issued = acme
        .wait_record(domain, |r| r.status == CertStatus::Issued)
        .await;
    acme.verify(domain, &issued).await;

    // Everything written since: one HTTP-01 answer, one issued record.
    let end = acme.store.revision().await.unwrap();
    let mut watch = acme.store.watch(&acme.keys.all(), start + 1).await.unwrap();
    let (mut answers, mut issues) = (0, 0);
    let mut seen = start;
    while seen < end {
        let changes = tokio::time::timeout(DEADLINE, watch.next())
            .await
            .expect("the watch replays history")
            .unwrap()
            .unwrap();
        seen = changes.revision;
        for event in changes.events {
            let Event::Put(kv) = event else { continue };
            if kv.key.starts_with(&acme.keys.acme_challenges()) {
                answers += 1;
            }
            if kv.key == acme.keys.cert(domain) {
                let record: CertRecord = serde_json::from_slice(&kv.value).unwrap();
                issues += usize::from(record.status == CertStatus::Issued);
            }
        }
    }
    assert_eq!((answers, issues), (1, 1), "two orders were made");

    // The holder stops: the other takes over and issues the next domain.
    let lock = acme
        .store
        .get(&acme.keys.acme_lock())
        .await
        .unwrap()
        .unwrap();
    let holder = String::from_utf8(lock.value).unwrap();
    let (stop_holder, _keep) = match holder.as_str() {
        "issuer-a" => (stop_a, stop_b),
        "issuer-b" => (stop_b, stop_a),
        other => panic!("the lock names {other:?}"),
    };
    drop(stop_holder);
    let next = "next.lbtest.com";
    acme.claim(next).await;
    let issued = acme
        .wait_record(next, |r| r.status == CertStatus::Issued)
        .await;
    acme.verify(next, &issued).await;
    let lock = acme
        .store
        .get(&acme.keys.acme_lock())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(String::from_utf8(lock.value).unwrap(), holder);
}
