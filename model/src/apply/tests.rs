//! Reading lb's format and compose files, and planning.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::compose::{mebibytes, parse_env_file, seconds, split_words};
use super::*;

fn no_files(path: &str) -> Result<String, String> {
    Err(format!("no file {path:?} in this test"))
}

fn read(text: &str) -> Result<(Format, Document), DocumentError> {
    parse(text, None, &no_files)
}

/// The fields named by a failed read, in order.
fn fields(text: &str) -> Vec<String> {
    match read(text) {
        Ok(doc) => panic!("read: {doc:?}"),
        Err(e) => {
            eprintln!("{e}");
            e.problems().iter().map(|p| p.field.clone()).collect()
        }
    }
}

fn spec(value: Value) -> ServiceSpec {
    serde_json::from_value(value).unwrap()
}

#[test]
fn lb_format_takes_ports_as_strings_or_objects() {
    let (format, doc) = read(
        "services:\n  web:\n    image: x\n    env: {A: b}\n    \
         ports: ['8080:80', '53:53/udp', {container: 9000}]\n",
    )
    .unwrap();
    assert_eq!(format, Format::Lb);
    assert_eq!(
        json!(doc.services["web"].spec.ports),
        json!([
            {"container": 80, "host": 8080, "protocol": "tcp"},
            {"container": 53, "host": 53, "protocol": "udp"},
            {"container": 9000, "host": null, "protocol": "tcp"},
        ])
    );
}

#[test]
fn lb_format_takes_every_spec_field_and_names_the_service() {
    let (format, doc) = read(
        "project: demo\nservices:\n  web:\n    image: nginx:1.25\n    replicas: 2\n    \
         ports: [{container: 80}]\n    domains: [www.example.com]\n    env: {A: b}\n    \
         depends_on: [db]\n  db:\n    image: postgres:16\n    memory: 256\n",
    )
    .unwrap();
    assert_eq!(format, Format::Lb);
    assert_eq!(doc.project.as_deref(), Some("demo"));
    let web = &doc.services["web"];
    assert_eq!(web.spec.name, "web");
    assert_eq!(web.spec.replicas, 2);
    assert_eq!(web.spec.domains, ["www.example.com"]);
    assert_eq!(
        json!(web.spec.ports),
        json!([{"container": 80, "host": null, "protocol": "tcp"}])
    );
    assert_eq!(web.depends_on, ["db"]);
    assert_eq!(doc.services["db"].spec.memory, 256);
    assert_eq!(doc.start_order().unwrap(), ["db", "web"]);
    // What lbc sends reads back the same.
    let again = Document::from_value(doc.to_value()).unwrap();
    assert_eq!(again, doc);
}

#[test]
fn lb_format_names_every_bad_key() {
    assert_eq!(
        fields(
            "project: demo\nextra: 1\nservices:\n  web:\n    image: x\n    privileged: true\n    \
             colour: red\n  db:\n    image: x\n    memory: 1\n  api:\n    image: x\n    \
             depends_on: [nope]\n"
        ),
        [
            "extra",
            "services.web.colour",
            "services.web.privileged",
            "services.api.depends_on[0]",
            "services.db.memory",
        ]
    );
    assert_eq!(
        fields("services:\n  web:\n    image: x\n    ports: [{container: 0}]\n"),
        ["services.web.ports[0].container"]
    );
    assert_eq!(
        fields("project: demo\nservices:\n  web:\n    image: x\n    ports: ['80', '80:x']\n"),
        ["services.web.ports[1]"]
    );
    assert_eq!(
        fields("services:\n  web:\n    name: api\n    image: x\n"),
        ["services.web.name"]
    );
    assert_eq!(
        fields("services:\n  Web:\n    image: x\n"),
        ["services.Web"]
    );
    assert_eq!(
        fields("services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n"),
        ["services.a.depends_on"]
    );
    assert_eq!(
        fields("services:\n  web:\n    image: x\n    replicas: many\n"),
        ["services.web.replicas"]
    );
}

