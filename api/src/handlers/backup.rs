//! `GET /backup` (admin): a backup archive of the store and the data dir,
//! made while lb serves (see [`crate::backup`]).

use futures::StreamExt;
use tokio::io::AsyncReadExt;
use warp::http::{HeaderValue, StatusCode};

use super::Response;
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};

/// Writes the archive to a private temporary file, then streams it; the file
/// is removed when the stream ends (it is unlinked at once, kept open).
pub async fn get(ctx: Ctx, caller: Caller) -> Result<Response> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden("only an admin takes backups"));
    }
    let dir = ctx
        .config
        .backup_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix(".lb-backup-")
        .tempfile_in(&dir)
        .map_err(|e| ApiError::internal(format!("backup file in {}: {e}", dir.display())))?;
    let path = tmp.path().to_owned();
    let summary = crate::backup::write(
        &ctx.store,
        &ctx.keys.all(),
        ctx.config.backup_dir.clone(),
        path.clone(),
    )
    .await
    .map_err(|e| ApiError::internal(format!("backup: {e}")))?;
    tracing::info!(
        revision = summary.revision,
        keys = summary.keys,
        files = summary.files,
        bytes = summary.bytes,
        "backup taken"
    );
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(format!("backup file: {e}")))?;
    let size = file.metadata().await.map(|m| m.len()).ok();
    // Unlinked now; the open file streams until its end.
    drop(tmp);
    let chunks = futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
    .boxed();
    let mut reply = Response::new(warp::hyper::Body::wrap_stream(chunks));
    *reply.status_mut() = StatusCode::OK;
    let headers = reply.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-tar"),
    );
    headers.insert(
        "content-disposition",
        HeaderValue::from_static("attachment; filename=\"lb-backup.tar\""),
    );
    if let Some(size) = size.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        headers.insert("content-length", size);
    }
    if let Ok(revision) = HeaderValue::from_str(&summary.revision.to_string()) {
        headers.insert("x-lb-revision", revision);
    }
    Ok(reply)
}
