//! One build, start to end: its steps in order (cloning, preparing,
//! installing dependencies for templates, building, pushing, then the
//! deploy), each status a timed step on the build record written together
//! with the new log output, under `--build-timeout`, stopped at once by a
//! cancel (the API sets `canceled`; a watch sees it and the work is dropped:
//! the clone process killed, the Docker stream closed). A stack's build
//! (`source.compose`) ends after the clone with its file read instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lb_model::{Build, BuildKind, BuildStatus, BuildStep, ServiceSpec};
use lb_store::registry::{repository, Access};
use lb_store::{Compare, Op, Txn};
use tokio::time::Instant;

use super::context::{self, DOCKERFILE};
use super::dockerfile::{self, Pull};
use super::fetch;
use super::image::{BuildRequest, Output, OutputStream, PullRequest, PushRequest};
use super::log::Log;
use super::{encode, finish_record, Step, Stop, Worker};

/// How often new log output is written to the store while a build runs.
const LOG_FLUSH: Duration = Duration::from_millis(300);
/// How long the builder's push token lasts, seconds.
const PUSH_TOKEN_TTL: i64 = 600;

/// One build being run.
pub(crate) struct Run {
    pub(crate) worker: Arc<Worker>,
    pub(crate) pid: String,
    pub(crate) sid: String,
    pub(crate) number: u64,
    build: Build,
    /// The build record's revision as last written.
    revision: i64,
    log: Log,
    flushed: Instant,
    dir: PathBuf,
}

impl Run {
    /// A build just claimed (its record at `revision`).
    pub(crate) fn new(
        worker: Arc<Worker>,
        pid: &str,
        sid: &str,
        number: u64,
        build: Build,
        revision: i64,
    ) -> Self {
        let dir = worker
            .config
            .data_dir
            .join("builds")
            .join(format!("{pid}-{sid}-{number}"));
        Self {
            worker,
            pid: pid.to_owned(),
            sid: sid.to_owned(),
            number,
            build,
            revision,
            log: Log::default(),
            flushed: Instant::now(),
            dir,
        }
    }

    /// Runs the build to its end and releases its claim.
    pub(crate) async fn execute(mut self) {
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

    /// The steps, in order.
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
            .ok_or_else(|| "the service has no source to build".to_string())?;
        let repo = self.clone_source(&source).await?;
        if let Some(file) = source.compose.clone() {
            return self.read_stack(repo, file, source).await;
        }

        self.step(BuildStatus::Preparing).await?;
        let build = &source.build;
        let context = context::inside(
            &repo,
            build.context.as_deref().unwrap_or("."),
            "source.build.context",
        )?;
        let mut prepared = context::dockerfile(&repo, build, &w.config.base_images).await?;
        for (name, text) in &prepared.rendered {
            self.line(&format!("{name} written from the template:"));
            for line in text.lines() {
                self.line(&format!("  {line}"));
            }
        }
        // What the Dockerfile reaches: refused before the engine sees it.
        let text = String::from_utf8_lossy(&prepared.files[0].1).into_owned();
        let confined =
            dockerfile::confine(w.store.as_ref(), &w.keys, &self.pid, &w.registry, &text).await?;
        self.pull_bases(confined.pulls).await?;
        self.check_triggers(&confined.bases).await?;
        // Remote ADD sources: fetched here, copied from the context.
        let max = w.config.max_context;
        if let Some(local) = fetch::localize(&text, max, &fetch::Pinned).await? {
            for line in &local.log {
                self.line(line);
            }
            prepared.files[0].1 = local.dockerfile.into_bytes();
            prepared.files.extend(local.files);
        }
        let tar = tokio::task::spawn_blocking(move || context::pack(&context, &prepared, max))
            .await
            .map_err(|e| e.to_string())??;
        self.line(&format!("context: {} KiB", tar.len() / 1024));

        // Installing dependencies (templates mark where that ends), building.
        self.step(match build.kind {
            BuildKind::Template => BuildStatus::InstallingDependencies,
            BuildKind::Dockerfile => BuildStatus::Building,
        })
        .await?;
        let image = format!("{}/{}", w.registry, repository(&self.pid, &self.sid));
        let tagged = format!("{image}:{}", self.number);
        self.build_image(&tagged, tar).await?;

        self.step(BuildStatus::Pushing).await?;
        let digest = self.push(&image).await?;
        self.line(&format!("pushed {tagged} ({digest})"));

        // Deploy, then succeed.
        self.deploy(&format!("{image}@{digest}")).await?;
        self.build.image = Some(tagged);
        self.build.digest = Some(digest);
        let message = std::mem::take(&mut self.build.message);
        finish_record(&mut self.build, BuildStatus::Succeeded, message);
        self.save().await?;
        self.prune().await;
        Ok(())
    }

