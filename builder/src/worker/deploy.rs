//! After a push: the service pointed at the new image (a new generation,
//! which the scheduler rolls out; both records compared), and the tags of
//! older builds beyond `--keep-images` dropped from the registry and from
//! this builder's Docker.

use lb_model::{Build, BuildStatus, Deploy, ServiceMeta, ServiceSpec};
use lb_store::registry::repository;
use lb_store::{Compare, Op, StoreExt, Txn};

use super::run::Run;
use super::{encode, Step, Stop};

/// Tries at the deploy transaction before giving up on a busy service.
const DEPLOY_TRIES: usize = 20;

impl Run {
    /// Points the service at `image` (a new generation), comparing both
    /// records; answers nothing new when it already runs that image.
    pub(crate) async fn deploy(&mut self, image: &str) -> Step<()> {
        let w = self.worker.clone();
        let meta_key = w.keys.service_meta(&self.pid, &self.sid);
        let spec_key = w.keys.service_spec(&self.pid, &self.sid);
        for _ in 0..DEPLOY_TRIES {
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
            let previous = meta.generation;
            spec.image = Some(image.to_owned());
            meta.record_change(&old, &spec, lb_model::now());
            let mut txn = Txn::new()
                .when(Compare::ModRevision(meta_key.clone(), meta_kv.mod_revision))
                .when(Compare::ModRevision(spec_key.clone(), spec_kv.mod_revision))
                .then(Op::put(meta_key.clone(), encode(&meta)))
                .then(Op::put(spec_key.clone(), encode(&spec)));
            if meta.generation != previous {
                // Its deploy, in the history beside the build: the build
                // succeeded; whether it deployed is the scheduler's to say.
                let deploy = Deploy::start(
                    meta.generation,
                    spec.image.clone(),
                    self.cause(),
                    self.asked_by(),
                    meta.updated,
                );
                let service = (self.pid.as_str(), self.sid.as_str());
                let (compares, ops) =
                    lb_store::deploys::start(&*w.store, &w.keys, service, previous, &deploy)
                        .await
                        .map_err(|e| e.to_string())?;
                txn = compares.into_iter().fold(txn, Txn::when);
                txn = ops.into_iter().fold(txn, Txn::then);
            }
            if w.store.txn(txn).await.map_err(|e| e.to_string())?.succeeded {
                self.line(&format!(
                    "rolling out generation {} with {image} (its outcome: the service's deploys)",
                    meta.generation
                ));
                return Ok(());
            }
        }
        Err(Stop::Failed(
            "the service kept changing: not deployed".into(),
        ))
    }

    /// Prunes the build cache to `--build-cache-max`, and keeps the newest
    /// `keep_images` succeeded builds' tags; older tags go from the registry
    /// and from this builder's Docker.
    pub(crate) async fn prune(&self) {
        let w = &self.worker;
        // The build cache to its limit (the engine keeps the most recent).
        if let Err(e) = w
            .images
            .prune_cache(w.config.housekeeping.build_cache_max)
            .await
        {
            tracing::warn!("{e}");
        }
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
            w.images.remove(&local).await;
        }
    }
}
