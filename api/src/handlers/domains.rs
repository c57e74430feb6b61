//! Domain routes: a service's domains with their certificates' status,
//! adding and removing one, and uploading the owner's own certificate. The
//! work is in [`crate::ops::domains`].

use warp::http::StatusCode;

use super::{json, no_content, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::Result;
use crate::ops::domains::{self, CertificateUpload, DomainRequest};

/// `GET /projects/{p}/services/{s}/domains`.
pub async fn list(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &domains::list(&ctx, &caller, &p, &s).await?,
    ))
}

/// `POST /projects/{p}/services/{s}/domains`.
pub async fn add(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    body: DomainRequest,
) -> Result<Response> {
    let view = domains::add(&ctx, &caller, &p, &s, body.domain).await?;
    Ok(json(StatusCode::CREATED, &view))
}

/// `DELETE /projects/{p}/services/{s}/domains/{d}`.
pub async fn remove(ctx: Ctx, caller: Caller, p: String, s: String, d: String) -> Result<Response> {
    domains::remove(&ctx, &caller, &p, &s, &d).await?;
    Ok(no_content())
}

/// `PUT /projects/{p}/services/{s}/domains/{d}/certificate`.
pub async fn upload(
    ctx: Ctx,
    caller: Caller,
    (p, s, d): (String, String, String),
    body: CertificateUpload,
) -> Result<Response> {
    let view = domains::upload(&ctx, &caller, &p, &s, &d, body).await?;
    Ok(json(StatusCode::OK, &view))
}

/// `DELETE /projects/{p}/services/{s}/domains/{d}/certificate`.
pub async fn remove_certificate(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    d: String,
) -> Result<Response> {
    domains::remove_certificate(&ctx, &caller, &p, &s, &d).await?;
    Ok(no_content())
}