    /// A stack's build: its file (and env files) read at the commit and
    /// kept on the record for the API to apply; no image, no deploy.
    async fn read_stack(
        &mut self,
        repo: PathBuf,
        file: String,
        source: lb_model::Source,
    ) -> Step<()> {
        self.step(BuildStatus::Preparing).await?;
        let name = file.clone();
        let files = tokio::task::spawn_blocking(move || super::stack::read(&repo, &file, &source))
            .await
            .map_err(|e| e.to_string())??;
        self.line(&format!("read {name} ({} bytes)", files.text.len()));
        for (path, text) in &files.env_files {
            self.line(&format!("read env_file {path} ({} bytes)", text.len()));
        }
        self.line("a stack builds no image: the API applies the file to the project next");
        self.build.stack = Some(files);
        let subject = std::mem::take(&mut self.build.message);
        let message = if subject.is_empty() {
            format!("read {name}")
        } else {
            format!("read {name}: {subject}")
        };
        finish_record(&mut self.build, BuildStatus::Succeeded, message);
        self.save().await
    }

    /// Cloning: only from owners the allowlist names (if it names any),
    /// with the owner's linked vendor token for private repositories.
    /// Answers the checkout's directory.
    async fn clone_source(&mut self, source: &lb_model::Source) -> Step<PathBuf> {
        let w = self.worker.clone();
        crate::credentials::check_allowlist(w.store.as_ref(), &w.keys, &source.url).await?;
        let (credentials, note) = crate::credentials::git_credentials(
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
        let checkout = w
            .sources
            .checkout(
                credentials,
                &source.url,
                source.branch.as_deref(),
                commit.as_deref(),
                &repo,
            )
            .await?;
        self.line(&format!("commit {}: {}", checkout.sha, checkout.subject));
        self.build.commit = Some(checkout.sha);
        self.build.message = checkout.subject.chars().take(500).collect();
        Ok(repo)
    }

    /// Pulls the project's own images the Dockerfile builds on, with a
    /// token for them alone: whatever the engine holds under those names
    /// (left by anyone) is replaced by what the registry gives this project.
    async fn pull_bases(&mut self, pulls: Vec<Pull>) -> Step<()> {
        if pulls.is_empty() {
            return Ok(());
        }
        let w = self.worker.clone();
        let access = pulls.iter().map(|p| p.access.clone()).collect();
        let token = w.signer.sign("builder", access, PUSH_TOKEN_TTL);
        for pull in pulls {
            let separator = if pull.reference.contains(':') {
                '@'
            } else {
                ':'
            };
            let named = format!("{}{separator}{}", pull.image, pull.reference);
            self.line(&format!(
                "pulling {named} with the project's registry credential"
            ));
            let mut stream = w.images.pull(PullRequest {
                image: pull.image,
                reference: pull.reference,
                registry: w.registry.clone(),
                token: token.clone(),
            });
            let failed = |e: String| Stop::Failed(format!("pull {named}: {}", e.trim()));
            while let Some(item) = self.next_flushing(&mut stream).await? {
                match item.map_err(failed)? {
                    Output::Error(error) => return Err(failed(error)),
                    Output::Text(status) if !status.is_empty() => self.line(&status),
                    Output::Text(_) => {}
                }
                self.maybe_flush().await?;
            }
        }
        Ok(())
    }

    /// The `ONBUILD` triggers of the images `FROM` lines name, read from
    /// the engine (after the pulls) and checked like the file's own lines;
    /// the project's images they reach pulled in turn.
    async fn check_triggers(&mut self, bases: &[dockerfile::Base]) -> Step<()> {
        let w = self.worker.clone();
        let mut pulls: Vec<Pull> = Vec::new();
        for base in bases {
            let triggers =
                w.images.onbuild(&base.image).await.map_err(|e| {
                    format!("Dockerfile line {}: {}: {e}", base.line, base.instruction)
                })?;
            if triggers.is_empty() {
                continue;
            }
            self.line(&format!(
                "{}: checking its {} ONBUILD trigger(s)",
                base.image,
                triggers.len()
            ));
            let more = dockerfile::confine_triggers(
                w.store.as_ref(),
                &w.keys,
                &self.pid,
                &w.registry,
                base,
                &triggers,
            )
            .await?;
            for pull in more {
                if !pulls.contains(&pull) {
                    pulls.push(pull);
                }
            }
        }
        self.pull_bases(pulls).await
    }

    /// Building: Docker's output to the log; a template's `LB_STEP=building`
    /// marks the end of its dependency step.
    async fn build_image(&mut self, tagged: &str, tar: Vec<u8>) -> Step<()> {
        let w = self.worker.clone();
        let memory = w.config.build_memory * 1024 * 1024;
        let request = BuildRequest {
            tag: tagged.to_owned(),
            dockerfile: DOCKERFILE.to_owned(),
            memory,
            labels: vec![(
                "lb.build".to_owned(),
                format!("{}/{}/{}", self.pid, self.sid, self.number),
            )],
        };
        let mut stream = w.images.build(request, tar);
        while let Some(item) = self.next_flushing(&mut stream).await? {
            match item.map_err(Stop::Failed)? {
                Output::Error(error) => {
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
                Output::Text(text) => {
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
        }
        Ok(())
    }

    /// Pushing with a token of the builder's own; answers the manifest
    /// digest the registry recorded for the tag.
    async fn push(&mut self, image: &str) -> Step<String> {
        let w = self.worker.clone();
        let token = w.signer.sign(
            "builder",
            vec![Access {
                kind: "repository".into(),
                name: repository(&self.pid, &self.sid),
                actions: vec!["pull".into(), "push".into()],
                project: self.pid.clone(),
                service: self.sid.clone(),
            }],
            PUSH_TOKEN_TTL,
        );
        let tag = self.number.to_string();
        let mut stream = w.images.push(PushRequest {
            image: image.to_owned(),
            tag: tag.clone(),
            registry: w.registry.clone(),
            token,
        });
        let failed = |e: String| Stop::Failed(format!("push to {}: {e}", w.registry));
        while let Some(item) = self.next_flushing(&mut stream).await? {
            match item.map_err(failed)? {
                Output::Error(error) => return Err(failed(error)),
                Output::Text(status) if !status.is_empty() => self.line(&status),
                Output::Text(_) => {}
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
        Ok(digest)
    }

    /// What its deploy is called: `build #3 (commit abc1234)`.
    pub(crate) fn cause(&self) -> String {
        match &self.build.commit {
            Some(sha) => format!(
                "build #{} (commit {})",
                self.number,
                &sha[..sha.len().min(7)]
            ),
            None => format!("build #{}", self.number),
        }
    }

    /// Who or what asked for the build (`build` when not recorded).
    pub(crate) fn asked_by(&self) -> String {
        if self.build.by.is_empty() {
            "build".to_owned()
        } else {
            self.build.by.clone()
        }
    }

    /// Adds a line to the build log.
    pub(crate) fn line(&mut self, line: &str) {
        self.log.line(line);
    }

    async fn maybe_flush(&mut self) -> Step<()> {
        if self.flushed.elapsed() >= LOG_FLUSH {
            self.flush_log().await?;
        }
        Ok(())
    }

    /// The next item of a stream of Docker output; output that waits is
    /// written when its flush is due, even while the stream is quiet.
    async fn next_flushing(
        &mut self,
        stream: &mut OutputStream,
    ) -> Step<Option<Result<Output, String>>> {
        loop {
            if self.log.pending.is_empty() {
                return Ok(stream.next().await);
            }
            let due = self.flushed + LOG_FLUSH;
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
        let at = lb_model::now();
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
