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
//! The cluster's keys (this sealing key, the access-token and registry-token
//! signing keys, the internal secret) live outside the store wherever the
//! store has a key directory ([`crate::Store::key_dir`]): the embedded store's
//! is `<data-dir>/keys/`, etcd's the `LB_KEYS_DIR` every lb process of the
//! cluster is given. There each key is a file `<name>.key` (0600, in a 0700
//! directory), so a process (or a backup, or a local user) that reads the
//! store alone learns no key. The store keeps only a marker at
//! `/lb/cluster/<name>` saying the key is in files. A store of an older lb
//! that holds a key has it moved out on the first start: written to the
//! file, then the store's copy replaced by the marker. Without a key
//! directory (etcd with no `LB_KEYS_DIR`) the key is kept in the store as
//! before, with a warning; created once (create-if-absent; concurrent
//! starters all read back the winner's).

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use std::path::{Path, PathBuf};

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

/// What the store holds at `/lb/cluster/<name>` once the key is in a file.
pub const MOVED_MARKER: &[u8] = b"moved to the key directory";

/// A cluster-wide secret: 32 random bytes in hex, created on first use; in
/// `<key dir>/<name>.key` when the store has a key directory, else at
/// `/lb/cluster/<name>` (see the module's doc). Concurrent first starts
/// agree: a file is only created if absent (hard-linked into place whole),
/// a stored key likewise, and then read back. Every component loads its
/// keys (sealing, token signing, internal calls) through here.
pub async fn cluster_secret(store: &dyn Store, keys: &Keys, name: &str) -> Result<Vec<u8>, Error> {
    if let Some(dir) = store.key_dir() {
        return file_secret(store, keys, name, &dir).await;
    }
    let key = keys.cluster(name);
    let fresh: [u8; 32] = rand::random();
    if store
        .create(&key, hex::encode(fresh).into_bytes())
        .await?
        .is_some()
    {
        tracing::warn!(
            "the cluster key {name} is kept in the store (no key directory): \
             anyone who reads the store can use it; give every lb process the same LB_KEYS_DIR"
        );
    }
    let stored = store
        .get(&key)
        .await?
        .ok_or_else(|| Error::Backend(format!("{key} vanished after its creation")))?;
    if stored.value == MOVED_MARKER {
        return Err(Error::Invalid(format!(
            "the cluster key {name} is kept in key files, not in the store: \
             give this process the cluster's key directory (LB_KEYS_DIR) holding {name}.key"
        )));
    }
    Ok(stored.value)
}

/// The secret as [`cluster_secret`] would load it, without creating or
/// moving anything; `None` when there is none yet (tests, tools).
pub async fn existing_cluster_secret(
    store: &dyn Store,
    keys: &Keys,
    name: &str,
) -> Result<Option<Vec<u8>>, Error> {
    if let Some(dir) = store.key_dir() {
        if let Some(secret) = read_key_file(&key_path(&dir, name))? {
            return Ok(Some(secret));
        }
    }
    Ok(store
        .get(&keys.cluster(name))
        .await?
        .map(|kv| kv.value)
        .filter(|v| v != MOVED_MARKER))
}

fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.key"))
}

async fn file_secret(
    store: &dyn Store,
    keys: &Keys,
    name: &str,
    dir: &Path,
) -> Result<Vec<u8>, Error> {
    let path = key_path(dir, name);
    let key = keys.cluster(name);
    let stored = store.get(&key).await?.map(|kv| kv.value);
    let in_store = stored.as_deref().filter(|v| *v != MOVED_MARKER);
    if let Some(secret) = read_key_file(&path)? {
        match in_store {
            None if stored.is_some() => return Ok(secret),
            None => {
                store.create(&key, MOVED_MARKER.to_vec()).await?;
            }
            Some(old) => {
                if old != secret.as_slice() {
                    tracing::warn!(
                        "{key} held another key than {}: the file's is used",
                        path.display()
                    );
                }
                store.put(&key, MOVED_MARKER.to_vec()).await?;
            }
        }
        return Ok(secret);
    }
    let (secret, moved) = match in_store {
        Some(old) => (old.to_vec(), true),
        None if stored.is_some() => {
            return Err(Error::Invalid(format!(
                "the cluster key {name} is kept in key files and {} is missing: \
                 copy it from another lb host of this cluster (every process needs the same keys)",
                path.display()
            )))
        }
        None => (hex::encode(rand::random::<[u8; 32]>()).into_bytes(), false),
    };
    write_key_file(dir, &path, &secret)?;
    // Whoever created the file first wins; everyone uses what it holds.
    let secret = read_key_file(&path)?
        .ok_or_else(|| Error::Backend(format!("{} vanished after its creation", path.display())))?;
    if moved {
        store.put(&key, MOVED_MARKER.to_vec()).await?;
        tracing::info!(
            "moved the cluster key {name} out of the store into {}",
            path.display()
        );
    } else {
        store.create(&key, MOVED_MARKER.to_vec()).await?;
    }
    Ok(secret)
}

