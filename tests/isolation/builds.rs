//! Builds confined: a Dockerfile cannot build on another tenant's image
//! (by reference, by id, or through `COPY --from`), cannot `ADD` from the
//! host's loopback, builds on its own project's images only after pulling
//! them with the project's credential, runs on lb's build network, and
//! leaves `.dockerignore`d files out of the context.

use super::harness::*;

/// Commits `files`, builds, waits (120 s) for the end; answers the build
/// record and its log.
async fn build(
    user: &User,
    service: &str,
    repo: &lb_testing::GitRepo,
    files: &[(&str, &str)],
) -> (Value, String) {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, t)| (*n, t.as_bytes())).collect();
    repo.commit(&files, "change");
    let path = format!(
        "/projects/{}/services/{service}/builds",
        project_of(service)
    );
    let (status, body) = user.call("POST", &path, json!({})).await;
    assert_eq!(status, 201, "{body}");
    let number = serde_json::from_str::<Value>(&body).unwrap()["number"]
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let record = loop {
        let (_, record) = user
            .call("GET", &format!("{path}/{number}"), Value::Null)
            .await;
        let record: Value = serde_json::from_str(&record).unwrap_or_default();
        if ["succeeded", "failed", "canceled"].contains(&record["status"].as_str().unwrap_or("")) {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "build {number} did not end: {record}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (_, log) = user
        .call("GET", &format!("{path}/{number}/logs"), Value::Null)
        .await;
    (record, log)
}

fn project_of(service: &str) -> &'static str {
    if service == "private" {
        "alpha"
    } else {
        "beta"
    }
}

/// Asserts the build failed with a message holding each of `expect`.
fn failed(build: &(Value, String), expect: &[&str]) {
    let (record, log) = build;
    assert_eq!(record["status"], "failed", "{record}\n{log}");
    let message = record["message"].as_str().unwrap();
    for e in expect {
        assert!(message.contains(e), "{e:?} not in {message:?}");
    }
}

