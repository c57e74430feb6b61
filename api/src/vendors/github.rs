//! GitHub (and GitHub Enterprise, and the Gitea and Forgejo webhooks that
//! copy it) as a [`GitVendor`]: OAuth at `/login/oauth`, REST API v3,
//! `X-Hub-Signature-256` HMAC webhooks, `push` payloads.

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::client::{array, id_of, link_next, str_of, Branch, Page, Repo};
use super::push::{parse_ref_push, Pushes};
use super::signature::hmac_matches;
use super::GitVendor;

/// GitHub.
pub struct Github;

impl GitVendor for Github {
    fn default_web_url(&self) -> &'static str {
        "https://github.com"
    }

    fn default_api_url(&self, web: &str) -> String {
        if web == "https://github.com" {
            "https://api.github.com".into()
        } else {
            format!("{web}/api/v3")
        }
    }

    fn auth_path(&self) -> &'static str {
        "/login/oauth/authorize"
    }

    fn token_path(&self) -> &'static str {
        "/login/oauth/access_token"
    }

    fn scopes(&self) -> &'static [&'static str] {
        &["repo", "admin:repo_hook", "read:user"]
    }

    fn api_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[("x-github-api-version", "2022-11-28")]
    }

    fn account(&self, user: &Value) -> (Option<String>, Option<String>) {
        (id_of(&user["id"]), id_of(&user["login"]))
    }

    /// `GET /user/repos`.
    fn repos_path(&self, page: u32, per_page: u32) -> String {
        format!("/user/repos?per_page={per_page}&page={page}&sort=updated")
    }

    fn repos_page(&self, answer: &Value, headers: &HeaderMap, page: u32) -> Page<Repo> {
        let items = array(answer)
            .iter()
            .filter_map(|r| {
                Some(Repo {
                    full_name: str_of(&r["full_name"])?,
                    private: r["private"].as_bool().unwrap_or(false),
                    clone_url: str_of(&r["clone_url"])?,
                    default_branch: str_of(&r["default_branch"]),
                })
            })
            .collect();
        Page {
            items,
            next_page: link_next(headers).then_some(page + 1),
        }
    }

    /// `GET /repos/{o}/{r}/branches`.
    fn branches_path(&self, repo: &str, page: u32, per_page: u32) -> String {
        format!("/repos/{repo}/branches?per_page={per_page}&page={page}")
    }

    fn branches_page(&self, answer: &Value, headers: &HeaderMap, page: u32) -> Page<Branch> {
        let items = array(answer)
            .iter()
            .filter_map(|b| {
                Some(Branch {
                    name: str_of(&b["name"])?,
                    commit: str_of(&b["commit"]["sha"])?,
                })
            })
            .collect();
        Page {
            items,
            next_page: link_next(headers).then_some(page + 1),
        }
    }

    /// `POST /repos/{o}/{r}/hooks`.
    fn create_hook(&self, repo: &str, url: &str, secret: &str) -> (String, Value) {
        (
            format!("/repos/{repo}/hooks"),
            json!({"name": "web", "active": true, "events": ["push"],
                "config": {"url": url, "content_type": "json", "secret": secret, "insecure_ssl": "0"}}),
        )
    }

    fn hook_path(&self, repo: &str, id: &str) -> String {
        format!("/repos/{repo}/hooks/{id}")
    }

    fn signature_header(&self) -> &'static str {
        "x-hub-signature-256"
    }

    fn signature_matches(&self, value: &[u8], body: &[u8], secret: &str) -> bool {
        hmac_matches(value, body, secret)
    }

    fn delivery_headers(&self) -> &'static [&'static str] {
        &["x-github-delivery"]
    }

    fn delivery_header(&self) -> &'static str {
        "X-GitHub-Delivery"
    }

    fn event_header(&self) -> &'static str {
        "x-github-event"
    }

    fn event(&self, raw: String) -> String {
        match raw.as_str() {
            "push" => "push".into(),
            "ping" => "ping".into(),
            _ => raw,
        }
    }

    fn parse_push(&self, body: &Value) -> Option<Pushes> {
        let commit = body.get("after").and_then(Value::as_str);
        parse_ref_push(body, commit, "repository")
    }
}
