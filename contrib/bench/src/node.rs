//! `lb-bench node`: how fast replicas start and go through lb, beside Docker
//! itself in the same run. All replicas are placed at once (one store
//! transaction) and each one's latency is from that write to its status
//! `running`, through the API and a real `lb node` process; the baseline is
//! `docker create` + `start` of the same image and command, all at once, from
//! this process over the Docker API. Then every placement is deleted at once
//! and the time until the last container is gone is set beside `docker
//! stop` and `rm` of all at once. The processes ignore SIGTERM, so each stop
//! takes the whole grace period: one after another they would take replicas
//! × grace. Last, the node daemon's resident memory with the replicas
//! running.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bollard::container::{
    Config, CreateContainerOptions, RemoveContainerOptions, StopContainerOptions,
};
use futures::StreamExt;
use lb_model::keys::Keys;
use lb_model::{Assignment, Replica, ReplicaState, ReplicaStatus};
use lb_store::embedded::EmbeddedStore;
use lb_store::{Event, Op, Shared, Txn};

const IMAGE: &str = "lb-test-busybox:1";
/// Ignores SIGTERM: only the kill after the grace period ends it.
const COMMAND: [&str; 4] = [
    "/bin/busybox",
    "sh",
    "-c",
    "trap '' TERM; while true; do /bin/busybox sleep 1; done",
];
/// The stop grace period of every replica, lb's default.
const GRACE: u32 = 10;

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

