//! `GET /api/v1/registry/token`: Docker token auth for lb's registry. Clients
//! (`docker login`, `skopeo`, a node's Docker engine) send Basic credentials
//! and the scopes they want; the answer is a registry token allowing the
//! part of those scopes the caller may have:
//!
//! - a user: pull, push and delete on the repositories of their own
//!   projects (any project for an admin), and the catalog;
//! - a node (its credential as the password): pull on the repositories of
//!   services it is assigned replicas of, and on the repository of the
//!   image an assignment names (in the assignment's own project);
//! - nobody else: 401.
//!
//! A scope the caller may not have is left out of the token rather than
//! refused, as Docker's token spec asks: the registry then answers 401/403.

use std::net::SocketAddr;

use base64::Engine;
use lb_model::ids::is_id;
use lb_model::Assignment;
use lb_store::registry::{parse_scope, Access};
use lb_store::StoreExt;
use warp::http::StatusCode;

use super::{json, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};

/// How long a registry token lives (seconds).
const TOKEN_TTL: i64 = 300;

/// The query of a token request; `scope` may repeat.
pub type TokenQuery = Vec<(String, String)>;

/// Who asks for a token.
enum Asker {
    User(Caller),
    Node(String),
}

/// `GET /registry/token`.
pub async fn token(
    ctx: Ctx,
    addr: Option<SocketAddr>,
    authorization: Option<String>,
    query: TokenQuery,
) -> Result<Response> {
    let asker = authenticate(&ctx, addr, authorization.as_deref()).await?;
    let mut access = Vec::new();
    for (key, value) in &query {
        if key != "scope" {
            continue;
        }
        for scope in value.split(' ') {
            let Some((kind, name, actions)) = parse_scope(scope) else {
                return Err(ApiError::invalid(
                    "scope",
                    format!("{scope:?} is not <type>:<name>:<actions>"),
                ));
            };
            if let Some(granted) = grant(&ctx, &asker, kind, name, &actions).await? {
                access.push(granted);
            }
        }
    }
    let sub = match &asker {
        Asker::User(caller) => caller.user.id.clone(),
        Asker::Node(nid) => format!("node:{nid}"),
    };
    let token = ctx.registry.sign(&sub, access, TOKEN_TTL);
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": TOKEN_TTL,
        }),
    ))
}

/// Basic credentials: a user's name and password, a user's API token as the
/// password, or a node's credential as the password.
async fn authenticate(
    ctx: &Ctx,
    addr: Option<SocketAddr>,
    authorization: Option<&str>,
) -> Result<Asker> {
    let unauthorized =
        || ApiError::unauthorized("registry login needs a user name and password (or API token)");
    let encoded = authorization
        .and_then(|h| {
            h.strip_prefix("Basic ")
                .or_else(|| h.strip_prefix("basic "))
        })
        .ok_or_else(unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| unauthorized())?;
    let text = String::from_utf8(decoded).map_err(|_| unauthorized())?;
    let (username, password) = text.split_once(':').ok_or_else(unauthorized)?;
    if password.starts_with(crate::ops::nodes::NODE_CREDENTIAL_PREFIX) {
        return Ok(Asker::Node(
            crate::ops::nodes::authenticate(ctx, password).await?,
        ));
    }
    if password.starts_with(crate::auth::API_TOKEN_PREFIX) {
        let caller =
            crate::auth::authenticate(ctx.store.as_ref(), &ctx.keys, &ctx.tokens, password).await?;
        return Ok(Asker::User(caller));
    }
    let user = crate::ops::accounts::check_password(ctx, addr, username, password).await?;
    Ok(Asker::User(Caller { user }))
}

/// The access granted for one scope, if any.
async fn grant(
    ctx: &Ctx,
    asker: &Asker,
    kind: &str,
    name: &str,
    actions: &[&str],
) -> Result<Option<Access>> {
    if kind == "registry" && name == "catalog" {
        return Ok(match asker {
            Asker::User(_) => Some(Access {
                kind: kind.into(),
                name: name.into(),
                actions: vec!["*".into()],
                project: String::new(),
                service: String::new(),
            }),
            Asker::Node(_) => None,
        });
    }
    if kind != "repository" {
        return Ok(None);
    }
    let Some((p, s)) = name.split_once('/') else {
        return Ok(None);
    };
    let (allowed, (pid, sid)): (&[&str], _) = match asker {
        Asker::User(caller) => {
            let id_or_name = |x: &str| {
                let upper = x.to_uppercase();
                if is_id(&upper) {
                    upper
                } else {
                    x.to_owned()
                }
            };
            match crate::ops::resolve::service(ctx, caller, &id_or_name(p), &id_or_name(s)).await {
                Ok(loaded) => (&["pull", "push", "delete"], (loaded.pid, loaded.meta.id)),
                Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Asker::Node(nid) => {
            let (pid, sid) = (p.to_uppercase(), s.to_uppercase());
            let (assignments, _) = ctx.store.list(&ctx.keys.node_replicas(nid)).await?;
            // A replica of the service, or one running an image of this
            // repository (a service may run any of its project's images).
            let runs = |a: &Assignment| {
                a.service == sid
                    || lb_model::reference::Reference::parse(&a.image)
                        .is_ok_and(|r| r.repository == name)
            };
            let assigned = assignments.iter().any(|kv| {
                serde_json::from_slice::<Assignment>(&kv.value)
                    .is_ok_and(|a| a.project == pid && runs(&a))
            });
            if !assigned {
                return Ok(None);
            }
            (&["pull"], (pid, sid))
        }
    };
    let actions: Vec<String> = actions
        .iter()
        .filter(|a| allowed.contains(a))
        .map(|a| a.to_string())
        .collect();
    if actions.is_empty() {
        return Ok(None);
    }
    Ok(Some(Access {
        kind: kind.into(),
        name: name.into(),
        actions,
        project: pid,
        service: sid,
    }))
}
