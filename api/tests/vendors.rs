//! Vendor accounts and webhooks over real HTTP, on both backends: push
//! webhooks signed as GitHub, GitLab and Bitbucket document it (refused
//! unsigned, wrongly signed or replayed; other branches ignored; a build of
//! the pushed commit queued), the allowlist, and OAuth linking, repository
//! listing and webhook creation against fake vendor servers started here.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{start, start_with, Api, Backend};
use hmac::{Hmac, Mac};
use lb_api::vendors::VendorConfig;
use lb_model::Vendor;
use serde_json::{json, Value};
use sha2::Sha256;
use warp::Filter;

both_backends!(
    webhooks_are_checked_and_queue_builds,
    allowlist_limits_owners,
    oauth_links_lists_repos_and_creates_webhooks,
    polling_builds_when_the_branch_moves,
);

const SHA: &str = "3f786850e387550fdab836ed7e6dc881de23001b";
const SHA2: &str = "89e6c98d92887913cadf06b2adb97f26cde4849b";

/// `sha256=<hex>` of HMAC-SHA256(secret, body), computed here as GitHub
/// (<https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>)
/// and Bitbucket Cloud
/// (<https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/#Secure-webhooks>)
/// document it, independently of lb's code.
fn hub_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// A push payload and its headers, as `vendor` sends them, signed with
/// `secret` (or not, or wrongly).
enum Sign<'a> {
    With(&'a str),
    Not,
}

fn delivery(
    vendor: Vendor,
    branch: &str,
    commit: &str,
    id: &str,
    sign: Sign,
) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let body = match vendor {
        Vendor::Github => {
            json!({"ref": format!("refs/heads/{branch}"), "before": SHA2, "after": commit,
            "deleted": false, "repository": {"full_name": "acme/web", "default_branch": "main"}})
        }
        Vendor::Gitlab => json!({"object_kind": "push", "ref": format!("refs/heads/{branch}"),
            "before": SHA2, "after": commit, "checkout_sha": commit,
            "project": {"path_with_namespace": "grp/app", "default_branch": "main"}}),
        Vendor::Bitbucket => json!({"push": {"changes": [{"new": {"type": "branch", "name": branch,
            "target": {"hash": commit}}, "old": null}]}, "repository": {"full_name": "team/app"}}),
    };
    let body = serde_json::to_vec(&body).unwrap();
    let mut headers = vec![("content-type", "application/json".to_owned())];
    match vendor {
        Vendor::Github => {
            headers.push(("x-github-event", "push".into()));
            headers.push(("x-github-delivery", id.into()));
            if let Sign::With(secret) = sign {
                headers.push(("x-hub-signature-256", hub_signature(secret, &body)));
            }
        }
        Vendor::Gitlab => {
            headers.push(("x-gitlab-event", "Push Hook".into()));
            headers.push(("x-gitlab-event-uuid", id.into()));
            if let Sign::With(secret) = sign {
                headers.push(("x-gitlab-token", secret.into()));
            }
        }
        Vendor::Bitbucket => {
            headers.push(("x-event-key", "repo:push".into()));
            headers.push(("x-request-uuid", id.into()));
            if let Sign::With(secret) = sign {
                headers.push(("x-hub-signature", hub_signature(secret, &body)));
            }
        }
    }
    (body, headers)
}

