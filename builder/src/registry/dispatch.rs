//! Routing: which handler a `/v2/...` request goes to, from its path and
//! method, after its token is read and the action it needs is checked.

use std::collections::HashMap;

use warp::http::{HeaderMap, Method, StatusCode};

use super::auth::unauthorized;
use super::reply::{err, json_reply, method_not_allowed, Reply, Result};
use super::{BodyStream, Registry};

/// What a request is, from its path under `/v2/`.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Ping,
    Catalog,
    Blob(&'a str, &'a str),
    UploadStart(&'a str),
    Upload(&'a str, &'a str),
    Manifest(&'a str, &'a str),
    Tags(&'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return Some(Route::Ping);
    }
    if path == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = path.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some(name) = path
        .strip_suffix("/blobs/uploads/")
        .or_else(|| path.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::UploadStart(name));
    }
    if let Some((name, id)) = path.rsplit_once("/blobs/uploads/") {
        return Some(Route::Upload(name, id));
    }
    if let Some((name, digest)) = path.rsplit_once("/blobs/") {
        return Some(Route::Blob(name, digest));
    }
    if let Some((name, reference)) = path.rsplit_once("/manifests/") {
        return Some(Route::Manifest(name, reference));
    }
    None
}

fn query_map(query: &str) -> HashMap<String, String> {
    url_pairs(query).into_iter().collect()
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(query).unwrap_or_default()
}

impl Registry {
    /// Answers one request under `/v2/`.
    pub(super) async fn handle(
        &self,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        query: &str,
        body: BodyStream,
    ) -> Result<Reply> {
        let claims = self.claims(headers);
        let Some(route) = route(path) else {
            return Err(err(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route"));
        };
        let q = query_map(query);
        let action = match *method {
            Method::GET | Method::HEAD => "pull",
            Method::DELETE => "delete",
            _ => "push",
        };
        match route {
            Route::Ping => {
                if claims.is_none() {
                    return Err(unauthorized(None));
                }
                Ok(json_reply(StatusCode::OK, &serde_json::json!({})))
            }
            Route::Catalog => {
                let Some(claims) = claims.filter(|c| {
                    c.access
                        .iter()
                        .any(|a| a.kind == "registry" && a.name == "catalog")
                }) else {
                    return Err(unauthorized(Some("registry:catalog:*".into())));
                };
                self.catalog(&claims.sub, &q).await
            }
            Route::Tags(name) => {
                let (pid, sid) = self.authorize(&claims, name, "pull")?;
                self.tags(name, pid, sid, &q).await
            }
            Route::Blob(name, digest) => {
                let (pid, sid) = self.authorize(&claims, name, action)?;
                match *method {
                    Method::GET | Method::HEAD => {
                        self.get_blob(pid, sid, digest, headers, *method == Method::HEAD)
                            .await
                    }
                    Method::DELETE => Err(err(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "UNSUPPORTED",
                        "blobs are removed with the manifests that use them",
                    )),
                    _ => Err(method_not_allowed()),
                }
            }
            Route::UploadStart(name) => {
                let (pid, sid) = self.authorize(&claims, name, "push")?;
                if *method != Method::POST {
                    return Err(method_not_allowed());
                }
                self.start_upload(name, pid, sid, &q, &claims, body).await
            }
            Route::Upload(name, id) => {
                let (pid, sid) = self.authorize(&claims, name, action)?;
                self.check_upload(id, pid, sid)?;
                self.continue_upload(method, name, id, headers, &q, body)
                    .await
            }
            Route::Manifest(name, reference) => {
                let (pid, sid) = self.authorize(&claims, name, action)?;
                match *method {
                    Method::GET | Method::HEAD => {
                        self.get_manifest(pid, sid, reference, *method == Method::HEAD)
                            .await
                    }
                    Method::PUT => {
                        self.put_manifest(name, pid, sid, reference, headers, body)
                            .await
                    }
                    Method::DELETE => self.delete_manifest(pid, sid, reference).await,
                    _ => Err(method_not_allowed()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        assert_eq!(route(""), Some(Route::Ping));
        assert_eq!(route("_catalog"), Some(Route::Catalog));
        assert_eq!(route("a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(route("a/b/blobs/uploads/"), Some(Route::UploadStart("a/b")));
        assert_eq!(
            route("a/b/blobs/uploads/xyz"),
            Some(Route::Upload("a/b", "xyz"))
        );
        assert_eq!(
            route("a/b/blobs/sha256:00"),
            Some(Route::Blob("a/b", "sha256:00"))
        );
        assert_eq!(
            route("a/b/manifests/latest"),
            Some(Route::Manifest("a/b", "latest"))
        );
        assert_eq!(route("a/b/other"), None);
    }
}