#[test]
fn builds_are_confined() {
    let base = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let up = start(&dir.path().join("data"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut images = Vec::new();
    runtime.block_on(async {
        // The victim builds an image: it stays in the engine's cache.
        let victim = User::sign_up(&up.api, "victim").await;
        let repo = lb_testing::GitRepo::serve(&dir.path().join("victim-git"));
        assert_eq!(victim.call("POST", "/projects", json!({"name": "alpha"})).await.0, 201);
        let spec = json!({"name": "private", "replicas": 0,
            "source": {"url": repo.url, "branch": "main"}});
        assert_eq!(victim.call("POST", "/projects/alpha/services", spec).await.0, 201);
        let dockerfile = format!(
            "FROM {base}\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo victim-data > /victim.txt\"]\n"
        );
        let (record, log) = build(&victim, "private", &repo, &[("Dockerfile", &dockerfile)]).await;
        assert_eq!(record["status"], "succeeded", "{record}\n{log}");
        let theirs = record["image"].as_str().unwrap().to_owned();
        images.push(theirs.clone());
        let registry = theirs.split('/').next().unwrap().to_owned();
        let id = docker(&["image", "inspect", "--format", "{{.Id}}", &theirs]);
        let id = id.trim().trim_start_matches("sha256:").to_owned();

        // The attacker, with a repository of their own.
        let mallory = User::sign_up(&up.api, "mallory").await;
        let repo = lb_testing::GitRepo::serve(&dir.path().join("mallory-git"));
        assert_eq!(mallory.call("POST", "/projects", json!({"name": "beta"})).await.0, 201);
        let spec = json!({"name": "attack", "replicas": 0,
            "source": {"url": repo.url, "branch": "main"}});
        assert_eq!(mallory.call("POST", "/projects/beta/services", spec).await.0, 201);

        // FROM the victim's image, by its reference (ids or names), by its
        // id and by an id prefix; COPY --from it.
        for from in [
            theirs.clone(),
            format!("{registry}/alpha/private:1"),
        ] {
            let b = build(&mallory, "attack", &repo, &[("Dockerfile", &format!("FROM {from}\n"))]).await;
            failed(&b, &["Dockerfile line 1", "not a repository of this project"]);
        }
        for from in [format!("sha256:{id}"), id[..12].to_owned(), id.clone()] {
            let b = build(&mallory, "attack", &repo, &[("Dockerfile", &format!("FROM {from}\n"))]).await;
            failed(&b, &["Dockerfile line 1", "image id"]);
        }
        let dockerfile = format!("FROM {base}\nCOPY --from={theirs} /victim.txt /v.txt\n");
        let b = build(&mallory, "attack", &repo, &[("Dockerfile", &dockerfile)]).await;
        failed(&b, &["Dockerfile line 2", "not a repository of this project"]);

        // ADD from the host's loopback: lb's own API here.
        let port = up.api.rsplit(':').next().unwrap().split('/').next().unwrap();
        let dockerfile = format!("FROM {base}\nARG H=127.0.0.1\nADD http://${{H}}:{port}/api/v1 /x\n");
        let b = build(&mallory, "attack", &repo, &[("Dockerfile", &dockerfile)]).await;
        failed(&b, &["Dockerfile line 3", "127.0.0.1 is a loopback address", "may not fetch"]);
        let dockerfile = format!("FROM {base}\nADD http://localhost:{port}/api/v1 /x\n");
        let b = build(&mallory, "attack", &repo, &[("Dockerfile", &dockerfile)]).await;
        failed(&b, &["Dockerfile line 2", "loopback"]);

        // .dockerignore: what it names stays out of the context; the build
        // runs on lb's build network.
        let dockerfile = format!(
            "FROM {base}\nCOPY . /ctx/\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \
             \"test ! -e /ctx/secret.txt && test ! -e /ctx/drop.log && test -e /ctx/keep.log \
             && /bin/busybox ip -4 addr show eth0\"]\n"
        );
        let (record, log) = build(
            &mallory,
            "attack",
            &repo,
            &[
                ("Dockerfile", &dockerfile),
                (".dockerignore", "# not sent\nsecret.txt\n*.log\n!keep.log\n"),
                ("secret.txt", "hunter2"),
                ("drop.log", "x"),
                ("keep.log", "y"),
            ],
        )
        .await;
        assert_eq!(record["status"], "succeeded", "{record}\n{log}");
        let ours = record["image"].as_str().unwrap().to_owned();
        images.push(ours.clone());
        let (code, out) = {
            let out = Command::new("docker")
                .args(["run", "--rm", &ours, "/bin/busybox", "ls", "-a", "/ctx"])
                .output()
                .unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
        };
        assert_eq!(code, Some(0));
        assert!(out.contains("keep.log") && !out.contains("secret.txt"), "{out}");
        let network: Value =
            serde_json::from_str(&docker(&["network", "inspect", "lb-build"])).unwrap();
        assert_eq!(network[0]["Labels"]["lb.network"], "build", "{network}");
        assert_eq!(
            network[0]["Options"]["com.docker.network.bridge.enable_icc"], "false",
            "{network}"
        );
        let subnet = network[0]["IPAM"]["Config"][0]["Subnet"].as_str().unwrap();
        let prefix: String = subnet.split('.').take(2).collect::<Vec<_>>().join(".");
        assert!(
            log.contains(&format!("inet {prefix}.")),
            "the build's RUN was not on lb-build ({subnet}): {log}"
        );

        // Its own image: pulled with the project's credential (gone from
        // the engine first), by ids and by names.
        let number = ours.rsplit(':').next().unwrap();
        for from in [ours.clone(), format!("{registry}/beta/attack:{number}")] {
            docker(&["rmi", "-f", &ours]);
            let dockerfile = format!("FROM {from}\nRUN [\"/bin/busybox\", \"test\", \"-e\", \"/ctx/keep.log\"]\n");
            let (record, log) = build(&mallory, "attack", &repo, &[("Dockerfile", &dockerfile)]).await;
            assert_eq!(record["status"], "succeeded", "{record}\n{log}");
            assert!(log.contains(&format!("pulling {from} with the project's registry credential")), "{log}");
            images.push(record["image"].as_str().unwrap().to_owned());
        }
    });
    up.stop();
    for image in images {
        let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    }
}

/// A host address of this machine that builds may fetch from (none
/// loopback, private, link-local or shared), if it has one.
fn public_host_address() -> Option<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words
                .next()?
                .split('/')
                .next()?
                .parse::<std::net::Ipv4Addr>()
                .ok()
        })
        .find(|ip| {
            let [a, b, ..] = ip.octets();
            !(ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || a == 0
                || a >= 224
                || (a == 100 && (64..128).contains(&b)))
        })
        .map(|ip| ip.to_string())
}

/// A tiny HTTP server on every address: `/redirect` answers 302 to
/// `http://127.0.0.1:<port>/secret`, `/file.txt` a file, anything else
/// 404; answers its port and the paths asked for.
fn serve() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // The headers, up to the blank line.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            seen.lock().unwrap().push(path.clone());
            let response = match path.as_str() {
                "/redirect" => format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/secret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
                "/file.txt" => "HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\nallowed content\n".to_owned(),
                _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
            };
            let _ = std::io::Write::write_all(&mut stream, response.as_bytes());
        }
    });
    (port, asked)
}

