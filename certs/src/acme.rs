//! The ACME protocol steps (RFC 8555) on `instant-acme`: the HTTP client
//! (hyper + rustls on ring, trusting the public roots plus an operator's
//! extra roots), the cluster's account (created once, its credentials
//! sealed at `/lb/acme/account`) and one HTTP-01 order for one domain.
//!
//! HTTP-01 answers are written to `/lb/acme/challenges/<token>` under the
//! issuer's lock lease (so a crashed issuer leaves none behind) and removed
//! when the order ends; every ingress serves them from its route table.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, Problem, RetryPolicy,
};
use lb_model::keys::Keys;
use lb_store::secrets::Sealer;
use lb_store::{Compare, Op, Store, StoreExt, Txn};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::{CertError, Result};

/// How long one request to the ACME server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client for the ACME server: public roots, plus the
/// certificates in `ca_file` when given (a private CA, or pebble's).
pub fn http_client(ca_file: Option<&Path>) -> Result<Box<dyn HttpClient>> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let shown = path.display();
        let pem = std::fs::read(path)
            .map_err(|e| CertError::Acme(format!("cannot read ACME CA file {shown}: {e}")))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| CertError::Acme(format!("ACME CA file {shown} is not PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| CertError::Acme(format!("ACME CA file {shown}: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(CertError::Acme(format!(
                "ACME CA file {shown} holds no certificate"
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Acme(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Box::new(Client(
        HyperClient::builder(TokioExecutor::new()).build(connector),
    )))
}

/// hyper's client as instant-acme's, with a timeout on each request.
struct Client(HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl HttpClient for Client {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let url = req.uri().to_string();
        let fut = self.0.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(rsp)) => Ok(BytesResponse::from(rsp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(
                    format!("request to {url} failed: {}", error_chain(&e)).into(),
                )),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("request to {url} timed out after {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}

/// The account record at `/lb/acme/account`.
#[derive(Serialize, Deserialize)]
struct AccountRecord {
    /// The directory the account belongs to.
    directory: String,
    /// instant-acme's credentials (JSON, with the account key), sealed.
    sealed_credentials: String,
}

/// What the ACME side of the issuer is set up with.
pub struct Settings<'a> {
    /// The directory URL.
    pub directory: &'a str,
    /// The contact address, if any.
    pub email: Option<&'a str>,
    /// Extra roots to trust the ACME server.
    pub ca_file: Option<&'a Path>,
}

/// The cluster's account on `settings.directory`: read back from the store,
/// or created and stored sealed (only while the lock whose revision is
/// `fence` is held).
pub async fn account(
    store: &dyn Store,
    keys: &Keys,
    sealer: &Sealer,
    settings: &Settings<'_>,
    fence: i64,
) -> Result<Account> {
    let key = keys.acme_account();
    let existing = store.get(&key).await?;
    if let Some(kv) = &existing {
        let stored: Option<AccountRecord> = serde_json::from_slice(&kv.value).ok();
        match stored {
            Some(record) if record.directory == settings.directory => {
                let json = sealer
                    .open(&record.sealed_credentials, &key)
                    .map_err(|_| CertError::Sealed(key.clone()))?;
                let credentials: AccountCredentials =
                    serde_json::from_str(&json).map_err(|e| CertError::Damaged {
                        key: key.clone(),
                        reason: e.to_string(),
                    })?;
                return Account::builder_with_http(http_client(settings.ca_file)?)
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| acme_error("cannot restore the ACME account", &e));
            }
            _ => tracing::info!(
                directory = settings.directory,
                "the stored ACME account is for another directory; creating one"
            ),
        }
    }
    let contact = settings.email.map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(http_client(settings.ca_file)?)
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.to_owned(),
            None,
        )
        .await
        .map_err(|e| acme_error("cannot create the ACME account", &e))?;
    let json = serde_json::to_string(&credentials).map_err(|e| CertError::Acme(e.to_string()))?;
    let record = AccountRecord {
        directory: settings.directory.to_owned(),
        sealed_credentials: sealer.seal(&json, &key),
    };
    let txn = Txn::new()
        .when(Compare::ModRevision(
            key.clone(),
            existing.map_or(0, |kv| kv.mod_revision),
        ))
        .when(Compare::ModRevision(keys.acme_lock(), fence))
        .then(Op::put(&key, lb_store::encode(&record)));
    if !store.txn(txn).await?.succeeded {
        return Err(CertError::Acme(
            "the ACME account changed while it was created (lock lost?)".into(),
        ));
    }
    tracing::info!(directory = settings.directory, "ACME account created");
    Ok(account)
}

/// A certificate and its key, PEM.
pub struct Issued {
    /// The chain, leaf first.
    pub chain_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// Where HTTP-01 answers go and how long an order may poll.
pub struct Answers<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// Key spelling.
    pub keys: &'a Keys,
    /// The issuer's lock lease: answers vanish with it.
    pub lease: i64,
    /// Waited after writing an answer before asking the server to
    /// validate, for the ingresses to pick it up.
    pub delay: Duration,
    /// How long to poll for the order to become ready or the certificate
    /// to be issued.
    pub poll: Duration,
}

/// Orders a certificate for one exact `domain` over HTTP-01. An error's
/// message is the ACME server's (the challenge's problem when validation
/// failed).
pub async fn order(account: &Account, domain: &str, answers: &Answers<'_>) -> Result<Issued> {
    let identifiers = [Identifier::Dns(domain.to_owned())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| acme_error("new order", &e))?;
    let mut tokens = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| acme_error("authorization", &e))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(CertError::Acme(format!(
                        "authorization for {domain} is {other:?}"
                    )))
                }
            }
            let mut challenge = authz.challenge(ChallengeType::Http01).ok_or_else(|| {
                CertError::Acme(format!(
                    "the ACME server offers no http-01 challenge for {domain}"
                ))
            })?;
            let token = challenge.token.clone();
            let key = answers.keys.acme_challenge(&token);
            let value = challenge.key_authorization().as_str().as_bytes().to_vec();
            answers
                .store
                .txn(Txn::new().then(Op::Put {
                    key,
                    value,
                    lease: answers.lease,
                }))
                .await?;
            tokens.push(token);
            if !answers.delay.is_zero() {
                tokio::time::sleep(answers.delay).await;
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| acme_error("challenge", &e))?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(answers.poll);
        let status = match order.poll_ready(&retries).await {
            Ok(status) => status,
            Err(e) => return Err(validation_error(&mut order, &e).await),
        };
        if status != OrderStatus::Ready {
            let e = instant_acme::Error::Str("order invalid");
            return Err(validation_error(&mut order, &e).await);
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| acme_error("finalize", &e))?;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .map_err(|e| acme_error("certificate", &e))?;
        Ok(Issued { chain_pem, key_pem })
    }
    .await;
    for token in tokens {
        if let Err(e) = answers
            .store
            .delete(&answers.keys.acme_challenge(&token))
            .await
        {
            tracing::warn!(domain, "cannot remove an HTTP-01 answer: {e}");
        }
    }
    result
}

/// The reason an order did not become ready: the first challenge's problem
/// (what the server's validation saw), else the order's error.
async fn validation_error(
    order: &mut instant_acme::Order,
    error: &instant_acme::Error,
) -> CertError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        if let Some(problem) = state.challenges.iter().find_map(|c| c.error.as_ref()) {
            return CertError::Acme(problem_text(problem));
        }
    }
    acme_error("order", error)
}

/// An instant-acme error as a message: a problem document's detail and
/// type, else the error with its causes.
fn acme_error(step: &str, error: &instant_acme::Error) -> CertError {
    match error {
        instant_acme::Error::Api(problem) => CertError::Acme(problem_text(problem)),
        other => CertError::Acme(format!("{step}: {}", error_chain(other))),
    }
}

/// `detail (type)` of a problem document, with its subproblems.
fn problem_text(problem: &Problem) -> String {
    let mut text = problem
        .detail
        .clone()
        .unwrap_or_else(|| "ACME error".into());
    if let Some(kind) = &problem.r#type {
        text.push_str(&format!(" ({kind})"));
    }
    for sub in &problem.subproblems {
        text.push_str(&format!("; {sub}"));
    }
    text
}

/// An error with its sources, `a: b: c`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}
