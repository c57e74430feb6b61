//! The worker's logic against an in-process store and the fakes: claims,
//! step order, failure, cancel and timeout paths, deploy, prune and log
//! chunks, without Docker or git, in paused time.

use std::sync::Arc;
use std::time::Duration;

use lb_model::keys::Keys;
use lb_model::{Build, BuildStatus};
use lb_store::embedded::EmbeddedStore;
use lb_store::registry::Signer;
use lb_store::{Shared, StoreExt};
use serde_json::json;

use super::fake::{Call, FakeImages, FakeSources};
use super::image::{BuildRequest, Output};
use super::Worker;

const P: &str = "p1";
const S: &str = "s1";
const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

struct Setup {
    worker: Arc<Worker>,
    images: Arc<FakeImages>,
    sources: Arc<FakeSources>,
    store: Shared,
    keys: Keys,
    _dir: tempfile::TempDir,
}

fn dockerfile_repo() -> FakeSources {
    FakeSources {
        files: [
            ("Dockerfile".to_owned(), "FROM scratch\n".to_owned()),
            ("app.txt".to_owned(), "hello".to_owned()),
        ]
        .into(),
        sha: "c0ffee".into(),
        ..Default::default()
    }
}

impl Setup {
    async fn start(images: FakeImages, sources: FakeSources, build: serde_json::Value) -> Self {
        Self::with_timeout(images, sources, build, Duration::from_secs(600)).await
    }

    async fn with_timeout(
        images: FakeImages,
        sources: FakeSources,
        build: serde_json::Value,
        timeout: Duration,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Shared = Arc::new(
            EmbeddedStore::open_dir(&dir.path().join("store"))
                .await
                .unwrap(),
        );
        let keys = Keys::default();
        let signer = Signer::load(store.as_ref(), &keys).await.unwrap();
        let config = crate::Config {
            keys: keys.clone(),
            registry_listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_owned(),
            registry_address: "reg:5000".into(),
            api: String::new(),
            concurrency: 2,
            build_memory: 256,
            build_timeout: timeout,
            max_context: 1 << 20,
            keep_images: 1,
            base_images: Default::default(),
            housekeeping: Default::default(),
        };
        let meta = json!({"id": S, "name": "web", "project": P, "created": 1, "updated": 1, "generation": 1});
        let spec = json!({"name": "web", "source": {"url": "https://example.com/o/r.git", "branch": "main", "build": build}});
        store
            .put(&keys.service_meta(P, S), meta.to_string().into_bytes())
            .await
            .unwrap();
        store
            .put(&keys.service_spec(P, S), spec.to_string().into_bytes())
            .await
            .unwrap();
        // What the registry records when the push lands.
        store
            .put(
                &keys.image_tag(P, S, "2"),
                json!({ "digest": DIGEST }).to_string().into_bytes(),
            )
            .await
            .unwrap();
        let images = Arc::new(images);
        let sources = Arc::new(sources);
        let worker = Arc::new(Worker::with_parts(
            store.clone(),
            config,
            "reg:5000".into(),
            Arc::new(signer),
            images.clone(),
            sources.clone(),
        ));
        Setup {
            worker,
            images,
            sources,
            store,
            keys,
            _dir: dir,
        }
    }

    async fn put_build(&self, number: u64, status: &str) {
        let build = json!({"number": number, "status": status, "created": 1});
        self.store
            .put(
                &self.keys.build(P, S, number),
                build.to_string().into_bytes(),
            )
            .await
            .unwrap();
    }

    /// Queues build 2 and claims it.
    async fn claim(&self) -> super::run::Run {
        self.put_build(2, "queued").await;
        let key = self.keys.build_queued(P, S, 2);
        self.store.put(&key, Vec::new()).await.unwrap();
        let entry = self.store.get(&key).await.unwrap().unwrap();
        let lease = self.store.lease_grant(60).await.unwrap();
        let run = self.worker.claim(lease, &entry).await.unwrap();
        let again = self.worker.claim(lease, &entry).await.unwrap();
        assert!(again.is_none(), "a build is claimed once");
        run.expect("claimed")
    }

