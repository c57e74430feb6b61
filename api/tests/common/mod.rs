//! A running API server for tests: bound to a free loopback port, on the
//! embedded store in a temp dir or on a real etcd, driven over real HTTP.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use lb_api::server::Signup;
use lb_api::{Config, Server};
use lb_store::embedded::EmbeddedStore;
use lb_store::etcd::EtcdStore;
use lb_store::Shared;
use lb_testing::EtcdServer;
use reqwest::Method;
use serde_json::{json, Value};

/// What keeps the backend alive.
pub enum Guard {
    Dir(tempfile::TempDir),
    Etcd(EtcdServer),
}

/// A running server.
pub struct Api {
    pub base: String,
    pub store: Shared,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _guard: Guard,
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The backend of a test.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Embedded,
    Etcd,
}

pub async fn start(backend: Backend) -> Api {
    start_with(backend, |_| {}).await
}

pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Api {
    let (store, guard): (Shared, Guard) = match backend {
        Backend::Embedded => {
            let dir = tempfile::tempdir().unwrap();
            (
                Arc::new(EmbeddedStore::open_dir(dir.path()).await.unwrap()),
                Guard::Dir(dir),
            )
        }
        Backend::Etcd => {
            let etcd = EtcdServer::start().await;
            (
                Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap()),
                Guard::Etcd(etcd),
            )
        }
    };
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), Signup::Open);
    configure(&mut config);
    lb_api::accounts::ensure_admin(store.as_ref(), &config.keys, Some("admin-password".into()))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::bind(&config, store.clone(), async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let base = format!("http://{}", server.addr());
    tokio::spawn(server.run());
    Api {
        base,
        store,
        client: reqwest::Client::new(),
        stop: Some(stop),
        _guard: guard,
    }
}

/// A response: status, JSON body (or Null), headers.
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Api {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> Reply {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .client
            .request(Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = tokio::time::timeout(Duration::from_secs(30), req.send())
            .await
            .expect("request timed out")
            .expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(status < 500, "{method} {path} answered {status}: {body}");
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Vec<u8>) -> Reply {
        let url = format!("{}{}", self.base, path);
        // Its own connection: a body refused early (413) closes the connection
        // it came on, which a pooled client might pick for the next request.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let mut req = client
            .request(Method::from_bytes(method.as_bytes()).unwrap(), url)
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
        }
    }

    /// Signs up (open signup) and logs in; answers the access token.
    pub async fn user(&self, name: &str) -> String {
        let created = self
            .call(
                "POST",
                "/api/v1/auth/signup",
                None,
                Some(json!({"username": name, "password": "password-1"})),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        self.login(name, "password-1").await
    }

    /// [`Api::user`], with a project `project` of theirs.
    pub async fn user_with_project(&self, name: &str, project: &str) -> String {
        let token = self.user(name).await;
        let created = self
            .call(
                "POST",
                "/api/v1/projects",
                Some(&token),
                Some(json!({ "name": project })),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        token
    }

    pub async fn login(&self, name: &str, password: &str) -> String {
        let r = self
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"username": name, "password": password})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
    }

    /// Makes sure the API has seen every store write made before: a write
    /// through the API returns only once its cache holds that revision, and
    /// the cache applies revisions in order.
    pub async fn sync(&self, token: &str) {
        let r = self
            .call(
                "POST",
                "/api/v1/tokens",
                Some(token),
                Some(json!({"name": "sync"})),
            )
            .await;
        let id = r.body["id"].as_str().expect("token id").to_owned();
        self.call("DELETE", &format!("/api/v1/tokens/{id}"), Some(token), None)
            .await;
    }

    pub async fn admin(&self) -> String {
        self.login("admin", "admin-password").await
    }
}

/// Generates one test per backend for each named async fn taking `Backend`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    tokio::time::timeout(std::time::Duration::from_secs(120), super::$name(super::common::Backend::Embedded))
                        .await
                        .expect("test hung for 120 s");
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    tokio::time::timeout(std::time::Duration::from_secs(120), super::$name(super::common::Backend::Etcd))
                        .await
                        .expect("test hung for 120 s");
                }
            )*
        }
    };
}
