//! A scheduler leader cut off from the store: two `lb scheduler` processes
//! (the real binary), each in its own network namespace joined to the
//! test's bridge (`lb_testing::netns`), share one etcd that listens on the
//! bridge. The leader's namespace is cut off with an iptables DROP (its TCP
//! connections stay open and fall silent), then healed, a few rounds.
//!
//! Each round a node holding replicas is lost a second before the cut, so
//! the leader, once cut off, plans to move them (after the 3 s grace) and
//! sends writes into its silent connection: the case fencing is for, as
//! they may reach etcd after the heal. The round checks that the other
//! scheduler takes over and places a service created during the partition
//! within a bound, that the deposed leader notices, stands by and keeps
//! running, that its log shows no pass that placed anything after the cut,
//! and that everything settles. At the end the whole history is checked
//! (the test watches the key tree from the start): every replica id ever
//! placed is a replica now or was on a lost node (a stale leader placing a
//! replica again would leave an extra id, even if removed later), none
//! moved to another node, none was assigned to two nodes at once.
//!
//! Then the leader is frozen (SIGSTOP, a long pause) past its lease while
//! its grace for a lost node runs out and a service is created: the other
//! takes over, and the resumed leader, acting on what it knew before it
//! learns it was deposed, has its writes refused by the fence; it logs
//! [`lb_scheduler::FENCE_REFUSED`] and stands by. At least one refusal
//! must be seen (a few freezes are tried: the resumed leader's catch-up may
//! come first, and then it writes nothing).
//!
//! Services are created through the REST API (an `lb_api::Server` in this
//! process, on the same etcd). The nodes are records only: their meta and
//! an `alive` key on a lease this test keeps, as the API writes them for a
//! connected node; no `lb node` runs, since placement is what is tested.
//!
//! `LB_SCHED_PARTITION_ROUNDS` (default 3) sets the number of rounds.
//! Needs root (network namespaces, iptables) and Debian's `etcd`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lb_model::keys::{Keys, Parsed};
use lb_store::etcd::EtcdStore;
use lb_store::{Event, Op, Shared, StoreExt, Txn};
use lb_testing::netns::{Host, Net};
use serde_json::{json, Value};

/// Replicas per service.
const REPLICAS: usize = 3;
/// How long the surviving scheduler may take to place a service created
/// when the leader was cut off: the leader's lease (5 s) must lapse first.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(15);
/// How long the deposed leader may take to notice it lost its lease.
const NOTICE_LIMIT: Duration = Duration::from_secs(40);
/// How long a deposed leader stays cut off after it noticed, in odd rounds.
const STANDBY_CUT: Duration = Duration::from_secs(12);
/// Freezes of the leader tried, at most, until one shows a write refused by
/// the fence.
const FREEZES: usize = 4;

