//! The web UI: pages rendered with tera from `templates/ui/` (compiled into
//! the binary), their scripts and styles (plain JavaScript modules, no build
//! step), the browser libraries from Debian's `/usr/share/javascript` under
//! `/vendor/`, and the session routes `POST /ui/login|signup|logout`.
//!
//! A page is a shell: the server checks the session cookie (else redirects
//! to `/login`), renders the layout with the user's name and the CSRF token,
//! and the page's script does the rest against `/api/v1` with the cookie.
//! Pages carry a Content-Security-Policy that allows scripts only from this
//! server.
//!
//! One JSON route serves the pages beside `/api/v1`: `GET
//! /ui/projects/{p}/services/{s}/ingress`, the service's traffic through
//! this process's ingress (see [`ingress`]), for a session that can see the
//! service.

pub mod ingress;

use std::net::SocketAddr;
use std::sync::OnceLock;

use warp::filters::path::FullPath;
use warp::filters::BoxedFilter;
use warp::http::{header, StatusCode};
use warp::hyper::body::Bytes;
use warp::{Filter, Reply};

use crate::auth::{authenticate, Caller};
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::handlers::{self, Response};
use crate::models::Credentials;
use crate::ops::accounts;
use crate::session;

/// Where Debian installs browser libraries (kept here for callers of
/// `lb_api::ui::DEFAULT_VENDOR_DIR`).
pub use crate::config::DEFAULT_VENDOR_DIR;

/// The pages' Content-Security-Policy. Styles may be inline: the terminal
/// and chart libraries set element styles.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/ui/base.html")),
    ("login.html", include_str!("../../templates/ui/login.html")),
    (
        "projects.html",
        include_str!("../../templates/ui/projects.html"),
    ),
    (
        "project.html",
        include_str!("../../templates/ui/project.html"),
    ),
    (
        "service.html",
        include_str!("../../templates/ui/service.html"),
    ),
    ("nodes.html", include_str!("../../templates/ui/nodes.html")),
    (
        "account.html",
        include_str!("../../templates/ui/account.html"),
    ),
    (
        "notfound.html",
        include_str!("../../templates/ui/notfound.html"),
    ),
];

const STATIC: &[(&str, &str, &str)] = &[
    (
        "ui.css",
        "text/css; charset=utf-8",
        include_str!("../../templates/ui/static/ui.css"),
    ),
    ("lb.js", JS, include_str!("../../templates/ui/static/lb.js")),
    (
        "login.js",
        JS,
        include_str!("../../templates/ui/static/login.js"),
    ),
    (
        "projects.js",
        JS,
        include_str!("../../templates/ui/static/projects.js"),
    ),
    (
        "project.js",
        JS,
        include_str!("../../templates/ui/static/project.js"),
    ),
    (
        "specform.js",
        JS,
        include_str!("../../templates/ui/static/specform.js"),
    ),
    (
        "service.js",
        JS,
        include_str!("../../templates/ui/static/service.js"),
    ),
    (
        "nodes.js",
        JS,
        include_str!("../../templates/ui/static/nodes.js"),
    ),
    (
        "account.js",
        JS,
        include_str!("../../templates/ui/static/account.js"),
    ),
    (
        "scripts.js",
        JS,
        include_str!("../../templates/ui/static/scripts.js"),
    ),
    (
        "jobs.js",
        JS,
        include_str!("../../templates/ui/static/jobs.js"),
    ),
];
const JS: &str = "text/javascript; charset=utf-8";

fn tera() -> &'static tera::Tera {
    static TERA: OnceLock<tera::Tera> = OnceLock::new();
    TERA.get_or_init(|| {
        let mut tera = tera::Tera::default();
        tera.add_raw_templates(TEMPLATES.iter().copied())
            .expect("the UI templates compiled into lb parse");
        tera
    })
}

/// What a page is rendered for.
struct Page<'a> {
    template: &'a str,
    title: String,
    script: &'a str,
    caller: Option<&'a Caller>,
    csrf: Option<String>,
    project: Option<String>,
    service: Option<String>,
    /// Where the login page goes after logging in (a checked path).
    next: Option<String>,
    /// The git vendors whose OAuth application this server has (only they
    /// get a "Link" button).
    vendors: Vec<&'static str>,
}

