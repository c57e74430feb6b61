//! Push to deploy, end to end: a real `lb up` links a (fake) GitHub
//! account over OAuth, creates the push webhook on it, clones a private
//! repository from a real git HTTP server that requires the linked token,
//! and a signed push delivery builds the pushed commit and rolls it out to
//! running replicas. The token never lands in the store file or a log.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use warp::Filter;

const LB: &str = env!("CARGO_BIN_EXE_lb");
const TOKEN: &str = "gho_private_clone_token";

struct Up {
    child: Child,
    url: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::zombie_processes)]
fn start(data: &Path, fake: &str) -> Up {
    let mut child = Command::new(LB)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--build-timeout",
            "120s",
        ])
        .env_remove("LB_ETCD")
        .env_remove("LB_DATA_DIR")
        .env_remove("LB_LISTEN")
        .env("LB_REGISTRY_LISTEN", "127.0.0.1:0")
        // ... and each ingress.
        .env("LB_HTTP_LISTEN", "127.0.0.1:0")
        .env("LB_ADMIN_PASSWORD", "admin-password")
        .env("LB_GITHUB_CLIENT_ID", "client-id")
        .env("LB_GITHUB_CLIENT_SECRET", "client-secret")
        .env("LB_GITHUB_URL", fake)
        .env("LB_GITHUB_API_URL", format!("{fake}/api/v3"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lb up");
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("lb up printed no URL within 30 s");
        if let Some(rest) = line.strip_prefix("lb is up: ") {
            let url = rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_owned();
            return Up {
                child,
                url,
                stderr: Some(stderr),
            };
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
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

#[derive(Default)]
struct Fake {
    /// Webhooks created: (url, secret).
    hooks: Vec<(String, String)>,
    /// Git requests refused for want of the token.
    refused: usize,
    /// Git requests served with it.
    served: usize,
}

/// One server: a private git repository over dumb HTTP
/// (<https://git-scm.com/docs/http-protocol#_discovering_references>) that
/// answers 401 without `Authorization: Basic base64(x-access-token:TOKEN)`
/// (how GitHub takes a token over HTTPS:
/// <https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/authenticating-as-a-github-app-installation#about-authentication-as-a-github-app-installation>),
/// and a fake GitHub answering the calls lb makes: the OAuth token exchange
/// (<https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps#2-users-are-redirected-back-to-your-site-by-github>),
/// `GET /user` (<https://docs.github.com/en/rest/users/users#get-the-authenticated-user>),
/// and webhook creation (<https://docs.github.com/en/rest/repos/webhooks#create-a-repository-webhook>).
async fn serve(served: std::path::PathBuf, fake: Arc<Mutex<Fake>>) -> String {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"))
    );
    let reply = |status: u16, body: Value| {
        warp::http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
            .unwrap()
    };
    let f = fake.clone();
    let git_files = warp::path("acme")
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::path::tail())
        .map(move |auth: Option<String>, tail: warp::path::Tail| {
            if auth.as_deref() != Some(expected.as_str()) {
                f.lock().unwrap().refused += 1;
                return warp::http::Response::builder()
                    .status(401)
                    .header("www-authenticate", "Basic realm=\"git\"")
                    .body(Vec::new())
                    .unwrap();
            }
            let path = served.join(tail.as_str());
            match (tail.as_str().contains(".."), std::fs::read(&path)) {
                (false, Ok(bytes)) => {
                    f.lock().unwrap().served += 1;
                    warp::http::Response::builder()
                        .status(200)
                        .body(bytes)
                        .unwrap()
                }
                _ => warp::http::Response::builder()
                    .status(404)
                    .body(Vec::new())
                    .unwrap(),
            }
        });
    let token = warp::path!("login" / "oauth" / "access_token")
        .and(warp::post())
        .and(warp::body::form())
        .map(move |form: std::collections::HashMap<String, String>| {
            if form.get("code").map(String::as_str) == Some("the-code") {
                reply(200, json!({"access_token": TOKEN, "token_type": "bearer", "scope": "repo,admin:repo_hook"}))
            } else {
                reply(400, json!({"error": "bad_verification_code"}))
            }
        });
    let bearer = format!("Bearer {TOKEN}");
    let b = bearer.clone();
    let user = warp::path!("api" / "v3" / "user")
        .and(warp::header::<String>("authorization"))
        .map(move |auth: String| {
            if auth == b {
                reply(200, json!({"id": 1, "login": "octo"}))
            } else {
                reply(401, json!({"message": "Bad credentials"}))
            }
        });
    let f = fake.clone();
    let hooks = warp::path!("api" / "v3" / "repos" / "acme" / "web.git" / "hooks")
        .or(warp::path!(
            "api" / "v3" / "repos" / "acme" / "web" / "hooks"
        ))
        .unify()
        .and(warp::post())
        .and(warp::header::<String>("authorization"))
        .and(warp::body::json())
        .map(move |auth: String, body: Value| {
            if auth != bearer {
                return reply(401, json!({"message": "Bad credentials"}));
            }
            let url = body["config"]["url"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let secret = body["config"]["secret"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            f.lock().unwrap().hooks.push((url, secret));
            reply(201, json!({"id": 1}))
        });
    let (addr, server) =
        warp::serve(git_files.or(token).or(user).or(hooks)).bind_ephemeral(([127, 0, 0, 1], 0));
    tokio::spawn(server);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_builds_a_private_repository_and_deploys_it() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let served = dir.path().join("served");
    let bare = served.join("web.git");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&served).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(
        dir.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    let commit = |text: &str| {
        let dockerfile = format!(
            "FROM {image}\nCOPY index.html /www/index.html\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
        );
        std::fs::write(work.join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(work.join("index.html"), text).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", text.trim()]);
        git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
        git(&bare, &["update-server-info"]);
        git(&work, &["rev-parse", "HEAD"])
    };
    let first = commit("version one\n");

    let fake = Arc::new(Mutex::new(Fake::default()));
    let fake_url = serve(served.clone(), fake.clone()).await;
    let data = dir.path().join("data");
    let up = start(&data, &fake_url);
    let api = format!("{}/api/v1", up.url);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let creds = json!({"username": "dev", "password": "password-1"});
    client
        .post(format!("{api}/auth/signup"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    let login: Value = client
        .post(format!("{api}/auth/login"))
        .json(&creds)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let call = |method: &str, path: &str, body: Value| {
        let mut req = client
            .request(method.parse().unwrap(), format!("{api}{path}"))
            .bearer_auth(&token);
        if !body.is_null() {
            req = req.json(&body);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // Link GitHub: connect, the vendor sends the browser back with a code.
    let resp = client
        .get(format!("{api}/vendors/github/connect"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let location = reqwest::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let state = location
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let resp = client
        .get(format!(
            "{api}/vendors/github/callback?code=the-code&state={state}"
        ))
        .header("cookie", format!("lb_oauth_state={state}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);

    assert_eq!(
        call("POST", "/projects", json!({"name": "demo"})).await.0,
        201
    );
    let repo_url = format!("{fake_url}/acme/web.git");
    // Without the vendor (no token), the private repository cannot be cloned.
    let (status, body) = call(
        "POST",
        "/projects/demo/services",
        json!({"name": "anon", "memory": 16,
        "source": {"url": repo_url, "branch": "main"}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    call("POST", "/projects/demo/services/anon/builds", json!({})).await;
    let wait_build = |service: &'static str, n: u64| {
        let call = &call;
        async move {
            let deadline = Instant::now() + Duration::from_secs(150);
            loop {
                let (_, build) = call(
                    "GET",
                    &format!("/projects/demo/services/{service}/builds/{n}"),
                    Value::Null,
                )
                .await;
                if ["succeeded", "failed", "canceled"]
                    .contains(&build["status"].as_str().unwrap_or(""))
                {
                    return build;
                }
                assert!(
                    Instant::now() < deadline,
                    "build {n} of {service} did not end: {build}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    let build = wait_build("anon", 1).await;
    assert_eq!(build["status"], "failed", "{build}");
    assert!(
        build["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot clone"),
        "{build}"
    );
    assert!(fake.lock().unwrap().refused > 0);

    // With the linked account and autodeploy: lb creates the webhook.
    let (status, body) = call(
        "POST",
        "/projects/demo/services",
        json!({"name": "site", "memory": 16,
        "ports": [{"container": 8080}], "autodeploy": true,
        "source": {"url": repo_url, "branch": "main", "vendor": "github"}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (hook_url, secret) = loop {
        if let Some(h) = fake.lock().unwrap().hooks.first().cloned() {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "no webhook created on the vendor"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (_, shown) = call("GET", "/projects/demo/services/site/webhook", Value::Null).await;
    assert_eq!(
        (shown["url"].as_str(), shown["secret"].as_str()),
        (Some(hook_url.as_str()), Some(secret.as_str()))
    );

    // A push, delivered as GitHub signs it: build, deploy, serve.
    let deliver = |sha: String, id: &'static str| {
        let body = serde_json::to_vec(&json!({"ref": "refs/heads/main", "after": sha,
            "repository": {"full_name": "acme/web", "default_branch": "main"}}))
        .unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&body);
        let sig: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let req = client
            .post(&hook_url)
            .header("x-github-event", "push")
            .header("x-github-delivery", id)
            .header("x-hub-signature-256", format!("sha256={sig}"))
            .body(body);
        async move {
            let resp = req.send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let wait_serving = |text: &'static str| {
        let call = &call;
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let (_, list) =
                    call("GET", "/projects/demo/services/site/replicas", Value::Null).await;
                let items = list["items"].as_array().cloned().unwrap_or_default();
                for r in items.iter().filter(|r| r["state"] == "running") {
                    if let Some(host) = r["ports"][0]["host"].as_u64() {
                        if let Ok(resp) =
                            reqwest::get(format!("http://127.0.0.1:{host}/index.html")).await
                        {
                            if resp.text().await.unwrap_or_default() == text && items.len() == 1 {
                                return items[0]["node"].as_str().unwrap_or_default().to_owned();
                            }
                        }
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "replicas do not serve {text:?}: {list}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    let (status, reply) = deliver(first.clone(), "d-1").await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["build"], 1, "{reply}");
    let build = wait_build("site", 1).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(build["commit"], first.as_str());
    // Asked for by the webhook, not by a user.
    assert_eq!(build["by"], "webhook (github push)", "{build}");
    wait_serving("version one\n").await;
    // Its deploy names the build, the commit and the webhook, and rolls out.
    let deadline = Instant::now() + Duration::from_secs(60);
    let cause = format!("build #1 (commit {})", &first[..7]);
    let deploy = loop {
        let (_, list) = call("GET", "/projects/demo/services/site/deploys", Value::Null).await;
        let found = list["items"]
            .as_array()
            .and_then(|l| l.iter().find(|d| d["cause"] == cause.as_str()).cloned());
        if let Some(d) = found.filter(|d| d["outcome"] != "in_progress") {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "no settled deploy {cause:?} within 60 s: {list:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        (&deploy["by"], &deploy["outcome"]),
        (&json!("webhook (github push)"), &json!("rolled_out")),
        "{deploy:#}"
    );

    let second = commit("version two\n");
    let (status, reply) = deliver(second.clone(), "d-2").await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(wait_build("site", 2).await["status"], "succeeded");
    let node = wait_serving("version two\n").await;
    assert_eq!(deliver(second, "d-2").await.0, 409, "a replayed delivery");

    // The token is nowhere on disk or in a log.
    let logs = client
        .get(format!("{api}/projects/demo/services/site/builds/2/logs"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        logs.contains("cloning with the linked github account"),
        "{logs}"
    );
    assert!(!logs.contains(TOKEN));
    let mut up = up;
    let _ = up.child.kill();
    let _ = up.child.wait();
    let stderr = up.stderr.take().unwrap().join().unwrap();
    assert!(!stderr.contains(TOKEN), "the token is in lb's log");
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token is in {}",
            entry.display()
        );
    }
    let ids = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=lb.node={node}")])
        .output()
        .unwrap();
    for id in String::from_utf8_lossy(&ids.stdout).lines() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
