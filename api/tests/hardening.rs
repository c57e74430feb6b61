//! Smaller holes found in review (issue 16, part 7), each shut against a
//! real server over HTTP: failed logins delay the guessing address, not
//! the account's owner (behind a trusted proxy too, the address taken from
//! X-Forwarded-For, which a peer that is no trusted proxy cannot name);
//! the login page follows only same-origin paths;
//! session cookies are `Secure` over HTTPS; nodes and metrics are the
//! admin's; credentials and dot segments in a source URL are refused.

mod common;

use std::time::Duration;

use common::{start, start_with, Api, Backend};
use serde_json::{json, Value};

/// A client whose connections come from `local` (any 127/8 address is this
/// machine's loopback), so the server sees another client address.
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(local.parse().unwrap()))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn login_from(
    api: &Api,
    client: &reqwest::Client,
    user: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(format!("{}/api/v1/auth/login", api.base))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_delay_the_guessing_address_not_the_owner() {
    let api = start_with(Backend::Embedded, |c| {
        c.login_limit_per_user = 3;
        c.login_limit_per_address = 50;
    })
    .await;
    api.user("bob").await;
    let attacker = client_from("127.0.0.1");
    let owner = client_from("127.0.0.2");
    for _ in 0..3 {
        let r = login_from(&api, &attacker, "bob", "wrong guess").await;
        assert_eq!(r.status(), 401);
    }
    // The guessing address is delayed, even with the right password...
    let r = login_from(&api, &attacker, "bob", "password-1").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=301).contains(&retry), "Retry-After {retry}");
    // ...while the owner, from their own address, logs in.
    let r = login_from(&api, &owner, "bob", "password-1").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // And the owner's own mistakes count for the owner's address only.
    let r = login_from(&api, &owner, "bob", "typo").await;
    assert_eq!(r.status(), 401);
    let r = login_from(&api, &owner, "bob", "password-1").await;
    assert_eq!(r.status(), 200);
}

/// The doors that take a password: the API's login, the web UI's login
/// and the registry's token endpoint (what `docker login` asks).
#[derive(Clone, Copy, Debug)]
enum Door {
    Api,
    Ui,
    Registry,
}

async fn login_through(
    door: Door,
    api: &Api,
    client: &reqwest::Client,
    forwarded_for: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    let request = match door {
        Door::Api => client
            .post(format!("{}/api/v1/auth/login", api.base))
            .json(&json!({"username": user, "password": password})),
        Door::Ui => client
            .post(format!("{}/ui/login", api.base))
            .json(&json!({"username": user, "password": password})),
        Door::Registry => client
            .get(format!("{}/api/v1/registry/token?service=lb", api.base))
            .basic_auth(user, Some(password)),
    };
    request
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .unwrap()
}

async fn login_forwarded(
    api: &Api,
    client: &reqwest::Client,
    forwarded_for: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    login_through(Door::Api, api, client, forwarded_for, user, password).await
}

/// Behind a reverse proxy (here: loopback, trusted by default) every
/// client arrives from the proxy's address; the limits key on the address
/// the proxy appended to X-Forwarded-For, so the guesser is delayed and the
/// owner, behind the same proxy, still logs in: through each door.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_address_is_delayed_not_the_owner() {
    for door in [Door::Api, Door::Ui, Door::Registry] {
        let api = start_with(Backend::Embedded, |c| {
            c.login_limit_per_user = 3;
            c.login_limit_per_address = 50;
        })
        .await;
        api.user("bob").await;
        let proxy = client_from("127.0.0.1");
        let (api, proxy) = (&api, &proxy);
        let login = move |forwarded: &'static str, password: &'static str| {
            login_through(door, api, proxy, forwarded, "bob", password)
        };
        for _ in 0..3 {
            let r = login("192.0.2.66", "wrong guess").await;
            assert_eq!(r.status(), 401, "{door:?}");
        }
        let r = login("192.0.2.66", "password-1").await;
        assert_eq!(r.status(), 429, "{door:?}");
        // The guesser putting the owner's address in its own header: the
        // proxy appends the real one, and the right-most untrusted entry
        // counts.
        let r = login("192.0.2.10, 192.0.2.66", "password-1").await;
        assert_eq!(r.status(), 429, "{door:?}");
        // The owner, through the same proxy (another chain of trusted hops
        // included), logs in.
        let r = login("192.0.2.10", "password-1").await;
        assert_eq!(r.status(), 200, "{door:?}: {}", r.text().await.unwrap());
        let r = login("192.0.2.10, 127.0.0.9", "password-1").await;
        assert_eq!(r.status(), 200, "{door:?}: {}", r.text().await.unwrap());
    }
}

