//! One conformance suite for both store backends: each test below runs once on
//! the embedded store (a redb file in a temp dir) and once on a real etcd
//! (Debian's etcd-server, started on free loopback ports in a temp dir), and
//! once on the embedded store behind the API's read cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lb_store::cache::CachedStore;
use lb_store::embedded::EmbeddedStore;
use lb_store::etcd::EtcdStore;
use lb_store::{
    Changes, Compare, Error, Event, KeyValue, Op, OpResult, Shared, StoreExt, Txn, WatchStream,
};
use lb_testing::EtcdServer;

/// A backend under test, restartable.
enum Harness {
    Embedded {
        dir: tempfile::TempDir,
        store: Option<Shared>,
        cached: bool,
    },
    Etcd {
        server: EtcdServer,
        store: Shared,
    },
}

impl Harness {
    async fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Shared = Arc::new(EmbeddedStore::open_dir(dir.path()).await.unwrap());
        Harness::Embedded {
            dir,
            store: Some(store),
            cached: false,
        }
    }

    /// The embedded store behind the read cache the API uses: the cache must
    /// keep every promise of the store.
    async fn cached() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Shared = Arc::new(EmbeddedStore::open_dir(dir.path()).await.unwrap());
        let store: Shared = Arc::new(CachedStore::new(store, "/").await);
        Harness::Embedded {
            dir,
            store: Some(store),
            cached: true,
        }
    }

    async fn etcd() -> Self {
        let server = EtcdServer::start().await;
        let store: Shared = Arc::new(EtcdStore::connect(&[server.endpoint()]).await.unwrap());
        Harness::Etcd { server, store }
    }

    /// Whether reads may lag changes made outside this store handle (lease
    /// expiry): the read cache.
    fn is_cached(&self) -> bool {
        matches!(self, Harness::Embedded { cached: true, .. })
    }

    fn store(&self) -> &Shared {
        match self {
            Harness::Embedded { store, .. } => store.as_ref().expect("store open"),
            Harness::Etcd { store, .. } => store,
        }
    }

    /// Restarts the backend: the embedded store is closed and reopened (as a
    /// process restart would), etcd is killed and started on the same data.
    /// Answers a store to use afterwards.
    async fn restart(&mut self) {
        match self {
            Harness::Embedded { dir, store, cached } => {
                let old = store.take().expect("store open");
                drop(old);
                // Let watch tasks notice and release the file.
                let mut reopened = None;
                for _ in 0..50 {
                    match EmbeddedStore::open_dir(dir.path()).await {
                        Ok(s) => {
                            reopened = Some(s);
                            break;
                        }
                        Err(Error::Locked { .. }) => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(e) => panic!("reopen: {e}"),
                    }
                }
                let reopened: Shared = Arc::new(reopened.expect("store released within 2.5 s"));
                *store = Some(if *cached {
                    Arc::new(CachedStore::new(reopened, "/").await)
                } else {
                    reopened
                });
            }
            Harness::Etcd { server, .. } => server.restart().await,
        }
    }
}

/// Generates one test per backend for every suite function.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let mut h = super::Harness::embedded().await;
                    super::with_timeout(super::$name(&mut h)).await;
                }
            )*
        }
        mod cached {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let mut h = super::Harness::cached().await;
                    super::with_timeout(super::$name(&mut h)).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let mut h = super::Harness::etcd().await;
                    super::with_timeout(super::$name(&mut h)).await;
                }
            )*
        }
    };
}

conformance!(
    put_get_delete,
    racing_creates_exactly_one_wins,
    revision_conflicts,
    transactions_are_atomic,
    transactions_within_limits,
    range_pages_in_key_order,
    no_gap_between_list_and_watch,
    watch_replays_history,
    watch_resumes_after_reconnect,
    compaction_is_reported,
    lease_expiry_deletes_keys,
    lease_keep_alive_and_revoke,
    data_survives_restart,
);

