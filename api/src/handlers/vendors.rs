//! Linked vendor account routes: OAuth 2 linking (connect, callback),
//! listing and unlinking, the linked account's repositories and branches,
//! and the admin's allowlist of repository owners. The work is in
//! [`crate::ops::links`] and [`crate::ops::hooks`]; the OAuth `state`
//! cookie is here.

use std::collections::HashMap;

use lb_model::Allowlist;
use warp::http::StatusCode;
use warp::Reply;

use super::{json, no_content, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::Result;
use crate::ops::hooks;
use crate::ops::links::{self, STATE_TTL};

pub use crate::ops::links::PageQuery;

/// The cookie carrying the OAuth `state` between connect and callback.
pub const STATE_COOKIE: &str = "lb_oauth_state";

/// `GET /vendors`: the caller's linked accounts.
pub async fn list(ctx: Ctx, caller: Caller) -> Result<Response> {
    Ok(json(StatusCode::OK, &links::list(&ctx, &caller).await?))
}

/// `GET /vendors/{v}/connect`: a redirect to the vendor's consent page, with
/// the state in an HttpOnly cookie.
pub async fn connect(ctx: Ctx, caller: Caller, v: String) -> Result<Response> {
    let (url, state) = links::connect(&ctx, &caller, &v).await?;
    let secure = if ctx.config.vendors.base().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{STATE_COOKIE}={state}; Path=/api/v1/vendors; HttpOnly; SameSite=Lax; Max-Age={STATE_TTL}{secure}"
    );
    let mut reply = warp::reply::with_header(
        warp::reply::with_status(warp::reply(), StatusCode::FOUND),
        "location",
        url,
    )
    .into_response();
    if let Ok(value) = cookie.parse() {
        reply.headers_mut().insert("set-cookie", value);
    }
    Ok(reply)
}

/// `GET /vendors/{v}/callback?code=&state=`: stores the link; the state
/// cookie is cleared.
pub async fn callback(
    ctx: Ctx,
    v: String,
    query: HashMap<String, String>,
    cookie: Option<String>,
) -> Result<Response> {
    let link = links::callback(&ctx, &v, &query, cookie.as_deref()).await?;
    let mut reply = json(StatusCode::OK, &link);
    if let Ok(value) =
        format!("{STATE_COOKIE}=; Path=/api/v1/vendors; HttpOnly; SameSite=Lax; Max-Age=0").parse()
    {
        reply.headers_mut().insert("set-cookie", value);
    }
    Ok(reply)
}

/// `DELETE /vendors/{v}`: unlinks.
pub async fn unlink(ctx: Ctx, caller: Caller, v: String) -> Result<Response> {
    links::unlink(&ctx, &caller, &v).await?;
    Ok(no_content())
}

/// `GET /vendors/{v}/repos`: one page, `{"items", "next_page"}`.
pub async fn repos(ctx: Ctx, caller: Caller, v: String, query: PageQuery) -> Result<Response> {
    let page = links::repos(&ctx, &caller, &v, &query).await?;
    Ok(json(StatusCode::OK, &page))
}

/// `GET /vendors/{v}/branches?repo=owner/name`: one page of its branches.
pub async fn branches(ctx: Ctx, caller: Caller, v: String, query: PageQuery) -> Result<Response> {
    let page = links::branches(&ctx, &caller, &v, &query).await?;
    Ok(json(StatusCode::OK, &page))
}

/// `GET /admin/allowlist`.
pub async fn allowlist_get(ctx: Ctx, caller: Caller) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &hooks::allowlist_get(&ctx, &caller).await?,
    ))
}

/// `PUT /admin/allowlist`: replaces it; an empty list allows any owner.
pub async fn allowlist_put(ctx: Ctx, caller: Caller, body: Allowlist) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &hooks::allowlist_put(&ctx, &caller, body).await?,
    ))
}