fn render(page: Page<'_>) -> Response {
    let mut c = tera::Context::new();
    c.insert("title", &page.title);
    c.insert("script", page.script);
    c.insert("username", &page.caller.map(|c| c.user.username.clone()));
    c.insert("admin", &page.caller.is_some_and(Caller::is_admin));
    c.insert("csrf", &page.csrf);
    c.insert("project", &page.project.unwrap_or_default());
    c.insert("service", &page.service.unwrap_or_default());
    c.insert("next", &page.next.unwrap_or_default());
    c.insert("vendors", &page.vendors.join(" "));
    match tera().render(page.template, &c) {
        Ok(html) => with_page_headers(warp::reply::html(html).into_response()),
        Err(e) => ApiError::internal(format!("rendering {}: {e}", page.template)).into_reply(),
    }
}

fn with_page_headers(mut reply: Response) -> Response {
    let h = reply.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        if let Ok(value) = value.parse() {
            h.insert(name, value);
        }
    }
    reply
}

fn redirect(to: &str) -> Response {
    let mut reply = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = to.parse() {
        reply.headers_mut().insert(header::LOCATION, value);
    }
    reply
}

/// The caller of a session cookie, or `None` (no cookie, expired, revoked).
async fn session_caller(ctx: &Ctx, cookie: Option<String>) -> Option<(Caller, String)> {
    let token = cookie.filter(|t| !t.is_empty())?;
    let caller = authenticate(ctx.store.as_ref(), &ctx.keys, &ctx.tokens, &token)
        .await
        .ok()?;
    Some((caller, session::csrf_token(&token)))
}

/// A page that needs a session: rendered for its user, else a redirect to
/// the login page.
async fn page(
    ctx: Ctx,
    (cookie, path): (Option<String>, FullPath),
    template: &'static str,
    title: String,
    project: Option<String>,
    service: Option<String>,
) -> Response {
    let Some((caller, csrf)) = session_caller(&ctx, cookie).await else {
        // Back here after logging in (paths are ASCII: warp keeps them
        // percent-encoded).
        let next: String = path
            .as_str()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "/-_.%".contains(*c))
            .collect();
        return redirect(&format!("/login?next={next}"));
    };
    let vendors = configured_vendors(&ctx);
    // A project or service the caller cannot see gets a real 404 page (not
    // a page that says "Loading…" for ever).
    if let Some(missing) = missing(&ctx, &caller, project.as_deref(), service.as_deref()).await {
        let mut reply = render(Page {
            template: "notfound.html",
            title: "Not found".into(),
            script: "lb",
            caller: Some(&caller),
            csrf: Some(csrf),
            project: Some(missing),
            service: None,
            next: None,
            vendors,
        });
        *reply.status_mut() = StatusCode::NOT_FOUND;
        return reply;
    }
    render(Page {
        template,
        title,
        script: template.trim_end_matches(".html"),
        caller: Some(&caller),
        csrf: Some(csrf),
        project,
        service,
        next: None,
        vendors,
    })
}

/// What the page names that the caller cannot see ("project \"x\""), if
/// anything; `None` when it is there (or the store could not answer: the
/// page's script then shows the error).
async fn missing(
    ctx: &Ctx,
    caller: &Caller,
    project: Option<&str>,
    service: Option<&str>,
) -> Option<String> {
    let project = project?;
    let gone =
        |e: &ApiError| e.status == StatusCode::NOT_FOUND || e.status == StatusCode::FORBIDDEN;
    match crate::ops::resolve::project(ctx, caller, project).await {
        Err(e) if gone(&e) => return Some(format!("project \"{project}\"")),
        Err(_) => return None,
        Ok(_) => {}
    }
    let service = service?;
    match crate::ops::resolve::service(ctx, caller, project, service).await {
        Err(e) if gone(&e) => Some(format!("service \"{service}\" in project \"{project}\"")),
        _ => None,
    }
}

/// The vendors whose OAuth application is configured.
fn configured_vendors(ctx: &Ctx) -> Vec<&'static str> {
    lb_model::Vendor::ALL
        .into_iter()
        .filter(|v| ctx.config.vendors.get(*v).is_some())
        .map(|v| v.as_str())
        .collect()
}

