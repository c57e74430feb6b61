//! Manifests and tags: PUT checks a manifest (media type, schema version,
//! the blobs or manifests it references are in the repository) and stores
//! it as a blob with a `manifests/<digest>` record and maybe a tag; GET and
//! HEAD resolve a tag or digest; DELETE untags or removes a manifest.

use lb_store::{Compare, Op, StoreExt, Txn};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use warp::http::{HeaderMap, HeaderValue, Response, StatusCode};
use warp::hyper::Body;

use futures::StreamExt;

use super::blobs::sync_dir;
use super::digest::{digest_hex, is_tag};
use super::reply::{created, empty, err, insert, Reply, Result};
use super::{BodyStream, Registry};

/// The largest manifest accepted (4 MiB, as Docker's registry).
const MAX_MANIFEST: usize = 4 << 20;

/// Manifest media types this registry stores.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

/// `tags/<tag>` in the store.
#[derive(Serialize, Deserialize)]
struct TagRecord {
    digest: String,
}

/// `manifests/<digest>` in the store.
#[derive(Serialize, Deserialize)]
struct ManifestRecord {
    media_type: String,
    size: u64,
}

impl Registry {
    /// PUT of a manifest: its media type from Content-Type, its body
    /// (at most `MAX_MANIFEST` bytes).
    pub(super) async fn put_manifest(
        &self,
        name: &str,
        pid: &str,
        sid: &str,
        reference: &str,
        headers: &HeaderMap,
        body: BodyStream,
    ) -> Result<Reply> {
        let media_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let bytes = read_limited(body, MAX_MANIFEST).await?;
        self.store_manifest(name, pid, sid, reference, &media_type, bytes)
            .await
    }

