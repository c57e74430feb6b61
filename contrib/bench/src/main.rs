//! `lb-bench api`: the REST API's throughput and latency beside the raw
//! store's, measured in the same run on the same machine, with the ratio.
//!
//! It opens the store (embedded in a temp dir, or `--etcd URL`), measures raw
//! store gets and puts, starts the API in this process on a free loopback
//! port over the same store, and drives `GET` and `PATCH` of services with a
//! keep-alive HTTP client: first as fast as it goes (closed loop), then `GET`
//! at a fixed rate (open loop) for the latency at that rate. Not a test: it
//! prints figures and never fails on them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use lb_store::{Shared, StoreExt};
use serde_json::json;

mod node;
mod scheduler;
mod store_growth;

#[derive(Parser)]
#[command(name = "lb-bench", about = "lb benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// REST API GET/PATCH of services against the raw store's get/put.
    Api {
        /// etcd endpoints; without it the embedded store in a temp dir.
        #[arg(long, value_delimiter = ',')]
        etcd: Vec<String>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Requests in flight in the closed-loop runs.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Requests per second of the fixed-rate GET run.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
    },
    /// Placements per second with hollow nodes beside the raw write limit.
    Scheduler {
        /// Hollow nodes.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Replicas in all.
        #[arg(long, default_value_t = 10_000)]
        replicas: usize,
        /// etcd endpoints; without it the embedded store in a temp dir.
        #[arg(long, value_delimiter = ',')]
        etcd: Vec<String>,
    },
    /// The embedded store's file size under steady churn, over time.
    StoreGrowth {
        /// Updates per second.
        #[arg(long, default_value_t = 50)]
        rate: u64,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 3600)]
        seconds: u64,
        /// Keys updated in turn.
        #[arg(long, default_value_t = 100)]
        keys: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 400)]
        value_bytes: usize,
        /// Seconds between size reports.
        #[arg(long, default_value_t = 60)]
        every: u64,
        /// Store directory (default: a temp dir, removed at the end).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Replica start latency through lb beside raw docker create + start,
    /// and the node daemon's memory.
    Node {
        /// Replicas to start.
        #[arg(long, default_value_t = 50)]
        replicas: usize,
        /// The `lb` binary to run as the node.
        #[arg(long, default_value = "target/release/lb")]
        lb: String,
    },
}

/// Latencies and count of one run.
struct Run {
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort();
        let i =
            ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[i]
    }
}

