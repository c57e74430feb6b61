//! The build worker: claims queued builds and runs them, one room per part
//! of the job.
//!
//! - [`queue`]: claiming builds (one transaction checking the queue entry
//!   and the build record, so no build runs twice), the builder's lease and
//!   the sweep failing builds whose builder died;
//! - [`run`]: one build's steps in order, its status record, timeout and
//!   cancel;
//! - [`git`]: the source checkout (through `lb-git`);
//! - [`context`]: the Dockerfile and the build context tar;
//! - [`dockerfile`]: what a Dockerfile may reach (base images, `ADD` URLs);
//! - [`ignore`]: `.dockerignore`, what stays out of the context;
//! - [`image`]: what the builder asks of Docker ([`ImageBuilder`]: build,
//!   push, remove), with the bollard implementation;
//! - [`stack`]: a stack's build, its compose file read (nothing built);
//! - [`deploy`]: pointing the service at the pushed image, pruning old tags;
//! - [`log`]: the build log's chunk buffer.

pub mod context;
pub mod deploy;
pub mod dockerfile;
pub mod fetch;
pub mod git;
pub mod ignore;
pub mod image;
pub mod log;
pub mod prune;
pub mod queue;
pub mod run;
pub mod stack;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use lb_model::keys::Keys;
use lb_model::{Build, BuildStatus};
use lb_store::registry::Signer;
use lb_store::Shared;

pub use git::{LbGit, Sources};
pub use image::{BollardImages, ImageBuilder};

use crate::Config;

/// Why a build stopped early.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// It failed, for this reason (the build record's message).
    Failed(String),
    /// It was canceled (the record says so already).
    Canceled,
}

impl From<String> for Stop {
    fn from(m: String) -> Self {
        Stop::Failed(m)
    }
}

/// A build step's outcome.
pub(crate) type Step<T> = Result<T, Stop>;

/// A builder: claims and runs builds.
pub struct Worker {
    store: Shared,
    keys: Keys,
    config: Config,
    registry: String,
    signer: Arc<Signer>,
    images: Arc<dyn ImageBuilder>,
    sources: Arc<dyn Sources>,
    id: String,
    /// Told when a build ends and its permit is free again.
    freed: tokio::sync::Notify,
}

impl Worker {
    /// A worker pushing to the registry at `registry` (host:port) with the
    /// machine's Docker engine.
    pub async fn new(
        store: Shared,
        config: Config,
        registry: String,
        signer: Arc<Signer>,
    ) -> Result<Self, String> {
        let images = BollardImages::connect()?;
        let sources = LbGit {
            timeout: config.build_timeout,
        };
        Ok(Self::with_parts(
            store,
            config,
            registry,
            signer,
            Arc::new(images),
            Arc::new(sources),
        ))
    }

    /// A worker with the given image builder and source checkouts.
    pub fn with_parts(
        store: Shared,
        config: Config,
        registry: String,
        signer: Arc<Signer>,
        images: Arc<dyn ImageBuilder>,
        sources: Arc<dyn Sources>,
    ) -> Self {
        Self {
            keys: config.keys.clone(),
            store,
            config,
            registry,
            signer,
            images,
            sources,
            id: lb_model::ids::new_id(),
            freed: tokio::sync::Notify::new(),
        }
    }
}

/// Ends a build record with a final status and message.
pub(crate) fn finish_record(build: &mut Build, status: BuildStatus, message: String) {
    let at = lb_model::now();
    if let Some(step) = build.steps.last_mut() {
        step.finished.get_or_insert(at);
    }
    build.status = status;
    build.message = message;
    build.finished = Some(at);
}

pub(crate) use lb_store::encode;

/// `<pid>.<sid>.<number>` (a queue entry's or a claim's name) parsed.
pub(crate) fn parse_build_name(name: &str) -> Option<(&str, &str, u64)> {
    let mut parts = name.split('.');
    let (Some(pid), Some(sid), Some(number)) = (
        parts.next(),
        parts.next(),
        parts.next().and_then(|n| n.parse::<u64>().ok()),
    ) else {
        return None;
    };
    Some((pid, sid, number))
}
