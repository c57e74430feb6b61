//! The OpenAPI 3 description of the REST API, built from one route table
//! ([`ROUTES`]) that the metrics also use to name routes, and the index
//! `GET /api/v1` answers ([`index`]). `api/tests/openapi.rs` checks the
//! table against what the server really answers, both ways: a route served
//! but missing here fails it, with the line to add.

use serde_json::{json, Map, Value};

/// The credential a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// None: anyone may call it.
    Public,
    /// A user's access token or API token (`Authorization: Bearer`), or the
    /// web UI's session cookie.
    User,
    /// A node's credential (`Authorization: Bearer`), given at join.
    Node,
    /// The cluster's internal secret: other API instances only.
    Cluster,
    /// HTTP Basic: a user name with a password or API token, or a node's
    /// credential as the password (Docker token auth).
    Basic,
}

/// A query parameter of a route.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// Its name.
    pub name: &'static str,
    /// JSON schema type: `string`, `integer` or `boolean`.
    pub kind: &'static str,
    /// What it means.
    pub about: &'static str,
}

const fn q(name: &'static str, kind: &'static str, about: &'static str) -> Query {
    Query { name, kind, about }
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path template, OpenAPI style (`/api/v1/projects/{p}`).
    pub path: &'static str,
    /// The OpenAPI `operationId`, lower camel case (`listServices`).
    pub id: &'static str,
    /// The resource it belongs to: one of [`TAGS`].
    pub tag: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// The credential it takes.
    pub auth: Auth,
    /// Schema name of the request body, if any.
    pub body: Option<&'static str>,
    /// Success status and schema name of its body, if any.
    pub ok: (u16, Option<&'static str>),
    /// Whether it accepts `If-Match`.
    pub if_match: bool,
    /// Whether it pages with `limit`/`offset`.
    pub paged: bool,
    /// Whether it takes `tail`, `follow` and `replica` (logs).
    pub logs: bool,
    /// Whether a websocket upgrade of it is served too (101).
    pub upgrade: bool,
    /// Other query parameters.
    pub query: &'static [Query],
}

const fn r(
    tag: &'static str,
    id: &'static str,
    method: &'static str,
    path: &'static str,
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        id,
        tag,
        summary,
        auth: Auth::User,
        body: None,
        ok: (200, None),
        if_match: false,
        paged: false,
        logs: false,
        upgrade: false,
        query: &[],
    }
}

impl Route {
    const fn public(mut self) -> Self {
        self.auth = Auth::Public;
        self
    }
    const fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
    const fn body(mut self, schema: &'static str) -> Self {
        self.body = Some(schema);
        self
    }
    const fn ok(mut self, status: u16, schema: Option<&'static str>) -> Self {
        self.ok = (status, schema);
        self
    }
    const fn if_match(mut self) -> Self {
        self.if_match = true;
        self
    }
    const fn paged_logs(mut self) -> Self {
        self.logs = true;
        self
    }
    const fn paged(mut self) -> Self {
        self.paged = true;
        self
    }
    const fn upgrade(mut self) -> Self {
        self.upgrade = true;
        self
    }
    const fn query(mut self, query: &'static [Query]) -> Self {
        self.query = query;
        self
    }
}

/// The tags, one per resource, with what each covers, in the order a
/// reader meets them.
pub const TAGS: &[(&str, &str)] = &[
    (API, "This API: its index and this document"),
    (ACCOUNTS, "Sign-up, login, the caller and API tokens"),
    (PROJECTS, "Projects: a user's group of services"),
    (
        SERVICES,
        "Services: spec, scaling and actions, replicas, logs and exec",
    ),
    (
        DOMAINS,
        "A service's domains (served by the ingress) and their certificates",
    ),
    (BUILDS, "Builds of a service's source, their logs"),
    (
        JOBS,
        "One-off jobs of a service (a command run to completion in a new container) and its cron schedules",
    ),
    (
        SCRIPTS,
        "A project's stored scripts, run inside a service's running replicas, and their runs",
    ),
    (EVENTS, "A live feed of what changes"),
    (
        NODES,
        "Machines that run replicas: join tokens, joining, the node channel",
    ),
    (
        VENDORS,
        "Linked GitHub, GitLab and Bitbucket accounts (OAuth 2), their repositories",
    ),
    (
        HOOKS,
        "Push webhooks, a service's webhook settings, the allowlist of repository owners",
    ),
    (
        REGISTRY,
        "Tokens for lb's image registry (Docker token auth)",
    ),
    (
        INTERNAL,
        "Between API instances only (the cluster's internal secret)",
    ),
    (OPERATIONS, "Health, readiness and Prometheus metrics"),
];

const API: &str = "api";
const ACCOUNTS: &str = "accounts";
const PROJECTS: &str = "projects";
const SERVICES: &str = "services";
const BUILDS: &str = "builds";
const JOBS: &str = "jobs";
const DOMAINS: &str = "domains";
const EVENTS: &str = "events";
const SCRIPTS: &str = "scripts";
const NODES: &str = "nodes";
const VENDORS: &str = "vendors";
const HOOKS: &str = "hooks";
const REGISTRY: &str = "registry";
const INTERNAL: &str = "internal";
const OPERATIONS: &str = "operations";

const P: &str = "/api/v1/projects/{p}";
const S: &str = "/api/v1/projects/{p}/services/{s}";
const VENDOR_PAGE: &[Query] = &[
    q("page", "string", "page number, from 1"),
    q("per_page", "string", "items per page, 1-100"),
];