    async fn record(&self, number: u64) -> Build {
        let kv = self
            .store
            .get(&self.keys.build(P, S, number))
            .await
            .unwrap();
        serde_json::from_slice(&kv.unwrap().value).unwrap()
    }

    async fn spec(&self) -> serde_json::Value {
        let kv = self.store.get(&self.keys.service_spec(P, S)).await.unwrap();
        serde_json::from_slice(&kv.unwrap().value).unwrap()
    }

    async fn log(&self, number: u64) -> String {
        let prefix = self.keys.build_log_prefix(P, S, number);
        let (kvs, _) = self.store.list(&prefix).await.unwrap();
        let chunks = kvs.iter().map(|kv| {
            (
                self.keys.build_log_seq(&prefix, &kv.key).unwrap(),
                kv.value.as_slice(),
            )
        });
        String::from_utf8(lb_model::join_log_chunks(chunks)).unwrap()
    }

    async fn claims_released(&self) -> bool {
        let claimed = self.keys.build_claimed(P, S, 2);
        let running = self.keys.build_running(P, S, 2);
        self.store.get(&claimed).await.unwrap().is_none()
            && self.store.get(&running).await.unwrap().is_none()
    }
}

fn steps(build: &Build) -> Vec<BuildStatus> {
    build.steps.iter().map(|s| s.name).collect()
}

fn text(s: &str) -> Output {
    Output::Text(s.into())
}

