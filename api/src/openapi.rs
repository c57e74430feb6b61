//! The OpenAPI 3 description of the REST API, built from one route table
//! ([`ROUTES`]) that the metrics also use to name routes. A test checks that
//! every route the server answers is in the table and the other way round.

use serde_json::{json, Map, Value};

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path template, OpenAPI style (`/api/v1/projects/{p}`).
    pub path: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Whether it needs credentials.
    pub auth: bool,
    /// Schema name of the request body, if any.
    pub body: Option<&'static str>,
    /// Success status and schema name of its body, if any.
    pub ok: (u16, Option<&'static str>),
    /// Whether it accepts `If-Match`.
    pub if_match: bool,
    /// Whether it pages with `limit`/`offset`.
    pub paged: bool,
    /// Whether it takes `tail` and `replica` (logs).
    pub logs: bool,
}

const fn r(method: &'static str, path: &'static str, summary: &'static str) -> Route {
    Route {
        method,
        path,
        summary,
        auth: true,
        body: None,
        ok: (200, None),
        if_match: false,
        paged: false,
        logs: false,
    }
}

impl Route {
    const fn public(mut self) -> Self {
        self.auth = false;
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
}

const P: &str = "/api/v1/projects/{p}";

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    r("POST", "/api/v1/auth/signup", "Create an account")
        .public()
        .body("Credentials")
        .ok(201, Some("User")),
    r("POST", "/api/v1/auth/login", "Log in: an access token")
        .public()
        .body("Credentials")
        .ok(200, Some("Login")),
    r("GET", "/api/v1/me", "The caller").ok(200, Some("User")),
    r("POST", "/api/v1/tokens", "Create an API token (shown once)")
        .body("TokenCreate")
        .ok(201, Some("Token")),
    r("GET", "/api/v1/tokens", "List API tokens").ok(200, Some("TokenList")),
    r("DELETE", "/api/v1/tokens/{id}", "Revoke an API token").ok(204, None),
    r("GET", "/api/v1/projects", "List projects")
        .paged()
        .ok(200, Some("ProjectList")),
    r("POST", "/api/v1/projects", "Create a project")
        .body("ProjectInput")
        .ok(201, Some("Project")),
    r("GET", P, "Read a project").ok(200, Some("Project")),
    r("PUT", P, "Replace a project")
        .body("ProjectInput")
        .if_match()
        .ok(200, Some("Project")),
    r("PATCH", P, "Merge-patch a project")
        .body("MergePatch")
        .if_match()
        .ok(200, Some("Project")),
    r("DELETE", P, "Delete a project and everything in it")
        .if_match()
        .ok(204, None),
    r("GET", "/api/v1/projects/{p}/services", "List services")
        .paged()
        .ok(200, Some("ServiceList")),
    r("POST", "/api/v1/projects/{p}/services", "Create a service")
        .body("ServiceSpec")
        .ok(201, Some("Service")),
    r("GET", "/api/v1/projects/{p}/services/{s}", "Read a service").ok(200, Some("Service")),
    r(
        "PUT",
        "/api/v1/projects/{p}/services/{s}",
        "Replace a service's spec",
    )
    .body("ServiceSpec")
    .if_match()
    .ok(200, Some("Service")),
    r(
        "PATCH",
        "/api/v1/projects/{p}/services/{s}",
        "Merge-patch a service's spec",
    )
    .body("MergePatch")
    .if_match()
    .ok(200, Some("Service")),
    r(
        "DELETE",
        "/api/v1/projects/{p}/services/{s}",
        "Delete a service with its replicas and builds",
    )
    .if_match()
    .ok(204, None),
    r(
        "POST",
        "/api/v1/projects/{p}/services/{s}/scale",
        "Set the replica count",
    )
    .body("Scale")
    .if_match()
    .ok(200, Some("Service")),
    r(
        "POST",
        "/api/v1/projects/{p}/services/{s}/restart",
        "Restart every replica",
    )
    .if_match()
    .ok(200, Some("Service")),
    r(
        "POST",
        "/api/v1/projects/{p}/services/{s}/pause",
        "Run no replica, keep the count",
    )
    .if_match()
    .ok(200, Some("Service")),
    r(
        "POST",
        "/api/v1/projects/{p}/services/{s}/resume",
        "Run the replicas again",
    )
    .if_match()
    .ok(200, Some("Service")),
    r(
        "POST",
        "/api/v1/projects/{p}/services/{s}/rollback",
        "Run an earlier build's image",
    )
    .body("Rollback")
    .if_match()
    .ok(200, Some("Service")),
    r(
        "GET",
        "/api/v1/projects/{p}/services/{s}/replicas",
        "List replicas",
    )
    .ok(200, Some("ReplicaList")),
    r(
        "GET",
        "/api/v1/projects/{p}/services/{s}/logs",
        "The last lines of a replica's output (text); with follow=true a chunked body that keeps coming; upgraded to a websocket, binary frames of output",
    )
    .paged_logs()
    .ok(200, None),
    r(
        "POST",
        "/api/v1/projects/{p}/services/{s}/exec",
        "Run a command in a replica (GET upgraded to a websocket: interactive, with a TTY)",
    )
    .body("Exec")
    .ok(200, Some("ExecOutput")),
    r("GET", "/api/v1/projects/{p}/services/{s}/builds", "List builds, newest first")
        .ok(200, Some("BuildList")),
    r("POST", "/api/v1/projects/{p}/services/{s}/builds", "Queue a build of the service's source")
        .body("BuildRequest")
        .ok(201, Some("Build")),
    r("GET", "/api/v1/projects/{p}/services/{s}/builds/{n}", "Read a build").ok(200, Some("Build")),
    r(
        "POST",
        "/api/v1/projects/{p}/services/{s}/builds/{n}/cancel",
        "Cancel a build that has not ended",
    )
    .ok(200, Some("Build")),
    r(
        "GET",
        "/api/v1/projects/{p}/services/{s}/builds/{n}/logs",
        "A build's output (text); upgraded to a websocket it follows the build",
    )
    .ok(200, None),
    r(
        "GET",
        "/api/v1/events",
        "Websocket of visible changes (snapshot, then changes)",
    )
    .ok(101, None),
    r(
        "GET",
        "/api/v1/registry/token",
        "A registry token (Docker token auth; Basic credentials, scope=repository:<project>/<service>:pull,push)",
    )
    .ok(200, None),
    r("GET", "/api/v1/vendors", "The caller's linked vendor accounts (no tokens)")
        .ok(200, Some("VendorLinkList")),
    r(
        "GET",
        "/api/v1/vendors/{v}/connect",
        "Link a vendor account: a redirect to the vendor's consent page (v: github, gitlab, bitbucket)",
    )
    .ok(302, None),
    r(
        "GET",
        "/api/v1/vendors/{v}/callback",
        "Where the vendor sends the browser back (?code=&state=, with the state cookie from connect)",
    )
    .public()
    .ok(200, Some("VendorLink")),
    r("DELETE", "/api/v1/vendors/{v}", "Unlink a vendor account").ok(204, None),
    r(
        "GET",
        "/api/v1/vendors/{v}/repos",
        "Repositories the linked account reaches (?page=&per_page=)",
    )
    .ok(200, Some("RepoPage")),
    r(
        "GET",
        "/api/v1/vendors/{v}/branches",
        "Branches of a repository (?repo=owner/name&page=&per_page=)",
    )
    .ok(200, Some("BranchPage")),
    r(
        "GET",
        "/api/v1/admin/allowlist",
        "Repository owners builds may come from (admin)",
    )
    .ok(200, Some("Allowlist")),
    r(
        "PUT",
        "/api/v1/admin/allowlist",
        "Replace the allowlist; empty allows any (admin)",
    )
    .body("Allowlist")
    .ok(200, Some("Allowlist")),
    r(
        "POST",
        "/api/v1/hooks/{v}/{sid}",
        "A vendor's push webhook (signed with the service's secret; queues a build of the pushed commit)",
    )
    .public()
    .ok(202, Some("HookResult")),
    r(
        "GET",
        "/api/v1/projects/{p}/services/{s}/webhook",
        "The service's webhook URL and secret, for setting it up by hand",
    )
    .ok(200, Some("Webhook")),
    r("GET", "/api/v1/openapi.json", "This document")
        .public()
        .ok(200, None),
];

