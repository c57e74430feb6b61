//! Accounts: signup, password checks under the failed-login limits, login,
//! and API tokens.

use std::net::SocketAddr;

use lb_model::ids::new_id;
use lb_model::{check_name, now, Role, User};
use lb_store::{Compare, Op, StoreExt, Txn};

use crate::accounts::{find_user, hash_password, verify_password};
use crate::auth::{new_api_token, ApiToken, Caller};
use crate::config::Signup;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::{decode, encode};
use crate::models::{Credentials, List, LoginResponse, TokenCreate, TokenView, UserView};

const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 1024;
const MAX_TOKENS: usize = 100;

/// Creates a user: open to anyone when signup is open, else to admins.
pub async fn signup(ctx: &Ctx, caller: Option<&Caller>, body: &Credentials) -> Result<UserView> {
    if ctx.config.signup == Signup::Closed && !caller.is_some_and(Caller::is_admin) {
        return Err(ApiError::forbidden(
            "signup is closed: ask an admin to create your account",
        ));
    }
    check_name("username", &body.username)?;
    let chars = body.password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&chars) {
        return Err(ApiError::invalid(
            "password",
            format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long"),
        ));
    }
    let index = ctx.keys.user_index(&body.username);
    if ctx.store.get(&index).await?.is_some() {
        return Err(taken(&body.username));
    }
    let password_hash = hash_password(&body.password).map_err(ApiError::internal)?;
    let now = now();
    let user = User {
        id: new_id(),
        username: body.username.clone(),
        role: Role::User,
        password_hash,
        created: now,
        updated: now,
    };
    let txn = Txn::new()
        .when(Compare::ModRevision(index.clone(), 0))
        .then(Op::put(ctx.keys.user(&user.id), encode(&user)))
        .then(Op::put(index, user.id.clone().into_bytes()));
    if !ctx.store.txn(txn).await?.succeeded {
        return Err(taken(&body.username));
    }
    tracing::info!(user = %user.username, "user signed up");
    Ok(UserView::from(&user))
}

fn taken(username: &str) -> ApiError {
    ApiError::conflict(format!("user name {username:?} is taken")).with_field("username")
}

/// An access token for a name and password.
pub async fn login(
    ctx: &Ctx,
    addr: Option<SocketAddr>,
    body: &Credentials,
) -> Result<LoginResponse> {
    let user = check_password(ctx, addr, &body.username, &body.password).await?;
    let (token, expires) = ctx.tokens.issue(&user.id)?;
    Ok(LoginResponse { token, expires })
}

/// The user a name and password belong to, under the failed-login limits
/// (also used by the registry's token endpoint). `addr` is the client's
/// address as [`crate::auth::client_addr`] finds it (behind a trusted proxy,
/// from `X-Forwarded-For`); the limits key on its IP.
pub async fn check_password(
    ctx: &Ctx,
    addr: Option<SocketAddr>,
    username: &str,
    password: &str,
) -> Result<lb_model::User> {
    let ip = addr.map(|a| a.ip());
    // Bound what we hash and what the limiter keys on.
    let username: String = username.chars().take(64).collect();
    ctx.limiter.check(&username, ip)?;
    let user = find_user(ctx.store.as_ref(), &ctx.keys, &username)
        .await
        .map_err(|e| match e {
            crate::accounts::Error::Store(e) => ApiError::from(e),
            other => ApiError::internal(other),
        })?;
    let user = user.filter(|_| lb_model::validate_name(&username).is_ok());
    let ok = match &user {
        Some(user) if password.len() <= MAX_PASSWORD => {
            verify_password(password, &user.password_hash)
        }
        _ => {
            // Spend the same time as a real check, so names do not leak.
            let _ = verify_password(password, dummy_hash());
            false
        }
    };
    let Some(user) = user.filter(|_| ok) else {
        ctx.limiter.failed(&username, ip);
        return Err(ApiError::unauthorized("invalid user name or password"));
    };
    ctx.limiter.succeeded(&username, ip);
    Ok(user)
}

/// An argon2 hash of a random password, checked against when the user does
/// not exist.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&crate::accounts::generate_password()).unwrap_or_default())
}

/// A new API token of the caller's, shown once.
pub async fn token_create(ctx: &Ctx, caller: &Caller, body: &TokenCreate) -> Result<TokenView> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 100 characters long",
        ));
    }
    let (existing, _) = ctx
        .store
        .list(&ctx.keys.user_tokens(&caller.user.id))
        .await?;
    if existing.len() >= MAX_TOKENS {
        return Err(ApiError::unprocessable(format!(
            "at most {MAX_TOKENS} API tokens per user: revoke one first"
        )));
    }
    let (record, token) = new_api_token(&caller.user.id, name);
    ctx.store
        .put(
            &ctx.keys.user_token(&caller.user.id, &record.id),
            encode(&record),
        )
        .await?;
    let view = TokenView {
        id: record.id,
        name: record.name,
        created: record.created,
        token: Some(token),
    };
    Ok(view)
}

/// The caller's tokens, without secrets.
pub async fn token_list(ctx: &Ctx, caller: &Caller) -> Result<List<TokenView>> {
    let (kvs, _) = ctx
        .store
        .list(&ctx.keys.user_tokens(&caller.user.id))
        .await?;
    let items = kvs
        .iter()
        .map(|kv| {
            decode::<ApiToken>(kv).map(|t| TokenView {
                id: t.id,
                name: t.name,
                created: t.created,
                token: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(List {
        total: items.len(),
        items,
    })
}

/// Revokes one of the caller's tokens at once.
pub async fn token_revoke(ctx: &Ctx, caller: &Caller, id: &str) -> Result<()> {
    if !lb_model::ids::is_id(id)
        || !ctx
            .store
            .delete(&ctx.keys.user_token(&caller.user.id, id))
            .await?
    {
        return Err(ApiError::not_found(format!("token {id:?} not found")));
    }
    Ok(())
}
