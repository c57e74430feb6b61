//! The scheduler: a level-triggered controller that watches services, nodes
//! and replicas in the store and places replicas on nodes by resources.
//!
//! Not built yet (issue 5): [`run`] refuses to start rather than pretend.

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This role is not implemented yet.
    #[error("the scheduler is not implemented yet")]
    NotImplemented,
}

/// Runs the scheduler until shutdown.
pub async fn run(_store: lb_pkg::store::Shared) -> Result<(), Error> {
    Err(Error::NotImplemented)
}