/// The route template a request path matched, for metric labels; unknown
/// paths share one label so they cannot blow up the metric's cardinality.
pub fn route_of(method: &str, path: &str) -> &'static str {
    for fixed in ["/healthz", "/readyz", "/metrics"] {
        if path == fixed {
            return fixed;
        }
    }
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
        "Port": {"type": "object", "required": ["container"], "additionalProperties": false, "properties": {
            "container": {"type": "integer", "minimum": 1, "maximum": 65535},
            "host": {"type": "integer", "nullable": true, "minimum": 1, "maximum": 65535},
            "protocol": {"enum": ["tcp", "udp"]}}},
        "ServiceSpec": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
            "name": name, "description": {"type": "string", "maxLength": 1024},
            "image": {"type": "string", "nullable": true},
            "source": {"type": "object", "nullable": true},
            "replicas": {"type": "integer", "minimum": 0, "maximum": 1000},
            "memory": {"type": "integer", "minimum": 6, "description": "MiB, a hard limit"},
            "cpu": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1024},
            "ports": {"type": "array", "items": {"$ref": "#/components/schemas/Port"}},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "command": {"type": "array", "nullable": true, "items": {"type": "string"}},
            "volumes": {"type": "array", "items": {"type": "object", "required": ["name", "path"],
                "properties": {"name": name, "path": {"type": "string"}}}},
            "domains": {"type": "array", "items": {"type": "string"}},
            "node_selector": {"type": "object", "additionalProperties": {"type": "string"}},
            "autodeploy": {"type": "boolean"},
            "state": {"enum": ["running", "paused"]},
            "stop_timeout": {"type": "integer", "minimum": 0, "maximum": 300, "default": 10,
                "description": "seconds between SIGTERM and SIGKILL when a replica is stopped"}}},
        "Service": {"type": "object", "required": ["id", "name", "project", "revision", "created", "updated", "spec", "status"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "project": {"type": "string"},
            "revision": {"type": "integer"}, "created": {"type": "integer"}, "updated": {"type": "integer"},
            "spec": {"$ref": "#/components/schemas/ServiceSpec"}, "status": {"type": "object"}}},
        "ServiceList": list("Service"),
        "Scale": {"type": "object", "required": ["replicas"], "additionalProperties": false,
            "properties": {"replicas": {"type": "integer", "minimum": 0, "maximum": 1000}}},
        "Rollback": {"type": "object", "required": ["build"], "additionalProperties": false,
            "properties": {"build": {"type": "integer", "minimum": 1}}},
        "Replica": {"type": "object", "required": ["id", "node", "state", "image", "generation", "ports", "restarts", "message"], "properties": {
            "id": {"type": "string"}, "node": {"type": "string", "nullable": true},
            "state": {"enum": ["pending", "starting", "running", "failed", "exited", "stopping"]},
            "image": {"type": "string"}, "generation": {"type": "integer"},
            "ports": {"type": "array", "items": {"type": "object"}}, "restarts": {"type": "integer"}, "message": {"type": "string"}}},
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
            "created": {"type": "integer"}}},
        "NodeList": list("Node"),
    });
    let builds = json!({
        "BuildRequest": {"type": "object", "additionalProperties": false, "properties": {
            "commit": {"type": "string", "nullable": true, "pattern": "^[0-9a-fA-F]{4,64}$"}}},
        "Build": {"type": "object", "required": ["number", "status", "commit", "image", "digest", "message", "steps", "created"], "properties": {
            "number": {"type": "integer"},
            "status": {"enum": ["queued", "cloning", "preparing", "installing_dependencies", "building", "pushing", "succeeded", "failed", "canceled"]},
            "commit": {"type": "string", "nullable": true}, "image": {"type": "string", "nullable": true},
            "digest": {"type": "string", "nullable": true}, "message": {"type": "string"},
            "steps": {"type": "array", "items": {"type": "object"}}, "created": {"type": "integer"},
            "finished": {"type": "integer", "nullable": true}}},
        "BuildList": list("Build"),
    });
    if let (Some(all), Some(more)) = (schemas.as_object_mut(), builds.as_object()) {
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
    schemas
}