/// Every route the server answers, but the web UI's pages (HTML for
/// browsers, described in ARCHITECTURE.md).
pub const ROUTES: &[Route] = &[
    r(API, "getApiIndex", "GET", "/api/v1", "Where to start: the version, this document and the main collections")
        .public()
        .ok(200, Some("ApiIndex")),
    r(API, "getOpenApi", "GET", "/api/v1/openapi.json", "This document")
        .public()
        .ok(200, None),
    r(ACCOUNTS, "signup", "POST", "/api/v1/auth/signup", "Create an account")
        .public()
        .body("Credentials")
        .ok(201, Some("User")),
    r(ACCOUNTS, "login", "POST", "/api/v1/auth/login", "Log in: an access token")
        .public()
        .body("Credentials")
        .ok(200, Some("Login")),
    r(ACCOUNTS, "getMe", "GET", "/api/v1/me", "The caller").ok(200, Some("User")),
    r(ACCOUNTS, "createToken", "POST", "/api/v1/tokens", "Create an API token (shown once)")
        .body("TokenCreate")
        .ok(201, Some("Token")),
    r(ACCOUNTS, "listTokens", "GET", "/api/v1/tokens", "List API tokens").ok(200, Some("TokenList")),
    r(ACCOUNTS, "revokeToken", "DELETE", "/api/v1/tokens/{id}", "Revoke an API token").ok(204, None),
    r(PROJECTS, "listProjects", "GET", "/api/v1/projects", "List projects")
        .paged()
        .ok(200, Some("ProjectList")),
    r(PROJECTS, "createProject", "POST", "/api/v1/projects", "Create a project")
        .body("ProjectInput")
        .ok(201, Some("Project")),
    r(PROJECTS, "getProject", "GET", P, "Read a project").ok(200, Some("Project")),
    r(PROJECTS, "replaceProject", "PUT", P, "Replace a project")
        .body("ProjectInput")
        .if_match()
        .ok(200, Some("Project")),
    r(PROJECTS, "patchProject", "PATCH", P, "Merge-patch a project")
        .body("MergePatch")
        .if_match()
        .ok(200, Some("Project")),
    r(PROJECTS, "deleteProject", "DELETE", P, "Delete a project and everything in it")
        .if_match()
        .ok(204, None),
    r(
        PROJECTS,
        "applyProject",
        "PUT",
        "/api/v1/projects/{p}/apply",
        "Make the project match a document (lb's format or a compose file; JSON, or YAML with a yaml Content-Type): creates, updates, and with prune deletes services; a project name not yet taken is created",
    )
    .body("ApplyDocument")
    .query(&[
        q("prune", "boolean", "delete the services the document does not name"),
        q("dry_run", "boolean", "answer the plan without writing"),
    ])
    .ok(200, Some("Applied")),
    r(SERVICES, "listServices", "GET", "/api/v1/projects/{p}/services", "List services")
        .paged()
        .ok(200, Some("ServiceList")),
    r(SERVICES, "createService", "POST", "/api/v1/projects/{p}/services", "Create a service")
        .body("ServiceSpec")
        .ok(201, Some("Service")),
    r(SERVICES, "getService", "GET", S, "Read a service").ok(200, Some("Service")),
    r(SERVICES, "replaceService", "PUT", S, "Replace a service's spec")
        .body("ServiceSpec")
        .if_match()
        .ok(200, Some("Service")),
    r(SERVICES, "patchService", "PATCH", S, "Merge-patch a service's spec")
        .body("MergePatch")
        .if_match()
        .ok(200, Some("Service")),
    r(SERVICES, "deleteService", "DELETE", S, "Delete a service with its replicas and builds")
        .if_match()
        .ok(204, None),
    r(SERVICES, "scaleService", "POST", "/api/v1/projects/{p}/services/{s}/scale", "Set the replica count")
        .body("Scale")
        .if_match()
        .ok(200, Some("Service")),
    r(SERVICES, "restartService", "POST", "/api/v1/projects/{p}/services/{s}/restart", "Restart every replica")
        .if_match()
        .ok(200, Some("Service")),
    r(SERVICES, "pauseService", "POST", "/api/v1/projects/{p}/services/{s}/pause", "Run no replica, keep the count")
        .if_match()
        .ok(200, Some("Service")),
    r(SERVICES, "resumeService", "POST", "/api/v1/projects/{p}/services/{s}/resume", "Run the replicas again")
        .if_match()
        .ok(200, Some("Service")),
    r(SERVICES, "rollbackService", "POST", "/api/v1/projects/{p}/services/{s}/rollback", "Run an earlier build's image")
        .body("Rollback")
        .if_match()
        .ok(200, Some("Service")),
    r(SERVICES, "listReplicas", "GET", "/api/v1/projects/{p}/services/{s}/replicas", "List replicas")
        .ok(200, Some("ReplicaList")),
    r(
        SERVICES,
        "getServiceLogs",
        "GET",
        "/api/v1/projects/{p}/services/{s}/logs",
        "The last lines of a replica's output (text): the one named, else a running one, else the last output of the replica that ended last (its exit code in X-Lb-Exit-Code); with follow=true a chunked body that keeps coming; upgraded to a websocket, binary frames of output",
    )
    .paged_logs()
    .upgrade()
    .ok(200, None),
    r(SERVICES, "execInService", "POST", "/api/v1/projects/{p}/services/{s}/exec", "Run a command in a replica")
        .body("Exec")
        .ok(200, Some("ExecOutput")),
    r(
        SERVICES,
        "execInServiceInteractive",
        "GET",
        "/api/v1/projects/{p}/services/{s}/exec",
        "Run a command in a replica interactively, with a TTY: a websocket (framing in docs/contracts.md)",
    )
    .ok(101, None),
    r(BUILDS, "listBuilds", "GET", "/api/v1/projects/{p}/services/{s}/builds", "List builds, newest first")
        .ok(200, Some("BuildList")),
    r(BUILDS, "listDeploys", "GET", "/api/v1/projects/{p}/services/{s}/deploys", "The service's deploys (new generations and how each ended), newest first")
        .ok(200, Some("DeployList")),
    r(BUILDS, "createBuild", "POST", "/api/v1/projects/{p}/services/{s}/builds", "Queue a build of the service's source")
        .body("BuildRequest")
        .ok(201, Some("Build")),
    r(BUILDS, "getBuild", "GET", "/api/v1/projects/{p}/services/{s}/builds/{n}", "Read a build").ok(200, Some("Build")),
    r(BUILDS, "cancelBuild", "POST", "/api/v1/projects/{p}/services/{s}/builds/{n}/cancel", "Cancel a build that has not ended")
        .ok(200, Some("Build")),
    r(
        BUILDS,
        "getBuildLogs",
        "GET",
        "/api/v1/projects/{p}/services/{s}/builds/{n}/logs",
        "A build's output (text); upgraded to a websocket it follows the build",
    )
    .upgrade()
    .ok(200, None),
    r(JOBS, "listJobs", "GET", "/api/v1/projects/{p}/services/{s}/jobs", "List the service's jobs, newest first (without output)")
        .ok(200, Some("JobList")),
    r(JOBS, "createJob", "POST", "/api/v1/projects/{p}/services/{s}/jobs", "Run a command to completion in a new container of the service's image, env, volumes and network")
        .body("JobRequest")
        .ok(201, Some("Job")),
    r(JOBS, "getJob", "GET", "/api/v1/projects/{p}/services/{s}/jobs/{j}", "Read a job: state, exit code, the tail of its output")
        .ok(200, Some("Job")),
    r(JOBS, "cancelJob", "DELETE", "/api/v1/projects/{p}/services/{s}/jobs/{j}", "Cancel a job not over yet (its container is stopped)")
        .ok(200, Some("Job")),
    r(
        JOBS,
        "getJobLogs",
        "GET",
        "/api/v1/projects/{p}/services/{s}/jobs/{j}/logs",
        "A job's output kept (text); upgraded to a websocket it follows a running job's output",
    )
    .upgrade()
    .ok(200, None),
    r(JOBS, "listSchedules", "GET", "/api/v1/projects/{p}/services/{s}/schedules", "The service's cron schedules with their next tick and last run")
        .ok(200, Some("ScheduleList")),
    r(EVENTS, "watchEvents", "GET", "/api/v1/events", "Websocket of visible changes (snapshot, then changes)")
        .query(&[q("revision", "integer", "send the changes from this revision on, without a snapshot")])
        .ok(101, None),
    r(NODES, "listNodes", "GET", "/api/v1/nodes", "List nodes (admin)").ok(200, Some("NodeList")),
    r(NODES, "getNode", "GET", "/api/v1/nodes/{n}", "Read a node (admin)").ok(200, Some("Node")),
    r(NODES, "deleteNode", "DELETE", "/api/v1/nodes/{n}", "Forget a node and revoke its credential (admin)").ok(204, None),
    r(NODES, "createJoinToken", "POST", "/api/v1/nodes/join-tokens", "A single-use join token for `lb node` (admin)")
        .body("JoinToken")
        .ok(201, Some("JoinTokenCreated")),
    r(NODES, "joinNode", "POST", "/api/v1/nodes/join", "Exchange a join token for a node credential")
        .public()
        .body("Join")
        .ok(201, Some("Joined")),
    r(
        NODES,
        "connectNode",
        "GET",
        "/api/v1/nodes/connect",
        "The node channel: a websocket carrying assignments to the node and its heartbeats and replica statuses back",
    )
    .auth(Auth::Node)
    .ok(101, None),
    r(
        REGISTRY,
        "getRegistryToken",
        "GET",
        "/api/v1/registry/token",
        "A registry token for the scopes the caller may have",
    )
    .auth(Auth::Basic)
    .query(&[
        q("scope", "string", "repository:<project>/<service>:pull,push (may repeat)"),
        q("service", "string", "the registry's name (ignored)"),
    ])
    .ok(200, Some("RegistryToken")),
    r(VENDORS, "listVendorLinks", "GET", "/api/v1/vendors", "The caller's linked vendor accounts (no tokens)")
        .ok(200, Some("VendorLinkList")),
    r(
        VENDORS,
        "connectVendor",
        "GET",
        "/api/v1/vendors/{v}/connect",
        "Link a vendor account: a redirect to the vendor's consent page (v: github, gitlab, bitbucket)",
    )
    .ok(302, None),
    r(
        VENDORS,
        "vendorCallback",
        "GET",
        "/api/v1/vendors/{v}/callback",
        "Where the vendor's OAuth consent sends the browser back (with the state cookie from connect)",
    )
    .public()
    .query(&[
        q("code", "string", "the vendor's authorization code"),
        q("state", "string", "the state connect sent"),
    ])
    .ok(200, Some("VendorLink")),
    r(VENDORS, "unlinkVendor", "DELETE", "/api/v1/vendors/{v}", "Unlink a vendor account").ok(204, None),
    r(VENDORS, "listVendorRepos", "GET", "/api/v1/vendors/{v}/repos", "Repositories the linked account reaches")
        .query(VENDOR_PAGE)
        .ok(200, Some("RepoPage")),
    r(VENDORS, "listVendorBranches", "GET", "/api/v1/vendors/{v}/branches", "Branches of a repository")
        .query(&[
            q("repo", "string", "owner/name"),
            q("page", "string", "page number, from 1"),
            q("per_page", "string", "items per page, 1-100"),
        ])
        .ok(200, Some("BranchPage")),
    r(ACCOUNTS, "getQuota", "GET", "/api/v1/users/{user}/quota", "A user's limits and what the user holds (admin)")
        .ok(200, Some("QuotaView")),
    r(ACCOUNTS, "replaceQuota", "PUT", "/api/v1/users/{user}/quota", "Set a user's limits; a limit left out or null is unlimited (admin)")
        .body("Quota")
        .ok(200, Some("QuotaView")),
    r(HOOKS, "getAllowlist", "GET", "/api/v1/admin/allowlist", "Repository owners builds may come from (admin)")
        .ok(200, Some("Allowlist")),
    r(HOOKS, "replaceAllowlist", "PUT", "/api/v1/admin/allowlist", "Replace the allowlist; empty allows any (admin)")
        .body("Allowlist")
        .ok(200, Some("Allowlist")),
    r(
        HOOKS,
        "deliverWebhook",
        "POST",
        "/api/v1/hooks/{v}/{sid}",
        "A vendor's push webhook (signed with the service's secret; queues a build of the pushed commit)",
    )
    .public()
    .ok(202, Some("HookResult")),
    r(DOMAINS, "listDomains", "GET", "/api/v1/projects/{p}/services/{s}/domains", "The service's domains with their certificates' status")
        .ok(200, Some("DomainList")),
    r(DOMAINS, "addDomain", "POST", "/api/v1/projects/{p}/services/{s}/domains", "Claim a domain for the service (409 when another service holds it)")
        .body("DomainRequest")
        .ok(201, Some("Domain")),
    r(DOMAINS, "removeDomain", "DELETE", "/api/v1/projects/{p}/services/{s}/domains/{d}", "Release a domain and its certificate")
        .ok(204, None),
    r(DOMAINS, "uploadCertificate", "PUT", "/api/v1/projects/{p}/services/{s}/domains/{d}/certificate", "Use your own certificate and key for a domain (the key is sealed, never shown)")
        .body("CertificateUpload")
        .ok(200, Some("Certificate")),
    r(DOMAINS, "removeCertificate", "DELETE", "/api/v1/projects/{p}/services/{s}/domains/{d}/certificate", "Drop a domain's certificate (lb orders its own over ACME)")
        .ok(204, None),
    r(SCRIPTS, "listScripts", "GET", "/api/v1/projects/{p}/scripts", "The project's stored scripts, by name")
        .ok(200, Some("ScriptList")),
    r(SCRIPTS, "createScript", "POST", "/api/v1/projects/{p}/scripts", "Store a script (409 when the name is taken)")
        .body("Script")
        .ok(201, Some("Script")),
    r(SCRIPTS, "getScript", "GET", "/api/v1/projects/{p}/scripts/{name}", "A stored script (ETag: its revision)")
        .ok(200, Some("Script")),
    r(SCRIPTS, "putScript", "PUT", "/api/v1/projects/{p}/scripts/{name}", "Create (201) or replace (200) a script; If-Match pins the revision replaced")
        .body("Script")
        .ok(200, Some("Script"))
        .if_match(),
    r(SCRIPTS, "deleteScript", "DELETE", "/api/v1/projects/{p}/scripts/{name}", "Delete a script and its recorded runs")
        .ok(204, None)
        .if_match(),
    r(SCRIPTS, "listScriptRuns", "GET", "/api/v1/projects/{p}/scripts/{name}/runs", "A script's last 20 runs, newest first (output heads of 2 KiB)")
        .ok(200, Some("ScriptRunList")),
    r(SCRIPTS, "runScript", "POST", "/api/v1/projects/{p}/services/{s}/scripts/{name}/run", "Run a script inside running replicas as a second process (the container is not restarted); answers each replica's exit code and output")
        .body("ScriptRunRequest")
        .ok(200, Some("ScriptRun")),
    r(
        SCRIPTS,
        "runScriptStream",
        "GET",
        "/api/v1/projects/{p}/services/{s}/scripts/{name}/run",
        "Run a script in one replica, its output streamed as it comes: a websocket (framing in docs/contracts.md); recorded as a POST run",
    )
    .query(&[
        q("replica", "string", "the replica's id (default: the first running one)"),
        q("arg", "string", "an argument, once per argument, in order (none: the script's)"),
    ])
    .ok(101, None),
    r(
        HOOKS,
        "getServiceWebhook",
        "GET",
        "/api/v1/projects/{p}/services/{s}/webhook",
        "The service's webhook URL and secret, for setting it up by hand",
    )
    .ok(200, Some("Webhook")),
    r(INTERNAL, "internalAsk", "POST", "/api/v1/internal/ask", "Ask a node whose channel this instance holds")
        .auth(Auth::Cluster)
        .body("InternalAsk")
        .ok(200, Some("NodeAnswer")),
    r(
        INTERNAL,
        "internalStream",
        "GET",
        "/api/v1/internal/stream",
        "A log or exec stream with a node whose channel this instance holds: a websocket",
    )
    .auth(Auth::Cluster)
    .ok(101, None),
    r(OPERATIONS, "getHealth", "GET", "/healthz", "Liveness: answers ok").public().ok(200, None),
    r(OPERATIONS, "getReadiness", "GET", "/readyz", "Readiness: ready while the store answers within 2 s, else 503")
        .public()
        .ok(200, None),
    r(OPERATIONS, "getMetrics", "GET", "/metrics", "Prometheus metrics (text), for an admin's bearer token").ok(200, None),
    r(OPERATIONS, "getBackup", "GET", "/api/v1/backup", "A backup archive (tar) of the store and the data dir's files, taken while lb serves (admin)").ok(200, None),
];

