//! The one hardened way lb runs git (the builder's clones, the API's branch
//! polling): network transports only, no prompts, no hooks, no system or
//! global configuration, a time limit on every run, and credentials passed
//! as environment-supplied configuration only.
//!
//! Every git process started here gets:
//! - `GIT_ALLOW_PROTOCOL=http:https:ssh:git` and `-c protocol.file.allow=never`:
//!   `ext::` (which runs commands), `file://` and local paths are refused;
//! - `GIT_TERMINAL_PROMPT=0`, `GIT_ASKPASS=true`, standard input closed and
//!   ssh in batch mode: git never waits for someone to type a password;
//! - `GIT_CONFIG_NOSYSTEM=1`, `GIT_CONFIG_GLOBAL=/dev/null`: the machine's
//!   and the user's configuration (credential helpers, URL rewrites, hooks)
//!   play no part; `-c core.hooksPath=/dev/null` for the repository's own;
//! - a time limit, after which the process is killed (as it is when the
//!   future running it is dropped: a canceled build stops its clone).
//!
//! [`Credentials`] (an `http.<origin>/.extraHeader`) reach git through
//! `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` in its
//! environment only: never in a URL, an argument, a file or a log line.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// What went wrong running git.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument looked like an option (`-...`): refused before git ran.
    #[error("refusing {what} {value:?}: it looks like an option")]
    OptionLike {
        /// What the argument is (a URL, a branch, a commit).
        what: &'static str,
        /// The argument.
        value: String,
    },
    /// git could not be started.
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    /// git ran past its time limit and was killed.
    #[error("git {command} took longer than {} s", .after.as_secs_f32())]
    Timeout {
        /// The git command (`clone`, `ls-remote`, ...).
        command: String,
        /// The limit.
        after: Duration,
    },
    /// git exited with an error: the last lines it wrote to stderr.
    #[error("{message}")]
    Failed {
        /// The git command.
        command: String,
        /// The last lines of stderr (or the exit status when it wrote none).
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The transports git may use: network ones only.
const ALLOWED_PROTOCOLS: &str = "http:https:ssh:git";
/// ssh never asks (no keyboard) and trusts a host it meets the first time
/// (later changes of its key are refused).
const SSH_COMMAND: &str = "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new";

/// Configuration handed to git in its environment only (secrets: never in
/// an argument, a URL, a file or a log). `Debug` shows the keys, never the
/// values.
#[derive(Clone, Default)]
pub struct Credentials {
    entries: Vec<(String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(k, _)| format!("{k}=<redacted>")))
            .finish()
    }
}

impl Credentials {
    /// No credentials.
    pub fn none() -> Self {
        Self::default()
    }

    /// An HTTP header sent to `origin` (`scheme://host[:port]/`) only, e.g.
    /// `Authorization: Basic ...`.
    pub fn http_header(origin: &str, header: String) -> Self {
        Self {
            entries: vec![(format!("http.{origin}.extraHeader"), header)],
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `GIT_CONFIG_*` environment that carries the entries.
    fn env(&self) -> Vec<(String, String)> {
        if self.entries.is_empty() {
            return Vec::new();
        }
        let mut env = vec![(
            "GIT_CONFIG_COUNT".to_owned(),
            self.entries.len().to_string(),
        )];
        for (i, (key, value)) in self.entries.iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), key.clone()));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), value.clone()));
        }
        env
    }
}

/// The commit a clone was checked out at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// Its full sha.
    pub sha: String,
    /// The first line of its message.
    pub subject: String,
}

/// A way to run git: a time limit per run and the credentials to use.
#[derive(Debug, Clone)]
pub struct Git {
    timeout: Duration,
    credentials: Credentials,
}

