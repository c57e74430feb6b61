//! The REST API over real HTTP, on the embedded store and on a real etcd.

mod common;

use std::time::Duration;

use common::{start, start_with, Api, Backend};
use lb_model::keys::Keys;
use lb_store::{StoreExt, Txn};
use serde_json::{json, Value};

both_backends!(
    accounts_and_tokens,
    closed_signup_needs_an_admin,
    failed_logins_are_limited,
    projects_crud_with_revisions,
    concurrent_creates_of_one_name,
    services_crud_and_actions,
    deletes_cascade_without_orphans,
    bad_input_is_a_4xx,
    isolation_matrix,
    openapi_lists_every_route_and_metrics_count,
    ports_written_as_strings_read_back_as_objects,
);

async fn accounts_and_tokens(backend: Backend) {
    let api = start(backend).await;
    let r = api
        .call(
            "POST",
            "/api/v1/auth/signup",
            None,
            Some(json!({"username": "alice", "password": "password-1"})),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["role"], "user");
    assert!(
        !r.body.to_string().contains("password"),
        "no hash in {}",
        r.body
    );
    let r = api
        .call(
            "POST",
            "/api/v1/auth/signup",
            None,
            Some(json!({"username": "alice", "password": "password-2"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (409, Some("username"))
    );
    let r = api
        .call(
            "POST",
            "/api/v1/auth/signup",
            None,
            Some(json!({"username": "bob", "password": "short"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (400, Some("password"))
    );
    let r = api
        .call(
            "POST",
            "/api/v1/auth/signup",
            None,
            Some(json!({"username": "Bob!", "password": "password-1"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (400, Some("username"))
    );

    let token = api.login("alice", "password-1").await;
    let r = api
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "alice", "password": "wrong-one"})),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = api
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "nobody", "password": "wrong-one"})),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["message"], "invalid user name or password");

    let me = api.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(
        (me.status, me.body["username"].as_str()),
        (200, Some("alice"))
    );
    assert_eq!(api.call("GET", "/api/v1/me", None, None).await.status, 401);
    assert_eq!(
        api.call("GET", "/api/v1/me", Some("garbage"), None)
            .await
            .status,
        401
    );
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(
        api.call("GET", "/api/v1/me", Some(&forged), None)
            .await
            .status,
        401
    );

    // API tokens: shown once, listed without secret, usable, revocable.
    let created = api
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&token),
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(created.status, 201);
    let api_token = created.body["token"].as_str().unwrap().to_owned();
    let list = api.call("GET", "/api/v1/tokens", Some(&token), None).await;
    assert_eq!(list.body["total"], 1);
    assert!(list.body["items"][0].get("token").is_none());
    assert!(!list
        .body
        .to_string()
        .contains(&api_token[api_token.len() - 20..]));
    let me = api.call("GET", "/api/v1/me", Some(&api_token), None).await;
    assert_eq!(me.body["username"], "alice");
    // Stored hashed: the secret is nowhere in the store.
    let (all, _) = api.store.list("/").await.unwrap();
    let secret = api_token.rsplit('_').next().unwrap();
    assert!(all
        .iter()
        .all(|kv| !String::from_utf8_lossy(&kv.value).contains(secret)));
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(
        api.call(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&token),
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(
        api.call("GET", "/api/v1/me", Some(&api_token), None)
            .await
            .status,
        401
    );
    assert_eq!(
        api.call(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&token),
            None
        )
        .await
        .status,
        404
    );

    // Access tokens expire.
    let short = start_with(backend, |c| c.token_ttl = Duration::from_secs(1)).await;
    let t = short.user("carol").await;
    assert_eq!(
        short.call("GET", "/api/v1/me", Some(&t), None).await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = short.call("GET", "/api/v1/me", Some(&t), None).await;
    assert_eq!(r.status, 401);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

async fn closed_signup_needs_an_admin(backend: Backend) {
    let api = start_with(backend, |c| c.signup = lb_api::server::Signup::Closed).await;
    let body = json!({"username": "dave", "password": "password-1"});
    assert_eq!(
        api.call("POST", "/api/v1/auth/signup", None, Some(body.clone()))
            .await
            .status,
        403
    );
    let admin = api.admin().await;
    assert_eq!(
        api.call("POST", "/api/v1/auth/signup", Some(&admin), Some(body))
            .await
            .status,
        201
    );
    api.login("dave", "password-1").await;
}

async fn failed_logins_are_limited(backend: Backend) {
    let api = start(backend).await;
    api.user("erin").await;
    let wrong = json!({"username": "erin", "password": "not-the-password"});
    for _ in 0..5 {
        assert_eq!(
            api.call("POST", "/api/v1/auth/login", None, Some(wrong.clone()))
                .await
                .status,
            401
        );
    }
    let r = api
        .call("POST", "/api/v1/auth/login", None, Some(wrong))
        .await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry));
    // Even the right password waits now.
    let right = json!({"username": "erin", "password": "password-1"});
    assert_eq!(
        api.call("POST", "/api/v1/auth/login", None, Some(right))
            .await
            .status,
        429
    );
    // Per address: many names from one client address are limited too.
    for i in 0..20 {
        let body = json!({"username": format!("ghost{i}"), "password": "whatever-123"});
        api.call("POST", "/api/v1/auth/login", None, Some(body))
            .await;
    }
    let r = api
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": "admin-password"})),
        )
        .await;
    assert_eq!(r.status, 429, "the address limit applies to every name");
}

