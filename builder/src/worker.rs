//! The build queue worker. A queued build is a key under `/lb/queue/builds/`;
//! a builder claims it with one transaction that checks both the queue entry
//! and the build record are as it read them, so no build runs twice. While
//! it runs, a key bound to the builder's lease marks it; a build whose
//! builder died (lease gone) is failed by the next builder's sweep.
//!
//! A build: clone (git, network URLs only), prepare the Dockerfile and the
//! context, build with the Docker engine under a memory limit and a time
//! limit, push to lb's registry, then point the service's image at the
//! pushed digest (revision-checked) so the scheduler rolls it out. Each
//! status change is a timed step on the build record; output is appended
//! to the store as chunks (`build-logs/<n>/<seq>`, what is new at each
//! flush, the oldest dropped beyond 256 KiB) which the API joins and
//! follows. A cancel (the API sets `canceled`) stops the work at once.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;
use bollard::image::{BuildImageOptions, PushImageOptions, RemoveImageOptions};
use bollard::Docker;
use futures::StreamExt;
use lb_model::keys::Keys;
use lb_model::{
    Build, BuildKind, BuildStatus, BuildStep, ServiceMeta, ServiceSpec, BUILD_LOG_DROPPED,
    BUILD_LOG_MAX,
};
use lb_store::registry::{repository, Access, Signer};
use lb_store::{Compare, Op, Shared, StoreExt, Txn};
use tokio::process::Command;
use tokio::sync::Semaphore;

use crate::Config;

/// How often new log output is written to the store while a build runs.
const LOG_FLUSH: Duration = Duration::from_millis(300);
/// Lease of a builder's running marks.
const LEASE_TTL: i64 = 10;
/// Queue rescans without changes, and sweeps for builds of dead builders.
const RESCAN: Duration = Duration::from_secs(30);

/// Why a build stopped early.
enum Stop {
    Failed(String),
    Canceled,
}

impl From<String> for Stop {
    fn from(m: String) -> Self {
        Stop::Failed(m)
    }
}

type Step<T> = Result<T, Stop>;

/// A builder: claims and runs builds.
pub struct Worker {
    store: Shared,
    keys: Keys,
    config: Config,
    registry: String,
    signer: Arc<Signer>,
    docker: Docker,
    id: String,
    /// Told when a build ends and its permit is free again.
    freed: tokio::sync::Notify,
}