#[tokio::test(start_paused = true)]
async fn a_build_runs_its_steps_in_order_pushes_and_deploys() {
    let images = FakeImages {
        build_output: vec![
            text("Step 1/1 : FROM scratch\n"),
            text("\n"),
            text("built\n"),
        ],
        push_output: vec![text("Pushed"), text("")],
        ..Default::default()
    };
    let s = Setup::start(images, dockerfile_repo(), json!({})).await;
    s.put_build(1, "succeeded").await;
    s.claim().await.execute().await;

    let build = s.record(2).await;
    assert_eq!(build.status, BuildStatus::Succeeded, "{}", build.message);
    use BuildStatus::*;
    assert_eq!(steps(&build), [Cloning, Preparing, Building, Pushing]);
    assert!(build.steps.iter().all(|s| s.finished.is_some()));
    assert_eq!(build.commit.as_deref(), Some("c0ffee"));
    assert_eq!(build.message, "the subject");
    assert_eq!(build.image.as_deref(), Some("reg:5000/p1/s1:2"));
    assert_eq!(build.digest.as_deref(), Some(DIGEST));

    let calls = s.images.calls();
    let Call::Build(request, files) = &calls[0] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        request,
        &BuildRequest {
            tag: "reg:5000/p1/s1:2".into(),
            dockerfile: ".lb-Dockerfile".into(),
            memory: 256 << 20,
            labels: vec![("lb.build".into(), "p1/s1/2".into())],
        }
    );
    assert_eq!(files, &[".lb-Dockerfile", "Dockerfile", "app.txt"]);
    let Call::Push(push) = &calls[1] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        (push.image.as_str(), push.tag.as_str()),
        ("reg:5000/p1/s1", "2")
    );
    assert!(
        s.worker.signer.verify(&push.token).is_some(),
        "a token of the builder's"
    );
    // keep_images is 1: build 1's tag goes.
    assert_eq!(calls[2..], [Call::Remove("reg:5000/p1/s1:1".into())]);

    let spec = s.spec().await;
    assert_eq!(spec["image"], format!("reg:5000/p1/s1@{DIGEST}"));
    let meta = s
        .store
        .get(&s.keys.service_meta(P, S))
        .await
        .unwrap()
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&meta.value).unwrap();
    assert_eq!(
        meta["generation"], 2,
        "a new generation rolls the image out"
    );

    let log = s.log(2).await;
    for line in [
        "cloning https://example.com/o/r.git (branch main)\n",
        "commit c0ffee: the subject\n",
        "Step 1/1 : FROM scratch\nbuilt\nPushed\n",
        &format!("pushed reg:5000/p1/s1:2 ({DIGEST})\n"),
        &format!("rolling out generation 2 with reg:5000/p1/s1@{DIGEST} (its outcome: the service's deploys)\n"),
    ] {
        assert!(log.contains(line), "{line:?} not in {log}");
    }
    assert!(s.claims_released().await);
    let asked = s.sources.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        [(
            "https://example.com/o/r.git".into(),
            Some("main".into()),
            None
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_template_build_marks_where_dependencies_end() {
    let images = FakeImages {
        build_output: vec![
            text("pip install\n"),
            text("LB_STEP=building\n"),
            text("done\n"),
        ],
        ..Default::default()
    };
    let sources = FakeSources {
        files: [("app.py".to_owned(), "print(1)".to_owned())].into(),
        sha: "c0ffee".into(),
        ..Default::default()
    };
    let build = json!({"kind": "template", "language": "python", "framework": "flask"});
    let s = Setup::start(images, sources, build).await;
    s.claim().await.execute().await;
    let build = s.record(2).await;
    assert_eq!(build.status, BuildStatus::Succeeded, "{}", build.message);
    use BuildStatus::*;
    assert_eq!(
        steps(&build),
        [
            Cloning,
            Preparing,
            InstallingDependencies,
            Building,
            Pushing
        ]
    );
    assert!(s
        .log(2)
        .await
        .contains("Dockerfile written from the template:\n  "));
}

#[tokio::test(start_paused = true)]
async fn a_failed_docker_step_fails_the_build_with_a_memory_hint() {
    let images = FakeImages {
        build_output: vec![
            text("Step 1/2\n"),
            Output::Error("The command returned a non-zero code: 137".into()),
        ],
        ..Default::default()
    };
    let s = Setup::start(images, dockerfile_repo(), json!({})).await;
    s.claim().await.execute().await;
    let build = s.record(2).await;
    assert_eq!(build.status, BuildStatus::Failed);
    assert!(
        build.message.contains("--build-memory"),
        "{}",
        build.message
    );
    assert!(build.finished.is_some());
    assert_eq!(s.images.calls().len(), 1, "no push after a failed build");
    assert!(s
        .log(2)
        .await
        .ends_with(&format!("build failed: {}\n", build.message)));
    assert_eq!(
        s.spec().await["image"],
        serde_json::Value::Null,
        "not deployed"
    );
    assert!(s.claims_released().await);
}

#[tokio::test(start_paused = true)]
async fn a_failed_checkout_fails_before_docker() {
    let sources = FakeSources {
        error: Some("cannot clone https://example.com/o/r.git: not found".into()),
        ..Default::default()
    };
    let s = Setup::start(FakeImages::default(), sources, json!({})).await;
    s.claim().await.execute().await;
    let build = s.record(2).await;
    assert_eq!(build.status, BuildStatus::Failed);
    assert_eq!(
        build.message,
        "cannot clone https://example.com/o/r.git: not found"
    );
    assert_eq!(steps(&build), [BuildStatus::Cloning]);
    assert!(s.images.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_cancel_stops_a_running_build_and_it_stays_canceled() {
    let images = FakeImages {
        build_output: vec![text("working\n")],
        build_hangs: true,
        ..Default::default()
    };
    let s = Setup::start(images, dockerfile_repo(), json!({})).await;
    let running = tokio::spawn(s.claim().await.execute());
    while s.images.calls().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut build = s.record(2).await;
    build.status = BuildStatus::Canceled;
    let key = s.keys.build(P, S, 2);
    s.store
        .put(&key, serde_json::to_vec(&build).unwrap())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the build did not stop within 10 s of its cancel")
        .unwrap();
    assert_eq!(s.record(2).await.status, BuildStatus::Canceled);
    let log = s.log(2).await;
    assert!(log.ends_with("build canceled\n"), "{log}");
    assert!(
        log.contains("working\n"),
        "output before the cancel is kept: {log}"
    );
    assert_eq!(s.images.calls().len(), 1, "no push");
    assert!(s.claims_released().await);
}

#[tokio::test(start_paused = true)]
async fn a_build_past_its_time_limit_fails() {
    let images = FakeImages {
        build_hangs: true,
        ..Default::default()
    };
    let s = Setup::with_timeout(
        images,
        dockerfile_repo(),
        json!({}),
        Duration::from_secs(60),
    )
    .await;
    s.claim().await.execute().await;
    let build = s.record(2).await;
    assert_eq!(build.status, BuildStatus::Failed);
    assert_eq!(
        build.message,
        "the build took longer than 60 s (--build-timeout)"
    );
}

#[tokio::test(start_paused = true)]
async fn output_is_flushed_while_docker_is_quiet() {
    let images = FakeImages {
        build_output: vec![text("first line\n")],
        build_hangs: true,
        ..Default::default()
    };
    let s = Setup::start(images, dockerfile_repo(), json!({})).await;
    let running = tokio::spawn(s.claim().await.execute());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        s.log(2).await.ends_with("first line\n"),
        "{}",
        s.log(2).await
    );
    running.abort();
}

#[tokio::test(start_paused = true)]
async fn the_sweep_fails_builds_whose_builder_died() {
    let s = Setup::start(FakeImages::default(), dockerfile_repo(), json!({})).await;
    s.put_build(2, "building").await;
    let claimed = s.keys.build_claimed(P, S, 2);
    s.store.put(&claimed, b"gone".to_vec()).await.unwrap();
    s.worker.sweep().await;
    let build = s.record(2).await;
    assert_eq!(build.status, BuildStatus::Failed);
    assert_eq!(build.message, "the builder running this build stopped");
    assert!(s.store.get(&claimed).await.unwrap().is_none());
}

/// A Dockerfile naming another project's image in lb's registry fails the
/// build before Docker is asked; one naming its own project's image has it
/// pulled first with a token for that repository alone.
#[tokio::test(start_paused = true)]
async fn a_dockerfile_builds_only_on_its_own_projects_images() {
    let repo = |dockerfile: &str| FakeSources {
        files: [("Dockerfile".to_owned(), dockerfile.to_owned())].into(),
        sha: "c0ffee".into(),
        ..Default::default()
    };
    let setup = |sources| async move {
        let s = Setup::start(FakeImages::default(), sources, json!({})).await;
        let project = json!({"id": P, "name": "demo", "owner": "u1", "created": 1, "updated": 1});
        s.store
            .put(&s.keys.project(P), project.to_string().into_bytes())
            .await
            .unwrap();
        s.store
            .put(&s.keys.service_index(P, "web"), S.as_bytes().to_vec())
            .await
            .unwrap();
        s
    };

    let s = setup(repo("FROM scratch\nCOPY --from=reg:5000/other/x:1 / /\n")).await;
    s.claim().await.execute().await;
    let build = s.record(2).await;
    assert_eq!(build.status, BuildStatus::Failed);
    assert!(
        build
            .message
            .starts_with("Dockerfile line 2: COPY --from=reg:5000/other/x:1")
            && build.message.contains("not a repository of this project"),
        "{}",
        build.message
    );
    assert_eq!(s.images.calls(), []);

    let s = setup(repo("FROM reg:5000/demo/web:1 AS base\nFROM base\n")).await;
    s.claim().await.execute().await;
    assert_eq!(s.record(2).await.status, BuildStatus::Succeeded);
    let calls = s.images.calls();
    let Call::Pull(pull) = &calls[0] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        (
            pull.image.as_str(),
            pull.reference.as_str(),
            pull.registry.as_str()
        ),
        ("reg:5000/demo/web", "1", "reg:5000")
    );
    let claims = s.worker.signer.verify(&pull.token).unwrap();
    assert_eq!(claims.access.len(), 1);
    assert_eq!(claims.allows("demo/web", "pull"), Some((P, S)));
    assert_eq!(claims.allows("demo/web", "push"), None);
    assert!(matches!(calls[1], Call::Build(..)), "{calls:?}");
    assert!(s
        .log(2)
        .await
        .contains("pulling reg:5000/demo/web:1 with the project's registry credential"));
}