async fn projects_crud_with_revisions(backend: Backend) {
    let api = start(backend).await;
    let t = api.user("alice").await;
    let r = api
        .call(
            "POST",
            "/api/v1/projects",
            Some(&t),
            Some(json!({"name": "demo", "description": "first"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let rev = r.body["revision"].as_i64().unwrap();
    assert_eq!(r.headers["etag"].to_str().unwrap(), format!("\"{rev}\""));
    for reference in ["demo", id.as_str()] {
        let r = api
            .call(
                "GET",
                &format!("/api/v1/projects/{reference}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!((r.status, r.body["id"].as_str()), (200, Some(id.as_str())));
    }
    // Pages in a stable (name) order.
    for name in ["p-e", "p-a", "p-d", "p-b", "p-c"] {
        assert_eq!(
            api.call(
                "POST",
                "/api/v1/projects",
                Some(&t),
                Some(json!({"name": name}))
            )
            .await
            .status,
            201
        );
    }
    let mut seen = Vec::new();
    for offset in [0, 2, 4] {
        let r = api
            .call(
                "GET",
                &format!("/api/v1/projects?limit=2&offset={offset}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(r.body["total"], 6);
        seen.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(seen, ["demo", "p-a", "p-b", "p-c", "p-d", "p-e"]);

    // If-Match: a stale revision loses, the current one wins.
    let patch = json!({"description": "second"});
    let stale = [("If-Match", format!("\"{}\"", rev - 1))];
    let r = api
        .call_with(
            "PATCH",
            "/api/v1/projects/demo",
            Some(&t),
            Some(patch.clone()),
            &stale,
        )
        .await;
    assert_eq!(r.status, 409);
    let current = [("If-Match", format!("\"{rev}\""))];
    let r = api
        .call_with(
            "PATCH",
            "/api/v1/projects/demo",
            Some(&t),
            Some(patch),
            &current,
        )
        .await;
    assert_eq!(
        (r.status, r.body["description"].as_str()),
        (200, Some("second"))
    );
    let rev2 = r.body["revision"].as_i64().unwrap();
    assert!(rev2 > rev);
    let r = api
        .call_with("DELETE", "/api/v1/projects/demo", Some(&t), None, &current)
        .await;
    assert_eq!(r.status, 409, "delete with a stale revision");

    // Rename with PUT: the old name is free, the new one taken.
    let r = api
        .call(
            "PUT",
            "/api/v1/projects/demo",
            Some(&t),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!((r.status, r.body["description"].as_str()), (200, Some("")));
    assert_eq!(
        api.call("GET", "/api/v1/projects/demo", Some(&t), None)
            .await
            .status,
        404
    );
    assert_eq!(
        api.call("GET", "/api/v1/projects/renamed", Some(&t), None)
            .await
            .status,
        200
    );
    let r = api
        .call(
            "PATCH",
            "/api/v1/projects/renamed",
            Some(&t),
            Some(json!({"name": "p-a"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (409, Some("name"))
    );
    let r = api
        .call(
            "PATCH",
            "/api/v1/projects/renamed",
            Some(&t),
            Some(json!({"name": "Bad Name"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (400, Some("name"))
    );
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/projects",
            Some(&t),
            Some(json!({"name": "demo"}))
        )
        .await
        .status,
        201
    );
    assert_eq!(
        api.call("DELETE", "/api/v1/projects/renamed", Some(&t), None)
            .await
            .status,
        204
    );
    assert_eq!(
        api.call("GET", &format!("/api/v1/projects/{id}"), Some(&t), None)
            .await
            .status,
        404
    );
}

async fn concurrent_creates_of_one_name(backend: Backend) {
    let api = std::sync::Arc::new(start(backend).await);
    let t = api.user("alice").await;
    let statuses = |path: &'static str, body: Value| {
        let api = api.clone();
        let t = t.clone();
        async move {
            let tasks: Vec<_> = (0..20)
                .map(|_| {
                    let api = api.clone();
                    let t = t.clone();
                    let body = body.clone();
                    tokio::spawn(async move {
                        api.call("POST", path, Some(&t), Some(body)).await.status
                    })
                })
                .collect();
            let mut out = Vec::new();
            for task in tasks {
                out.push(task.await.unwrap());
            }
            out.sort();
            out
        }
    };
    let projects = statuses("/api/v1/projects", json!({"name": "race"})).await;
    assert_eq!(
        projects.iter().filter(|s| **s == 201).count(),
        1,
        "{projects:?}"
    );
    assert_eq!(
        projects.iter().filter(|s| **s == 409).count(),
        19,
        "{projects:?}"
    );
    let services = statuses(
        "/api/v1/projects/race/services",
        json!({"name": "web", "image": "busybox"}),
    )
    .await;
    assert_eq!(
        services.iter().filter(|s| **s == 201).count(),
        1,
        "{services:?}"
    );
    assert_eq!(
        services.iter().filter(|s| **s == 409).count(),
        19,
        "{services:?}"
    );
    let list = api
        .call("GET", "/api/v1/projects/race/services", Some(&t), None)
        .await;
    assert_eq!(list.body["total"], 1);
}

async fn services_crud_and_actions(backend: Backend) {
    let api = start(backend).await;
    let t = api.user_with_project("alice", "demo").await;
    let spec = json!({"name": "web", "image": "busybox:1", "replicas": 2, "memory": 64, "cpu": 0.5,
        "ports": [{"container": 8080}], "env": {"A": "1"}});
    let r = api
        .call(
            "POST",
            "/api/v1/projects/demo/services",
            Some(&t),
            Some(spec),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    for field in [
        "id", "name", "revision", "created", "updated", "spec", "status",
    ] {
        assert!(r.body.get(field).is_some(), "{field} in {}", r.body);
    }
    assert_eq!(r.body["status"]["generation"], 1);
    let svc = "/api/v1/projects/demo/services/web";

    // Scaling does not need new containers; a new image does.
    let r = api
        .call("PATCH", svc, Some(&t), Some(json!({"replicas": 3})))
        .await;
    assert_eq!(
        (
            r.body["spec"]["replicas"].as_u64(),
            r.body["status"]["generation"].as_u64()
        ),
        (Some(3), Some(1))
    );
    let r = api
        .call(
            "PATCH",
            svc,
            Some(&t),
            Some(json!({"image": "busybox:2", "env": {"A": null, "B": "2"}})),
        )
        .await;
    assert_eq!(r.body["status"]["generation"], 2);
    assert_eq!(r.body["spec"]["env"], json!({"B": "2"}));
    let r = api
        .call(
            "POST",
            &format!("{svc}/scale"),
            Some(&t),
            Some(json!({"replicas": 5})),
        )
        .await;
    assert_eq!(r.body["spec"]["replicas"], 5);
    let r = api
        .call(
            "POST",
            &format!("{svc}/scale"),
            Some(&t),
            Some(json!({"replicas": 1001})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (400, Some("replicas"))
    );
    let r = api
        .call("POST", &format!("{svc}/pause"), Some(&t), None)
        .await;
    assert_eq!(
        (
            r.body["spec"]["state"].as_str(),
            r.body["status"]["replicas"]["desired"].as_u64()
        ),
        (Some("paused"), Some(0))
    );
    assert_eq!(r.body["spec"]["replicas"], 5, "pause keeps the count");
    let r = api
        .call("POST", &format!("{svc}/resume"), Some(&t), None)
        .await;
    assert_eq!(r.body["status"]["replicas"]["desired"], 5);
    let r = api
        .call("POST", &format!("{svc}/restart"), Some(&t), None)
        .await;
    assert_eq!(r.body["status"]["restart_generation"], 1);

    // PUT replaces the whole spec (defaults for what is left out).
    let r = api
        .call(
            "PUT",
            svc,
            Some(&t),
            Some(json!({"name": "web", "image": "busybox:3"})),
        )
        .await;
    assert_eq!(
        (
            r.body["spec"]["replicas"].as_u64(),
            r.body["spec"]["ports"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0))
    );

    // Rollback: only to a build that succeeded; the image is pinned by digest.
    let r = api
        .call(
            "POST",
            &format!("{svc}/rollback"),
            Some(&t),
            Some(json!({"build": 7})),
        )
        .await;
    assert_eq!(r.status, 404);
    let keys = Keys::default();
    let (pid, sid) = (
        r_id(&api, &t, "/api/v1/projects/demo").await,
        r_id(&api, &t, svc).await,
    );
    let digest = format!("sha256:{}", "ab".repeat(32));
    let build = json!({"number": 7, "status": "succeeded", "image": "127.0.0.1:5000/demo/web:7", "digest": digest,
        "message": "", "steps": [], "created": 1});
    api.store
        .put(&keys.build(&pid, &sid, 7), build.to_string().into_bytes())
        .await
        .unwrap();
    let failed =
        json!({"number": 8, "status": "failed", "message": "boom", "steps": [], "created": 1});
    api.store
        .put(&keys.build(&pid, &sid, 8), failed.to_string().into_bytes())
        .await
        .unwrap();
    // Build 8's log: chunks 0 and 1 dropped by the builder, 2 and 3 kept.
    for (seq, text) in [(2, "step 2\n"), (3, "step 3\n")] {
        api.store
            .put(&keys.build_log_chunk(&pid, &sid, 8, seq), text.into())
            .await
            .unwrap();
    }
    // Written beside the API: let its cache see them before reading.
    api.sync(&t).await;
    let log = api
        .client
        .get(format!("{}{svc}/builds/8/logs", api.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        log,
        format!("{}step 2\nstep 3\n", lb_model::BUILD_LOG_DROPPED)
    );
    let r = api
        .call(
            "POST",
            &format!("{svc}/rollback"),
            Some(&t),
            Some(json!({"build": 8})),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = api
        .call(
            "POST",
            &format!("{svc}/rollback"),
            Some(&t),
            Some(json!({"build": 7})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["spec"]["image"],
        format!("127.0.0.1:5000/demo/web@{digest}")
    );

    // Replicas: placements and statuses as the scheduler and nodes write them.
    let placement = json!({"id": "R1", "project": pid, "service": sid, "node": "N1", "image": "busybox:3",
        "generation": 3, "created": 1});
    api.store
        .put(
            &keys.replica(&pid, &sid, "R1"),
            placement.to_string().into_bytes(),
        )
        .await
        .unwrap();
    let status = json!({"state": "running", "ports": [{"container": 8080, "host": 31001}], "restarts": 2, "updated": 1});
    api.store
        .put(
            &keys.replica_status(&pid, &sid, "R1"),
            status.to_string().into_bytes(),
        )
        .await
        .unwrap();
    let pending = json!({"id": "R2", "project": pid, "service": sid, "node": null, "image": "busybox:3",
        "generation": 3, "reason": "no node has 64 MiB free", "created": 1});
    api.store
        .put(
            &keys.replica(&pid, &sid, "R2"),
            pending.to_string().into_bytes(),
        )
        .await
        .unwrap();
    // Written beside the API: let its cache see them before reading.
    api.sync(&t).await;
    let r = api
        .call("GET", &format!("{svc}/replicas"), Some(&t), None)
        .await;
    assert_eq!(r.body["total"], 2);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(
        items[0],
        json!({"id": "R1", "node": "N1", "state": "running", "image": "busybox:3", "generation": 3,
        "ports": [{"container": 8080, "host": 31001}], "restarts": 2, "message": ""})
    );
    assert_eq!(
        (items[1]["state"].as_str(), items[1]["message"].as_str()),
        (Some("pending"), Some("no node has 64 MiB free"))
    );
    let r = api.call("GET", svc, Some(&t), None).await;
    assert_eq!(
        (
            r.body["status"]["replicas"]["running"].as_u64(),
            r.body["status"]["replicas"]["pending"].as_u64()
        ),
        (Some(1), Some(1))
    );

    // Rename keeps the id; the old name is gone.
    let r = api
        .call("PATCH", svc, Some(&t), Some(json!({"name": "api"})))
        .await;
    assert_eq!(r.body["id"], sid);
    assert_eq!(api.call("GET", svc, Some(&t), None).await.status, 404);
    assert_eq!(
        api.call(
            "GET",
            &format!("/api/v1/projects/demo/services/{sid}"),
            Some(&t),
            None
        )
        .await
        .status,
        200
    );
}

async fn r_id(api: &Api, token: &str, path: &str) -> String {
    api.call("GET", path, Some(token), None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn deletes_cascade_without_orphans(backend: Backend) {
    let api = start(backend).await;
    let t = api.user("alice").await;
    let keys = Keys::default();
    api.call(
        "POST",
        "/api/v1/projects",
        Some(&t),
        Some(json!({"name": "demo"})),
    )
    .await;
    for name in ["a", "b"] {
        api.call(
            "POST",
            "/api/v1/projects/demo/services",
            Some(&t),
            Some(json!({"name": name, "image": "x"})),
        )
        .await;
    }
    let pid = r_id(&api, &t, "/api/v1/projects/demo").await;
    let sid_a = r_id(&api, &t, "/api/v1/projects/demo/services/a").await;
    let sid_b = r_id(&api, &t, "/api/v1/projects/demo/services/b").await;
    for (sid, rid) in [(&sid_a, "RA"), (&sid_b, "RB")] {
        let placement = json!({"id": rid, "project": pid, "service": sid, "node": "N1", "image": "x", "generation": 1, "created": 1});
        let txn = Txn::new()
            .then(lb_store::Op::put(
                keys.replica(&pid, sid, rid),
                placement.to_string(),
            ))
            .then(lb_store::Op::put(
                keys.node_replica("N1", rid),
                placement.to_string(),
            ))
            .then(lb_store::Op::put(
                keys.build(&pid, sid, 1),
                json!({"number": 1, "status": "queued", "created": 1}).to_string(),
            ))
            .then(lb_store::Op::put(
                keys.build_log_chunk(&pid, sid, 1, 0),
                "cloning\n",
            ))
            .then(lb_store::Op::put(
                keys.build_log_chunk(&pid, sid, 1, 1),
                "building\n",
            ));
        api.store.txn(txn).await.unwrap();
    }
    api.store
        .put(&keys.node_replica("N1", "OTHER"), b"{}".to_vec())
        .await
        .unwrap();
    // Written beside the API: let its cache see them before reading.
    api.sync(&t).await;

    assert_eq!(
        api.call("DELETE", "/api/v1/projects/demo/services/a", Some(&t), None)
            .await
            .status,
        204
    );
    assert!(api
        .store
        .list(&keys.service_prefix(&pid, &sid_a))
        .await
        .unwrap()
        .0
        .is_empty());
    assert!(api
        .store
        .get(&keys.node_replica("N1", "RA"))
        .await
        .unwrap()
        .is_none());
    assert!(api
        .store
        .get(&keys.service_index(&pid, "a"))
        .await
        .unwrap()
        .is_none());
    assert!(api
        .store
        .get(&keys.node_replica("N1", "RB"))
        .await
        .unwrap()
        .is_some());

    assert_eq!(
        api.call("DELETE", "/api/v1/projects/demo", Some(&t), None)
            .await
            .status,
        204
    );
    assert!(api
        .store
        .list(&keys.project_prefix(&pid))
        .await
        .unwrap()
        .0
        .is_empty());
    assert!(api
        .store
        .list(&keys.service_index_prefix(&pid))
        .await
        .unwrap()
        .0
        .is_empty());
    assert!(api
        .store
        .list(&keys.project_index_all())
        .await
        .unwrap()
        .0
        .is_empty());
    assert!(api
        .store
        .get(&keys.node_replica("N1", "RB"))
        .await
        .unwrap()
        .is_none());
    assert!(
        api.store
            .get(&keys.node_replica("N1", "OTHER"))
            .await
            .unwrap()
            .is_some(),
        "only the project's keys go"
    );
    assert_eq!(
        api.call("GET", "/api/v1/projects/demo/services/b", Some(&t), None)
            .await
            .status,
        404
    );
}

async fn ports_written_as_strings_read_back_as_objects(backend: Backend) {
    let api = start(backend).await;
    let t = api.user_with_project("alice", "demo").await;
    let svcs = "/api/v1/projects/demo/services";
    let svc = "/api/v1/projects/demo/services/web";
    let r = api
        .call(
            "POST",
            svcs,
            Some(&t),
            Some(json!({"name": "web", "image": "busybox:1", "replicas": 0,
                "ports": ["18080:80/udp", "81"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let objects = json!([
        {"container": 80, "host": 18080, "protocol": "udp"},
        {"container": 81, "host": null, "protocol": "tcp"},
    ]);
    assert_eq!(r.body["spec"]["ports"], objects, "{}", r.body);
    let r = api.call("GET", svc, Some(&t), None).await;
    assert_eq!(r.body["spec"]["ports"], objects, "{}", r.body);

    // A merge patch and a replacement take either form.
    let r = api
        .call(
            "PATCH",
            svc,
            Some(&t),
            Some(json!({"ports": ["8080:80", {"container": 53, "protocol": "udp"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["spec"]["ports"],
        json!([
            {"container": 80, "host": 8080, "protocol": "tcp"},
            {"container": 53, "host": null, "protocol": "udp"},
        ])
    );
    let r = api
        .call(
            "PUT",
            svc,
            Some(&t),
            Some(
                json!({"name": "web", "image": "busybox:1", "replicas": 0, "ports": ["9000/udp"]}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["spec"]["ports"],
        json!([{"container": 9000, "host": null, "protocol": "udp"}])
    );

    // A bad string is the caller's fault, named with what is wrong.
    for (method, path, body, field, why) in [
        (
            "POST",
            svcs,
            json!({"name": "w", "image": "x", "ports": ["80", "80/sctp"]}),
            "ports[1]",
            "tcp or udp",
        ),
        (
            "POST",
            svcs,
            json!({"name": "w", "image": "x", "ports": ["70000"]}),
            "ports[0]",
            "1 to 65535",
        ),
        (
            "POST",
            svcs,
            json!({"name": "w", "image": "x", "ports": ["127.0.0.1:80:80"]}),
            "ports[0]",
            "host address",
        ),
        (
            "POST",
            svcs,
            json!({"name": "w", "image": "x", "ports": [80]}),
            "ports[0]",
            "HOST:CONTAINER",
        ),
        (
            "POST",
            svcs,
            json!({"name": "w", "image": "x", "ports": ["80", "80"]}),
            "ports[1].container",
            "twice",
        ),
        (
            "PATCH",
            svc,
            json!({"ports": [":80"]}),
            "ports[0]",
            "host port is missing",
        ),
    ] {
        let r = api.call(method, path, Some(&t), Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body} -> {}", r.body);
        assert_eq!(r.body["error"]["field"], field, "{body} -> {}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{body} -> {}", r.body);
    }
    let r = api.call("GET", svc, Some(&t), None).await;
    assert_eq!(
        r.body["spec"]["ports"],
        json!([{"container": 9000, "host": null, "protocol": "udp"}]),
        "unchanged by the refused patch"
    );
}

async fn bad_input_is_a_4xx(backend: Backend) {
    let api = start(backend).await;
    let t = api.user_with_project("alice", "demo").await;
    let svc = "/api/v1/projects/demo/services";
    let check = |status: u16, field: Option<&'static str>, body: Value| {
        let api = &api;
        let t = &t;
        async move {
            let r = api.call("POST", svc, Some(t), Some(body.clone())).await;
            assert_eq!(r.status, status, "{body} -> {}", r.body);
            assert_eq!(
                r.body["error"]["field"].as_str(),
                field,
                "{body} -> {}",
                r.body
            );
            assert!(r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
        }
    };
    check(
        400,
        Some("replicas"),
        json!({"name": "w", "image": "x", "replicas": -1}),
    )
    .await;
    check(
        400,
        Some("replicas"),
        json!({"name": "w", "image": "x", "replicas": 1e12}),
    )
    .await;
    check(
        400,
        Some("memory"),
        json!({"name": "w", "image": "x", "memory": 1e30}),
    )
    .await;
    check(
        400,
        Some("memory"),
        json!({"name": "w", "image": "x", "memory": u64::MAX}),
    )
    .await;
    check(
        400,
        Some("memory"),
        json!({"name": "w", "image": "x", "memory": 2}),
    )
    .await;
    check(
        400,
        Some("cpu"),
        json!({"name": "w", "image": "x", "cpu": 0}),
    )
    .await;
    check(
        400,
        Some("name"),
        json!({"name": "x".repeat(64), "image": "x"}),
    )
    .await;
    check(
        400,
        Some("name"),
        json!({"name": "x".repeat(100_000), "image": "x"}),
    )
    .await;
    check(
        400,
        Some("ports[0].container"),
        json!({"name": "w", "image": "x", "ports": [{"container": 65536}]}),
    )
    .await;
    check(
        400,
        Some("ports[1].container"),
        json!({"name": "w", "image": "x", "ports": [{"container": 80}, {"container": 80}]}),
    )
    .await;
    check(
        400,
        Some("env"),
        json!({"name": "w", "image": "x", "env": {"BAD-KEY": "1"}}),
    )
    .await;
    check(
        400,
        Some("surprise"),
        json!({"name": "w", "image": "x", "surprise": true}),
    )
    .await;
    check(400, Some("image"), json!({"name": "w"})).await;
    check(
        400,
        Some("source.url"),
        json!({"name": "w", "source": {"url": "file:///etc/passwd"}}),
    )
    .await;
    check(
        400,
        Some("state"),
        json!({"name": "w", "image": "x", "state": "exploded"}),
    )
    .await;

    for body in [
        &b"{\"name\": "[..],
        b"not json",
        b"{\"name\": \"\xff\xfe\"}",
        b"",
        b"[]",
        b"null",
    ] {
        let r = api.raw("POST", svc, Some(&t), body.to_vec()).await;
        assert_eq!(
            r.status,
            400,
            "{:?} -> {}",
            String::from_utf8_lossy(body),
            r.body
        );
        assert_eq!(
            r.body["error"]["code"],
            "bad_request",
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let huge = format!(
        "{{\"name\": \"w\", \"image\": \"x\", \"description\": \"{}\"}}",
        "a".repeat(1024 * 1024 + 10)
    );
    let r = api.raw("POST", svc, Some(&t), huge.into_bytes()).await;
    assert_eq!(r.status, 413);
    for query in [
        "limit=-1",
        "limit=0",
        "limit=5000",
        "offset=-3",
        "limit=x",
        "bogus=1",
    ] {
        let r = api
            .call("GET", &format!("/api/v1/projects?{query}"), Some(&t), None)
            .await;
        assert_eq!(r.status, 400, "{query}");
    }
    let r = api
        .call_with(
            "PATCH",
            "/api/v1/projects/demo",
            Some(&t),
            Some(json!({})),
            &[("If-Match", "soon".into())],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .call(
            "PATCH",
            "/api/v1/projects/demo",
            Some(&t),
            Some(json!({"owner": "me"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (400, Some("owner"))
    );
    assert_eq!(
        api.call("GET", "/api/v1/projects/no-such", Some(&t), None)
            .await
            .status,
        404
    );
    assert_eq!(
        api.call(
            "GET",
            &format!("/api/v1/projects/{}", "Z".repeat(5000)),
            Some(&t),
            None
        )
        .await
        .status,
        404
    );
    assert_eq!(
        api.call("GET", "/api/v1/nothing-here", Some(&t), None)
            .await
            .status,
        404
    );
    let r = api
        .call("PUT", "/api/v1/projects", Some(&t), Some(json!({})))
        .await;
    assert!(r.status == 405 || r.status == 404, "{}", r.status);
    // Nothing was created by any of it.
    assert_eq!(api.call("GET", svc, Some(&t), None).await.body["total"], 0);
}

/// Every route, as every kind of caller: the owner reaches it, another user
/// gets 404 for the owner's resources, anonymous, expired and revoked
/// credentials get 401, and an admin reaches everything.
async fn isolation_matrix(backend: Backend) {
    let api = start(backend).await;
    let owner = api.user("owner").await;
    let other = api.user("other").await;
    let admin = api.admin().await;
    // A revoked API token of the owner.
    let created = api
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&owner),
            Some(json!({"name": "old"})),
        )
        .await;
    let revoked = created.body["token"].as_str().unwrap().to_owned();
    let tid = created.body["id"].as_str().unwrap().to_owned();
    api.call(
        "DELETE",
        &format!("/api/v1/tokens/{tid}"),
        Some(&owner),
        None,
    )
    .await;
    // An expired access token of the owner, signed with the cluster's key.
    let key = lb_store::secrets::existing_cluster_secret(
        api.store.as_ref(),
        &Keys::default(),
        "jwt-signing-key",
    )
    .await
    .unwrap()
    .unwrap();
    let owner_id = api.call("GET", "/api/v1/me", Some(&owner), None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": owner_id, "iat": 1_000_000, "exp": 1_000_100}),
        &jsonwebtoken::EncodingKey::from_secret(&key),
    )
    .unwrap();
    // A token signed with another algorithm or key is refused as well.
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": owner_id, "iat": 1, "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"not the key"),
    )
    .unwrap();
    let unsigned = {
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
        let parts: Vec<&str> = owner.split('.').collect();
        format!("{header}.{}.", parts[1])
    };

    // A node and its credential: a node credential is no user credential.

    let joined = api
        .call(
            "POST",
            "/api/v1/nodes/join",
            None,
            Some(json!({"token": join_token(&api, &admin).await, "name": "node-1"})),
        )
        .await;
    assert_eq!(joined.status, 201, "{}", joined.body);
    let node_id = joined.body["id"].as_str().unwrap().to_owned();
    let node_credential = joined.body["credential"].as_str().unwrap().to_owned();

    let mut checked = 0;
    for route in lb_api::openapi::ROUTES {
        if route.ok.0 == 101 {
            continue; // websockets only: tests/events.rs, the root tests/ and node/tests
        }
        if route.auth == lb_api::openapi::Auth::Cluster || !route.path.starts_with("/api/v1/") {
            continue; // between API instances, and health and metrics
        }
        if route.path == "/api/v1/registry/token" {
            continue; // Basic credentials: covered by builder/tests/registry.rs
        }
        if route.path.contains("{v}") || route.path.starts_with("/api/v1/hooks/") {
            continue; // vendor links (need a vendor) and signed webhooks: api/tests/vendors.rs
        }
        // Fresh resources for each route and caller, so deletes do not
        // disturb the next call.
        let n = checked;
        let mut paths = Vec::new();
        let mut project = String::new();
        for side in ["a", "b"] {
            project = format!("proj-{n}-{side}");
            api.call(
                "POST",
                "/api/v1/projects",
                Some(&owner),
                Some(json!({"name": project})),
            )
            .await;
            let services = format!("/api/v1/projects/{project}/services");
            let source = json!({"url": "https://git.example.test/o/r.git", "branch": "main"});
            api.call(
                "POST",
                &services,
                Some(&owner),
                Some(json!({"name": "web", "image": "x", "source": source,
                    "ports": [{"container": 80}], "domains": [format!("web-{project}.example.test")]})),
            )
            .await;
            // Build 1, queued (no builder runs here), for the build routes.
            let queued = api
                .call(
                    "POST",
                    &format!("{services}/web/builds"),
                    Some(&owner),
                    None,
                )
                .await;
            assert_eq!(queued.status, 201, "{}", queued.body);
            // A job, pending (no scheduler runs here), for the job routes.
            let job = api
                .call(
                    "POST",
                    &format!("{services}/web/jobs"),
                    Some(&owner),
                    Some(json!({"command": ["true"]})),
                )
                .await;
            assert_eq!(job.status, 201, "{}", job.body);
            let job_id = job.body["id"].as_str().unwrap().to_owned();
            // A stored script, for the script routes.
            let script = api
                .call(
                    "PUT",
                    &format!("/api/v1/projects/{project}/scripts/hello"),
                    Some(&owner),
                    Some(json!({"body": "echo hi"})),
                )
                .await;
            assert_eq!(script.status, 201, "{}", script.body);
            let pid = r_id(&api, &owner, &format!("/api/v1/projects/{project}")).await;
            // A token only for the routes that name one: a user holds at
            // most 100.
            let token_id = if route.path.contains("{id}") {
                let token = api
                    .call(
                        "POST",
                        "/api/v1/tokens",
                        Some(&owner),
                        Some(json!({"name": format!("t{n}")})),
                    )
                    .await;
                token.body["id"].as_str().unwrap().to_owned()
            } else {
                String::new()
            };
            paths.push(
                route
                    .path
                    .replace("{p}", &pid)
                    .replace("{s}", "web")
                    .replace("{id}", &token_id)
                    .replace("/builds/{n}", "/builds/1")
                    .replace("{j}", &job_id)
                    .replace("{n}", &node_id)
                    .replace("{d}", &format!("web-{project}.example.test"))
                    .replace("{name}", "hello")
                    .replace("{user}", "owner"),
            );
        }
        let body = match route.body {
            Some("Credentials") if route.path.ends_with("login") => {
                Some(json!({"username": "owner", "password": "password-1"}))
            }
            Some("Credentials") => {
                Some(json!({"username": format!("new{n}"), "password": "password-1"}))
            }
            Some("TokenCreate") => Some(json!({"name": "x"})),
            Some("ProjectInput") if route.method == "POST" => {
                Some(json!({"name": format!("new-{n}")}))
            }
            Some("ProjectInput") => Some(json!({"name": format!("proj-{n}-a")})),
            Some("MergePatch") => Some(json!({})),
            Some("ServiceSpec") if route.method == "POST" => {
                Some(json!({"name": format!("svc{n}"), "image": "x"}))
            }
            Some("ServiceSpec") => Some(json!({"name": "web", "image": "x"})),
            Some("Scale") => Some(json!({"replicas": 2})),
            Some("Rollback") => Some(json!({"build": 1})),
            Some("Exec") => Some(json!({"command": ["true"]})),
            Some("BuildRequest") => Some(json!({})),
            Some("JobRequest") => Some(json!({"command": ["true"]})),
            Some("DomainRequest") => Some(json!({"domain": format!("add-{n}-a.example.test")})),
            Some("CertificateUpload") => Some(json!({"chain": "not a pem", "key": "not a pem"})),
            Some("JoinToken") => Some(json!({"ttl": 600})),
            Some("Allowlist") => Some(json!({"owners": []})),
            Some("Quota") => Some(json!({"projects": null})),
            // Nothing to change (no prune): the project is only read.
            Some("ApplyDocument") => Some(json!({"services": {}})),
            Some("Script") if route.method == "POST" => {
                Some(json!({"name": format!("new{n}"), "body": "true"}))
            }
            Some("Script") => Some(json!({"body": "true"})),
            Some("ScriptRunRequest") => Some(json!({})),
            Some("Join") => {
                Some(json!({"token": join_token(&api, &admin).await, "name": format!("node-x{n}")}))
            }
            Some(other) => panic!("no sample body for {other}"),
            None => None,
        };
        let path = paths[0].clone();
        let call = |token: Option<String>| {
            let (api, path, body) = (&api, path.clone(), body.clone());
            async move { api.call(route.method, &path, token.as_deref(), body).await }
        };
        let what = format!("{} {}", route.method, route.path);
        if route.auth == lb_api::openapi::Auth::User {
            for (name, bad) in [
                ("anonymous", None),
                ("expired", Some(expired.clone())),
                ("revoked", Some(revoked.clone())),
                ("wrong key", Some(wrong_key.clone())),
                ("alg none", Some(unsigned.clone())),
                ("node credential", Some(node_credential.clone())),
            ] {
                let r = call(bad).await;
                assert_eq!(r.status, 401, "{what} as {name}: {}", r.body);
            }
        }
        let scoped = route.path.contains("{p}");
        // Admin-only routes refuse a plain user with 403.
        let admin_only = route.path.ends_with("join-tokens")
            || route.path.starts_with("/api/v1/admin/")
            || route.path.starts_with("/api/v1/users/")
            || route.path == "/api/v1/backup"
            || (route.method == "GET" && route.path.starts_with("/api/v1/nodes"))
            || (route.method == "DELETE" && route.path.contains("{n}"));
        let expected = if admin_only { 403 } else { route.ok.0 };
        // Rollback to a build that does not exist is a 404 even for those
        // who may reach the service: its message names the build.
        let reached = |r: &common::Reply| {
            r.status == expected
                // Logs and exec reach the service; it has no running replica.
                || ((route.path.ends_with("logs") || route.path.ends_with("exec")) && r.status == 422)
                // So does a script run.
                || (route.path.ends_with("/run") && r.status == 422
                    && r.body["error"]["message"].as_str().is_some_and(|m| m.contains("no running replica")))
                || (route.path.ends_with("rollback") && r.body["error"]["field"] == "build")
                // The sample certificate is refused once the domain is reached.
                || (route.path.ends_with("certificate") && route.method == "PUT"
                    && r.status == 400 && r.body["error"]["field"] == "certificate")
                || (route.path.ends_with("certificate") && route.method == "DELETE"
                    && r.status == 404
                    && r.body["error"]["message"].as_str().is_some_and(|m| m.starts_with("no certificate")))
        };
        if scoped {
            let r = call(Some(other.clone())).await;
            assert_eq!(r.status, 404, "{what} as another user: {}", r.body);
            assert!(
                !r.body.to_string().contains(&project),
                "{what}: the name leaks in {}",
                r.body
            );
            let r = call(Some(owner.clone())).await;
            assert!(reached(&r), "{what} as owner: {} {}", r.status, r.body);
            // The admin, on the second set of resources (the body names it).
            let body = body.as_ref().map(|b| {
                let mut b = b.clone();
                if route.body == Some("ProjectInput") && route.method != "POST" {
                    b["name"] = json!(format!("proj-{n}-b"));
                }
                if route.body == Some("DomainRequest") {
                    b["domain"] = json!(format!("add-{n}-b.example.test"));
                }
                b
            });
            let r = api.call(route.method, &paths[1], Some(&admin), body).await;
            assert!(reached(&r), "{what} as admin: {} {}", r.status, r.body);
        } else {
            let r = call(Some(owner.clone())).await;
            assert!(reached(&r), "{what} as owner: {} {}", r.status, r.body);
        }
        checked += 1;
    }
    assert!(checked >= 20, "{checked} routes checked");
    // Lists show only one's own projects; the admin's shows all.
    let mine = api
        .call("GET", "/api/v1/projects?limit=1000", Some(&other), None)
        .await;
    assert_eq!(mine.body["total"], 0, "{}", mine.body);
    let all = api
        .call("GET", "/api/v1/projects?limit=1000", Some(&admin), None)
        .await;
    assert!(all.body["total"].as_u64().unwrap() >= 20);
}

async fn join_token(api: &Api, admin: &str) -> String {
    let r = api
        .call("POST", "/api/v1/nodes/join-tokens", Some(admin), None)
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["token"].as_str().unwrap().to_owned()
}

async fn openapi_lists_every_route_and_metrics_count(backend: Backend) {
    let api = start(backend).await;
    let doc = api.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(doc.body["openapi"], "3.0.3");
    let t = api.user("alice").await;
    for route in lb_api::openapi::ROUTES {
        assert!(
            doc.body["paths"][route.path][route.method.to_lowercase()].is_object(),
            "{} {} in the document",
            route.method,
            route.path
        );
        // Registered: the server answers something other than "no such route".
        let path = route
            .path
            .replace("{p}", "demo")
            .replace("{s}", "web")
            .replace("{id}", "X");
        let r = api
            .call(route.method, &path, Some(&t), Some(json!({})))
            .await;
        assert_ne!(
            r.body["error"]["message"], "no such route",
            "{} {} is not served",
            route.method, route.path
        );
    }
    let metrics = api
        .client
        .get(format!("{}/metrics", api.base))
        .bearer_auth(api.admin().await)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("lb_http_requests_total{method=\"GET\",route=\"/api/v1/openapi.json\",status=\"200\"} 2"), "{metrics}");
    assert!(metrics.contains(
        "lb_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/auth/login\""
    ));
    assert!(metrics.contains("lb_store_request_duration_seconds_count{op=\"txn\"}"));
    assert!(
        !metrics.contains("route=\"/api/v1/projects/demo\""),
        "routes are labelled by template"
    );
}