/// A single etcd member listening on the bridge (and its data dir).
struct Etcd {
    child: Child,
    url: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    fn start(ip: &str, dir: &std::path::Path) -> Self {
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://{ip}:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        #[allow(clippy::zombie_processes)] // waited for by Drop
        let child = Command::new(std::env::var("LB_TEST_ETCD").unwrap_or_else(|_| "etcd".into()))
            .args(["--name", "s0", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("s0={peer_url}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("etcd.log")).unwrap())
            .spawn()
            .expect("cannot start `etcd`: install Debian's etcd-server");
        Self { child, url }
    }
}

/// An `lb scheduler` process inside a namespace.
struct Scheduler {
    name: &'static str,
    host: Host,
    child: Child,
    log: PathBuf,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Scheduler {
    fn start(name: &'static str, host: Host, etcd: &str, dir: &std::path::Path) -> Self {
        let log = dir.join(format!("scheduler-{name}.log"));
        #[allow(clippy::zombie_processes)] // waited for by Drop
        let child = host
            .command(env!("CARGO_BIN_EXE_lb"))
            .args(["scheduler", "--etcd", etcd, "--node-grace", "3s"])
            .arg("--data-dir")
            .arg(dir.join(name))
            .env_remove("LB_ETCD")
            .env_remove("LB_DATA_DIR")
            .env("LB_LOG", "info,lb_scheduler=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start lb scheduler");
        Self {
            name,
            host,
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it leads now, by its own log: every "leading" is followed
    /// by a "standing by" when the leadership ends.
    fn leads(&self) -> bool {
        let log = self.log();
        log.matches("leading the scheduling").count() > log.matches("standing by").count()
    }

    fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the process.
    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {}", self.child.id());
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "scheduler {} exited ({status}); its log:\n{}",
                self.name,
                self.tail()
            );
        }
    }
}

/// What the test's own watch saw of placements and assignments.
#[derive(Default)]
struct History {
    /// Every replica id ever placed on a node, with the nodes it was
    /// placed on (more than one: it moved).
    placed: BTreeMap<String, BTreeSet<String>>,
    /// Assignments held now, by replica id: the nodes holding it.
    assigned: BTreeMap<String, BTreeSet<String>>,
    /// Replica ids that were assigned to two nodes at once.
    doubled: BTreeSet<String>,
    /// Store errors of the watch (it must have none).
    errors: Vec<String>,
}

fn record(history: &Mutex<History>, keys: &Keys, event: Event) {
    let mut h = history.lock().unwrap();
    match event {
        Event::Put(kv) => match keys.parse(&kv.key) {
            Some(Parsed::Replica { rid, .. }) => {
                let replica: lb_model::Replica = serde_json::from_slice(&kv.value).unwrap();
                if let Some(node) = replica.node {
                    h.placed.entry(rid.to_owned()).or_default().insert(node);
                }
            }
            Some(Parsed::NodeReplica { nid, rid }) => {
                let holders = h.assigned.entry(rid.to_owned()).or_default();
                holders.insert(nid.to_owned());
                if holders.len() > 1 {
                    h.doubled.insert(rid.to_owned());
                }
            }
            _ => {}
        },
        Event::Delete(kv) => {
            if let Some(Parsed::NodeReplica { nid, rid }) = keys.parse(&kv.key) {
                if let Some(holders) = h.assigned.get_mut(rid) {
                    holders.remove(nid);
                }
            }
        }
    }
}

/// The REST API in this process, over the same etcd, as the admin.
struct Api {
    url: String,
    token: String,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Api {
    async fn start(store: Shared, keys: &Keys) -> Self {
        let config =
            lb_api::Config::new("127.0.0.1:0".parse().unwrap(), lb_api::server::Signup::Open);
        lb_api::accounts::ensure_admin(store.as_ref(), keys, Some("admin-password".into()))
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = lb_api::Server::bind(&config, store, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let url = format!("http://{}/api/v1", server.addr());
        tokio::spawn(server.run());
        let client = reqwest::Client::new();
        let login: Value = client
            .post(format!("{url}/auth/login"))
            .json(&json!({"username": "admin", "password": "admin-password"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["token"].as_str().expect("admin login").to_owned();
        let api = Self {
            url,
            token,
            client,
            _stop: stop,
        };
        api.post("/projects", json!({"name": "demo"})).await;
        api
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {value}");
        value
    }

    /// Creates a service of `REPLICAS` sleepers; answers its id.
    async fn service(&self, name: &str) -> String {
        let created = self
            .post(
                "/projects/demo/services",
                json!({"name": name, "image": "lb-test-busybox:1", "replicas": REPLICAS,
                    "memory": 16, "cpu": 0.1, "command": ["/bin/busybox", "sleep", "3600"]}),
            )
            .await;
        created["id"]
            .as_str()
            .or_else(|| created["meta"]["id"].as_str())
            .unwrap_or_else(|| panic!("no service id in {created}"))
            .to_owned()
    }
}

/// Fake nodes: their leases, renewed by a task of this test until the
/// node is lost.
struct Nodes {
    leases: Arc<Mutex<BTreeMap<String, i64>>>,
    lost: BTreeSet<String>,
}

impl Nodes {
    /// Loses node `id` as when its channel to the API ends: its lease (and
    /// `alive` key) revoked.
    async fn lose(&mut self, store: &Shared, id: &str) {
        let lease = self.leases.lock().unwrap().remove(id).unwrap();
        store.lease_revoke(lease).await.unwrap();
        self.lost.insert(id.to_owned());
    }
}

/// Registers `count` nodes as the API does for connected ones: their meta,
/// and `alive` on a lease of each, kept alive by a task of this test.
async fn nodes(store: &Shared, keys: &Keys, count: usize) -> Nodes {
    let leases = Arc::new(Mutex::new(BTreeMap::new()));
    for i in 0..count {
        let lease = store.lease_grant(10).await.unwrap();
        let id = lb_model::ids::new_id();
        let meta = json!({"id": id, "name": format!("n{i}"), "labels": {},
            "address": format!("10.0.0.{i}"),
            "capacity": {"cpus": 64.0, "memory": 65536, "disk": 100000},
            "created": lb_model::now()});
        store
            .put(&keys.node_meta(&id), serde_json::to_vec(&meta).unwrap())
            .await
            .unwrap();
        let alive = Txn::new().then(Op::Put {
            key: keys.node_alive(&id),
            value: b"1".to_vec(),
            lease,
        });
        store.txn(alive).await.unwrap();
        leases.lock().unwrap().insert(id, lease);
    }
    let (store, kept) = (store.clone(), leases.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now: Vec<i64> = kept.lock().unwrap().values().copied().collect();
            for lease in now {
                // A lease revoked meanwhile answers "not found".
                let renewed = store.lease_keep_alive(lease).await;
                let live = kept.lock().unwrap().values().any(|l| *l == lease);
                assert!(renewed.is_ok() || !live, "a node's lease: {renewed:?}");
            }
        }
    });
    Nodes {
        leases,
        lost: BTreeSet::new(),
    }
}

/// The placement of every replica now: replica id → (service id, node);
/// and the assignments: replica id → nodes.
async fn placements(
    store: &Shared,
    keys: &Keys,
) -> (
    BTreeMap<String, (String, Option<String>)>,
    BTreeMap<String, Vec<String>>,
) {
    let (kvs, _) = store.list(&keys.all()).await.unwrap();
    let mut placed = BTreeMap::new();
    let mut assigned: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for kv in kvs {
        match keys.parse(&kv.key) {
            Some(Parsed::Replica { sid, rid, .. }) => {
                let replica: lb_model::Replica = serde_json::from_slice(&kv.value).unwrap();
                placed.insert(rid.to_owned(), (sid.to_owned(), replica.node));
            }
            Some(Parsed::NodeReplica { nid, rid }) => {
                assigned
                    .entry(rid.to_owned())
                    .or_default()
                    .push(nid.to_owned());
            }
            _ => {}
        }
    }
    (placed, assigned)
}

/// Waits until service `sid` has `REPLICAS` replicas placed and assigned;
/// answers how long it took.
async fn wait_placed(store: &Shared, keys: &Keys, sid: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (placed, assigned) = placements(store, keys).await;
        let done = placed
            .iter()
            .filter(|(rid, (s, node))| {
                s == sid
                    && node
                        .as_ref()
                        .is_some_and(|n| assigned.get(*rid) == Some(&vec![n.clone()]))
            })
            .count();
        if done == REPLICAS {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "service {sid}: {done} of {REPLICAS} replicas placed within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every service in `services` has exactly `REPLICAS` replicas,
/// each placed and assigned on one node that is not lost.
async fn wait_settled(
    store: &Shared,
    keys: &Keys,
    services: &[String],
    lost: &BTreeSet<String>,
    limit: Duration,
) {
    let started = Instant::now();
    loop {
        let (placed, assigned) = placements(store, keys).await;
        let settled = services.iter().all(|sid| {
            let mine: Vec<_> = placed.iter().filter(|(_, (s, _))| s == sid).collect();
            mine.len() == REPLICAS
                && mine.iter().all(|(rid, (_, node))| {
                    node.as_ref().is_some_and(|n| {
                        !lost.contains(n) && assigned.get(*rid) == Some(&vec![n.clone()])
                    })
                })
        }) && assigned.keys().all(|rid| placed.contains_key(rid));
        if settled {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "not settled within {limit:?}: placements {placed:#?}, assignments {assigned:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The replicas `log` says were placed by passes ("scheduling pass" debug
/// lines, `placed: N`), and the services whose writes conflicted.
fn passes(log: &str) -> (usize, usize) {
    let field = |line: &str, name: &str| -> usize {
        line.split(name)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    log.lines()
        .filter(|l| l.contains("scheduling pass"))
        .fold((0, 0), |(placed, conflicts), l| {
            (
                placed + field(l, "placed: "),
                conflicts + field(l, "conflicts: "),
            )
        })
}

/// Waits until exactly one of the schedulers leads; answers its index.
async fn leader(schedulers: &mut [Scheduler], limit: Duration) -> usize {
    let started = Instant::now();
    loop {
        for s in schedulers.iter_mut() {
            s.assert_running();
        }
        let leading: Vec<usize> = (0..schedulers.len())
            .filter(|&i| schedulers[i].leads())
            .collect();
        if leading.len() == 1 {
            return leading[0];
        }
        assert!(
            started.elapsed() < limit,
            "not exactly one scheduler leads within {limit:?}: {leading:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `s`, cut off at `cut`, logged after `mark` that its
/// leadership ended; answers how long after the cut.
async fn wait_noticed(s: &Scheduler, mark: usize, cut: Instant) -> Duration {
    while !s.log()[mark..].contains("standing by") {
        assert!(
            cut.elapsed() < NOTICE_LIMIT,
            "{} did not notice it lost the lease within {NOTICE_LIMIT:?}; its log:\n{}",
            s.name,
            s.tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cut.elapsed()
}

fn rounds() -> usize {
    std::env::var("LB_SCHED_PARTITION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_scheduler_leader_is_fenced_and_replaced() {
    let mut net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&net.host_ip(), dir.path());
    let store: Shared = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match EtcdStore::connect(std::slice::from_ref(&etcd.url)).await {
                Ok(store) => break Arc::new(store),
                Err(err) => assert!(Instant::now() < deadline, "etcd did not start: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let keys = Keys::default();

    // Everything the schedulers write, watched from the start.
    let history = Arc::new(Mutex::new(History::default()));
    let mut watch = store.watch(&keys.all(), 0).await.unwrap();
    {
        let (history, keys) = (history.clone(), keys.clone());
        tokio::spawn(async move {
            while let Some(changes) = watch.next().await {
                match changes {
                    Ok(changes) => {
                        for event in changes.events {
                            record(&history, &keys, event);
                        }
                    }
                    Err(err) => history.lock().unwrap().errors.push(err.to_string()),
                }
            }
        });
    }

    let api = Api::start(store.clone(), &keys).await;
    let rounds = rounds();
    let mut nodes = nodes(&store, &keys, 2 + rounds + FREEZES).await;
    let mut schedulers = vec![
        Scheduler::start("a", net.host("a"), &etcd.url, dir.path()),
        Scheduler::start("b", net.host("b"), &etcd.url, dir.path()),
    ];
    let sid = api.service("before").await;
    wait_placed(&store, &keys, &sid, Duration::from_secs(30)).await;

    let mut services = vec![sid];
    let mut figures = Vec::new();
    let mut stale_plans = 0;
    for round in 0..rounds {
        let l = leader(&mut schedulers, Duration::from_secs(20)).await;
        let f = 1 - l;

        // A node holding replicas is lost; the leader sees it and moves
        // its replicas once the grace (3 s) is over, by then cut off: its
        // writes go into a silent connection (and may reach etcd after the
        // heal, where the fence must refuse them). The other scheduler
        // moves them when it leads.
        let (_, assigned) = placements(&store, &keys).await;
        let victim = assigned
            .values()
            .flatten()
            .find(|n| !nodes.lost.contains(*n))
            .expect("a node holding replicas")
            .clone();
        nodes.lose(&store, &victim).await;
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Cut the leader off and create a service: the other one places it.
        // Its log from here on is what it did cut off (its last pass was
        // logged a second ago at least).
        let mark = schedulers[l].log().len();
        let cut = Instant::now();
        schedulers[l].host.partition();
        let sid = api.service(&format!("cut{round}")).await;
        let takeover = wait_placed(&store, &keys, &sid, TAKEOVER_LIMIT).await;
        services.push(sid);
        assert!(
            schedulers[f].leads(),
            "round {round}: service placed but {} does not lead; its log:\n{}",
            schedulers[f].name,
            schedulers[f].tail()
        );

        // Heal at once in even rounds (the deposed leader may still think
        // it leads: its renewal has not timed out yet); in odd ones once it
        // noticed, and a while after, as a standby that cannot reach the
        // store (it must wait, not give up).
        let mut noticed = None;
        if round % 2 == 1 {
            noticed = Some(wait_noticed(&schedulers[l], mark, cut).await);
            tokio::time::sleep(STANDBY_CUT).await;
            schedulers[l].assert_running();
        }
        let healed_after = cut.elapsed();
        let noticed_before_heal = schedulers[l].log()[mark..].contains("standing by");
        schedulers[l].host.heal();

        // Right after the heal both may act on a new service: only the
        // leader's writes may land.
        let sid = api.service(&format!("heal{round}")).await;
        wait_placed(&store, &keys, &sid, Duration::from_secs(20)).await;
        services.push(sid);
        let noticed = match noticed {
            Some(noticed) => noticed,
            None => wait_noticed(&schedulers[l], mark, cut).await,
        };
        schedulers[l].assert_running();
        schedulers[f].assert_running();
        assert_eq!(
            leader(&mut schedulers, Duration::from_secs(5)).await,
            f,
            "round {round}: the new leader keeps leading after the heal"
        );
        wait_settled(
            &store,
            &keys,
            &services,
            &nodes.lost,
            Duration::from_secs(30),
        )
        .await;
        // Fencing: the deposed leader placed nothing after the cut, though
        // it planned to (its moves of the lost node's replicas).
        let after_cut = schedulers[l].log()[mark..].to_owned();
        let planned = after_cut.matches("node lost: moving its replica").count();
        stale_plans += planned;
        let (placed, conflicts) = passes(&after_cut);
        assert_eq!(
            placed,
            0,
            "round {round}: {} placed replicas after it was cut off; its log:\n{}",
            schedulers[l].name,
            schedulers[l].tail()
        );
        eprintln!(
            "round {round}: {} cut off; {} placed a new service after {takeover:.1?}; \
             healed after {healed_after:.1?} (deposed leader had noticed: {noticed_before_heal}); \
             it noticed after {noticed:.1?}; moves it planned cut off: {planned}; \
             its writes refused by the fence: {conflicts} services",
            schedulers[l].name, schedulers[f].name
        );
        figures.push(takeover);
    }

    // A leader frozen (SIGSTOP: a long pause, a stopped VM) past its lease
    // while its grace for a lost node runs out, and a service created
    // meanwhile: the other one takes over and places both; resumed, the old
    // leader acts on what it knew before it learns it was deposed, and its
    // writes are refused by the fence (it logs so and stands by). Its
    // catch-up may also come first (then it writes nothing): a few tries.
    let mut refusals = 0;
    let mut freezes = 0;
    while refusals == 0 && freezes < FREEZES {
        let l = leader(&mut schedulers, Duration::from_secs(20)).await;
        let f = 1 - l;
        let (_, assigned) = placements(&store, &keys).await;
        let victim = assigned
            .values()
            .flatten()
            .find(|n| !nodes.lost.contains(*n))
            .expect("a node holding replicas")
            .clone();
        nodes.lose(&store, &victim).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mark = schedulers[l].log().len();
        let frozen = Instant::now();
        schedulers[l].signal("-STOP");
        let sid = api.service(&format!("frozen{freezes}")).await;
        wait_placed(&store, &keys, &sid, TAKEOVER_LIMIT).await;
        services.push(sid);
        wait_settled(
            &store,
            &keys,
            &services,
            &nodes.lost,
            Duration::from_secs(30),
        )
        .await;
        assert!(
            schedulers[f].leads(),
            "freeze {freezes}: placed, but {} does not lead",
            schedulers[f].name
        );
        schedulers[l].signal("-CONT");
        let resumed = frozen.elapsed();
        let noticed = wait_noticed(&schedulers[l], mark, frozen).await;
        let after = schedulers[l].log()[mark..].to_owned();
        let refused = after.matches(lb_scheduler::FENCE_REFUSED).count();
        let (placed, conflicts) = passes(&after);
        assert_eq!(
            placed,
            0,
            "freeze {freezes}: {} placed replicas after it was frozen; its log:\n{}",
            schedulers[l].name,
            schedulers[l].tail()
        );
        eprintln!(
            "freeze {freezes}: {} frozen for {resumed:.1?}, noticed it was deposed \
             {noticed:.1?} after the freeze; services whose writes conflicted: {conflicts}; \
             refusals by the fence: {refused}",
            schedulers[l].name
        );
        refusals += refused;
        freezes += 1;
        wait_settled(
            &store,
            &keys,
            &services,
            &nodes.lost,
            Duration::from_secs(30),
        )
        .await;
    }
    assert!(
        refusals > 0,
        "in {freezes} freezes no deposed leader's write was refused by the fence"
    );

    // Let the last writes reach the test's watch, then check the whole
    // history and the state.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (placed, assigned) = placements(&store, &keys).await;
    let h = history.lock().unwrap();
    assert!(
        h.errors.is_empty(),
        "the test's watch failed: {:?}",
        h.errors
    );
    assert!(
        h.doubled.is_empty(),
        "replicas assigned to two nodes at once: {:?}",
        h.doubled
    );
    for sid in &services {
        let count = placed.values().filter(|(s, _)| s == sid).count();
        assert_eq!(count, REPLICAS, "service {sid}: placement records");
    }
    for (rid, (sid, node)) in &placed {
        let node = node
            .as_ref()
            .unwrap_or_else(|| panic!("{rid} of {sid} pending"));
        assert_eq!(
            assigned.get(rid),
            Some(&vec![node.clone()]),
            "{rid}: assigned on exactly its node"
        );
    }
    assert!(
        assigned.keys().all(|rid| placed.contains_key(rid)),
        "assignments without a placement: {assigned:?}"
    );
    // Every replica id ever placed is a replica now, or was moved off a
    // lost node: one placed again by a stale leader would be neither.
    for (rid, on) in &h.placed {
        assert_eq!(on.len(), 1, "{rid} placed on {on:?}");
        assert!(
            placed.contains_key(rid) || on.iter().all(|n| nodes.lost.contains(n)),
            "{rid} was placed (on {on:?}), not on a lost node, and is not a replica now: \
             a second placement"
        );
    }
    assert!(
        stale_plans > 0,
        "no deposed leader tried to write: the fence was not put to the test"
    );
    let max = figures.iter().max().unwrap();
    eprintln!(
        "{} rounds: takeover and placement at most {max:.1?} ({figures:.1?})",
        figures.len()
    );
}
