//! The source checkout of a build, behind the [`Sources`] trait: [`LbGit`]
//! clones through `lb-git` (the one hardened way lb runs git), with the
//! project owner's vendor token as [`lb_git::Credentials`] when the source
//! names a vendor; the worker's tests use a fake that writes files.

use std::path::Path;
use std::time::Duration;

use lb_git::{Checkout, Credentials, Git};

/// Where a build's source comes from.
#[async_trait::async_trait]
pub trait Sources: Send + Sync {
    /// Checks out `url` into `into` (which does not exist yet): `commit`,
    /// or the head of `branch` (or the remote's `HEAD`).
    async fn checkout(
        &self,
        credentials: Credentials,
        url: &str,
        branch: Option<&str>,
        commit: Option<&str>,
        into: &Path,
    ) -> Result<Checkout, String>;
}

/// [`Sources`] with real git, through `lb-git`.
pub struct LbGit {
    /// The longest one git run may take.
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl Sources for LbGit {
    async fn checkout(
        &self,
        credentials: Credentials,
        url: &str,
        branch: Option<&str>,
        commit: Option<&str>,
        into: &Path,
    ) -> Result<Checkout, String> {
        let git = Git::new(self.timeout).with_credentials(credentials);
        match git.clone_at(url, branch, commit, into).await {
            Ok(checkout) => Ok(checkout),
            Err(lb_git::Error::Failed { command, message }) if command == "checkout" => {
                Err(format!(
                    "commit {} not found in {url}: {message}",
                    commit.unwrap_or("HEAD")
                ))
            }
            Err(e) => Err(format!("cannot clone {url}: {e}")),
        }
    }
}
