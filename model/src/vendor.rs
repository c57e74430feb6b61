//! Git vendors: a user's linked account (with its tokens sealed), a
//! service's webhook registration, and the admin's allowlist of repository
//! owners.

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// The git vendors lb links accounts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    /// GitHub (or GitHub Enterprise).
    Github,
    /// GitLab (gitlab.com or self-hosted).
    Gitlab,
    /// Bitbucket Cloud.
    Bitbucket,
}

impl Vendor {
    /// Every vendor.
    pub const ALL: [Vendor; 3] = [Vendor::Github, Vendor::Gitlab, Vendor::Bitbucket];

    /// Its name in paths and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Github => "github",
            Vendor::Gitlab => "gitlab",
            Vendor::Bitbucket => "bitbucket",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == name)
    }

    /// The host of the vendor's public service (`github.com`): where a
    /// link made before links recorded their host sends its token.
    pub fn default_host(self) -> &'static str {
        match self {
            Vendor::Github => "github.com",
            Vendor::Gitlab => "gitlab.com",
            Vendor::Bitbucket => "bitbucket.org",
        }
    }

    /// The user name git sends with a token over HTTP Basic auth.
    pub fn git_username(self) -> &'static str {
        match self {
            Vendor::Github => "x-access-token",
            Vendor::Gitlab => "oauth2",
            Vendor::Bitbucket => "x-token-auth",
        }
    }
}

impl std::fmt::Display for Vendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user's linked vendor account, at `/lb/users/<uid>/vendors/<vendor>`.
/// The tokens are sealed ((`lb_store::secrets::Sealer`), the record's key as
/// context) and never returned by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorLink {
    /// The vendor.
    pub vendor: Vendor,
    /// The account's id at the vendor.
    pub account_id: String,
    /// The account's login name at the vendor.
    pub login: String,
    /// The sealed access token.
    pub token: String,
    /// The sealed refresh token, for vendors whose tokens expire.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix seconds), if it does.
    #[serde(default)]
    pub expires: Option<Timestamp>,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When linked.
    pub created: Timestamp,
    /// When last refreshed or relinked.
    pub updated: Timestamp,
    /// The vendor's web host (with any port) the account was linked on, as
    /// configured then (`github.com`, a GitHub Enterprise host): the token
    /// is sent to clones from this host only. Absent in older links:
    /// [`Vendor::default_host`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl VendorLink {
    /// The host the token may be sent to.
    pub fn token_host(&self) -> String {
        self.host
            .clone()
            .unwrap_or_else(|| self.vendor.default_host().to_owned())
            .to_ascii_lowercase()
    }
}

/// A service's push webhook, at `/lb/hooks/<sid>`: kept by the API's hook
/// controller while the service has `autodeploy` and a git source, and the
/// only way a delivery to `/api/v1/hooks/<vendor>/<sid>` finds its service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// Project id.
    pub pid: String,
    /// Service id.
    pub sid: String,
    /// The vendor the deliveries come from (`None`: a plain git URL,
    /// watched by polling instead).
    #[serde(default)]
    pub vendor: Option<Vendor>,
    /// The repository at the vendor (`owner/name`), when known.
    #[serde(default)]
    pub repository: Option<String>,
    /// The id of the webhook lb created on the vendor, if it created one.
    #[serde(default)]
    pub vendor_hook_id: Option<String>,
    /// The user whose token created the vendor's webhook.
    #[serde(default)]
    pub created_by: Option<String>,
    /// Why the vendor's webhook could not be created (shown to the owner).
    #[serde(default)]
    pub error: Option<String>,
    /// When lb last tried to create the vendor's webhook (Unix seconds);
    /// a failed try is repeated (e.g. once the owner links the vendor).
    #[serde(default)]
    pub attempted: Option<Timestamp>,
    /// The branch head seen last by polling.
    #[serde(default)]
    pub polled_head: Option<String>,
    /// When polling last looked (Unix seconds).
    #[serde(default)]
    pub polled: Option<Timestamp>,
    /// Delivery ids (SHA-256 hex) seen lately, newest last: a delivery seen
    /// before is a replay.
    #[serde(default)]
    pub deliveries: Vec<String>,
}

/// The most delivery ids a [`HookRecord`] keeps.
pub const MAX_DELIVERIES: usize = 1000;

/// Which repository owners may be built from, at `/lb/cluster/allowlist`.
/// Empty: any. An entry is `host` (every owner there) or `host/owner`
/// (one user or organization, or a GitLab group and its subgroups),
/// matched without regard to case.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowlist {
    /// The entries.
    #[serde(default)]
    pub owners: Vec<String>,
}

