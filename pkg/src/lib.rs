//! Shared library of lb: the data models with their validation, the key tree
//! (the only place store keys are spelled), and the store interface with its
//! two backends (etcd and the embedded single-file store).
//!
//! Nothing here speaks HTTP or Docker; models do no IO.

pub mod ids;
pub mod keys;
pub mod model;
pub mod protocol;
pub mod registry;
pub mod secrets;
pub mod store;

#[cfg(feature = "test-support")]
pub mod testing;