#[test]
fn bad_yaml_names_line_and_column() {
    let err = read("services:\n  web:\n    image: [x\n").unwrap_err();
    let DocumentError::Syntax { line, column, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*line, 4, "{err}");
    assert!(*column >= 1, "{err}");
    assert!(
        err.to_string().starts_with("invalid YAML at line 4 column"),
        "{err}"
    );
    let err = read("services:\n\tweb: {}\n").unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn compose_ports_use_lbs_parser() {
    let (format, doc) =
        read("services: {web: {image: x, ports: [80, '8080:81', '53:53/udp']}}\n").unwrap();
    assert_eq!(format, Format::Compose);
    assert_eq!(
        json!(doc.services["web"].spec.ports),
        json!([
            {"container": 80, "host": null, "protocol": "tcp"},
            {"container": 81, "host": 8080, "protocol": "tcp"},
            {"container": 53, "host": 53, "protocol": "udp"},
        ])
    );
    let err = read("version: '3'\nservices: {web: {image: x, ports: ['80/sctp', '0:80']}}\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "services.web.ports[0]: port \"80/sctp\" is invalid: the protocol must be tcp or udp"
        ),
        "{err}"
    );
    assert!(
        err.contains("services.web.ports[1]: port \"0:80\" is invalid: the host port"),
        "{err}"
    );
}

#[test]
fn formats_are_told_apart() {
    let check = |name: Option<&str>, text: &str, expect: Format| {
        let value = parse_yaml(text).unwrap();
        assert_eq!(detect(name, &value), expect, "{name:?} {text}");
    };
    let plain = "services:\n  web:\n    image: x\n";
    check(None, plain, Format::Lb);
    check(Some("lb.yaml"), plain, Format::Lb);
    check(Some("deploy/docker-compose.yml"), plain, Format::Compose);
    check(Some("compose.yaml"), plain, Format::Compose);
    check(
        None,
        "version: '3'\nservices: {web: {image: x}}\n",
        Format::Compose,
    );
    check(
        None,
        "services: {web: {image: x, environment: {A: b}}}\n",
        Format::Compose,
    );
    // lb reads `HOST:CONTAINER[/PROTOCOL]` too: only compose's own forms
    // (numbers, addresses, ranges) tell a compose file.
    check(
        None,
        "services: {web: {image: x, ports: ['80:80', '53/udp']}}\n",
        Format::Lb,
    );
    for compose in ["80", "'127.0.0.1:80:80'", "'8000-8001:8000-8001'"] {
        check(
            None,
            &format!("services: {{web: {{image: x, ports: ['80:80', {compose}]}}}}\n"),
            Format::Compose,
        );
    }
    check(
        None,
        "services: {web: {image: x, ports: [{container: 80}]}}\n",
        Format::Lb,
    );
    check(
        None,
        "services: {web: {image: x, command: 'sleep 1'}}\n",
        Format::Compose,
    );
    check(
        None,
        "project: p\nservices: {web: {image: x}}\n",
        Format::Lb,
    );
}

const COMPOSE: &str = r#"
name: My_App
x-lb:
  source: {url: "https://git.example.test/o/app.git", branch: main}
x-common: &common
  restart: unless-stopped
services:
  web:
    <<: *common
    build: ./web
    ports: ["8080:80", "9000"]
    environment:
      MODE: production
      WORKERS: 4
    env_file: [web.env]
    depends_on:
      api: {condition: service_healthy}
    x-lb:
      domains: [www.example.com]
      ingress_port: 80
  api:
    build: {context: ., dockerfile: docker/Api.Dockerfile}
    command: ./serve --port "80 80" 'a b'
    environment: ["A=1", "B=two=2"]
    volumes: ["app_data:/data", {type: volume, source: cache, target: /cache}]
    healthcheck:
      test: ["CMD", "wget", "-q", "localhost/health"]
      interval: 1m30s
      timeout: 5s
      retries: 5
      start_period: 500ms
    deploy:
      replicas: 3
      resources: {limits: {memory: 512M, cpus: "0.5"}}
    depends_on: [db]
  db:
    image: postgres:16
    healthcheck: {test: "pg_isready -U app"}
volumes:
  app_data:
  cache: {}
"#;