/// A hang fails with a message instead of hanging CI.
async fn with_timeout(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("conformance test hung for 60 s (deadlock or lost event?)");
}

/// A watch read event by event (its items are whole revisions).
struct Watch {
    stream: WatchStream,
    buffered: std::collections::VecDeque<Event>,
}

impl Watch {
    fn new(stream: WatchStream) -> Self {
        Self {
            stream,
            buffered: Default::default(),
        }
    }

    /// The next whole revision.
    async fn changes(&mut self, limit: Duration) -> Changes {
        assert!(
            self.buffered.is_empty(),
            "events of an earlier revision unread"
        );
        tokio::time::timeout(limit, self.stream.next())
            .await
            .expect("no watch event in time")
            .expect("watch stream ended")
            .expect("watch error")
    }
}

async fn next_event(watch: &mut Watch) -> Event {
    if let Some(event) = watch.buffered.pop_front() {
        return event;
    }
    let changes = watch.changes(Duration::from_secs(10)).await;
    assert!(!changes.events.is_empty(), "an empty revision item");
    for event in &changes.events {
        assert_eq!(
            event.revision(),
            changes.revision,
            "an event filed under another revision"
        );
    }
    watch.buffered.extend(changes.events);
    watch.buffered.pop_front().expect("one event")
}

async fn put_ok(store: &Shared, key: &str, value: &str) -> i64 {
    store.put(key, value.as_bytes().to_vec()).await.unwrap()
}

async fn put_get_delete(h: &mut Harness) {
    let s = h.store();
    let r1 = put_ok(s, "/t/a", "one").await;
    let kv = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
        (&b"one"[..], r1, r1, 1)
    );
    let r2 = put_ok(s, "/t/a", "two").await;
    assert!(r2 > r1);
    let kv = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );
    assert!(s.revision().await.unwrap() >= r2);
    assert!(s.delete("/t/a").await.unwrap());
    assert!(!s.delete("/t/a").await.unwrap());
    assert_eq!(s.get("/t/a").await.unwrap(), None);
    // Recreated: a fresh create_revision and version.
    let r3 = put_ok(s, "/t/a", "three").await;
    let kv = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (r3, 1));
}

async fn racing_creates_exactly_one_wins(h: &mut Harness) {
    let s = h.store();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create("/t/name", format!("writer {i}").into_bytes())
                .await
        }));
    }
    let mut winners = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        if task.await.unwrap().unwrap().is_some() {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let kv = s.get("/t/name").await.unwrap().unwrap();
    assert_eq!(kv.value, format!("writer {}", winners[0]).into_bytes());
    assert_eq!(kv.version, 1);
}

async fn revision_conflicts(h: &mut Harness) {
    let s = h.store();
    let r1 = put_ok(s, "/t/k", "v1").await;
    let r2 = s
        .put_if("/t/k", b"v2".to_vec(), r1)
        .await
        .unwrap()
        .expect("current revision wins");
    assert_eq!(
        s.put_if("/t/k", b"stale".to_vec(), r1).await.unwrap(),
        None,
        "stale revision must lose"
    );
    assert_eq!(
        s.create("/t/k", b"again".to_vec()).await.unwrap(),
        None,
        "exists: create must lose"
    );
    assert!(!s.delete_if("/t/k", r1).await.unwrap());
    assert_eq!(s.get("/t/k").await.unwrap().unwrap().value, b"v2");
    assert!(s.delete_if("/t/k", r2).await.unwrap());
    assert_eq!(s.get("/t/k").await.unwrap(), None);
}

