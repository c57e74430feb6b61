//! The OpenAPI document against the server it describes, over real HTTP on
//! the embedded store.
//!
//! Served routes are not listed by hand here (a second list would drift):
//! candidate paths come from the router's own source (every `warp::path!`
//! in `api/src/filters/`, every template in `lb_api::openapi::ROUTES`, and
//! each of those extended by one more of the string literals in the filters,
//! which finds routes built from `warp::path("...")` pieces), and the running
//! server says which of them it answers and with which methods: an answer
//! unlike the one for a path nobody serves. Every answered route must be in
//! the document, and every route in the document must be answered.
//!
//! Not covered: the web UI's pages (`api/src/ui.rs`: HTML for browsers), a
//! route built by hand from `warp::path` pieces two segments below any
//! known path, and methods other than GET, POST, PUT, PATCH and DELETE.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{start, Api, Backend};
use futures::StreamExt;
use lb_api::openapi::{self, Route, ROUTES};
use serde_json::Value;

/// The methods probed on every path found to be served.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A path nobody serves: what "no route" looks like for each method.
const NOWHERE: &str = "/api/v1/zz-no-such-route/zz";

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Lit(String),
    /// A parameter and the name it is shown with.
    Param(String),
}

/// A path to probe and where it came from.
#[derive(Debug, Clone)]
struct Candidate {
    segs: Vec<Seg>,
    /// The source file that spells it (for the failure message).
    origin: String,
    /// The method of the route spelled by a `warp::path!`: with it, the
    /// literals of the path must be literals of the documented template too
    /// (no parameter stands in for them).
    exact: Option<String>,
    /// For a known path extended by a literal: the same path extended by a
    /// parameter. A method answering both alike is the parameter's route.
    parent: Option<String>,
}

impl Candidate {
    fn template(&self) -> String {
        template(&self.segs)
    }
    /// A concrete path: every parameter is `1` (a name, an id or a number).
    fn concrete(&self) -> String {
        if self.segs.is_empty() {
            return "/".into();
        }
        self.segs
            .iter()
            .map(|s| match s {
                Seg::Lit(l) => format!("/{l}"),
                Seg::Param(_) => "/1".into(),
            })
            .collect()
    }
}

fn template(segs: &[Seg]) -> String {
    segs.iter()
        .map(|s| match s {
            Seg::Lit(l) => format!("/{l}"),
            Seg::Param(p) => format!("/{{{p}}}"),
        })
        .collect()
}

fn parse_template(path: &str) -> Vec<Seg> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => Seg::Param(name.into()),
                None => Seg::Lit(s.into()),
            },
        )
        .collect()
}

fn filter_sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.push((path, text));
            }
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/filters");
    let mut out = Vec::new();
    walk(&dir, &mut out);
    assert!(out.len() >= 5, "no filter sources under {}", dir.display());
    out
}

/// The string literals of a source that could be path segments.
fn literals(text: &str) -> BTreeSet<String> {
    let is_segment = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    text.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| is_segment(s))
        .map(str::to_owned)
        .collect()
}

/// The templates of a source's `warp::path!(...)` macros, parameters named
/// `p1`, `p2`..., each with the first method filter after it in its
/// statement.
fn path_macros(text: &str) -> Vec<(Vec<Seg>, Option<String>)> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("warp::path!(") {
        let rest = &text[i + "warp::path!(".len()..];
        let Some(end) = rest.find(')') else { continue };
        let statement = &rest[end..rest[end..].find(';').map_or(rest.len(), |s| end + s)];
        let method = METHODS
            .iter()
            .filter_map(|m| {
                let filter = format!("warp::{}()", m.to_lowercase());
                statement.find(&filter).map(|at| (at, m.to_string()))
            })
            .min()
            .map(|(_, m)| m);
        let mut params = 0;
        let segs = rest[..end]
            .split('/')
            .map(str::trim)
            .map(
                |s| match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    Some(lit) => Seg::Lit(lit.into()),
                    None => {
                        params += 1;
                        Seg::Param(format!("p{params}"))
                    }
                },
            )
            .collect();
        out.push((segs, method));
    }
    out
}

