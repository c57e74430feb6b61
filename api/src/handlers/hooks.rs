//! Webhook routes: `POST /hooks/{vendor}/{service id}` (a vendor's push
//! delivery, signed, not authenticated) and `GET .../services/{s}/webhook`
//! (the URL and secret to set a webhook up by hand). The work is in
//! [`crate::ops::hooks`].

use warp::http::{HeaderMap, StatusCode};

use super::{json, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::Result;
use crate::ops::hooks;

/// `POST /hooks/{v}/{sid}`: 202 with what was done.
pub async fn deliver(
    ctx: Ctx,
    v: String,
    sid: String,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<Response> {
    let result = hooks::deliver(&ctx, &v, &sid, &headers, &body).await?;
    Ok(json(StatusCode::ACCEPTED, &result))
}

/// `GET .../services/{s}/webhook` (owner and admin only; others get 404).
pub async fn show(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &hooks::show(&ctx, &caller, &p, &s).await?,
    ))
}
