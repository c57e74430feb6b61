//! A rollout on one full node, on a real etcd: a hollow node (records, a
//! live lease, and a task that reports every assigned replica as running or,
//! when told to stop, as exited) whose CPUs are all reserved by the
//! service's replicas. A new generation, and a rollback after it, must
//! replace every replica, with no more reserved than the node has and no
//! host port given to two running replicas at any moment.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_model::keys::{Keys, Parsed};
use lb_model::{
    Assignment, Capacity, Node, Replica, ReplicaState, ReplicaStatus, ServiceMeta, ServiceSpec,
};
use lb_store::etcd::EtcdStore;
use lb_store::{Op, Shared, StoreExt, Txn};
use lb_testing::EtcdServer;

const PID: &str = "PROJECT0000000000000000000";
const SID: &str = "SERVICE0000000000000000000";
const NID: &str = "NODE0000000000000000000000";

async fn node(store: &Shared, keys: &Keys, cpus: f64) {
    let lease = store.lease_grant(60).await.unwrap();
    let node = Node {
        id: NID.to_owned(),
        name: "small".to_owned(),
        labels: BTreeMap::new(),
        address: String::new(),
        capacity: Capacity {
            cpus,
            memory: 65_536,
            disk: 0,
        },
        created: 0,
    };
    let txn = Txn::new()
        .then(Op::put(
            keys.node_meta(NID),
            serde_json::to_vec(&node).unwrap(),
        ))
        .then(Op::Put {
            key: keys.node_alive(NID),
            value: b"{}".to_vec(),
            lease,
        });
    store.txn(txn).await.unwrap();
}

async fn service(store: &Shared, keys: &Keys, generation: u64, spec: serde_json::Value) {
    let meta = ServiceMeta {
        id: SID.to_owned(),
        name: "web".to_owned(),
        project: PID.to_owned(),
        created: 0,
        updated: 0,
        generation,
        restart_generation: 0,
    };
    let spec: ServiceSpec = serde_json::from_value(spec).unwrap();
    let txn = Txn::new()
        .then(Op::put(
            keys.service_meta(PID, SID),
            serde_json::to_vec(&meta).unwrap(),
        ))
        .then(Op::put(
            keys.service_spec(PID, SID),
            serde_json::to_vec(&spec).unwrap(),
        ));
    store.txn(txn).await.unwrap();
}

/// The replica records and the assignments, by replica id.
async fn read(store: &Shared, keys: &Keys) -> (Vec<Replica>, HashMap<String, Assignment>) {
    let (kvs, _) = store.list("/lb/").await.unwrap();
    let mut replicas = Vec::new();
    let mut assignments = HashMap::new();
    for kv in &kvs {
        match keys.parse(&kv.key) {
            Some(Parsed::Replica { .. }) => {
                replicas.push(serde_json::from_slice(&kv.value).unwrap())
            }
            Some(Parsed::NodeReplica { rid, .. }) => {
                assignments.insert(rid.to_owned(), serde_json::from_slice(&kv.value).unwrap());
            }
            _ => {}
        }
    }
    (replicas, assignments)
}

/// The hollow node's work: report each assignment as running (long enough
/// to count as ready) or, when told to stop, as exited. Checks on the way
/// that the node is never overcommitted and no host port is given to two
/// replicas told to run.
async fn report(store: &Shared, keys: &Keys, cpus: f64, told: &mut HashMap<String, bool>) {
    let (_, assignments) = read(store, keys).await;
    let reserved: f64 = assignments.values().map(|a| a.cpu).sum();
    assert!(
        reserved <= cpus + 1e-9,
        "{reserved} CPUs reserved on a {cpus}-CPU node"
    );
    let mut ports: HashMap<u16, usize> = HashMap::new();
    for a in assignments.values().filter(|a| a.running) {
        for host in a.ports.iter().filter_map(|p| p.host) {
            *ports.entry(host).or_default() += 1;
        }
    }
    assert!(
        ports.values().all(|&n| n == 1),
        "a host port assigned to two running replicas: {ports:?}"
    );
    for (rid, a) in &assignments {
        if told.get(rid) == Some(&a.running) {
            continue;
        }
        let status = ReplicaStatus {
            state: if a.running {
                ReplicaState::Running
            } else {
                ReplicaState::Exited
            },
            container_id: None,
            ports: Vec::new(),
            exit_code: None,
            oom_killed: false,
            restarts: 0,
            message: String::new(),
            health: None,
            health_message: String::new(),
            health_since: None,
            updated: lb_model::now() - 10,
        };
        store
            .put(
                &keys.replica_status(PID, SID, rid),
                serde_json::to_vec(&status).unwrap(),
            )
            .await
            .unwrap();
        told.insert(rid.clone(), a.running);
    }
    told.retain(|rid, _| assignments.contains_key(rid));
}

/// Runs the hollow node until every replica is of `generation`, placed and
/// assigned; panics after 30 s.
async fn until_rolled(store: &Shared, keys: &Keys, cpus: f64, generation: u64, replicas: usize) {
    let mut told = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        report(store, keys, cpus, &mut told).await;
        let (records, assignments) = read(store, keys).await;
        let done = records.len() == replicas
            && records.iter().all(|r| {
                r.generation == generation
                    && r.node.is_some()
                    && assignments.get(&r.id).is_some_and(|a| a.running)
            });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "generation {generation} not rolled out after 30 s: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn roll(spec: serde_json::Value, replicas: usize) {
    let server = EtcdServer::start().await;
    let store: Shared = Arc::new(EtcdStore::connect(&[server.endpoint()]).await.unwrap());
    let keys = Keys::default();
    node(&store, &keys, 2.0).await;
    let mut first = spec.clone();
    first["env"] = serde_json::json!({"VERSION": "1"});
    service(&store, &keys, 1, first).await;
    let config = lb_scheduler::Config {
        resync: Duration::from_millis(500),
        ..Default::default()
    };
    let task = tokio::spawn(lb_scheduler::run(
        store.clone(),
        config,
        std::future::pending(),
    ));
    until_rolled(&store, &keys, 2.0, 1, replicas).await;
    let mut second = spec.clone();
    second["env"] = serde_json::json!({"VERSION": "2"});
    service(&store, &keys, 2, second).await;
    until_rolled(&store, &keys, 2.0, 2, replicas).await;
    // A rollback is a rollout too: the first version again, as a new
    // generation.
    let mut back = spec;
    back["env"] = serde_json::json!({"VERSION": "1"});
    service(&store, &keys, 3, back).await;
    until_rolled(&store, &keys, 2.0, 3, replicas).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_full_node_rolls_four_replicas_to_a_new_generation() {
    // 4 × 0.5 CPU on 2 CPUs: no room for a surge replica.
    roll(
        serde_json::json!({"name": "web", "image": "x", "replicas": 4, "cpu": 0.5}),
        4,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_fixed_host_port_rolls_stop_first() {
    roll(
        serde_json::json!({"name": "web", "image": "x", "replicas": 1, "cpu": 0.5,
            "ports": [{"container": 80, "host": 30080}]}),
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_twenty_replicas_of_the_default_cpu_fill_two_cores_and_roll() {
    // The default request is 0.1 CPU: 20 replicas reserve both cores.
    roll(
        serde_json::json!({"name": "web", "image": "x", "replicas": 20}),
        20,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_max_unavailable_two_rolls_a_full_node() {
    roll(
        serde_json::json!({"name": "web", "image": "x", "replicas": 4, "cpu": 0.5,
            "max_unavailable": 2}),
        4,
    )
    .await;
}
