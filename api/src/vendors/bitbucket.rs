//! Bitbucket Cloud as a [`GitVendor`]: OAuth at `/site/oauth2` (scopes set
//! on the consumer), REST API 2.0 (`values`/`next` pages),
//! `X-Hub-Signature` HMAC webhooks, `repo:push` payloads.

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::client::{array, encode_path, id_of, str_of, Branch, Page, Repo};
use super::push::{is_commit, Push, Pushes};
use super::signature::hmac_matches;
use super::GitVendor;

/// Bitbucket Cloud.
pub struct Bitbucket;

/// The next page's number when the answer links one.
fn next_page(answer: &Value, page: u32) -> Option<u32> {
    answer.get("next").and_then(Value::as_str).map(|_| page + 1)
}

/// Bitbucket's clone links carry the user name (`https://user@bitbucket.org/...`).
fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, path)) => {
                let host = authority.rsplit('@').next().unwrap_or(authority);
                format!("{scheme}://{host}/{path}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl GitVendor for Bitbucket {
    fn default_web_url(&self) -> &'static str {
        "https://bitbucket.org"
    }

    fn default_api_url(&self, _web: &str) -> String {
        "https://api.bitbucket.org/2.0".into()
    }

    fn auth_path(&self) -> &'static str {
        "/site/oauth2/authorize"
    }

    fn token_path(&self) -> &'static str {
        "/site/oauth2/access_token"
    }

    fn scopes(&self) -> &'static [&'static str] {
        &[]
    }

    fn account(&self, user: &Value) -> (Option<String>, Option<String>) {
        (
            id_of(&user["uuid"]).or_else(|| id_of(&user["account_id"])),
            id_of(&user["username"]).or_else(|| id_of(&user["nickname"])),
        )
    }

    /// `GET /repositories?role=member`.
    fn repos_path(&self, page: u32, per_page: u32) -> String {
        format!("/repositories?role=member&pagelen={per_page}&page={page}")
    }

    fn repos_page(&self, answer: &Value, _headers: &HeaderMap, page: u32) -> Page<Repo> {
        let items = array(&answer["values"])
            .iter()
            .filter_map(|r| {
                let clone_url = array(&r["links"]["clone"])
                    .iter()
                    .find(|l| l["name"] == "https")
                    .and_then(|l| str_of(&l["href"]))?;
                Some(Repo {
                    full_name: str_of(&r["full_name"])?,
                    private: r["is_private"].as_bool().unwrap_or(true),
                    clone_url: strip_userinfo(&clone_url),
                    default_branch: str_of(&r["mainbranch"]["name"]),
                })
            })
            .collect();
        Page {
            items,
            next_page: next_page(answer, page),
        }
    }

    /// `GET /repositories/{o}/{r}/refs/branches`.
    fn branches_path(&self, repo: &str, page: u32, per_page: u32) -> String {
        format!("/repositories/{repo}/refs/branches?pagelen={per_page}&page={page}")
    }

    fn branches_page(&self, answer: &Value, _headers: &HeaderMap, page: u32) -> Page<Branch> {
        let items = array(&answer["values"])
            .iter()
            .filter_map(|b| {
                Some(Branch {
                    name: str_of(&b["name"])?,
                    commit: str_of(&b["target"]["hash"])?,
                })
            })
            .collect();
        Page {
            items,
            next_page: next_page(answer, page),
        }
    }

    /// `POST /repositories/{o}/{r}/hooks`.
    fn create_hook(&self, repo: &str, url: &str, secret: &str) -> (String, Value) {
        (
            format!("/repositories/{repo}/hooks"),
            json!({"description": "lb autodeploy", "url": url, "active": true,
                "secret": secret, "events": ["repo:push"]}),
        )
    }

    fn hook_path(&self, repo: &str, id: &str) -> String {
        format!("/repositories/{repo}/hooks/{}", encode_path(id))
    }

    fn signature_header(&self) -> &'static str {
        "x-hub-signature"
    }

    fn signature_matches(&self, value: &[u8], body: &[u8], secret: &str) -> bool {
        hmac_matches(value, body, secret)
    }

    fn delivery_headers(&self) -> &'static [&'static str] {
        &["x-request-uuid"]
    }

    fn delivery_header(&self) -> &'static str {
        "X-Request-UUID"
    }

    fn event_header(&self) -> &'static str {
        "x-event-key"
    }

    fn event(&self, raw: String) -> String {
        if raw == "repo:push" {
            "push".into()
        } else {
            raw
        }
    }

    /// `push.changes[].new` of type `branch`; `repository.mainbranch.name`.
    fn parse_push(&self, body: &Value) -> Option<Pushes> {
        let changes = body.get("push")?.get("changes")?.as_array()?;
        let branches = changes
            .iter()
            .filter_map(|c| {
                let new = c.get("new")?;
                if new.get("type")?.as_str()? != "branch" {
                    return None;
                }
                let commit = new.get("target")?.get("hash")?.as_str()?;
                let branch = new.get("name")?.as_str()?.to_owned();
                is_commit(commit).then(|| Push {
                    branch,
                    commit: commit.to_ascii_lowercase(),
                })
            })
            .collect();
        let default_branch = body
            .get("repository")
            .and_then(|r| r.get("mainbranch"))
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(Pushes {
            branches,
            default_branch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_urls_lose_their_user() {
        assert_eq!(
            strip_userinfo("https://me@bitbucket.org/o/r.git"),
            "https://bitbucket.org/o/r.git"
        );
    }
}
