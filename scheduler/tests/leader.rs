//! The scheduler killed mid-work, again and again, and two schedulers racing
//! for leadership: on the real embedded store and on a real etcd, with hollow
//! nodes (records and a live lease, no Docker). Afterwards every replica is
//! placed exactly once, on one node, with no assignment left over.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_model::keys::{Keys, Parsed};
use lb_model::{Capacity, Node, Replica, ServiceMeta, ServiceSpec};
use lb_store::embedded::EmbeddedStore;
use lb_store::etcd::EtcdStore;
use lb_store::{Op, Shared, StoreExt, Txn};
use lb_testing::EtcdServer;

/// Keeps the backend alive for the test.
#[allow(dead_code)]
enum Guard {
    Dir(tempfile::TempDir),
    Etcd(EtcdServer),
}

async fn embedded() -> (Shared, Guard) {
    let dir = tempfile::tempdir().unwrap();
    (
        Arc::new(EmbeddedStore::open_dir(dir.path()).await.unwrap()),
        Guard::Dir(dir),
    )
}

async fn etcd() -> (Shared, Guard) {
    let server = EtcdServer::start().await;
    (
        Arc::new(EtcdStore::connect(&[server.endpoint()]).await.unwrap()),
        Guard::Etcd(server),
    )
}

/// Hollow nodes: a record and an alive key on a lease kept by the test.
async fn hollow_nodes(store: &Shared, keys: &Keys, count: usize) -> i64 {
    let lease = store.lease_grant(60).await.unwrap();
    for i in 0..count {
        hollow_node(
            store,
            keys,
            &format!("NODE{i:022}"),
            &format!("hollow-{i}"),
            lease,
        )
        .await;
    }
    lease
}

/// One hollow node alive on `lease`.
async fn hollow_node(store: &Shared, keys: &Keys, id: &str, name: &str, lease: i64) {
    let node = Node {
        id: id.to_owned(),
        name: name.to_owned(),
        labels: BTreeMap::new(),
        address: String::new(),
        capacity: Capacity {
            cpus: 64.0,
            memory: 65_536,
            disk: 0,
        },
        created: 0,
    };
    let txn = Txn::new()
        .then(Op::put(
            keys.node_meta(id),
            serde_json::to_vec(&node).unwrap(),
        ))
        .then(Op::Put {
            key: keys.node_alive(id),
            value: b"{}".to_vec(),
            lease,
        });
    store.txn(txn).await.unwrap();
}

async fn service(store: &Shared, keys: &Keys, i: usize, replicas: u32) {
    let (pid, sid) = (
        "PROJECT0000000000000000000".to_owned(),
        format!("SERVICE{i:019}"),
    );
    let meta = ServiceMeta {
        id: sid.clone(),
        name: format!("svc-{i}"),
        project: pid.clone(),
        created: 0,
        updated: 0,
        generation: 1,
        restart_generation: 0,
    };
    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
        "name": format!("svc-{i}"), "image": "x", "replicas": replicas, "memory": 64 + (i % 4) as u64 * 64, "cpu": 0.1
    }))
    .unwrap();
    let txn = Txn::new()
        .then(Op::put(
            keys.service_meta(&pid, &sid),
            serde_json::to_vec(&meta).unwrap(),
        ))
        .then(Op::put(
            keys.service_spec(&pid, &sid),
            serde_json::to_vec(&spec).unwrap(),
        ));
    store.txn(txn).await.unwrap();
}

/// Checks the invariants; answers the number of placed replicas.
async fn check(store: &Shared, keys: &Keys) -> usize {
    let (kvs, _) = store.list("/lb/").await.unwrap();
    let mut placements: HashMap<String, Replica> = HashMap::new();
    let mut assignments: HashMap<String, Vec<String>> = HashMap::new();
    for kv in &kvs {
        match keys.parse(&kv.key) {
            Some(Parsed::Replica { rid, .. }) => {
                let r: Replica = serde_json::from_slice(&kv.value).unwrap();
                assert!(
                    placements.insert(rid.to_owned(), r).is_none(),
                    "replica {rid} recorded twice"
                );
            }
            Some(Parsed::NodeReplica { nid, rid }) => assignments
                .entry(rid.to_owned())
                .or_default()
                .push(nid.to_owned()),
            _ => {}
        }
    }
    for (rid, nodes) in &assignments {
        assert_eq!(
            nodes.len(),
            1,
            "replica {rid} assigned to several nodes: {nodes:?}"
        );
        let placed = placements
            .get(rid)
            .unwrap_or_else(|| panic!("assignment of {rid} without a placement"));
        assert_eq!(
            placed.node.as_deref(),
            Some(nodes[0].as_str()),
            "placement and assignment of {rid} disagree"
        );
    }
    let mut per_service: HashMap<String, usize> = HashMap::new();
    for (rid, r) in &placements {
        if r.node.is_some() {
            assert!(
                assignments.contains_key(rid),
                "placed replica {rid} has no assignment"
            );
        }
        *per_service.entry(r.service.clone()).or_default() += 1;
    }
    placements.values().filter(|r| r.node.is_some()).count()
}

