//! The API server: the only door to lb for users, the CLI, the web UI and
//! node daemons, and the only crate that speaks HTTP to them (warp).
//!
//! `filters` maps paths to `handlers`; `models` are the bodies on the wire;
//! `error` turns every failure into the JSON error body; `auth` resolves
//! credentials; `openapi` describes every route; `metrics` counts them.
//! Controllers run beside the routes: `vendors::controller` (webhooks),
//! `ingress` (the route table), `stacks` (stack builds applied).

// The OpenAPI document's schemas are one long `json!` literal.
#![recursion_limit = "256"]

pub mod accounts;
pub mod auth;
pub mod backup;
pub mod config;
pub mod context;
pub mod error;
pub mod filters;
pub mod handlers;
pub mod ingress;
pub mod json;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod ops;
pub mod peers;
pub mod roles;
pub mod server;
pub mod session;
pub mod stacks;
pub mod streams;
pub mod ui;
pub mod vendors;

pub use config::Config;
pub use server::Server;