/// Runs `op` from `concurrency` tasks for `duration`, as fast as it goes.
async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, op: F) -> Run
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, stop, counter) = (op.clone(), stop.clone(), counter.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while !stop.load(Ordering::Relaxed) {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    if op(n).await {
                        latencies.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut run = Run {
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        let (latencies, errors) = task.await.expect("bench task");
        run.errors += errors;
        run.latencies.extend(latencies);
    }
    run.elapsed = started.elapsed();
    run.ops = run.latencies.len() as u64;
    run
}

/// Starts `op` at a fixed `rate` per second for `duration` (open loop: a slow
/// answer does not delay the next request), and records each latency.
async fn open_loop<F, Fut>(rate: u64, duration: Duration, op: F) -> Run
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let total = rate * duration.as_secs();
    let mut handles = Vec::with_capacity(total as usize);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for n in 0..total {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            (op(n).await, t.elapsed())
        }));
    }
    let mut run = Run {
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for handle in handles {
        let (ok, latency) = handle.await.expect("bench task");
        if ok {
            run.latencies.push(latency);
        } else {
            run.errors += 1;
        }
    }
    run.elapsed = started.elapsed();
    run.ops = run.latencies.len() as u64;
    run
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn line(what: &str, run: &mut Run) {
    let (p50, p99) = (run.percentile(0.50), run.percentile(0.99));
    println!(
        "{what:<28} {:>10.0} /s   p50 {:>9}   p99 {:>9}   errors {}",
        run.rate(),
        ms(p50),
        ms(p99),
        run.errors
    );
}

async fn api_bench(
    etcd: Vec<String>,
    seconds: u64,
    concurrency: usize,
    rate: u64,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backend = if etcd.is_empty() {
        lb_store::Backend::Embedded(dir.path().to_path_buf())
    } else {
        lb_store::Backend::Etcd(etcd.clone())
    };
    let store: Shared = lb_store::open(&backend).await.context("open the store")?;
    let duration = Duration::from_secs(seconds);
    let label = if etcd.is_empty() {
        "embedded".to_owned()
    } else {
        format!("etcd {}", etcd.join(","))
    };
    println!("lb-bench api on {label}: {seconds} s per run, {concurrency} in flight, fixed-rate GET at {rate}/s");

    // Baseline: the raw store.
    store.put("/bench/raw/key", vec![b'x'; 600]).await?;
    let s = store.clone();
    let mut raw_get = closed_loop(concurrency, duration, move |_| {
        let s = s.clone();
        async move { s.get("/bench/raw/key").await.is_ok() }
    })
    .await;
    let s = store.clone();
    let mut raw_put = closed_loop(concurrency, duration, move |n| {
        let s = s.clone();
        async move {
            s.put(&format!("/bench/raw/put/{}", n % 1000), vec![b'y'; 600])
                .await
                .is_ok()
        }
    })
    .await;

    // The API over the same store.
    let mut config = lb_api::Config::new("127.0.0.1:0".parse()?, lb_api::server::Signup::Open);
    config.login_limit_per_address = usize::MAX;
    lb_api::accounts::ensure_admin(store.as_ref(), &config.keys, Some("bench-admin".into()))
        .await?;
    let server = lb_api::Server::bind(&config, store.clone(), std::future::pending()).await?;
    let base = format!("http://{}/api/v1", server.addr());
    tokio::spawn(server.run());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency * 2)
        .build()?;
    let user = format!("bench{}", std::process::id());
    client
        .post(format!("{base}/auth/signup"))
        .json(&json!({"username": user, "password": "bench-password"}))
        .send()
        .await?;
    let login: serde_json::Value = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": user, "password": "bench-password"}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["token"].as_str().context("login token")?.to_owned();
    let auth = format!("Bearer {token}");
    let created = client
        .post(format!("{base}/projects"))
        .header("authorization", &auth)
        .json(&json!({"name": "bench"}))
        .send()
        .await?;
    if !created.status().is_success() {
        bail!("cannot create the bench project: {}", created.text().await?);
    }
    for i in 0..concurrency {
        let spec = json!({"name": format!("svc-{i}"), "image": "busybox", "replicas": 2, "memory": 64,
            "ports": [{"container": 8080}], "env": {"MODE": "bench"}});
        let r = client
            .post(format!("{base}/projects/bench/services"))
            .header("authorization", &auth)
            .json(&spec)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("cannot create a bench service: {}", r.text().await?);
        }
    }

    let get = {
        let (client, base, auth) = (client.clone(), base.clone(), auth.clone());
        move |n: u64| {
            let (client, auth) = (client.clone(), auth.clone());
            let url = format!(
                "{base}/projects/bench/services/svc-{}",
                n as usize % concurrency
            );
            async move {
                match client.get(url).header("authorization", auth).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    };
    let mut api_get = closed_loop(concurrency, duration, get.clone()).await;
    let patch = {
        let (client, base, auth) = (client.clone(), base.clone(), auth.clone());
        let next = Arc::new(AtomicU64::new(0));
        move |_: u64| {
            let (client, auth) = (client.clone(), auth.clone());
            // One service per task slot keeps writers off each other's records.
            let slot = next.fetch_add(1, Ordering::Relaxed) as usize % concurrency;
            let url = format!("{base}/projects/bench/services/svc-{slot}");
            async move {
                let body = json!({"description": format!("patched {slot}")});
                match client
                    .patch(url)
                    .header("authorization", auth)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    };
    let mut api_patch = closed_loop(concurrency, duration, patch).await;
    let mut fixed_get = open_loop(rate, duration, get).await;

    println!();
    line("store get (raw)", &mut raw_get);
    line("API GET service", &mut api_get);
    line("store put (raw)", &mut raw_put);
    line("API PATCH service", &mut api_patch);
    line(&format!("API GET service at {rate}/s"), &mut fixed_get);
    println!();
    println!(
        "ratio API GET / store get: {:.1}%   (target ≥ 50%)",
        100.0 * api_get.rate() / raw_get.rate().max(1.0)
    );
    println!(
        "ratio API PATCH / store put: {:.1}%",
        100.0 * api_patch.rate() / raw_put.rate().max(1.0)
    );
    println!(
        "GET p99 at {rate}/s: {}   (target ≤ 5 ms; achieved {:.0}/s)",
        ms(fixed_get.percentile(0.99)),
        fixed_get.rate()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Api {
            etcd,
            seconds,
            concurrency,
            rate,
        } => api_bench(etcd, seconds, concurrency, rate).await,
        Command::Node { replicas, lb } => node::run(replicas, &lb).await,
        Command::StoreGrowth {
            rate,
            seconds,
            keys,
            value_bytes,
            every,
            dir,
        } => {
            store_growth::run(store_growth::Options {
                rate,
                seconds,
                keys,
                value_bytes,
                every,
                dir,
            })
            .await
        }
        Command::Scheduler {
            nodes,
            replicas,
            etcd,
        } => scheduler::run(nodes, replicas, etcd).await,
    }
}
