//! The certificate records at `/lb/certs/<domain>`: uploads, reads,
//! removal, and turning records into the ingress's
//! [`Certificate`](lb_model::ingress::Certificate)s with their keys opened.
//!
//! A key is sealed with the record's store key as associated data, so a
//! sealed key moved to another domain's record does not open.

use lb_model::ingress::Certificate;
use lb_model::keys::Keys;
use lb_model::{CertRecord, CertSource, CertStatus, CertView};
use lb_store::secrets::Sealer;
use lb_store::{Store, StoreExt};

use crate::check::check_upload;
use crate::{CertError, Result};

/// Stores an uploaded certificate for `domain` after every check (see
/// [`crate::check::check_upload`]); replaces whatever record the domain
/// had, ACME's included. Whether the caller may use the domain is the
/// API's business.
pub async fn upload(
    store: &dyn Store,
    keys: &Keys,
    sealer: &Sealer,
    domain: &str,
    chain_pem: &str,
    key_pem: &str,
) -> Result<CertRecord> {
    let now = lb_model::now();
    let leaf = check_upload(domain, chain_pem, key_pem, now)?;
    let key = keys.cert(domain);
    let record = CertRecord {
        status: CertStatus::Issued,
        names: leaf.names,
        chain_pem: normalize(chain_pem),
        sealed_key: sealer.seal(&normalize(key_pem), &key),
        not_after: Some(leaf.not_after),
        issued_at: Some(now),
        ..CertRecord::pending(domain, CertSource::Uploaded)
    };
    store.put(&key, lb_store::encode(&record)).await?;
    tracing::info!(domain, not_after = leaf.not_after, "certificate uploaded");
    Ok(record)
}

/// Removes the domain's certificate record (uploaded or issued); answers
/// whether there was one. While the domain stays claimed, the issuer
/// orders a new certificate over ACME.
pub async fn remove(store: &dyn Store, keys: &Keys, domain: &str) -> Result<bool> {
    Ok(store.delete(&keys.cert(domain)).await?)
}

/// The domain's certificate record, if any.
pub async fn get(store: &dyn Store, keys: &Keys, domain: &str) -> Result<Option<CertRecord>> {
    let key = keys.cert(domain);
    match store.get(&key).await? {
        Some(kv) => Ok(Some(decode(&key, &kv.value)?)),
        None => Ok(None),
    }
}

/// What the API shows of the domain's certificate (no key, no chain), if
/// it has a record.
pub async fn status(store: &dyn Store, keys: &Keys, domain: &str) -> Result<Option<CertView>> {
    Ok(get(store, keys, domain).await?.map(|record| record.view()))
}

/// Every certificate record, in domain order (damaged ones are skipped
/// with a warning).
pub async fn list(store: &dyn Store, keys: &Keys) -> Result<Vec<CertRecord>> {
    let (kvs, _) = store.list(&keys.certs()).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| match decode(&kv.key, &kv.value) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        })
        .collect())
}

/// The certificate an ingress serves for a record: `None` unless it holds
/// one that has not expired. Its `domains` is the record's domain (an
/// uploaded certificate naming more is served for that domain only).
pub fn certificate(
    keys: &Keys,
    sealer: &Sealer,
    record: &CertRecord,
) -> Result<Option<Certificate>> {
    if !record.usable(lb_model::now()) {
        return Ok(None);
    }
    let key_pem = sealer
        .open(&record.sealed_key, &keys.cert(&record.domain))
        .map_err(|_| CertError::Sealed(record.domain.clone()))?;
    Ok(Some(Certificate {
        domains: vec![record.domain.clone()],
        chain_pem: record.chain_pem.clone(),
        key_pem,
        not_after: record.not_after.unwrap_or_default(),
    }))
}

/// Every usable certificate with its key opened, for the route table. A
/// record whose key does not open is skipped with a warning naming it.
pub async fn certificates(
    store: &dyn Store,
    keys: &Keys,
    sealer: &Sealer,
) -> Result<Vec<Certificate>> {
    let mut out = Vec::new();
    for record in list(store, keys).await? {
        match certificate(keys, sealer, &record) {
            Ok(Some(cert)) => out.push(cert),
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }
    Ok(out)
}

/// Decodes a stored record.
pub(crate) fn decode(key: &str, value: &[u8]) -> Result<CertRecord> {
    serde_json::from_slice(value).map_err(|e| CertError::Damaged {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// A PEM as stored: trimmed, one trailing newline.
fn normalize(pem: &str) -> String {
    format!("{}\n", pem.trim())
}
