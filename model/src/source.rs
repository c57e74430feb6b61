//! Where a service's code comes from (a git repository, branch or commit,
//! the vendor account that clones it) and how it is built, with the checks
//! that keep a source off the builder's own disk and out of git's options.

use serde::{Deserialize, Serialize};

use super::{truncate, Result, ValidationError};

/// How an image is built from source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BuildKind {
    /// The repository's own Dockerfile.
    #[default]
    Dockerfile,
    /// A Dockerfile rendered by lb from `templates/` for a language/framework.
    Template,
}

/// Build settings of a git source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// dockerfile or template.
    #[serde(default)]
    pub kind: BuildKind,
    /// Path of the Dockerfile in the repository (kind dockerfile).
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// Build context directory in the repository.
    #[serde(default)]
    pub context: Option<String>,
    /// Template language, e.g. `python` (kind template).
    #[serde(default)]
    pub language: Option<String>,
    /// Template framework, e.g. `flask` (kind template).
    #[serde(default)]
    pub framework: Option<String>,
    /// Language version, e.g. `3.12`.
    #[serde(default)]
    pub version: Option<String>,
    /// Command that builds the app.
    #[serde(default)]
    pub build_cmd: Option<String>,
    /// Command that runs the app.
    #[serde(default)]
    pub run_cmd: Option<String>,
    /// A single-page app (template builds that serve static files): paths
    /// without a file extension that name no file answer `/index.html`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spa: bool,
}

/// Where a service's code comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Clone URL: http(s), ssh, git, or scp-like `git@host:owner/repo.git`.
    pub url: String,
    /// Branch to track.
    #[serde(default)]
    pub branch: Option<String>,
    /// An exact commit to build instead of the branch head.
    #[serde(default)]
    pub commit: Option<String>,
    /// The linked vendor account used to clone: github, bitbucket or gitlab.
    #[serde(default)]
    pub vendor: Option<String>,
    /// How to build.
    #[serde(default)]
    pub build: BuildSpec,
    /// A stack: the path in the repository of a compose file (or an lb.yaml)
    /// that each build of the service reads and the API applies to its
    /// project; the service runs nothing itself (see [`crate::stack`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose: Option<String>,
    /// A stack's apply deletes the project's services its file does not
    /// name (never the stack service itself).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
}