#[test]
fn remote_add_sources_and_base_triggers_are_checked() {
    let base = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let up = start(&dir.path().join("data"));
    let registry = up.registry.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut images = Vec::new();
    runtime.block_on(async {
        let mallory = User::sign_up(&up.api, "mallory").await;
        let repo = lb_testing::GitRepo::serve(&dir.path().join("mallory-git"));
        assert_eq!(mallory.call("POST", "/projects", json!({"name": "beta"})).await.0, 201);
        let spec = json!({"name": "attack", "replicas": 0,
            "source": {"url": repo.url, "branch": "main"}});
        assert_eq!(mallory.call("POST", "/projects/beta/services", spec).await.0, 201);

        // (a) Images with ONBUILD triggers, pushed to the tenant's own
        // repository with its credential: one fetching the host's
        // loopback, one harmless.
        for (tag, trigger) in [
            ("trigger", "ADD http://127.0.0.1:2967/secret /s"),
            ("harmless", "RUN [\"/bin/busybox\", \"touch\", \"/onbuild-ran\"]"),
        ] {
            let context = dir.path().join(tag);
            std::fs::create_dir_all(&context).unwrap();
            std::fs::write(context.join("Dockerfile"), format!("FROM {base}\nONBUILD {trigger}\n")).unwrap();
            let local = format!("lb-test-onbuild-{tag}:1");
            images.push(local.clone());
            docker(&["build", "-q", "-t", &local, context.to_str().unwrap()]);
            let out = Command::new("skopeo")
                .args([
                    "copy",
                    "--dest-tls-verify=false",
                    "--dest-creds",
                    "mallory:password-1",
                    &format!("docker-daemon:{local}"),
                    &format!("docker://{registry}/beta/attack:{tag}"),
                ])
                .output()
                .expect("run skopeo");
            assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
        }
        let from = format!("{registry}/beta/attack:trigger");
        let b = build(&mallory, "attack", &repo, &[("Dockerfile", &format!("FROM {from}\nRUN true\n"))]).await;
        failed(&b, &["Dockerfile line 1", "ONBUILD trigger", "http://127.0.0.1:2967/secret", "fetches a URL"]);
        let from = format!("{registry}/beta/attack:harmless");
        let dockerfile = format!("FROM {from}\nRUN [\"/bin/busybox\", \"test\", \"-e\", \"/onbuild-ran\"]\n");
        let (record, log) = build(&mallory, "attack", &repo, &[("Dockerfile", &dockerfile)]).await;
        assert_eq!(record["status"], "succeeded", "{record}\n{log}");
        assert!(log.contains("checking its 1 ONBUILD trigger"), "{log}");
        images.push(record["image"].as_str().unwrap().to_owned());

        // (b) ADD of a URL the check allows that redirects to the host's
        // loopback: refused at the redirect, the secret never asked for.
        let (port, asked) = serve();
        let public = public_host_address();
        let host = public.clone().unwrap_or_else(|| {
            eprintln!("no public address on this machine: the redirect is refused at its first hop");
            docker(&["network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}", "bridge"])
                .trim()
                .to_owned()
        });
        let dockerfile = format!("FROM {base}\nADD http://{host}:{port}/redirect /x\n");
        let b = build(&mallory, "attack", &repo, &[("Dockerfile", &dockerfile)]).await;
        if public.is_some() {
            failed(&b, &[
                &format!("Dockerfile line 2: ADD http://{host}:{port}/redirect: redirected to http://127.0.0.1:{port}/secret"),
                "loopback",
            ]);
            assert!(asked.lock().unwrap().contains(&"/redirect".to_owned()));
        } else {
            failed(&b, &["Dockerfile line 2", "may not fetch"]);
        }
        assert!(!asked.lock().unwrap().contains(&"/secret".to_owned()));

        // (c) An allowed URL: fetched by lb, copied from the context
        // (which .dockerignore does not empty of it), mode 0600.
        let Some(host) = public else {
            eprintln!("no public address on this machine: the allowed ADD is left to the unit tests of worker::fetch");
            return;
        };
        let dockerfile = format!(
            "FROM {base}\nADD http://{host}:{port}/file.txt /srv/\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", \"test \\\"$(/bin/busybox stat -c %a /srv/file.txt)\\\" = 600\"]\n"
        );
        let (record, log) = build(
            &mallory,
            "attack",
            &repo,
            &[("Dockerfile", &dockerfile), (".dockerignore", "*\n")],
        )
        .await;
        assert_eq!(record["status"], "succeeded", "{record}\n{log}");
        assert!(log.contains(&format!("Dockerfile line 2: fetched http://{host}:{port}/file.txt")), "{log}");
        let ours = record["image"].as_str().unwrap().to_owned();
        images.push(ours.clone());
        let out = Command::new("docker")
            .args(["run", "--rm", &ours, "/bin/busybox", "cat", "/srv/file.txt"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "allowed content\n");
    });
    up.stop();
    for image in images {
        let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    }
}
