//! What the registry answers: errors as the spec's JSON (with the bearer
//! challenge on a 401), and the small reply builders the handlers share.

use warp::http::{HeaderMap, HeaderValue, Response, StatusCode};
use warp::hyper::Body;

/// A registry error: status, code and message, as the spec's JSON.
#[derive(Debug)]
pub(super) struct RegError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) challenge: Option<String>,
}

pub(super) type Reply = Response<Body>;
pub(super) type Result<T, E = RegError> = std::result::Result<T, E>;

pub(super) fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> RegError {
    RegError {
        status,
        code,
        message: message.into(),
        challenge: None,
    }
}

impl From<lb_store::Error> for RegError {
    fn from(e: lb_store::Error) -> Self {
        tracing::warn!(error = %e, "registry: store error");
        err(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the store is unavailable",
        )
    }
}

impl From<std::io::Error> for RegError {
    fn from(e: std::io::Error) -> Self {
        tracing::warn!(error = %e, "registry: disk error");
        err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("storage error: {e}"),
        )
    }
}

impl RegError {
    pub(super) fn into_reply(self, realm: &str) -> Reply {
        let body = serde_json::json!({"errors": [{"code": self.code, "message": self.message, "detail": null}]});
        let mut reply = Response::new(Body::from(body.to_string()));
        *reply.status_mut() = self.status;
        let headers = reply.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = super::auth::challenge(realm, self.challenge.as_deref());
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert("www-authenticate", value);
            }
        }
        reply
    }
}

pub(super) fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

pub(super) fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Body::empty());
    *reply.status_mut() = status;
    reply
}

pub(super) fn json_reply(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut reply = Response::new(Body::from(value.to_string()));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    reply
}

pub(super) fn created(location: &str, digest: &str) -> Reply {
    let mut reply = empty(StatusCode::CREATED);
    let h = reply.headers_mut();
    insert(h, "location", location);
    insert(h, "docker-content-digest", digest);
    h.insert("content-length", HeaderValue::from(0));
    reply
}

pub(super) fn upload_reply(status: StatusCode, name: &str, id: &str, size: u64) -> Reply {
    let mut reply = empty(status);
    let h = reply.headers_mut();
    insert(h, "location", &format!("/v2/{name}/blobs/uploads/{id}"));
    insert(h, "docker-upload-uuid", id);
    insert(h, "range", &format!("0-{}", size.saturating_sub(1)));
    h.insert("content-length", HeaderValue::from(0));
    reply
}

pub(super) fn method_not_allowed() -> RegError {
    err(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "method not allowed here",
    )
}
