//! Keeping the builder's Docker from filling its disk: after each build the
//! build cache is pruned to `--build-cache-max` bytes (least recently used
//! first, as the engine's `POST /build/prune?keep-storage=` does), and
//! images lb built whose tag moved on to a newer build (dangling, labelled
//! `lb.build`) are removed. Older builds' tags are dropped by `deploy.rs`.
//!
//! bollard 0.18 has no call for `/build/prune`, so that one request is
//! written here by hand over the engine's Unix socket (HTTP/1.0: one
//! request, the answer read to its end).

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::image::PruneImagesOptions;
use bollard::Docker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The engine's Unix socket, from `DOCKER_HOST` or the default; `None` for
/// an engine reached otherwise (TCP, SSH).
fn socket() -> Option<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host.strip_prefix("unix://").map(PathBuf::from),
        _ => Some(PathBuf::from("/var/run/docker.sock")),
    }
}

/// `POST /build/prune?keep-storage=<max>&all=1`: the bytes reclaimed.
async fn prune_build_cache(max: u64) -> Result<u64, String> {
    let path = socket().ok_or("the Docker engine is not on a Unix socket")?;
    let mut stream = tokio::net::UnixStream::connect(&path)
        .await
        .map_err(|e| format!("cannot reach Docker at {}: {e}", path.display()))?;
    let request = format!(
        "POST /build/prune?keep-storage={max}&all=1 HTTP/1.0\r\nHost: docker\r\nContent-Length: 0\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("build cache prune: {e}"))?;
    let mut answer = Vec::new();
    // A prune answers with a small JSON body; 1 MiB is far more than it needs.
    (&mut stream)
        .take(1 << 20)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("build cache prune: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!(
            "build cache prune: Docker answered {status}: {}",
            body.trim()
        ));
    }
    let value: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_default();
    Ok(value["SpaceReclaimed"].as_u64().unwrap_or(0))
}

/// Images lb built that no tag names any more: the bytes reclaimed.
async fn prune_dangling_builds(docker: &Docker) -> Result<u64, String> {
    let filters = HashMap::from([("dangling", vec!["true"]), ("label", vec!["lb.build"])]);
    let pruned = docker
        .prune_images(Some(PruneImagesOptions { filters }))
        .await
        .map_err(|e| format!("image prune: {e}"))?;
    Ok(pruned.space_reclaimed.unwrap_or(0).max(0) as u64)
}

/// Prunes the build cache to `max` bytes and removes lb's dangling build
/// images; answers the bytes reclaimed.
pub async fn prune(docker: &Docker, max: u64) -> Result<u64, String> {
    let cache = prune_build_cache(max).await?;
    let images = prune_dangling_builds(docker).await?;
    let total = cache + images;
    if total > 0 {
        tracing::info!(cache, images, limit = max, "pruned the build cache");
    }
    Ok(total)
}

/// Bytes the build cache holds, from `docker system df`.
pub async fn cache_size(docker: &Docker) -> Result<u64, String> {
    let df = docker.df().await.map_err(|e| format!("docker df: {e}"))?;
    Ok(df
        .build_cache
        .unwrap_or_default()
        .iter()
        .map(|c| c.size.unwrap_or(0).max(0) as u64)
        .sum())
}
