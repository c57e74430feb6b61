//! `lb-bench scheduler`: placements per second with N hollow nodes (records
//! and a live lease; they start nothing and report nothing) and services
//! totalling M replicas of mixed sizes, beside the raw limit measured in the
//! same run: the same records a placement writes, straight to the store in
//! the largest transactions it takes (etcd's defaults: 128 operations),
//! as many in flight as the scheduler's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use lb_model::keys::{Keys, Parsed};
use lb_model::{Assignment, Capacity, Node, Replica, ServiceMeta, ServiceSpec};
use lb_store::{Event, Op, Shared, StoreExt, Txn};

const NODE_MEMORY: u64 = 65_536;
/// Transactions in flight at once: as many as the scheduler's commits.
const IN_FLIGHT: usize = 16;

/// Writes the operations in transactions as large as the store allows
/// (etcd's defaults: 128 operations, 1.5 MiB), `IN_FLIGHT` at once.
async fn write_batched(store: &Shared, ops: Vec<Op>) -> anyhow::Result<()> {
    let txns = lb_store::split(ops, store.limits());
    let mut results = futures::stream::iter(txns)
        .map(|txn| store.txn(txn))
        .buffer_unordered(IN_FLIGHT);
    while let Some(result) = results.next().await {
        result?;
    }
    Ok(())
}

/// Runs the benchmark.
pub async fn run(nodes: usize, replicas: usize, etcd: Vec<String>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backend = if etcd.is_empty() {
        lb_store::Backend::Embedded(dir.path().to_path_buf())
    } else {
        lb_store::Backend::Etcd(etcd)
    };
    let store = lb_store::open(&backend).await.context("open the store")?;
    let keys = Keys::default();
    // Start clean on a shared etcd.
    store
        .txn(Txn::new().then(Op::DeletePrefix(keys.all())))
        .await?;

    // Hollow nodes: alive under one lease the bench keeps.
    let lease = store.lease_grant(600).await?;
    let mut ops = Vec::new();
    for i in 0..nodes {
        let id = format!("HOLLOW{i:020}");
        let node = Node {
            id: id.clone(),
            name: format!("hollow-{i}"),
            labels: Default::default(),
            address: String::new(),
            capacity: Capacity {
                cpus: 64.0,
                memory: NODE_MEMORY,
                disk: 0,
            },
            created: 0,
        };
        ops.push(Op::put(keys.node_meta(&id), serde_json::to_vec(&node)?));
        ops.push(Op::Put {
            key: keys.node_alive(&id),
            value: b"{}".to_vec(),
            lease,
        });
    }
    write_batched(&store, ops).await?;
    let keeper = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = store.lease_keep_alive(lease).await;
            }
        })
    };

    // Services of 100 replicas (the last one smaller), mixed sizes.
    let pid = "BENCHPROJECT00000000000000".to_owned();
    let per_service = 100usize;
    let services = replicas.div_ceil(per_service);
    let mut ops = Vec::new();
    for i in 0..services {
        let sid = format!("BENCHSVC{i:018}");
        let count = per_service.min(replicas - i * per_service);
        let meta = ServiceMeta {
            id: sid.clone(),
            name: format!("svc-{i}"),
            project: pid.clone(),
            created: 0,
            updated: 0,
            generation: 1,
            restart_generation: 0,
        };
        let memory = [32, 64, 128, 256][i % 4];
        let cpu = [0.05, 0.1, 0.25, 0.5][(i / 4) % 4];
        let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
            "name": format!("svc-{i}"), "image": "bench", "replicas": count, "memory": memory, "cpu": cpu,
        }))?;
        ops.push(Op::put(
            keys.service_meta(&pid, &sid),
            serde_json::to_vec(&meta)?,
        ));
        ops.push(Op::put(
            keys.service_spec(&pid, &sid),
            serde_json::to_vec(&spec)?,
        ));
    }
    write_batched(&store, ops).await?;

    // Count placements as they land.
    let mut watch = store.watch(&keys.nodes(), 0).await?;
    let started = Instant::now();
    let scheduler = tokio::spawn(lb_scheduler::run(
        store.clone(),
        lb_scheduler::Config::default(),
        std::future::pending(),
    ));
    let mut placed = 0usize;
    let mut sample: Option<(String, Assignment)> = None;
    while placed < replicas {
        let changes = tokio::time::timeout(Duration::from_secs(120), watch.next())
            .await
            .context("no placement for 120 s")?
            .context("watch ended")??;
        for event in changes.events {
            if let Event::Put(kv) = event {
                if let Some(Parsed::NodeReplica { nid, .. }) = keys.parse(&kv.key) {
                    placed += 1;
                    if sample.is_none() {
                        sample = Some((nid.to_owned(), serde_json::from_slice(&kv.value)?));
                    }
                }
            }
        }
    }
    let took = started.elapsed();
    scheduler.abort();
    let placements_per_s = replicas as f64 / took.as_secs_f64();

    // Utilisation: placed memory over capacity, per node.
    let (kvs, _) = store.list(&keys.nodes()).await?;
    let mut used: HashMap<String, u64> = HashMap::new();
    for kv in &kvs {
        if let Some(Parsed::NodeReplica { nid, .. }) = keys.parse(&kv.key) {
            let a: Assignment = serde_json::from_slice(&kv.value)?;
            *used.entry(nid.to_owned()).or_default() += a.memory;
        }
    }
    let max_util = used
        .values()
        .map(|m| *m as f64 / NODE_MEMORY as f64)
        .fold(0.0, f64::max);

    // The raw limit: the same records, batched, under a fresh prefix.
    let (nid, template) = sample.context("nothing was placed")?;
    let raw_keys = Keys::new("/bench-raw");
    let mut ops = Vec::with_capacity(replicas * 2);
    for i in 0..replicas {
        let rid = format!("RAW{i:023}");
        let replica = Replica {
            id: rid.clone(),
            project: pid.clone(),
            service: template.service.clone(),
            node: Some(nid.clone()),
            image: template.image.clone(),
            generation: 1,
            reason: None,
            created: 0,
        };
        let a = Assignment {
            replica: rid.clone(),
            ..template.clone()
        };
        ops.push(Op::put(
            raw_keys.replica(&pid, &template.service, &rid),
            serde_json::to_vec(&replica)?,
        ));
        ops.push(Op::put(
            raw_keys.node_replica(&nid, &rid),
            serde_json::to_vec(&a)?,
        ));
    }
    let raw_started = Instant::now();
    write_batched(&store, ops).await?;
    let raw_per_s = replicas as f64 / raw_started.elapsed().as_secs_f64();
    store
        .txn(Txn::new().then(Op::DeletePrefix(raw_keys.all())))
        .await?;
    keeper.abort();
    println!(
        "lb-bench scheduler: {nodes} hollow nodes, {replicas} replicas in {services} services, placed in {:.2} s",
        took.as_secs_f64()
    );
    println!(
        "placements_per_s={placements_per_s:.0} raw_writes_per_s={raw_per_s:.0} ratio={:.2} max_node_utilisation={max_util:.2}",
        placements_per_s / raw_per_s
    );
    Ok(())
}