async fn transactions_are_atomic(h: &mut Harness) {
    let s = h.store();
    let ra = put_ok(s, "/t/a", "a").await;
    put_ok(s, "/t/gone", "x").await;
    let txn = Txn::new()
        .when(Compare::ModRevision("/t/a".into(), ra))
        .when(Compare::ModRevision("/t/b".into(), 0))
        .then(Op::put("/t/a", "a2"))
        .then(Op::put("/t/b", "b"))
        .then(Op::delete("/t/gone"))
        .then(Op::Get("/t/a".into()))
        .or_else(Op::Get("/t/a".into()));
    let resp = s.txn(txn.clone()).await.unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.results.len(), 4);
    assert_eq!(resp.results[2], OpResult::Deleted(1));
    let a = s.get("/t/a").await.unwrap().unwrap();
    let b = s.get("/t/b").await.unwrap().unwrap();
    assert_eq!(
        a.mod_revision, resp.revision,
        "one revision for the whole transaction"
    );
    assert_eq!(b.mod_revision, resp.revision);
    assert_eq!(s.get("/t/gone").await.unwrap(), None);
    // The same transaction again: the compares fail, the failure branch runs.
    let before = s.revision().await.unwrap();
    let resp = s.txn(txn).await.unwrap();
    assert!(!resp.succeeded);
    match &resp.results[..] {
        [OpResult::Get(Some(kv))] => assert_eq!(kv.value, b"a2"),
        other => panic!("failure branch results: {other:?}"),
    }
    assert_eq!(
        s.revision().await.unwrap(),
        before,
        "a read-only branch writes nothing"
    );
    // A put on an unknown lease fails as a whole.
    let bad = Txn::new().then(Op::put("/t/c", "c")).then(Op::Put {
        key: "/t/d".into(),
        value: b"d".to_vec(),
        lease: 0x7777,
    });
    assert!(matches!(s.txn(bad).await, Err(Error::LeaseNotFound(_))));
    assert_eq!(
        s.get("/t/c").await.unwrap(),
        None,
        "nothing of a failed transaction is applied"
    );
}

/// Both backends hold transactions to etcd's default limits (128 operations,
/// 1.5 MiB a request) and refuse more alike; many independent writes are
/// split to fit; a window of a long listing counts the rest.
async fn transactions_within_limits(h: &mut Harness) {
    let s = h.store();
    let limits = s.limits();
    assert_eq!(limits, lb_store::Limits::default());
    let txn = |n: usize| {
        (0..n).fold(Txn::new(), |t, i| {
            t.then(Op::put(format!("/t/many/{i:04}"), format!("value {i}")))
        })
    };
    let resp = s.txn(txn(128)).await.unwrap();
    assert!(resp.succeeded);
    let (kvs, _) = s.list("/t/many/").await.unwrap();
    assert_eq!(kvs.len(), 128);
    assert!(kvs.iter().all(|kv| kv.mod_revision == resp.revision));
    match s.txn(txn(129)).await {
        Err(Error::Invalid(m)) => assert!(m.contains("too many operations"), "{m}"),
        other => panic!("129 operations: {other:?}"),
    }
    let big = Txn::new().then(Op::put("/t/big", vec![b'x'; 2 << 20]));
    match s.txn(big).await {
        Err(Error::Invalid(m)) => assert!(m.contains("too large"), "{m}"),
        other => panic!("a 2 MiB value: {other:?}"),
    }
    assert!(s.get("/t/big").await.unwrap().is_none());
    // A thousand independent writes, split to fit.
    let ops = (0..1000)
        .map(|i| Op::put(format!("/t/split/{i:04}"), vec![b'v'; 4096]))
        .collect();
    s.write_all(ops).await.unwrap();
    let (kvs, _) = s.list("/t/split/").await.unwrap();
    assert_eq!(kvs.len(), 1000);
    let (window, total) = s.window("/t/split/", 990, 20).await.unwrap();
    assert_eq!(total, 1000);
    let keys: Vec<&str> = window.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys.first(), Some(&"/t/split/0990"));
    assert_eq!(keys.len(), 10);
    let resp = s
        .txn(Txn::new().then(Op::DeletePrefix("/t/split/".into())))
        .await
        .unwrap();
    assert_eq!(resp.results, vec![OpResult::Deleted(1000)]);
}

