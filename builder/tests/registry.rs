//! The registry with real clients: the Docker CLI (`login`, `push`, `pull`)
//! and `skopeo` against lb's registry, with tokens from a real API server;
//! and the protocol's edges (digest checks, chunked uploads, ranges, mounts,
//! pagination) over plain HTTP.

use std::process::Command;
use std::sync::Arc;

use lb_api::server::Signup;
use lb_store::embedded::EmbeddedStore;
use lb_store::Shared;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

struct Setup {
    api: String,
    registry: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    docker_config: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Shared = Arc::new(
            EmbeddedStore::open_dir(&dir.path().join("store"))
                .await
                .unwrap(),
        );
        let config = lb_api::Config::new("127.0.0.1:0".parse().unwrap(), Signup::Open);
        // Both servers live as long as the test process.
        let server = lb_api::Server::bind(&config, store.clone(), std::future::pending())
            .await
            .unwrap();
        let api = format!("http://{}", server.addr());
        tokio::spawn(server.run());
        let builder = lb_builder::Config {
            keys: Default::default(),
            registry_listen: "127.0.0.1:0".parse().unwrap(),
            registry_address: "127.0.0.1:0".into(),
            data_dir: dir.path().to_owned(),
            api: api.clone(),
            concurrency: 1,
            build_memory: 512,
            build_timeout: std::time::Duration::from_secs(300),
            keep_images: 3,
            max_context: 64 << 20,
            base_images: Default::default(),
            housekeeping: Default::default(),
        };
        let bound = lb_builder::bind(store, &builder).await.unwrap();
        let registry = bound.address().to_owned();
        tokio::spawn(lb_builder::run(bound, std::future::pending()));
        let setup = Setup {
            api,
            registry,
            client: reqwest::Client::new(),
            _dir: dir,
            docker_config: tempfile::tempdir().unwrap(),
        };
        for user in ["alice", "mallory"] {
            setup
                .client
                .post(format!("{}/api/v1/auth/signup", setup.api))
                .json(&json!({"username": user, "password": format!("{user}-password")}))
                .send()
                .await
                .unwrap();
        }
        setup
    }

    /// A user's access token.
    async fn login(&self, user: &str) -> String {
        let body = json!({"username": user, "password": format!("{user}-password")});
        let v: Value = self
            .client
            .post(format!("{}/api/v1/auth/login", self.api))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    async fn create(&self, user: &str, path: &str, body: Value) -> Value {
        let token = self.login(user).await;
        let resp = self
            .client
            .post(format!("{}/api/v1{path}", self.api))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// A registry token for `user` with `scope`, as a client gets it.
    async fn token(&self, user: &str, scope: &str) -> String {
        let v: Value = self
            .client
            .get(format!("{}/api/v1/registry/token", self.api))
            .query(&[("service", "lb-registry"), ("scope", scope)])
            .basic_auth(user, Some(format!("{user}-password")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    fn docker(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", self.docker_config.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/v2/{path}", self.registry)
    }
}

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn digest_of(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_and_skopeo_push_and_pull_and_strangers_cannot() {
    let image = lb_testing::busybox_image();
    let s = Setup::start().await;
    s.create("alice", "/projects", json!({"name": "demo"}))
        .await;
    s.create(
        "alice",
        "/projects/demo/services",
        json!({"name": "web", "image": "x"}),
    )
    .await;

    // Anonymous: 401 with a challenge that points at the API.
    let resp = s.client.get(s.url("")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains(&format!("realm=\"{}/api/v1/registry/token\"", s.api)),
        "{challenge}"
    );

    // docker login, push, remove, pull.
    let reference = format!("{}/demo/web:1", s.registry);
    ok(
        &s.docker(
            &["login", &s.registry, "-u", "alice", "--password-stdin"],
            Some("alice-password"),
        ),
        "docker login",
    );
    ok(&s.docker(&["tag", image, &reference], None), "docker tag");
    ok(&s.docker(&["push", &reference], None), "docker push");
    ok(&s.docker(&["rmi", &reference], None), "docker rmi");
    ok(&s.docker(&["pull", &reference], None), "docker pull");
    let _ = s.docker(&["rmi", &reference], None);

    // skopeo: inspect the pushed image, copy it to a new tag and back out.
    let creds = "alice:alice-password";
    let source = format!("docker://{reference}");
    let inspect = ok(
        &Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--creds", creds, &source])
            .output()
            .unwrap(),
        "skopeo inspect",
    );
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    let digest = inspect["Digest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha256:"), "{inspect}");
    let copy_to = format!("docker://{}/demo/web:copied", s.registry);
    ok(
        &Command::new("skopeo")
            .args([
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "--src-creds",
                creds,
                "--dest-creds",
                creds,
                &source,
                &copy_to,
            ])
            .output()
            .unwrap(),
        "skopeo copy",
    );
    let out_dir = tempfile::tempdir().unwrap();
    let target = format!("dir:{}", out_dir.path().display());
    ok(
        &Command::new("skopeo")
            .args([
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                creds,
                &copy_to,
                &target,
            ])
            .output()
            .unwrap(),
        "skopeo copy out",
    );
    assert!(out_dir.path().join("manifest.json").exists());

    // The tag list has both tags; the catalog lists the repository.
    let token = s.token("alice", "repository:demo/web:pull").await;
    let tags: Value = s
        .client
        .get(s.url("demo/web/tags/list"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["1", "copied"]));

    // Another user: no pull, no push; docker says so.
    let stranger = s.token("mallory", "repository:demo/web:pull,push").await;
    let resp = s
        .client
        .get(s.url("demo/web/manifests/1"))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    ok(
        &s.docker(
            &["login", &s.registry, "-u", "mallory", "--password-stdin"],
            Some("mallory-password"),
        ),
        "docker login mallory",
    );
    let out = s.docker(&["pull", &reference], None);
    assert!(!out.status.success(), "mallory pulled alice's image");
    // Wrong password: docker login fails.
    let out = s.docker(
        &["login", &s.registry, "-u", "alice", "--password-stdin"],
        Some("wrong"),
    );
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_check_digests_and_manifests_check_blobs() {
    let s = Setup::start().await;
    s.create("alice", "/projects", json!({"name": "demo"}))
        .await;
    for name in ["web", "db"] {
        s.create(
            "alice",
            "/projects/demo/services",
            json!({"name": name, "image": "x"}),
        )
        .await;
    }
    let token = s
        .token(
            "alice",
            "repository:demo/web:pull,push,delete repository:demo/db:pull,push",
        )
        .await;
    let c = &s.client;

    // A wrong digest: 400 DIGEST_INVALID and nothing stored.
    let data = b"layer bytes".repeat(1000);
    let good = digest_of(&data);
    let wrong = digest_of(b"something else");
    let resp = c
        .post(s.url(&format!("demo/web/blobs/uploads/?digest={wrong}")))
        .bearer_auth(&token)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");
    let head = c
        .head(s.url(&format!("demo/web/blobs/{wrong}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);

    // Chunked: POST, two PATCHes with Content-Range, PUT with the digest.
    let resp = c
        .post(s.url("demo/web/blobs/uploads/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let mut location = resp.headers()["location"].to_str().unwrap().to_owned();
    let (first, second) = data.split_at(4000);
    for (start, chunk) in [(0, first), (4000, second)] {
        let resp = c
            .patch(format!("http://{}{location}", s.registry))
            .bearer_auth(&token)
            .header(
                "content-range",
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        location = resp.headers()["location"].to_str().unwrap().to_owned();
    }
    // A chunk that does not continue the upload: 416.
    let resp = c
        .patch(format!("http://{}{location}", s.registry))
        .bearer_auth(&token)
        .header("content-range", "5-9")
        .body("xxxxx")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    let resp = c
        .put(format!("http://{}{location}?digest={good}", s.registry))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["docker-content-digest"], good.as_str());

    // Range reads.
    let resp = c
        .get(s.url(&format!("demo/web/blobs/{good}")))
        .bearer_auth(&token)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[10..20]);

    // A blob of several read chunks (2 MiB each): whole, a range across
    // chunk boundaries, and HEAD (the size, no body).
    let big: Vec<u8> = (0..(5 << 20) + 12345)
        .map(|i: u32| (i % 251) as u8)
        .collect();
    let big_digest = digest_of(&big);
    let resp = c
        .post(s.url(&format!("demo/web/blobs/uploads/?digest={big_digest}")))
        .bearer_auth(&token)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = c
        .get(s.url(&format!("demo/web/blobs/{big_digest}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        big.len().to_string().as_str()
    );
    assert!(
        resp.bytes().await.unwrap().as_ref() == big.as_slice(),
        "the whole blob"
    );
    let (from, to) = ((2 << 20) - 7, (4 << 20) + 9);
    let resp = c
        .get(s.url(&format!("demo/web/blobs/{big_digest}")))
        .bearer_auth(&token)
        .header("range", format!("bytes={from}-{to}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert!(
        resp.bytes().await.unwrap().as_ref() == &big[from..=to],
        "the range"
    );
    let resp = c
        .head(s.url(&format!("demo/web/blobs/{big_digest}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        big.len().to_string().as_str()
    );
    assert!(resp.bytes().await.unwrap().is_empty());

    // A manifest naming a blob the repository lacks: refused.
    let config = b"{}".to_vec();
    let config_digest = digest_of(&config);
    let manifest = |layers: &[&str]| {
        json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2},
            "layers": layers.iter().map(|d| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": 1})).collect::<Vec<_>>()})
        .to_string()
    };
    let put_manifest = |repo: &str, reference: &str, body: String| {
        c.put(s.url(&format!("{repo}/manifests/{reference}")))
            .bearer_auth(&token)
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
    };
    let resp = put_manifest("demo/web", "v1", manifest(&[&good]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "config blob missing");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    let resp = c
        .post(s.url(&format!("demo/web/blobs/uploads/?digest={config_digest}")))
        .bearer_auth(&token)
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = put_manifest("demo/web", "v1", manifest(&[&good]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let manifest_digest = resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(manifest_digest, digest_of(manifest(&[&good]).as_bytes()));
    // By digest, with the wrong digest: refused.
    let resp = put_manifest("demo/web", &wrong, manifest(&[&good]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Not JSON: refused.
    let resp = put_manifest("demo/web", "v2", "nonsense".into())
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Read back by tag and by digest.
    for reference in ["v1", manifest_digest.as_str()] {
        let resp = c
            .get(s.url(&format!("demo/web/manifests/{reference}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(resp.text().await.unwrap(), manifest(&[&good]));
    }

    // Mount into the other repository without uploading again.
    let resp = c
        .post(s.url(&format!(
            "demo/db/blobs/uploads/?mount={good}&from=demo/web"
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let head = c
        .head(s.url(&format!("demo/db/blobs/{good}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        data.len().to_string().as_str()
    );

    // Tags paginate; a deleted manifest takes its tags along.
    for tag in ["v2", "v3"] {
        let resp = put_manifest("demo/web", tag, manifest(&[&good]))
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    let resp = c
        .get(s.url("demo/web/tags/list?n=2"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let link = resp.headers()["link"].to_str().unwrap().to_owned();
    assert!(link.contains("last=v2"), "{link}");
    let page: Value = resp.json().await.unwrap();
    assert_eq!(page["tags"], json!(["v1", "v2"]));
    let resp = c
        .delete(s.url(&format!("demo/web/manifests/{manifest_digest}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let page: Value = c
        .get(s.url("demo/web/tags/list"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["tags"], json!([]));

    // A token for one repository does not open another.
    let web_only = s.token("alice", "repository:demo/web:pull").await;
    let resp = c
        .get(s.url(&format!("demo/db/blobs/{good}")))
        .bearer_auth(&web_only)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // A user's API access token is not a registry token.
    let api_token = s.login("alice").await;
    let resp = c
        .get(s.url(&format!("demo/web/blobs/{good}")))
        .bearer_auth(&api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
