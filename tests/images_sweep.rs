//! The node's image sweep end to end (issue 16): `lb up` without a node of
//! its own, and a real `lb node` joined to it that sweeps every 2 s. Two
//! services run images pushed to lb's registry; the live one is updated to
//! a second image. Once the other service is deleted, its image leaves the
//! engine within a few sweeps, while the live service keeps both its
//! running image and the previous one (a rollback target). Needs Docker,
//! skopeo and busybox-static.

#[allow(dead_code, unused_imports)]
#[path = "isolation/harness.rs"]
mod harness;

use harness::*;

const SWEEP: &str = "2s";
/// How long an image of a deleted service may stay: its container's removal,
/// then two sweeps (seen unused, then removed), with room for a slow host.
const GONE_WITHIN: Duration = Duration::from_secs(60);

/// A running `lb node`: killed on drop, then its containers removed and its
/// firewall chains and networks (`lb node uninstall`).
struct NodeProcess {
    child: Child,
    /// The node's data dir.
    data: PathBuf,
    /// Its id, once joined.
    id: Option<String>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(id) = &self.id {
            if let Ok(out) = Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("label=lb.node={id}")])
                .output()
            {
                for c in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("docker").args(["rm", "-f", c]).output();
                }
            }
        }
        let _ = uninstall(&self.data);
    }
}

/// Local images removed on drop (those already gone are ignored).
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}

/// Builds a distinct image (a label of its own) from the busybox test image.
fn build(tag: &str, label: &str) {
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docker build");
    let dockerfile = format!(
        "FROM {}\nLABEL lb.test.sweep=\"{label}\"\n",
        lb_testing::busybox_image()
    );
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), dockerfile.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `skopeo copy` of a local image into lb's registry.
fn push(image: &str, dest: &str, creds: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", creds])
        .arg(format!("docker-daemon:{image}"))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy {image} {dest}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The engine's id of the image a container was made from.
fn image_of(container: &str) -> String {
    docker(&["inspect", "--format", "{{.Image}}", container])
        .trim()
        .to_owned()
}

/// Whether `docker images` still lists the image `id`.
fn listed(id: &str) -> bool {
    docker(&["images", "-q", "--no-trunc"])
        .lines()
        .any(|l| l.trim() == id)
}

async fn ok(user: &User, method: &str, path: &str, body: Value) -> Value {
    let (status, text) = user.call(method, path, body).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    serde_json::from_str(&text).unwrap_or_default()
}

/// Runs one replica of `service` from its image `tag` in lb's registry.
async fn deploy(user: &User, registry: &str, service: &str, tag: &str) {
    let body = json!({"image": format!("{registry}/demo/{service}:{tag}"), "replicas": 1});
    let path = format!("/projects/demo/services/{service}");
    ok(user, "PATCH", &path, body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_services_images_leave_the_engine_and_a_live_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_with(&dir.path().join("data"), &[("LB_NO_NODE", "true")]);
    let registry = up.registry.clone();
    assert!(!registry.is_empty(), "lb up printed no registry address");
    let base = up.api.trim_end_matches("/api/v1").to_owned();

    // A node of its own, sweeping every 2 s.
    let admin = User::log_in_as(&up.api, "admin", "admin-password").await;
    let token = ok(&admin, "POST", "/nodes/join-tokens", json!({})).await;
    let token = token["token"].as_str().expect("a join token").to_owned();
    let node_dir = dir.path().join("node");
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let suffix = lb_model::ids::new_id().to_lowercase();
    let mut node = NodeProcess {
        child: Command::new(env!("CARGO_BIN_EXE_lb"))
            .args(["node", "--api", &base, "--join-token", &token])
            .args(["--name", &format!("sweep-{}", &suffix[18..])])
            .args(["--image-gc-interval", SWEEP])
            .arg("--data-dir")
            .arg(&node_dir)
            .env_remove("LB_DATA_DIR")
            .env_remove("LB_ETCD")
            .env("LB_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start lb node"),
        data: node_dir.clone(),
        id: None,
    };
    let node_log = || std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.id.is_none() {
        if let Ok(text) = std::fs::read_to_string(node_dir.join("node.json")) {
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            node.id = v["id"].as_str().map(str::to_owned);
        }
        if let Ok(Some(status)) = node.child.try_wait() {
            panic!("lb node exited: {status}\n{}", node_log());
        }
        assert!(Instant::now() < deadline, "lb node did not join");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Two services, their images pushed to lb's registry from distinct
    // local images that are then untagged: the engine's copies are the
    // node's pulls, named only in lb's registry.
    let alice = User::sign_up(&up.api, "alice").await;
    ok(&alice, "POST", "/projects", json!({"name": "demo"})).await;
    for name in ["gone", "live"] {
        let spec = json!({"name": name, "image": lb_testing::busybox_image(),
            "replicas": 0, "memory": 16, "command": ["/bin/busybox", "sleep", "3600"]});
        ok(&alice, "POST", "/projects/demo/services", spec).await;
    }
    let creds = "alice:password-1";
    let local = |n: &str| format!("lb-sweep-test-{suffix}:{n}");
    let _images = Images(["gone-1", "live-1", "live-2"].map(local).to_vec());
    for (n, dest) in [
        ("gone-1", "gone:1"),
        ("live-1", "live:1"),
        ("live-2", "live:2"),
    ] {
        build(&local(n), &format!("{suffix}-{n}"));
        push(&local(n), &format!("{registry}/demo/{dest}"), creds);
        docker(&["rmi", &local(n)]);
    }
    deploy(&alice, &registry, "gone", "1").await;
    deploy(&alice, &registry, "live", "1").await;
    let gone = image_of(&alice.running("demo", "gone", 1).await[0]);
    let live_1 = image_of(&alice.running("demo", "live", 1).await[0]);
    assert_ne!(gone, live_1);
    // The live service moves to its second image; the first, unused now,
    // is its rollback target.
    deploy(&alice, &registry, "live", "2").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let live_2 = loop {
        let image = image_of(&alice.running("demo", "live", 1).await[0]);
        if image != live_1 {
            break image;
        }
        assert!(Instant::now() < deadline, "live did not move to image 2");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(listed(&gone) && listed(&live_1) && listed(&live_2));

    // Deleted: its container goes, then its image within a few sweeps.
    ok(
        &alice,
        "DELETE",
        "/projects/demo/services/gone",
        Value::Null,
    )
    .await;
    let deleted = Instant::now();
    while listed(&gone) {
        assert!(
            deleted.elapsed() < GONE_WITHIN,
            "the deleted service's image {gone} is still in the engine after {GONE_WITHIN:?}\n{}",
            node_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // live_1 was unused for longer than gone's image: a sweep that took
    // rollback targets would have taken it by now.
    assert!(
        listed(&live_1),
        "the live service's previous image (a rollback target) was removed"
    );
    assert!(
        listed(&live_2),
        "the live service's running image was removed"
    );
    assert!(
        node_log().contains("image gc: removed an unused image"),
        "{}",
        node_log()
    );
    drop(node);
    drop(up);
}
