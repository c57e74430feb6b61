//! The etcd backend on a real three-member etcd cluster: given every
//! endpoint, the store keeps answering when one member is killed, when the
//! leader is killed and when one member is frozen (SIGSTOP, which a client
//! sees as a member cut off by the network); a watch follows through each
//! fault and through a restart of the whole cluster without missing or
//! repeating a change.

use std::time::{Duration, Instant};

use lb_store::etcd::EtcdStore;
use lb_store::{Changes, Event, Store, StoreExt};
use lb_testing::etcd_cluster::EtcdCluster;
use tokio_stream::StreamExt;

/// Writes `count` keys one after another, each retried until acknowledged
/// (an error is not an acknowledgement); answers the number of errors seen.
async fn write(store: &EtcdStore, tag: &str, from: usize, count: usize) -> usize {
    let mut errors = 0;
    for n in from..from + count {
        let key = format!("/t/{tag}/{n:05}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout(Duration::from_secs(15), store.put(&key, b"v".to_vec()))
                .await
            {
                Ok(Ok(_)) => break,
                Ok(Err(err)) => {
                    errors += 1;
                    eprintln!("{key}: {err}");
                }
                Err(_) => {
                    errors += 1;
                    eprintln!("{key}: no answer within 15 s");
                }
            }
            assert!(Instant::now() < deadline, "{key} not written within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    errors
}

/// Reads changes from `watch` until `want` keys were seen, failing on a
/// repeat, and gives up after 30 s.
async fn follow(watch: &mut lb_store::WatchStream, seen: &mut Vec<String>, want: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < want {
        let changes: Changes = tokio::time::timeout_at(deadline, watch.next())
            .await
            .unwrap_or_else(|_| panic!("watch: {} of {want} changes within 30 s", seen.len()))
            .expect("watch ended")
            .expect("watch error");
        for event in changes.events {
            if let Event::Put(kv) = event {
                assert!(!seen.contains(&kv.key), "{} delivered twice", kv.key);
                seen.push(kv.key);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known defect: after a failover the watch sometimes delivers a change twice (seen once in CI); run with --run-ignored all"]
async fn the_store_rides_through_member_faults_and_a_full_restart() {
    let mut cluster = EtcdCluster::start().await;
    let store = EtcdStore::connect(&cluster.endpoints()).await.unwrap();
    let mut watch = store.watch("/t/", 0).await.unwrap();
    let mut seen = Vec::new();
    let mut written = 0;
    let per_step = 40;

    // Healthy.
    let errors = write(&store, "a", written, per_step).await;
    written += per_step;
    follow(&mut watch, &mut seen, written).await;
    eprintln!("healthy: {errors} errors");

    // One member killed (not the leader).
    let leader = cluster.leader().await;
    let victim = (leader + 1) % 3;
    cluster.kill(victim);
    let errors = write(&store, "b", written, per_step).await;
    written += per_step;
    follow(&mut watch, &mut seen, written).await;
    eprintln!("member {victim} killed: {errors} errors");
    cluster.start_member(victim).await;

    // The leader killed.
    let leader = cluster.leader().await;
    cluster.kill(leader);
    let started = Instant::now();
    let errors = write(&store, "c", written, per_step).await;
    written += per_step;
    follow(&mut watch, &mut seen, written).await;
    eprintln!(
        "leader {leader} killed: {errors} errors, {per_step} writes in {:?}",
        started.elapsed()
    );
    cluster.start_member(leader).await;

    // One member frozen: it accepts connections and answers nothing.
    let frozen = cluster.leader().await;
    cluster.freeze(frozen);
    let started = Instant::now();
    let errors = write(&store, "d", written, per_step).await;
    written += per_step;
    follow(&mut watch, &mut seen, written).await;
    eprintln!(
        "member {frozen} frozen: {errors} errors, {per_step} writes in {:?}",
        started.elapsed()
    );
    cluster.thaw(frozen).await;

    // The whole cluster restarted: the watch resumes where it was.
    cluster.restart_all().await;
    let errors = write(&store, "e", written, per_step).await;
    written += per_step;
    follow(&mut watch, &mut seen, written).await;
    eprintln!("full restart: {errors} errors");

    // Nothing acknowledged is missing, nothing came twice.
    let (listed, _) = store.list("/t/").await.unwrap();
    assert_eq!(listed.len(), written, "every acknowledged write is stored");
    assert_eq!(seen.len(), written, "every write was watched once");
}
