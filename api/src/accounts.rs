//! Accounts: password hashing and the first user (`admin`).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use lb_model::ids::new_id;
use lb_model::keys::Keys;
use lb_model::{Role, User};
use lb_store::{Compare, Op, Store, Txn};
use rand::Rng;

/// Errors of account handling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] lb_store::Error),
    /// A password could not be hashed.
    #[error("cannot hash password: {0}")]
    Hash(String),
    /// A stored record is not valid JSON of its type.
    #[error("stored record {key} is damaged: {source}")]
    Damaged {
        /// The key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

/// Result with the accounts [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The name of the first user.
pub const ADMIN: &str = "admin";

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// Checks a password against a stored PHC string.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A random password of 24 letters and digits.
pub fn generate_password() -> String {
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..24)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// What [`ensure_admin`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome {
    /// The admin already existed; nothing changed.
    Existed,
    /// The admin was created with this password (generated when
    /// `LB_ADMIN_PASSWORD` was not set): show it once.
    Created {
        /// The password.
        password: String,
        /// Whether it was generated.
        generated: bool,
    },
}

/// Creates the user `admin` unless it exists. The user record and its name
/// index are written in one transaction that requires the index to be
/// absent, so of several API instances starting at once exactly one creates it.
pub async fn ensure_admin(
    store: &dyn Store,
    keys: &Keys,
    password: Option<String>,
) -> Result<AdminOutcome> {
    let index = keys.user_index(ADMIN);
    if store.get(&index).await?.is_some() {
        return Ok(AdminOutcome::Existed);
    }
    let generated = password.is_none();
    let password = password.unwrap_or_else(generate_password);
    let now = now();
    let user = User {
        id: new_id(),
        username: ADMIN.into(),
        role: Role::Admin,
        password_hash: hash_password(&password)?,
        created: now,
        updated: now,
    };
    let record = serde_json::to_vec(&user).map_err(|source| Error::Damaged {
        key: keys.user(&user.id),
        source,
    })?;
    let txn = Txn::new()
        .when(Compare::ModRevision(index.clone(), 0))
        .then(Op::put(keys.user(&user.id), record))
        .then(Op::put(index, user.id.as_bytes().to_vec()));
    if store.txn(txn).await?.succeeded {
        Ok(AdminOutcome::Created {
            password,
            generated,
        })
    } else {
        Ok(AdminOutcome::Existed)
    }
}

/// Reads a user by name.
pub async fn find_user(store: &dyn Store, keys: &Keys, username: &str) -> Result<Option<User>> {
    let Some(id) = store.get(&keys.user_index(username)).await? else {
        return Ok(None);
    };
    let id = String::from_utf8_lossy(&id.value).into_owned();
    let key = keys.user(&id);
    let Some(record) = store.get(&key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&record.value)
        .map(Some)
        .map_err(|source| Error::Damaged { key, source })
}

pub use lb_model::now;

#[cfg(test)]
mod tests {
    use super::*;
    use lb_store::embedded::EmbeddedStore;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("s3cret", "not a hash"));
    }

    #[tokio::test]
    async fn admin_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_dir(dir.path()).await.unwrap();
        let keys = Keys::default();
        let first = ensure_admin(&store, &keys, Some("pw-one".into()))
            .await
            .unwrap();
        assert_eq!(
            first,
            AdminOutcome::Created {
                password: "pw-one".into(),
                generated: false
            }
        );
        let second = ensure_admin(&store, &keys, None).await.unwrap();
        assert_eq!(second, AdminOutcome::Existed);
        let admin = find_user(&store, &keys, ADMIN).await.unwrap().unwrap();
        assert_eq!(admin.role, Role::Admin);
        assert!(verify_password("pw-one", &admin.password_hash));
    }
}
