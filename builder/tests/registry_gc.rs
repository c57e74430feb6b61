//! The registry's garbage collection over real HTTP pushes: a deleted
//! manifest's blobs go once older than the grace, a blob uploaded during
//! the passes survives, and manifests pushed while passes run never lose a
//! blob (every manifest accepted can be pulled whole).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lb_builder::registry::Registry;
use lb_model::keys::Keys;
use lb_store::embedded::EmbeddedStore;
use lb_store::registry::Access;
use lb_store::Shared;
use serde_json::json;
use sha2::{Digest, Sha256};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const HOUR: Duration = Duration::from_secs(3600);

struct Setup {
    registry: Arc<Registry>,
    base: String,
    name: String,
    token: String,
    client: reqwest::Client,
    dir: tempfile::TempDir,
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Setup {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Shared = Arc::new(
            EmbeddedStore::open_dir(&dir.path().join("store"))
                .await
                .unwrap(),
        );
        let registry = Registry::new(
            store,
            Keys::default(),
            &dir.path().join("registry"),
            "http://127.0.0.1:1/token".into(),
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v2", listener.local_addr().unwrap());
        tokio::spawn(registry.clone().serve(listener, std::future::pending()));
        let (pid, sid) = (lb_model::ids::new_id(), lb_model::ids::new_id());
        let name = lb_store::registry::repository(&pid, &sid);
        let token = registry.signer().sign(
            "tester",
            vec![Access {
                kind: "repository".into(),
                name: name.clone(),
                actions: vec!["*".into()],
                project: pid,
                service: sid,
            }],
            600,
        );
        Self {
            registry,
            base,
            name,
            token,
            client: reqwest::Client::new(),
            dir,
        }
    }

    fn blob_file(&self, digest: &str) -> std::path::PathBuf {
        self.dir
            .path()
            .join("registry/blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    }

    /// A monolithic upload; answers the digest.
    async fn upload(&self, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        let resp = self
            .client
            .post(format!(
                "{}/{}/blobs/uploads/?digest={digest}",
                self.base, self.name
            ))
            .bearer_auth(&self.token)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "upload: {}", resp.text().await.unwrap());
        digest
    }

    /// Puts an image manifest; answers its digest, or the error body.
    async fn put_manifest(
        &self,
        tag: &str,
        config: &str,
        layers: &[&str],
    ) -> Result<String, String> {
        let body = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": layers.iter().map(|d| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": 1})).collect::<Vec<_>>(),
        })
        .to_string();
        let resp = self
            .client
            .put(format!("{}/{}/manifests/{tag}", self.base, self.name))
            .bearer_auth(&self.token)
            .header("content-type", MANIFEST)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if resp.status() == 201 {
            Ok(digest_of(body.as_bytes()))
        } else {
            Err(resp.text().await.unwrap())
        }
    }

    async fn status(&self, method: reqwest::Method, path: &str) -> u16 {
        self.client
            .request(method, format!("{}/{}/{path}", self.base, self.name))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Every file of the blob store made `age` old.
    fn age_everything(&self, age: Duration) {
        let then = SystemTime::now() - age;
        for entry in std::fs::read_dir(self.dir.path().join("registry/blobs/sha256")).unwrap() {
            let file = std::fs::File::options()
                .append(true)
                .open(entry.unwrap().path())
                .unwrap();
            file.set_modified(then).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_images_are_collected_and_concurrent_pushes_survive() {
    let s = Setup::start().await;
    let shared = s.upload(b"shared layer").await;
    let (layer_a, config_a) = (s.upload(b"layer of a").await, s.upload(b"{}a").await);
    let (layer_b, config_b) = (s.upload(b"layer of b").await, s.upload(b"{}b").await);
    let manifest_a = s
        .put_manifest("a", &config_a, &[&layer_a, &shared])
        .await
        .unwrap();
    let manifest_b = s
        .put_manifest("b", &config_b, &[&layer_b, &shared])
        .await
        .unwrap();
    // An old blob no manifest references (an abandoned push), which the
    // pushes below race the passes to use.
    let orphan = s.upload(b"an orphan layer").await;

    // Nothing is old yet: a pass removes nothing.
    let report = s.registry.collect_garbage(HOUR).await.unwrap();
    assert_eq!((report.blobs, report.manifests), (0, 0), "{report:?}");

    // Image a is deleted through the API, and everything is made two
    // hours old.
    assert_eq!(
        s.status(reqwest::Method::DELETE, &format!("manifests/{manifest_a}"))
            .await,
        202
    );
    s.age_everything(2 * HOUR);

    // Passes run while blobs are uploaded and manifests pushed, some
    // referencing the old orphan.
    let gc = {
        let registry = s.registry.clone();
        tokio::spawn(async move {
            let mut passes = 0;
            let mut swept = 0;
            for _ in 0..40 {
                let r = registry.collect_garbage(HOUR).await.unwrap();
                passes += 1;
                swept += r.blobs;
                tokio::task::yield_now().await;
            }
            (passes, swept)
        })
    };
    let mut pushed = Vec::new();
    let mut refused = 0;
    for i in 0..20 {
        let layer = s.upload(format!("fresh layer {i}").as_bytes()).await;
        let config = s.upload(format!("{{}}{i}").as_bytes()).await;
        let layers: Vec<&str> = if i % 2 == 0 {
            vec![&layer, &orphan]
        } else {
            vec![&layer]
        };
        match s.put_manifest(&format!("t{i}"), &config, &layers).await {
            Ok(digest) => pushed.push((
                digest,
                config,
                layers.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
            )),
            Err(e) => {
                // Only the orphan may have been swept under a push.
                assert!(
                    e.contains("MANIFEST_BLOB_UNKNOWN") && e.contains(&orphan),
                    "{e}"
                );
                refused += 1;
            }
        }
    }
    let (passes, _) = tokio::time::timeout(Duration::from_secs(60), gc)
        .await
        .expect("the gc passes did not finish in 60 s")
        .unwrap();
    let during = s
        .upload(b"uploaded after the passes, before the last")
        .await;
    let last = s.registry.collect_garbage(HOUR).await.unwrap();
    println!(
        "{passes} passes, {} manifests pushed, {refused} refused, last pass {last:?}",
        pushed.len()
    );

    // Image a: its own blobs and its manifest are gone, on disk and to clients.
    for d in [&layer_a, &config_a, &manifest_a] {
        assert!(
            !s.blob_file(d).exists(),
            "{d} of the deleted image is still on disk"
        );
    }
    assert_eq!(
        s.status(reqwest::Method::GET, &format!("blobs/{layer_a}"))
            .await,
        404
    );
    // Image b and the shared layer stay, and can be pulled.
    assert_eq!(s.status(reqwest::Method::GET, "manifests/b").await, 200);
    for d in [&layer_b, &config_b, &shared, &manifest_b] {
        assert!(
            s.blob_file(d).exists(),
            "{d} of a tagged image was collected"
        );
    }
    // Every manifest pushed during the passes can be pulled whole.
    assert!(!pushed.is_empty());
    for (digest, config, layers) in &pushed {
        assert_eq!(
            s.status(reqwest::Method::GET, &format!("manifests/{digest}"))
                .await,
            200
        );
        for d in layers.iter().chain([config]) {
            assert_eq!(
                s.status(reqwest::Method::GET, &format!("blobs/{d}")).await,
                200,
                "blob {d} of manifest {digest} pushed during the passes"
            );
        }
    }
    // A blob uploaded moments ago and not referenced yet survives.
    assert!(s.blob_file(&during).exists());
    assert_eq!(
        s.status(reqwest::Method::HEAD, &format!("blobs/{during}"))
            .await,
        200
    );
}
