//! Registry access tokens (Docker token auth). The API mints them at
//! `GET /api/v1/registry/token` for users and nodes; the builder mints its
//! own to push; the registry checks them. They are signed (HS256) with a
//! cluster key of their own, kept apart from the API's access-token key so
//! neither kind of token can stand in for the other.
//!
//! Repositories are `<project>/<service>`. What lb itself pushes and pulls
//! is named by ids in lower case (`01j.../01k...`), which never change; a
//! user may also name them by project and service names. A token's access
//! entry carries the ids it resolved to, so the registry never resolves
//! names itself.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{Error, Store};
use lb_model::keys::Keys;

/// The `aud` (and `service` in the token request) of registry tokens.
pub const SERVICE: &str = "lb-registry";

/// What a token allows on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// `repository` or `registry` (for the catalog).
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository as the client named it, or `catalog`.
    pub name: String,
    /// `pull`, `push`, `delete`, `*`.
    pub actions: Vec<String>,
    /// The project id the name resolved to.
    #[serde(default)]
    pub project: String,
    /// The service id the name resolved to.
    #[serde(default)]
    pub service: String,
}

/// A registry token's claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who: a user id, `node:<id>` or `builder`.
    pub sub: String,
    /// Always [`SERVICE`].
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// What it allows.
    pub access: Vec<Access>,
}

impl Claims {
    /// The project and service ids `name` may be used with for `action`.
    pub fn allows(&self, name: &str, action: &str) -> Option<(&str, &str)> {
        self.access
            .iter()
            .find(|a| {
                a.kind == "repository"
                    && a.name == name
                    && a.actions.iter().any(|x| x == action || x == "*")
            })
            .map(|a| (a.project.as_str(), a.service.as_str()))
    }
}

/// Signs and checks registry tokens.
pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Signer {
    /// Loads the cluster's registry key, creating it on first use (the
    /// first of concurrent creators wins; all read it back).
    pub async fn load(store: &dyn Store, keys: &Keys) -> Result<Self, Error> {
        let secret = crate::secrets::cluster_secret(store, keys, "registry-signing-key").await?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_audience(&[SERVICE]);
        Ok(Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
        })
    }

    /// A token for `sub` allowing `access`, valid for `ttl_secs`.
    pub fn sign(&self, sub: &str, access: Vec<Access>, ttl_secs: i64) -> String {
        let iat = lb_model::now();
        let claims = Claims {
            sub: sub.to_owned(),
            aud: SERVICE.to_owned(),
            iat,
            exp: iat + ttl_secs,
            access,
        };
        // HS256 over serializable claims cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    /// The claims of a valid token.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

/// The repository lb names a service's images by: its ids in lower case.
pub fn repository(pid: &str, sid: &str) -> String {
    format!("{}/{}", pid.to_lowercase(), sid.to_lowercase())
}

/// A token request's `scope`: `repository:<name>:<actions>` (or
/// `registry:catalog:*`), answered as (type, name, actions).
pub fn parse_scope(scope: &str) -> Option<(&str, &str, Vec<&str>)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    if name.is_empty() {
        return None;
    }
    Some((
        kind,
        name,
        actions.split(',').filter(|a| !a.is_empty()).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse() {
        assert_eq!(
            parse_scope("repository:demo/web:pull,push"),
            Some(("repository", "demo/web", vec!["pull", "push"]))
        );
        assert_eq!(
            parse_scope("registry:catalog:*"),
            Some(("registry", "catalog", vec!["*"]))
        );
        assert_eq!(parse_scope("repository"), None);
        assert_eq!(parse_scope("repository::pull"), None);
    }

    #[tokio::test]
    async fn tokens_check_signature_audience_and_access() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            let path = dir.path().join(name);
            async move {
                crate::embedded::EmbeddedStore::open_dir(&path)
                    .await
                    .unwrap()
            }
        };
        let store = open("a").await;
        let keys = Keys::default();
        let signer = Signer::load(&store, &keys).await.unwrap();
        let access = vec![Access {
            kind: "repository".into(),
            name: "demo/web".into(),
            actions: vec!["pull".into()],
            project: "P".into(),
            service: "S".into(),
        }];
        let token = signer.sign("U", access, 60);
        let claims = signer.verify(&token).unwrap();
        assert_eq!(claims.allows("demo/web", "pull"), Some(("P", "S")));
        assert_eq!(claims.allows("demo/web", "push"), None);
        assert_eq!(claims.allows("demo/db", "pull"), None);
        // The same key reloaded verifies; a token signed elsewhere does not.
        let again = Signer::load(&store, &keys).await.unwrap();
        assert!(again.verify(&token).is_some());
        let other = open("b").await;
        let stranger = Signer::load(&other, &keys).await.unwrap();
        assert!(stranger.verify(&token).is_none());
        // Expired tokens are refused.
        assert!(signer.verify(&signer.sign("U", vec![], -10)).is_none());
    }
}
