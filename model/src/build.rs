//! Builds: one run of the builder over a service's source.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Where a build is. Statuses follow one another in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    /// Waiting for a builder.
    Queued,
    /// Cloning the repository.
    Cloning,
    /// Writing the Dockerfile and context.
    Preparing,
    /// Installing the app's dependencies.
    InstallingDependencies,
    /// Building the image.
    Building,
    /// Pushing to the registry.
    Pushing,
    /// Done; the image is in the registry.
    Succeeded,
    /// Stopped by an error.
    Failed,
    /// Stopped by a user.
    Canceled,
}

impl BuildStatus {
    /// Whether the build has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

/// Bytes of a build's output kept: the builder drops the oldest chunks of
/// the log (`build-logs/<n>/<seq>`) beyond this.
pub const BUILD_LOG_MAX: usize = 256 << 10;

/// The line shown where output was dropped from the front of a build log.
pub const BUILD_LOG_DROPPED: &str =
    "[earlier output dropped: a build log keeps its newest 256 KiB]\n";

/// A build log from its chunks, given as (chunk number, bytes) in order:
/// the bytes joined, after [`BUILD_LOG_DROPPED`] when the first chunk kept
/// is not chunk 0 (the builder dropped the ones before it).
pub fn join_log_chunks<'a>(chunks: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (seq, bytes)) in chunks.into_iter().enumerate() {
        if i == 0 && seq != 0 {
            out.extend_from_slice(BUILD_LOG_DROPPED.as_bytes());
        }
        out.extend_from_slice(bytes);
    }
    out
}

/// One timed step of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStep {
    /// The status the step stands for.
    pub name: BuildStatus,
    /// When it began.
    pub started: Timestamp,
    /// When it ended, if it has.
    #[serde(default)]
    pub finished: Option<Timestamp>,
}

/// A build, at `/lb/projects/<pid>/services/<sid>/builds/<number>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// Per-service number, from 1.
    pub number: u64,
    /// Where it is.
    pub status: BuildStatus,
    /// The commit built (requested, or resolved from the branch).
    #[serde(default)]
    pub commit: Option<String>,
    /// The image reference pushed.
    #[serde(default)]
    pub image: Option<String>,
    /// The manifest digest pushed.
    #[serde(default)]
    pub digest: Option<String>,
    /// Commit message or failure reason.
    #[serde(default)]
    pub message: String,
    /// The steps so far.
    #[serde(default)]
    pub steps: Vec<BuildStep>,
    /// When it was queued.
    pub created: Timestamp,
    /// When it ended.
    #[serde(default)]
    pub finished: Option<Timestamp>,
    /// Who or what asked for it: a user's name, `webhook (github push)`,
    /// `poll` (empty in records older than it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
    /// A stack's build ([`crate::Source::compose`]): the file read at the
    /// commit, for the API to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackFiles>,
    /// A stack build's apply: claimed by one API server, then its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<StackApply>,
}

/// The most bytes a stack build reads: its file and env files together.
pub const STACK_MAX: usize = 256 << 10;

/// What a stack's build read from the repository at its commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackFiles {
    /// The file's path in the repository (`source.compose`).
    pub file: String,
    /// Its text.
    pub text: String,
    /// The env files a compose file names, by the path written in it
    /// (relative to the compose file); a file not in the repository is
    /// left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_files: BTreeMap<String, String>,
}

/// A stack build's apply to its project, by an API server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackApply {
    /// When an API server claimed it.
    pub started: Timestamp,
    /// When it ended (`None` while it runs).
    #[serde(default)]
    pub finished: Option<Timestamp>,
    /// The changes made, in order (`created web`, `updated db`).
    #[serde(default)]
    pub done: Vec<String>,
    /// The builds started of the services built from the same repository,
    /// pinned to the stack build's commit (`web #3`).
    #[serde(default)]
    pub builds: Vec<String>,
    /// Why the apply (or a build it started) failed.
    #[serde(default)]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_chunks_join_in_order_with_a_marker_for_dropped_output() {
        let check = |chunks: &[(u64, &str)], expect: &str| {
            let joined = join_log_chunks(chunks.iter().map(|(s, b)| (*s, b.as_bytes())));
            assert_eq!(String::from_utf8(joined).unwrap(), expect, "{chunks:?}");
        };
        check(&[], "");
        check(&[(0, "a\n"), (1, "b\n")], "a\nb\n");
        check(
            &[(3, "d\n"), (4, "e\n")],
            &format!("{BUILD_LOG_DROPPED}d\ne\n"),
        );
    }
}
