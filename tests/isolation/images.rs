//! Images by authority, not by the engine's cache: a second tenant cannot
//! name the first one's image in any form Docker would take (a tag or a
//! digest of its repository, an id, an id prefix, a layer's id, an alias of
//! the registry's host), and another service of the same project runs the
//! project's image by digest. Containers are made from full references
//! (pinned by digest for lb's images), and only after the registry let the
//! node read the manifest: an image deleted from the registry does not run
//! again from the engine's cache.

use super::harness::*;

/// `skopeo` with its output, failing the test on an error.
fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The id and project of a service, as the API shows it.
async fn ids(user: &User, project: &str, service: &str) -> (String, String) {
    let (status, body) = user
        .call(
            "GET",
            &format!("/projects/{project}/services/{service}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    (
        body["project"].as_str().unwrap().to_lowercase(),
        body["id"].as_str().unwrap().to_lowercase(),
    )
}

/// The image a container was created from (`Config.Image`).
fn created_from(container: &str) -> String {
    docker(&["inspect", "--format", "{{.Config.Image}}", container])
        .trim()
        .to_owned()
}

#[test]
fn another_tenants_image_is_refused_in_every_form_and_the_cache_is_not_trusted() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let up = start(&dir.path().join("data"));
    let registry = up.registry.clone();
    assert!(!registry.is_empty(), "lb up printed no registry address");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cleanup = Containers(Vec::new());
    runtime.block_on(async {
        // Tenant A pushes an image into its project's repository in lb's
        // registry and runs it by tag.
        let alice = User::sign_up(&up.api, "alice").await;
        assert_eq!(
            alice
                .call("POST", "/projects", json!({"name": "demo"}))
                .await
                .0,
            201
        );
        let spec = json!({"name": "web", "image": image, "replicas": 0, "memory": 16,
            "command": ["/bin/busybox", "sleep", "3600"]});
        assert_eq!(
            alice.call("POST", "/projects/demo/services", spec).await.0,
            201
        );
        let (pid, sid) = ids(&alice, "demo", "web").await;
        let creds = "alice:password-1";
        let tagged = format!("{registry}/demo/web:1");
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            &format!("docker-daemon:{image}"),
            &format!("docker://{tagged}"),
        ]);
        let inspect: Value = serde_json::from_str(&skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--creds",
            creds,
            &format!("docker://{tagged}"),
        ]))
        .unwrap();
        let digest = inspect["Digest"].as_str().unwrap().to_owned();
        // Named by project and service names, stored by ids.
        let (status, body) = alice
            .call(
                "PATCH",
                "/projects/demo/services/web",
                json!({"image": tagged, "replicas": 1}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["spec"]["image"], format!("{registry}/{pid}/{sid}:1"));
        let web = alice.running("demo", "web", 1).await.remove(0);
        cleanup.0.push(web.clone());
        // The node made the container from the digest the registry named.
        let pinned = format!("{registry}/{pid}/{sid}@{digest}");
        assert_eq!(created_from(&web), pinned);
        // What Docker would also take for this image, now in its cache.
        let id = docker(&["inspect", "--format", "{{.Image}}", &web])
            .trim()
            .to_owned();
        let hex = id.strip_prefix("sha256:").unwrap().to_owned();
        let layer = docker(&["history", "-q", "--no-trunc", &pinned])
            .lines()
            .map(|l| l.trim().trim_start_matches("sha256:").to_owned())
            .find(|l| !l.is_empty() && l != "<missing>" && *l != hex);

        // Tenant B tries them all: 400 naming `image`, every one.
        let bob = User::sign_up(&up.api, "bob").await;
        assert_eq!(
            bob.call("POST", "/projects", json!({"name": "other"}))
                .await
                .0,
            201
        );
        let (bpid, _) = {
            let spec = json!({"name": "mine", "image": image, "replicas": 0});
            assert_eq!(
                bob.call("POST", "/projects/other/services", spec).await.0,
                201
            );
            ids(&bob, "other", "mine").await
        };
        let port = registry.rsplit_once(':').unwrap().1;
        let mut forms = vec![
            tagged.clone(),
            format!("{registry}/{pid}/{sid}:1"),
            pinned.clone(),
            format!("{registry}/demo/web@{digest}"),
            format!("localhost:{port}/{pid}/{sid}@{digest}"),
            format!("{registry}/{bpid}/{sid}@{digest}"),
            format!("{registry}/other/web:1"),
            format!("{registry}/{pid}/{sid}/x:1"),
            hex[..4].to_owned(),
            hex[..2].to_owned(),
            format!("sha256:{}", &hex[..4]),
            id.clone(),
            hex.clone(),
            digest.clone(),
        ];
        forms.extend(layer.clone());
        for form in &forms {
            let spec = json!({"name": "steal", "image": form, "memory": 16,
                "command": ["/bin/busybox", "sleep", "3600"]});
            let (status, body) = bob.call("POST", "/projects/other/services", spec).await;
            let parsed: Value = serde_json::from_str(&body).unwrap_or_default();
            assert_eq!(
                (status, parsed["error"]["field"].as_str()),
                (400, Some("image")),
                "tenant B named {form:?}: {body}"
            );
            // Nor by changing a service of its own.
            let (status, body) = bob
                .call(
                    "PATCH",
                    "/projects/other/services/mine",
                    json!({"image": form}),
                )
                .await;
            assert_eq!(status, 400, "tenant B patched in {form:?}: {body}");
        }
        // No container of B's project ever appeared.
        let theirs = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=lb.project={}", bpid.to_uppercase()),
        ]);
        assert_eq!(theirs.trim(), "", "tenant B got containers");

        // An image of another registry runs by its full reference (here
        // the engine's copy: no pull without the internet).
        let full = format!("docker.io/library/{image}");
        let spec = json!({"name": "public", "image": full, "memory": 16,
            "command": ["/bin/busybox", "sleep", "3600"]});
        assert_eq!(
            bob.call("POST", "/projects/other/services", spec).await.0,
            201
        );
        let public = bob.running("other", "public", 1).await.remove(0);
        cleanup.0.push(public.clone());
        assert_eq!(created_from(&public), full);

        // Another service of A's project may run the project's image, by
        // digest (the node's pull grant covers it).
        let spec = json!({"name": "worker", "image": format!("{registry}/demo/web@{digest}"),
            "memory": 16, "command": ["/bin/busybox", "sleep", "3600"]});
        let (status, body) = alice.call("POST", "/projects/demo/services", spec).await;
        assert_eq!(status, 201, "{body}");
        let worker = alice.running("demo", "worker", 1).await.remove(0);
        cleanup.0.push(worker.clone());
        assert_eq!(created_from(&worker), pinned);

        // The registry stops serving the image: it is still in the engine's
        // cache, but a new container of it is not made (the node asks the
        // registry before every create, whatever the engine holds).
        // (With a token for `delete` alone: skopeo's delete asks for one
        // and then reads the manifest, which the token does not allow.)
        let client = reqwest::Client::new();
        let token =
            registry_token(&up.api, "alice", "password-1", "repository:demo/web:delete").await;
        let deleted = client
            .delete(format!("http://{registry}/v2/demo/web/manifests/{digest}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 202, "the manifest was not deleted");
        docker(&["image", "inspect", &pinned]);
        let spec = json!({"name": "late", "image": format!("{registry}/demo/web@{digest}"),
            "memory": 16, "command": ["/bin/busybox", "sleep", "3600"]});
        let (status, body) = alice.call("POST", "/projects/demo/services", spec).await;
        assert_eq!(status, 201, "{body}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, list) = alice
                .call("GET", "/projects/demo/services/late/replicas", Value::Null)
                .await;
            let list: Value = serde_json::from_str(&list).unwrap_or_default();
            let replica = &list["items"][0];
            assert_ne!(
                replica["state"], "running",
                "a replica ran an image the registry no longer serves: {list}"
            );
            if let Some(id) = replica["id"].as_str() {
                let made = docker(&["ps", "-aq", "--filter", &format!("label=lb.replica={id}")]);
                assert_eq!(
                    made.trim(),
                    "",
                    "a container was made of a deleted image: {list}"
                );
            }
            if replica["message"]
                .as_str()
                .is_some_and(|m| m.contains("registry refuses this node") && m.contains("404"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no refusal reported within 60 s: {list}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // The running replica of that digest is left alone.
        assert_eq!(
            docker(&["inspect", "-f", "{{.State.Running}}", &worker]).trim(),
            "true"
        );
    });
    let _ = up.stop();
}
