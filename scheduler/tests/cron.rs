//! Cron on a real etcd with two schedulers: a schedule with a seconds field
//! fires one job per tick, exactly once cluster-wide, across a failover
//! (the leader killed mid-way, the standby taking over when its lease
//! lapses); and ticks missed while no scheduler ran fire once, not once
//! each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lb_model::keys::Keys;
use lb_model::{Job, ScheduleRecord, ServiceMeta, ServiceSpec};
use lb_store::etcd::EtcdStore;
use lb_store::{Op, Shared, StoreExt, Txn};
use lb_testing::EtcdServer;

const PID: &str = "PROJ0000000000000000000001";
const SID: &str = "SERV0000000000000000000001";

/// A service with one schedule, written as the API would.
async fn service(store: &Shared, keys: &Keys, cron: &str) {
    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
        "name": "work", "image": "busybox", "replicas": 0,
        "schedules": [{"name": "tick", "cron": cron, "command": ["true"],
            "concurrency": "allow"}]
    }))
    .unwrap();
    spec.validate().unwrap();
    let meta = ServiceMeta {
        id: SID.into(),
        name: "work".into(),
        project: PID.into(),
        created: 0,
        updated: 0,
        generation: 1,
        restart_generation: 0,
    };
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

/// The jobs the schedule fired, by tick (a tick twice is a failure).
async fn jobs(store: &Shared, keys: &Keys) -> BTreeMap<i64, Vec<String>> {
    let (kvs, _) = store.list(&keys.jobs_prefix(PID, SID)).await.unwrap();
    let mut ticks: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for kv in kvs {
        let job: Job = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(job.schedule.as_deref(), Some("tick"));
        ticks.entry(job.tick.unwrap()).or_default().push(job.id);
    }
    ticks
}

/// A scheduler task that can be killed (its future dropped: no cleanup, its
/// lease lapses on its own).
fn scheduler(store: &Shared, ttl: Duration) -> tokio::task::JoinHandle<()> {
    let config = lb_scheduler::Config {
        lease_ttl: ttl,
        ..Default::default()
    };
    let store = store.clone();
    tokio::spawn(async move {
        let _ = lb_scheduler::run(store, config, std::future::pending()).await;
    })
}

async fn connect(server: &EtcdServer) -> Shared {
    Arc::new(EtcdStore::connect(&[server.endpoint()]).await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_tick_fires_once_across_a_failover() {
    let server = EtcdServer::start().await;
    let keys = Keys::default();
    // Each scheduler with a client of its own, as two processes would be.
    let (a_store, b_store, test) = (
        connect(&server).await,
        connect(&server).await,
        connect(&server).await,
    );
    service(&test, &keys, "* * * * * *").await;
    let a = scheduler(&a_store, Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = scheduler(&b_store, Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = jobs(&test, &keys).await;
    // Kill the leader (the first started: it claimed the key at once); its
    // lease lapses within 2 s and the standby takes over.
    a.abort();
    let survivor = b;
    tokio::time::sleep(Duration::from_secs(7)).await;
    survivor.abort();
    let after = jobs(&test, &keys).await;
    for (tick, ids) in &after {
        assert_eq!(
            ids.len(),
            1,
            "tick {tick} fired {} jobs: {ids:?}",
            ids.len()
        );
    }
    assert!(
        before.len() >= 3,
        "the first leader fired {} ticks",
        before.len()
    );
    assert!(
        after.len() >= before.len() + 3,
        "fired {} ticks in all, {} before the failover",
        after.len(),
        before.len()
    );
    // Ticks go up in order; a gap (the failover) is one job, not many.
    let ticks: Vec<i64> = after.keys().copied().collect();
    let gaps = ticks.windows(2).filter(|w| w[1] - w[0] > 1).count();
    assert!(gaps <= 2, "ticks: {ticks:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missed_ticks_fire_once() {
    let server = EtcdServer::start().await;
    let keys = Keys::default();
    let store = connect(&server).await;
    service(&store, &keys, "* * * * * *").await;
    // The schedule's last tick was a minute ago: 60 ticks were missed.
    let last = lb_model::now() - 60;
    let record = ScheduleRecord {
        last_tick: last,
        last_job: None,
        skipped: None,
    };
    store
        .put(
            &keys.schedule_record(PID, SID, "tick"),
            serde_json::to_vec(&record).unwrap(),
        )
        .await
        .unwrap();
    let s = scheduler(&store, Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.abort();
    let fired = jobs(&store, &keys).await;
    // One for the missed ones (the latest), then one per second: not 60.
    assert!(
        (1..=5).contains(&fired.len()),
        "{} jobs: {fired:?}",
        fired.len()
    );
    let first = *fired.keys().next().unwrap();
    assert!(
        first > last + 55,
        "the missed ticks fired as the latest one, not the first: {first} vs {last}"
    );
}
