//! GitLab (gitlab.com or self-hosted) as a [`GitVendor`]: OAuth at
//! `/oauth`, REST API v4 (projects named by their URL-encoded path),
//! `X-Gitlab-Token` webhooks carrying the secret itself, `Push Hook`
//! payloads.

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::client::{array, encode_path, id_of, link_next, str_of, Branch, Page, Repo};
use super::push::{parse_ref_push, Pushes};
use super::signature::token_matches;
use super::GitVendor;

/// GitLab.
pub struct Gitlab;

/// The `X-Next-Page` header, when present.
fn next_page_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-next-page").and_then(|h| h.to_str().ok())
}

impl GitVendor for Gitlab {
    fn default_web_url(&self) -> &'static str {
        "https://gitlab.com"
    }

    fn default_api_url(&self, web: &str) -> String {
        format!("{web}/api/v4")
    }

    fn auth_path(&self) -> &'static str {
        "/oauth/authorize"
    }

    fn token_path(&self) -> &'static str {
        "/oauth/token"
    }

    fn scopes(&self) -> &'static [&'static str] {
        &["api", "read_user"]
    }

    fn account(&self, user: &Value) -> (Option<String>, Option<String>) {
        (id_of(&user["id"]), id_of(&user["username"]))
    }

    /// `GET /projects?membership=true`.
    fn repos_path(&self, page: u32, per_page: u32) -> String {
        format!(
            "/projects?membership=true&simple=true&per_page={per_page}&page={page}&order_by=last_activity_at"
        )
    }

    fn repos_page(&self, answer: &Value, headers: &HeaderMap, page: u32) -> Page<Repo> {
        let items = array(answer)
            .iter()
            .filter_map(|r| {
                Some(Repo {
                    full_name: str_of(&r["path_with_namespace"])?,
                    private: r["visibility"].as_str() != Some("public"),
                    clone_url: str_of(&r["http_url_to_repo"])?,
                    default_branch: str_of(&r["default_branch"]),
                })
            })
            .collect();
        let next = next_page_header(headers).and_then(|h| h.parse().ok());
        Page {
            items,
            next_page: next.or_else(|| link_next(headers).then_some(page + 1)),
        }
    }

    /// `GET /projects/{path}/repository/branches`.
    fn branches_path(&self, repo: &str, page: u32, per_page: u32) -> String {
        format!(
            "/projects/{}/repository/branches?per_page={per_page}&page={page}",
            encode_path(repo)
        )
    }

    fn branches_page(&self, answer: &Value, headers: &HeaderMap, page: u32) -> Page<Branch> {
        let items = array(answer)
            .iter()
            .filter_map(|b| {
                Some(Branch {
                    name: str_of(&b["name"])?,
                    commit: str_of(&b["commit"]["id"])?,
                })
            })
            .collect();
        let next = next_page_header(headers).is_some_and(|h| !h.is_empty()) || link_next(headers);
        Page {
            items,
            next_page: next.then_some(page + 1),
        }
    }

    /// `POST /projects/{path}/hooks`.
    fn create_hook(&self, repo: &str, url: &str, secret: &str) -> (String, Value) {
        (
            format!("/projects/{}/hooks", encode_path(repo)),
            json!({"url": url, "token": secret, "push_events": true,
                "enable_ssl_verification": true}),
        )
    }

    fn hook_path(&self, repo: &str, id: &str) -> String {
        format!("/projects/{}/hooks/{id}", encode_path(repo))
    }

    fn signature_header(&self) -> &'static str {
        "x-gitlab-token"
    }

    fn signature_matches(&self, value: &[u8], _body: &[u8], secret: &str) -> bool {
        token_matches(value, secret)
    }

    fn delivery_headers(&self) -> &'static [&'static str] {
        &["x-gitlab-event-uuid", "idempotency-key"]
    }

    fn delivery_header(&self) -> &'static str {
        "X-Gitlab-Event-UUID"
    }

    fn event_header(&self) -> &'static str {
        "x-gitlab-event"
    }

    fn event(&self, raw: String) -> String {
        if raw == "Push Hook" {
            "push".into()
        } else {
            raw
        }
    }

    fn parse_push(&self, body: &Value) -> Option<Pushes> {
        let commit = body
            .get("checkout_sha")
            .and_then(Value::as_str)
            .or_else(|| body.get("after").and_then(Value::as_str));
        parse_ref_push(body, commit, "project")
    }
}
