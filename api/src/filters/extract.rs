//! What the routes take from a request: the context, the caller (a token,
//! the web UI's session cookie, `?access_token=` on websockets, or a node's
//! credential), a JSON body within [`MAX_BODY`](super::MAX_BODY), `If-Match`,
//! and `?limit=&offset=`.

use std::convert::Infallible;

use serde::de::DeserializeOwned;
use warp::{Filter, Rejection};

use super::MAX_BODY;
use crate::auth::{authenticate, Caller};
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::handlers;
use crate::models::Paging;

pub(super) fn with_ctx(ctx: Ctx) -> impl Filter<Extract = (Ctx,), Error = Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

pub(super) fn bearer(header: Option<String>) -> Result<Option<String>> {
    match header {
        None => Ok(None),
        Some(value) => match value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            Some(token) if !token.trim().is_empty() => Ok(Some(token.trim().to_owned())),
            _ => Err(ApiError::unauthorized(
                "the Authorization header must be \"Bearer <token>\"",
            )),
        },
    }
}

/// The caller, if credentials were sent (invalid ones are refused): the
/// `Authorization` header, else the web UI's session cookie (CSRF-checked).
pub(super) fn optional_caller(
    ctx: Ctx,
) -> impl Filter<Extract = (Option<Caller>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(crate::session::credential())
        .and(with_ctx(ctx))
        .and_then(
            |header: Option<String>,
             session: crate::session::SessionCredential,
             ctx: Ctx| async move {
                let token = match bearer(header)? {
                    Some(token) => token,
                    None => match session.token()? {
                        Some(token) => token,
                        None => return Ok(None),
                    },
                };
                authenticate(ctx.store.as_ref(), &ctx.keys, &ctx.tokens, &token)
                    .await
                    .map(Some)
                    .map_err(Rejection::from)
            },
        )
}

/// The caller; 401 without valid credentials.
pub(super) fn caller(ctx: Ctx) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
    optional_caller(ctx).and_then(|caller: Option<Caller>| async move {
        caller.ok_or_else(|| {
            Rejection::from(ApiError::unauthorized(
                "authentication required: send \"Authorization: Bearer <token>\"",
            ))
        })
    })
}

/// The caller of a websocket: the header, or `?access_token=` for browsers,
/// or the web UI's session cookie (same origin only).
/// The context and the authenticated caller: what most routes take first.
pub(super) fn user(ctx: Ctx) -> impl Filter<Extract = (Ctx, Caller), Error = Rejection> + Clone {
    with_ctx(ctx.clone()).and(caller(ctx))
}

pub(super) fn ws_caller(ctx: Ctx) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
    #[derive(serde::Deserialize)]
    struct Token {
        access_token: Option<String>,
    }
    warp::header::optional::<String>("authorization")
        .and(
            warp::query::<Token>()
                .or(warp::any().map(|| Token { access_token: None }))
                .unify(),
        )
        .and(crate::session::credential())
        .and(with_ctx(ctx))
        .and_then(
            |header: Option<String>,
             query: Token,
             session: crate::session::SessionCredential,
             ctx: Ctx| async move {
                let token = match (bearer(header)?, query.access_token) {
                    (Some(token), _) | (None, Some(token)) => token,
                    (None, None) => session
                        .token()?
                        .ok_or_else(|| ApiError::unauthorized("authentication required"))?,
                };
                authenticate(ctx.store.as_ref(), &ctx.keys, &ctx.tokens, &token)
                    .await
                    .map_err(Rejection::from)
            },
        )
}

/// A JSON body of at most [`MAX_BODY`] bytes, parsed into `T`. A declared
/// length over the limit is refused before reading; a chunked body is cut off
/// as soon as it passes the limit.
pub(super) fn body<T: DeserializeOwned + Send>(
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(|declared: Option<u64>, stream| async move {
            let bytes = read_limited(declared, stream)
                .await
                .map_err(Rejection::from)?;
            crate::json::parse_body::<T>(&bytes).map_err(Rejection::from)
        })
}

pub(super) async fn read_limited(
    declared: Option<u64>,
    stream: impl futures::Stream<Item = std::result::Result<impl warp::Buf, warp::Error>> + Send,
) -> Result<Vec<u8>> {
    use futures::StreamExt;
    let too_large = || ApiError::too_large(format!("request body over {MAX_BODY} bytes"));
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    futures::pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
        while chunk.has_remaining() {
            let part = chunk.chunk();
            if out.len() + part.len() > MAX_BODY as usize {
                return Err(too_large());
            }
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

/// Like [`body`], but an empty body means the type's default.
pub(super) fn body_or_default<T: DeserializeOwned + Default + Send>(
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(|declared: Option<u64>, stream| async move {
            let bytes = read_limited(declared, stream)
                .await
                .map_err(Rejection::from)?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(T::default());
            }
            crate::json::parse_body::<T>(&bytes).map_err(Rejection::from)
        })
}

/// A node's credential from the `Authorization` header.
pub(super) fn node_caller(ctx: Ctx) -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(with_ctx(ctx))
        .and_then(|header: Option<String>, ctx: Ctx| async move {
            let token = bearer(header)?
                .ok_or_else(|| ApiError::unauthorized("a node credential is required"))?;
            crate::ops::nodes::authenticate(&ctx, &token)
                .await
                .map_err(Rejection::from)
        })
}

pub(super) fn if_match() -> impl Filter<Extract = (Option<i64>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("if-match")
        .and_then(|h: Option<String>| async move { handlers::if_match(h).map_err(Rejection::from) })
}

pub(super) fn paging() -> impl Filter<Extract = (Paging,), Error = Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(
            |raw: String| async move { serde_urlencoded_parse(&raw).map_err(Rejection::from) },
        )
}

pub(super) fn serde_urlencoded_parse(raw: &str) -> Result<Paging> {
    let mut paging = Paging {
        limit: None,
        offset: None,
    };
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                paging.limit = Some(value.parse().map_err(|_| {
                    ApiError::invalid("limit", format!("{value:?} is not a number from 1 to 1000"))
                })?)
            }
            "offset" => {
                paging.offset = Some(value.parse().map_err(|_| {
                    ApiError::invalid("offset", format!("{value:?} is not a non-negative number"))
                })?)
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    format!("unknown query parameter {other:?}"),
                ))
            }
        }
    }
    Ok(paging)
}