fn with_ctx(ctx: Ctx) -> impl Filter<Extract = (Ctx,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

/// Every UI route.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let c = || with_ctx(ctx.clone());
    let cookie = || warp::cookie::optional::<String>(session::SESSION_COOKIE);
    let session = || cookie().and(warp::path::full()).map(|c, p| (c, p));

    let root = warp::path::end()
        .and(warp::get())
        .and(c())
        .and(cookie())
        .then(|ctx: Ctx, cookie| async move {
            match session_caller(&ctx, cookie).await {
                Some(_) => redirect("/projects"),
                None => redirect("/login"),
            }
        });
    let login_page = warp::path!("login")
        .map(|| "login")
        .or(warp::path!("signup").map(|| "signup"))
        .unify()
        .and(warp::get())
        .and(c())
        .and(cookie())
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .then(
            |mode: &'static str,
             ctx: Ctx,
             cookie,
             query: std::collections::HashMap<String, String>| async move {
                // Only a path of this site is followed after logging in.
                let next = session::after_login(query.get("next").map(String::as_str)).to_owned();
                if session_caller(&ctx, cookie).await.is_some() {
                    return redirect(&next);
                }
                let title = if mode == "login" { "Log in" } else { "Sign up" };
                render(Page {
                    template: "login.html",
                    title: title.into(),
                    script: "login",
                    caller: None,
                    csrf: None,
                    project: Some(mode.into()),
                    service: None,
                    next: Some(next),
                    vendors: Vec::new(),
                })
            },
        );
    let projects = warp::path!("projects")
        .and(warp::get())
        .and(c())
        .and(session())
        .then(|ctx, cookie| page(ctx, cookie, "projects.html", "Projects".into(), None, None));
    let project = warp::path!("projects" / String)
        .and(warp::get())
        .and(c())
        .and(session())
        .then(|p: String, ctx, cookie| page(ctx, cookie, "project.html", p.clone(), Some(p), None));
    let service = warp::path!("projects" / String / "services" / String)
        .and(warp::get())
        .and(c())
        .and(session())
        .then(|p: String, s: String, ctx, cookie| {
            page(
                ctx,
                cookie,
                "service.html",
                format!("{s} · {p}"),
                Some(p),
                Some(s),
            )
        });
    let nodes = warp::path!("nodes")
        .and(warp::get())
        .and(c())
        .and(session())
        .then(|ctx: Ctx, cookie: (Option<String>, FullPath)| async move {
            // Admins only, as `GET /api/v1/nodes`.
            let session = session_caller(&ctx, cookie.0.clone()).await;
            if let Some((caller, _)) = session {
                if let Err(e) = crate::ops::nodes::check_reader(&caller) {
                    return e.into_reply();
                }
            }
            page(ctx, cookie, "nodes.html", "Nodes".into(), None, None).await
        });
    let account = warp::path!("account")
        .and(warp::get())
        .and(c())
        .and(session())
        .then(|ctx, cookie| page(ctx, cookie, "account.html", "Account".into(), None, None));

    let statics = warp::path!("ui" / "static" / String)
        .and(warp::get())
        .map(
            |name: String| match STATIC.iter().find(|(n, _, _)| *n == name) {
                Some((_, kind, body)) => {
                    let mut reply =
                        warp::reply::with_header(*body, "content-type", *kind).into_response();
                    reply
                        .headers_mut()
                        .insert("x-content-type-options", "nosniff".parse().expect("valid"));
                    reply
                        .headers_mut()
                        .insert("cache-control", "no-cache".parse().expect("valid"));
                    reply
                }
                None => ApiError::not_found(format!("no UI file {name:?}")).into_reply(),
            },
        );
    let vendor = warp::path("vendor")
        .and(warp::get())
        .and(warp::fs::dir(ctx.config.ui_vendor_dir.clone()))
        .map(|file: warp::fs::File| {
            let mut reply = file.into_response();
            reply
                .headers_mut()
                .insert("x-content-type-options", "nosniff".parse().expect("valid"));
            reply
        });

    let body = || {
        warp::body::content_length_limit(crate::filters::MAX_BODY)
            .and(warp::body::bytes())
            .and_then(|bytes: Bytes| async move {
                crate::json::parse_body::<Credentials>(&bytes).map_err(warp::Rejection::from)
            })
    };
    let origin = || {
        warp::header::optional::<String>("origin")
            .and(warp::header::optional::<String>("host"))
            .and_then(|origin: Option<String>, host: Option<String>| async move {
                session::check_same_origin(origin.as_deref(), host.as_deref())
                    .map_err(warp::Rejection::from)
            })
            .untuple_one()
    };
    // Cookies are `Secure` when the browser came over HTTPS.
    let https = {
        let ctx = ctx.clone();
        move || {
            let ctx = ctx.clone();
            warp::header::optional::<String>("x-forwarded-proto").map(
                move |proto: Option<String>| {
                    session::over_https(ctx.config.vendors.public_url.as_deref(), proto.as_deref())
                },
            )
        }
    };
    let login = warp::path!("ui" / "login")
        .and(warp::post())
        .and(origin())
        .and(c())
        .and(crate::auth::client_addr(ctx.clone()))
        .and(https())
        .and(body())
        .then(|ctx, addr, secure, body| async move {
            reply(start_session(ctx, addr, secure, body).await)
        });
    let signup = warp::path!("ui" / "signup")
        .and(warp::post())
        .and(origin())
        .and(c())
        .and(crate::auth::client_addr(ctx.clone()))
        .and(https())
        .and(body())
        .then(|ctx: Ctx, addr, secure, body: Credentials| async move {
            let outcome = async {
                accounts::signup(&ctx, None, &body).await?;
                start_session(ctx, addr, secure, body).await
            };
            reply(outcome.await)
        });
    let logout = warp::path!("ui" / "logout")
        .and(warp::post())
        .and(session::credential())
        .and(https())
        .map(|cred: session::SessionCredential, secure| {
            // Only the page itself may log its user out.
            reply(cred.token().map(|_| {
                let mut reply = StatusCode::NO_CONTENT.into_response();
                for cookie in session::end_cookies(secure) {
                    if let Ok(value) = cookie.parse() {
                        reply.headers_mut().append(header::SET_COOKIE, value);
                    }
                }
                reply
            }))
        });

    let ingress = warp::path!("ui" / "projects" / String / "services" / String / "ingress")
        .and(warp::get())
        .and(c())
        .and(cookie())
        .then(|p: String, s: String, ctx: Ctx, cookie| async move {
            reply(ingress_stats(ctx, cookie, p, s).await)
        });

    root.or(login_page)
        .unify()
        .or(projects)
        .unify()
        .or(project)
        .unify()
        .or(service)
        .unify()
        .or(nodes)
        .unify()
        .or(account)
        .unify()
        .or(statics)
        .unify()
        .or(vendor)
        .unify()
        .or(login)
        .unify()
        .or(signup)
        .unify()
        .or(logout)
        .unify()
        .or(ingress)
        .unify()
        .boxed()
}

