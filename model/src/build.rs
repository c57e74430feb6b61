//! Builds: one run of the builder over a service's source.

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
