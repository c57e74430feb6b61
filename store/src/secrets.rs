//! Secrets at rest and derived secrets, under one cluster key.
//!
//! Vendor tokens (OAuth access and refresh tokens) are stored sealed:
//! ChaCha20-Poly1305 with a random nonce, `base64(nonce || ciphertext)`, the
//! record's key (`/lb/users/<uid>/vendors/<v>`) bound in as associated data
//! so a sealed token cannot be moved to another user's record. Webhook
//! secrets are not stored at all: each is HMAC-SHA256 of the service's ids
//! under the same key, so the API can show it to the owner and check a
//! delivery, and a new service (a new id) gets a new secret.
//!
//! The key is created once at `/lb/cluster/secrets-key` (create-if-absent;
//! concurrent starters all read back the winner's) and read by the API and by
//! builders, which decrypt a token to clone a private repository.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Error, Store, StoreExt};
use lb_model::keys::Keys;

/// The name under `/lb/cluster/` of the key.
pub const KEY_NAME: &str = "secrets-key";

/// A sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("sealed value cannot be opened (damaged, or sealed under another key)")]
pub struct OpenError;

/// Seals and opens secrets with the cluster key.
#[derive(Clone)]
pub struct Sealer {
    key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Loads the cluster key, creating it on first use.
    pub async fn load(store: &dyn Store, keys: &Keys) -> Result<Self, Error> {
        let stored = cluster_secret(store, keys, KEY_NAME).await?;
        let key = parse_hex32(&stored)
            .ok_or_else(|| Error::Backend(format!("{} is damaged", keys.cluster(KEY_NAME))))?;
        Ok(Self { key })
    }

    /// A sealer with a given key (tests).
    pub fn from_key(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Seals `plain`, binding `context` (e.g. the record's key).
    pub fn seal(&self, plain: &str, context: &str) -> String {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.key));
        let nonce: [u8; 12] = rand::random();
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("chacha20poly1305 seals any length we store");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Opens what [`Sealer::seal`] made with the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, OpenError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| OpenError)?;
        if raw.len() < 12 + 16 {
            return Err(OpenError);
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.key));
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&raw[..12]),
                Payload {
                    msg: &raw[12..],
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| OpenError)?;
        String::from_utf8(plain).map_err(|_| OpenError)
    }

    /// The webhook secret of a service: 40 hex digits derived from the
    /// cluster key and the service's ids.
    pub fn webhook_secret(&self, pid: &str, sid: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(b"lb-webhook-secret\0");
        mac.update(pid.as_bytes());
        mac.update(b"/");
        mac.update(sid.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..20].iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn parse_hex32(value: &[u8]) -> Option<[u8; 32]> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// A cluster-wide secret at `/lb/cluster/<name>`: 32 random bytes in hex,
/// created on first use. Concurrent first starts agree, because the key is
/// only created if absent and then read back; every component loads its
/// keys (sealing, token signing, internal calls) through here.
pub async fn cluster_secret(store: &dyn Store, keys: &Keys, name: &str) -> Result<Vec<u8>, Error> {
    let key = keys.cluster(name);
    let fresh: [u8; 32] = rand::random();
    store.create(&key, hex::encode(fresh).into_bytes()).await?;
    let stored = store
        .get(&key)
        .await?
        .ok_or_else(|| Error::Backend(format!("{key} vanished after its creation")))?;
    Ok(stored.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let a = Sealer::from_key([1; 32]);
        let b = Sealer::from_key([2; 32]);
        let sealed = a.seal("gho_secret", "/lb/users/U/vendors/github");
        assert!(!sealed.contains("gho_secret"));
        assert_ne!(sealed, a.seal("gho_secret", "/lb/users/U/vendors/github"));
        assert_eq!(
            a.open(&sealed, "/lb/users/U/vendors/github").unwrap(),
            "gho_secret"
        );
        assert!(a.open(&sealed, "/lb/users/V/vendors/github").is_err());
        assert!(b.open(&sealed, "/lb/users/U/vendors/github").is_err());
        assert!(a.open("AAAA", "x").is_err());
        assert!(a.open("not base64!", "x").is_err());
    }

    #[test]
    fn webhook_secrets_differ_per_service_and_key() {
        let a = Sealer::from_key([1; 32]);
        let s = a.webhook_secret("P", "S");
        assert_eq!(s.len(), 40);
        assert_eq!(s, a.webhook_secret("P", "S"));
        assert_ne!(s, a.webhook_secret("P", "T"));
        assert_ne!(s, Sealer::from_key([2; 32]).webhook_secret("P", "S"));
    }
}