/// Every path to probe.
fn candidates() -> Vec<Candidate> {
    let sources = filter_sources();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let v1 = parse_template("/api/v1");
    let mut all: Vec<Candidate> = Vec::new();
    let mut words = BTreeMap::new();
    for (path, text) in &sources {
        let origin = path
            .strip_prefix(root)
            .map(|p| format!("api/{}", p.display()))
            .unwrap_or_else(|_| path.display().to_string());
        for word in literals(text) {
            words.entry(word).or_insert_with(|| origin.clone());
        }
        // Only mod.rs joins routes outside /api/v1 (health, metrics).
        let at_root = path.file_name().is_some_and(|f| f == "mod.rs")
            && path.parent() == Some(&root.join("src/filters"));
        for (segs, method) in path_macros(text) {
            let mut under = v1.clone();
            under.extend(segs.iter().cloned());
            all.push(Candidate {
                segs: under,
                origin: origin.clone(),
                exact: method.clone(),
                parent: None,
            });
            if at_root {
                all.push(Candidate {
                    segs,
                    origin: origin.clone(),
                    exact: method,
                    parent: None,
                });
            }
        }
    }
    for route in ROUTES {
        all.push(Candidate {
            segs: parse_template(route.path),
            origin: "lb_api::openapi::ROUTES".into(),
            exact: None,
            parent: None,
        });
    }
    // Every known path under /api/v1 and each of its prefixes, extended by
    // one literal.
    let mut nodes = BTreeSet::new();
    for c in &all {
        if c.segs.starts_with(&v1) {
            for n in v1.len()..=c.segs.len() {
                nodes.insert(c.segs[..n].to_vec());
            }
        }
    }
    for node in &nodes {
        let mut param = node.clone();
        param.push(Seg::Param("x".into()));
        let param = Candidate {
            segs: param,
            origin: "a parameter below a known path".into(),
            exact: None,
            parent: None,
        };
        for (word, origin) in &words {
            let mut segs = node.clone();
            segs.push(Seg::Lit(word.clone()));
            all.push(Candidate {
                segs,
                origin: origin.clone(),
                exact: None,
                parent: Some(param.concrete()),
            });
        }
        all.push(param);
    }
    let mut seen = BTreeSet::new();
    all.retain(|c| seen.insert((c.template(), c.exact.clone(), c.parent.clone())));
    all
}

/// What a request answered: status, error code and message.
type Answer = (u16, String, String);

async fn probe(api: &Api, method: &str, path: &str) -> Answer {
    let request = api.client.request(
        reqwest::Method::from_bytes(method.as_bytes()).expect("a method"),
        format!("{}{path}", api.base),
    );
    let response = tokio::time::timeout(Duration::from_secs(30), request.send())
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer in 30 s"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let body: Value = response
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let field = |k: &str| body["error"][k].as_str().unwrap_or_default().to_owned();
    (status, field("code"), field("message"))
}