/// The route with this `operationId`.
pub fn route(id: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.id == id)
}

/// The route template a request path matched, for metric labels; unknown
/// paths share one label so they cannot blow up the metric's cardinality.
pub fn route_of(method: &str, path: &str) -> &'static str {
    // The templates split once: this runs on every request.
    static SPLIT: std::sync::OnceLock<Vec<(&'static Route, Vec<&'static str>, usize)>> =
        std::sync::OnceLock::new();
    let split = SPLIT.get_or_init(|| {
        ROUTES
            .iter()
            .map(|r| (r, r.path.split('/').collect(), r.path.matches('{').count()))
            .collect()
    });
    let path = path.trim_end_matches('/');
    let count = path.split('/').count();
    let matches = |t: &[&str]| {
        t.len() == count
            && t.iter()
                .zip(path.split('/'))
                .all(|(t, s)| t.starts_with('{') || *t == s)
    };
    // Prefer the route of this method; fixed segments beat parameters.
    split
        .iter()
        .filter(|(_, t, _)| matches(t))
        .max_by_key(|(r, _, params)| (r.method == method, *params == 0, usize::MAX - params))
        .map_or("unmatched", |(r, _, _)| r.path)
}

/// What `GET /api/v1` answers: the name and version, the document, and the
/// main collections, each link taken from [`ROUTES`] so none can dangle.
pub fn index() -> Value {
    let mut links = Map::new();
    for (name, id) in [
        ("openapi", "getOpenApi"),
        ("signup", "signup"),
        ("login", "login"),
        ("me", "getMe"),
        ("tokens", "listTokens"),
        ("projects", "listProjects"),
        ("nodes", "listNodes"),
        ("events", "watchEvents"),
        ("vendors", "listVendorLinks"),
    ] {
        if let Some(route) = route(id) {
            links.insert(name.into(), json!(route.path));
        }
    }
    json!({
        "name": "lb",
        "version": env!("CARGO_PKG_VERSION"),
        "openapi": links.get("openapi").cloned().unwrap_or(Value::Null),
        "links": links,
    })
}

