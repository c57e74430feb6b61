//! The etcd backend on a real three-member etcd cluster: given every
//! endpoint, the store keeps answering when one member is killed, when the
//! leader is killed and when one member is frozen (SIGSTOP, which a client
//! sees as a member cut off by the network); a watch follows through each
//! fault and through a restart of the whole cluster without missing or
//! repeating a change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lb_store::etcd::EtcdStore;
use lb_store::{Changes, Event, Store, StoreExt};
use lb_testing::etcd_cluster::EtcdCluster;
use tokio_stream::StreamExt;

/// Each key written and the revision it was written at.
type Written = BTreeMap<String, i64>;

/// Creates `count` keys one after another, each retried until acknowledged
/// (an error is not an acknowledgement), into `acked`; answers the number of
/// errors seen.
///
/// Every attempt is a create-if-absent: a write whose answer was lost may
/// still be applied, even much later (a frozen member reads the request
/// from its socket when it is thawed), so a plain put retried could write a
/// key twice, and the watch would rightly show both. As a create, the
/// first attempt to land wins and any other finds the key there: each key
/// is written exactly once, and the test can demand exactly one change.
async fn write(
    store: &EtcdStore,
    acked: &mut Written,
    tag: &str,
    from: usize,
    count: usize,
) -> usize {
    let mut errors = 0;
    for n in from..from + count {
        let key = format!("/t/{tag}/{n:05}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let revision = loop {
            match tokio::time::timeout(Duration::from_secs(15), store.create(&key, b"v".to_vec()))
                .await
            {
                Ok(Ok(Some(revision))) => break revision,
                // An earlier attempt whose answer was lost was applied.
                Ok(Ok(None)) => {
                    let kv = store.get(&key).await.unwrap().expect("the key exists");
                    eprintln!(
                        "{key}: an attempt without an answer was applied (revision {})",
                        kv.mod_revision
                    );
                    break kv.mod_revision;
                }
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
        };
        acked.insert(key, revision);
    }
    errors
}

/// What a watch delivered: each key's revision, and the last revision.
#[derive(Default)]
struct Seen {
    keys: Written,
    last: i64,
}

/// Reads changes from `watch` until `want` keys were seen, failing on a
/// key delivered twice, a revision delivered twice or going backwards, and
/// gives up after 30 s.
async fn follow(watch: &mut lb_store::WatchStream, seen: &mut Seen, want: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.keys.len() < want {
        let changes: Changes = tokio::time::timeout_at(deadline, watch.next())
            .await
            .unwrap_or_else(|_| panic!("watch: {} of {want} changes within 30 s", seen.keys.len()))
            .expect("watch ended")
            .expect("watch error");
        assert!(
            changes.revision > seen.last,
            "revision {} delivered after {}",
            changes.revision,
            seen.last
        );
        seen.last = changes.revision;
        for event in changes.events {
            let Event::Put(kv) = event else {
                panic!("a delete nobody made: {event:?}");
            };
            assert_eq!(kv.mod_revision, changes.revision, "{} in its batch", kv.key);
            if let Some(first) = seen.keys.get(&kv.key) {
                panic!(
                    "{} delivered twice: revision {first} then {} (version {})",
                    kv.key, kv.mod_revision, kv.version
                );
            }
            seen.keys.insert(kv.key, kv.mod_revision);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_rides_through_member_faults_and_a_full_restart() {
    let mut cluster = EtcdCluster::start().await;
    let store = EtcdStore::connect(&cluster.endpoints()).await.unwrap();
    let mut watch = store.watch("/t/", 0).await.unwrap();
    let mut seen = Seen::default();
    let mut acked = Written::new();
    let mut written = 0;
    let per_step = 40;

    // Healthy.
    let errors = write(&store, &mut acked, "a", written, per_step).await;
    written += per_step;
    follow(&mut watch, &mut seen, written).await;
    eprintln!("healthy: {errors} errors");

    // One member killed (not the leader).
    let leader = cluster.leader().await;
    let victim = (leader + 1) % 3;
    cluster.kill(victim);
    let errors = write(&store, &mut acked, "b", written, per_step).await;
    written += per_step;
    follow(&mut watch, &mut seen, written).await;
    eprintln!("member {victim} killed: {errors} errors");
    cluster.start_member(victim).await;

    // The leader killed.
    let leader = cluster.leader().await;
    cluster.kill(leader);
    let started = Instant::now();
    let errors = write(&store, &mut acked, "c", written, per_step).await;
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
    let errors = write(&store, &mut acked, "d", written, per_step).await;
    written += per_step;
    follow(&mut watch, &mut seen, written).await;
    eprintln!(
        "member {frozen} frozen: {errors} errors, {per_step} writes in {:?}",
        started.elapsed()
    );
    cluster.thaw(frozen).await;

    // The whole cluster restarted: the watch resumes where it was.
    cluster.restart_all().await;
    let errors = write(&store, &mut acked, "e", written, per_step).await;
    written += per_step;
    follow(&mut watch, &mut seen, written).await;
    eprintln!("full restart: {errors} errors");

    // Nothing acknowledged is missing, nothing came twice.
    let (listed, _) = store.list("/t/").await.unwrap();
    assert_eq!(listed.len(), written, "every acknowledged write is stored");
    for kv in &listed {
        assert_eq!(kv.version, 1, "{} written once", kv.key);
        assert_eq!(
            Some(&kv.mod_revision),
            acked.get(&kv.key),
            "{} as acknowledged",
            kv.key
        );
    }
    assert_eq!(
        seen.keys, acked,
        "every write was watched once, at its revision"
    );
}