impl Worker {
    /// A worker pushing to the registry at `registry` (host:port).
    pub async fn new(
        store: Shared,
        config: Config,
        registry: String,
        signer: Arc<Signer>,
    ) -> Result<Self, String> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| format!("cannot reach Docker: {e}"))?;
        Ok(Self {
            keys: config.keys.clone(),
            store,
            config,
            registry,
            signer,
            docker,
            id: lb_model::ids::new_id(),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// Claims and runs builds until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let permits = Arc::new(Semaphore::new(self.config.concurrency));
        loop {
            let lease = loop {
                match self.store.lease_grant(LEASE_TTL).await {
                    Ok(lease) => break lease,
                    Err(e) => {
                        tracing::warn!(error = %e, "builder: no lease yet");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = &mut shutdown => return,
                        }
                    }
                }
            };
            let result = tokio::select! {
                r = self.clone().serve(lease, permits.clone()) => r,
                _ = &mut shutdown => return,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "builder: queue watch lost; again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// One lease's life: keep it alive, sweep, claim what is queued. Each
    /// wait is on a timer, the queue's watch or a finished build: an idle
    /// builder sleeps (a permit's `acquire` would return at once while
    /// permits are free, and made this a busy loop).
    async fn serve(self: Arc<Self>, lease: i64, permits: Arc<Semaphore>) -> Result<(), String> {
        let queue = self.keys.build_queue();
        let mut keepalive = tokio::time::interval(Duration::from_secs(3));
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (_, revision) = self.store.list(&queue).await.map_err(|e| e.to_string())?;
        let mut watch = self
            .store
            .watch(&queue, revision + 1)
            .await
            .map_err(|e| e.to_string())?;
        // What woke the loop decides what it does.
        let mut sweep = true;
        let mut claim = true;
        loop {
            if sweep {
                self.sweep().await;
            }
            if claim && permits.available_permits() > 0 {
                self.claim_all(lease, &permits).await?;
            }
            (sweep, claim) = (false, false);
            tokio::select! {
                _ = keepalive.tick() => {
                    self.store.lease_keep_alive(lease).await.map_err(|e| e.to_string())?;
                }
                _ = rescan.tick() => (sweep, claim) = (true, true),
                changes = watch.next() => {
                    match changes {
                        Some(Ok(_)) => claim = true,
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Err("watch ended".into()),
                    }
                }
                // A finished build frees a permit: look again.
                _ = self.freed.notified() => claim = true,
            }
        }
    }

    /// Claims queued builds while permits last.
    async fn claim_all(
        self: &Arc<Self>,
        lease: i64,
        permits: &Arc<Semaphore>,
    ) -> Result<(), String> {
        let (queued, _) = self
            .store
            .list(&self.keys.build_queue())
            .await
            .map_err(|e| e.to_string())?;
        for entry in queued {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                return Ok(());
            };
            let Some(name) = entry.key.strip_prefix(&self.keys.build_queue()) else {
                continue;
            };
            let mut parts = name.split('.');
            let (Some(pid), Some(sid), Some(number)) = (
                parts.next(),
                parts.next(),
                parts.next().and_then(|n| n.parse::<u64>().ok()),
            ) else {
                let _ = self.store.delete(&entry.key).await;
                continue;
            };
            let build_key = self.keys.build(pid, sid, number);
            let build = self
                .store
                .get(&build_key)
                .await
                .map_err(|e| e.to_string())?;
            let Some(build_kv) = build else {
                let _ = self.store.delete(&entry.key).await;
                continue;
            };
            let Ok(mut build) = serde_json::from_slice::<Build>(&build_kv.value) else {
                let _ = self.store.delete(&entry.key).await;
                continue;
            };
            if build.status != BuildStatus::Queued {
                let _ = self.store.delete(&entry.key).await;
                continue;
            }
            let now = now();
            build.status = BuildStatus::Cloning;
            build.steps.push(BuildStep {
                name: BuildStatus::Cloning,
                started: now,
                finished: None,
            });
            let txn = Txn::new()
                .when(Compare::ModRevision(entry.key.clone(), entry.mod_revision))
                .when(Compare::ModRevision(
                    build_key.clone(),
                    build_kv.mod_revision,
                ))
                .then(Op::delete(entry.key.clone()))
                .then(Op::put(build_key.clone(), encode(&build)))
                .then(Op::put(
                    self.keys.build_claimed(pid, sid, number),
                    self.id.clone().into_bytes(),
                ))
                .then(Op::Put {
                    key: self.keys.build_running(pid, sid, number),
                    value: self.id.clone().into_bytes(),
                    lease,
                });
            let resp = self.store.txn(txn).await.map_err(|e| e.to_string())?;
            if !resp.succeeded {
                continue; // another builder, or a cancel, was first
            }
            tracing::info!(project = pid, service = sid, number, "build claimed");
            let run = Run {
                worker: self.clone(),
                pid: pid.to_owned(),
                sid: sid.to_owned(),
                number,
                build,
                revision: resp.revision,
                log: Log::default(),
                flushed: Instant::now(),
                dir: self
                    .config
                    .data_dir
                    .join("builds")
                    .join(format!("{pid}-{sid}-{number}")),
            };
            let worker = self.clone();
            tokio::spawn(async move {
                run.execute().await;
                drop(permit);
                worker.freed.notify_one();
            });
        }
        Ok(())
    }

    /// Fails builds whose builder died (claimed, but no live running mark).
    async fn sweep(&self) {
        let prefix = self.keys.build_claimed_prefix();
        let Ok((claimed, _)) = self.store.list(&prefix).await else {
            return;
        };
        for entry in claimed {
            let Some(name) = entry.key.strip_prefix(&prefix) else {
                continue;
            };
            let mut parts = name.split('.');
            let (Some(pid), Some(sid), Some(number)) = (
                parts.next(),
                parts.next(),
                parts.next().and_then(|n| n.parse::<u64>().ok()),
            ) else {
                continue;
            };
            if matches!(
                self.store
                    .get(&self.keys.build_running(pid, sid, number))
                    .await,
                Ok(Some(_)) | Err(_)
            ) {
                continue;
            }
            let key = self.keys.build(pid, sid, number);
            if let Ok(Some(kv)) = self.store.get(&key).await {
                if let Ok(mut build) = serde_json::from_slice::<Build>(&kv.value) {
                    if !build.status.is_final() {
                        finish_record(
                            &mut build,
                            BuildStatus::Failed,
                            "the builder running this build stopped".into(),
                        );
                        let txn = Txn::new()
                            .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                            .then(Op::put(key, encode(&build)));
                        let _ = self.store.txn(txn).await;
                    }
                }
            }
            let _ = self.store.delete(&entry.key).await;
        }
    }
}

/// One build being run.
struct Run {
    worker: Arc<Worker>,
    pid: String,
    sid: String,
    number: u64,
    build: Build,
    revision: i64,
    log: Log,
    flushed: Instant,
    dir: PathBuf,
}

/// A build's log: output not yet written, and the chunks in the store.
#[derive(Default)]
struct Log {
    /// Output since the last chunk written.
    pending: Vec<u8>,
    /// `pending` lost its front (more than the log keeps came at once).
    cut: bool,
    /// The next chunk's number.
    next: u64,
    /// Chunks in the store, oldest first: number and size.
    stored: VecDeque<(u64, usize)>,
    /// Bytes of `stored`.
    stored_bytes: usize,
}

/// The chunks after a write of [`Log::pending`]: applied once it committed.
struct LogWrite {
    next: u64,
    stored: VecDeque<(u64, usize)>,
    stored_bytes: usize,
}

impl Log {
    /// Appends one line, keeping `pending` within the bound.
    fn line(&mut self, line: &str) {
        self.pending
            .extend_from_slice(line.trim_end_matches(['\r', '\n']).as_bytes());
        self.pending.push(b'\n');
        if self.pending.len() > BUILD_LOG_MAX {
            let cut = self.pending.len() - BUILD_LOG_MAX;
            let cut = self.pending[cut..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(cut, |p| cut + p + 1);
            self.pending.drain(..cut);
            self.cut = true;
        }
    }

    /// The store operations writing `pending` as the next chunk and
    /// deleting the oldest chunks beyond the bound (none when nothing is
    /// pending), and the state they lead to.
    fn write(&self, keys: &Keys, pid: &str, sid: &str, number: u64) -> (Vec<Op>, LogWrite) {
        let mut after = LogWrite {
            next: self.next,
            stored: self.stored.clone(),
            stored_bytes: self.stored_bytes,
        };
        if self.pending.is_empty() {
            return (Vec::new(), after);
        }
        let mut chunk = Vec::with_capacity(self.pending.len() + BUILD_LOG_DROPPED.len());
        if self.cut {
            chunk.extend_from_slice(BUILD_LOG_DROPPED.as_bytes());
        }
        chunk.extend_from_slice(&self.pending);
        let mut ops = Vec::new();
        while after.stored_bytes + chunk.len() > BUILD_LOG_MAX {
            let Some((seq, len)) = after.stored.pop_front() else {
                break;
            };
            ops.push(Op::delete(keys.build_log_chunk(pid, sid, number, seq)));
            after.stored_bytes -= len;
        }
        after.stored.push_back((self.next, chunk.len()));
        after.stored_bytes += chunk.len();
        after.next = self.next + 1;
        ops.push(Op::put(
            keys.build_log_chunk(pid, sid, number, self.next),
            chunk,
        ));
        (ops, after)
    }

    /// Takes in a write that committed.
    fn written(&mut self, after: LogWrite) {
        self.pending.clear();
        self.cut = false;
        self.next = after.next;
        self.stored = after.stored;
        self.stored_bytes = after.stored_bytes;
    }
}

impl Run {
    async fn execute(mut self) {
        let limit = self.worker.config.build_timeout;
        let canceled = self.watch_cancel();
        let outcome = {
            let work = self.work();
            tokio::pin!(work);
            tokio::select! {
                r = tokio::time::timeout(limit, &mut work) => match r {
                    Ok(r) => r,
                    Err(_) => Err(Stop::Failed(format!("the build took longer than {} s (--build-timeout)", limit.as_secs()))),
                },
                _ = canceled => Err(Stop::Canceled),
            }
        };
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
        match outcome {
            Ok(()) => {}
            Err(Stop::Canceled) => {
                self.line("build canceled");
                let _ = self.flush_log().await;
            }
            Err(Stop::Failed(message)) => {
                self.line(&format!("build failed: {message}"));
                finish_record(&mut self.build, BuildStatus::Failed, message);
                let _ = self.save().await;
            }
        }
        let w = &self.worker;
        let txn = Txn::new()
            .then(Op::delete(w.keys.build_running(
                &self.pid,
                &self.sid,
                self.number,
            )))
            .then(Op::delete(w.keys.build_claimed(
                &self.pid,
                &self.sid,
                self.number,
            )));
        let _ = w.store.txn(txn).await;
    }

    /// Resolves when the build record turns `canceled` (or disappears).
    fn watch_cancel(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let store = self.worker.store.clone();
        let key = self.worker.keys.build(&self.pid, &self.sid, self.number);
        let from = self.revision + 1;
        async move {
            let Ok(mut watch) = store.watch(&key, from).await else {
                return std::future::pending().await;
            };
            while let Some(Ok(changes)) = watch.next().await {
                for event in changes.events {
                    match event {
                        lb_store::Event::Put(kv)
                            if kv.key == key
                                && serde_json::from_slice::<Build>(&kv.value)
                                    .is_ok_and(|b| b.status == BuildStatus::Canceled) =>
                        {
                            return;
                        }
                        lb_store::Event::Delete(kv) if kv.key == key => return,
                        _ => {}
                    }
                }
            }
            std::future::pending().await
        }
    }

    async fn work(&mut self) -> Step<()> {
        let w = self.worker.clone();
        let spec_kv = w
            .store
            .get(&w.keys.service_spec(&self.pid, &self.sid))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the service was deleted".to_string())?;
        let spec: ServiceSpec =
            serde_json::from_slice(&spec_kv.value).map_err(|e| e.to_string())?;
        let source = spec
            .source
            .clone()
            .ok_or_else(|| "the service has no source to build".to_string())?;

        // Cloning: only from owners the allowlist names (if it names any),
        // with the owner's linked vendor token for private repositories.
        crate::credentials::check_allowlist(w.store.as_ref(), &w.keys, &source.url).await?;
        let (auth, note) = crate::credentials::git_env(
            w.store.as_ref(),
            &w.keys,
            &self.pid,
            source.vendor.as_deref(),
            &source.url,
        )
        .await?;
        if let Some(note) = note {
            self.line(&note);
        }
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| format!("work dir: {e}"))?;
        let repo = self.dir.join("repo");
        let commit = self.build.commit.clone().or(source.commit.clone());
        self.line(&format!(
            "cloning {}{}",
            source.url,
            source
                .branch
                .as_deref()
                .map(|b| format!(" (branch {b})"))
                .unwrap_or_default()
        ));
        let mut clone = vec!["clone", "--quiet", "--no-tags"];
        if commit.is_none() {
            clone.extend(["--depth", "1"]);
        }
        if let Some(branch) = source.branch.as_deref() {
            clone.extend(["--branch", branch]);
        }
        clone.push("--");
        let repo_arg = repo.to_string_lossy().into_owned();
        clone.extend([source.url.as_str(), repo_arg.as_str()]);
        let dir = self.dir.clone();
        let mut cloned = self.git_with(&dir, &clone, &auth).await;
        if cloned.as_ref().is_err_and(|e| e.contains("shallow")) {
            // Dumb HTTP servers cannot serve a shallow clone: a full one.
            let _ = tokio::fs::remove_dir_all(&repo).await;
            clone.retain(|a| *a != "--depth" && *a != "1");
            cloned = self.git_with(&dir, &clone, &auth).await;
        }
        cloned.map_err(|e| format!("cannot clone {}: {e}", source.url))?;
        if let Some(commit) = &commit {
            self.git(&repo, &["checkout", "--quiet", "--detach", commit])
                .await
                .map_err(|e| format!("commit {commit} not found in {}: {e}", source.url))?;
        }
        let sha = self
            .git(&repo, &["rev-parse", "HEAD"])
            .await?
            .trim()
            .to_owned();
        let subject = self
            .git(&repo, &["log", "-1", "--format=%s"])
            .await?
            .trim()
            .to_owned();
        self.line(&format!("commit {sha}: {subject}"));
        self.build.commit = Some(sha);
        self.build.message = subject.chars().take(500).collect();

        // Preparing.
        self.step(BuildStatus::Preparing).await?;
        let build = &source.build;
        let context = inside(
            &repo,
            build.context.as_deref().unwrap_or("."),
            "source.build.context",
        )?;
        let dockerfile = match build.kind {
            BuildKind::Dockerfile => {
                let path = inside(
                    &repo,
                    build.dockerfile.as_deref().unwrap_or("Dockerfile"),
                    "source.build.dockerfile",
                )?;
                tokio::fs::read(&path).await.map_err(|_| {
                    format!(
                        "Dockerfile {:?} not found in the repository",
                        build.dockerfile.as_deref().unwrap_or("Dockerfile")
                    )
                })?
            }
            BuildKind::Template => {
                let text = crate::template::render(build, &w.config.base_images)?;
                self.line("Dockerfile written from the template:");
                for line in text.lines() {
                    self.line(&format!("  {line}"));
                }
                text.into_bytes()
            }
        };
        let max = w.config.max_context;
        let tar = tokio::task::spawn_blocking(move || pack(&context, &dockerfile, max))
            .await
            .map_err(|e| e.to_string())??;
        self.line(&format!("context: {} KiB", tar.len() / 1024));

        // Installing dependencies (templates mark where that ends), building.
        let next = match build.kind {
            BuildKind::Template => BuildStatus::InstallingDependencies,
            BuildKind::Dockerfile => BuildStatus::Building,
        };
        self.step(next).await?;
        let repo_name = repository(&self.pid, &self.sid);
        let image = format!("{}/{repo_name}", w.registry);
        let tagged = format!("{image}:{}", self.number);
        let memory = w.config.build_memory * 1024 * 1024;
        let options = BuildImageOptions {
            dockerfile: ".lb-Dockerfile".to_string(),
            t: tagged.clone(),
            rm: true,
            forcerm: true,
            memory: Some(memory),
            memswap: Some(memory as i64),
            labels: [(
                "lb.build".to_string(),
                format!("{}/{}/{}", self.pid, self.sid, self.number),
            )]
            .into(),
            ..Default::default()
        };
        let mut stream = w.docker.build_image(options, None, Some(tar.into()));
        while let Some(item) = self.next_flushing(&mut stream).await? {
            let info = match item {
                Ok(info) => info,
                // Docker reports a failed step as an error in the stream.
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    bollard::models::BuildInfo {
                        error: Some(error),
                        ..Default::default()
                    }
                }
                Err(e) => return Err(Stop::Failed(format!("docker build: {e}"))),
            };
            if let Some(error) = info.error {
                let hint = if error.contains("137") || error.to_lowercase().contains("killed") {
                    format!(
                        " (the build's memory limit is {} MiB: --build-memory)",
                        w.config.build_memory
                    )
                } else {
                    String::new()
                };
                return Err(Stop::Failed(format!("{}{hint}", error.trim())));
            }
            if let Some(text) = info.stream {
                if text.contains("LB_STEP=building")
                    && self.build.status == BuildStatus::InstallingDependencies
                {
                    self.step(BuildStatus::Building).await?;
                }
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    self.line(line);
                }
                self.maybe_flush().await?;
            }
        }
        drop(stream);

        // Pushing.
        self.step(BuildStatus::Pushing).await?;
        let token = w.signer.sign(
            "builder",
            vec![Access {
                kind: "repository".into(),
                name: repo_name.clone(),
                actions: vec!["pull".into(), "push".into()],
                project: self.pid.clone(),
                service: self.sid.clone(),
            }],
            600,
        );
        let credentials = DockerCredentials {
            registrytoken: Some(token),
            serveraddress: Some(w.registry.clone()),
            ..Default::default()
        };
        let tag = self.number.to_string();
        let mut push = w.docker.push_image(
            &image,
            Some(PushImageOptions { tag: tag.clone() }),
            Some(credentials),
        );
        while let Some(item) = self.next_flushing(&mut push).await? {
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(Stop::Failed(format!("push to {}: {error}", w.registry)))
                }
                Err(e) => return Err(Stop::Failed(format!("push to {}: {e}", w.registry))),
            };
            if let Some(error) = info.error {
                return Err(Stop::Failed(format!("push to {}: {error}", w.registry)));
            }
            if let Some(status) = info.status {
                if info.progress.is_none() {
                    self.line(&status);
                }
            }
            self.maybe_flush().await?;
        }
        let digest = w
            .store
            .get(&w.keys.image_tag(&self.pid, &self.sid, &tag))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok())
            .and_then(|v| v["digest"].as_str().map(str::to_owned))
            .ok_or_else(|| "the registry has no manifest for the pushed tag".to_string())?;
        self.line(&format!("pushed {tagged} ({digest})"));

        // Deploy, then succeed.
        let pinned = format!("{image}@{digest}");
        self.deploy(&pinned).await?;
        self.build.image = Some(tagged);
        self.build.digest = Some(digest);
        let message = std::mem::take(&mut self.build.message);
        finish_record(&mut self.build, BuildStatus::Succeeded, message);
        self.save().await?;
        self.prune().await;
        Ok(())
    }

    /// Points the service at the new image (a new generation, which the
    /// scheduler rolls out), comparing both records.
    async fn deploy(&mut self, image: &str) -> Step<()> {
        let w = self.worker.clone();
        let meta_key = w.keys.service_meta(&self.pid, &self.sid);
        let spec_key = w.keys.service_spec(&self.pid, &self.sid);
        for _ in 0..20 {
            let (Some(meta_kv), Some(spec_kv)) = (
                w.store.get(&meta_key).await.map_err(|e| e.to_string())?,
                w.store.get(&spec_key).await.map_err(|e| e.to_string())?,
            ) else {
                return Err(Stop::Failed("the service was deleted".into()));
            };
            let mut meta: ServiceMeta =
                serde_json::from_slice(&meta_kv.value).map_err(|e| e.to_string())?;
            let mut spec: ServiceSpec =
                serde_json::from_slice(&spec_kv.value).map_err(|e| e.to_string())?;
            if spec.image.as_deref() == Some(image) {
                return Ok(());
            }
            let old = spec.clone();
            spec.image = Some(image.to_owned());
            meta.record_change(&old, &spec, lb_model::now());
            let txn = Txn::new()
                .when(Compare::ModRevision(meta_key.clone(), meta_kv.mod_revision))
                .when(Compare::ModRevision(spec_key.clone(), spec_kv.mod_revision))
                .then(Op::put(meta_key.clone(), encode(&meta)))
                .then(Op::put(spec_key.clone(), encode(&spec)));
            if w.store.txn(txn).await.map_err(|e| e.to_string())?.succeeded {
                self.line(&format!(
                    "deployed: service image is now {image} (generation {})",
                    meta.generation
                ));
                return Ok(());
            }
        }
        Err(Stop::Failed(
            "the service kept changing: not deployed".into(),
        ))
    }

    /// Keeps the newest `keep_images` succeeded builds' tags; older tags go
    /// from the registry and from this builder's Docker.
    async fn prune(&self) {
        let w = &self.worker;
        let Ok((builds, _)) = w
            .store
            .list(&w.keys.builds_prefix(&self.pid, &self.sid))
            .await
        else {
            return;
        };
        let succeeded: Vec<u64> = builds
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Build>(&kv.value).ok())
            .filter(|b| b.status == BuildStatus::Succeeded)
            .map(|b| b.number)
            .collect();
        let keep = w.config.keep_images;
        if succeeded.len() <= keep {
            return;
        }
        for number in &succeeded[..succeeded.len() - keep] {
            let tag = w.keys.image_tag(&self.pid, &self.sid, &number.to_string());
            let _ = w.store.delete(&tag).await;
            let local = format!(
                "{}/{}:{number}",
                w.registry,
                repository(&self.pid, &self.sid)
            );
            let _ = w
                .docker
                .remove_image(
                    &local,
                    Some(RemoveImageOptions {
                        force: false,
                        noprune: false,
                    }),
                    None,
                )
                .await;
        }
    }

    /// Runs git in `dir`; answers stdout, or the last lines of stderr.
    async fn git(&mut self, dir: &Path, args: &[&str]) -> Result<String, String> {
        self.git_with(dir, args, &[]).await
    }

    /// Runs git with extra environment (credentials: never in arguments).
    async fn git_with(
        &mut self,
        dir: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> Result<String, String> {
        let output = Command::new("git")
            .args([
                "-c",
                "protocol.file.allow=never",
                "-c",
                "core.hooksPath=/dev/null",
            ])
            .args(args)
            .current_dir(dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("GIT_ALLOW_PROTOCOL", "http:https:ssh:git")
            .env(
                "GIT_SSH_COMMAND",
                "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
            )
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run git: {e}"))?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join("; ");
        Err(if tail.is_empty() {
            format!("git exited with {}", output.status)
        } else {
            tail
        })
    }

    fn line(&mut self, line: &str) {
        self.log.line(line);
    }

    async fn maybe_flush(&mut self) -> Step<()> {
        if self.flushed.elapsed() >= LOG_FLUSH {
            self.flush_log().await?;
        }
        Ok(())
    }

    /// When output waits to be written: the next flush is due then.
    fn flush_due(&self) -> Option<tokio::time::Instant> {
        (!self.log.pending.is_empty()).then(|| (self.flushed + LOG_FLUSH).into())
    }

    /// The next item of a stream of Docker output; output that waits is
    /// written when its flush is due, even while the stream is quiet.
    async fn next_flushing<S: futures::Stream + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Step<Option<S::Item>> {
        loop {
            let Some(due) = self.flush_due() else {
                return Ok(stream.next().await);
            };
            match tokio::time::timeout_at(due, stream.next()).await {
                Ok(item) => return Ok(item),
                Err(_) => self.flush_log().await?,
            }
        }
    }

    /// Appends the output since the last write as the next chunk.
    async fn flush_log(&mut self) -> Step<()> {
        let w = self.worker.clone();
        let (ops, after) = self.log.write(&w.keys, &self.pid, &self.sid, self.number);
        if !ops.is_empty() {
            let txn = ops.into_iter().fold(Txn::new(), Txn::then);
            w.store.txn(txn).await.map_err(|e| e.to_string())?;
            self.log.written(after);
        }
        self.flushed = Instant::now();
        Ok(())
    }

    /// Moves to the next status: closes the current step, opens the next.
    async fn step(&mut self, status: BuildStatus) -> Step<()> {
        let at = now();
        if let Some(step) = self.build.steps.last_mut() {
            step.finished.get_or_insert(at);
        }
        self.build.status = status;
        self.build.steps.push(BuildStep {
            name: status,
            started: at,
            finished: None,
        });
        self.save().await
    }

    /// Writes the build record and the new log output together (the
    /// output first, so a follower has it all when it sees the status),
    /// unless the record changed (a cancel): then stops, and a canceled
    /// build stays canceled.
    async fn save(&mut self) -> Step<()> {
        let w = self.worker.clone();
        let key = w.keys.build(&self.pid, &self.sid, self.number);
        let (ops, after) = self.log.write(&w.keys, &self.pid, &self.sid, self.number);
        let txn = ops
            .into_iter()
            .fold(
                Txn::new().when(Compare::ModRevision(key.clone(), self.revision)),
                Txn::then,
            )
            .then(Op::put(key, encode(&self.build)));
        let resp = w.store.txn(txn).await.map_err(|e| e.to_string())?;
        if !resp.succeeded {
            return Err(Stop::Canceled);
        }
        self.log.written(after);
        self.revision = resp.revision;
        self.flushed = Instant::now();
        Ok(())
    }
}

/// Ends a build record with a final status and message.
fn finish_record(build: &mut Build, status: BuildStatus, message: String) {
    let at = now();
    if let Some(step) = build.steps.last_mut() {
        step.finished.get_or_insert(at);
    }
    build.status = status;
    build.message = message;
    build.finished = Some(at);
}

/// `relative` under `root`, refusing paths that leave it.
fn inside(root: &Path, relative: &str, field: &str) -> Result<PathBuf, String> {
    let path = Path::new(relative);
    if path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "{field} {relative:?} must stay inside the repository"
        ));
    }
    let joined = root.join(path);
    let real = joined
        .canonicalize()
        .map_err(|_| format!("{field} {relative:?} not found in the repository"))?;
    let root = root.canonicalize().map_err(|e| e.to_string())?;
    if !real.starts_with(&root) {
        return Err(format!("{field} {relative:?} leads outside the repository"));
    }
    Ok(real)
}

