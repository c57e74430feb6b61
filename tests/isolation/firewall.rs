//! The node's firewall as the operator sees it: a node that cannot apply
//! its rules says so (the admin's node list shows its problems and the
//! state `isolation not enforced`, not `ready`), and `lb node uninstall`
//! takes the chains and the unused project networks away, idempotently.

use super::harness::*;

/// A PATH with everything lb needs but iptables (Debian keeps it in
/// `/usr/sbin`).
const PATH_WITHOUT_IPTABLES: &str = "/usr/local/bin:/usr/bin:/bin";

/// The admin's view of the only node, once its heartbeat says something
/// `ready` to tell (within 30 s).
async fn the_node(admin: &User, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = admin.call("GET", "/nodes", Value::Null).await;
        assert_eq!(status, 200, "{body}");
        let list: Value = serde_json::from_str(&body).unwrap();
        let node = &list["items"][0];
        if !node["status"].is_null() && until(node) {
            return node.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the node did not report within 30 s: {list}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The lines of `iptables -S` naming `what`.
fn rules_naming(what: &str) -> Vec<String> {
    let out = Command::new("iptables")
        .args(["-w", "-S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_node_that_cannot_apply_its_firewall_is_not_ready() {
    for dir in PATH_WITHOUT_IPTABLES.split(':') {
        assert!(
            !Path::new(dir).join("iptables-restore").exists(),
            "iptables-restore in {dir}: the test needs a PATH without it"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = start_with(&data, &[("PATH", PATH_WITHOUT_IPTABLES)]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = User::log_in_as(&up.api, "admin", "admin-password").await;
        let node = the_node(&admin, |_| true).await;
        assert_eq!(node["state"], "isolation not enforced", "{node}");
        assert_eq!(node["ready"], false, "{node}");
        assert_eq!(node["alive"], true, "{node}");
        let problems = node["status"]["problems"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            problems.iter().any(|p| p.as_str().is_some_and(
                |p| p.starts_with("firewall: ") && p.contains("iptables-restore not found")
            )),
            "{node}"
        );
        // A user does not see the nodes at all.
        let alice = User::sign_up(&up.api, "alice").await;
        assert_eq!(alice.call("GET", "/nodes", Value::Null).await.0, 403);
    });
    // No chain of this node was made.
    let node = node_id(&data).expect("the node joined");
    let (forward, input) = lb_node::firewall::chains(&node);
    assert!(rules_naming(&forward).is_empty() && rules_naming(&input).is_empty());
    drop(up);
}

#[test]
fn a_node_with_its_firewall_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = start(&data);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = User::log_in_as(&up.api, "admin", "admin-password").await;
        let node = the_node(&admin, |_| true).await;
        assert_eq!(node["state"], "ready", "{node}");
        assert_eq!(node["ready"], true, "{node}");
        assert!(node["status"].get("problems").is_none(), "{node}");
    });
    let node = node_id(&data).expect("the node joined");
    let (forward, input) = lb_node::firewall::chains(&node);
    assert_eq!(rules_naming(&format!("-j {forward}")).len(), 1);
    assert_eq!(rules_naming(&format!("-j {input}")).len(), 1);
    // Dropping the harness uninstalls: nothing of the node is left.
    drop(up);
    assert_eq!(rules_naming(&forward), Vec::<String>::new());
    assert_eq!(rules_naming(&input), Vec::<String>::new());
}

/// Runs `lb node uninstall` at the end of the test whatever happened, and
/// removes the containers of the node first.
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Some(node) = node_id(&self.0) {
            let out = docker_quiet(&["ps", "-aq", "--filter", &format!("label=lb.node={node}")]);
            for id in out.split_whitespace() {
                docker_quiet(&["rm", "-f", id]);
            }
        }
        uninstall(&self.0);
    }
}

fn docker_quiet(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn lb_node_uninstall_removes_the_chains_and_unused_networks() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _leftovers = Leftovers(data.clone());
    let up = start(&data);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let container = runtime.block_on(async {
        let alice = User::sign_up(&up.api, "alice").await;
        assert_eq!(
            alice
                .call("POST", "/projects", json!({"name": "shop"}))
                .await
                .0,
            201
        );
        let spec = json!({"name": "web", "image": image, "memory": 16,
            "command": ["/bin/busybox", "sleep", "3600"]});
        let (status, body) = alice.call("POST", "/projects/shop/services", spec).await;
        assert_eq!(status, 201, "{body}");
        alice.running("shop", "web", 1).await.remove(0)
    });
    let network = docker(&[
        "inspect",
        "-f",
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}",
        &container,
    ])
    .trim()
    .to_owned();
    assert!(network.starts_with("lb-"), "{network}");
    // Stopped without the harness's clean-up: the replica keeps running,
    // the chains and the network stay.
    let mut up = up;
    up.data = dir.path().join("elsewhere");
    let _ = up.stop();
    let node = node_id(&data).expect("the node joined");
    let (forward, input) = lb_node::firewall::chains(&node);
    assert_eq!(rules_naming(&format!("-j {forward}")).len(), 1);
    assert_eq!(rules_naming(&format!("-j {input}")).len(), 1);

    // The chains go; the network stays while a container uses it.
    let out = uninstall(&data);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("removed iptables chain {forward}"))
            && said.contains(&format!("removed iptables chain {input}")),
        "{said}"
    );
    assert!(!said.contains("removed network"), "{said}");
    assert!(
        rules_naming(&forward).is_empty(),
        "{:?}",
        rules_naming(&forward)
    );
    assert!(
        rules_naming(&input).is_empty(),
        "{:?}",
        rules_naming(&input)
    );
    docker(&["network", "inspect", &network]);
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &container]).trim(),
        "true",
        "uninstall touched a container"
    );

    // A stopped container still holds its network.
    docker(&["stop", "-t", "0", &container]);
    let said = String::from_utf8_lossy(&uninstall(&data).stdout).into_owned();
    assert!(!said.contains("removed network"), "{said}");
    docker(&["network", "inspect", &network]);

    // Without the container, the network goes; then nothing is left.
    docker(&["rm", "-f", &container]);
    let out = uninstall(&data);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}");
    assert_eq!(said.trim(), format!("removed network {network}"));
    let gone = Command::new("docker")
        .args(["network", "inspect", &network])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "{network} is still there");
    let out = uninstall(&data);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "nothing to remove"
    );

    // A data dir without a node credential is refused, naming --all.
    let out = uninstall(dir.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--all"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