fn schemas() -> Value {
    let error = json!({"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string", "nullable": true}}}}});
    let name = json!({"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"});
    let list = |item: &str| {
        json!({"type": "object", "required": ["items", "total"], "properties": {
        "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
        "total": {"type": "integer", "minimum": 0}}})
    };
    let mut schemas = json!({
        "Error": error,
        "Credentials": {"type": "object", "required": ["username", "password"], "additionalProperties": false,
            "properties": {"username": {"type": "string"}, "password": {"type": "string"}}},
        "Login": {"type": "object", "required": ["token", "expires"], "properties": {"token": {"type": "string"}, "expires": {"type": "integer"}}},
        "User": {"type": "object", "required": ["id", "username", "role", "created"], "properties": {
            "id": {"type": "string"}, "username": {"type": "string"}, "role": {"enum": ["admin", "user"]}, "created": {"type": "integer"}}},
        "TokenCreate": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {"name": {"type": "string"}}},
        "Token": {"type": "object", "required": ["id", "name", "created"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "created": {"type": "integer"}, "token": {"type": "string"}}},
        "TokenList": list("Token"),
        "ProjectInput": {"type": "object", "required": ["name"], "additionalProperties": false,
            "properties": {"name": name, "description": {"type": "string", "maxLength": 1024}}},
        "Project": {"type": "object", "required": ["id", "name", "description", "owner", "revision", "created", "updated"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"}, "owner": {"type": "string"},
            "revision": {"type": "integer"}, "created": {"type": "integer"}, "updated": {"type": "integer"}}},
        "ProjectList": list("Project"),
        "MergePatch": {"type": "object", "description": "RFC 7396 JSON merge patch of the resource's writable fields"},
        "Port": {"type": "object", "required": ["container"], "additionalProperties": false,
            "description": "a published port in the object form, the form responses use",
            "properties": {
            "container": {"type": "integer", "minimum": 1, "maximum": 65535},
            "host": {"type": "integer", "nullable": true, "minimum": 1, "maximum": 65535,
                "description": "null: the node picks a free host port"},
            "protocol": {"enum": ["tcp", "udp"], "default": "tcp"}}},
        "PortInput": {"description": "a published port as written: HOST:CONTAINER[/PROTOCOL] like docker run -p (8080:80, 8080:80/udp; 80 or 80/udp for a host port the node picks; ports 1 to 65535), or the object form responses use",
            "oneOf": [
                {"type": "string", "pattern": "^([0-9]{1,5}:)?[0-9]{1,5}(/(tcp|udp))?$", "example": "8080:80"},
                {"$ref": "#/components/schemas/Port"}]},
        "ServiceSpec": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
            "name": name, "description": {"type": "string", "maxLength": 1024},
            "image": {"type": "string", "nullable": true},
            "source": {"type": "object", "nullable": true},
            "replicas": {"type": "integer", "minimum": 0, "maximum": 1000},
            "memory": {"type": "integer", "minimum": 6, "description": "MiB, a hard limit"},
            "cpu": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1024},
            "ports": {"type": "array", "items": {"$ref": "#/components/schemas/PortInput"},
                "description": "write HOST:CONTAINER[/PROTOCOL] (\"8080:80\"); responses answer each as an object"},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "command": {"type": "array", "nullable": true, "items": {"type": "string"}},
            "volumes": {"type": "array", "items": {"type": "object", "required": ["name", "path"],
                "properties": {"name": name, "path": {"type": "string"}}}},
            "domains": {"type": "array", "items": {"type": "string"},
                "description": "host names (or *.wildcards) the ingress routes to ingress_port; each claimed by one service"},
            "ingress_port": {"type": "integer", "nullable": true, "minimum": 1, "maximum": 65535,
                "description": "the TCP container port in ports that gets the domains' traffic (default: the only TCP port)"},
            "https_redirect": {"type": "boolean", "default": true},
            "access_log": {"type": "boolean", "default": false},
            "health": {"type": "object", "nullable": true,
                "description": "one of http (a path), tcp (true) or command (argv), with interval, timeout, retries, start_period (seconds) and port",
                "properties": {"http": {"type": "string"}, "tcp": {"type": "boolean"},
                    "command": {"type": "array", "items": {"type": "string"}},
                    "interval": {"type": "integer"}, "timeout": {"type": "integer"}, "retries": {"type": "integer"},
                    "start_period": {"type": "integer"}, "port": {"type": "integer", "nullable": true}}},
            "cap_add": {"type": "array", "items": {"type": "string"},
                "description": "capabilities added back from the allowed list (NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP, SETPCAP, FSETID)"},
            "pids": {"type": "integer", "minimum": 16, "maximum": 16384, "default": 1024},
            "read_only": {"type": "boolean", "default": false},
            "schedules": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}},
            "node_selector": {"type": "object", "additionalProperties": {"type": "string"}},
            "autodeploy": {"type": "boolean"},
            "state": {"enum": ["running", "paused"]},
            "stop_timeout": {"type": "integer", "minimum": 0, "maximum": 300, "default": 10,
                "description": "seconds between SIGTERM and SIGKILL when a replica is stopped"},
            "max_unavailable": {"type": "integer", "minimum": 1, "maximum": 1000, "nullable": true,
                "description": "replicas a rollout replacing in place may take down at once, and new ones it starts at once (default 1)"}}},
        "Service": {"type": "object", "required": ["id", "name", "project", "revision", "created", "updated", "spec", "status"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "project": {"type": "string"},
            "revision": {"type": "integer"}, "created": {"type": "integer"}, "updated": {"type": "integer"},
            "spec": {"allOf": [{"$ref": "#/components/schemas/ServiceSpec"}],
                "properties": {"ports": {"type": "array", "items": {"$ref": "#/components/schemas/Port"}}}},
            "status": {"type": "object", "description": "what the service does, computed from its replicas and its rollout",
                "properties": {
                    "state": {"enum": ["running", "deploying", "degraded", "crash_looping", "pending", "paused", "stopped", "no_image"]},
                    "label": {"type": "string", "description": "the state as shown: deploying n/m, no image yet, else the state"},
                    "detail": {"type": "string", "description": "why (a pending reason, an exit code, a failing check)"},
                    "exit_code": {"type": "integer", "description": "the last exit code of a crashing replica"},
                    "oom_killed": {"type": "boolean"},
                    "generation": {"type": "integer"}, "restart_generation": {"type": "integer"},
                    "replicas": {"type": "object", "properties": {"desired": {"type": "integer"}, "total": {"type": "integer"},
                        "running": {"type": "integer"}, "pending": {"type": "integer"}, "failed": {"type": "integer"},
                        "ready": {"type": "integer"}}},
                    "reason": {"type": "string", "description": "why a rollout halted"},
                    "live": {"allOf": [{"$ref": "#/components/schemas/Deploy"}], "description": "the newest deploy that rolled out: the version live now"},
                    "coming": {"allOf": [{"$ref": "#/components/schemas/Deploy"}], "description": "a newer deploy in progress or halted"}}},
            "urls": {"type": "array", "items": {"type": "string"}}}},

        "ServiceList": list("Service"),
        "Scale": {"type": "object", "required": ["replicas"], "additionalProperties": false,
            "properties": {"replicas": {"type": "integer", "minimum": 0, "maximum": 1000}}},
        "Rollback": {"type": "object", "required": ["build"], "additionalProperties": false,
            "properties": {"build": {"type": "integer", "minimum": 1}}},
        "Replica": {"type": "object", "required": ["id", "node", "state", "image", "generation", "ports", "restarts", "message"], "properties": {
            "id": {"type": "string"}, "node": {"type": "string", "nullable": true},
            "state": {"enum": ["pending", "starting", "running", "failed", "exited", "stopping"]},
            "image": {"type": "string"}, "generation": {"type": "integer"},
            "ports": {"type": "array", "items": {"type": "object"}}, "restarts": {"type": "integer"}, "message": {"type": "string"},
            "health": {"enum": ["starting", "healthy", "unhealthy"]}, "health_message": {"type": "string"}}},
        "ReplicaList": list("Replica"),
        "Exec": {"type": "object", "required": ["command"], "additionalProperties": false, "properties": {
            "command": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "replica": {"type": "string", "nullable": true},
            "timeout": {"type": "integer", "minimum": 1, "maximum": 300, "nullable": true}}},
        "ExecOutput": {"type": "object", "required": ["exit_code", "stdout", "stderr"], "properties": {
            "exit_code": {"type": "integer"}, "stdout": {"type": "string"}, "stderr": {"type": "string"}}},
        "JoinToken": {"type": "object", "additionalProperties": false,
            "properties": {"ttl": {"type": "integer", "minimum": 10, "maximum": 604800}}},
        "JoinTokenCreated": {"type": "object", "required": ["token", "expires"],
            "properties": {"token": {"type": "string"}, "expires": {"type": "integer"}}},
        "Join": {"type": "object", "required": ["token", "name"], "additionalProperties": false, "properties": {
            "token": {"type": "string"}, "name": name, "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "Joined": {"type": "object", "required": ["id", "name", "credential"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "credential": {"type": "string"}}},
        "Node": {"type": "object", "required": ["id", "name", "labels", "alive", "capacity"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "labels": {"type": "object"}, "address": {"type": "string"},
            "alive": {"type": "boolean"}, "capacity": {"type": "object"}, "status": {"type": "object", "nullable": true},
            "ready": {"type": "boolean"},
            "state": {"type": "string", "enum": ["ready", "lost", "isolation not enforced", "low disk"]},
            "created": {"type": "integer"}}},
        "NodeList": list("Node"),
    });
    // Domains and certificates (a second block: one json! this long passes
    // the macro's recursion limit).
    let domains = json!({
        "DomainRequest": {"type": "object", "required": ["domain"], "additionalProperties": false,
            "properties": {"domain": {"type": "string"}}},
        "Certificate": {"type": "object", "required": ["domain", "source", "status"], "properties": {
            "domain": {"type": "string"}, "source": {"enum": ["acme", "uploaded"]},
            "status": {"enum": ["pending", "issued", "failed"]}, "error": {"type": "string", "nullable": true},
            "names": {"type": "array", "items": {"type": "string"}},
            "not_after": {"type": "integer", "nullable": true}, "issued_at": {"type": "integer", "nullable": true},
            "renew_at": {"type": "integer", "nullable": true}, "next_attempt": {"type": "integer", "nullable": true},
            "attempts": {"type": "integer"}}},
        "Domain": {"type": "object", "required": ["domain", "certificate"], "properties": {
            "domain": {"type": "string"},
            "certificate": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/Certificate"}]}}},
        "DomainList": {"type": "array", "items": {"$ref": "#/components/schemas/Domain"}},
        "CertificateUpload": {"type": "object", "required": ["chain", "key"], "additionalProperties": false,
            "properties": {"chain": {"type": "string", "description": "PEM, leaf first"},
                "key": {"type": "string", "description": "PEM private key"}}}
    });
    if let (Some(all), Some(more)) = (schemas.as_object_mut(), domains.as_object()) {
        all.extend(more.clone());
    }
    let builds = json!({
        "BuildRequest": {"type": "object", "additionalProperties": false, "properties": {
            "commit": {"type": "string", "nullable": true, "pattern": "^[0-9a-fA-F]{4,64}$"}}},
        "Build": {"type": "object", "required": ["number", "status", "commit", "image", "digest", "message", "steps", "created"], "properties": {
            "number": {"type": "integer"},
            "status": {"enum": ["queued", "cloning", "preparing", "installing_dependencies", "building", "pushing", "succeeded", "failed", "canceled"]},
            "commit": {"type": "string", "nullable": true}, "image": {"type": "string", "nullable": true},
            "digest": {"type": "string", "nullable": true}, "message": {"type": "string"},
            "steps": {"type": "array", "items": {"type": "object"}}, "created": {"type": "integer"},
            "finished": {"type": "integer", "nullable": true},
            "by": {"type": "string", "description": "who or what asked: a user, `webhook (github push)`, `poll`"},
            "stack": {"type": "object", "description": "a stack's build (`source.compose`): the file read",
                "properties": {"file": {"type": "string"}, "text": {"type": "string"},
                    "env_files": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "applied": {"type": "object", "description": "a stack build's apply to its project",
                "properties": {"started": {"type": "integer"}, "finished": {"type": "integer", "nullable": true},
                    "done": {"type": "array", "items": {"type": "string"}},
                    "builds": {"type": "array", "items": {"type": "string"}},
                    "error": {"type": "string", "nullable": true}}}}},
        "BuildList": list("Build"),
        "Deploy": {"type": "object", "required": ["generation", "cause", "by", "started", "outcome"], "properties": {
            "generation": {"type": "integer"}, "image": {"type": "string", "nullable": true},
            "cause": {"type": "string", "description": "`created`, `spec change`, `rollback to build #2`, `build #3 (commit abc1234)`"},
            "by": {"type": "string"}, "started": {"type": "integer"},
            "finished": {"type": "integer", "nullable": true},
            "outcome": {"enum": ["in_progress", "rolled_out", "halted", "superseded"]},
            "reason": {"type": "string"}}},
        "DeployList": list("Deploy"),
    });
    if let (Some(all), Some(more)) = (schemas.as_object_mut(), builds.as_object()) {
        all.extend(more.clone());
    }
    let jobs = json!({
        "JobRequest": {"type": "object", "required": ["command"], "additionalProperties": false, "properties": {
            "command": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "timeout": {"type": "integer", "minimum": 1, "maximum": 86400, "nullable": true,
                "description": "seconds before it is killed (default 3600)"}}},
        "Job": {"type": "object", "required": ["id", "project", "service", "command", "timeout", "state", "created"], "properties": {
            "id": {"type": "string"}, "project": {"type": "string"}, "service": {"type": "string"},
            "command": {"type": "array", "items": {"type": "string"}}, "timeout": {"type": "integer"},
            "state": {"enum": ["pending", "running", "succeeded", "failed", "cancelled", "timed_out"]},
            "schedule": {"type": "string"}, "tick": {"type": "integer"}, "created_by": {"type": "string"}, "node": {"type": "string"},
            "image": {"type": "string"}, "message": {"type": "string"}, "exit_code": {"type": "integer"},
            "logs": {"type": "string", "description": "the last 64 KiB of its output"},
            "cancel": {"type": "boolean"}, "created": {"type": "integer"},
            "started": {"type": "integer"}, "finished": {"type": "integer"}}},
        "JobList": list("Job"),
        "Schedule": {"type": "object", "required": ["name", "cron", "command"], "additionalProperties": false, "properties": {
            "name": {"type": "string"},
            "cron": {"type": "string", "description": "5 fields, or 6 with seconds first (croner)"},
            "command": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "timezone": {"type": "string", "default": "UTC"},
            "concurrency": {"enum": ["forbid", "allow", "replace"], "default": "forbid"},
            "timeout": {"type": "integer", "minimum": 1, "maximum": 86400, "nullable": true}}},
        "ScheduleView": {"type": "object", "properties": {
            "name": {"type": "string"}, "cron": {"type": "string"},
            "command": {"type": "array", "items": {"type": "string"}}, "timezone": {"type": "string"},
            "concurrency": {"type": "string"}, "timeout": {"type": "integer", "nullable": true},
            "next_run": {"type": "integer", "nullable": true}, "last_tick": {"type": "integer", "nullable": true},
            "skipped": {"type": "string", "nullable": true},
            "last_job": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/Job"}]}}},
        "ScheduleList": list("ScheduleView"),
    });
    if let (Some(all), Some(more)) = (schemas.as_object_mut(), jobs.as_object()) {
        all.extend(more.clone());
    }
    let vendors = json!({
        "VendorLink": {"type": "object", "required": ["vendor", "login", "account_id"], "properties": {
            "vendor": {"enum": ["github", "gitlab", "bitbucket"]}, "login": {"type": "string"},
            "account_id": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}},
            "expires": {"type": "integer", "nullable": true}, "created": {"type": "integer"},
            "updated": {"type": "integer"}}},
        "VendorLinkList": list("VendorLink"),
        "RepoPage": {"type": "object", "required": ["items", "next_page"], "properties": {
            "items": {"type": "array", "items": {"type": "object", "properties": {
                "full_name": {"type": "string"}, "private": {"type": "boolean"},
                "clone_url": {"type": "string"}, "default_branch": {"type": "string", "nullable": true}}}},
            "next_page": {"type": "integer", "nullable": true}}},
        "BranchPage": {"type": "object", "required": ["items", "next_page"], "properties": {
            "items": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "commit": {"type": "string"}}}},
            "next_page": {"type": "integer", "nullable": true}}},
        "Quota": {"type": "object", "additionalProperties": false,
            "description": "a user's limits; null or absent is unlimited; a change past one gets 403 with field naming it",
            "properties": {
            "projects": {"type": "integer", "minimum": 0, "nullable": true},
            "services": {"type": "integer", "minimum": 0, "nullable": true},
            "replicas": {"type": "integer", "minimum": 0, "nullable": true},
            "memory": {"type": "integer", "minimum": 0, "nullable": true, "description": "MiB: replicas x memory, summed over the user's services"},
            "queued_builds": {"type": "integer", "minimum": 0, "nullable": true},
            "registry_bytes": {"type": "integer", "minimum": 0, "nullable": true}}},
        "QuotaView": {"type": "object", "required": ["user", "username", "quota", "usage"], "properties": {
            "user": {"type": "string"}, "username": {"type": "string"},
            "quota": {"$ref": "#/components/schemas/Quota"},
            "usage": {"type": "object", "properties": {
                "projects": {"type": "integer"}, "services": {"type": "integer"},
                "replicas": {"type": "integer"}, "memory": {"type": "integer"},
                "queued_builds": {"type": "integer"}, "registry_bytes": {"type": "integer"}}}}},
        "Allowlist": {"type": "object", "additionalProperties": false, "properties": {
            "owners": {"type": "array", "maxItems": 1000, "items": {"type": "string",
                "description": "host (e.g. github.com) or host/owner (e.g. github.com/acme)"}}}},
        "HookResult": {"type": "object", "required": ["queued", "message"], "properties": {
            "queued": {"type": "boolean"}, "message": {"type": "string"},
            "build": {"type": "integer", "nullable": true}}},
        "Webhook": {"type": "object", "required": ["url", "secret"], "properties": {
            "url": {"type": "string"}, "secret": {"type": "string"},
            "vendor": {"type": "string", "nullable": true}, "active": {"type": "boolean"},
            "vendor_hook": {"type": "boolean"}, "error": {"type": "string", "nullable": true}}},
    });
    if let (Some(all), Some(more)) = (schemas.as_object_mut(), vendors.as_object()) {
        all.extend(more.clone());
    }
    let apply = json!({
        "ApplyDocument": {"type": "object", "additionalProperties": false,
            "description": "lb's format (below) or a docker-compose file (see docs/contracts.md)",
            "properties": {
            "project": {"type": "string", "description": "the project's name, when given it must match"},
            "services": {"type": "object", "description": "service name to its spec (ServiceSpec without name) and depends_on",
                "additionalProperties": {"type": "object"}},
            "scripts": {"type": "object", "description": "script name to the script PUT .../scripts/{name} takes (without name); absent: scripts are left alone",
                "additionalProperties": {"type": "object"}}}},
        "Applied": {"type": "object", "required": ["project", "created_project", "dry_run", "plan", "done"], "properties": {
            "project": {"type": "string"}, "created_project": {"type": "boolean"}, "dry_run": {"type": "boolean"},
            "plan": {"type": "object", "properties": {
                "creates": {"type": "array", "items": {"type": "object"}},
                "updates": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "revision": {"type": "integer"},
                    "changes": {"type": "array", "items": {"type": "object", "properties": {
                        "field": {"type": "string"}, "from": {}, "to": {}}}}}}},
                "deletes": {"type": "array", "items": {"type": "object"}},
                "unchanged": {"type": "array", "items": {"type": "string"}},
                "kept": {"type": "array", "items": {"type": "string"}},
                "scripts": {"type": "object", "description": "the same for the project's scripts (creates and unchanged by name)"}}},
            "done": {"type": "array", "items": {"type": "string"}}}},
    });
    if let (Some(all), Some(more)) = (schemas.as_object_mut(), apply.as_object()) {
        all.extend(more.clone());
    }
    let more = json!({
        "ApiIndex": {"type": "object", "required": ["name", "version", "openapi", "links"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "openapi": {"type": "string", "description": "path of this document"},
            "links": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "paths of the main collections, by name"}}},
        "RegistryToken": {"type": "object", "required": ["token", "access_token", "expires_in"], "properties": {
            "token": {"type": "string"}, "access_token": {"type": "string"},
            "expires_in": {"type": "integer", "description": "seconds"}}},
        "InternalAsk": {"type": "object", "required": ["node", "message", "limit"], "properties": {
            "node": {"type": "string"}, "message": {"type": "object", "description": "a ToNode message of the node protocol"},
            "limit": {"type": "integer", "minimum": 0, "description": "seconds to wait for the answer (1-3600)"}}},
        "NodeAnswer": {"type": "object", "description": "a FromNode message of the node protocol"},
    });
    if let (Some(all), Some(more)) = (schemas.as_object_mut(), more.as_object()) {
        all.extend(more.clone());
    }
    let scripts = json!({
        "Script": {"type": "object", "required": ["body"], "additionalProperties": false, "properties": {
            "name": {"type": "string", "description": "a DNS label (default: the path's)"},
            "interpreter": {"oneOf": [{"enum": ["sh", "bash", "python3"]},
                {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 32,
                 "description": "a command reading the program from stdin; the run's args are appended"}]},
            "body": {"type": "string", "maxLength": 262144, "description": "the program, passed on stdin"},
            "args": {"type": "array", "maxItems": 100, "items": {"type": "string"}},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "timeout": {"type": "integer", "minimum": 1, "maximum": 3600, "description": "seconds (default 60); the run is killed after"},
            "updated": {"type": "integer", "readOnly": true}, "updated_by": {"type": "string", "readOnly": true},
            "revision": {"type": "integer", "readOnly": true}}},
        "ScriptList": list("Script"),
        "ScriptRunRequest": {"type": "object", "additionalProperties": false, "properties": {
            "replica": {"type": "string", "nullable": true, "description": "null: the first running replica; a replica id; or \"all\" (in parallel)"},
            "args": {"type": "array", "items": {"type": "string"}, "nullable": true, "description": "default: the script's args"}}},
        "ScriptRun": {"type": "object", "required": ["id", "script", "service", "by", "started", "replicas"], "properties": {
            "id": {"type": "string"}, "script": {"type": "string"}, "service": {"type": "string"},
            "by": {"type": "string"}, "started": {"type": "integer"},
            "args": {"type": "array", "items": {"type": "string"}},
            "replicas": {"type": "array", "items": {"type": "object", "required": ["replica", "stdout", "stderr", "duration_ms"], "properties": {
                "replica": {"type": "string"}, "exit_code": {"type": "integer", "nullable": true},
                "stdout": {"type": "string", "description": "at most 64 KiB (2 KiB in a record)"},
                "stderr": {"type": "string"}, "truncated": {"type": "boolean"},
                "duration_ms": {"type": "integer"}, "timed_out": {"type": "boolean"},
                "error": {"type": "string", "nullable": true}}}}}},
        "ScriptRunList": list("ScriptRun"),
    });
    if let (Some(all), Some(more)) = (schemas.as_object_mut(), scripts.as_object()) {
        all.extend(more.clone());
    }
    schemas
}

