//! Who may do what: the bearer token a request carries, the scope an
//! action on a repository needs, and the `WWW-Authenticate` challenge that
//! sends a client without one to the token realm.

use lb_store::registry::Claims;
use warp::http::{HeaderMap, StatusCode};

use super::reply::{err, RegError, Result};
use super::Registry;

/// The 401 challenge: where to get a token, and for which scope if known.
pub(super) fn challenge(realm: &str, scope: Option<&str>) -> String {
    let mut challenge = format!(
        "Bearer realm=\"{realm}\",service=\"{}\"",
        lb_store::registry::SERVICE
    );
    if let Some(scope) = scope {
        challenge.push_str(&format!(",scope=\"{scope}\""));
    }
    challenge
}

/// A 401 asking for a token (for `scope`, if the request needs one).
pub(super) fn unauthorized(scope: Option<String>) -> RegError {
    RegError {
        challenge: scope,
        ..err(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        )
    }
}

impl Registry {
    /// The claims of the request's bearer token, if it carries a valid one.
    pub(super) fn claims(&self, headers: &HeaderMap) -> Option<Claims> {
        let header = headers.get("authorization")?.to_str().ok()?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))?;
        self.signer.verify(token.trim())
    }

    /// The project and service ids `name` stands for, if the token allows
    /// `action` on it.
    pub(super) fn authorize<'a>(
        &self,
        claims: &'a Option<Claims>,
        name: &str,
        action: &str,
    ) -> Result<(&'a str, &'a str)> {
        let scope = match action {
            "pull" => format!("repository:{name}:pull"),
            "delete" => format!("repository:{name}:delete"),
            _ => format!("repository:{name}:pull,push"),
        };
        let Some(claims) = claims else {
            return Err(unauthorized(Some(scope)));
        };
        claims.allows(name, action).ok_or_else(|| {
            err(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!("requested access to {name} ({action}) is denied"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_name_realm_service_and_scope() {
        let service = lb_store::registry::SERVICE;
        assert_eq!(
            challenge("https://api/t", None),
            format!("Bearer realm=\"https://api/t\",service=\"{service}\"")
        );
        assert_eq!(
            challenge("r", Some("repository:a/b:pull")),
            format!("Bearer realm=\"r\",service=\"{service}\",scope=\"repository:a/b:pull\"")
        );
    }
}
