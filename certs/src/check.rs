//! Reading a certificate chain and its key, and the checks an upload must
//! pass: the PEMs parse, the key is the one the leaf was issued for, the
//! leaf names the domain (exactly or through a one-label wildcard) and has
//! not expired. The ingress loads keys with rustls, so a key is accepted
//! only if rustls can sign with it.

use lb_model::Timestamp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

use crate::{CertError, Result};

/// What lb needs to know of a chain's leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// Its DNS subject alternative names, lower-case.
    pub names: Vec<String>,
    /// Valid from (seconds since the epoch).
    pub not_before: Timestamp,
    /// Valid until (seconds since the epoch).
    pub not_after: Timestamp,
    /// Its subject public key info, DER.
    spki: Vec<u8>,
}

/// Reads a PEM chain (leaf first): every certificate must parse; answers
/// the leaf.
pub fn read_chain(chain_pem: &str) -> Result<Leaf> {
    let mut ders = Vec::new();
    for (index, item) in CertificateDer::pem_slice_iter(chain_pem.as_bytes()).enumerate() {
        let der = item.map_err(|e| CertError::BadCertificate {
            index,
            reason: e.to_string(),
        })?;
        ders.push(der);
    }
    let Some(leaf_der) = ders.first() else {
        return Err(CertError::NoCertificate);
    };
    for (index, der) in ders.iter().enumerate().skip(1) {
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::BadCertificate {
            index,
            reason: e.to_string(),
        })?;
    }
    let bad = |reason: String| CertError::BadCertificate { index: 0, reason };
    let (_, leaf) =
        x509_parser::parse_x509_certificate(leaf_der).map_err(|e| bad(e.to_string()))?;
    let mut names = Vec::new();
    if let Some(san) = leaf
        .subject_alternative_name()
        .map_err(|e| bad(format!("subject alternative names: {e}")))?
    {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    Ok(Leaf {
        names,
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
        spki: leaf.public_key().raw.to_vec(),
    })
}

/// Checks that `key_pem` (PKCS#8, PKCS#1 RSA or SEC1 EC) is the private
/// key of `leaf`.
pub fn check_key(leaf: &Leaf, key_pem: &str) -> Result<()> {
    let key = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => return Err(CertError::NoKey),
        Err(e) => return Err(CertError::BadKey(e.to_string())),
    };
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| CertError::BadKey(e.to_string()))?;
    let public = signer
        .public_key()
        .ok_or_else(|| CertError::BadKey("its public key cannot be derived".into()))?;
    if public.as_ref() == leaf.spki.as_slice() {
        Ok(())
    } else {
        Err(CertError::KeyMismatch)
    }
}

/// Whether a certificate naming `names` serves `domain`: an exact name, or
/// a wildcard `*.parent` for a domain one label under `parent`. A wildcard
/// domain needs the same wildcard.
pub fn covers(names: &[String], domain: &str) -> bool {
    let domain = domain.to_ascii_lowercase();
    names.iter().any(|name| {
        let name = name.to_ascii_lowercase();
        if name == domain {
            return true;
        }
        match (name.strip_prefix("*."), domain.split_once('.')) {
            (Some(parent), Some((label, rest))) => label != "*" && rest == parent,
            _ => false,
        }
    })
}

/// Every check of an upload for `domain` at `now`; answers the leaf.
pub fn check_upload(domain: &str, chain_pem: &str, key_pem: &str, now: Timestamp) -> Result<Leaf> {
    lb_model::ingress::check_domain(domain).map_err(CertError::InvalidDomain)?;
    let leaf = read_chain(chain_pem)?;
    check_key(&leaf, key_pem)?;
    if !covers(&leaf.names, domain) {
        return Err(CertError::DomainNotCovered {
            domain: domain.to_owned(),
            names: leaf.names,
        });
    }
    if leaf.not_after <= now {
        return Err(CertError::Expired {
            not_after: leaf.not_after,
        });
    }
    Ok(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(names: &[&str], domain: &str, expect: bool) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(covers(&names, domain), expect, "{names:?} covers {domain}");
    }

    #[test]
    fn coverage_by_exact_names_and_one_label_wildcards() {
        check(&["app.example.com"], "app.example.com", true);
        check(&["APP.example.com"], "app.example.com", true);
        check(&["app.example.com"], "www.example.com", false);
        check(&["*.example.com"], "app.example.com", true);
        check(&["*.example.com"], "a.b.example.com", false);
        check(&["*.example.com"], "example.com", false);
        check(&["*.example.com"], "*.example.com", true);
        check(&["app.example.com"], "*.example.com", false);
        check(&[], "app.example.com", false);
    }
}