/// User + system CPU seconds of a process so far.
fn cpu_secs(pid: u32) -> f64 {
    let ticks = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0)
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
    // Raw containers are named lb-bench-raw-*, lb's lb-bench-<replica>.
    let ids = Command::new("docker")
        .args(["ps", "-aq", "--filter", "name=lb-bench-"])
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
    let docker = bollard::Docker::connect_with_local_defaults()?;

    // Baseline first: Docker alone, all at once.
    let (mut raw_times, raw_ids) = raw_start(&docker, replicas).await?;
    let raw_delete = raw_remove(&docker, &raw_ids).await?;

    // Through lb: every placement at once (in transactions within etcd's
    // default of 128 operations).
    let mut watch = store.watch(&keys.projects(), 0).await?;
    let mut ops = Vec::new();
    let mut waiting = std::collections::HashMap::new();
    let mut placed = Vec::new();
    for i in 0..replicas {
        let rid = lb_model::ids::new_id();
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
            stop_timeout: GRACE,
            hardening: Default::default(),
            health: None,
            job: None,
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
        ops.push(Op::put(
            keys.replica(&a.project, &a.service, &rid),
            serde_json::to_vec(&replica)?,
        ));
        ops.push(Op::put(
            keys.node_replica(&nid, &rid),
            serde_json::to_vec(&a)?,
        ));
        waiting.insert(keys.replica_status(&a.project, &a.service, &rid), ());
        placed.push(rid);
    }
    let started = Instant::now();
    write(store, ops).await?;
    let mut lb_times = Vec::new();
    while !waiting.is_empty() {
        let changes = tokio::time::timeout(Duration::from_secs(60), watch.next())
            .await
            .with_context(|| format!("{} replicas not running within 60 s", waiting.len()))?
            .context("watch ended")??;
        for event in changes.events {
            if let Event::Put(kv) = event {
                if !waiting.contains_key(&kv.key) {
                    continue;
                }
                let status: ReplicaStatus = serde_json::from_slice(&kv.value)?;
                if status.state == ReplicaState::Running {
                    waiting.remove(&kv.key);
                    lb_times.push(started.elapsed());
                }
            }
        }
    }
    // Idle: the node's CPU over a few seconds with nothing to do.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mib(pid);
    let (cpu_before, idle_started) = (cpu_secs(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu = (cpu_secs(pid) - cpu_before) / idle_started.elapsed().as_secs_f64() * 100.0;

    // Every placement deleted at once; done when the last container is gone.
    let ops = placed
        .iter()
        .map(|rid| Op::delete(keys.node_replica(&nid, rid)))
        .collect();
    let started = Instant::now();
    write(store, ops).await?;
    let filter = format!("label=lb.node={nid}");
    let deadline = Instant::now() + Duration::from_secs(u64::from(GRACE) * replicas as u64 + 60);
    loop {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()?;
        if out.stdout.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("lb's containers still there after {:?}", started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lb_delete = started.elapsed();

    let (lb50, lb99) = (
        percentile(&mut lb_times, 0.5),
        percentile(&mut lb_times, 0.99),
    );
    let (raw50, raw99) = (
        percentile(&mut raw_times, 0.5),
        percentile(&mut raw_times, 0.99),
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("lb-bench node: {replicas} replicas started at once, then deleted at once");
    println!(
        "start: lb (store write -> running)      p50 {:>8.1} ms   p99 {:>8.1} ms",
        ms(lb50),
        ms(lb99)
    );
    println!(
        "start: docker create + start (raw)      p50 {:>8.1} ms   p99 {:>8.1} ms",
        ms(raw50),
        ms(raw99)
    );
    println!(
        "start ratio p50 {:.2}x (target <= 1.3x)   p99 {:.2}x (target <= 1.5x)",
        ms(lb50) / ms(raw50),
        ms(lb99) / ms(raw99)
    );
    println!(
        "delete, SIGTERM ignored, grace {GRACE} s: lb {:.1} s   docker stop + rm (raw) {:.1} s   \
         (target: lb <= grace + 5 s = {} s; one after another: {} s)",
        lb_delete.as_secs_f64(),
        raw_delete.as_secs_f64(),
        GRACE + 5,
        GRACE as usize * replicas
    );
    println!("lb node RSS with {replicas} replicas running: {rss:.1} MiB   (target <= 20 MiB)");
    println!("lb node CPU while idle with {replicas} replicas running: {idle_cpu:.2}% of a core");
    Ok(())
}

/// Writes operations in transactions of at most 100, all in flight at once.
async fn write(store: &Shared, ops: Vec<Op>) -> anyhow::Result<()> {
    let mut txns = Vec::new();
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let txn = ops.by_ref().take(100).fold(Txn::new(), Txn::then);
        txns.push(store.txn(txn));
    }
    for r in futures::future::join_all(txns).await {
        r?;
    }
    Ok(())
}

/// `docker create` + `start` of `replicas` containers at once: each one's
/// time from the common start, and the ids.
async fn raw_start(
    docker: &bollard::Docker,
    replicas: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<String>)> {
    let started = Instant::now();
    let one = |i: usize| async move {
        let config = Config {
            image: Some(IMAGE.to_owned()),
            cmd: Some(COMMAND.iter().map(|s| s.to_string()).collect()),
            labels: Some([("lb.bench".to_owned(), "1".to_owned())].into()),
            host_config: Some(bollard::models::HostConfig {
                memory: Some(16 << 20),
                memory_swap: Some(16 << 20),
                nano_cpus: Some(50_000_000),
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
        anyhow::Ok((started.elapsed(), id))
    };
    let results = futures::future::join_all((0..replicas).map(one)).await;
    let mut times = Vec::new();
    let mut ids = Vec::new();
    for r in results {
        let (t, id) = r?;
        times.push(t);
        ids.push(id);
    }
    Ok((times, ids))
}

/// `docker stop` (with the grace) + `rm` of all containers at once: the time
/// until the last is gone.
async fn raw_remove(docker: &bollard::Docker, ids: &[String]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let one = |id: String| async move {
        docker
            .stop_container(
                &id,
                Some(StopContainerOptions {
                    t: i64::from(GRACE),
                }),
            )
            .await?;
        docker
            .remove_container(&id, None::<RemoveContainerOptions>)
            .await?;
        anyhow::Ok(())
    };
    for r in futures::future::join_all(ids.iter().cloned().map(one)).await {
        r?;
    }
    Ok(started.elapsed())
}
