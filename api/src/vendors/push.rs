//! Push event payloads: which branch moved to which commit. Each vendor's
//! [`super::GitVendor::parse_push`] reads its own:
//!
//! - GitHub `push`: `ref`, `after`, `deleted`, `repository.default_branch`
//!   (<https://docs.github.com/en/webhooks/webhook-events-and-payloads#push>).
//! - GitLab `Push Hook`: `ref`, `checkout_sha`/`after`,
//!   `project.default_branch`
//!   (<https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events>).
//! - Bitbucket `repo:push`: `push.changes[].new.{type, name, target.hash}`
//!   (<https://support.atlassian.com/bitbucket-cloud/docs/event-payloads/#Push>).

use lb_model::Vendor;
use serde_json::Value;

/// A branch pushed to a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The branch name (no `refs/heads/`).
    pub branch: String,
    /// The commit it points at now.
    pub commit: String,
}

/// What a push payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushes {
    /// Branches that moved (deletions and tags left out).
    pub branches: Vec<Push>,
    /// The repository's default branch, when the payload tells it.
    pub default_branch: Option<String>,
}

/// Whether `s` looks like a commit hash (not all zeros).
pub(super) fn is_commit(s: &str) -> bool {
    (4..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_hexdigit())
        && s.bytes().any(|b| b != b'0')
}

/// Parses a push payload; `None` when it is not one.
pub fn parse(vendor: Vendor, body: &Value) -> Option<Pushes> {
    super::vendor(vendor).parse_push(body)
}

/// A push as GitHub and GitLab send it: `ref`, the new `commit` (read by
/// the caller), `deleted`, and `<holder>.default_branch`.
pub(super) fn parse_ref_push(body: &Value, commit: Option<&str>, holder: &str) -> Option<Pushes> {
    let branch = body.get("ref")?.as_str()?.strip_prefix("refs/heads/");
    let deleted = body.get("deleted").and_then(Value::as_bool) == Some(true);
    let default_branch = body
        .get(holder)
        .and_then(|r| r.get("default_branch"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let branches = match (branch, commit) {
        (Some(branch), Some(commit)) if !deleted && is_commit(commit) => vec![Push {
            branch: branch.to_owned(),
            commit: commit.to_ascii_lowercase(),
        }],
        _ => Vec::new(),
    };
    Some(Pushes {
        branches,
        default_branch,
    })
}

impl Pushes {
    /// The commit of the tracked branch, if it moved: `branch`, or when the
    /// service names none, the repository's default branch (`main` when the
    /// payload does not say).
    pub fn commit_of(&self, branch: Option<&str>) -> Option<&str> {
        let tracked = branch
            .map(str::to_owned)
            .or_else(|| self.default_branch.clone())
            .unwrap_or_else(|| "main".into());
        self.branches
            .iter()
            .find(|p| p.branch == tracked)
            .map(|p| p.commit.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";

    #[test]
    fn github_and_gitlab_pushes() {
        let gh = json!({"ref": "refs/heads/main", "after": SHA, "deleted": false,
            "repository": {"default_branch": "main", "full_name": "o/r"}});
        let p = parse(Vendor::Github, &gh).unwrap();
        assert_eq!(p.commit_of(Some("main")), Some(SHA));
        assert_eq!(p.commit_of(None), Some(SHA));
        assert_eq!(p.commit_of(Some("dev")), None);
        let deleted = json!({"ref": "refs/heads/main", "after": "0000000000000000000000000000000000000000", "deleted": true});
        assert_eq!(
            parse(Vendor::Github, &deleted)
                .unwrap()
                .commit_of(Some("main")),
            None
        );
        let tag = json!({"ref": "refs/tags/v1", "after": SHA});
        assert_eq!(
            parse(Vendor::Github, &tag).unwrap().commit_of(Some("v1")),
            None
        );
        let gl = json!({"object_kind": "push", "ref": "refs/heads/dev", "checkout_sha": SHA,
            "after": SHA, "project": {"default_branch": "main"}});
        let p = parse(Vendor::Gitlab, &gl).unwrap();
        assert_eq!(p.commit_of(Some("dev")), Some(SHA));
        assert_eq!(p.commit_of(None), None);
        assert!(parse(Vendor::Github, &json!({"zen": "hi"})).is_none());
    }

    #[test]
    fn bitbucket_pushes() {
        let bb = json!({"push": {"changes": [
            {"new": {"type": "tag", "name": "v1", "target": {"hash": SHA}}},
            {"new": {"type": "branch", "name": "main", "target": {"hash": SHA}}},
            {"new": null, "old": {"type": "branch", "name": "gone"}}
        ]}});
        let p = parse(Vendor::Bitbucket, &bb).unwrap();
        assert_eq!(p.commit_of(Some("main")), Some(SHA));
        assert_eq!(p.commit_of(None), Some(SHA));
        assert_eq!(p.commit_of(Some("v1")), None);
        assert_eq!(p.commit_of(Some("gone")), None);
    }
}
