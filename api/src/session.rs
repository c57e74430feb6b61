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

/// Whether the browser reached this page over HTTPS: the public URL is
/// `https://`, or a proxy in front (lb's ingress, which sets the header
/// itself) says so in `X-Forwarded-Proto`. A client that sends the header
/// over plain HTTP only gets cookies its browser will not send back there.
pub fn over_https(public_url: Option<&str>, forwarded_proto: Option<&str>) -> bool {
    let https = |v: &str| v.trim().eq_ignore_ascii_case("https");
    public_url.is_some_and(|u| {
        u.get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    }) || forwarded_proto.is_some_and(|p| p.split(',').next().is_some_and(https))
}

/// The attributes every session cookie carries; `Secure` over HTTPS, so the
/// token never travels over plain HTTP once the site is served over TLS.
fn attributes(secure: bool) -> &'static str {
    if secure {
        "Path=/; Secure; SameSite=Strict"
    } else {
        "Path=/; SameSite=Strict"
    }
}

/// `Set-Cookie` values that start a session with `token`, valid until
/// `expires` (Unix seconds); `secure` when served over HTTPS.
pub fn start_cookies(token: &str, expires: i64, secure: bool) -> [String; 2] {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let max_age = (expires - now).max(0);
    let attrs = attributes(secure);
    [
        format!("{SESSION_COOKIE}={token}; {attrs}; HttpOnly; Max-Age={max_age}"),
        format!(
            "{CSRF_COOKIE}={}; {attrs}; Max-Age={max_age}",
            csrf_token(token)
        ),
    ]
}

/// `Set-Cookie` values that end the session.
pub fn end_cookies(secure: bool) -> [String; 2] {
    let attrs = attributes(secure);
    [
        format!("{SESSION_COOKIE}=; {attrs}; HttpOnly; Max-Age=0"),
        format!("{CSRF_COOKIE}=; {attrs}; Max-Age=0"),
    ]
}

/// Where to go after logging in: `next` when it is a path of this site,
/// else `/projects`. Browsers read `//evil.example` and `/\evil.example`
/// (and the same with a tab or newline inside, which they drop) as another
/// host, so only `/` followed by something else than `/` or `\` passes,
/// printable ASCII without backslashes (no whitespace or control
/// characters; a browser sends a path percent-encoded anyway).
pub fn after_login(next: Option<&str>) -> &str {
    const HOME: &str = "/projects";
    let Some(next) = next else { return HOME };
    let mut chars = next.chars();
    let same_origin = chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && next.len() <= 2048
        && next.chars().all(|c| c.is_ascii_graphic() && c != '\\');
    if same_origin {
        next
    } else {
        HOME
    }
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
    fn only_same_origin_paths_are_followed_after_login() {
        for (next, expect) in [
            (None, "/projects"),
            (Some("/projects/demo"), "/projects/demo"),
            (
                Some("/projects/demo/services/web?tab=logs"),
                "/projects/demo/services/web?tab=logs",
            ),
            (Some("/"), "/"),
            (Some("//evil.com"), "/projects"),
            (Some("//evil.com/projects"), "/projects"),
            (Some("/\\evil.com"), "/projects"),
            (Some("/\\/evil.com"), "/projects"),
            (Some("/\t/evil.com"), "/projects"),
            (Some("/\n/evil.com"), "/projects"),
            (Some("/projects\\..\\x"), "/projects"),
            (Some("https://evil.com/"), "/projects"),
            (Some("javascript:alert(1)"), "/projects"),
            (Some("evil.com"), "/projects"),
            (Some(""), "/projects"),
        ] {
            assert_eq!(after_login(next), expect, "{next:?}");
        }
    }

    #[test]
    fn cookies_are_secure_over_https() {
        assert!(!over_https(None, None));
        assert!(!over_https(Some("http://lb.example"), Some("http")));
        assert!(over_https(Some("https://lb.example"), None));
        assert!(over_https(Some("HTTPS://lb.example"), None));
        assert!(over_https(None, Some("https")));
        assert!(over_https(None, Some("https, http")));
        for cookie in start_cookies("tok", i64::MAX / 2, true)
            .iter()
            .chain(&end_cookies(true))
        {
            assert!(cookie.contains("; Secure;"), "{cookie}");
        }
        for cookie in start_cookies("tok", i64::MAX / 2, false)
            .iter()
            .chain(&end_cookies(false))
        {
            assert!(!cookie.contains("Secure"), "{cookie}");
        }
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
