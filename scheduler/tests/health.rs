//! Rollouts gated on health, on a real etcd with a hollow node (records, a
//! live lease, and statuses written as a test's node would report them):
//! a new replica counts as ready only once `healthy`; one that never gets
//! there halts the rollout with a service-level reason while the old
//! replica keeps serving.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_model::keys::{Keys, Parsed};
use lb_model::{
    Assignment, Capacity, Health, Node, Replica, ReplicaState, ReplicaStatus, ServiceMeta,
    ServiceSpec,
};
use lb_store::etcd::EtcdStore;
use lb_store::{Op, Shared, StoreExt, Txn};
use lb_testing::EtcdServer;

const PID: &str = "PROJECT0000000000000000000";
const SID: &str = "SERVICE0000000000000000000";
const NID: &str = "NODE0000000000000000000000";

async fn node(store: &Shared, keys: &Keys) {
    let lease = store.lease_grant(60).await.unwrap();
    let node = Node {
        id: NID.to_owned(),
        name: "big".to_owned(),
        labels: BTreeMap::new(),
        address: String::new(),
        capacity: Capacity {
            cpus: 8.0,
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

async fn service(
    store: &Shared,
    keys: &Keys,
    generation: u64,
    version: &str,
    health: serde_json::Value,
) {
    let meta = ServiceMeta {
        id: SID.to_owned(),
        name: "web".to_owned(),
        project: PID.to_owned(),
        created: 0,
        updated: 0,
        generation,
        restart_generation: 0,
    };
    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
        "name": "web", "image": "x", "replicas": 1, "cpu": 0.5,
        "ports": [{"container": 80}], "env": {"VERSION": version}, "health": health,
    }))
    .unwrap();
    spec.validate().unwrap();
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

/// A running replica's status: `updated` long ago (so the old rule of 3 s
/// running would count it ready at once).
fn running(health: Health, message: &str, restarts: u32, since: i64) -> ReplicaStatus {
    ReplicaStatus {
        state: ReplicaState::Running,
        restarts,
        message: if restarts > 0 {
            format!("restarted: unhealthy ({message})")
        } else {
            String::new()
        },
        health: Some(health),
        health_message: message.to_owned(),
        health_since: Some(since),
        updated: lb_model::now() - 100,
        ..Default::default()
    }
}

/// The hollow node and the scheduler on a fresh etcd.
struct World {
    store: Shared,
    keys: Keys,
    _server: EtcdServer,
    task: tokio::task::JoinHandle<Result<(), lb_scheduler::Error>>,
}

impl World {
    async fn start(health: serde_json::Value) -> Self {
        let server = EtcdServer::start().await;
        let store: Shared = Arc::new(EtcdStore::connect(&[server.endpoint()]).await.unwrap());
        let keys = Keys::default();
        node(&store, &keys).await;
        service(&store, &keys, 1, "1", health).await;
        let config = lb_scheduler::Config {
            resync: Duration::from_millis(500),
            ..Default::default()
        };
        let task = tokio::spawn(lb_scheduler::run(
            store.clone(),
            config,
            std::future::pending(),
        ));
        Self {
            store,
            keys,
            _server: server,
            task,
        }
    }

    /// Writes each assigned replica's status as `status` says (by its
    /// generation), until `done` holds of the records; panics after 30 s.
    async fn until(
        &self,
        what: &str,
        status: impl Fn(&Assignment) -> ReplicaStatus,
        done: impl Fn(&[Replica], &HashMap<String, Assignment>) -> bool,
    ) -> (Vec<Replica>, HashMap<String, Assignment>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut written: HashMap<String, ReplicaStatus> = HashMap::new();
        loop {
            let (records, assignments) = read(&self.store, &self.keys).await;
            if done(&records, &assignments) {
                return (records, assignments);
            }
            for (rid, a) in &assignments {
                let s = status(a);
                if written.get(rid) == Some(&s) {
                    continue;
                }
                self.store
                    .put(
                        &self.keys.replica_status(PID, SID, rid),
                        serde_json::to_vec(&s).unwrap(),
                    )
                    .await
                    .unwrap();
                written.insert(rid.clone(), s);
            }
            assert!(
                Instant::now() < deadline,
                "{what} within 30 s: {records:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Rolls out generation 1, healthy; answers its replica's id.
    async fn first(&self) -> String {
        let (records, assignments) = self
            .until(
                "generation 1 not placed",
                |_| running(Health::Healthy, "", 0, 0),
                |r, a| r.len() == 1 && a.contains_key(&r[0].id),
            )
            .await;
        let a = &assignments[&records[0].id];
        let check = a.health.as_ref().expect("the assignment carries the check");
        assert_eq!(check.port, Some(80), "the port resolved: {check:?}");
        records[0].id.clone()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn generation(records: &[Replica], g: u64) -> Vec<&Replica> {
    records.iter().filter(|r| r.generation == g).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_an_unhealthy_new_replica_halts_the_rollout_and_the_old_one_serves() {
    let health = serde_json::json!({"http": "/healthz"});
    let w = World::start(health.clone()).await;
    let old = w.first().await;
    service(&w.store, &w.keys, 2, "2", health).await;
    let now = lb_model::now();
    let status = |a: &Assignment| match a.generation {
        1 => running(Health::Healthy, "", 0, 0),
        _ => running(Health::Starting, "GET /healthz: 503", 0, now),
    };
    // Starting for longer than the old 3 s rule: the old replica stays.
    let (records, _) = w
        .until("no new replica", status, |r, _| {
            generation(r, 2).iter().any(|n| n.node.is_some())
        })
        .await;
    let new = generation(&records, 2)[0].id.clone();
    let held = Instant::now();
    w.until("", status, |_, _| held.elapsed() > Duration::from_secs(4))
        .await;
    let (records, assignments) = read(&w.store, &w.keys).await;
    assert_eq!(records.len(), 2, "the old replica went: {records:#?}");
    assert!(assignments[&old].running);

    // Restarted by its node for being unhealthy: halted, with the reason.
    let status = |a: &Assignment| match a.generation {
        1 => running(Health::Healthy, "", 0, 0),
        _ => running(Health::Starting, "GET /healthz: 503", 1, now),
    };
    let want = format!("rollout halted: replica {new} never became healthy (GET /healthz: 503)");
    let (records, assignments) = w
        .until("no halt reason", status, |r, _| {
            r.iter().any(|n| n.reason.as_deref() == Some(want.as_str()))
        })
        .await;
    assert_eq!(records.len(), 2, "{records:#?}");
    assert!(assignments[&old].running, "the old replica keeps serving");
    // And it stays so.
    let held = Instant::now();
    let (records, _) = w
        .until("", status, |_, _| held.elapsed() > Duration::from_secs(2))
        .await;
    assert_eq!(records.len(), 2, "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_new_replica_starting_past_its_deadline_halts_the_rollout() {
    let health = serde_json::json!({"tcp": true, "interval": 1, "retries": 1, "timeout": 1});
    let w = World::start(health.clone()).await;
    let old = w.first().await;
    service(&w.store, &w.keys, 2, "2", health).await;
    // Starting since long ago: 1 + 2 × 1 + 5 s of margin are past.
    let since = lb_model::now() - 60;
    let status = |a: &Assignment| match a.generation {
        1 => running(Health::Healthy, "", 0, 0),
        _ => running(
            Health::Starting,
            "TCP port 80: connection refused",
            0,
            since,
        ),
    };
    let (records, assignments) = w
        .until("no halt reason", status, |r, _| {
            r.iter().any(|n| {
                n.reason.as_deref().is_some_and(|r| {
                    r.starts_with("rollout halted: replica ")
                        && r.ends_with("never became healthy (TCP port 80: connection refused)")
                })
            })
        })
        .await;
    assert_eq!(records.len(), 2, "{records:#?}");
    assert!(assignments[&old].running, "the old replica keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_the_old_replica_goes_once_the_new_one_is_healthy() {
    let health = serde_json::json!({"http": "/healthz"});
    let w = World::start(health.clone()).await;
    let old = w.first().await;
    service(&w.store, &w.keys, 2, "2", health).await;
    let healthy_at = Instant::now() + Duration::from_secs(4);
    let now = lb_model::now();
    let status = |a: &Assignment| match a.generation {
        1 => running(Health::Healthy, "", 0, 0),
        _ if Instant::now() < healthy_at => running(Health::Starting, "", 0, now),
        _ => running(Health::Healthy, "", 0, now + 4),
    };
    let (records, _) = w
        .until("the old replica not replaced", status, |r, _| {
            r.len() == 1 && r[0].generation == 2
        })
        .await;
    assert!(
        Instant::now() >= healthy_at,
        "the old replica went before the new one was healthy"
    );
    assert_ne!(records[0].id, old);
    assert_eq!(records[0].reason, None);
}
