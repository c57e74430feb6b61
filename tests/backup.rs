//! Backup and restore (issue 17): `lb backup` of a running `lb up` (user,
//! project, services, a build, an image in lb's registry, a running
//! replica), `lb restore` into a new data dir, and `lb up` on it: the same
//! records, the image served by the restored registry, and the replica
//! started again from it. Needs Docker, skopeo and busybox-static.

#[allow(dead_code, unused_imports)]
#[path = "isolation/harness.rs"]
mod harness;

use harness::*;

/// A port free now, for a registry address that must not change between
/// the two machines (image references name it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn lb(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("LB_ETCD")
        .env_remove("LB_DATA_DIR")
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Removes the containers of a project's replicas, also when the test fails.
struct ProjectContainers(String);

impl Drop for ProjectContainers {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=lb.project={}", self.0),
            ])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}

async fn wait_build(user: &User, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = user.call("GET", path, Value::Null).await;
        let build: Value = serde_json::from_str(&body).unwrap_or_default();
        let state = build["status"].as_str().unwrap_or_default();
        // Until it ended (the restored builder would fail one it had
        // been running: "the builder running this build stopped").
        if matches!(state, "succeeded" | "failed" | "canceled") {
            return build;
        }
        assert!(Instant::now() < deadline, "build still {state}: {build}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn a_backup_restores_into_a_new_data_dir() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let registry_listen = format!("127.0.0.1:{}", free_port());
    let env = [("LB_REGISTRY_LISTEN", registry_listen.as_str())];
    let up = start_with(&dir.path().join("data"), &env);
    let registry = up.registry.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let archive = dir.path().join("backup.tar");
    let reference = format!("{registry}/keep/web:v1");
    let (project_id, before_builds) = runtime.block_on(async {
        let user = User::sign_up(&up.api, "ann").await;
        let (status, body) = user
            .call("POST", "/projects", json!({"name": "keep"}))
            .await;
        assert_eq!(status, 201, "{body}");
        let project: Value = serde_json::from_str(&body).unwrap();
        let spec = json!({"name": "web", "image": reference, "memory": 64,
            "command": ["/bin/busybox", "sleep", "3600"]});
        let (status, body) = user.call("POST", "/projects/keep/services", spec).await;
        assert_eq!(status, 201, "{body}");
        // The image, pushed into the project's repository in lb's registry.
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                "ann:password-1",
            ])
            .arg(format!("docker-daemon:{image}"))
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        user.running("keep", "web", 1).await;
        // A build that fails (its repository does not exist): a record to
        // find again.
        let source = json!({"url": "http://127.0.0.1:9/none.git", "branch": "main"});
        let spec = json!({"name": "src", "image": reference, "source": source, "replicas": 0});
        let (status, body) = user.call("POST", "/projects/keep/services", spec).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = user
            .call("POST", "/projects/keep/services/src/builds", Value::Null)
            .await;
        assert_eq!(status, 201, "{body}");
        let build = wait_build(&user, "/projects/keep/services/src/builds/1").await;
        (
            project["id"].as_str().unwrap().to_owned(),
            build["status"].clone(),
        )
    });
    let _containers = ProjectContainers(project_id.clone());

    // The backup, taken by the running lb for an admin; an ordinary user
    // is refused.
    let base = up.api.trim_end_matches("/api/v1").to_owned();
    let path = archive.to_str().unwrap();
    let (ok, out) = lb(
        &["backup", "--to", path, "--api", &base, "--user", "ann"],
        &[("LB_PASSWORD", "password-1")],
    );
    assert!(!ok && out.contains("403"), "{out}");
    let (ok, out) = lb(
        &["backup", "--to", path, "--api", &base],
        &[("LB_PASSWORD", "admin-password")],
    );
    assert!(ok, "lb backup: {out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the archive holds secrets");
    up.stop();

    // A fresh machine: no containers, no image in the engine, a new data dir.
    drop(ProjectContainers(project_id.clone()));
    let _ = Command::new("docker").args(["rmi", &reference]).output();
    let fresh = dir.path().join("fresh");
    let (ok, out) = lb(
        &[
            "restore",
            "--from",
            path,
            "--data-dir",
            fresh.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "lb restore: {out}");
    // Restoring over a data dir in use is refused, and changes nothing.
    let (ok, out) = lb(
        &[
            "restore",
            "--from",
            path,
            "--data-dir",
            fresh.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok && out.contains("not empty"), "{out}");

    let up = start_with(&fresh, &env);
    runtime.block_on(async {
        let user = User::log_in(&up.api, "ann").await;
        let (status, body) = user.call("GET", "/projects/keep", Value::Null).await;
        assert_eq!(status, 200, "{body}");
        let (_, body) = user
            .call("GET", "/projects/keep/services", Value::Null)
            .await;
        let services: Value = serde_json::from_str(&body).unwrap();
        let mut names: Vec<&str> = services["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["src", "web"], "{services}");
        let (status, body) = user
            .call("GET", "/projects/keep/services/src/builds/1", Value::Null)
            .await;
        assert_eq!(status, 200, "{body}");
        let build: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(build["status"], before_builds, "{build}");
        // The restored registry serves the image ...
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--creds", "ann:password-1"])
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // ... and the replica runs again, pulled from it: a container of the
        // project (the restored status may still name the old node's).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let filter = format!("label=lb.project={project_id}");
            let ids = docker(&["ps", "-q", "--filter", &filter]);
            if !ids.trim().is_empty() {
                let image = docker(&["inspect", "-f", "{{.Config.Image}}", ids.trim()]);
                assert!(image.contains(&registry), "{image}");
                break;
            }
            assert!(Instant::now() < deadline, "no replica of web within 120 s");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        user.running("keep", "web", 1).await;
    });
    up.stop();
}
