//! The builder: claims queued builds, clones the source, builds the image with
//! the Docker engine and pushes it to lb's private OCI registry, which this
//! crate also serves.
//!
//! Not built yet (issue 6): [`run`] refuses to start rather than pretend.

/// Errors of the builder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This role is not implemented yet.
    #[error("the builder is not implemented yet")]
    NotImplemented,
}

/// Runs the builder and the registry until shutdown.
pub async fn run(_store: lb_pkg::store::Shared) -> Result<(), Error> {
    Err(Error::NotImplemented)
}