#[test]
fn compose_maps_onto_specs() {
    let files = |path: &str| match path {
        "web.env" => Ok(
            "# comment\nexport SECRET='x y'\nMODE=dev\nQUOTED=\"a\\nb\"\nPLAIN=v # note\n"
                .to_owned(),
        ),
        other => Err(format!("no {other}")),
    };
    let (format, doc) = parse(COMPOSE, Some("docker-compose.yml"), &files).unwrap();
    assert_eq!(format, Format::Compose);
    assert_eq!(doc.project.as_deref(), Some("my-app"));
    let web = &doc.services["web"];
    assert_eq!(web.depends_on, ["api"]);
    let expected = spec(json!({"name": "web",
        "source": {"url": "https://git.example.test/o/app.git", "branch": "main",
                   "build": {"kind": "dockerfile", "dockerfile": "web/Dockerfile", "context": "web"}},
        "ports": [{"container": 80, "host": 8080}, {"container": 9000}],
        "env": {"MODE": "production", "WORKERS": "4", "SECRET": "x y", "QUOTED": "a\nb", "PLAIN": "v"},
        "domains": ["www.example.com"], "ingress_port": 80}));
    assert_eq!(web.spec, expected);
    let api = &doc.services["api"];
    assert_eq!(api.depends_on, ["db"]);
    let expected = spec(json!({"name": "api",
        "source": {"url": "https://git.example.test/o/app.git", "branch": "main",
                   "build": {"kind": "dockerfile", "dockerfile": "docker/Api.Dockerfile"}},
        "command": ["./serve", "--port", "80 80", "a b"],
        "env": {"A": "1", "B": "two=2"},
        "volumes": [{"name": "app-data", "path": "/data"}, {"name": "cache", "path": "/cache"}],
        "health": {"command": ["wget", "-q", "localhost/health"], "interval": 90, "timeout": 5,
                   "retries": 5, "start_period": 1},
        "replicas": 3, "memory": 512, "cpu": 0.5}));
    assert_eq!(api.spec, expected);
    let db = &doc.services["db"].spec;
    assert_eq!(db.image.as_deref(), Some("postgres:16"));
    assert_eq!(
        db.health.as_ref().unwrap().command.as_deref().unwrap(),
        ["/bin/sh", "-c", "pg_isready -U app"]
    );
    assert_eq!(doc.start_order().unwrap(), ["db", "api", "web"]);
}

#[test]
fn compose_names_every_key_it_cannot_honour() {
    let text = r#"
version: "3.8"
networks: {front: {}}
services:
  web:
    image: nginx
    privileged: true
    network_mode: host
    ports: ["127.0.0.1:80:80", "8000-8001:8000-8001"]
    volumes: ["./html:/usr/share/nginx/html", "/var/cache", "undeclared:/x", "data:/ro:ro"]
    environment: [FROM_SHELL]
    restart: "no"
    build: {context: ., args: {A: b}}
    deploy: {resources: {reservations: {memory: 1g}}, placement: {}}
    healthcheck: {test: ["NONE"], start_interval: 5s}
    depends_on: [ghost]
    env_file: missing.env
  worker:
    image: busybox
    cap_drop: [ALL]
volumes: {data: {driver: local}}
"#;
    let mut got = fields(text);
    got.sort();
    let mut expect = vec![
        "networks",
        "volumes.data.driver",
        "services.web.privileged",
        "services.web.network_mode",
        "services.web.ports[0]",
        "services.web.ports[1]",
        "services.web.volumes[0]",
        "services.web.volumes[1]",
        "services.web.volumes[2]",
        "services.web.volumes[3]",
        "services.web.environment.FROM_SHELL",
        "services.web.restart",
        "services.web.build",
        "services.web.build.args",
        "services.web.deploy.resources.reservations",
        "services.web.deploy.placement",
        "services.web.healthcheck.test",
        "services.web.healthcheck.start_interval",
        "services.web.depends_on.ghost",
        "services.web.env_file",
        "services.worker.cap_drop",
    ];
    expect.sort();
    assert_eq!(got, expect);
    // Each message says why.
    let err = read(text).unwrap_err().to_string();
    assert!(
        err.contains("services.web.privileged: not supported by lb"),
        "{err}"
    );
    assert!(err.contains("bind mount"), "{err}");
    assert!(err.contains("x-lb.source.url"), "{err}");
    assert!(err.contains("missing.env"), "{err}");
}