async fn range_pages_in_key_order(h: &mut Harness) {
    let s = h.store();
    for i in (0..25).rev() {
        put_ok(s, &format!("/t/r/{i:02}"), "x").await;
    }
    put_ok(s, "/t/rx", "outside").await;
    put_ok(s, "/t/q", "outside").await;
    let p1 = s.range("/t/r/", None, 10).await.unwrap();
    assert_eq!(p1.kvs.len(), 10);
    assert!(p1.more);
    assert_eq!(p1.kvs[0].key, "/t/r/00");
    let p2 = s.range("/t/r/", Some(&p1.kvs[9].key), 10).await.unwrap();
    assert_eq!(p2.kvs[0].key, "/t/r/10");
    assert!(p2.more);
    let p3 = s.range("/t/r/", Some(&p2.kvs[9].key), 10).await.unwrap();
    assert_eq!(p3.kvs.len(), 5);
    assert!(!p3.more);
    assert_eq!(p3.kvs[4].key, "/t/r/24");
    let all = s.range("/t/r/", None, 0).await.unwrap();
    assert_eq!(all.kvs.len(), 25);
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert!(s.range("/t/none/", None, 10).await.unwrap().kvs.is_empty());
}

/// A cache filled by list + watch ends equal to the store while writers race
/// with the list.
async fn no_gap_between_list_and_watch(h: &mut Harness) {
    let s = h.store().clone();
    for i in 0..300 {
        put_ok(&s, &format!("/t/g/{i:03}"), "0").await;
    }
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for round in 1..=3 {
                for i in (0..300).step_by(7) {
                    let key = format!("/t/g/{i:03}");
                    if (i + round) % 5 == 0 {
                        s.delete(&key).await.unwrap();
                    } else {
                        s.put(&key, round.to_string().into_bytes()).await.unwrap();
                    }
                }
            }
            s.put("/t/g/zz-done", b"done".to_vec()).await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The list reads pages of 500; force several by listing with small pages.
    let mut cache: BTreeMap<String, KeyValue> = BTreeMap::new();
    let mut after: Option<String> = None;
    let mut first_revision = None;
    loop {
        let page = s.range("/t/g/", after.as_deref(), 40).await.unwrap();
        first_revision.get_or_insert(page.revision);
        after = page.kvs.last().map(|kv| kv.key.clone());
        for kv in page.kvs {
            cache.insert(kv.key.clone(), kv);
        }
        if !page.more {
            break;
        }
    }
    let mut watch = Watch::new(s.watch("/t/g/", first_revision.unwrap() + 1).await.unwrap());
    let done = writer.await.unwrap();
    loop {
        let event = next_event(&mut watch).await;
        let revision = event.revision();
        match event {
            Event::Put(kv) => {
                let newer = cache
                    .get(&kv.key)
                    .is_none_or(|c| c.mod_revision < kv.mod_revision);
                if newer {
                    cache.insert(kv.key.clone(), kv);
                }
            }
            Event::Delete(kv) => {
                if cache
                    .get(&kv.key)
                    .is_some_and(|c| c.mod_revision < kv.mod_revision)
                {
                    cache.remove(&kv.key);
                }
            }
        }
        if revision >= done {
            break;
        }
    }
    let (truth, _) = s.list("/t/g/").await.unwrap();
    let truth: BTreeMap<_, _> = truth.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    assert_eq!(cache.len(), truth.len());
    assert!(
        cache == truth,
        "cache built from list + watch differs from the store"
    );
}

