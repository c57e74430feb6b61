//! Project networks and the node's firewall: replicas of one project reach
//! each other by service name, another tenant's replica not at all, and no
//! replica reaches lb's ports on the host (at any of its addresses) or a
//! link-local address; published ports still answer from the host.
//!
//! lb listens on 0.0.0.0 here (free ports), so the host's lb ports are
//! there to be reached but for the firewall. The link-local address is
//! 169.254.169.254 put on `lo` with a listener of the test's
//! own, so "not reached" means the firewall, not a missing service. Run
//! with `LB_NO_FIREWALL=1` to see the host and link-local checks fail.

use super::harness::*;

const LB: &str = env!("CARGO_BIN_EXE_lb");
const METADATA: &str = "169.254.169.254";

/// `lb up` listening on every address, and what it leaves behind: its
/// containers, networks and firewall chains go on drop.
struct Lb {
    child: Child,
    data: PathBuf,
    api: String,
    api_port: u16,
    registry_port: u16,
    containers: Vec<String>,
}

impl Drop for Lb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for id in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
        let Some(node) = node_id(&self.data) else {
            return;
        };
        // Only this node's networks (labelled with its id).
        let filter = format!("label=lb.node={node}");
        if let Ok(out) = Command::new("docker")
            .args(["network", "ls", "-q", "--filter", &filter])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["network", "rm", id]).output();
            }
        }
        let problems = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(lb_node::firewall::uninstall(&node));
        if !problems.is_empty() && !std::thread::panicking() {
            panic!("firewall not removed: {problems:?}");
        }
    }
}

/// The node's id, from its credential file.
fn node_id(data: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data.join("node").join("node.json")).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    value["id"].as_str().map(str::to_owned)
}

/// Starts `lb up` on 0.0.0.0 (free ports) and waits for it to be up.
// The child is waited for by `Lb`'s Drop.
#[allow(clippy::zombie_processes)]
fn start_everywhere(data: &Path) -> Lb {
    let mut child = Command::new(LB)
        .args(["up", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data)
        .env_remove("LB_ETCD")
        .env_remove("LB_DATA_DIR")
        .env("LB_REGISTRY_LISTEN", "0.0.0.0:0")
        .env("LB_HTTP_LISTEN", "127.0.0.1:0")
        .env("LB_ADMIN_PASSWORD", "admin-password")
        .env("LB_LOG", "warn")
        .env("LB_NO_INGRESS", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start lb up");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let port = |addr: &str| -> u16 {
        let addr = addr.trim().trim_end_matches('/');
        addr.rsplit(':').next().unwrap().parse().unwrap()
    };
    let mut registry_port = None;
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lb up printed no URL within 30 s");
        };
        if let Some(rest) = line.strip_prefix("registry: ") {
            registry_port = Some(port(rest));
        }
        if let Some(rest) = line.strip_prefix("lb is up: ") {
            let url = rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/');
            return Lb {
                api: format!("{url}/api/v1"),
                api_port: port(url),
                registry_port: registry_port.expect("lb up printed its registry first"),
                data: data.to_owned(),
                child,
                containers: Vec::new(),
            };
        }
    }
}

/// 169.254.169.254 on `lo`, removed on drop.
struct Metadata;

impl Metadata {
    fn add() -> Self {
        // No dummy interfaces in every kernel: the address goes on `lo`.
        let cidr = format!("{METADATA}/32");
        let _ = Command::new("ip")
            .args(["addr", "del", &cidr, "dev", "lo"])
            .output();
        let out = Command::new("ip")
            .args(["addr", "add", &cidr, "dev", "lo"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip addr add {cidr} dev lo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Metadata
    }
}

impl Drop for Metadata {
    fn drop(&mut self) {
        let cidr = format!("{METADATA}/32");
        let _ = Command::new("ip")
            .args(["addr", "del", &cidr, "dev", "lo"])
            .output();
    }
}

/// Answers every connection on `listener` with `text`, in a thread.
fn answer(listener: std::net::TcpListener, text: &'static str) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            use std::io::Write;
            let _ = stream.write_all(text.as_bytes());
        }
    });
}