#[test]
fn compose_spec_errors_name_the_compose_service() {
    let fields = |text: &str| -> Vec<String> {
        let err = parse(text, Some("compose.yaml"), &no_files).unwrap_err();
        err.problems().iter().map(|p| p.field.clone()).collect()
    };
    // The converted spec is validated as the API would, named by the
    // compose file's own key.
    assert_eq!(
        fields(
            "services:\n  my_web:\n    image: x\n    deploy: {resources: {limits: {memory: 1m}}}\n"
        ),
        ["services.my_web.memory"]
    );
    assert_eq!(
        fields("services:\n  a_b: {image: x}\n  a.b: {image: x}\n"),
        ["services.a_b"]
    );
    assert_eq!(
        fields("services:\n  web: {build: https://h.test/r.git, x-lb: {colour: red}}\n"),
        ["services.web.colour"]
    );
}

#[test]
fn git_build_contexts_carry_their_branch_and_directory() {
    let (_, doc) = read(
        "services:\n  web:\n    build: {context: 'https://h.test/o/r.git#dev:app', dockerfile: Dockerfile.prod}\n",
    )
    .unwrap();
    let source = doc.services["web"].spec.source.clone().unwrap();
    assert_eq!(source.url, "https://h.test/o/r.git");
    assert_eq!(source.branch.as_deref(), Some("dev"));
    assert_eq!(source.build.context.as_deref(), Some("app"));
    assert_eq!(
        source.build.dockerfile.as_deref(),
        Some("app/Dockerfile.prod")
    );
}

#[test]
fn compose_units_and_words() {
    assert_eq!(mebibytes("512M").unwrap(), 512);
    assert_eq!(mebibytes("512mb").unwrap(), 512);
    assert_eq!(mebibytes("1g").unwrap(), 1024);
    assert_eq!(mebibytes("1.5G").unwrap(), 1536);
    assert_eq!(mebibytes("1048577").unwrap(), 2);
    assert_eq!(mebibytes("100k").unwrap(), 1);
    assert!(mebibytes("12 parsecs").is_err());
    assert_eq!(seconds("30s").unwrap(), 30);
    assert_eq!(seconds("1m30s").unwrap(), 90);
    assert_eq!(seconds("1h").unwrap(), 3600);
    assert_eq!(seconds("1.5s").unwrap(), 2);
    assert!(seconds("soon").is_err());
    assert!(seconds("10").is_err());
    assert_eq!(
        split_words(r#"sh -c "echo \"hi\" \$HOME" 'it''s' a\ b"#).unwrap(),
        ["sh", "-c", "echo \"hi\" $HOME", "its", "a b"]
    );
    assert!(split_words("echo 'open").is_err());
    assert!(split_words("   ").is_err());
    let mut env = BTreeMap::new();
    assert!(parse_env_file("NOT A PAIR\n", &mut env).is_err());
}

fn current(name: &str, value: Value, revision: i64) -> Current {
    let mut value = value;
    value["name"] = json!(name);
    Current {
        name: name.into(),
        spec: spec(value),
        revision,
    }
}

fn doc(text: &str) -> Document {
    read(text).unwrap().1
}

#[test]
fn plans_create_update_delete_and_nothing() {
    let now = vec![
        current(
            "web",
            json!({"image": "a:1", "replicas": 1, "env": {"K": "v", "OLD": "x"}}),
            7,
        ),
        current("db", json!({"image": "pg:16"}), 5),
        current("old", json!({"image": "x"}), 9),
    ];
    let file = doc(
        "services:\n  web: {image: 'a:2', replicas: 3, env: {K: w}}\n  db: {image: 'pg:16'}\n  \
         cache: {image: redis, depends_on: [queue]}\n  queue: {image: q}\n",
    );
    let p = plan(&file, &now, false);
    let names = |v: &[PlannedCreate]| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&p.creates), ["queue", "cache"]);
    assert_eq!(p.unchanged, ["db"]);
    assert_eq!(p.kept, ["old"]);
    assert!(p.deletes.is_empty());
    let [update] = p.updates.as_slice() else {
        panic!("{p:?}")
    };
    assert_eq!((update.name.as_str(), update.revision), ("web", 7));
    let changes: Vec<(String, Value, Value)> = update
        .changes
        .iter()
        .map(|c| (c.field.clone(), c.from.clone(), c.to.clone()))
        .collect();
    assert_eq!(
        changes,
        [
            ("env.K".into(), json!("v"), json!("w")),
            ("env.OLD".into(), json!("x"), Value::Null),
            ("image".into(), json!("a:1"), json!("a:2")),
            ("replicas".into(), json!(1), json!(3)),
        ]
    );
    let pruned = plan(&file, &now, true);
    assert_eq!(
        pruned.deletes,
        [PlannedDelete {
            name: "old".into(),
            revision: 9
        }]
    );
    assert!(pruned.kept.is_empty());

    // The same document against what it made: nothing to do.
    let made: Vec<Current> = file
        .services
        .values()
        .map(|s| Current {
            name: s.spec.name.clone(),
            spec: s.spec.clone(),
            revision: 1,
        })
        .collect();
    let again = plan(&file, &made, true);
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(again.unchanged.len(), 4);
}