impl Git {
    /// git with `timeout` per run and no credentials.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            credentials: Credentials::none(),
        }
    }

    /// The same, with `credentials`.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// The head commit of `branch` (or of `HEAD` without one) at `url`, by
    /// `git ls-remote`; `None` when the remote has no such ref.
    pub async fn ls_remote(&self, url: &str, branch: Option<&str>) -> Result<Option<String>> {
        let reference = match branch {
            Some(b) => format!("refs/heads/{b}"),
            None => "HEAD".into(),
        };
        refuse_option("URL", url)?;
        let out = self
            .run(None, &["ls-remote", "--", url, &reference])
            .await?;
        Ok(out.lines().find_map(|l| {
            let (sha, name) = l.split_once('\t')?;
            (name == reference).then(|| sha.to_owned())
        }))
    }

    /// Clones `url` into `into` (which must not exist yet) and checks out
    /// `commit`, or the head of `branch` (or the remote's `HEAD`) without
    /// one. Without a commit the clone is shallow (depth 1); a server that
    /// cannot serve a shallow clone (dumb HTTP) gets a full one.
    pub async fn clone_at(
        &self,
        url: &str,
        branch: Option<&str>,
        commit: Option<&str>,
        into: &Path,
    ) -> Result<Checkout> {
        refuse_option("URL", url)?;
        if let Some(commit) = commit {
            refuse_option("commit", commit)?;
        }
        let parent = into.parent().unwrap_or(Path::new("."));
        let target = into.to_string_lossy().into_owned();
        let mut args = vec!["clone", "--quiet", "--no-tags"];
        if commit.is_none() {
            args.extend(["--depth", "1"]);
        }
        if let Some(branch) = branch {
            args.extend(["--branch", branch]);
        }
        args.extend(["--", url, target.as_str()]);
        let mut cloned = self.run(Some(parent), &args).await;
        if matches!(&cloned, Err(Error::Failed { message, .. }) if message.contains("shallow")) {
            let _ = tokio::fs::remove_dir_all(into).await;
            args.retain(|a| *a != "--depth" && *a != "1");
            cloned = self.run(Some(parent), &args).await;
        }
        cloned?;
        if let Some(commit) = commit {
            self.run(Some(into), &["checkout", "--quiet", "--detach", commit])
                .await?;
        }
        let sha = self.run(Some(into), &["rev-parse", "HEAD"]).await?;
        let subject = self.run(Some(into), &["log", "-1", "--format=%s"]).await?;
        Ok(Checkout {
            sha: sha.trim().to_owned(),
            subject: subject.trim().to_owned(),
        })
    }

    /// Runs git (hardened, see the crate doc) in `dir`; answers stdout.
    async fn run(&self, dir: Option<&Path>, args: &[&str]) -> Result<String> {
        let command = args.first().copied().unwrap_or("").to_owned();
        let mut git = Command::new("git");
        git.args([
            "-c",
            "protocol.file.allow=never",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("SSH_ASKPASS", "true")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_CONFIG_PARAMETERS")
        .envs(self.credentials.env())
        .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
        .env("GIT_SSH_COMMAND", SSH_COMMAND)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        if self.credentials.is_empty() {
            git.env_remove("GIT_CONFIG_COUNT");
        }
        if let Some(dir) = dir {
            git.current_dir(dir);
        }
        let output = tokio::time::timeout(self.timeout, git.output())
            .await
            .map_err(|_| Error::Timeout {
                command: command.clone(),
                after: self.timeout,
            })?
            .map_err(Error::Spawn)?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        Err(Error::Failed {
            message: stderr_tail(&output.stderr)
                .unwrap_or_else(|| format!("git {command} exited with {}", output.status)),
            command,
        })
    }
}

/// Refuses an argument git could take for an option.
fn refuse_option(what: &'static str, value: &str) -> Result<()> {
    if value.starts_with('-') {
        return Err(Error::OptionLike {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// The last three non-empty lines of stderr, joined by `; `.
fn stderr_tail(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join("; ");
    (!tail.is_empty()).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_to_the_environment_and_never_to_debug() {
        let c = Credentials::http_header("https://h/", "Authorization: Basic c2VjcmV0".into());
        assert_eq!(
            c.env(),
            [
                ("GIT_CONFIG_COUNT".into(), "1".into()),
                (
                    "GIT_CONFIG_KEY_0".into(),
                    "http.https://h/.extraHeader".into()
                ),
                (
                    "GIT_CONFIG_VALUE_0".into(),
                    "Authorization: Basic c2VjcmV0".into()
                ),
            ]
        );
        let shown = format!("{:?}", Git::new(Duration::from_secs(1)).with_credentials(c));
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(Credentials::none().env().is_empty());
    }

    #[test]
    fn stderr_keeps_the_last_lines() {
        assert_eq!(
            stderr_tail(b"a\n\nb\nc\n  d \n").as_deref(),
            Some("b; c; d")
        );
        assert_eq!(stderr_tail(b"\n \n"), None);
    }

    #[tokio::test]
    async fn option_like_arguments_are_refused_before_git_runs() {
        let git = Git::new(Duration::from_secs(1));
        let e = git.ls_remote("--upload-pack=touch /tmp/x", None).await;
        assert!(
            matches!(e, Err(Error::OptionLike { what: "URL", .. })),
            "{e:?}"
        );
        let dir = std::env::temp_dir().join("lb-git-never-created");
        let e = git.clone_at("https://h/r", None, Some("-x"), &dir).await;
        assert!(
            matches!(e, Err(Error::OptionLike { what: "commit", .. })),
            "{e:?}"
        );
    }
}
