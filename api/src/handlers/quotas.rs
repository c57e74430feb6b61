//! Quota routes (admin): a user's limits and what the user holds. The work
//! is in [`crate::ops::quotas`].

use lb_model::Quota;
use warp::http::StatusCode;

use super::{json, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::Result;
use crate::ops::quotas;

/// `GET /users/{user}/quota`.
pub async fn get(ctx: Ctx, caller: Caller, user: String) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &quotas::get(&ctx, &caller, &user).await?,
    ))
}

/// `PUT /users/{user}/quota`: replaces the user's limits.
pub async fn put(ctx: Ctx, caller: Caller, user: String, body: Quota) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &quotas::put(&ctx, &caller, &user, body).await?,
    ))
}