/// Probes many (method, path) pairs, a few at a time.
async fn probe_all(api: &Api, requests: Vec<(String, String)>) -> Vec<((String, String), Answer)> {
    futures::stream::iter(requests)
        .map(|(method, path)| async move {
            let answer = probe(api, &method, &path).await;
            ((method, path), answer)
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// The documented route a served (method, candidate) falls under: the most
/// literal match, as `route_of` picks for metrics.
fn documented(method: &str, c: &Candidate) -> Option<&'static Route> {
    ROUTES
        .iter()
        .filter(|r| r.method == method)
        .filter_map(|r| {
            let t = parse_template(r.path);
            if t.len() != c.segs.len() {
                return None;
            }
            let mut literal = 0;
            for (want, got) in t.iter().zip(&c.segs) {
                match (want, got) {
                    (Seg::Lit(a), Seg::Lit(b)) if a == b => literal += 1,
                    (Seg::Param(_), Seg::Param(_)) => {}
                    (Seg::Param(_), Seg::Lit(_)) if c.exact.as_deref() != Some(method) => {}
                    _ => return None,
                }
            }
            Some((literal, r))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, r)| r)
}

/// The method and template of a route served but not documented, and the
/// line to add to `ROUTES` for it.
fn suggestion(method: &str, c: &Candidate) -> ((String, String), String) {
    let mut segs = c.segs.clone();
    // Name parameters after the collection before them: {d} for domains/.
    for i in 0..segs.len() {
        if let Seg::Param(_) = segs[i] {
            let name = match i.checked_sub(1).map(|j| &segs[j]) {
                Some(Seg::Lit(l)) => l.chars().next().map(String::from).unwrap_or_default(),
                _ => "x".into(),
            };
            segs[i] = Seg::Param(name);
        }
    }
    let path = template(&segs);
    let resource = segs
        .iter()
        .rev()
        .find_map(|s| match s {
            Seg::Lit(l) => Some(l.clone()),
            Seg::Param(_) => None,
        })
        .unwrap_or_default();
    let item = matches!(segs.last(), Some(Seg::Param(_)));
    let mut camel: String = resource
        .split(['-', '_', '.'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    // One item, or one made: "getDomain", "createDomain", "listDomains".
    if item || method != "GET" {
        camel = camel.strip_suffix('s').unwrap_or(&camel).to_owned();
    }
    let verb = match (method, item) {
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", false) => "create",
        ("PUT", _) => "replace",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => "do",
    };
    let ok = match method {
        "POST" if !item => "201, Some(\"Schema\")",
        "DELETE" => "204, None",
        _ => "200, Some(\"Schema\")",
    };
    let text = format!(
        "{method} {path} is served ({}) but missing from the OpenAPI document. \
         Add it to ROUTES in api/src/openapi.rs, e.g.\n    \
         r(TAG, \"{verb}{camel}\", \"{method}\", \"{path}\", \"What it does\")\n        \
         .body(\"Schema\") // if it takes a JSON body\n        \
         .ok({ok}),\n\
         with TAG one of TAGS (add a tag there for a new resource), .public() or \
         .auth(..) if it takes no user token, and the body's and answer's schemas \
         in schemas()",
        c.origin
    );
    ((method.to_owned(), path), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_served_route_is_documented_and_every_documented_route_served() {
    tokio::time::timeout(Duration::from_secs(300), check_routes())
        .await
        .expect("probing the routes hung for 300 s");
}

async fn check_routes() {
    let api = start(Backend::Embedded).await;
    let mut nowhere = BTreeMap::new();
    for method in METHODS {
        let answer = probe(&api, method, NOWHERE).await;
        assert_eq!(answer.0, 404, "{method} {NOWHERE}: {answer:?}");
        nowhere.insert(method.to_string(), answer);
    }
    let served = |method: &str, answer: &Answer| {
        answer != &nowhere[method] && answer.1 != "method_not_allowed"
    };

    // Stage 1: which candidates are a route at all. A known path with a
    // method it does not take answers 405 (warp prefers that to 404); a TRACE
    // anywhere else answers 404. Should TRACE be taken everywhere one day
    // (a catch-all page), every candidate goes on to stage 2.
    let candidates = candidates();
    assert!(
        candidates.len() > ROUTES.len(),
        "{} candidates",
        candidates.len()
    );
    let by_path: BTreeMap<String, Vec<&Candidate>> =
        candidates.iter().fold(BTreeMap::new(), |mut m, c| {
            m.entry(c.concrete()).or_default().push(c);
            m
        });
    let traced = probe_all(
        &api,
        by_path
            .keys()
            .map(|p| ("TRACE".to_owned(), p.clone()))
            .collect(),
    )
    .await;
    let trace_tells = probe(&api, "TRACE", NOWHERE).await.0 == 404;
    let mut paths = Vec::new();
    for ((_, path), answer) in traced {
        if trace_tells && answer.0 == 404 {
            continue;
        }
        if !trace_tells {
            paths.push(path);
            continue;
        }
        assert_eq!(
            answer.1, "method_not_allowed",
            "TRACE {path} answered {answer:?}: a route without a method filter? \
             (this test then cannot tell its methods apart)"
        );
        paths.push(path);
    }

    // Stage 2: the methods of each path that is a route.
    let requests = paths
        .iter()
        .flat_map(|p| METHODS.iter().map(move |m| (m.to_string(), p.clone())))
        .collect();
    let answers: BTreeMap<(String, String), Answer> = probe_all(&api, requests)
        .await
        .into_iter()
        .filter(|((method, _), answer)| served(method, answer))
        .collect();
    let mut missing = BTreeMap::new();
    let mut found = BTreeSet::new();
    for ((method, path), answer) in &answers {
        for c in &by_path[path] {
            let parent = c
                .parent
                .as_ref()
                .and_then(|p| answers.get(&(method.clone(), p.clone())));
            if parent.is_some_and(|p| (p.0, &p.1) == (answer.0, &answer.1)) {
                continue; // the parameter's route took the literal
            }
            match documented(method, c) {
                Some(route) => {
                    found.insert((route.method, route.path));
                }
                None => {
                    let (key, text) = suggestion(method, c);
                    // The scanned spelling names the file; keep it.
                    if c.exact.is_some() || !missing.contains_key(&key) {
                        missing.insert(key, text);
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} route(s) served but not documented:\n\n{}",
        missing.len(),
        missing.into_values().collect::<Vec<_>>().join("\n\n")
    );

    // And the other way: every documented route is answered.
    let unserved: Vec<String> = ROUTES
        .iter()
        .filter(|r| !found.contains(&(r.method, r.path)))
        .map(|r| format!("{} {} ({})", r.method, r.path, r.id))
        .collect();
    assert!(
        unserved.is_empty(),
        "documented in lb_api::openapi::ROUTES but not served (no route answers; \
         remove them or serve them): {unserved:?}"
    );
    // A sanity check of the probing itself: the scan found the routes.
    assert!(found.len() >= 50, "only {} routes found", found.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_complete_and_served() {
    let api = start(Backend::Embedded).await;
    let doc = api.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body, openapi::document(), "served as built");
    let doc = doc.body;
    assert_eq!(doc["servers"][0]["url"], "/");
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let what = format!("{method} {path}");
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(!id.contains(' ') && !id.contains('/'), "{what}: {id}");
            assert!(ids.insert(id.to_owned()), "{what}: {id} twice");
            let tag = op["tags"][0].as_str().expect("a tag");
            assert!(tags.contains(tag), "{what}: tag {tag} not declared");
            used.insert(tag);
            assert!(op["responses"]["default"].is_object(), "{what}");
        }
    }
    assert_eq!(used, tags, "every declared tag is used");
    for (id, method, path) in [
        ("listServices", "get", "/api/v1/projects/{p}/services"),
        ("createService", "post", "/api/v1/projects/{p}/services"),
        ("listNodes", "get", "/api/v1/nodes"),
        ("joinNode", "post", "/api/v1/nodes/join"),
        ("connectNode", "get", "/api/v1/nodes/connect"),
        ("getRegistryToken", "get", "/api/v1/registry/token"),
        ("vendorCallback", "get", "/api/v1/vendors/{v}/callback"),
        ("deliverWebhook", "post", "/api/v1/hooks/{v}/{sid}"),
        ("internalAsk", "post", "/api/v1/internal/ask"),
        ("getApiIndex", "get", "/api/v1"),
    ] {
        assert_eq!(
            doc["paths"][path][method]["operationId"], id,
            "{method} {path}"
        );
    }
    // Public routes carry no security; the others say which credential.
    assert_eq!(
        doc["paths"]["/api/v1/nodes/join"]["post"]["security"],
        serde_json::json!([])
    );
    assert_eq!(
        doc["paths"]["/api/v1/nodes/connect"]["get"]["security"][0]["node"],
        serde_json::json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_root_is_an_index() {
    let api = start(Backend::Embedded).await;
    let token = api.user("alice").await;
    for root in ["/api/v1", "/api/v1/"] {
        let index = api.call("GET", root, None, None).await;
        assert_eq!(index.status, 200, "{root}: {}", index.body);
        assert_eq!(index.body["name"], "lb");
        assert_eq!(index.body["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(index.body["openapi"], "/api/v1/openapi.json");
    }
    let index = api.call("GET", "/api/v1", None, None).await.body;
    let links = index["links"].as_object().expect("links");
    for name in ["openapi", "projects", "nodes", "me", "tokens", "events"] {
        assert!(links.contains_key(name), "no link {name} in {index}");
    }
    for (name, path) in links {
        let path = path.as_str().expect("a path");
        let r = api.call("GET", path, Some(&token), None).await;
        if name == "events" {
            // A websocket: a plain GET is refused as such, not as unknown.
            assert_eq!(r.status, 400, "{name} -> {path}: {}", r.body);
        } else if name == "signup" || name == "login" {
            assert_eq!(r.status, 405, "{name} -> {path}: {}", r.body);
        } else if name == "nodes" {
            // The admin's: a user is refused as such, not as unknown.
            assert_eq!(r.status, 403, "{name} -> {path}: {}", r.body);
        } else {
            assert_eq!(r.status, 200, "{name} -> {path}: {}", r.body);
        }
    }
    // Only GET: the index is not a place to write to.
    let r = api.call("POST", "/api/v1", None, None).await;
    assert_eq!(r.status, 405, "{}", r.body);
}