/// The build context as a tar, with the Dockerfile as `.lb-Dockerfile`;
/// `.git` is left out; symlinks stay links. Refused past `max` bytes.
fn pack(context: &Path, dockerfile: &[u8], max: u64) -> Result<Vec<u8>, String> {
    let mut total = 0u64;
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut stack = vec![context.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("context {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let path = entry.path();
            let rel = path.strip_prefix(context).map_err(|e| e.to_string())?;
            if rel == Path::new(".git") || rel == Path::new(".lb-Dockerfile") {
                continue;
            }
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            if kind.is_dir() {
                builder.append_dir(rel, &path).map_err(|e| e.to_string())?;
                stack.push(path);
            } else {
                if kind.is_file() {
                    total += entry.metadata().map(|m| m.len()).unwrap_or(0);
                    if total > max {
                        return Err(format!(
                            "the build context is larger than {} MiB (--build-max-context)",
                            max >> 20
                        ));
                    }
                }
                builder
                    .append_path_with_name(&path, rel)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, ".lb-Dockerfile", dockerfile)
        .map_err(|e| e.to_string())?;
    builder.into_inner().map_err(|e| e.to_string())
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes what is pending as the store would take it: chunk number ->
    /// bytes, deletes removing.
    fn flush(log: &mut Log, store: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        let keys = Keys::default();
        let (ops, after) = log.write(&keys, "P", "S", 1);
        for op in ops {
            match op {
                Op::Put { key, value, .. } => {
                    store.insert(key, value);
                }
                Op::Delete(key) => {
                    store.remove(&key);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        log.written(after);
    }

    fn joined(store: &std::collections::BTreeMap<String, Vec<u8>>) -> String {
        let keys = Keys::default();
        let prefix = keys.build_log_prefix("P", "S", 1);
        let chunks = store
            .iter()
            .map(|(k, v)| (keys.build_log_seq(&prefix, k).unwrap(), v.as_slice()));
        String::from_utf8(lb_model::join_log_chunks(chunks)).unwrap()
    }

    #[test]
    fn log_appends_chunks_and_drops_the_oldest_beyond_the_bound() {
        let mut log = Log::default();
        let mut store = std::collections::BTreeMap::new();
        flush(&mut log, &mut store);
        assert!(store.is_empty(), "nothing pending, nothing written");
        log.line("one\r\n");
        flush(&mut log, &mut store);
        log.line("two");
        flush(&mut log, &mut store);
        assert_eq!(store.len(), 2);
        assert_eq!(joined(&store), "one\ntwo\n");

        // 100 KiB chunks: the oldest go once the log passes 256 KiB.
        let line = "x".repeat((100 << 10) - 1);
        for _ in 0..4 {
            log.line(&line);
            flush(&mut log, &mut store);
        }
        let total: usize = store.values().map(Vec::len).sum();
        assert!(total <= BUILD_LOG_MAX, "{total} bytes kept");
        assert_eq!(store.len(), 2, "the two newest chunks");
        let text = joined(&store);
        assert!(text.starts_with(BUILD_LOG_DROPPED), "marker first");
        assert_eq!(text.len(), BUILD_LOG_DROPPED.len() + (200 << 10));

        // More than the bound at once: cut at a line, marked in the chunk.
        let mut log = Log::default();
        let mut store = std::collections::BTreeMap::new();
        for i in 0..40_000 {
            log.line(&format!("line {i:05}"));
        }
        flush(&mut log, &mut store);
        let text = joined(&store);
        assert!(text.starts_with(BUILD_LOG_DROPPED), "{}", &text[..80]);
        assert!(text[BUILD_LOG_DROPPED.len()..].starts_with("line "));
        assert!(text.ends_with("line 39999\n"));
    }
}
