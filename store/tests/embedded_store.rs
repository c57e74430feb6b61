//! What only the embedded store has to prove: durability across SIGKILL,
//! leases across restarts, and clear errors for locked or corrupt files.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use lb_store::embedded::{EmbeddedStore, FILE_NAME};
use lb_store::{Error, Op, Store, StoreExt, Txn};

/// Not a test on its own: the child process of
/// `sigkill_loses_no_acknowledged_write`, which writes keys and prints each
/// revision once the write is acknowledged.
#[tokio::test]
#[ignore = "child process of sigkill_loses_no_acknowledged_write"]
async fn child_writer() {
    let Ok(dir) = std::env::var("LB_CHILD_DIR") else {
        return;
    };
    let store = EmbeddedStore::open_dir(dir.as_ref()).await.unwrap();
    for i in 0.. {
        let rev = store
            .put(&format!("/t/kill/{i:06}"), vec![b'x'; 512])
            .await
            .unwrap();
        println!("acked {i} {rev}");
    }
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("LB_CHILD_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last = None;
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.strip_prefix("acked ") {
            let mut parts = rest.split(' ').map(|p| p.parse::<i64>().unwrap());
            last = Some((parts.next().unwrap(), parts.next().unwrap()));
            if last.unwrap().0 >= 200 {
                break;
            }
        }
    }
    // SIGKILL while the writer is mid-way through further writes.
    child.kill().unwrap();
    child.wait().unwrap();
    let (last_index, last_revision) = last.expect("the child acknowledged writes");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open_dir(dir.path()).await.unwrap();
        let (kvs, _) = store.list("/t/kill/").await.unwrap();
        assert!(
            kvs.len() as i64 > last_index,
            "{} keys after kill, {} acknowledged",
            kvs.len(),
            last_index + 1
        );
        for (i, kv) in kvs.iter().enumerate().take(last_index as usize + 1) {
            assert_eq!(kv.key, format!("/t/kill/{i:06}"));
        }
        assert!(store.revision().await.unwrap() >= last_revision);
    });
}

#[tokio::test]
async fn unrenewed_lease_expires_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open_dir(dir.path()).await.unwrap();
        let lease = store.lease_grant(2).await.unwrap();
        store
            .txn(Txn::new().then(Op::Put {
                key: "/t/n/alive".into(),
                value: b"1".to_vec(),
                lease,
            }))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let store = EmbeddedStore::open_dir(dir.path()).await.unwrap();
    assert!(
        store.get("/t/n/alive").await.unwrap().is_some(),
        "a fresh TTL after restart"
    );
    let mut gone = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if store.get("/t/n/alive").await.unwrap().is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "the lease nobody renews must expire after a restart");
}

#[tokio::test]
async fn second_open_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedStore::open_dir(dir.path()).await.unwrap();
    match EmbeddedStore::open_dir(dir.path()).await {
        Err(err @ Error::Locked { .. }) => assert!(err.to_string().contains("locked"), "{err}"),
        other => panic!("expected locked, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_file_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(FILE_NAME),
        b"this is not a database, just some text\n".repeat(100),
    )
    .unwrap();
    match EmbeddedStore::open_dir(dir.path()).await {
        Err(err @ (Error::Corrupt { .. } | Error::Io { .. })) => {
            assert!(err.to_string().contains(FILE_NAME), "{err}")
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn compaction_drops_history_before_the_point() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join(FILE_NAME))
        .await
        .unwrap();
    let first = store.put("/t/h", b"0".to_vec()).await.unwrap();
    for i in 1..20 {
        store.put("/t/h", i.to_string().into_bytes()).await.unwrap();
    }
    store.compact(first + 10).await.unwrap();
    assert!(matches!(
        store.watch("/t/", first).await,
        Err(Error::Compacted { .. })
    ));
    assert!(store.watch("/t/", first + 10).await.is_ok());
    assert!(
        store.compact(i64::MAX).await.is_err(),
        "compacting past the current revision is refused"
    );
}

/// Steady churn, accelerated: 200,000 updates to 100 keys (values of 300 to
/// 500 bytes, ten updates per transaction so it runs in seconds) must leave
/// the file bounded, with history kept for watches but not all of it. Kept
/// whole, that history alone is about 80 MB of events (the file reached
/// ~200 MiB before history was bounded by size as well as by count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_keeps_the_file_bounded() {
    const BOUND: u64 = 48 << 20;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join(FILE_NAME))
        .await
        .unwrap();
    let first = store.revision().await.unwrap();
    let mut largest = 0;
    for batch in 0..20_000u64 {
        let mut txn = Txn::new();
        for i in 0..10 {
            let n = batch * 10 + i;
            let value = vec![b'a' + (n % 26) as u8; 300 + (n % 200) as usize];
            txn = txn.then(Op::put(format!("/t/churn/{:03}", n % 100), value));
        }
        store.txn(txn).await.unwrap();
        if batch % 500 == 0 {
            largest = largest.max(store.file_size().unwrap());
            assert!(
                largest < BOUND,
                "the store file grew to {} MiB after {} updates",
                largest >> 20,
                batch * 10
            );
        }
    }
    // The background compaction runs every 100 ms: give it one more turn.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let size = store.file_size().unwrap();
    assert!(size < BOUND, "the store file is {} MiB", size >> 20);
    let (kvs, revision) = store.list("/t/churn/").await.unwrap();
    assert_eq!(kvs.len(), 100);
    assert!(matches!(
        store.watch("/t/", first).await,
        Err(Error::Compacted { .. })
    ));
    // Recent history is still there to replay.
    let mut watch = store.watch("/t/", revision - 1000).await.unwrap();
    use futures::StreamExt;
    let changes = watch.next().await.unwrap().unwrap();
    assert_eq!(changes.revision, revision - 1000);
    println!(
        "file {} MiB at the end, {} MiB at most",
        size >> 20,
        largest >> 20
    );
}

/// A burst (100 MiB of values, most deleted again) leaves the file large
/// with its pages mostly free: the next open rewrites it to about what is
/// live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_left_sparse_by_a_burst_is_compacted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let burst = {
        let store = EmbeddedStore::open(&path).await.unwrap();
        for i in 0..100 {
            store
                .put(&format!("/t/burst/{i:03}"), vec![7; 1 << 20])
                .await
                .unwrap();
        }
        // One in ten stays, spread over the file.
        for i in (0..100).filter(|i| i % 10 != 0) {
            store.delete(&format!("/t/burst/{i:03}")).await.unwrap();
        }
        store.put("/t/after", b"x".to_vec()).await.unwrap();
        let revision = store.revision().await.unwrap();
        store.compact(revision).await.unwrap();
        store.file_size().unwrap()
    };
    assert!(burst > 128 << 20, "the burst left {} MiB", burst >> 20);
    let store = EmbeddedStore::open(&path).await.unwrap();
    let reopened = store.file_size().unwrap();
    assert!(
        reopened < 48 << 20,
        "{} MiB after the burst, {} MiB reopened",
        burst >> 20,
        reopened >> 20
    );
    let (kvs, _) = store.list("/t/").await.unwrap();
    assert_eq!(kvs.len(), 11, "what was live is all there");
    assert!(kvs
        .iter()
        .filter(|kv| kv.key.starts_with("/t/burst/"))
        .all(|kv| kv.value == vec![7; 1 << 20]));
}