#[test]
fn a_built_image_is_kept_when_the_file_names_only_the_source() {
    let source = json!({"url": "https://h.test/r.git", "branch": "main"});
    let now = vec![current(
        "web",
        json!({"source": source, "image": "reg:5000/p/s@sha256:ab"}),
        3,
    )];
    let file = doc("services:\n  web: {source: {url: 'https://h.test/r.git', branch: main}}\n");
    assert!(plan(&file, &now, false).is_empty());
    let file = doc("services:\n  web: {source: {url: 'https://h.test/r.git', branch: dev}}\n");
    let p = plan(&file, &now, false);
    assert_eq!(p.updates[0].changes.len(), 1, "{p:?}");
    assert_eq!(p.updates[0].changes[0].field, "source.branch");
    assert_eq!(
        p.updates[0].spec.image.as_deref(),
        Some("reg:5000/p/s@sha256:ab")
    );
}

#[test]
fn scripts_are_read_validated_and_planned() {
    let file = doc(
        "services: {}\nscripts:\n  hello: {body: 'echo hi'}\n  migrate: {interpreter: bash, \
         body: './m.sh', timeout: 120, env: {DRY: '1'}}\n",
    );
    let scripts = file.scripts.clone().unwrap();
    assert_eq!(scripts["hello"].name, "hello");
    assert_eq!(scripts["migrate"].timeout, 120);
    assert_eq!(Document::from_value(file.to_value()).unwrap(), file);
    assert_eq!(
        fields(
            "scripts:\n  a: {body: x, colour: red}\n  b: {body: x, interpreter: perl}\n  \
             c: {body: x, updated_by: me}\n"
        ),
        [
            "scripts.a.colour",
            "scripts.c.updated_by",
            "scripts.b.interpreter"
        ]
    );
    let stored = |name: &str, body: &str, revision: i64| {
        let mut script: Script =
            serde_json::from_value(json!({"name": name, "body": body})).unwrap();
        script.updated = 1_700_000_000;
        script.updated_by = "someone".into();
        CurrentScript { script, revision }
    };
    let now = [
        stored("hello", "echo hi", 4),
        stored("migrate", "old", 5),
        stored("stale", "x", 6),
    ];
    let p = plan_scripts(&file, &now, false);
    assert_eq!(p.unchanged, ["hello"], "who wrote it and when do not count");
    assert_eq!(p.kept, ["stale"]);
    let fields: Vec<&str> = p.updates[0]
        .changes
        .iter()
        .map(|c| c.field.as_str())
        .collect();
    assert_eq!(fields, ["body", "env", "interpreter", "timeout"]);
    assert_eq!(p.updates[0].revision, 5);
    let p = plan_scripts(&file, &now, true);
    assert_eq!(
        p.deletes,
        [PlannedDelete {
            name: "stale".into(),
            revision: 6
        }]
    );
    // Without a scripts key, scripts are left alone even with prune.
    let none = doc("services: {}\n");
    assert!(plan_scripts(&none, &now, true).is_empty());
}