async fn post_hook(
    api: &Api,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> (u16, Value) {
    let path = url
        .split_once("/api/v1/")
        .map(|(_, p)| format!("/api/v1/{p}"))
        .unwrap();
    let mut req = api.client.post(format!("{}{path}", api.base)).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    assert!(status < 500, "{status} {body}");
    (status, body)
}

async fn builds(api: &Api, token: &str, service: &str) -> Vec<Value> {
    let r = api
        .call(
            "GET",
            &format!("/api/v1/projects/demo/services/{service}/builds"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

/// Waits until the hook controller registered (or removed) the service's
/// webhook: a signed ping answers 202 once it is there, 404 before.
async fn wait_hook(api: &Api, url: &str, secret: &str, vendor: Vendor, present: bool) {
    for i in 0..100 {
        let body = b"{}".to_vec();
        let mut headers = vec![];
        match vendor {
            Vendor::Github => {
                headers.push(("x-github-event", "ping".to_owned()));
                headers.push(("x-hub-signature-256", hub_signature(secret, &body)));
            }
            Vendor::Gitlab => {
                headers.push(("x-gitlab-event", "System Hook".to_owned()));
                headers.push(("x-gitlab-event-uuid", format!("wait-{i}-{present}")));
                headers.push(("x-gitlab-token", secret.to_owned()));
            }
            Vendor::Bitbucket => {
                headers.push(("x-event-key", "repo:updated".to_owned()));
                headers.push(("x-request-uuid", format!("wait-{i}-{present}")));
                headers.push(("x-hub-signature", hub_signature(secret, &body)));
            }
        }
        let (status, _) = post_hook(api, url, body, &headers).await;
        if (status == 202) == present {
            return;
        }
        assert!(status == 202 || status == 404, "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "the webhook of {url} was not {} within 20 s",
        if present { "registered" } else { "removed" }
    );
}

async fn service(
    api: &Api,
    token: &str,
    name: &str,
    url: &str,
    autodeploy: bool,
) -> (String, String) {
    let r = api
        .call(
            "POST",
            "/api/v1/projects/demo/services",
            Some(token),
            Some(json!({"name": name, "source": {"url": url, "branch": "main"}, "autodeploy": autodeploy})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let hook = api
        .call(
            "GET",
            &format!("/api/v1/projects/demo/services/{name}/webhook"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(hook.status, 200, "{}", hook.body);
    (
        hook.body["url"].as_str().unwrap().to_owned(),
        hook.body["secret"].as_str().unwrap().to_owned(),
    )
}

async fn webhooks_are_checked_and_queue_builds(backend: Backend) {
    let api = start(backend).await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    api.call(
        "POST",
        "/api/v1/projects",
        Some(&alice),
        Some(json!({"name": "demo"})),
    )
    .await;
    for (vendor, name, url) in [
        (Vendor::Github, "gh", "https://github.com/acme/web.git"),
        (Vendor::Gitlab, "gl", "https://gitlab.com/grp/app.git"),
        (
            Vendor::Bitbucket,
            "bb",
            "https://bitbucket.org/team/app.git",
        ),
    ] {
        let (hook_url, secret) = service(&api, &alice, name, url, true).await;
        assert!(hook_url.starts_with(&api.base), "{hook_url}");
        assert!(
            hook_url.contains(&format!("/api/v1/hooks/{vendor}/")),
            "{hook_url}"
        );
        assert_eq!(secret.len(), 40);
        // Only the owner sees the secret.
        let other = api
            .call(
                "GET",
                &format!("/api/v1/projects/demo/services/{name}/webhook"),
                Some(&bob),
                None,
            )
            .await;
        assert_eq!(other.status, 404);
        wait_hook(&api, &hook_url, &secret, vendor, true).await;

        // Unsigned, wrongly signed, or signed with another service's secret: 401.
        let (body, headers) = delivery(vendor, "main", SHA, &format!("{name}-1"), Sign::Not);
        let (status, reply) = post_hook(&api, &hook_url, body, &headers).await;
        assert_eq!(status, 401, "{vendor} unsigned: {reply}");
        let (body, headers) = delivery(
            vendor,
            "main",
            SHA,
            &format!("{name}-2"),
            Sign::With("wrong secret"),
        );
        let (status, _) = post_hook(&api, &hook_url, body, &headers).await;
        assert_eq!(status, 401, "{vendor} wrongly signed");
        // A signed body changed on the way.
        let (mut body, headers) = delivery(
            vendor,
            "main",
            SHA,
            &format!("{name}-3"),
            Sign::With(&secret),
        );
        if vendor != Vendor::Gitlab {
            body = String::from_utf8(body)
                .unwrap()
                .replace(SHA, SHA2)
                .into_bytes();
            let (status, _) = post_hook(&api, &hook_url, body, &headers).await;
            assert_eq!(status, 401, "{vendor} tampered body");
        }
        assert!(
            builds(&api, &alice, name).await.is_empty(),
            "{vendor}: nothing queued"
        );

        // Signed: a build of the pushed commit is queued.
        let (body, headers) = delivery(
            vendor,
            "main",
            SHA,
            &format!("{name}-ok"),
            Sign::With(&secret),
        );
        let (status, reply) = post_hook(&api, &hook_url, body.clone(), &headers).await;
        assert_eq!(status, 202, "{vendor}: {reply}");
        assert_eq!(reply["queued"], true, "{reply}");
        assert_eq!(reply["build"], 1, "{reply}");
        let list = builds(&api, &alice, name).await;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["commit"], SHA);
        assert_eq!(list[0]["status"], "queued");

        // The same delivery again: a replay, refused.
        let (status, reply) = post_hook(&api, &hook_url, body, &headers).await;
        assert_eq!(status, 409, "{vendor} replay: {reply}");
        // Another branch: accepted, ignored.
        let (body, headers) = delivery(
            vendor,
            "feature",
            SHA2,
            &format!("{name}-other"),
            Sign::With(&secret),
        );
        let (status, reply) = post_hook(&api, &hook_url, body, &headers).await;
        assert_eq!(status, 202, "{reply}");
        assert_eq!(reply["queued"], false, "{reply}");
        assert_eq!(
            builds(&api, &alice, name).await.len(),
            1,
            "{vendor}: other branches build nothing"
        );
        // The secret of one service does not open another's hook.
        let wrong_vendor_url = hook_url.replace(
            vendor.as_str(),
            if vendor == Vendor::Github {
                "gitlab"
            } else {
                "github"
            },
        );
        let (body, headers) = delivery(
            vendor,
            "main",
            SHA2,
            &format!("{name}-x"),
            Sign::With(&secret),
        );
        let (status, _) = post_hook(&api, &wrong_vendor_url, body, &headers).await;
        assert_eq!(
            status, 401,
            "{vendor}: a delivery in another vendor's format is unsigned"
        );
    }

    // Unknown services and vendors: 404, nothing queued.
    let (body, headers) = delivery(Vendor::Github, "main", SHA, "x", Sign::With("s"));
    let (status, _) = post_hook(
        &api,
        &format!(
            "{}/api/v1/hooks/github/01JUNKNOWN0000000000000000",
            api.base
        ),
        body.clone(),
        &headers,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post_hook(
        &api,
        &format!("{}/api/v1/hooks/gitea/x", api.base),
        body,
        &headers,
    )
    .await;
    assert_eq!(status, 404);

    // Autodeploy off removes the hook: deliveries find nothing.
    let (hook_url, secret) = {
        let r = api
            .call(
                "GET",
                "/api/v1/projects/demo/services/gh/webhook",
                Some(&alice),
                None,
            )
            .await;
        (
            r.body["url"].as_str().unwrap().to_owned(),
            r.body["secret"].as_str().unwrap().to_owned(),
        )
    };
    let r = api
        .call(
            "PATCH",
            "/api/v1/projects/demo/services/gh",
            Some(&alice),
            Some(json!({"autodeploy": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_hook(&api, &hook_url, &secret, Vendor::Github, false).await;
    let (body, headers) = delivery(
        Vendor::Github,
        "main",
        SHA2,
        "after-off",
        Sign::With(&secret),
    );
    let (status, _) = post_hook(&api, &hook_url, body, &headers).await;
    assert_eq!(status, 404);
    assert_eq!(builds(&api, &alice, "gh").await.len(), 1);
    // So does deleting the service.
    let r = api
        .call(
            "GET",
            "/api/v1/projects/demo/services/gl/webhook",
            Some(&alice),
            None,
        )
        .await;
    let (gl_url, gl_secret) = (
        r.body["url"].as_str().unwrap().to_owned(),
        r.body["secret"].as_str().unwrap().to_owned(),
    );
    api.call(
        "DELETE",
        "/api/v1/projects/demo/services/gl",
        Some(&alice),
        None,
    )
    .await;
    wait_hook(&api, &gl_url, &gl_secret, Vendor::Gitlab, false).await;
}

async fn allowlist_limits_owners(backend: Backend) {
    let api = start(backend).await;
    let alice = api.user("alice").await;
    let admin = api.admin().await;
    api.call(
        "POST",
        "/api/v1/projects",
        Some(&alice),
        Some(json!({"name": "demo"})),
    )
    .await;
    let r = api
        .call(
            "PUT",
            "/api/v1/admin/allowlist",
            Some(&alice),
            Some(json!({"owners": ["github.com/acme"]})),
        )
        .await;
    assert_eq!(r.status, 403, "only an admin sets the allowlist");
    let r = api
        .call(
            "PUT",
            "/api/v1/admin/allowlist",
            Some(&admin),
            Some(json!({"owners": ["bad entry"]})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "owners[0]");
    let r = api
        .call(
            "PUT",
            "/api/v1/admin/allowlist",
            Some(&admin),
            Some(json!({"owners": ["github.com/acme"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api
        .call("GET", "/api/v1/admin/allowlist", Some(&admin), None)
        .await;
    assert_eq!(r.body, json!({"owners": ["github.com/acme"]}));

    let (ok_url, ok_secret) =
        service(&api, &alice, "ok", "https://github.com/acme/web.git", true).await;
    let (no_url, no_secret) =
        service(&api, &alice, "no", "https://github.com/evil/web.git", true).await;
    wait_hook(&api, &ok_url, &ok_secret, Vendor::Github, true).await;
    wait_hook(&api, &no_url, &no_secret, Vendor::Github, true).await;
    let (body, headers) = delivery(Vendor::Github, "main", SHA, "a1", Sign::With(&ok_secret));
    assert_eq!(post_hook(&api, &ok_url, body, &headers).await.0, 202);
    let (body, headers) = delivery(Vendor::Github, "main", SHA, "a2", Sign::With(&no_secret));
    let (status, reply) = post_hook(&api, &no_url, body, &headers).await;
    assert_eq!(status, 403, "{reply}");
    assert!(builds(&api, &alice, "no").await.is_empty());
    assert_eq!(builds(&api, &alice, "ok").await.len(), 1);
}

/// What the fake vendors saw.
#[derive(Default)]
struct Seen {
    calls: Vec<(String, String, Option<String>)>,
    hooks: HashMap<String, Value>,
}

/// One fake server playing GitHub, GitLab and Bitbucket Cloud under
/// `/github`, `/gitlab` and `/bitbucket`, answering the endpoints lb calls
/// with the shapes their documentation gives:
///
/// - OAuth token exchange and refresh: GitHub
///   <https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps#2-users-are-redirected-back-to-your-site-by-github>,
///   GitLab <https://docs.gitlab.com/api/oauth2/#authorization-code-flow>,
///   Bitbucket <https://developer.atlassian.com/cloud/bitbucket/oauth-2/>.
/// - The account: GitHub `GET /user`
///   <https://docs.github.com/en/rest/users/users#get-the-authenticated-user>,
///   GitLab `GET /user` <https://docs.gitlab.com/api/users/#get-the-current-user>,
///   Bitbucket `GET /user` <https://developer.atlassian.com/cloud/bitbucket/rest/api-group-users/#api-user-get>.
/// - Repositories: GitHub `GET /user/repos` (Link header pages)
///   <https://docs.github.com/en/rest/repos/repos#list-repositories-for-the-authenticated-user>,
///   GitLab `GET /projects` (X-Next-Page) <https://docs.gitlab.com/api/projects/#list-all-projects>,
///   Bitbucket `GET /repositories` (`next`) <https://developer.atlassian.com/cloud/bitbucket/rest/api-group-repositories/#api-repositories-get>.
/// - Branches: GitHub <https://docs.github.com/en/rest/branches/branches#list-branches>,
///   GitLab <https://docs.gitlab.com/api/branches/#list-repository-branches>,
///   Bitbucket <https://developer.atlassian.com/cloud/bitbucket/rest/api-group-refs/#api-repositories-workspace-repo-slug-refs-branches-get>.
/// - Webhooks: GitHub <https://docs.github.com/en/rest/repos/webhooks#create-a-repository-webhook>,
///   GitLab <https://docs.gitlab.com/api/project_webhooks/#add-a-webhook-to-a-project>,
///   Bitbucket <https://developer.atlassian.com/cloud/bitbucket/rest/api-group-repositories/#api-repositories-workspace-repo-slug-hooks-post>.
async fn fake_vendors(seen: Arc<Mutex<Seen>>) -> String {
    let route = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::bytes())
        .map(move |method: warp::http::Method, path: warp::path::FullPath, query: String, auth: Option<String>, body: warp::hyper::body::Bytes| {
            let path = path.as_str().to_owned();
            let mut seen = seen.lock().unwrap();
            seen.calls.push((method.to_string(), format!("{path}?{query}"), auth.clone()));
            let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
            let reply = |status: u16, body: Value| {
                warp::http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .unwrap()
            };
            let client_ok = auth.as_deref()
                == Some(&format!("Basic {}", base64_encode("client-id:client-secret")));
            if method == "POST" && (path.ends_with("/login/oauth/access_token") || path.ends_with("/oauth/token") || path.ends_with("/site/oauth2/access_token")) {
                if !client_ok {
                    return reply(401, json!({"error": "invalid_client"}));
                }
                let vendor = path.split('/').nth(1).unwrap_or_default().to_owned();
                return match (form.get("grant_type").map(String::as_str), form.get("code").map(String::as_str), form.get("refresh_token").map(String::as_str)) {
                    (Some("authorization_code"), Some("good-code"), _) => match vendor.as_str() {
                        // GitHub OAuth App tokens do not expire.
                        "github" => reply(200, json!({"access_token": "gho_token1", "token_type": "bearer", "scope": "repo,admin:repo_hook,read:user"})),
                        // GitLab and Bitbucket tokens expire (here: at once) and come with a refresh token.
                        _ => reply(200, json!({"access_token": format!("{vendor}-token1"), "token_type": "bearer", "expires_in": 1, "refresh_token": format!("{vendor}-refresh1")})),
                    },
                    (Some("refresh_token"), _, Some(r)) if r == format!("{vendor}-refresh1") => {
                        reply(200, json!({"access_token": format!("{vendor}-token2"), "token_type": "bearer", "expires_in": 7200, "refresh_token": format!("{vendor}-refresh2")}))
                    }
                    _ => reply(400, json!({"error": "invalid_grant"})),
                };
            }
            let token = auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default().to_owned();
            // Expiring tokens must have been refreshed before lb lists anything.
            let valid = ["gho_token1", "gitlab-token2", "bitbucket-token2"].contains(&token.as_str())
                || (token.ends_with("-token1") && path.ends_with("/user"));
            if !valid {
                return reply(401, json!({"message": "Bad credentials"}));
            }
            let page: u32 = query.split('&').find_map(|p| p.strip_prefix("page=")).and_then(|p| p.parse().ok()).unwrap_or(1);
            match (method.as_str(), path.as_str()) {
                ("GET", "/github/api/v3/user") => reply(200, json!({"id": 42, "login": "octo"})),
                ("GET", "/gitlab/api/v4/user") => reply(200, json!({"id": 7, "username": "tanuki"})),
                ("GET", "/bitbucket/2.0/user") => reply(200, json!({"uuid": "{b-uuid}", "username": "bucky"})),
                ("GET", "/github/api/v3/user/repos") => {
                    let mut r = reply(200, json!([{"full_name": format!("acme/repo{page}"), "private": true,
                        "clone_url": format!("https://github.com/acme/repo{page}.git"), "default_branch": "main"}]));
                    if page == 1 {
                        r.headers_mut().insert("link", "<https://api.github.com/user/repos?page=2>; rel=\"next\"".parse().unwrap());
                    }
                    r
                }
                ("GET", "/gitlab/api/v4/projects") => {
                    let mut r = reply(200, json!([{"path_with_namespace": "grp/sub/app", "visibility": "private",
                        "http_url_to_repo": "https://gitlab.com/grp/sub/app.git", "default_branch": "main"}]));
                    r.headers_mut().insert("x-next-page", if page == 1 { "2" } else { "" }.parse().unwrap());
                    r
                }
                ("GET", "/bitbucket/2.0/repositories") => reply(200, json!({"values": [{"full_name": "team/app", "is_private": true,
                    "links": {"clone": [{"name": "https", "href": "https://bucky@bitbucket.org/team/app.git"}, {"name": "ssh", "href": "git@bitbucket.org:team/app.git"}]},
                    "mainbranch": {"name": "main"}}], "page": page})),
                ("GET", "/github/api/v3/repos/acme/web/branches") => reply(200, json!([{"name": "main", "commit": {"sha": SHA}}])),
                ("GET", "/gitlab/api/v4/projects/grp%2Fsub%2Fapp/repository/branches") => reply(200, json!([{"name": "main", "commit": {"id": SHA}}])),
                ("GET", "/bitbucket/2.0/repositories/team/app/refs/branches") => reply(200, json!({"values": [{"name": "main", "target": {"hash": SHA}}]})),
                ("POST", "/github/api/v3/repos/acme/web/hooks") | ("POST", "/gitlab/api/v4/projects/grp%2Fsub%2Fapp/hooks") | ("POST", "/bitbucket/2.0/repositories/team/app/hooks") => {
                    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let id = format!("{}", seen.hooks.len() + 100);
                    seen.hooks.insert(format!("{path}/{id}"), body);
                    if path.starts_with("/bitbucket") {
                        reply(201, json!({"uuid": format!("{{{id}}}")}))
                    } else {
                        reply(201, json!({"id": id.parse::<u64>().unwrap()}))
                    }
                }
                ("DELETE", p) => {
                    let p = p.replace("%7B", "").replace("%7D", "").replace(['{', '}'], "");
                    if seen.hooks.remove(&p).is_some() {
                        reply(204, Value::Null)
                    } else {
                        reply(404, json!({"message": "Not Found"}))
                    }
                }
                _ => reply(404, json!({"message": "Not Found"})),
            }
        });
    let (addr, server) = warp::serve(route).bind_ephemeral(([127, 0, 0, 1], 0));
    tokio::spawn(server);
    format!("http://{addr}")
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn oauth_links_lists_repos_and_creates_webhooks(backend: Backend) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let fake = fake_vendors(seen.clone()).await;
    let app = |v: Vendor, web: String, api: String| {
        Some(VendorConfig::new(
            v,
            "client-id".into(),
            "client-secret".into(),
            Some(web),
            Some(api),
        ))
    };
    let api = start_with(backend, |c| {
        c.vendors.github = app(
            Vendor::Github,
            format!("{fake}/github"),
            format!("{fake}/github/api/v3"),
        );
        c.vendors.gitlab = app(
            Vendor::Gitlab,
            format!("{fake}/gitlab"),
            format!("{fake}/gitlab/api/v4"),
        );
        c.vendors.bitbucket = app(
            Vendor::Bitbucket,
            format!("{fake}/bitbucket"),
            format!("{fake}/bitbucket/2.0"),
        );
    })
    .await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // A service made before its vendor is linked: the webhook cannot be
    // created yet, and is once the account is linked.
    api.call(
        "POST",
        "/api/v1/projects",
        Some(&alice),
        Some(json!({"name": "demo"})),
    )
    .await;
    let r = api
        .call("POST", "/api/v1/projects/demo/services", Some(&alice),
            Some(json!({"name": "early", "autodeploy": true,
                "source": {"url": "https://github.com/acme/web.git", "branch": "main", "vendor": "github"}})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let hook = api
            .call(
                "GET",
                "/api/v1/projects/demo/services/early/webhook",
                Some(&alice),
                None,
            )
            .await;
        // Registered, and the vendor webhook tried (lb's record comes first).
        if hook.body["active"] == true && !hook.body["error"].is_null() {
            assert_eq!(hook.body["vendor_hook"], false, "{}", hook.body);
            assert!(
                hook.body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("no github account linked"),
                "{}",
                hook.body
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never registered: {}",
            hook.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for (vendor, login) in [
        (Vendor::Github, "octo"),
        (Vendor::Gitlab, "tanuki"),
        (Vendor::Bitbucket, "bucky"),
    ] {
        // Connect: a redirect to the vendor with a state, and the state cookie.
        let resp = no_redirects
            .get(format!("{}/api/v1/vendors/{vendor}/connect", api.base))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302);
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        let cookie = cookie.split(';').next().unwrap().to_owned();
        assert!(
            location.starts_with(&format!("{fake}/{vendor}/")),
            "{location}"
        );
        let url = reqwest::Url::parse(&location).unwrap();
        let params: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(params["client_id"], "client-id");
        assert_eq!(params["response_type"], "code");
        assert_eq!(
            params["redirect_uri"],
            format!("{}/api/v1/vendors/{vendor}/callback", api.base)
        );
        let state = params["state"].clone();
        assert_eq!(cookie, format!("lb_oauth_state={state}"));
        let callback = |code: &str, state: &str, cookie: Option<&str>| {
            let mut req = no_redirects.get(format!(
                "{}/api/v1/vendors/{vendor}/callback?code={code}&state={state}",
                api.base
            ));
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            async move {
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        // Without the cookie (another browser): refused, the state unspent.
        assert_eq!(callback("good-code", &state, None).await.0, 403);
        assert_eq!(
            callback("good-code", &state, Some("lb_oauth_state=forged"))
                .await
                .0,
            403
        );
        let (status, body) = callback("good-code", &state, Some(&cookie)).await;
        assert_eq!(status, 200, "{vendor}: {body}");
        assert_eq!(body["login"], login);
        assert!(!body.to_string().contains("token1"), "{body}");
        // The state is single use.
        assert_eq!(callback("good-code", &state, Some(&cookie)).await.0, 400);
    }
    // A bad code: the vendor refuses, lb says so.
    let resp = no_redirects
        .get(format!("{}/api/v1/vendors/github/connect", api.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let state: String = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let r = no_redirects
        .get(format!(
            "{}/api/v1/vendors/github/callback?code=bad-code&state={state}",
            api.base
        ))
        .header("cookie", format!("lb_oauth_state={state}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // The early service's webhook is created now that GitHub is linked;
    // deleting the service removes it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let hook = api
            .call(
                "GET",
                "/api/v1/projects/demo/services/early/webhook",
                Some(&alice),
                None,
            )
            .await;
        if hook.body["vendor_hook"] == true {
            assert_eq!(hook.body["error"], Value::Null, "{}", hook.body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never created: {}",
            hook.body
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(seen.lock().unwrap().hooks.len(), 1);
    api.call(
        "DELETE",
        "/api/v1/projects/demo/services/early",
        Some(&alice),
        None,
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !seen.lock().unwrap().hooks.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the early webhook was not removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The links: listed without tokens; stored sealed.
    let links = api.call("GET", "/api/v1/vendors", Some(&alice), None).await;
    assert_eq!(links.body["total"], 3, "{}", links.body);
    let text = links.body.to_string();
    assert!(!text.contains("token"), "{text}");
    assert_eq!(
        api.call("GET", "/api/v1/vendors", Some(&bob), None)
            .await
            .body["total"],
        0
    );
    let (kvs, _) = lb_store::StoreExt::list(api.store.as_ref(), "/lb/users/")
        .await
        .unwrap();
    for kv in kvs.iter().filter(|kv| kv.key.contains("/vendors/")) {
        let raw = String::from_utf8_lossy(&kv.value);
        assert!(
            !raw.contains("token1") && !raw.contains("token2") && !raw.contains("refresh1"),
            "{raw}"
        );
    }

    // Repositories, paginated each vendor's way; expired tokens refreshed first.
    let r = api
        .call("GET", "/api/v1/vendors/github/repos", Some(&alice), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["items"][0]["full_name"], "acme/repo1");
    assert_eq!(r.body["next_page"], 2);
    let r = api
        .call(
            "GET",
            "/api/v1/vendors/github/repos?page=2",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.body["items"][0]["full_name"], "acme/repo2");
    assert_eq!(r.body["next_page"], Value::Null);
    let r = api
        .call("GET", "/api/v1/vendors/gitlab/repos", Some(&alice), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["items"][0]["full_name"], "grp/sub/app");
    assert_eq!(r.body["next_page"], 2);
    let r = api
        .call("GET", "/api/v1/vendors/bitbucket/repos", Some(&alice), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["items"][0]["clone_url"],
        "https://bitbucket.org/team/app.git"
    );
    assert_eq!(r.body["next_page"], Value::Null);
    for (v, repo) in [
        ("github", "acme/web"),
        ("gitlab", "grp/sub/app"),
        ("bitbucket", "team/app"),
    ] {
        let r = api
            .call(
                "GET",
                &format!("/api/v1/vendors/{v}/branches?repo={repo}"),
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{v}: {}", r.body);
        assert_eq!(r.body["items"][0], json!({"name": "main", "commit": SHA}));
    }
    let r = api
        .call(
            "GET",
            "/api/v1/vendors/github/branches?repo=../x",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .call("GET", "/api/v1/vendors/github/repos", Some(&bob), None)
        .await;
    assert_eq!(r.status, 404, "bob linked nothing: {}", r.body);
    // No token ever went anywhere but the Authorization header.
    {
        let seen = seen.lock().unwrap();
        assert!(seen
            .calls
            .iter()
            .all(|(_, path, _)| !path.contains("token1") && !path.contains("token2")));
        assert!(seen
            .calls
            .iter()
            .any(|(_, _, auth)| auth.as_deref() == Some("Bearer gitlab-token2")));
    }

    // Autodeploy services from linked repositories get a push webhook with
    // their secret, and lose it when autodeploy goes off or they go.
    api.call(
        "POST",
        "/api/v1/projects",
        Some(&alice),
        Some(json!({"name": "demo"})),
    )
    .await;
    for (v, name, url, hook_prefix) in [
        (
            "github",
            "gh",
            "https://github.com/acme/web.git",
            "/github/api/v3/repos/acme/web/hooks/",
        ),
        (
            "gitlab",
            "gl",
            "https://gitlab.com/grp/sub/app.git",
            "/gitlab/api/v4/projects/grp%2Fsub%2Fapp/hooks/",
        ),
        (
            "bitbucket",
            "bb",
            "https://bitbucket.org/team/app.git",
            "/bitbucket/2.0/repositories/team/app/hooks/",
        ),
    ] {
        let r = api
            .call("POST", "/api/v1/projects/demo/services", Some(&alice),
                Some(json!({"name": name, "source": {"url": url, "branch": "main", "vendor": v}, "autodeploy": true})))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let hook = api
            .call(
                "GET",
                &format!("/api/v1/projects/demo/services/{name}/webhook"),
                Some(&alice),
                None,
            )
            .await;
        let (hook_url, secret) = (
            hook.body["url"].as_str().unwrap().to_owned(),
            hook.body["secret"].as_str().unwrap().to_owned(),
        );
        let mut created = None;
        for _ in 0..100 {
            created = seen
                .lock()
                .unwrap()
                .hooks
                .iter()
                .find(|(k, _)| k.starts_with(hook_prefix))
                .map(|(k, b)| (k.clone(), b.clone()));
            if created.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (_, body) = created.unwrap_or_else(|| panic!("no webhook created on {v}"));
        let text = body.to_string();
        assert!(text.contains(&hook_url), "{text}");
        assert!(text.contains(&secret), "{text}");
        // The vendor saw the hook created; the controller records that
        // right after the vendor's answer: wait for the record.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let hook = api
                .call(
                    "GET",
                    &format!("/api/v1/projects/demo/services/{name}/webhook"),
                    Some(&alice),
                    None,
                )
                .await;
            if hook.body["vendor_hook"] == true {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "created on {v} but not recorded: {}",
                hook.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if v == "gitlab" {
            api.call(
                "PATCH",
                "/api/v1/projects/demo/services/gl",
                Some(&alice),
                Some(json!({"autodeploy": false})),
            )
            .await;
        } else {
            api.call(
                "DELETE",
                &format!("/api/v1/projects/demo/services/{name}"),
                Some(&alice),
                None,
            )
            .await;
        }
        let mut gone = false;
        for _ in 0..100 {
            if !seen
                .lock()
                .unwrap()
                .hooks
                .keys()
                .any(|k| k.starts_with(hook_prefix))
            {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(gone, "the {v} webhook was not removed");
    }

    // Unlinking forgets the account.
    let r = api
        .call("DELETE", "/api/v1/vendors/gitlab", Some(&alice), None)
        .await;
    assert_eq!(r.status, 204);
    let r = api
        .call("DELETE", "/api/v1/vendors/gitlab", Some(&alice), None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        api.call("GET", "/api/v1/vendors", Some(&alice), None)
            .await
            .body["total"],
        2
    );
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.test"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A plain git URL (no vendor, no webhook) with `--poll-interval`: the
/// first look records the head, a new head queues a build of it.
async fn polling_builds_when_the_branch_moves(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let served = dir.path().join("served");
    let bare = served.join("app.git");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&served).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(
        dir.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    let commit = |text: &str| {
        std::fs::write(work.join("index.html"), text).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", text]);
        git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
        git(&bare, &["update-server-info"]);
        git(&work, &["rev-parse", "HEAD"])
    };
    commit("one");
    // A dumb HTTP git server: the bare repository's files.
    let (addr, server) =
        warp::serve(warp::fs::dir(served.clone())).bind_ephemeral(([127, 0, 0, 1], 0));
    tokio::spawn(server);
    let api = start_with(backend, |c| {
        c.vendors.poll_interval = Some(Duration::from_secs(1));
    })
    .await;
    let alice = api.user("alice").await;
    api.call(
        "POST",
        "/api/v1/projects",
        Some(&alice),
        Some(json!({"name": "demo"})),
    )
    .await;
    let url = format!("http://{addr}/app.git");
    let r = api
        .call(
            "POST",
            "/api/v1/projects/demo/services",
            Some(&alice),
            Some(json!({"name": "polled", "autodeploy": true, "source": {"url": url, "branch": "main"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sid = r.body["id"].as_str().unwrap().to_owned();
    // The first look records the head and builds nothing.
    let key = lb_model::keys::Keys::default().hook(&sid);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let record = api.store.get(&key).await.unwrap();
        let head = record
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .and_then(|v| v["polled_head"].as_str().map(str::to_owned));
        if head.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the branch head was never polled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(builds(&api, &alice, "polled").await.is_empty());
    let second = commit("two");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = builds(&api, &alice, "polled").await;
        if let Some(build) = list.first() {
            assert_eq!(build["commit"], second.as_str(), "{build}");
            assert_eq!(list.len(), 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no build after the branch moved"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing more while it stays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(builds(&api, &alice, "polled").await.len(), 1);
}
