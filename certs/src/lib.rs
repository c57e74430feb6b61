//! lb's TLS certificates, one record per domain at `/lb/certs/<domain>`
//! ([`lb_model::CertRecord`]):
//!
//! - [`upload`]: a certificate and key the domain's owner brings, checked
//!   (the PEMs parse, the key is the leaf's, the leaf names the domain, it
//!   has not expired) and stored with the key sealed ([`records`]).
//! - [`Issuer`]: the ACME (RFC 8555, HTTP-01) controller every API server
//!   runs; only the holder of the lease-backed lock at `/lb/acme/lock`
//!   orders, so issuance happens once per cluster ([`issuer`], with the
//!   ACME protocol steps in [`acme`]).
//! - [`certificates`]: the usable certificates with their keys opened, for
//!   the ingress's route table.
//!
//! Private keys are sealed with the cluster key ([`lb_store::secrets`]),
//! bound to the record's key, and never logged nor shown.

pub mod acme;
pub mod check;
pub mod issuer;
pub mod records;

pub use issuer::{AcmeConfig, Issuer, LETS_ENCRYPT};
pub use records::{certificate, certificates, get, list, remove, status, upload};

/// Errors of certificates: bad uploads (the API answers 400 for those,
/// see [`CertError::is_bad_input`]) and the store.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The domain is not a host name lb serves.
    #[error("invalid domain: {0}")]
    InvalidDomain(String),
    /// No certificate in the chain PEM.
    #[error("no certificate found in the chain PEM (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    /// A certificate could not be read.
    #[error("certificate {index} of the chain cannot be read: {reason}")]
    BadCertificate {
        /// Its position in the chain, 0 for the leaf.
        index: usize,
        /// What was wrong.
        reason: String,
    },
    /// No private key in the key PEM.
    #[error("no private key found in the key PEM (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)")]
    NoKey,
    /// The private key could not be used.
    #[error("private key cannot be used: {0}")]
    BadKey(String),
    /// The key is not the one the leaf certificate was issued for.
    #[error("private key does not match the certificate (the leaf's public key is another)")]
    KeyMismatch,
    /// The leaf does not name the domain.
    #[error("certificate does not cover {domain} (it names {names:?})")]
    DomainNotCovered {
        /// The domain asked for.
        domain: String,
        /// The names the certificate covers.
        names: Vec<String>,
    },
    /// The leaf has expired.
    #[error("certificate expired at {not_after} (seconds since the epoch)")]
    Expired {
        /// When it expired.
        not_after: lb_model::Timestamp,
    },
    /// No certificate is stored for the domain.
    #[error("no certificate for {0}")]
    NotFound(String),
    /// A stored record cannot be decoded.
    #[error("stored record {key} is damaged: {reason}")]
    Damaged {
        /// The store key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A sealed key cannot be opened (damaged, or another cluster key).
    #[error("sealed key of {0} cannot be opened")]
    Sealed(String),
    /// The ACME server or the way to it failed.
    #[error("{0}")]
    Acme(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] lb_store::Error),
}

impl CertError {
    /// Whether the caller's input is at fault (API 400), not lb.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            CertError::InvalidDomain(_)
                | CertError::NoCertificate
                | CertError::BadCertificate { .. }
                | CertError::NoKey
                | CertError::BadKey(_)
                | CertError::KeyMismatch
                | CertError::DomainNotCovered { .. }
                | CertError::Expired { .. }
        )
    }
}

/// Result with [`CertError`].
pub type Result<T, E = CertError> = std::result::Result<T, E>;
