//! The API server: the only door to lb for users, the CLI, the web UI and
//! node daemons. It is the only crate that speaks HTTP to them (warp).
//!
//! Today it serves `/healthz` and `/readyz` and creates the first user; the
//! REST routes come with the accounts/projects issue.

pub mod accounts;
pub mod server;

pub use server::{Config, Server};
