//! lb on other hosts of a cluster: a replica cannot open lb's API, etcd or
//! the registry on another machine lb runs on, while that machine's other
//! ports stay open to it.
//!
//! The "other host" is a network namespace of the test's own behind a veth
//! pair (10.213.x.2, the host side 10.213.x.1), reached from replicas
//! through the host's `FORWARD` path like a real second machine. Inside it
//! busybox `nc` answers on four ports: one named as a second API instance
//! (`lb node --api http://127.0.0.1:P,http://10.213.x.2:A`), etcd's 2379,
//! one given as the registry's address (`LB_REGISTRY_ADDRESS`), and one lb
//! knows nothing of. The node runs as its own `lb node` next to an
//! `lb up --no-node`, as on a host of a cluster. Run with `LB_NO_FIREWALL=1`
//! to see the probes to the lb ports succeed and the test fail.

use super::harness::*;

const LB: &str = env!("CARGO_BIN_EXE_lb");

/// A process's pseudo-random number (no `rand` in the tests' deps): the
/// clock's nanoseconds and the pid.
fn random() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

/// Runs `ip <args>`, failing the test when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Another machine, played by a network namespace behind a veth pair:
/// its listeners are killed and the namespace (with the veth) removed on
/// drop.
struct OtherHost {
    netns: String,
    veth: String,
    /// The namespace's address, as other hosts reach it.
    address: String,
    listeners: Vec<Child>,
}

impl OtherHost {
    /// A namespace `lbt-host-<random>` at 10.213.x.2/30 (x random, not
    /// used on this host yet), routed through the host at 10.213.x.1.
    fn make() -> Self {
        let routes = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-4", "addr"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        let mut seed = random();
        let x = loop {
            let x = seed % 256;
            if !routes.contains(&format!("10.213.{x}.")) {
                break x;
            }
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        };
        let tag = format!("{:04x}", random() & 0xffff);
        let netns = format!("lbt-host-{tag}");
        let veth = format!("lbt-h{tag}");
        let inside = format!("lbt-n{tag}");
        ip(&["netns", "add", &netns]);
        // From here on, whatever fails is cleaned up by Drop.
        let host = Self {
            netns,
            veth,
            address: format!("10.213.{x}.2"),
            listeners: Vec::new(),
        };
        let ns = host.netns.as_str();
        ip(&[
            "link", "add", &host.veth, "type", "veth", "peer", "name", &inside,
        ]);
        ip(&["link", "set", &inside, "netns", ns]);
        ip(&[
            "addr",
            "add",
            &format!("10.213.{x}.1/30"),
            "dev",
            &host.veth,
        ]);
        ip(&["link", "set", &host.veth, "up"]);
        let cidr = format!("{}/30", host.address);
        ip(&[
            "netns", "exec", ns, "ip", "addr", "add", &cidr, "dev", &inside,
        ]);
        ip(&["netns", "exec", ns, "ip", "link", "set", &inside, "up"]);
        ip(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
        let gateway = format!("10.213.{x}.1");
        ip(&[
            "netns", "exec", ns, "ip", "route", "add", "default", "via", &gateway,
        ]);
        host
    }

    /// Answers every connection to `port` inside the namespace with
    /// `text`, and waits (5 s) until the host reads it there.
    fn listen(&mut self, port: u16, text: &str) {
        let port_arg = port.to_string();
        let mut args = vec![
            "netns",
            "exec",
            &self.netns,
            "/bin/busybox",
            "nc",
            "-ll",
            "-p",
            &port_arg,
            "-e",
            "/bin/echo",
        ];
        args.extend(text.split_whitespace());
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("run ip netns exec busybox nc");
        // `ip netns exec` execs the command: this is nc's pid.
        self.listeners.push(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let said = self.read_from_host(port);
            if said.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}:{port} does not answer the host: {said:?}",
                self.address
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the host itself reads from the namespace's `port`.
    fn read_from_host(&self, port: u16) -> String {
        let address = format!("{}:{port}", self.address).parse().unwrap();
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))
        else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut said = String::new();
        let _ = stream.read_to_string(&mut said);
        said
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        for child in &mut self.listeners {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The veth goes with the namespace; deleted again in case the
        // namespace never got its end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
    }
}

/// A running `lb node` of its own (data dir `<dir>/node`), killed on drop,
/// with its containers removed and then its chains and networks (`lb node
/// uninstall`).
struct Node {
    child: Child,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        stop_and_clean(&mut self.child, &self.dir);
    }
}

/// Starts `lb node --api <apis>` joining with `token`, data dir
/// `<dir>/node`.
// The child is waited for by `Node`'s Drop.
#[allow(clippy::zombie_processes)]
fn start_node(dir: &Path, apis: &str, token: &str) -> Node {
    let child = Command::new(LB)
        .args(["node", "--api", apis, "--join-token", token])
        .args(["--name", &format!("hosts-{:08x}", random())])
        .arg("--data-dir")
        .arg(dir.join("node"))
        .env_remove("LB_DATA_DIR")
        .env_remove("LB_API")
        .env("LB_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start lb node");
    Node {
        child,
        dir: dir.to_owned(),
    }
}

/// What a replica reads from `host:port` within a few seconds; empty (or
/// nc's complaint) when it cannot connect.
fn probe(container: &str, host: &str, port: u16) -> String {
    let script =
        format!("/bin/busybox timeout 6 /bin/busybox nc -w 3 {host} {port} </dev/null 2>&1");
    exec(container, &script).1
}

