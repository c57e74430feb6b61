//! The warp filters: which path and method reach which handler, with what
//! credentials and body. Handlers live in [`crate::handlers`].

use std::convert::Infallible;

use serde::de::DeserializeOwned;
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection, Reply};

use crate::auth::{authenticate, Caller};
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::handlers::{
    self, accounts, builds, events, nodes, projects, services, streams, Response,
};
use crate::models::Paging;

/// The largest request body accepted.
pub const MAX_BODY: u64 = 1024 * 1024;

fn with_ctx(ctx: Ctx) -> impl Filter<Extract = (Ctx,), Error = Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

fn bearer(header: Option<String>) -> Result<Option<String>> {
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
fn optional_caller(
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
fn caller(ctx: Ctx) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
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
fn ws_caller(ctx: Ctx) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
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
fn body<T: DeserializeOwned + Send>() -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(|declared: Option<u64>, stream| async move {
            let bytes = read_limited(declared, stream)
                .await
                .map_err(Rejection::from)?;
            crate::json::parse_body::<T>(&bytes).map_err(Rejection::from)
        })
}

async fn read_limited(
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
fn body_or_default<T: DeserializeOwned + Default + Send>(
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
fn node_caller(ctx: Ctx) -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(with_ctx(ctx))
        .and_then(|header: Option<String>, ctx: Ctx| async move {
            let token = bearer(header)?
                .ok_or_else(|| ApiError::unauthorized("a node credential is required"))?;
            nodes::authenticate_node(&ctx, &token)
                .await
                .map_err(Rejection::from)
        })
}

fn if_match() -> impl Filter<Extract = (Option<i64>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("if-match")
        .and_then(|h: Option<String>| async move { handlers::if_match(h).map_err(Rejection::from) })
}

fn paging() -> impl Filter<Extract = (Paging,), Error = Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(
            |raw: String| async move { serde_urlencoded_parse(&raw).map_err(Rejection::from) },
        )
}

fn serde_urlencoded_parse(raw: &str) -> Result<Paging> {
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

/// Every route under `/api/v1`.
pub fn api(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let v1 = warp::path("api").and(warp::path("v1"));
    let c = || with_ctx(ctx.clone());
    let who = || caller(ctx.clone());

    let signup = warp::path!("auth" / "signup")
        .and(warp::post())
        .and(c())
        .and(optional_caller(ctx.clone()))
        .and(body())
        .and_then(|ctx, caller, body| respond_fut(accounts::signup(ctx, caller, body)));
    let login = warp::path!("auth" / "login")
        .and(warp::post())
        .and(c())
        .and(warp::addr::remote())
        .and(body())
        .and_then(|ctx, addr, body| respond_fut(accounts::login(ctx, addr, body)));
    let me = warp::path!("me")
        .and(warp::get())
        .and(who())
        .and_then(|caller| respond_fut(accounts::me(caller)));
    let tokens_create = warp::path!("tokens")
        .and(warp::post())
        .and(c())
        .and(who())
        .and(body())
        .and_then(|ctx, caller, body| respond_fut(accounts::token_create(ctx, caller, body)));
    let tokens_list = warp::path!("tokens")
        .and(warp::get())
        .and(c())
        .and(who())
        .and_then(|ctx, caller| respond_fut(accounts::token_list(ctx, caller)));
    let tokens_revoke = warp::path!("tokens" / String)
        .and(warp::delete())
        .and(c())
        .and(who())
        .and_then(|id, ctx, caller| respond_fut(accounts::token_revoke(ctx, caller, id)));
    let accounts = signup
        .or(login)
        .unify()
        .or(me)
        .unify()
        .or(tokens_create)
        .unify()
        .or(tokens_list)
        .unify()
        .or(tokens_revoke)
        .unify()
        .boxed();

    let projects_list = warp::path!("projects")
        .and(warp::get())
        .and(c())
        .and(who())
        .and(paging())
        .and_then(|ctx, caller, q| respond_fut(projects::list(ctx, caller, q)));
    let projects_create = warp::path!("projects")
        .and(warp::post())
        .and(c())
        .and(who())
        .and(body())
        .and_then(|ctx, caller, b| respond_fut(projects::create(ctx, caller, b)));
    let project_get = warp::path!("projects" / String)
        .and(warp::get())
        .and(c())
        .and(who())
        .and_then(|p, ctx, caller| respond_fut(projects::get(ctx, caller, p)));
    let project_put = warp::path!("projects" / String)
        .and(warp::put())
        .and(c())
        .and(who())
        .and(if_match())
        .and(body())
        .and_then(|p, ctx, caller, m, b| respond_fut(projects::put(ctx, caller, p, m, b)));
    let project_patch = warp::path!("projects" / String)
        .and(warp::patch())
        .and(c())
        .and(who())
        .and(if_match())
        .and(body())
        .and_then(|p, ctx, caller, m, b| respond_fut(projects::patch(ctx, caller, p, m, b)));
    let project_delete = warp::path!("projects" / String)
        .and(warp::delete())
        .and(c())
        .and(who())
        .and(if_match())
        .and_then(|p, ctx, caller, m| respond_fut(projects::delete(ctx, caller, p, m)));
    let projects = projects_list
        .or(projects_create)
        .unify()
        .or(project_get)
        .unify()
        .or(project_put)
        .unify()
        .or(project_patch)
        .unify()
        .or(project_delete)
        .unify()
        .boxed();

    let services_list = warp::path!("projects" / String / "services")
        .and(warp::get())
        .and(c())
        .and(who())
        .and(paging())
        .and_then(|p, ctx, caller, q| respond_fut(services::list(ctx, caller, p, q)));
    let services_create = warp::path!("projects" / String / "services")
        .and(warp::post())
        .and(c())
        .and(who())
        .and(body())
        .and_then(|p, ctx, caller, b| respond_fut(services::create(ctx, caller, p, b)));
    let service_get = warp::path!("projects" / String / "services" / String)
        .and(warp::get())
        .and(c())
        .and(who())
        .and_then(|p, s, ctx, caller| respond_fut(services::get(ctx, caller, p, s)));
    let service_put = warp::path!("projects" / String / "services" / String)
        .and(warp::put())
        .and(c())
        .and(who())
        .and(if_match())
        .and(body())
        .and_then(|p, s, ctx, caller, m, b| respond_fut(services::put(ctx, caller, p, s, m, b)));
    let service_patch = warp::path!("projects" / String / "services" / String)
        .and(warp::patch())
        .and(c())
        .and(who())
        .and(if_match())
        .and(body())
        .and_then(|p, s, ctx, caller, m, b| respond_fut(services::patch(ctx, caller, p, s, m, b)));
    let service_delete = warp::path!("projects" / String / "services" / String)
        .and(warp::delete())
        .and(c())
        .and(who())
        .and(if_match())
        .and_then(|p, s, ctx, caller, m| respond_fut(services::delete(ctx, caller, p, s, m)));
    let service_scale = warp::path!("projects" / String / "services" / String / "scale")
        .and(warp::post())
        .and(c())
        .and(who())
        .and(if_match())
        .and(body())
        .and_then(|p, s, ctx, caller, m, b| respond_fut(services::scale(ctx, caller, p, s, m, b)));
    let service_rollback = warp::path!("projects" / String / "services" / String / "rollback")
        .and(warp::post())
        .and(c())
        .and(who())
        .and(if_match())
        .and(body())
        .and_then(|p, s, ctx, caller, m, b| {
            respond_fut(services::rollback(ctx, caller, p, s, m, b))
        });
    let action = |name: &'static str| {
        warp::path("projects")
            .and(warp::path::param::<String>())
            .and(warp::path("services"))
            .and(warp::path::param::<String>())
            .and(warp::path(name))
            .and(warp::path::end())
            .and(warp::post())
            .and(c())
            .and(who())
            .and(if_match())
            .and_then(move |p, s, ctx, caller, m| {
                respond_fut(services::action(ctx, caller, p, s, name.to_owned(), m))
            })
    };
    let service_action = action("restart")
        .or(action("pause"))
        .unify()
        .or(action("resume"))
        .unify();
    let replicas = warp::path!("projects" / String / "services" / String / "replicas")
        .and(warp::get())
        .and(c())
        .and(who())
        .and_then(|p, s, ctx, caller| respond_fut(services::list_replicas(ctx, caller, p, s)));
    // The websocket routes come first: they step aside for plain requests.
    let logs_ws = warp::path!("projects" / String / "services" / String / "logs")
        .and(warp::get())
        .and(warp::ws())
        .and(c())
        .and(ws_caller(ctx.clone()))
        .and(warp::query::<services::LogsQuery>())
        .and_then(|p, s, ws, ctx, caller, q| {
            respond_fut(streams::logs_ws(ctx, caller, p, s, q, ws))
        });
    let exec_ws = warp::path!("projects" / String / "services" / String / "exec")
        .and(warp::get())
        .and(warp::ws())
        .and(c())
        .and(ws_caller(ctx.clone()))
        .and_then(|p, s, ws, ctx, caller| respond_fut(streams::exec_ws(ctx, caller, p, s, ws)));
    let logs = warp::path!("projects" / String / "services" / String / "logs")
        .and(warp::get())
        .and(c())
        .and(who())
        .and(warp::query::<services::LogsQuery>())
        .and_then(|p, s, ctx, caller, q| respond_fut(services::logs(ctx, caller, p, s, q)));
    let exec = warp::path!("projects" / String / "services" / String / "exec")
        .and(warp::post())
        .and(c())
        .and(who())
        .and(body())
        .and_then(|p, s, ctx, caller, b| respond_fut(services::exec(ctx, caller, p, s, b)));
    let builds_list = warp::path!("projects" / String / "services" / String / "builds")
        .and(warp::get())
        .and(c())
        .and(who())
        .and_then(|p, s, ctx, caller| respond_fut(builds::list(ctx, caller, p, s)));
    let builds_create = warp::path!("projects" / String / "services" / String / "builds")
        .and(warp::post())
        .and(c())
        .and(who())
        .and(body_or_default())
        .and_then(|p, s, ctx, caller, b| respond_fut(builds::create(ctx, caller, p, s, b)));
    let build_get = warp::path!("projects" / String / "services" / String / "builds" / String)
        .and(warp::get())
        .and(c())
        .and(who())
        .and_then(|p, s, n, ctx, caller| respond_fut(builds::get(ctx, caller, p, s, n)));
    let build_cancel =
        warp::path!("projects" / String / "services" / String / "builds" / String / "cancel")
            .and(warp::post())
            .and(c())
            .and(who())
            .and_then(|p, s, n, ctx, caller| respond_fut(builds::cancel(ctx, caller, p, s, n)));
    let build_logs_ws =
        warp::path!("projects" / String / "services" / String / "builds" / String / "logs")
            .and(warp::get())
            .and(warp::ws())
            .and(c())
            .and(ws_caller(ctx.clone()))
            .and_then(|p, s, n, ws, ctx, caller| {
                respond_fut(builds::logs_ws(ctx, caller, p, s, n, ws))
            });
    let build_logs =
        warp::path!("projects" / String / "services" / String / "builds" / String / "logs")
            .and(warp::get())
            .and(c())
            .and(who())
            .and_then(|p, s, n, ctx, caller| respond_fut(builds::logs(ctx, caller, p, s, n)));
    let builds = builds_list
        .or(builds_create)
        .unify()
        .or(build_get)
        .unify()
        .or(build_cancel)
        .unify()
        .or(build_logs_ws)
        .unify()
        .or(build_logs)
        .unify()
        .boxed();
    let services = logs_ws
        .or(exec_ws)
        .unify()
        .or(logs)
        .unify()
        .or(exec)
        .unify()
        .or(services_list)
        .unify()
        .or(services_create)
        .unify()
        .or(service_get)
        .unify()
        .or(service_put)
        .unify()
        .or(service_patch)
        .unify()
        .or(service_delete)
        .unify()
        .or(service_scale)
        .unify()
        .or(service_rollback)
        .unify()
        .or(service_action)
        .unify()
        .or(replicas)
        .unify()
        .boxed();

    let events = warp::path!("events")
        .and(warp::get())
        .and(c())
        .and(ws_caller(ctx.clone()))
        .and(warp::query::<events::EventsQuery>())
        .and(warp::ws())
        .map(
            |ctx: Ctx, caller: Caller, query: events::EventsQuery, ws: warp::ws::Ws| {
                ws.on_upgrade(move |socket| events::serve(ctx, caller, query, socket))
                    .into_response()
            },
        );

    let node_connect = warp::path!("nodes" / "connect")
        .and(warp::get())
        .and(c())
        .and(node_caller(ctx.clone()))
        .and(warp::ws())
        .map(|ctx: Ctx, nid: String, ws: warp::ws::Ws| {
            ws.on_upgrade(move |socket| nodes::channel(ctx, nid, socket))
                .into_response()
        });
    let join_tokens = warp::path!("nodes" / "join-tokens")
        .and(warp::post())
        .and(c())
        .and(who())
        .and(body_or_default())
        .and_then(|ctx, caller, b| respond_fut(nodes::create_join_token(ctx, caller, b)));
    let join = warp::path!("nodes" / "join")
        .and(warp::post())
        .and(c())
        .and(body())
        .and_then(|ctx, b| respond_fut(nodes::join(ctx, b)));
    let nodes_list = warp::path!("nodes")
        .and(warp::get())
        .and(c())
        .and(who())
        .and_then(|ctx, caller| respond_fut(nodes::list(ctx, caller)));
    let node_get = warp::path!("nodes" / String)
        .and(warp::get())
        .and(c())
        .and(who())
        .and_then(|n, ctx, caller| respond_fut(nodes::get(ctx, caller, n)));
    let node_delete = warp::path!("nodes" / String)
        .and(warp::delete())
        .and(c())
        .and(who())
        .and_then(|n, ctx, caller| respond_fut(nodes::delete(ctx, caller, n)));
    let nodes = node_connect
        .or(join_tokens)
        .unify()
        .or(join)
        .unify()
        .or(nodes_list)
        .unify()
        .or(node_get)
        .unify()
        .or(node_delete)
        .unify()
        .boxed();

    let internal_ask = warp::path!("internal" / "ask")
        .and(warp::post())
        .and(c())
        .and(warp::header::optional::<String>("authorization"))
        .and(body())
        .and_then(|ctx, auth, b| respond_fut(handlers::internal::ask(ctx, auth, b)));
    let internal_stream = warp::path!("internal" / "stream")
        .and(warp::get())
        .and(warp::ws())
        .and(c())
        .and(warp::header::optional::<String>("authorization"))
        .and_then(|ws, ctx, auth| respond_fut(handlers::internal::stream(ctx, auth, ws)));
    let internal = internal_ask.or(internal_stream).unify().boxed();
    let registry_token = warp::path!("registry" / "token")
        .and(warp::get())
        .and(c())
        .and(warp::addr::remote())
        .and(warp::header::optional::<String>("authorization"))
        .and(
            warp::query::<handlers::registry::TokenQuery>()
                .or(warp::any().map(Vec::new))
                .unify(),
        )
        .and_then(|ctx, addr, auth, q| respond_fut(handlers::registry::token(ctx, addr, auth, q)));

    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .map(|| warp::reply::json(&crate::openapi::document()).into_response());

    v1.and(
        accounts
            .or(projects)
            .unify()
            .or(services)
            .unify()
            .or(builds)
            .unify()
            .or(events)
            .unify()
            .or(nodes)
            .unify()
            .or(registry_token)
            .unify()
            .or(internal)
            .unify()
            .or(vendors(ctx.clone()))
            .unify()
            .or(openapi)
            .unify(),
    )
    .boxed()
}

/// Vendor accounts, the allowlist, webhooks (under `/api/v1`).
fn vendors(ctx: Ctx) -> BoxedFilter<(Response,)> {
    use crate::handlers::{hooks, vendors};
    let c = || with_ctx(ctx.clone());
    let who = || caller(ctx.clone());
    let list = warp::path!("vendors")
        .and(warp::get())
        .and(c())
        .and(who())
        .and_then(|ctx, caller| respond_fut(vendors::list(ctx, caller)));
    let connect = warp::path!("vendors" / String / "connect")
        .and(warp::get())
        .and(c())
        .and(who())
        .and_then(|v, ctx, caller| respond_fut(vendors::connect(ctx, caller, v)));
    // The browser comes back from the vendor: the state and its cookie say who.
    let callback = warp::path!("vendors" / String / "callback")
        .and(warp::get())
        .and(c())
        .and(
            warp::query::<std::collections::HashMap<String, String>>()
                .or(warp::any().map(Default::default))
                .unify(),
        )
        .and(warp::cookie::optional::<String>(vendors::STATE_COOKIE))
        .and_then(|v, ctx, q, cookie| respond_fut(vendors::callback(ctx, v, q, cookie)));
    let unlink = warp::path!("vendors" / String)
        .and(warp::delete())
        .and(c())
        .and(who())
        .and_then(|v, ctx, caller| respond_fut(vendors::unlink(ctx, caller, v)));
    let page = || {
        warp::query::raw()
            .or(warp::any().map(String::new))
            .unify()
            .and_then(|raw: String| async move {
                serde_urlencoded::from_str::<vendors::PageQuery>(&raw).map_err(|e| {
                    Rejection::from(ApiError::bad_request(format!("invalid query: {e}")))
                })
            })
    };
    let repos = warp::path!("vendors" / String / "repos")
        .and(warp::get())
        .and(c())
        .and(who())
        .and(page())
        .and_then(|v, ctx, caller, q| respond_fut(vendors::repos(ctx, caller, v, q)));
    let branches = warp::path!("vendors" / String / "branches")
        .and(warp::get())
        .and(c())
        .and(who())
        .and(page())
        .and_then(|v, ctx, caller, q| respond_fut(vendors::branches(ctx, caller, v, q)));
    let allowlist_get = warp::path!("admin" / "allowlist")
        .and(warp::get())
        .and(c())
        .and(who())
        .and_then(|ctx, caller| respond_fut(vendors::allowlist_get(ctx, caller)));
    let allowlist_put = warp::path!("admin" / "allowlist")
        .and(warp::put())
        .and(c())
        .and(who())
        .and(body())
        .and_then(|ctx, caller, b| respond_fut(vendors::allowlist_put(ctx, caller, b)));
    // Signed by the vendor, not authenticated: the raw body is what is signed.
    let deliver = warp::path!("hooks" / String / String)
        .and(warp::post())
        .and(c())
        .and(warp::header::headers_cloned())
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .and_then(|v, s, ctx, headers, declared, stream| async move {
            let bytes = read_limited(declared, stream)
                .await
                .map_err(Rejection::from)?;
            respond_fut(hooks::deliver(ctx, v, s, headers, bytes)).await
        });
    let webhook = warp::path!("projects" / String / "services" / String / "webhook")
        .and(warp::get())
        .and(c())
        .and(who())
        .and_then(|p, s, ctx, caller| respond_fut(hooks::show(ctx, caller, p, s)));
    list.or(connect)
        .unify()
        .or(callback)
        .unify()
        .or(unlink)
        .unify()
        .or(repos)
        .unify()
        .or(branches)
        .unify()
        .or(allowlist_get)
        .unify()
        .or(allowlist_put)
        .unify()
        .or(deliver)
        .unify()
        .or(webhook)
        .unify()
        .boxed()
}

/// Runs a handler and turns its result into a reply (errors as JSON bodies).
async fn respond_fut(
    fut: impl std::future::Future<Output = Result<Response>> + Send,
) -> std::result::Result<Response, Rejection> {
    Ok(fut.await.unwrap_or_else(ApiError::into_reply))
}

/// The whole server: health, metrics, the API, JSON errors, request metrics.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| "ok".into_response());
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(ready);
    let metrics = {
        let ctx = ctx.clone();
        warp::path!("metrics").and(warp::get()).map(move || {
            warp::reply::with_header(
                ctx.metrics.render(),
                "content-type",
                "text/plain; version=0.0.4",
            )
            .into_response()
        })
    };
    let recorder = ctx.metrics.clone();
    let log = warp::log::custom(move |info| {
        let route = crate::openapi::route_of(info.method().as_str(), info.path());
        recorder.request(
            route,
            info.method().as_str(),
            info.status().as_u16(),
            info.elapsed().as_secs_f64(),
        );
    });
    healthz
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(api(ctx.clone()))
        .unify()
        .or(crate::ui::routes(ctx))
        .unify()
        .recover(crate::error::recover)
        .unify()
        .with(log)
        .map(Reply::into_response)
        .boxed()
}

/// Ready when the store answers within a short time.
async fn ready(ctx: Ctx) -> Response {
    match tokio::time::timeout(std::time::Duration::from_secs(2), ctx.store.revision()).await {
        Ok(Ok(_)) => "ready".into_response(),
        Ok(Err(err)) => ApiError::unavailable(format!("store: {err}")).into_reply(),
        Err(_) => ApiError::unavailable("store: timed out").into_reply(),
    }
}