/// The security requirement of a route.
fn security(auth: Auth) -> Option<Value> {
    let scheme = match auth {
        Auth::Public => return None,
        Auth::User => json!([{"bearer": []}, {"session": []}]),
        Auth::Node => json!([{"node": []}]),
        Auth::Cluster => json!([{"cluster": []}]),
        Auth::Basic => json!([{"basic": []}]),
    };
    Some(scheme)
}

/// One operation of the document.
fn operation(route: &Route) -> Value {
    let error_ref = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    let mut op = Map::new();
    op.insert("operationId".into(), json!(route.id));
    op.insert("tags".into(), json!([route.tag]));
    op.insert("summary".into(), json!(route.summary));
    let mut params: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"},
            "description": "id or name"})
        })
        .collect();
    if route.paged {
        params.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}));
        params.push(
            json!({"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}),
        );
    }
    if route.logs {
        params.push(json!({"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 10000}}));
        params.push(json!({"name": "follow", "in": "query", "schema": {"type": "boolean"}}));
        params.push(json!({"name": "replica", "in": "query", "schema": {"type": "string"}}));
        params.push(
            json!({"name": "timestamps", "in": "query", "schema": {"type": "boolean"},
            "description": "each line starts with its RFC 3339 time"}),
        );
    }
    for query in route.query {
        params.push(
            json!({"name": query.name, "in": "query", "schema": {"type": query.kind},
            "description": query.about}),
        );
    }
    if route.if_match {
        params.push(
            json!({"name": "If-Match", "in": "header", "schema": {"type": "string"},
            "description": "the revision the change is based on; a stale one gets 409"}),
        );
    }
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let Some(schema) = route.body {
        let mut body = json!({"required": true, "content": {"application/json": {
            "schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
        if route.id == "createService" {
            body["content"]["application/json"]["examples"] = service_examples();
        }
        op.insert("requestBody".into(), body);
    }
    let mut responses = Map::new();
    let (status, schema) = route.ok;
    let description = if status == 101 {
        "switching protocols: a websocket"
    } else {
        "success"
    };
    responses.insert(
        status.to_string(),
        match schema {
            Some(s) => json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}}}),
            None => json!({"description": description}),
        },
    );
    if route.id == "getServiceLogs" {
        // Whose output it is and how that replica last ended.
        let header =
            |kind: &str, about: &str| json!({"description": about, "schema": {"type": kind}});
        responses[&status.to_string()]["headers"] = json!({
            "X-Lb-Replica": header("string", "the replica whose output this is"),
            "X-Lb-Replica-State": header("string", "its state: running, exited, failed, ..."),
            "X-Lb-Restarts": header("integer", "its restarts so far"),
            "X-Lb-Exit-Code": header("integer", "its container's last exit code, once it has exited"),
            "X-Lb-Oom-Killed": header("boolean", "whether that exit was an out-of-memory kill"),
        });
    }
    if route.upgrade {
        responses.insert(
            "101".into(),
            json!({"description": "switching protocols: the same as a websocket"}),
        );
    }
    responses.insert(
        "default".into(),
        json!({"description": "error", "content": error_ref}),
    );
    op.insert("responses".into(), Value::Object(responses));
    op.insert(
        "security".into(),
        security(route.auth).unwrap_or_else(|| json!([])),
    );
    Value::Object(op)
}

/// Examples of a service to create: ports written as `docker run -p`
/// writes them (the object form is read too, and is what responses hold).
fn service_examples() -> Value {
    json!({
        "image": {"summary": "an image with a published port (host 8080 to container 80)",
            "value": {"name": "web", "image": "nginx:1.25", "memory": 64, "ports": ["8080:80"]}},
        "ports": {"summary": "ports: HOST:CONTAINER, /udp, and a container port alone (the node picks the host port)",
            "value": {"name": "web", "image": "nginx:1.25", "ports": ["8080:80", "5353:53/udp", "9000"]}},
        "object": {"summary": "the object form of a port, as responses write it",
            "value": {"name": "web", "image": "nginx:1.25",
                "ports": [{"container": 80, "host": 8080, "protocol": "tcp"}]}}
    })
}

/// The OpenAPI 3 document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_lowercase()] = operation(route);
    }
    let tags: Vec<Value> = TAGS
        .iter()
        .map(|(name, about)| json!({"name": name, "description": about}))
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {"title": "lb API", "version": env!("CARGO_PKG_VERSION"),
            "description": "REST API of lb, a container cluster platform. Start at GET /api/v1."},
        "servers": [{"url": "/", "description": "this server"}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                    "description": "an access token from /auth/login or an API token from /tokens"},
                "session": {"type": "apiKey", "in": "cookie", "name": "lb_session",
                    "description": "the web UI's session; changes also need the X-CSRF-Token header"},
                "node": {"type": "http", "scheme": "bearer",
                    "description": "a node's credential, from /nodes/join"},
                "cluster": {"type": "http", "scheme": "bearer",
                    "description": "the cluster's internal secret, known to API instances only"},
                "basic": {"type": "http", "scheme": "basic",
                    "description": "a user name with a password or API token, or a node's credential as the password"}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_metrics() {
        for (method, path, route) in [
            ("GET", "/api/v1/projects/demo", "/api/v1/projects/{p}"),
            (
                "POST",
                "/api/v1/projects/demo/services/web/scale",
                "/api/v1/projects/{p}/services/{s}/scale",
            ),
            (
                "GET",
                "/api/v1/projects/demo/services/web/replicas",
                "/api/v1/projects/{p}/services/{s}/replicas",
            ),
            // Fixed segments beat parameters.
            ("POST", "/api/v1/nodes/join", "/api/v1/nodes/join"),
            ("GET", "/api/v1/nodes/n1", "/api/v1/nodes/{n}"),
            ("GET", "/api/v1", "/api/v1"),
            ("GET", "/api/v1/", "/api/v1"),
            ("GET", "/metrics", "/metrics"),
            ("GET", "/etc/passwd", "unmatched"),
            ("GET", "/", "unmatched"),
        ] {
            assert_eq!(route_of(method, path), route, "{method} {path}");
        }
    }

    #[test]
    fn ids_are_unique_camel_case_and_tags_known() {
        let mut seen = std::collections::BTreeSet::new();
        for route in ROUTES {
            assert!(seen.insert(route.id), "operationId {} used twice", route.id);
            let mut chars = route.id.chars();
            assert!(
                chars.next().is_some_and(|c| c.is_ascii_lowercase())
                    && chars.all(|c| c.is_ascii_alphanumeric()),
                "operationId {:?} of {} {} is not lowerCamelCase",
                route.id,
                route.method,
                route.path
            );
            assert!(
                TAGS.iter().any(|(tag, _)| *tag == route.tag),
                "{} {}: tag {:?} is not in TAGS",
                route.method,
                route.path,
                route.tag
            );
        }
        let mut pairs = std::collections::BTreeSet::new();
        for route in ROUTES {
            assert!(
                pairs.insert((route.method, route.path)),
                "{} {} listed twice",
                route.method,
                route.path
            );
        }
    }

    #[test]
    fn every_route_is_in_the_document_and_every_ref_resolves() {
        let doc = document();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.to_lowercase()];
            assert_eq!(
                op["operationId"], route.id,
                "{} {}",
                route.method, route.path
            );
        }
        fn refs(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} does not resolve"
            );
        }
    }

    #[test]
    fn the_index_links_only_to_routes() {
        let index = index();
        let links = index["links"].as_object().cloned().unwrap_or_default();
        assert!(links.len() >= 8, "{index}");
        for (name, path) in links {
            assert!(
                ROUTES.iter().any(|r| r.path == path),
                "link {name} -> {path} is no route"
            );
        }
        assert_eq!(index["openapi"], "/api/v1/openapi.json");
    }
}