/// The lines of `iptables -S` that drop new connections from project
/// bridges to `address` in `chain`.
fn drops_towards(chain: &str, address: &str) -> Vec<String> {
    let out = Command::new("iptables")
        .args(["-w", "-S", chain])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("-d {address}/32")) && l.ends_with("-j DROP"))
        .map(str::to_owned)
        .collect()
}

/// Whether one of `rules` names `port` in its `--dports` list.
fn drops_port(rules: &[String], port: u16) -> bool {
    rules.iter().any(|rule| {
        let mut words = rule.split_whitespace();
        while let Some(word) = words.next() {
            if word == "--dports" {
                return words
                    .next()
                    .is_some_and(|list| list.split(',').any(|p| p == port.to_string()));
            }
        }
        false
    })
}

#[test]
fn replicas_cannot_reach_lb_on_other_hosts() {
    let image = lb_testing::busybox_image();
    let mut other = OtherHost::make();
    let api_port = 20_000 + (random() % 10_000) as u16;
    let registry_port = api_port + 1;
    let unrelated_port = api_port + 2;
    other.listen(api_port, "lb api elsewhere");
    other.listen(2379, "etcd elsewhere");
    other.listen(registry_port, "registry elsewhere");
    other.listen(unrelated_port, "unrelated service");
    let address = other.address.clone();

    let dir = tempfile::tempdir().unwrap();
    let registry = format!("{address}:{registry_port}");
    let up = start_with(
        &dir.path().join("data"),
        &[("LB_NO_NODE", "true"), ("LB_REGISTRY_ADDRESS", &registry)],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = User::log_in_as(&up.api, "admin", "admin-password").await;
        let (status, body) = admin
            .call("POST", "/nodes/join-tokens", json!({"ttl": 600}))
            .await;
        assert_eq!(status, 201, "{body}");
        let token: Value = serde_json::from_str(&body).unwrap();
        let token = token["token"].as_str().unwrap().to_owned();
        // This host's API first, the other host's second: the node joins
        // and stays through the first that answers.
        let local = up.api.trim_end_matches("/api/v1");
        let apis = format!("{local},http://{address}:{api_port}");
        let node_dir = dir.path().join("other");
        let mut node = start_node(&node_dir, &apis, &token);
        let deadline = Instant::now() + Duration::from_secs(30);
        let id = loop {
            if let Some(id) = node_id(&node_dir) {
                break id;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("lb node --api {apis} exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "lb node --api {apis} did not join"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        loop {
            let (_, body) = admin
                .call("GET", &format!("/nodes/{id}"), Value::Null)
                .await;
            let n: Value = serde_json::from_str(&body).unwrap_or_default();
            if n["alive"] == true && n["capacity"]["memory"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "node not alive: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let alice = User::sign_up(&up.api, "alice").await;
        let (status, body) = alice
            .call("POST", "/projects", json!({"name": "shop"}))
            .await;
        assert_eq!(status, 201, "{body}");
        let client = json!({"name": "client", "image": image, "memory": 32,
            "command": ["/bin/busybox", "sleep", "3600"]});
        let (status, body) = alice.call("POST", "/projects/shop/services", client).await;
        assert_eq!(status, 201, "{body}");
        let client = alice.running("shop", "client", 1).await.remove(0);
        let _containers = Containers(vec![client.clone()]);
        let networks = docker(&[
            "inspect",
            "-f",
            "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}",
            &client,
        ]);
        assert!(networks.trim().starts_with("lb-"), "{networks}");

        // The route is there: the other host's port lb does not know of
        // answers the replica ...
        let mut said = String::new();
        for _ in 0..3 {
            said = probe(&client, &address, unrelated_port);
            if said.contains("unrelated service") {
                break;
            }
        }
        assert!(
            said.contains("unrelated service"),
            "a replica cannot reach {address}:{unrelated_port} at all: {said:?}"
        );
        // ... lb's API, etcd and the registry there do not.
        for (what, port, text) in [
            ("API", api_port, "lb api"),
            ("etcd", 2379, "etcd"),
            ("registry", registry_port, "registry"),
        ] {
            let said = probe(&client, &address, port);
            assert!(
                !said.contains(text),
                "a replica reached lb's {what} on the other host at {address}:{port}: {said:?}"
            );
            // Not the listener's doing: the host still reads it.
            let from_host = other.read_from_host(port);
            assert!(from_host.contains(text), "{what}: {from_host:?}");
        }

        // The rules behind it, in the node's forward chain: the API's port
        // and etcd's from --api, the registry's from the assignment set.
        let (forward, _) = lb_node::firewall::chains(&id);
        let rules = drops_towards(&forward, &address);
        for port in [api_port, 2379, 2380, registry_port] {
            assert!(
                drops_port(&rules, port),
                "no drop of {address}:{port} in {forward}: {rules:?}"
            );
        }
        assert!(
            !drops_port(&rules, unrelated_port),
            "{unrelated_port} dropped: {rules:?}"
        );
        // The loopback API of the first URL gets no forward rule.
        assert!(drops_towards(&forward, "127.0.0.1").is_empty());

        // A second API URL that is no API keeps the node ready.
        let (_, body) = admin
            .call("GET", &format!("/nodes/{id}"), Value::Null)
            .await;
        let n: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(n["state"], "ready", "{n}");
        drop(node);
    });
    drop(up);
    let (netns, veth) = (other.netns.clone(), other.veth.clone());
    drop(other);
    // Nothing of the other host is left.
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&netns));
    let link = Command::new("ip")
        .args(["link", "show", &veth])
        .output()
        .unwrap();
    assert!(!link.status.success(), "{veth} is still there");
}
