//! A domain's TLS certificate as stored at `/lb/certs/<domain>`: issued
//! over ACME by the cluster's issuer (`lb-certs`) or uploaded by the
//! domain's owner, with its status, the ACME server's last error and the
//! times that drive renewal and retries.
//!
//! The private key is kept sealed (`sealed_key`, under the cluster key with
//! the record's store key bound in) and never leaves through `Debug` or the
//! API's [`CertView`].

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertSource {
    /// Issued over ACME (HTTP-01) and renewed by lb.
    Acme,
    /// Uploaded by the owner; never renewed nor removed by lb.
    Uploaded,
}

/// Where a domain's certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertStatus {
    /// Being ordered; no certificate yet.
    Pending,
    /// A certificate is held (a failed renewal keeps this status and sets
    /// `error` while the held certificate is still valid).
    Issued,
    /// No usable certificate: the last order failed (see `error`).
    Failed,
}

/// The stored record of a domain's certificate.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// The domain it is for (exact or `*.` wildcard).
    pub domain: String,
    /// ACME or uploaded.
    pub source: CertSource,
    /// Pending, issued or failed.
    pub status: CertStatus,
    /// Why the last attempt failed (the ACME server's message), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The names the certificate covers (its subject alternative names).
    #[serde(default)]
    pub names: Vec<String>,
    /// The chain, leaf first, PEM; empty while none was issued.
    #[serde(default)]
    pub chain_pem: String,
    /// The private key, PEM, sealed with the cluster key; empty with no
    /// certificate.
    #[serde(default)]
    pub sealed_key: String,
    /// When the certificate expires (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
    /// When it was issued or uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Timestamp>,
    /// When the issuer renews it: 2/3 into its lifetime (ACME only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<Timestamp>,
    /// When the issuer tries again after a failure (backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<Timestamp>,
    /// Failed attempts in a row (0 after a success).
    #[serde(default)]
    pub attempts: u32,
}

impl CertRecord {
    /// A record with no certificate yet.
    pub fn pending(domain: &str, source: CertSource) -> Self {
        Self {
            domain: domain.to_owned(),
            source,
            status: CertStatus::Pending,
            error: None,
            names: Vec::new(),
            chain_pem: String::new(),
            sealed_key: String::new(),
            not_after: None,
            issued_at: None,
            renew_at: None,
            next_attempt: None,
            attempts: 0,
        }
    }

    /// Whether it holds a certificate that has not expired at `now`.
    pub fn usable(&self, now: Timestamp) -> bool {
        !self.chain_pem.is_empty()
            && !self.sealed_key.is_empty()
            && self.not_after.is_some_and(|t| t > now)
    }

    /// What the API shows of it.
    pub fn view(&self) -> CertView {
        CertView {
            domain: self.domain.clone(),
            source: self.source,
            status: self.status,
            error: self.error.clone(),
            names: self.names.clone(),
            not_after: self.not_after,
            issued_at: self.issued_at,
            renew_at: self.renew_at,
            next_attempt: self.next_attempt,
            attempts: self.attempts,
        }
    }
}

impl std::fmt::Debug for CertRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRecord")
            .field("domain", &self.domain)
            .field("source", &self.source)
            .field("status", &self.status)
            .field("error", &self.error)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .field("issued_at", &self.issued_at)
            .field("renew_at", &self.renew_at)
            .field("next_attempt", &self.next_attempt)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A certificate as the API shows it: no key, no chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertView {
    /// The domain it is for.
    pub domain: String,
    /// ACME or uploaded.
    pub source: CertSource,
    /// Pending, issued or failed.
    pub status: CertStatus,
    /// Why the last attempt failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The names the certificate covers.
    #[serde(default)]
    pub names: Vec<String>,
    /// When the certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
    /// When it was issued or uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Timestamp>,
    /// When it is renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<Timestamp>,
    /// When a failed order is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<Timestamp>,
    /// Failed attempts in a row.
    #[serde(default)]
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_stays_out_of_debug_and_views() {
        let mut record = CertRecord::pending("app.example.com", CertSource::Uploaded);
        record.sealed_key = "SEALED-SECRET".into();
        record.chain_pem = "-----BEGIN CERTIFICATE-----".into();
        record.not_after = Some(200);
        assert!(!format!("{record:?}").contains("SEALED-SECRET"));
        let view = serde_json::to_string(&record.view()).unwrap();
        assert!(!view.contains("SEALED-SECRET"));
        assert!(!view.contains("BEGIN"));
        assert!(record.usable(100));
        assert!(!record.usable(200));
        let back: CertRecord =
            serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        assert_eq!(back, record);
    }
}
