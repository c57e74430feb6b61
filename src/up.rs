//! `lb up` and `lb api`: open the store, create the first user, serve the API
//! until a signal.

use std::net::SocketAddr;

use anyhow::Context;
use lb_api::accounts::{ensure_admin, AdminOutcome};
use lb_pkg::store::{Backend, Shared};

/// What `lb up` runs.
pub struct Options {
    /// Where the store is.
    pub backend: Backend,
    /// API settings.
    pub api: lb_api::Config,
    /// Registry address (served once the builder issue lands).
    pub registry_listen: SocketAddr,
}

/// Opens the store; its errors name the endpoints or the file.
pub async fn open_store(backend: &Backend) -> anyhow::Result<Shared> {
    Ok(lb_pkg::store::open(backend).await?)
}

/// Runs the control plane on this machine.
pub async fn run(options: Options) -> anyhow::Result<()> {
    tracing::debug!(registry = %options.registry_listen, "registry comes with the builder");
    run_api(options.backend, options.api).await
}

/// Runs the API role until a signal.
pub async fn run_api(backend: Backend, config: lb_api::Config) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signals().context("cannot install signal handlers")?;
    let store = open_store(&backend).await?;
    // Bind before anything is written, so a port in use changes nothing.
    let server = lb_api::Server::bind(&config, store.clone(), shutdown.clone().wait()).await?;
    let password = std::env::var("LB_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    match ensure_admin(store.as_ref(), &config.keys, password)
        .await
        .context("cannot create the admin user")?
    {
        AdminOutcome::Created {
            password,
            generated: true,
        } => {
            println!("created user admin with password: {password}");
            println!("(shown once; set LB_ADMIN_PASSWORD to choose it)");
        }
        AdminOutcome::Created {
            generated: false, ..
        } => {
            println!("created user admin with the password from LB_ADMIN_PASSWORD");
        }
        AdminOutcome::Existed => {}
    }
    println!("lb is up: http://{}/ (API at /api/v1)", server.addr());
    server.run().await;
    drop(store);
    tracing::info!("stopped");
    Ok(())
}
