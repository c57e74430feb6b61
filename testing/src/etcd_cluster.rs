//! A real etcd cluster of three members (Debian's `/usr/bin/etcd`) on free
//! loopback ports in a temp dir, for the tests of lb on a cluster: a member
//! can be killed and started again, the leader found, the whole cluster
//! restarted, and one member "partitioned".
//!
//! The partition here is SIGSTOP: the member's process is frozen, so its TCP
//! sockets stay open and accept connections but nothing answers, which is
//! what a client sees of a member cut off by the network (and what its peers
//! see: no heartbeats). It is not a network partition in both directions
//! with the member alive on its own side (it cannot hold a useless election
//! meanwhile); the namespace harness (`netns.rs`) is the place for that.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// One member's ports and process.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    stopped: bool,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// A running etcd cluster of three members.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts three members with one `--initial-cluster` and waits until
    /// every member answers.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let members = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
                stopped: false,
            })
            .collect();
        let mut cluster = Self { dir, members };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    /// The endpoints comma-separated, as `--etcd` takes them.
    pub fn endpoints_flag(&self) -> String {
        self.endpoints().join(",")
    }

    fn log(&self, i: usize) -> std::path::PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    fn spawn(&mut self, i: usize) {
        let initial = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer()))
            .collect::<Vec<_>>()
            .join(",");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(i))
            .expect("etcd log file");
        let member = &self.members[i];
        let child = Command::new(std::env::var("LB_TEST_ETCD").unwrap_or_else(|_| "etcd".into()))
            .args(["--name", &member.name, "--data-dir"])
            .arg(self.dir.path().join(&member.name))
            .args(["--listen-client-urls", &member.endpoint()])
            .args(["--advertise-client-urls", &member.endpoint()])
            .args(["--listen-peer-urls", &member.peer()])
            .args(["--initial-advertise-peer-urls", &member.peer()])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "lb-test"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start `etcd`: install Debian's etcd-server (contrib/test.sh does)");
        self.members[i].child = Some(child);
        self.members[i].stopped = false;
    }

    /// Waits until member `i` answers a linearizable read (so it is in a
    /// cluster with a leader).
    pub async fn wait_ready(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let endpoint = self.endpoint(i);
        loop {
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(2));
            if let Ok(client) = etcd_client::Client::connect([&endpoint], Some(options)).await {
                if client.kv_client().get("/", None).await.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {i} did not answer within 30 s; see {}",
                self.log(i).display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the member that is the leader now (asked of each
    /// running member with the maintenance API, like `etcdctl endpoint
    /// status`).
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for member in &self.members {
                if member.child.is_none() || member.stopped {
                    continue;
                }
                let options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(1))
                    .with_timeout(Duration::from_secs(2));
                let Ok(mut client) =
                    etcd_client::Client::connect([member.endpoint()], Some(options)).await
                else {
                    continue;
                };
                let Ok(status) = client.status().await else {
                    continue;
                };
                let leader = status.leader();
                let Ok(list) = client.member_list().await else {
                    continue;
                };
                let Some(name) = list
                    .members()
                    .iter()
                    .find(|m| m.id() == leader)
                    .map(|m| m.name().to_owned())
                else {
                    continue;
                };
                if let Some(index) = self.members.iter().position(|m| m.name == name) {
                    return index;
                }
            }
            assert!(Instant::now() < deadline, "no etcd leader within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            if self.members[i].stopped {
                let _ = signal(&child, "CONT");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.members[i].stopped = false;
    }

    /// Starts member `i` again on its data and ports, and waits until it
    /// answers.
    pub async fn start_member(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
        self.wait_ready(i).await;
    }

    /// Freezes member `i` (SIGSTOP): its sockets stay open, nothing answers.
    pub fn freeze(&mut self, i: usize) {
        let child = self.members[i].child.as_ref().expect("member is running");
        signal(child, "STOP").expect("SIGSTOP the member");
        self.members[i].stopped = true;
    }

    /// Thaws member `i` (SIGCONT) and waits until it answers.
    pub async fn thaw(&mut self, i: usize) {
        let child = self.members[i].child.as_ref().expect("member is running");
        signal(child, "CONT").expect("SIGCONT the member");
        self.members[i].stopped = false;
        self.wait_ready(i).await;
    }

    /// Kills every member, then starts them all again on their data.
    pub async fn restart_all(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
        for i in 0..3 {
            self.spawn(i);
        }
        for i in 0..3 {
            self.wait_ready(i).await;
        }
    }
}

/// Sends a signal with `kill(1)` (this crate has no libc binding).
fn signal(child: &Child, name: &str) -> std::io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("kill -{name} failed")))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
