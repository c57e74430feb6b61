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
}
