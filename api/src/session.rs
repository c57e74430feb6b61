//! Browser sessions: the web UI's access token in an HttpOnly, SameSite=Strict
//! cookie, and the CSRF check every cookie-authenticated request passes.
//!
//! The session cookie `lb_session` holds an ordinary access token (the one
//! `POST /auth/login` answers), so a session is exactly as strong as a token.
//! The CSRF token is derived from the session (a SHA-256 of it), handed to
//! the page in the readable `lb_csrf` cookie and in the page itself, and must
//! come back in the `X-CSRF-Token` header of every request that is not a
//! GET/HEAD/OPTIONS; a websocket opened with the cookie must come from the
//! same origin. Requests with an `Authorization` header never look at the
//! cookies.

use sha2::{Digest, Sha256};
use warp::http::Method;
use warp::{Filter, Rejection};

use crate::auth::constant_time_eq;
use crate::error::{ApiError, Result};

/// The cookie holding the access token.
pub const SESSION_COOKIE: &str = "lb_session";
/// The cookie the page's scripts read the CSRF token from.
pub const CSRF_COOKIE: &str = "lb_csrf";
/// The header that must echo the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of a session: bound to it, so one session's token is
/// useless with another.
pub fn csrf_token(session: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"lb-csrf\0")
        .chain_update(session.as_bytes())
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a request carries of a browser session.
#[derive(Debug, Clone)]
pub struct SessionCredential {
    method: Method,
    session: Option<String>,
    csrf: Option<String>,
    origin: Option<String>,
    host: Option<String>,
}

/// Extracts the session cookie and what the CSRF check needs.
pub fn credential() -> impl Filter<Extract = (SessionCredential,), Error = Rejection> + Clone {
    warp::method()
        .and(warp::cookie::optional::<String>(SESSION_COOKIE))
        .and(warp::header::optional::<String>(CSRF_HEADER))
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .map(|method, session, csrf, origin, host| SessionCredential {
            method,
            session,
            csrf,
            origin,
            host,
        })
}

impl SessionCredential {
    /// The session's access token, if a session cookie came; 403 when the
    /// request changes state without the session's CSRF token, or comes
    /// from another origin.
    pub fn token(&self) -> Result<Option<String>> {
        let Some(session) = self.session.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        self.check_origin()?;
        let safe = matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let expected = csrf_token(session);
            let sent = self.csrf.as_deref().unwrap_or_default();
            if !constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
                return Err(ApiError::forbidden(
                    "missing or wrong CSRF token: send the X-CSRF-Token header",
                ));
            }
        }
        Ok(Some(session.to_owned()))
    }

    /// A websocket (a GET the browser lets any page open) or a state change
    /// with the cookie must come from a page of this server.
    pub fn check_origin(&self) -> Result<()> {
        check_same_origin(self.origin.as_deref(), self.host.as_deref())
    }
}

/// Refuses a request whose `Origin` names another host than `Host`.
pub fn check_same_origin(origin: Option<&str>, host: Option<&str>) -> Result<()> {
    let Some(origin) = origin else {
        return Ok(());
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    match host {
        Some(host) if !origin_host.is_empty() && origin_host.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(ApiError::forbidden(format!(
            "cross-origin request from {origin:?} refused"
        ))),
    }
}

/// `Set-Cookie` values that start a session with `token`, valid until
/// `expires` (Unix seconds).
pub fn start_cookies(token: &str, expires: i64) -> [String; 2] {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let max_age = (expires - now).max(0);
    [
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"),
        format!(
            "{CSRF_COOKIE}={}; Path=/; SameSite=Strict; Max-Age={max_age}",
            csrf_token(token)
        ),
    ]
}

/// `Set-Cookie` values that end the session.
pub fn end_cookies() -> [String; 2] {
    [
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        format!("{CSRF_COOKIE}=; Path=/; SameSite=Strict; Max-Age=0"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(method: Method, csrf: Option<&str>, origin: Option<&str>) -> SessionCredential {
        SessionCredential {
            method,
            session: Some("tok".into()),
            csrf: csrf.map(Into::into),
            origin: origin.map(Into::into),
            host: Some("127.0.0.1:2967".into()),
        }
    }

    #[test]
    fn state_changes_need_the_sessions_csrf_token() {
        let good = csrf_token("tok");
        assert!(cred(Method::GET, None, None).token().is_ok());
        assert!(cred(Method::POST, None, None).token().is_err());
        assert!(cred(Method::DELETE, Some("nope"), None).token().is_err());
        assert!(cred(Method::POST, Some(&csrf_token("other")), None)
            .token()
            .is_err());
        assert_eq!(
            cred(Method::PATCH, Some(&good), None).token().unwrap(),
            Some("tok".into())
        );
    }

    #[test]
    fn other_origins_are_refused() {
        assert!(cred(Method::GET, None, Some("http://127.0.0.1:2967"))
            .token()
            .is_ok());
        assert!(cred(Method::GET, None, Some("http://evil.test"))
            .token()
            .is_err());
        assert!(cred(Method::GET, None, Some("null")).token().is_err());
    }
}
