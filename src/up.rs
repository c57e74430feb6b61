//! `lb up` and `lb api`: open the store, create the first user, serve the API
//! until a signal.

use std::net::SocketAddr;

use anyhow::Context;
use lb_api::accounts::{ensure_admin, AdminOutcome};
use lb_store::{Backend, Shared};

use crate::supervise::Ended;

/// What `lb up` runs.
pub struct Options {
    /// Where the store is.
    pub backend: Backend,
    /// What one etcd transaction may carry.
    pub limits: lb_store::Limits,
    /// API settings.
    pub api: lb_api::Config,
    /// The builder and registry.
    pub builder: lb_builder::Config,
    /// The data dir (the local node keeps its credential under it).
    pub data_dir: std::path::PathBuf,
    /// Whether to run a local node.
    pub local_node: bool,
    /// The local node's disk settings.
    pub node_disk: lb_node::DiskSettings,
    /// Grace before a lost node's replicas move.
    pub node_grace: std::time::Duration,
    /// Whether to run the scheduler.
    pub scheduler: bool,
    /// The ingress, when it runs here.
    pub ingress: Option<lb_ingress::Config>,
}

/// Opens the store; its errors name the endpoints or the file.
pub async fn open_store(backend: &Backend, limits: lb_store::Limits) -> anyhow::Result<Shared> {
    Ok(lb_store::open_with(backend, limits).await?)
}

/// Runs the control plane on this machine.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let node_dir = options.data_dir.join("node");
    let local = options.local_node.then_some((node_dir, options.node_disk));
    let scheduler = options.scheduler.then(|| lb_scheduler::Config {
        node_grace: options.node_grace,
        ..Default::default()
    });
    serve(
        options.backend,
        options.limits,
        options.api,
        local,
        scheduler,
        Some(options.builder),
        options.ingress,
    )
    .await
}

/// Joins (first start) and runs this machine's node inside `lb up`. Without
/// a reachable Docker engine lb runs on, without a local node.
async fn start_local_node(
    store: &Shared,
    config: &lb_api::Config,
    addr: SocketAddr,
    dir: std::path::PathBuf,
    disk: lb_node::DiskSettings,
    shutdown: crate::shutdown::Shutdown,
) -> anyhow::Result<()> {
    let name = lb_node::host::hostname();
    let join_token = if dir.join("node.json").exists() {
        None
    } else {
        // A crash between joining and saving the credential leaves a node of
        // this name that nobody can connect as. lb up owns its local node:
        // forget that one and join afresh.
        lb_api::handlers::nodes::forget_by_name(store.as_ref(), &config.keys, &name).await?;
        let (token, _) =
            lb_api::handlers::nodes::issue_join_token(store.as_ref(), &config.keys, 600).await?;
        Some(token)
    };
    let node = lb_node::Config {
        api: format!("http://{addr}"),
        join_token,
        name: Some(name),
        labels: Vec::new(),
        data_dir: dir,
        address: Some(addr.ip().to_string()),
        port_range: 30000..=32767,
        routes: None,
        disk,
    };
    let stop = shutdown.clone();
    crate::supervise::spawn("node", shutdown, move |_| {
        let (node, stop) = (node.clone(), stop.clone());
        async move {
            match lb_node::run(node, stop.wait()).await {
                Ok(()) => Ok(Ended::Stopped),
                // No Docker engine here: lb runs without a local node.
                Err(err @ lb_node::Error::Docker(_)) => {
                    Ok(Ended::Off(format!("no local node: {err}")))
                }
                Err(err) => Err(err.into()),
            }
        }
    });
    Ok(())
}

/// Runs the API role until a signal.
pub async fn run_api(
    backend: Backend,
    limits: lb_store::Limits,
    config: lb_api::Config,
) -> anyhow::Result<()> {
    serve(backend, limits, config, None, None, None, None).await
}

/// Runs the API, and optionally the scheduler and a local node keeping its
/// credential in `node_dir`.
async fn serve(
    backend: Backend,
    limits: lb_store::Limits,
    config: lb_api::Config,
    node_dir: Option<(std::path::PathBuf, lb_node::DiskSettings)>,
    scheduler: Option<lb_scheduler::Config>,
    builder: Option<lb_builder::Config>,
    ingress: Option<lb_ingress::Config>,
) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signals().context("cannot install signal handlers")?;
    let store = open_store(&backend, limits).await?;
    // Bind before anything is written, so a port in use changes nothing.
    let server = lb_api::Server::bind(&config, store.clone(), shutdown.clone().wait()).await?;
    let builder = match builder {
        Some(mut config) => {
            // Registry clients get tokens from this API: name the address it
            // really listens on (a free port, or 127.0.0.1 for 0.0.0.0).
            let mut api = server.addr();
            if api.ip().is_unspecified() {
                api.set_ip([127, 0, 0, 1].into());
            }
            config.api = format!("http://{api}");
            let bound = lb_builder::bind(store.clone(), &config).await?;
            // A restart binds again where the first start did.
            config.registry_listen = bound.addr();
            config.registry_address = bound.address().to_owned();
            Some((bound, config))
        }
        None => None,
    };
    let ingress = match ingress {
        Some(ingress) => Some(
            crate::ingress::start(
                ingress,
                server.context().routes.subscribe(),
                server.context().metrics.registry(),
                shutdown.clone().wait(),
            )
            .await?,
        ),
        None => None,
    };
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
    let addr = server.addr();
    if let Some(scheduler) = scheduler {
        let (store, stop) = (store.clone(), shutdown.clone());
        crate::supervise::spawn("scheduler", shutdown.clone(), move |_| {
            let (store, scheduler, stop) = (store.clone(), scheduler.clone(), stop.clone());
            async move {
                lb_scheduler::run(store, scheduler, stop.wait()).await?;
                Ok(Ended::Stopped)
            }
        });
    }
    if let Some((bound, config)) = builder {
        println!("registry: {}", bound.addr());
        let (store, stop) = (store.clone(), shutdown.clone());
        let mut first = Some(bound);
        crate::supervise::spawn("builder", shutdown.clone(), move |_| {
            let (store, config, stop) = (store.clone(), config.clone(), stop.clone());
            let bound = first.take();
            async move {
                let bound = match bound {
                    Some(bound) => bound,
                    None => lb_builder::bind(store, &config).await?,
                };
                lb_builder::run(bound, stop.wait()).await?;
                Ok(Ended::Stopped)
            }
        });
    }
    if let Some((dir, disk)) = node_dir {
        start_local_node(&store, &config, addr, dir, disk, shutdown.clone()).await?;
    }
    println!("lb is up: http://{addr}/ (API at /api/v1)");
    // The API server cannot be restarted (its address is bound once): a
    // panic in it ends lb with a non-zero exit.
    if let Err(err) = tokio::spawn(server.run()).await {
        anyhow::bail!("the API server failed: {err}");
    }
    if let Some(ingress) = ingress {
        let _ = ingress.wait().await;
    }
    drop(store);
    tracing::info!("stopped");
    Ok(())
}
