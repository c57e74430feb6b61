//! The node's image sweep on the real Docker engine: images tagged under a
//! made-up lb registry host (learned from a container of the node), beyond
//! the newest of a service with a container and unused, go on the second
//! pass, and so do all the unused images of a service with no container
//! (deleted); images in use, the newest of a service with a container,
//! other registries' and images also tagged outside lb stay.

use std::process::Command;
use std::time::Duration;

use lb_node::runtime::images::Sweeper;

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds a distinct image (its own label) tagged `tags`.
fn image(n: &str, tags: &[&str]) {
    use std::io::Write;
    let base = lb_testing::busybox_image();
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", tags[0], "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("FROM {base}\nLABEL lb.test.image-gc=\"{n}\"\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for tag in &tags[1..] {
        ok(&["tag", tags[0], tag]);
    }
}

fn exists(reference: &str) -> bool {
    docker(&["image", "inspect", reference]).status.success()
}

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = docker(&["rm", "-f", r]);
            let _ = docker(&["rmi", "-f", r]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_lb_images_beyond_the_newest_are_removed_and_nothing_else() {
    let id = || lb_model::ids::new_id().to_lowercase();
    let (pid, sid, other_sid, node) = (id(), id(), id(), lb_model::ids::new_id());
    // The labels of a container of service `sid` on this node.
    let labels = [
        format!("lb.node={node}"),
        format!("lb.project={}", pid.to_uppercase()),
        format!("lb.service={}", sid.to_uppercase()),
    ];
    let host = format!("gc-{}.invalid:5000", id());
    let tag = |s: &str, n: u32| format!("{host}/{pid}/{s}:{n}");
    let foreign = format!("other-{}.invalid:5000/{pid}/{sid}:9", id());
    let local = format!("lb-image-gc-test-{}:1", id());
    let mut cleanup = Cleanup(vec![
        tag(&sid, 0),
        tag(&sid, 1),
        tag(&sid, 2),
        tag(&sid, 3),
        tag(&sid, 4),
        tag(&other_sid, 1),
        foreign.clone(),
        local.clone(),
    ]);
    // Oldest first, a second apart (the engine lists creation in seconds).
    image("mixed", &[&tag(&sid, 0), &local]);
    for n in 1..=4 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        image(&n.to_string(), &[&tag(&sid, n)]);
    }
    // Another service, with no container (deleted): its only image goes.
    image("other service", &[&tag(&other_sid, 1)]);
    image("foreign", &[&foreign]);
    // Image 1 is used by a container of this node's replica of the service
    // (which also shows the sweep lb's registry host).
    let create = |image: &str| {
        ok(&[
            "create",
            "--label",
            &labels[0],
            "--label",
            &labels[1],
            "--label",
            &labels[2],
            image,
            "/bin/busybox",
            "true",
        ])
    };
    let container = create(&tag(&sid, 1));
    cleanup.0.insert(0, container);

    let mut sweeper = Sweeper::connect(&node, 2).unwrap();
    let first = sweeper.sweep().await.unwrap();
    assert!(
        first.removed.is_empty(),
        "the first pass removes nothing it had not seen unused: {first:?}"
    );
    let second = sweeper.sweep().await.unwrap();
    assert_eq!(second.removed.len(), 2, "{second:?}");
    assert!(
        !exists(&tag(&sid, 2)),
        "image 2 (unused, beyond the newest 2) is still there"
    );
    assert!(
        !exists(&tag(&other_sid, 1)),
        "the image of a service with no container is still there"
    );
    for kept in [
        tag(&sid, 0),
        local.clone(),
        tag(&sid, 1),
        tag(&sid, 3),
        tag(&sid, 4),
        foreign.clone(),
    ] {
        assert!(exists(&kept), "{kept} was removed");
    }
    // Without a container naming the host, a new sweep knows no lb image.
    let mut stranger = Sweeper::connect(&lb_model::ids::new_id(), 1).unwrap();
    stranger.sweep().await.unwrap();
    assert!(stranger.sweep().await.unwrap().removed.is_empty());
    // Told the host, with keep 1, image 1's container gone and the service's
    // container now made from the image also tagged outside lb: 1 and 3 go
    // too, 4 stays as the service's newest.
    ok(&["rm", "-f", &cleanup.0[0]]);
    cleanup.0[0] = create(&local);
    let mut told = Sweeper::connect(&node, 1).unwrap().with_registry(&host);
    told.sweep().await.unwrap();
    let third = told.sweep().await.unwrap();
    assert_eq!(third.removed.len(), 2, "{third:?}");
    assert!(!exists(&tag(&sid, 1)) && !exists(&tag(&sid, 3)));
    assert!(exists(&tag(&sid, 4)) && exists(&local) && exists(&foreign));
    // The service's last container gone (the service deleted): its newest
    // goes at the next pass; the images also tagged outside lb stay.
    ok(&["rm", "-f", &cleanup.0[0]]);
    let fourth = told.sweep().await.unwrap();
    assert_eq!(fourth.removed.len(), 1, "{fourth:?}");
    assert!(!exists(&tag(&sid, 4)));
    assert!(exists(&tag(&sid, 0)) && exists(&local) && exists(&foreign));
}
