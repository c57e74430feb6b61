//! `lb-bench node`: how fast a replica starts through lb — from the
//! placement written to the store to its status `running`, through the API
//! and a real `lb node` process — beside raw `docker create` + `start` of the
//! same image and command in the same run; and the node daemon's resident
//! memory with the replicas running.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bollard::container::{Config, CreateContainerOptions, RemoveContainerOptions};
use futures::StreamExt;
use lb_pkg::keys::Keys;
use lb_pkg::model::{Assignment, Replica, ReplicaState, ReplicaStatus};
use lb_pkg::store::embedded::EmbeddedStore;
use lb_pkg::store::{Event, Op, Shared, StoreExt, Txn};

const IMAGE: &str = "lb-test-busybox:1";
const COMMAND: [&str; 3] = ["/bin/busybox", "sleep", "3600"];

fn build_image() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::copy("/bin/busybox", dir.path().join("busybox"))
        .context("Debian's busybox-static at /bin/busybox")?;
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\n",
    )?;
    let out = Command::new("docker")
        .args(["build", "-q", "-t", IMAGE])
        .arg(dir.path())
        .output()?;
    if !out.status.success() {
        bail!("docker build: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i]
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the benchmark with `replicas` replicas; `lb` is the `lb` binary.
pub async fn run(replicas: usize, lb: &str) -> anyhow::Result<()> {
    build_image()?;
    let dir = tempfile::tempdir()?;
    let store: Shared = Arc::new(EmbeddedStore::open_dir(&dir.path().join("store")).await?);
    let keys = Keys::default();
    let config = lb_api::Config::new("127.0.0.1:0".parse()?, lb_api::server::Signup::Closed);
    let server = lb_api::Server::bind(&config, store.clone(), std::future::pending()).await?;
    let api = format!("http://{}", server.addr());
    tokio::spawn(server.run());
    let (token, _) = lb_api::handlers::nodes::issue_join_token(store.as_ref(), &keys, 600).await?;
    let node_dir = dir.path().join("node");
    let mut child = Command::new(lb)
        .args([
            "node",
            "--api",
            &api,
            "--join-token",
            &token,
            "--name",
            "bench-node",
            "--data-dir",
        ])
        .arg(&node_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {lb} node"))?;
    let pid = child.id();
    let result = measure(&store, &keys, &node_dir, replicas, pid).await;
    let _ = child.kill();
    let _ = child.wait();
    // Whatever happened, leave no container behind.
    let docker = bollard::Docker::connect_with_local_defaults()?;
    let ids = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=lb.bench"])
        .output()?;
    for id in String::from_utf8_lossy(&ids.stdout).lines() {
        let _ = docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
    }
    result
}

async fn measure(
    store: &Shared,
    keys: &Keys,
    node_dir: &std::path::Path,
    replicas: usize,
    pid: u32,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let nid = loop {
        if let Ok(bytes) = std::fs::read(node_dir.join("node.json")) {
            let v: serde_json::Value = serde_json::from_slice(&bytes)?;
            let nid = v["id"].as_str().context("node id")?.to_owned();
            if store.get(&keys.node_alive(&nid)).await?.is_some() {
                break nid;
            }
        }
        if Instant::now() > deadline {
            bail!("the node did not connect within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut watch = store.watch(&keys.projects(), 0).await?;
    let mut lb_times = Vec::new();
    let mut placed = Vec::new();
    for i in 0..replicas {
        let rid = lb_pkg::ids::new_id();
        let a = Assignment {
            replica: rid.clone(),
            project: "BENCHPROJECT".into(),
            service: "BENCHSERVICE".into(),
            service_name: "bench".into(),
            generation: 1,
            restart_generation: 0,
            image: IMAGE.into(),
            memory: 16,
            cpu: 0.05,
            env: Default::default(),
            command: Some(COMMAND.iter().map(|s| s.to_string()).collect()),
            ports: Vec::new(),
            volumes: Vec::new(),
            running: true,
            stop_timeout: 10,
        };
        let replica = Replica {
            id: rid.clone(),
            project: a.project.clone(),
            service: a.service.clone(),
            node: Some(nid.clone()),
            image: IMAGE.into(),
            generation: 1,
            reason: None,
            created: i as i64,
        };
        let started = Instant::now();
        let txn = Txn::new()
            .then(Op::put(
                keys.replica(&a.project, &a.service, &rid),
                serde_json::to_vec(&replica)?,
            ))
            .then(Op::put(
                keys.node_replica(&nid, &rid),
                serde_json::to_vec(&a)?,
            ));
        store.txn(txn).await?;
        let status_key = keys.replica_status(&a.project, &a.service, &rid);
        'wait: loop {
            let changes = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .context("no status within 30 s")?
                .context("watch ended")??;
            for event in changes.events {
                if let Event::Put(kv) = event {
                    if kv.key == status_key {
                        let status: ReplicaStatus = serde_json::from_slice(&kv.value)?;
                        if status.state == ReplicaState::Running {
                            break 'wait;
                        }
                    }
                }
            }
        }
        lb_times.push(started.elapsed());
        placed.push(rid);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mib(pid);

    // Baseline: the same image and command, created and started directly.
    let docker = bollard::Docker::connect_with_local_defaults()?;
    let mut raw_times = Vec::new();
    for i in 0..replicas {
        let started = Instant::now();
        let config = Config {
            image: Some(IMAGE.to_owned()),
            cmd: Some(COMMAND.iter().map(|s| s.to_string()).collect()),
            labels: Some([("lb.bench".to_owned(), "1".to_owned())].into()),
            host_config: Some(bollard::models::HostConfig {
                memory: Some(16 << 20),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!("lb-bench-raw-{}-{i}", std::process::id());
        let id = docker
            .create_container(
                Some(CreateContainerOptions {
                    name,
                    platform: None,
                }),
                config,
            )
            .await?
            .id;
        docker.start_container::<String>(&id, None).await?;
        raw_times.push(started.elapsed());
    }

    // Let the node remove its replicas.
    for rid in &placed {
        store.delete(&keys.node_replica(&nid, rid)).await?;
    }
    let (lb50, lb99) = (
        percentile(&mut lb_times, 0.5),
        percentile(&mut lb_times, 0.99),
    );
    let (raw50, raw99) = (
        percentile(&mut raw_times, 0.5),
        percentile(&mut raw_times, 0.99),
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("lb-bench node: {replicas} replicas started one after another");
    println!(
        "lb (store write -> running)   p50 {:>8.1} ms   p99 {:>8.1} ms",
        ms(lb50),
        ms(lb99)
    );
    println!(
        "docker create + start (raw)   p50 {:>8.1} ms   p99 {:>8.1} ms",
        ms(raw50),
        ms(raw99)
    );
    println!(
        "ratio p50 {:.2}x  p99 {:.2}x   (target <= 1.3x)",
        ms(lb50) / ms(raw50),
        ms(lb99) / ms(raw99)
    );
    println!("lb node RSS with {replicas} replicas running: {rss:.1} MiB   (target <= 20 MiB)");
    // Wait for the removals so the next run starts clean.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=lb.node={nid}")])
            .output()?;
        if out.stdout.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
