//! HTTPS certificates chosen by SNI from the current route table.
//!
//! Parsed keys are cached by a SHA-256 of their PEM, so a new table parses
//! only the certificates that changed; entries no longer in the table are
//! dropped when its revision changes. A name without a certificate (or no
//! SNI at all) gets no certificate, and the handshake fails: there is no
//! default certificate to leak other names through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lb_model::ingress::{Certificate, RouteTable};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// A certificate from the table that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The chain PEM holds no certificate or does not parse.
    #[error("certificate for {domains:?}: chain PEM does not parse: {reason}")]
    Chain {
        /// The names it covers.
        domains: Vec<String>,
        /// What the parser said.
        reason: String,
    },
    /// The key PEM does not parse or is of an unsupported type.
    #[error("certificate for {domains:?}: private key unusable: {reason}")]
    Key {
        /// The names it covers.
        domains: Vec<String>,
        /// What the parser said.
        reason: String,
    },
}

/// Parses a certificate's chain and key into what rustls serves, checking
/// that the key belongs to the leaf.
pub fn certified_key(cert: &Certificate) -> Result<CertifiedKey, CertError> {
    let domains = || cert.domains.clone();
    let chain = CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Chain {
            domains: domains(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::Chain {
            domains: domains(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(|e| CertError::Key {
            domains: domains(),
            reason: e.to_string(),
        })?;
    let key = any_supported_type(&key).map_err(|e| CertError::Key {
        domains: domains(),
        reason: e.to_string(),
    })?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().map_err(|e| CertError::Key {
        domains: domains(),
        reason: format!("does not match the certificate: {e}"),
    })?;
    Ok(certified)
}

/// The SHA-256 of a certificate's PEMs: its cache key.
fn fingerprint(cert: &Certificate) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(cert.chain_pem.as_bytes());
    h.update([0]);
    h.update(cert.key_pem.as_bytes());
    h.finalize().into()
}

/// What the cache holds for one PEM pair: the parsed key, or `None` when it
/// did not parse (so a bad certificate is not parsed on every handshake).
type Parsed = Option<Arc<CertifiedKey>>;

/// Picks a certificate by SNI from the latest route table.
#[derive(Debug)]
pub struct Resolver {
    routes: watch::Receiver<Arc<RouteTable>>,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    revision: Option<i64>,
    keys: HashMap<[u8; 32], Parsed>,
}

impl Resolver {
    /// A resolver over `routes`.
    pub fn new(routes: watch::Receiver<Arc<RouteTable>>) -> Self {
        Resolver {
            routes,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The certificate for `server_name` in the current table.
    pub fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let table = self.routes.borrow().clone();
        let cert = table.certificate(server_name)?;
        let print = fingerprint(cert);
        let mut cache = self.cache.lock().ok()?;
        if cache.revision != Some(table.revision) {
            let live: std::collections::HashSet<[u8; 32]> =
                table.certificates.iter().map(fingerprint).collect();
            cache.keys.retain(|k, _| live.contains(k));
            cache.revision = Some(table.revision);
        }
        if let Some(parsed) = cache.keys.get(&print) {
            return parsed.clone();
        }
        let parsed = match certified_key(cert) {
            Ok(key) => Some(Arc::new(key)),
            Err(e) => {
                tracing::warn!(error = %e, "ingress: certificate unusable");
                None
            }
        };
        cache.keys.insert(print, parsed.clone());
        parsed
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name()?)
    }
}

/// The TLS server settings: certificates by SNI from `routes`, ALPN h2 then
/// http/1.1, session resumption, ring as the crypto provider.
pub fn server_config(
    routes: watch::Receiver<Arc<RouteTable>>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver::new(routes)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Resumption, as nginx offers it by default: tickets (keys rotated by
    // rustls) and a bounded in-memory session cache.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(config)
}