/// The host's address towards the outside (its primary address).
fn primary_address() -> String {
    let out = Command::new("ip")
        .args(["-4", "route", "get", "1.1.1.1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        if word == "src" {
            return words.next().unwrap().to_owned();
        }
    }
    let out = Command::new("hostname").arg("-I").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("the host has an address")
        .to_owned()
}

/// What a replica reads from `host:port` (an HTTP request is sent), within
/// a few seconds; empty when it cannot connect.
fn probe(container: &str, host: &str, port: u16) -> String {
    let script = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox timeout 5 /bin/busybox nc -w 3 {host} {port} 2>&1"
    );
    exec(container, &script).1
}

fn inspect(container: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, container])
        .trim()
        .to_owned()
}

/// A service that answers "hello from <tenant>" on port 8080.
fn server(image: &str, tenant: &str, publish: bool) -> Value {
    let script =
        format!("while true; do echo hello from {tenant} | /bin/busybox nc -l -p 8080; done");
    let mut spec = json!({"name": "server", "image": image, "memory": 32,
        "command": ["/bin/busybox", "sh", "-c", script]});
    if publish {
        spec["ports"] = json!([{"container": 8080}]);
    }
    spec
}

#[test]
fn projects_are_kept_apart_and_away_from_the_host() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let _metadata = Metadata::add();
    let metadata =
        std::net::TcpListener::bind((METADATA, 80)).expect("listen on 169.254.169.254:80");
    answer(metadata, "metadata: secret\n");
    // A port of the host that is not lb's: replicas may reach it.
    let other = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    answer(other, "other host service\n");

    let mut lb = start_everywhere(&dir.path().join("data"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let alice = User::sign_up(&lb.api, "alice").await;
        let bob = User::sign_up(&lb.api, "bob").await;
        assert_eq!(
            alice
                .call("POST", "/projects", json!({"name": "shop"}))
                .await
                .0,
            201
        );
        assert_eq!(
            bob.call("POST", "/projects", json!({"name": "bank"}))
                .await
                .0,
            201
        );
        let (status, body) = alice
            .call(
                "POST",
                "/projects/shop/services",
                server(image, "alice", true),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let client = json!({"name": "client", "image": image, "memory": 32,
            "command": ["/bin/busybox", "sleep", "3600"]});
        assert_eq!(
            alice
                .call("POST", "/projects/shop/services", client)
                .await
                .0,
            201
        );
        let (status, body) = bob
            .call(
                "POST",
                "/projects/bank/services",
                server(image, "bob", false),
            )
            .await;
        assert_eq!(status, 201, "{body}");

        let alice_server = alice.running("shop", "server", 1).await.remove(0);
        lb.containers.push(alice_server.clone());
        let client = alice.running("shop", "client", 1).await.remove(0);
        lb.containers.push(client.clone());
        let bob_server = bob.running("bank", "server", 1).await.remove(0);
        lb.containers.push(bob_server.clone());

        // Each project on a network of its own, on this node.
        let networks = "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}";
        let shop_net = inspect(&client, networks);
        assert_eq!(inspect(&alice_server, networks), shop_net);
        let bank_net = inspect(&bob_server, networks);
        assert!(
            shop_net.starts_with("lb-") && bank_net.starts_with("lb-"),
            "{shop_net} {bank_net}"
        );
        assert_ne!(shop_net, bank_net);
        let gateway = docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            &shop_net,
        ])
        .trim()
        .to_owned();
        let ip = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}";
        let bob_ip = inspect(&bob_server, ip);
        let alice_ip = inspect(&alice_server, ip);

        // Same project: by service name (and by address).
        let said = probe(&client, "server", 8080);
        assert!(
            said.contains("hello from alice"),
            "by service name: {said:?}"
        );
        let said = probe(&client, &alice_ip, 8080);
        assert!(said.contains("hello from alice"), "by address: {said:?}");
        // Another tenant's replica: not at all, by address or by name.
        let said = probe(&client, &bob_ip, 8080);
        assert!(
            !said.contains("hello"),
            "alice reached bob's replica: {said:?}"
        );
        let said = probe(&bob_server, &alice_ip, 8080);
        assert!(
            !said.contains("hello"),
            "bob reached alice's replica: {said:?}"
        );

        // The host: lb's API and registry at every address of the host are
        // closed to replicas, while the host itself reaches them...
        let host = primary_address();
        for address in [host.as_str(), gateway.as_str()] {
            let api = format!("{address}:{}", lb.api_port);
            let registry = format!("{address}:{}", lb.registry_port);
            for (what, target) in [("API", &api), ("registry", &registry)] {
                let from_host = std::net::TcpStream::connect_timeout(
                    &target.parse().unwrap(),
                    Duration::from_secs(3),
                );
                assert!(
                    from_host.is_ok(),
                    "the host cannot reach lb's {what} at {target}"
                );
            }
            let said = probe(&client, address, lb.api_port);
            assert!(
                !said.contains("HTTP/"),
                "a replica reached lb's API at {api}: {said:?}"
            );
            let said = probe(&client, address, lb.registry_port);
            assert!(
                !said.contains("HTTP/"),
                "a replica reached lb's registry at {registry}: {said:?}"
            );
            // ... and the host's other ports stay open to them.
            let said = probe(&client, address, other_port);
            assert!(
                said.contains("other host service"),
                "a replica could not reach the host's port {other_port} at {address}: {said:?}"
            );
        }
        // Link-local (cloud metadata).
        let said = probe(&client, METADATA, 80);
        assert!(
            !said.contains("metadata"),
            "a replica reached {METADATA}: {said:?}"
        );

        // Published ports still answer from the host, at any address.
        let host_port: u16 = inspect(
            &alice_server,
            "{{(index (index .NetworkSettings.Ports \"8080/tcp\") 0).HostPort}}",
        )
        .parse()
        .unwrap();
        for address in ["127.0.0.1", host.as_str()] {
            let mut said = String::new();
            // The listener's loop may be between connections: a few tries.
            for _ in 0..10 {
                said.clear();
                let Ok(mut stream) = std::net::TcpStream::connect((address, host_port)) else {
                    // Refused by the container itself between two `nc -l`.
                    std::thread::sleep(Duration::from_millis(300));
                    continue;
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                said.clear();
                let _ = stream.read_to_string(&mut said);
                if said.contains("hello") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            assert!(
                said.contains("hello from alice"),
                "published port at {address}:{host_port}: {said:?}"
            );
        }

        // The node's chains are in place, hooked where they belong.
        let node = node_id(&lb.data).expect("the node joined");
        let (forward, input) = lb_node::firewall::chains(&node);
        let rules = Command::new("iptables")
            .args(["-w", "-S"])
            .output()
            .unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(
            rules.contains(&format!("-A DOCKER-USER -j {forward}")),
            "{rules}"
        );
        assert!(rules.contains(&format!("-A INPUT -j {input}")), "{rules}");

        // A deleted project's network goes with its last replica.
        let (status, body) = bob
            .call("DELETE", "/projects/bank/services/server", Value::Null)
            .await;
        assert!(status == 200 || status == 204, "{status} {body}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new("docker")
                .args(["network", "inspect", &bank_net])
                .output()
                .unwrap();
            if !out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{bank_net} still there 60 s after its last replica"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    drop(lb);
    // Nothing of the node is left in iptables.
    let rules = Command::new("iptables")
        .args(["-w", "-S"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(
        !rules.contains(&node_marker(&dir.path().join("data"))),
        "{rules}"
    );
}

/// The chain suffix of the node of `data`.
fn node_marker(data: &Path) -> String {
    let node = node_id(data).expect("the node joined");
    lb_node::firewall::chains(&node).0
}

/// `iptables -S`.
fn iptables_rules() -> String {
    let out = Command::new("iptables")
        .args(["-w", "-S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn iptables(args: &[&str]) {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "iptables {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The node's upkeep: rules taken away under a running node (its jump
/// from DOCKER-USER deleted, its INPUT chain flushed, as `iptables -F` or
/// a firewalld reload does) are written again within the upkeep period;
/// replicas are kept from lb's API and from another project again, and the
/// node stays `ready` without problems. Fails with the upkeep off.
#[test]
fn rules_taken_away_come_back() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let mut lb = start_everywhere(&dir.path().join("data"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let alice = User::sign_up(&lb.api, "alice").await;
        let bob = User::sign_up(&lb.api, "bob").await;
        for (user, project) in [(&alice, "shop"), (&bob, "bank")] {
            let (status, body) = user
                .call("POST", "/projects", json!({"name": project}))
                .await;
            assert_eq!(status, 201, "{body}");
        }
        let client = json!({"name": "client", "image": image, "memory": 32,
            "command": ["/bin/busybox", "sleep", "3600"]});
        let (status, body) = alice.call("POST", "/projects/shop/services", client).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = bob
            .call(
                "POST",
                "/projects/bank/services",
                server(image, "bob", false),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let client = alice.running("shop", "client", 1).await.remove(0);
        lb.containers.push(client.clone());
        let bob_server = bob.running("bank", "server", 1).await.remove(0);
        lb.containers.push(bob_server.clone());
        let bob_ip = inspect(
            &bob_server,
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        );
        let gateway = inspect(
            &client,
            "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}",
        );
        let kept_apart = |when: &str| {
            let said = probe(&client, &gateway, lb.api_port);
            assert!(
                !said.contains("HTTP/"),
                "{when}: a replica reached lb's API at {gateway}:{}: {said:?}",
                lb.api_port
            );
            let said = probe(&client, &bob_ip, 8080);
            assert!(
                !said.contains("hello"),
                "{when}: alice reached bob's replica: {said:?}"
            );
        };
        kept_apart("before");

        let node = node_id(&lb.data).expect("the node joined");
        let (forward, input) = lb_node::firewall::chains(&node);
        let hook = format!("-A DOCKER-USER -j {forward}");
        let input_drop = |rules: &str| {
            rules
                .lines()
                .any(|l| l.starts_with(&format!("-A {input} ")) && l.ends_with("-j DROP"))
        };
        assert!(iptables_rules().contains(&hook));
        assert!(input_drop(&iptables_rules()));
        iptables(&["-D", "DOCKER-USER", "-j", &forward]);
        iptables(&["-F", &input]);
        let taken = Instant::now();
        // Meanwhile the host's API is open to replicas (unless the upkeep
        // ran in between): told, not asserted.
        let said = probe(&client, &gateway, lb.api_port);
        eprintln!(
            "rules taken away: a replica reaches lb's API: {}",
            said.contains("HTTP/")
        );

        let period = lb_node::firewall::UPKEEP + Duration::from_secs(10);
        loop {
            let rules = iptables_rules();
            if rules.contains(&hook) && input_drop(&rules) {
                break;
            }
            assert!(
                taken.elapsed() < period,
                "the node's rules did not come back within {} s: {rules}",
                period.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("rules back after {:?}", taken.elapsed());
        // Once each: written again, not piled up.
        let rules = iptables_rules();
        assert_eq!(rules.matches(&hook).count(), 1, "{rules}");
        assert_eq!(
            rules.matches(&format!("-A INPUT -j {input}")).count(),
            1,
            "{rules}"
        );
        kept_apart("after the upkeep");

        // The node is ready, with nothing to report.
        let admin = User::log_in_as(&lb.api, "admin", "admin-password").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = admin.call("GET", "/nodes", Value::Null).await;
            assert_eq!(status, 200, "{body}");
            let list: Value = serde_json::from_str(&body).unwrap();
            let node = &list["items"][0];
            if node["state"] == "ready" && node["status"].get("problems").is_none() {
                break;
            }
            assert!(Instant::now() < deadline, "the node is not ready: {node}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}