/// The OpenAPI 3 document.
pub fn document() -> Value {
    let error_ref = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let mut op = Map::new();
        op.insert("summary".into(), json!(route.summary));
        op.insert(
            "operationId".into(),
            json!(format!("{} {}", route.method, route.path)),
        );
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
            params.push(json!({"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}));
        }
        if route.logs {
            params.push(json!({"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 10000}}));
            params.push(json!({"name": "follow", "in": "query", "schema": {"type": "boolean"}}));
            params.push(json!({"name": "replica", "in": "query", "schema": {"type": "string"}}));
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
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{schema}")}}}}),
            );
        }
        let mut responses = Map::new();
        let (status, schema) = route.ok;
        responses.insert(
            status.to_string(),
            match schema {
                Some(s) => json!({"description": "success", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}}}),
                None => json!({"description": "success"}),
            },
        );
        responses.insert(
            "default".into(),
            json!({"description": "error", "content": error_ref}),
        );
        op.insert("responses".into(), Value::Object(responses));
        if route.auth {
            op.insert("security".into(), json!([{"bearer": []}]));
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_lowercase()] = Value::Object(op);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "lb API", "version": env!("CARGO_PKG_VERSION"),
            "description": "REST API of lb, a container cluster platform"},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "an access token from /auth/login or an API token from /tokens"}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_metrics() {
        assert_eq!(
            route_of("GET", "/api/v1/projects/demo"),
            "/api/v1/projects/{p}"
        );
        assert_eq!(
            route_of("POST", "/api/v1/projects/demo/services/web/scale"),
            "/api/v1/projects/{p}/services/{s}/scale"
        );
        assert_eq!(
            route_of("GET", "/api/v1/projects/demo/services/web/replicas"),
            "/api/v1/projects/{p}/services/{s}/replicas"
        );
        assert_eq!(route_of("GET", "/metrics"), "/metrics");
        assert_eq!(route_of("GET", "/etc/passwd"), "unmatched");
    }

    #[test]
    fn every_route_is_in_the_document() {
        let doc = document();
        for route in ROUTES {
            assert!(
                doc["paths"][route.path][route.method.to_lowercase()].is_object(),
                "{} {}",
                route.method,
                route.path
            );
        }
    }
}