fn reply(result: Result<Response>) -> Response {
    result.unwrap_or_else(ApiError::into_reply)
}

/// The ingress panel's figures: only the service's own route, and only for
/// a session whose user can see the service (else 401 or 404 as the API
/// answers).
async fn ingress_stats(ctx: Ctx, cookie: Option<String>, p: String, s: String) -> Result<Response> {
    let Some((caller, _)) = session_caller(&ctx, cookie).await else {
        return Err(ApiError::unauthorized(
            "no session: log in to see a service's traffic",
        ));
    };
    let loaded = crate::ops::resolve::service(&ctx, &caller, &p, &s).await?;
    let route = format!("{}/{}", loaded.project_name, loaded.spec.name);
    Ok(handlers::json(
        StatusCode::OK,
        &ingress::stats(ctx.metrics.registry(), &route),
    ))
}

/// Checks the password and starts a session: `{"username"}` and the cookies.
async fn start_session(
    ctx: Ctx,
    addr: Option<SocketAddr>,
    secure: bool,
    body: Credentials,
) -> Result<Response> {
    let user = accounts::check_password(&ctx, addr, &body.username, &body.password).await?;
    let (token, expires) = ctx.tokens.issue(&user.id)?;
    let mut reply = handlers::json(
        StatusCode::OK,
        &serde_json::json!({ "username": user.username }),
    );
    for cookie in session::start_cookies(&token, expires, secure) {
        if let Ok(value) = cookie.parse() {
            reply.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(reply)
}