impl Allowlist {
    /// Checks the entries' shape.
    pub fn validate(&self) -> super::Result<()> {
        if self.owners.len() > 1000 {
            return Err(super::ValidationError::new(
                "owners",
                "at most 1000 entries",
            ));
        }
        for (i, entry) in self.owners.iter().enumerate() {
            let ok = !entry.is_empty()
                && entry.len() <= 255
                && !entry.starts_with('/')
                && !entry.ends_with('/')
                && !entry.contains("//")
                && entry
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:/~".contains(c));
            if !ok {
                return Err(super::ValidationError::new(
                    format!("owners[{i}]"),
                    format!(
                        "{:?} is not \"host\" or \"host/owner\" (e.g. \"github.com/acme\")",
                        super::truncate(entry)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether a clone URL's repository may be built.
    pub fn allows(&self, url: &str) -> bool {
        if self.owners.is_empty() {
            return true;
        }
        let Some((host, path)) = repository_of(url) else {
            return false;
        };
        let repo = format!("{host}/{path}").to_ascii_lowercase();
        self.owners.iter().any(|entry| {
            let entry = entry.to_ascii_lowercase();
            // The entry is the host or an owner path; the repository sits
            // below it (never the entry itself: that would be a repo name).
            repo.starts_with(&format!("{entry}/"))
        })
    }
}

/// The host (with any port) and the repository path (`owner/name`, no
/// `.git`) of a clone URL: `https://github.com/o/r.git`, `ssh://git@h/o/r`,
/// `git@github.com:o/r.git`.
pub fn repository_of(url: &str) -> Option<(String, String)> {
    let rest = if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "http" | "https" | "ssh" | "git") {
            return None;
        }
        rest.to_owned()
    } else {
        // scp-like: [user@]host:path
        let (host, path) = url.split_once(':')?;
        format!("{host}/{path}")
    };
    let (authority, path) = rest.split_once('/')?;
    let host = authority.rsplit('@').next()?.to_ascii_lowercase();
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    // Compared as written, so the path must be in normal form: no `.` or
    // `..` segment (`acme/../evil/x` is evil's, whatever its prefix), and
    // nothing git or a server would decode into one (`%2e`, `\`).
    let abnormal = |segment: &str| {
        segment.is_empty()
            || segment == "."
            || segment == ".."
            || segment.contains(['%', '\\', '?', '#'])
    };
    if host.is_empty() || !path.contains('/') || path.split('/').any(abnormal) {
        return None;
    }
    Some((host, path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(entries: &[&str], url: &str, allowed: bool) {
        let list = Allowlist {
            owners: entries.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(list.allows(url), allowed, "{entries:?} {url}");
    }

    #[test]
    fn allowlist_matches_hosts_and_owners() {
        check(&[], "https://github.com/a/b.git", true);
        check(
            &["github.com/acme"],
            "https://github.com/acme/web.git",
            true,
        );
        check(&["github.com/acme"], "https://github.com/Acme/web", true);
        check(&["github.com/acme"], "git@github.com:acme/web.git", true);
        check(
            &["github.com/acme"],
            "https://github.com/acme-evil/web",
            false,
        );
        check(&["github.com/acme"], "https://gitlab.com/acme/web", false);
        check(
            &["github.com/acme"],
            "https://x@github.com/other/web",
            false,
        );
        check(
            &["gitlab.com/grp"],
            "https://gitlab.com/grp/sub/web.git",
            true,
        );
        check(&["git.example.com"], "ssh://git@git.example.com/x/y", true);
        check(&["github.com/acme"], "file:///github.com/acme/x", false);
        check(&["github.com/acme"], "https://github.com/acme", false);
        // The path is compared in normal form: dot segments and encodings
        // that become one do not pass as the prefix they start with.
        check(
            &["github.com/acme"],
            "https://github.com/acme/../evil/x",
            false,
        );
        check(
            &["github.com/acme"],
            "https://github.com/acme/../evil/",
            false,
        );
        check(
            &["github.com/acme"],
            "git@github.com:acme/../evil/x.git",
            false,
        );
        check(&["github.com/acme"], "https://github.com/acme/./x", false);
        check(
            &["github.com/acme"],
            "https://github.com/acme/%2e%2e/evil/x",
            false,
        );
        check(
            &["github.com/acme"],
            "https://github.com/acme/..%2fevil/x",
            false,
        );
        check(
            &["github.com/acme"],
            "https://github.com/acme/x\\..\\..\\evil",
            false,
        );
        check(
            &["github.com/acme"],
            "https://github.com/acme/x?../../evil/y",
            false,
        );
    }

    #[test]
    fn allowlist_entries_are_checked() {
        let bad = Allowlist {
            owners: vec!["github.com/ok".into(), "bad entry".into()],
        };
        assert_eq!(bad.validate().unwrap_err().field, "owners[1]");
        assert!(Allowlist {
            owners: vec!["github.com/acme".into(), "git.example.com:8443".into()]
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn repositories_of_urls() {
        assert_eq!(
            repository_of("https://github.com/o/r.git"),
            Some(("github.com".into(), "o/r".into()))
        );
        assert_eq!(
            repository_of("git@gitlab.com:g/s/r.git"),
            Some(("gitlab.com".into(), "g/s/r".into()))
        );
        assert_eq!(repository_of("https://github.com/o"), None);
        assert_eq!(repository_of("/srv/repo"), None);
    }
}