async fn watch_replays_history(h: &mut Harness) {
    let s = h.store();
    let r1 = put_ok(s, "/t/w/a", "1").await;
    let r2 = put_ok(s, "/t/w/b", "2").await;
    put_ok(s, "/t/other", "x").await;
    s.delete("/t/w/a").await.unwrap();
    let r4 = s.revision().await.unwrap();
    let mut watch = Watch::new(s.watch("/t/w/", r1).await.unwrap());
    assert!(
        matches!(next_event(&mut watch).await, Event::Put(kv) if kv.key == "/t/w/a" && kv.mod_revision == r1)
    );
    assert!(
        matches!(next_event(&mut watch).await, Event::Put(kv) if kv.key == "/t/w/b" && kv.mod_revision == r2)
    );
    assert!(
        matches!(next_event(&mut watch).await, Event::Delete(kv) if kv.key == "/t/w/a" && kv.mod_revision == r4)
    );
    // Live events follow the replay, in order.
    let r5 = put_ok(s, "/t/w/c", "3").await;
    assert!(
        matches!(next_event(&mut watch).await, Event::Put(kv) if kv.key == "/t/w/c" && kv.mod_revision == r5)
    );
    // A watch "from now on" sees only later changes.
    let mut now = Watch::new(s.watch("/t/w/", 0).await.unwrap());
    let r6 = put_ok(s, "/t/w/d", "4").await;
    assert_eq!(next_event(&mut now).await.revision(), r6);
    // One transaction's events come together, with one revision.
    let resp = s
        .txn(
            Txn::new()
                .then(Op::put("/t/w/e", "5"))
                .then(Op::put("/t/w/f", "6")),
        )
        .await
        .unwrap();
    assert_eq!(next_event(&mut watch).await.key(), "/t/w/d");
    // One item for the whole transaction, on both watches.
    for w in [&mut watch, &mut now] {
        let changes = w.changes(Duration::from_secs(10)).await;
        assert_eq!(changes.revision, resp.revision);
        let keys: Vec<_> = changes.events.iter().map(|e| e.key().to_owned()).collect();
        assert_eq!(keys, ["/t/w/e", "/t/w/f"]);
    }
}

async fn watch_resumes_after_reconnect(h: &mut Harness) {
    let mut last = 0;
    {
        let s = h.store();
        let mut watch = Watch::new(s.watch("/t/res/", 0).await.unwrap());
        for i in 0..5 {
            put_ok(s, &format!("/t/res/{i}"), "before").await;
            last = next_event(&mut watch).await.revision();
        }
    }
    h.restart().await;
    let s = h.store();
    for i in 5..10 {
        put_ok(s, &format!("/t/res/{i}"), "after").await;
    }
    s.delete("/t/res/0").await.unwrap();
    // Resuming from the revision after the last one seen gives exactly the
    // missed changes.
    let mut watch = Watch::new(s.watch("/t/res/", last + 1).await.unwrap());
    for i in 5..10 {
        let event = next_event(&mut watch).await;
        assert_eq!(event.key(), format!("/t/res/{i}"));
        assert!(event.revision() > last);
    }
    assert!(matches!(next_event(&mut watch).await, Event::Delete(kv) if kv.key == "/t/res/0"));
}

async fn compaction_is_reported(h: &mut Harness) {
    let s = h.store();
    let r1 = put_ok(s, "/t/c/a", "1").await;
    put_ok(s, "/t/c/a", "2").await;
    let r3 = put_ok(s, "/t/c/a", "3").await;
    s.compact(r3).await.unwrap();
    // Reported at once, or as the stream's first item.
    let result = match s.watch("/t/c/", r1).await {
        Ok(mut watch) => tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("no compaction report within 10 s")
            .expect("stream ended without a compaction report")
            .map(|_| ()),
        Err(err) => Err(err),
    };
    match result {
        Err(Error::Compacted {
            compact_revision, ..
        }) => assert!(compact_revision >= r3 - 1),
        other => panic!("expected compacted, got {other:?}"),
    }
    // From the compaction point on, history is still there.
    let mut watch = Watch::new(s.watch("/t/c/", r3).await.unwrap());
    assert_eq!(next_event(&mut watch).await.revision(), r3);
    // The current value survives compaction.
    assert_eq!(s.get("/t/c/a").await.unwrap().unwrap().value, b"3");
}