/// A peer that is not a trusted proxy cannot leave its delay by naming
/// other addresses in X-Forwarded-For. Only 127.0.0.1 is trusted here, so
/// 127.0.0.2 is an untrusted peer on this machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_evade_the_delay_with_x_forwarded_for() {
    let api = start_with(Backend::Embedded, |c| {
        c.login_limit_per_user = 3;
        c.login_limit_per_address = 50;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    api.user("bob").await;
    let attacker = client_from("127.0.0.2");
    for i in 0..3 {
        let r = login_forwarded(&api, &attacker, &format!("192.0.2.{i}"), "bob", "wrong").await;
        assert_eq!(r.status(), 401);
    }
    for spoofed in ["192.0.2.200", "127.0.0.1", "192.0.2.10, 192.0.2.11"] {
        let r = login_forwarded(&api, &attacker, spoofed, "bob", "password-1").await;
        assert_eq!(r.status(), 429, "X-Forwarded-For: {spoofed}");
    }
    // The trusted proxy's clients are still told apart, and the owner
    // logs in through it.
    let proxy = client_from("127.0.0.1");
    let r = login_forwarded(&api, &proxy, "192.0.2.10", "bob", "password-1").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_page_follows_only_same_origin_paths() {
    let api = start(Backend::Embedded).await;
    let client = client_from("127.0.0.1");
    let next_of = |html: &str| {
        let at = html
            .find("data-next=\"")
            .expect("the login form names next")
            + 11;
        // As the browser reads the attribute: tera escapes HTML.
        html[at..]
            .split('"')
            .next()
            .unwrap()
            .replace("&#x2F;", "/")
            .replace("&#x27;", "'")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    for (next, expect) in [
        ("%2Fprojects%2Fdemo", "/projects/demo"),
        ("%2F%2Fevil.com", "/projects"),
        ("%2F%2Fevil.com%2Fprojects", "/projects"),
        ("%2F%5Cevil.com", "/projects"),
        ("%2F%09%2Fevil.com", "/projects"),
        ("https%3A%2F%2Fevil.com%2F", "/projects"),
        ("javascript%3Aalert(1)", "/projects"),
    ] {
        let r = client
            .get(format!("{}/login?next={next}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        assert_eq!(next_of(&html), expect, "next={next}");
    }
    // With a session the page redirects at once: to a path of this site.
    let token = api.user("carol").await;
    for (next, expect) in [
        ("%2F%2Fevil.com", "/projects"),
        ("%2F%5Cevil.com", "/projects"),
        ("%2Faccount", "/account"),
    ] {
        let r = client
            .get(format!("{}/login?next={next}", api.base))
            .header("cookie", format!("lb_session={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], expect, "next={next}");
    }
}

async fn session_cookies(api: &Api, headers: &[(&str, &str)]) -> Vec<String> {
    let mut req = client_from("127.0.0.1")
        .post(format!("{}/ui/login", api.base))
        .json(&json!({"username": "admin", "password": "admin-password"}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    cookies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookies_are_secure_over_https() {
    let api = start(Backend::Embedded).await;
    // Plain HTTP (a test, a loopback setup): no Secure, or the browser
    // would never send the cookie back.
    for cookie in session_cookies(&api, &[]).await {
        assert!(!cookie.contains("Secure"), "{cookie}");
    }
    // Behind lb's ingress (or any proxy) terminating TLS.
    for cookie in session_cookies(&api, &[("x-forwarded-proto", "https")]).await {
        assert!(cookie.contains("; Secure"), "{cookie}");
        assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    }
    // A public URL of https:// says so whatever the request carries.
    let api = start_with(Backend::Embedded, |c| {
        c.vendors.public_url = Some("https://lb.example.test".into());
    })
    .await;
    for cookie in session_cookies(&api, &[]).await {
        assert!(cookie.contains("; Secure"), "{cookie}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_metrics_are_the_admins() {
    let api = start(Backend::Embedded).await;
    let user = api.user("dave").await;
    let admin = api.admin().await;
    for path in ["/api/v1/nodes", "/api/v1/nodes/node-1", "/metrics"] {
        let r = api.call("GET", path, Some(&user), None).await;
        assert_eq!(r.status, 403, "GET {path} as a user: {}", r.body);
        let r = api.call("GET", path, None, None).await;
        assert_eq!(r.status, 401, "GET {path} anonymously: {}", r.body);
    }
    let r = api.call("GET", "/api/v1/nodes", Some(&admin), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let metrics = api
        .client
        .get(format!("{}/metrics", api.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("lb_http_requests_total"));
    // The web UI's nodes page too.
    let r = client_from("127.0.0.1")
        .get(format!("{}/nodes", api.base))
        .header("cookie", format!("lb_session={user}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client_from("127.0.0.1")
        .get(format!("{}/projects", api.base))
        .header("cookie", format!("lb_session={user}"))
        .send()
        .await
        .unwrap();
    assert!(!r.text().await.unwrap().contains("href=\"/nodes\""));
    let r = client_from("127.0.0.1")
        .get(format!("{}/nodes", api.base))
        .header("cookie", format!("lb_session={admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_urls_with_credentials_or_dot_segments_are_refused() {
    let api = start(Backend::Embedded).await;
    let user = api.user("erin").await;
    let r = api
        .call(
            "POST",
            "/api/v1/projects",
            Some(&user),
            Some(json!({"name": "demo"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let services = "/api/v1/projects/demo/services";
    let create = |url: &str| {
        let body = json!({"name": "web", "source": {"url": url, "branch": "main"}});
        let (api, user) = (&api, &user);
        async move { api.call("POST", services, Some(user), Some(body)).await }
    };
    for (url, secret) in [
        ("https://alice:hunter2@github.com/acme/web.git", "hunter2"),
        (
            "https://ghp_0123456789abcdef@github.com/acme/web.git",
            "ghp_0123456789abcdef",
        ),
        ("ssh://git:hunter2@git.example.test/acme/web.git", "hunter2"),
    ] {
        let r = create(url).await;
        assert_eq!(r.status, 400, "{url}: {}", r.body);
        assert_eq!(r.body["error"]["field"], "source.url", "{}", r.body);
        assert!(!r.body.to_string().contains(secret), "{}", r.body);
    }
    // A path that leaves the allowed owner is refused before any allowlist
    // compares it.
    let r = api
        .call(
            "PUT",
            "/api/v1/admin/allowlist",
            Some(&api.admin().await),
            Some(json!({"owners": ["github.com/acme"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = create("https://github.com/acme/../evil/web.git").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["field"], "source.url", "{}", r.body);
    // Without credentials the same source is fine.
    let r = create("https://github.com/acme/web.git").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let shown: Value = api
        .call("GET", &format!("{services}/web"), Some(&user), None)
        .await
        .body;
    assert_eq!(
        shown["spec"]["source"]["url"], "https://github.com/acme/web.git",
        "{shown}"
    );
}