/// The key in `path` (surrounding whitespace dropped), `None` when there is
/// no such file.
fn read_key_file(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let key = text.trim();
            if key.len() < 32 {
                return Err(Error::Invalid(format!(
                    "{} holds no key (at least 32 characters, e.g. 64 hex digits)",
                    path.display()
                )));
            }
            Ok(Some(key.as_bytes().to_vec()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Creates `path` holding `secret`, mode 0600, unless it exists: written
/// to a temporary file, then hard-linked into place (which fails when the
/// file exists), so a reader never sees half a key.
fn write_key_file(dir: &Path, path: &Path, secret: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    crate::private::create_dir(dir).map_err(io)?;
    let tmp = dir.join(format!(
        ".{}.{:016x}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        rand::random::<u64>()
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::private::FILE_MODE)
            .open(&tmp)?;
        file.write_all(secret)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    written.map_err(io)
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

    #[tokio::test]
    async fn keys_live_in_files_beside_the_embedded_store() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::default();
        let store = crate::embedded::EmbeddedStore::open_dir(dir.path())
            .await
            .unwrap();
        let key_dir = dir.path().join(crate::embedded::KEY_DIR);
        assert_eq!(store.key_dir(), Some(key_dir.clone()));
        let first = cluster_secret(&store, &keys, "jwt-signing-key")
            .await
            .unwrap();
        assert_eq!(first.len(), 64);
        let file = key_dir.join("jwt-signing-key.key");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().trim().as_bytes(),
            first
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&file), mode(&key_dir)), (0o600, 0o700));
        // The store holds a marker, never the key; loading again agrees.
        let stored = store
            .get(&keys.cluster("jwt-signing-key"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.value, MOVED_MARKER);
        assert_eq!(
            cluster_secret(&store, &keys, "jwt-signing-key")
                .await
                .unwrap(),
            first
        );
        assert_eq!(
            existing_cluster_secret(&store, &keys, "jwt-signing-key")
                .await
                .unwrap(),
            Some(first.clone())
        );
        // Concurrent first loads of one key agree.
        let (a, b) = tokio::join!(
            cluster_secret(&store, &keys, "secrets-key"),
            cluster_secret(&store, &keys, "secrets-key")
        );
        assert_eq!(a.unwrap(), b.unwrap());
        // A key file gone while the store says it was moved: a clear error.
        std::fs::remove_file(&file).unwrap();
        let err = cluster_secret(&store, &keys, "jwt-signing-key")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("jwt-signing-key.key is missing"), "{err}");
        // A process without the key directory is told where the key is.
        let bare = crate::embedded::EmbeddedStore::open(&dir.path().join("other.redb"))
            .await
            .unwrap();
        bare.put(&keys.cluster("x"), MOVED_MARKER.to_vec())
            .await
            .unwrap();
        let err = cluster_secret(&bare, &keys, "x")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("LB_KEYS_DIR"), "{err}");
    }

    #[tokio::test]
    async fn a_key_in_an_older_store_is_moved_out_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::default();
        let store = crate::embedded::EmbeddedStore::open_dir(dir.path())
            .await
            .unwrap();
        // What an older lb left: the key in the store.
        let old = hex::encode([7u8; 32]).into_bytes();
        store
            .put(&keys.cluster(KEY_NAME), old.clone())
            .await
            .unwrap();
        let sealer = Sealer::load(&store, &keys).await.unwrap();
        let file = dir.path().join("keys").join("secrets-key.key");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().trim().as_bytes(),
            old
        );
        let stored = store.get(&keys.cluster(KEY_NAME)).await.unwrap().unwrap();
        assert_eq!(stored.value, MOVED_MARKER);
        // Values sealed before the move still open.
        let sealed = Sealer::from_key([7; 32]).seal("gho_x", "ctx");
        assert_eq!(sealer.open(&sealed, "ctx").unwrap(), "gho_x");
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
