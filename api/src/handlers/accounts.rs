//! Account routes: signup, login, `/me`, and API tokens. The work is in
//! [`crate::ops::accounts`].

use std::net::SocketAddr;

use warp::http::StatusCode;

use super::{json, no_content, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::Result;
use crate::models::{Credentials, TokenCreate, UserView};
use crate::ops::accounts;

/// `POST /auth/signup`: open to anyone when signup is open, else to admins.
pub async fn signup(ctx: Ctx, caller: Option<Caller>, body: Credentials) -> Result<Response> {
    let user = accounts::signup(&ctx, caller.as_ref(), &body).await?;
    Ok(json(StatusCode::CREATED, &user))
}

/// `POST /auth/login`: an access token for a name and password.
pub async fn login(ctx: Ctx, addr: Option<SocketAddr>, body: Credentials) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &accounts::login(&ctx, addr, &body).await?,
    ))
}

/// `GET /me`.
pub async fn me(caller: Caller) -> Result<Response> {
    Ok(json(StatusCode::OK, &UserView::from(&caller.user)))
}

/// `POST /tokens`: a new API token, shown once.
pub async fn token_create(ctx: Ctx, caller: Caller, body: TokenCreate) -> Result<Response> {
    Ok(json(
        StatusCode::CREATED,
        &accounts::token_create(&ctx, &caller, &body).await?,
    ))
}

/// `GET /tokens`: the caller's tokens, without secrets.
pub async fn token_list(ctx: Ctx, caller: Caller) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &accounts::token_list(&ctx, &caller).await?,
    ))
}

/// `DELETE /tokens/{id}`: revokes at once.
pub async fn token_revoke(ctx: Ctx, caller: Caller, id: String) -> Result<Response> {
    accounts::token_revoke(&ctx, &caller, &id).await?;
    Ok(no_content())
}
