//! The web UI's server side over real HTTP: pages behind the session, the
//! session cookies, CSRF on every state change, same-origin websockets,
//! static files and the browser libraries' directory. (The pages themselves
//! run in a real browser in `tests/ui.rs` of the `lb` package.)

mod common;

use common::{start_with, Backend};
use futures::StreamExt;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `Set-Cookie` header setting `name`.
fn set_cookie<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name}: {headers:?}"))
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

#[tokio::test]
async fn sessions_need_the_csrf_token_to_change_anything() {
    let vendor = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(vendor.path().join("chart.js")).unwrap();
    std::fs::write(vendor.path().join("chart.js/chart.min.js"), "/* chart */").unwrap();
    let dir = vendor.path().to_owned();
    let api = start_with(Backend::Embedded, move |c| c.ui_vendor_dir = dir).await;
    let http = client();
    let url = |p: &str| format!("{}{p}", api.base);
    let creds = json!({"username": "carol", "password": "password-1"});

    // Pages need a session: back to the page after logging in.
    let r = http.get(url("/projects")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=/projects");
    let r = http.get(url("/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));

    // Signup starts a session; a login from another site is refused.
    let r = http
        .post(url("/ui/signup"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let session = set_cookie(r.headers(), "lb_session").to_owned();
    let csrf = set_cookie(r.headers(), "lb_csrf").to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(!csrf.contains("HttpOnly") && csrf.contains("SameSite=Strict"));
    let (session, csrf) = (cookie_value(&session), cookie_value(&csrf));
    let cookie = format!("lb_session={session}; lb_csrf={csrf}");
    let r = http
        .post(url("/ui/login"))
        .header("origin", "http://evil.test")
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(url("/ui/login"))
        .json(&json!({"username": "carol", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());

    // The page is rendered for the session, with the CSRF token and never the
    // session token.
    let r = http
        .get(url("/projects"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!("content=\"{csrf}\"")), "{html}");
    assert!(html.contains("carol"));
    assert!(!html.contains(&session));

    // Reads with the cookie; writes only with the session's CSRF token.
    let get = http
        .get(url("/api/v1/projects"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    let post = |headers: Vec<(&'static str, String)>, name: &'static str| {
        let mut req = http
            .post(url("/api/v1/projects"))
            .header("cookie", &cookie)
            .json(&json!({"name": name}));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    assert_eq!(post(vec![], "a").await.unwrap().status(), 403);
    let wrong = vec![("x-csrf-token", "0".repeat(32))];
    assert_eq!(post(wrong, "a").await.unwrap().status(), 403);
    let other_site = vec![
        ("x-csrf-token", csrf.clone()),
        ("origin", "http://evil.test".to_owned()),
    ];
    assert_eq!(post(other_site, "a").await.unwrap().status(), 403);
    let r = post(vec![("x-csrf-token", csrf.clone())], "a")
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["name"], "a");
    // Another session's token does not fit this one.
    let other = lb_api::session::csrf_token("another session");
    assert_eq!(
        post(vec![("x-csrf-token", other)], "b")
            .await
            .unwrap()
            .status(),
        403
    );

    // Bearer tokens are unaffected by the cookies and need no CSRF token.
    let login: Value = http
        .post(url("/api/v1/auth/login"))
        .json(&creds)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let r = http
        .post(url("/api/v1/projects"))
        .bearer_auth(token)
        .json(&json!({"name": "c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Websockets with the cookie only from this origin.
    let ws_url = format!("{}/api/v1/events", api.base.replace("http://", "ws://"));
    let host = api.base.trim_start_matches("http://").to_owned();
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut()
        .insert("origin", "http://evil.test".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut()
        .insert("origin", format!("http://{host}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("a snapshot within 10 s")
        .unwrap()
        .unwrap();
    let snapshot: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(snapshot["type"], "snapshot");

    // Scripts and styles; the browser libraries from their directory only.
    let r = http.get(url("/ui/static/lb.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(
        http.get(url("/ui/static/nope.js"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = http
        .get(url("/vendor/chart.js/chart.min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "/* chart */");
    assert_eq!(
        http.get(url("/vendor/../../etc/passwd"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Logout needs the CSRF token too, and clears both cookies.
    let r = http
        .post(url("/ui/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(url("/ui/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(set_cookie(r.headers(), "lb_session").contains("Max-Age=0"));
    assert!(set_cookie(r.headers(), "lb_csrf").contains("Max-Age=0"));
}