async fn killed_mid_work(store: Shared) {
    let keys = Keys::default();
    let _lease = hollow_nodes(&store, &keys, 5).await;
    for i in 0..40 {
        service(&store, &keys, i, 10).await;
    }
    let config = lb_scheduler::Config {
        lease_ttl: Duration::from_secs(1),
        resync: Duration::from_millis(200),
        ..Default::default()
    };
    // Kill the scheduler at random moments while it works.
    let started = Instant::now();
    let mut kills = 0;
    loop {
        let task = tokio::spawn(lb_scheduler::run(
            store.clone(),
            config.clone(),
            std::future::pending(),
        ));
        let wait = 5 + (started.elapsed().subsec_nanos() % 60) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        task.abort();
        let _ = task.await;
        kills += 1;
        // A killed leader's lease still holds the key until it expires.
        let _ = store.delete(&keys.cluster("scheduler-leader")).await;
        check(&store, &keys).await;
        if kills >= 25 {
            break;
        }
    }
    // Then let one run to the end.
    let task = tokio::spawn(lb_scheduler::run(
        store.clone(),
        config.clone(),
        std::future::pending(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let placed = check(&store, &keys).await;
        if placed == 400 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{placed} of 400 replicas placed after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing more happens: the count stays exact.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(check(&store, &keys).await, 400);
    task.abort();
    eprintln!("{kills} kills; 400 replicas placed exactly once");
}

async fn standby_takes_over(store: Shared) {
    let keys = Keys::default();
    let _lease = hollow_nodes(&store, &keys, 2).await;
    let config = lb_scheduler::Config {
        lease_ttl: Duration::from_secs(2),
        resync: Duration::from_millis(200),
        ..Default::default()
    };
    let first = tokio::spawn(lb_scheduler::run(
        store.clone(),
        config.clone(),
        std::future::pending(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = tokio::spawn(lb_scheduler::run(
        store.clone(),
        config.clone(),
        std::future::pending(),
    ));
    service(&store, &keys, 0, 4).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while check(&store, &keys).await < 4 {
        assert!(Instant::now() < deadline, "not placed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The leader dies without a word; the standby must lead within the TTL.
    first.abort();
    let died = Instant::now();
    service(&store, &keys, 1, 3).await;
    while check(&store, &keys).await < 7 {
        assert!(
            died.elapsed() < Duration::from_secs(10),
            "the standby did not take over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "standby placed new replicas {:?} after the leader died (lease TTL 2 s)",
        died.elapsed()
    );
    second.abort();
    let nodes: HashSet<String> = {
        let (kvs, _) = store.list(&keys.nodes()).await.unwrap();
        kvs.iter()
            .filter_map(|kv| match keys.parse(&kv.key) {
                Some(Parsed::NodeReplica { nid, .. }) => Some(nid.to_owned()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(nodes.len(), 2, "replicas spread over both nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_scheduler_killed_mid_work_places_each_replica_once() {
    let (store, _guard) = embedded().await;
    killed_mid_work(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_scheduler_killed_mid_work_places_each_replica_once() {
    let (store, _guard) = etcd().await;
    killed_mid_work(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_standby_takes_over() {
    let (store, _guard) = embedded().await;
    standby_takes_over(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_standby_takes_over() {
    let (store, _guard) = etcd().await;
    standby_takes_over(store).await;
}

/// One service's replicas take far more keys than one transaction holds on
/// a stock etcd (128 operations): they are placed all the same, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_a_service_larger_than_a_transaction_is_placed() {
    let (store, _guard) = etcd().await;
    let keys = Keys::default();
    let _lease = hollow_nodes(&store, &keys, 5).await;
    service(&store, &keys, 0, 500).await;
    let task = tokio::spawn(lb_scheduler::run(
        store.clone(),
        lb_scheduler::Config::default(),
        std::future::pending(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let placed = check(&store, &keys).await;
        if placed == 500 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{placed} of 500 placed after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.abort();
}

/// A service whose placements the store refuses (here: etcd configured for
/// requests of at most 256 KiB, and a spec whose env makes each assignment
/// larger, written around the API's 64 KiB limit) gets a pending reason
/// saying so, and every other service is placed in the same pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_one_refused_service_never_stalls_the_rest() {
    let server = EtcdServer::start().await;
    let setup: Shared = Arc::new(EtcdStore::connect(&[server.endpoint()]).await.unwrap());
    let limited: Shared = Arc::new(
        EtcdStore::connect(&[server.endpoint()])
            .await
            .unwrap()
            .with_limits(lb_store::Limits {
                max_ops: 128,
                max_bytes: 256 * 1024,
            }),
    );
    let keys = Keys::default();
    let _lease = hollow_nodes(&setup, &keys, 3).await;
    for i in 0..6 {
        service(&setup, &keys, i, 5).await;
    }
    // Service 3 grows an env of 300 KiB.
    let pid = "PROJECT0000000000000000000";
    let sid = format!("SERVICE{:019}", 3);
    let kv = setup
        .get(&keys.service_spec(pid, &sid))
        .await
        .unwrap()
        .unwrap();
    let mut spec: ServiceSpec = serde_json::from_slice(&kv.value).unwrap();
    spec.env = (0..10)
        .map(|i| (format!("BIG{i}"), "x".repeat(30 * 1024)))
        .collect();
    setup
        .put(
            &keys.service_spec(pid, &sid),
            serde_json::to_vec(&spec).unwrap(),
        )
        .await
        .unwrap();
    let task = tokio::spawn(lb_scheduler::run(
        limited.clone(),
        lb_scheduler::Config::default(),
        std::future::pending(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let placed = check(&setup, &keys).await;
        let (kvs, _) = setup.list(&keys.replicas_prefix(pid, &sid)).await.unwrap();
        let reasons: Vec<String> = kvs
            .iter()
            .filter(|kv| matches!(keys.parse(&kv.key), Some(Parsed::Replica { .. })))
            .filter_map(|kv| serde_json::from_slice::<Replica>(&kv.value).ok())
            .filter_map(|r| r.reason)
            .collect();
        if placed == 25 && reasons.len() == 5 {
            assert!(
                reasons
                    .iter()
                    .all(|r| r.contains("cannot write the placement")
                        && r.contains("request is too large")),
                "{reasons:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 30 s: {placed} of 25 healthy replicas placed, refused service's reasons {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The refused service is not retried in a loop: nothing more is written.
    let settled = setup.revision().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = setup.revision().await.unwrap();
    assert!(
        later - settled <= 2,
        "the store went from revision {settled} to {later} in 1 s"
    );
    task.abort();
}

/// A node whose liveness key goes (its lease revoked) loses its replicas to
/// the other nodes once the grace is over, with no other change in the
/// cluster to wake the scheduler: the grace is a timer of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_a_lost_nodes_replicas_move_after_the_grace() {
    let (store, _guard) = embedded().await;
    let keys = Keys::default();
    let _lease = hollow_nodes(&store, &keys, 2).await;
    // A third node on a lease of its own, the only one with room at first.
    let lease = store.lease_grant(60).await.unwrap();
    let id = "NODEDOOMED000000000000000".to_owned();
    hollow_node(&store, &keys, &id, "doomed", lease).await;
    service(&store, &keys, 0, 6).await;
    let config = lb_scheduler::Config {
        node_grace: Duration::from_secs(1),
        ..Default::default()
    };
    let task = tokio::spawn(lb_scheduler::run(
        store.clone(),
        config,
        std::future::pending(),
    ));
    let on_node = |kvs: &[lb_store::KeyValue], nid: &str| {
        kvs.iter()
            .filter(|kv| matches!(keys.parse(&kv.key), Some(Parsed::NodeReplica { nid: n, .. }) if n == nid))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (kvs, _) = store.list(&keys.nodes()).await.unwrap();
        if check(&store, &keys).await == 6 && on_node(&kvs, &id) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not placed with some on the doomed node"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.lease_revoke(lease).await.unwrap();
    let gone = Instant::now();
    loop {
        let (kvs, _) = store.list(&keys.nodes()).await.unwrap();
        if on_node(&kvs, &id) == 0 && check(&store, &keys).await == 6 {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "the lost node's replicas did not move within 10 s (grace 1 s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gone.elapsed() >= Duration::from_millis(900),
        "moved before the grace"
    );
    eprintln!(
        "replicas moved {:?} after the node was lost (grace 1 s)",
        gone.elapsed()
    );
    task.abort();
}
