//! Replicas run confined: capabilities, pids and open-files limits, rotated
//! logs, no-new-privileges, optional read-only root.

use super::harness::*;

#[test]
fn replicas_run_confined() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let up = start(&dir.path().join("data"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cleanup = Containers(Vec::new());
    runtime.block_on(async {
        let user = User::sign_up(&up.api, "tenant").await;
        assert_eq!(user.call("POST", "/projects", json!({"name": "demo"})).await.0, 201);
        // Capabilities beyond the allowed list and pids beyond the cluster
        // maximum are refused, naming the field.
        for (extra, field) in [
            (json!({"cap_add": ["NET_RAW", "SYS_ADMIN"]}), "cap_add[1]"),
            // One more than lb_model::MAX_PIDS.
            (json!({"pids": 16385}), "pids"),
        ] {
            let mut spec = json!({"name": "bad", "image": image});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let (status, body) = user.call("POST", "/projects/demo/services", spec).await;
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!((status, body["error"]["field"].as_str()), (400, Some(field)), "{body}");
        }
        let spec = json!({"name": "web", "image": image, "memory": 512,
            "command": ["/bin/busybox", "sh", "-c", "echo hello-log; exec /bin/busybox sleep 3600"]});
        assert_eq!(user.call("POST", "/projects/demo/services", spec).await.0, 201);
        let spec = json!({"name": "ro", "image": image, "memory": 32, "read_only": true,
            "cap_add": ["NET_RAW"], "pids": 64,
            "command": ["/bin/busybox", "sleep", "3600"]});
        assert_eq!(user.call("POST", "/projects/demo/services", spec).await.0, 201);
        let web = user.running("demo", "web", 1).await.remove(0);
        cleanup.0.push(web.clone());
        let ro = user.running("demo", "ro", 1).await.remove(0);
        cleanup.0.push(ro.clone());

        // What Docker was told.
        let inspect: Value = serde_json::from_str(&docker(&["inspect", &web])).unwrap();
        let host = &inspect[0]["HostConfig"];
        for cap in ["NET_RAW", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP"] {
            assert!(
                host["CapDrop"].as_array().unwrap().iter().any(|c| c == cap || c == &format!("CAP_{cap}")),
                "{cap} not dropped: {}",
                host["CapDrop"]
            );
        }
        assert_eq!(host["PidsLimit"], 1024);
        assert_eq!(host["Privileged"], false);
        assert_ne!(host["NetworkMode"], "host");
        assert!(host["Binds"].as_array().is_none_or(|b| b.is_empty()), "{}", host["Binds"]);
        assert!(
            host["SecurityOpt"].as_array().unwrap().iter().any(|o| o == "no-new-privileges:true"),
            "{}",
            host["SecurityOpt"]
        );
        assert_eq!(
            host["Ulimits"],
            json!([{"Name": "nofile", "Soft": 16384, "Hard": 16384}])
        );
        assert_eq!(host["LogConfig"]["Type"], "json-file");
        assert_eq!(host["LogConfig"]["Config"]["max-size"], "10m");
        assert_eq!(host["LogConfig"]["Config"]["max-file"], "3");
        assert_eq!(host["ReadonlyRootfs"], false);

        // Logs still come through the node's log streaming.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, logs) = user
                .call("GET", "/projects/demo/services/web/logs?tail=10", Value::Null)
                .await;
            if status == 200 && logs.contains("hello-log") {
                break;
            }
            assert!(Instant::now() < deadline, "no logs through lb: {status} {logs}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // No device nodes (MKNOD dropped), root or not.
        let (code, out) = exec(&web, "/bin/busybox mknod /null2 c 1 3");
        assert_ne!(code, 0, "mknod worked in a replica: {out}");

        // A fork bomb stops at the pids limit: of 1100 sleeps, not all start.
        let (code, out) = exec(
            &web,
            "i=0; while [ $i -lt 1100 ]; do /bin/busybox sleep 600 & i=$((i+1)); echo $i > /n; done",
        );
        let (_, started) = exec(&web, "/bin/busybox cat /n");
        let started: u32 = started.trim().parse().unwrap_or(0);
        assert!(
            code != 0 && started < 1100,
            "1100 processes started in a replica (exit {code}, {started} started): {out}"
        );
        assert!(started > 100, "too few processes started: {started}: {out}");

        // The read-only service: its options, its root and its /tmp.
        let inspect: Value = serde_json::from_str(&docker(&["inspect", &ro])).unwrap();
        let host = &inspect[0]["HostConfig"];
        assert_eq!(host["ReadonlyRootfs"], true);
        assert_eq!(host["PidsLimit"], 64);
        assert!(host["Tmpfs"]["/tmp"].is_string(), "{}", host["Tmpfs"]);
        let added = host["CapAdd"].as_array().unwrap();
        assert!(added.iter().any(|c| c == "NET_RAW" || c == "CAP_NET_RAW"), "{added:?}");
        let (code, _) = exec(&ro, "echo x > /x");
        assert_ne!(code, 0, "the read-only root was written");
        let (code, out) = exec(&ro, "echo x > /tmp/x && /bin/busybox cat /tmp/x");
        assert_eq!((code, out.trim()), (0, "x"));
    });
    up.stop();
}