    async fn resolve_reference(&self, pid: &str, sid: &str, reference: &str) -> Result<String> {
        if reference.contains(':') {
            digest_hex(reference)?;
            return Ok(reference.to_owned());
        }
        if !is_tag(reference) {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "TAG_INVALID",
                format!("{reference:?} is not a tag"),
            ));
        }
        let kv = self
            .store
            .get(&self.keys.image_tag(pid, sid, reference))
            .await?
            .ok_or_else(|| {
                err(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    format!("tag {reference:?} unknown"),
                )
            })?;
        let record: TagRecord = serde_json::from_slice(&kv.value).map_err(|_| {
            err(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "tag record unreadable",
            )
        })?;
        Ok(record.digest)
    }

    pub(super) async fn get_manifest(
        &self,
        pid: &str,
        sid: &str,
        reference: &str,
        head: bool,
    ) -> Result<Reply> {
        let digest = self.resolve_reference(pid, sid, reference).await?;
        let unknown = || {
            err(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                format!("manifest {reference:?} unknown"),
            )
        };
        let kv = self
            .store
            .get(&self.keys.image_manifest(pid, sid, &digest))
            .await?
            .ok_or_else(unknown)?;
        let record: ManifestRecord = serde_json::from_slice(&kv.value).map_err(|_| unknown())?;
        let bytes = match tokio::fs::read(self.blob_path(digest_hex(&digest)?)).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(e.into()),
        };
        let len = bytes.len();
        let mut reply = Response::new(if head {
            Body::empty()
        } else {
            Body::from(bytes)
        });
        let h = reply.headers_mut();
        insert(h, "content-type", &record.media_type);
        h.insert("content-length", HeaderValue::from(len));
        insert(h, "docker-content-digest", &digest);
        insert(h, "etag", &format!("\"{digest}\""));
        Ok(reply)
    }

    /// Checks a manifest and stores it (tagged when `reference` is a tag).
    async fn store_manifest(
        &self,
        name: &str,
        pid: &str,
        sid: &str,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Reply> {
        let invalid = |m: String| err(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", m);
        // No garbage collection pass sweeps between the checks and the write.
        let _gc = self.gc_lock.read().await;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            value["mediaType"].as_str().unwrap_or("").to_owned()
        } else {
            media_type.to_owned()
        };
        if !MANIFEST_TYPES.contains(&media_type.as_str()) {
            return Err(invalid(format!(
                "media type {media_type:?} is not one of {}",
                MANIFEST_TYPES.join(", ")
            )));
        }
        if value["schemaVersion"] != 2 {
            return Err(invalid("schemaVersion must be 2".into()));
        }
        if let Some(declared) = value["mediaType"].as_str() {
            if declared != media_type {
                return Err(invalid(format!(
                    "mediaType {declared:?} disagrees with Content-Type {media_type:?}"
                )));
            }
        }
        let digest_of = |v: &serde_json::Value, what: &str| -> Result<String> {
            let d = v["digest"]
                .as_str()
                .ok_or_else(|| invalid(format!("{what} has no digest")))?;
            digest_hex(d)?;
            Ok(d.to_owned())
        };
        let is_index = media_type.ends_with("manifest.list.v2+json")
            || media_type.ends_with("image.index.v1+json");
        if is_index {
            let manifests = value["manifests"]
                .as_array()
                .ok_or_else(|| invalid("an index needs \"manifests\"".into()))?;
            for m in manifests {
                let d = digest_of(m, "a manifest entry")?;
                if self
                    .store
                    .get(&self.keys.image_manifest(pid, sid, &d))
                    .await?
                    .is_none()
                {
                    return Err(err(
                        StatusCode::BAD_REQUEST,
                        "MANIFEST_BLOB_UNKNOWN",
                        format!("manifest {d} is not in {name}: push it first"),
                    ));
                }
            }
        } else {
            let mut blobs = vec![digest_of(&value["config"], "config")?];
            let layers = value["layers"]
                .as_array()
                .ok_or_else(|| invalid("an image manifest needs \"layers\"".into()))?;
            for layer in layers {
                blobs.push(digest_of(layer, "a layer")?);
            }
            for d in blobs {
                // A link whose file a collection swept is no blob.
                let on_disk = tokio::fs::try_exists(self.blob_path(digest_hex(&d)?))
                    .await
                    .unwrap_or(false);
                if !on_disk || self.blob_size(pid, sid, &d).await?.is_none() {
                    return Err(err(
                        StatusCode::BAD_REQUEST,
                        "MANIFEST_BLOB_UNKNOWN",
                        format!("blob {d} is not in {name}: push it first"),
                    ));
                }
            }
        }
        let hex = hex::encode(Sha256::digest(&bytes));
        let digest = format!("sha256:{hex}");
        let tag = if reference.contains(':') {
            if reference != digest {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    format!("the manifest's digest is {digest}, not {reference}"),
                ));
            }
            None
        } else if is_tag(reference) {
            Some(reference)
        } else {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "TAG_INVALID",
                format!("{reference:?} is not a tag"),
            ));
        };
        let target = self.blob_path(&hex);
        if !tokio::fs::try_exists(&target).await.unwrap_or(false) {
            let tmp = self.upload_path(&format!(
                "manifest-{}",
                lb_model::ids::new_id().to_lowercase()
            ));
            let mut file = super::uploads::private_file(&tmp).await?;
            file.write_all(&bytes).await?;
            file.sync_all().await?;
            tokio::fs::rename(&tmp, &target).await?;
            sync_dir(&self.dir.join("blobs/sha256")).await;
        } else if let Ok(f) = std::fs::File::options().append(true).open(&target) {
            // Pushed again: young again for the collection's grace.
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        let record = ManifestRecord {
            media_type,
            size: bytes.len() as u64,
        };
        let mut txn = Txn::new().then(Op::put(
            self.keys.image_manifest(pid, sid, &digest),
            serde_json::to_vec(&record).unwrap_or_default(),
        ));
        if let Some(tag) = tag {
            txn = txn.then(Op::put(
                self.keys.image_tag(pid, sid, tag),
                serde_json::to_vec(&TagRecord {
                    digest: digest.clone(),
                })
                .unwrap_or_default(),
            ));
        }
        self.store.txn(txn).await?;
        Ok(created(&format!("/v2/{name}/manifests/{digest}"), &digest))
    }

    pub(super) async fn delete_manifest(
        &self,
        pid: &str,
        sid: &str,
        reference: &str,
    ) -> Result<Reply> {
        if !reference.contains(':') {
            // A tag: untag only.
            let key = self.keys.image_tag(pid, sid, reference);
            if self.store.get(&key).await?.is_none() {
                return Err(err(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    format!("tag {reference:?} unknown"),
                ));
            }
            self.store.delete(&key).await?;
            return Ok(empty(StatusCode::ACCEPTED));
        }
        digest_hex(reference)?;
        let key = self.keys.image_manifest(pid, sid, reference);
        let Some(kv) = self.store.get(&key).await? else {
            return Err(err(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                format!("manifest {reference} unknown"),
            ));
        };
        let prefix = format!("{}tags/", self.keys.images(pid, sid));
        let (tags, _) = self.store.list(&prefix).await?;
        let mut txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), kv.mod_revision))
            .then(Op::delete(key));
        for tag in tags {
            if serde_json::from_slice::<TagRecord>(&tag.value).is_ok_and(|t| t.digest == reference)
            {
                txn = txn.then(Op::delete(tag.key));
            }
        }
        self.store.txn(txn).await?;
        Ok(empty(StatusCode::ACCEPTED))
    }
}

/// The request body, refused past `limit` bytes.
async fn read_limited(mut body: BodyStream, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                format!("body: {e}"),
            )
        })?;
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            return Err(err(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                format!("manifests are limited to {limit} bytes"),
            ));
        }
    }
    Ok(out)
}