impl Source {
    /// Checks the source; refuses `file://` and local paths (a user must not
    /// read the builder's disk).
    pub fn validate(&self) -> Result<()> {
        check_git_url(&self.url).map_err(|m| ValidationError::new("url", m))?;
        if let Some(branch) = &self.branch {
            check_ref(branch).map_err(|m| ValidationError::new("branch", m))?;
        }
        if let Some(commit) = &self.commit {
            if !(4..=64).contains(&commit.len()) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ValidationError::new(
                    "commit",
                    format!("{:?} is not a commit hash", truncate(commit)),
                ));
            }
        }
        if let Some(vendor) = &self.vendor {
            if !["github", "bitbucket", "gitlab"].contains(&vendor.as_str()) {
                return Err(ValidationError::new(
                    "vendor",
                    format!(
                        "{:?} is not one of github, bitbucket, gitlab",
                        truncate(vendor)
                    ),
                ));
            }
        }
        let build = &self.build;
        for (field, path) in [
            ("build.dockerfile", &build.dockerfile),
            ("build.context", &build.context),
        ] {
            if let Some(path) = path {
                check_repo_path(path).map_err(|m| ValidationError::new(field, m))?;
            }
        }
        if let Some(file) = &self.compose {
            crate::stack::check_file(file).map_err(|m| ValidationError::new("compose", m))?;
        } else if self.prune {
            return Err(ValidationError::new(
                "prune",
                "applies to a stack only (a source with \"compose\")",
            ));
        }
        if build.spa && build.kind != BuildKind::Template {
            return Err(ValidationError::new(
                "build.spa",
                "applies to template builds only (a Dockerfile sets up its own server)",
            ));
        }
        if build.kind == BuildKind::Template {
            for (field, value) in [
                ("build.language", &build.language),
                ("build.framework", &build.framework),
            ] {
                match value {
                    Some(v) if super::validate_name(v).is_ok() => {}
                    Some(v) => {
                        return Err(ValidationError::new(
                            field,
                            format!("{:?} is not a valid name", truncate(v)),
                        ))
                    }
                    None => {
                        return Err(ValidationError::new(
                            field,
                            "is required for a template build",
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_git_url(url: &str) -> std::result::Result<(), String> {
    let shown = truncate(url);
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{shown:?} is not a git URL"));
    }
    let rest = if let Some((scheme, rest)) = url.split_once("://") {
        if !["http", "https", "ssh", "git"].contains(&scheme) {
            return Err(format!(
                "{shown:?}: scheme {scheme:?} is not allowed (use https, ssh or git)"
            ));
        }
        rest
    } else if let Some((user_host, path)) = url.split_once(':') {
        // scp-like: git@host:owner/repo.git
        if !user_host.contains('@') || path.is_empty() {
            return Err(format!(
                "{shown:?} is not a git URL (use https, ssh or git)"
            ));
        }
        user_host.rsplit('@').next().unwrap_or_default()
    } else {
        return Err(format!(
            "{shown:?} is a local path, not a git URL (use https, ssh or git)"
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        // A password, or for http(s) a user name (GitHub and GitLab take a
        // token there), would be stored in the spec, shown to whoever reads
        // it and printed by git in build logs: a linked vendor clones
        // private repositories instead. `ssh://git@host/..` names a user only.
        let is_http = url.starts_with("http://") || url.starts_with("https://");
        if userinfo.contains(':') || is_http {
            return Err(
                "holds credentials: give the URL without them and link a vendor account \
                 (\"vendor\") to clone a private repository"
                    .to_owned(),
            );
        }
    }
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{shown:?} names no host"));
    }
    if url.contains("://") {
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or_default();
        let path = path.split(['?', '#']).next().unwrap_or_default();
        if path.split('/').any(|s| s == "." || s == "..") {
            return Err(format!(
                "{shown:?}: the path has a \".\" or \"..\" segment (give the repository's own path)"
            ));
        }
    }
    Ok(())
}

fn check_ref(branch: &str) -> std::result::Result<(), String> {
    let ok = !branch.is_empty()
        && branch.len() <= 255
        && !branch.starts_with(['-', '/'])
        && !branch.ends_with(['/', '.'])
        && !branch.contains("..")
        && !branch.contains("@{")
        && !branch.ends_with(".lock")
        && branch
            .chars()
            .all(|c| !c.is_control() && !" ~^:?*[\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{:?} is not a valid branch name", truncate(branch)))
    }
}

fn check_repo_path(path: &str) -> std::result::Result<(), String> {
    let ok = !path.is_empty()
        && path.len() <= 1024
        && !path.starts_with('/')
        && !path.split('/').any(|p| p == "..")
        && !path.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} must be a relative path inside the repository",
            truncate(path)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(build: serde_json::Value) -> Source {
        serde_json::from_value(serde_json::json!({"url": "https://h/r.git", "build": build}))
            .unwrap()
    }

    fn url_error(url: &str) -> Option<String> {
        let source: Source = serde_json::from_value(serde_json::json!({"url": url})).unwrap();
        source.validate().err().map(|e| {
            assert_eq!(e.field, "url", "{e}");
            e.to_string()
        })
    }

    #[test]
    fn urls_with_credentials_are_refused_without_echoing_them() {
        for url in [
            "https://user:hunter2@github.com/acme/web.git",
            "https://ghp_secrettoken@github.com/acme/web.git",
            "http://oauth2:glpat-secret@gitlab.example.com/g/r.git",
            "ssh://git:hunter2@git.example.com/o/r.git",
        ] {
            let err = url_error(url).unwrap_or_else(|| panic!("{url} accepted"));
            assert!(err.contains("credentials"), "{err}");
            for secret in ["hunter2", "ghp_secrettoken", "glpat-secret"] {
                assert!(!err.contains(secret), "{err}");
            }
        }
        for url in [
            "https://github.com/acme/web.git",
            "ssh://git@git.example.com/o/r.git",
            "git@github.com:acme/web.git",
            "git://git.example.com/o/r",
        ] {
            assert_eq!(url_error(url), None, "{url}");
        }
    }

    #[test]
    fn urls_with_dot_segments_are_refused() {
        assert!(url_error("https://github.com/acme/../evil/x.git").is_some());
        assert!(url_error("https://github.com/acme/./x.git").is_some());
        assert_eq!(url_error("https://github.com/acme/x..y.git"), None);
    }

    #[test]
    fn spa_defaults_off_and_needs_a_template_build() {
        let plain = source(serde_json::json!({}));
        assert!(!plain.build.spa);
        let shown = serde_json::to_value(&plain).unwrap();
        assert!(shown["build"].get("spa").is_none(), "{shown}");
        let spa = source(serde_json::json!({"kind": "template", "language": "static",
            "framework": "html", "spa": true}));
        assert!(spa.build.spa);
        spa.validate().unwrap();
        assert_eq!(serde_json::to_value(&spa).unwrap()["build"]["spa"], true);
        let e = source(serde_json::json!({"spa": true}))
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "build.spa", "{e}");
    }
}