async fn lease_expiry_deletes_keys(h: &mut Harness) {
    let s = h.store();
    let lease = s.lease_grant(2).await.unwrap();
    let put = Txn::new().then(Op::Put {
        key: "/t/l/alive".into(),
        value: b"up".to_vec(),
        lease,
    });
    s.txn(put).await.unwrap();
    put_ok(s, "/t/l/plain", "stays").await;
    assert_eq!(s.get("/t/l/alive").await.unwrap().unwrap().lease, lease);
    let mut watch = Watch::new(s.watch("/t/l/", 0).await.unwrap());
    // Nobody renews: within TTL plus etcd's expiry granularity the key goes,
    // and watchers see it go.
    let changes = watch.changes(Duration::from_secs(15)).await;
    let event = changes.events[0].clone();
    assert!(
        matches!(event, Event::Delete(ref kv) if kv.key == "/t/l/alive"),
        "{event:?}"
    );
    if h.is_cached() {
        // The cache learns of an expiry from its own watch, a moment later.
        let mut tries = 0;
        while s.get("/t/l/alive").await.unwrap().is_some() {
            tries += 1;
            assert!(
                tries < 100,
                "the cache still shows an expired key after 2 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        assert_eq!(s.get("/t/l/alive").await.unwrap(), None);
    }
    assert!(s.get("/t/l/plain").await.unwrap().is_some());
    assert!(matches!(
        s.lease_keep_alive(lease).await,
        Err(Error::LeaseNotFound(_))
    ));
}

async fn lease_keep_alive_and_revoke(h: &mut Harness) {
    let s = h.store();
    let lease = s.lease_grant(2).await.unwrap();
    s.txn(Txn::new().then(Op::Put {
        key: "/t/k/alive".into(),
        value: b"up".to_vec(),
        lease,
    }))
    .await
    .unwrap();
    // Renewed for twice the TTL: still there.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.lease_keep_alive(lease).await.unwrap();
    }
    assert!(
        s.get("/t/k/alive").await.unwrap().is_some(),
        "a renewed lease must not expire"
    );
    s.lease_revoke(lease).await.unwrap();
    assert_eq!(s.get("/t/k/alive").await.unwrap(), None);
    assert!(matches!(
        s.lease_keep_alive(lease).await,
        Err(Error::LeaseNotFound(_))
    ));
    assert!(matches!(
        s.lease_revoke(lease).await,
        Err(Error::LeaseNotFound(_))
    ));
    assert!(s.lease_grant(0).await.is_err());
}

async fn data_survives_restart(h: &mut Harness) {
    let rev = {
        let s = h.store();
        put_ok(s, "/t/d/a", "1").await;
        put_ok(s, "/t/d/b", "2").await;
        s.delete("/t/d/a").await.unwrap();
        s.revision().await.unwrap()
    };
    let before = h.store().get("/t/d/b").await.unwrap().unwrap();
    h.restart().await;
    let s = h.store();
    assert_eq!(s.revision().await.unwrap(), rev, "revision after restart");
    assert_eq!(s.get("/t/d/b").await.unwrap().unwrap(), before);
    assert_eq!(s.get("/t/d/a").await.unwrap(), None);
    let next = put_ok(s, "/t/d/c", "3").await;
    assert_eq!(next, rev + 1, "revisions keep rising across restarts");
}

/// etcd only: a live watch survives etcd being killed and restarted, with no
/// event lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_watch_survives_etcd_restart() {
    with_timeout(async {
        let mut h = Harness::etcd().await;
        let s = h.store().clone();
        let mut watch = Watch::new(s.watch("/t/live/", 0).await.unwrap());
        let r1 = put_ok(&s, "/t/live/a", "1").await;
        assert_eq!(next_event(&mut watch).await.revision(), r1);
        h.restart().await;
        let r2 = put_ok(&s, "/t/live/b", "2").await;
        let event = watch.changes(Duration::from_secs(20)).await.events[0].clone();
        assert_eq!((event.key(), event.revision()), ("/t/live/b", r2));
    })
    .await;
}
