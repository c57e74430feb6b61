//! The answers the ingress gives itself: short HTML error pages, the
//! HTTPS redirect and ACME HTTP-01 key authorizations.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{full, Body};

/// A short HTML page for an error the ingress answers itself.
pub fn error(status: StatusCode, detail: &str) -> Response<Body> {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{}</p><hr><p>lb ingress</p></body></html>\n",
        escape(detail)
    );
    let mut response = Response::new(full(html));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// 404 for a host no service answers.
pub fn unknown_host(host: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        &format!("No service answers at {host:?}."),
    )
}

/// 503 with `Retry-After: 5` for a service without a healthy replica.
pub fn no_upstream(route: &str) -> Response<Body> {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("Service {route} has no replica ready to take requests."),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// 308 to `location`.
pub fn redirect(location: &str) -> Response<Body> {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut response = Response::new(crate::body::empty());
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => error(
            StatusCode::BAD_REQUEST,
            "The request's URL cannot be redirected.",
        ),
    }
}

/// An ACME HTTP-01 answer: the key authorization as text/plain.
pub fn challenge(key_authorization: &str) -> Response<Body> {
    let mut response = Response::new(full(key_authorization.to_string()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_the_client_sent() {
        let r = unknown_host("<script>");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(
            escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }

    #[test]
    fn no_upstream_says_when_to_retry() {
        let r = no_upstream("demo/web");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn a_bad_location_is_no_redirect() {
        assert_eq!(
            redirect("https://a.b/").status(),
            StatusCode::PERMANENT_REDIRECT
        );
        assert_eq!(redirect("https://a.b/\n").status(), StatusCode::BAD_REQUEST);
    }
}
