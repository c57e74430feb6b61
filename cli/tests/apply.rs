//! `lbc apply` and `lbc diff` against a real `lb up` (see `common/mod.rs`):
//! a compose file with an env file beside it, planned, applied, applied
//! again without a change, changed and pruned; a file lb cannot take is
//! refused before anything is sent, every key at fault named. `lbc diff`
//! exits 1 when something would change and 0 when nothing would (as
//! `git diff --exit-code`); its errors keep their codes.

mod common;

use common::Up;

/// Runs `lbc diff ...`, asserts it exits 1 (something would change) with
/// nothing on stderr; answers the plan it printed.
fn diff_changes(up: &Up, args: &[&str]) -> String {
    let out = up.run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "lbc {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const COMPOSE: &str = r#"
name: shop
services:
  web:
    image: lb-test-busybox:1
    command: /bin/busybox httpd -f -p 8080 -h /www
    ports: ["8080"]
    env_file: web.env
    environment: {MODE: one}
    depends_on: [db]
    deploy: {replicas: 0, resources: {limits: {memory: 32M}}}
  db:
    image: lb-test-busybox:1
    command: ["/bin/busybox", "sleep", "3600"]
    volumes: ["db_data:/data"]
    deploy: {replicas: 0}
volumes:
  db_data:
"#;

#[test]
fn apply_and_diff_a_compose_file() {
    let up = Up::start();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("docker-compose.yml");
    std::fs::write(&file, COMPOSE).unwrap();
    std::fs::write(
        tmp.path().join("web.env"),
        "SECRET=from-the-file\nMODE=file\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();

    // diff writes nothing: the project does not exist yet.
    let plan = diff_changes(&up, &["diff", "-f", f]);
    assert!(plan.contains("project shop would be created"), "{plan}");
    assert!(plan.contains("+ create db\n+ create web"), "{plan}");
    assert!(
        plan.ends_with("2 change(s) planned, nothing written\n"),
        "{plan}"
    );
    up.fails(&["project", "get", "shop"], 3);

    let applied = up.json(&["apply", "-f", f]);
    assert_eq!(
        applied["done"],
        serde_json::json!(["created db", "created web"])
    );
    let web = up.json(&["service", "get", "shop/web"]);
    assert_eq!(web["spec"]["env"]["SECRET"], "from-the-file");
    assert_eq!(
        web["spec"]["env"]["MODE"], "one",
        "environment wins over env_file"
    );
    assert_eq!(web["spec"]["memory"], 32);
    assert_eq!(web["spec"]["volumes"], serde_json::json!([]));
    let db = up.json(&["service", "get", "shop/db"]);
    assert_eq!(db["spec"]["volumes"][0]["name"], "db-data");
    let revision = web["revision"].clone();

    // The same file again: nothing to change (diff exits 0), nothing
    // written.
    let same = up.ok(&["diff", "-f", f]);
    assert!(
        same.ends_with("project shop: nothing to change\n"),
        "{same}"
    );
    let same = up.json(&["diff", "-f", f]);
    assert_eq!(same["dry_run"], true, "{same}");
    let again = up.ok(&["apply", "-f", f]);
    assert!(again.contains("unchanged: db, web"), "{again}");
    assert!(
        again.ends_with("project shop: nothing to change\n"),
        "{again}"
    );
    let web = up.json(&["service", "get", "shop/web"]);
    assert_eq!(web["revision"], revision);

    // A change, field by field; then db left out: kept without --prune.
    std::fs::write(
        &file,
        COMPOSE
            .replace("MODE: one", "MODE: two")
            .replace("    depends_on: [db]\n", ""),
    )
    .unwrap();
    let plan = diff_changes(&up, &["diff", "-f", f]);
    assert!(
        plan.contains("~ update web\n    env.MODE: \"one\" -> \"two\""),
        "{plan}"
    );
    let only_web = COMPOSE
        .replace("MODE: one", "MODE: two")
        .replace("    depends_on: [db]\n", "");
    let only_web = only_web.split("  db:\n").next().unwrap().to_owned();
    std::fs::write(&file, only_web).unwrap();
    let out = up.ok(&["apply", "-f", f]);
    assert!(out.contains("~ updated web"), "{out}");
    assert!(out.contains("kept (--prune deletes them): db"), "{out}");
    up.ok(&["service", "get", "shop/db"]);
    let out = up.ok(&["apply", "-f", f, "--prune"]);
    assert!(out.contains("- deleted db"), "{out}");
    up.fails(&["service", "get", "shop/db"], 3);

    // lb's own format, with --project naming the project.
    let lb = tmp.path().join("lb.yaml");
    std::fs::write(
        &lb,
        "services:\n  web:\n    image: lb-test-busybox:1\n    replicas: 0\n",
    )
    .unwrap();
    up.ok(&["project", "create", "other"]);
    let out = up.ok(&["apply", "-f", lb.to_str().unwrap(), "--project", "other"]);
    assert!(out.contains("+ created web"), "{out}");

    // Its scripts: created, unchanged, changed field by field, pruned.
    let with_scripts = |hello: &str, more: bool| {
        let mut text = format!(
            "services:\n  web:\n    image: lb-test-busybox:1\n    replicas: 0\n\
             scripts:\n  hello: {{body: 'echo {hello}', timeout: 30}}\n"
        );
        if more {
            text.push_str("  migrate: {interpreter: bash, body: './m.sh', env: {DRY: '1'}}\n");
        }
        std::fs::write(&lb, text).unwrap();
    };
    let lb_path = lb.to_str().unwrap();
    with_scripts("hi", true);
    let out = up.ok(&["apply", "-f", lb_path, "--project", "other"]);
    assert!(
        out.contains("+ created script hello\n+ created script migrate"),
        "{out}"
    );
    let script = up.json(&["script", "show", "other/hello"]);
    assert_eq!(
        (script["body"].as_str(), script["timeout"].as_u64()),
        (Some("echo hi"), Some(30))
    );
    let out = up.ok(&["apply", "-f", lb_path, "--project", "other"]);
    assert!(
        out.contains("unchanged: web, script hello, script migrate"),
        "{out}"
    );
    assert!(out.ends_with("nothing to change\n"), "{out}");
    with_scripts("there", false);
    let out = diff_changes(
        &up,
        &["diff", "-f", lb_path, "--project", "other", "--prune"],
    );
    assert!(
        out.contains("- delete script migrate\n~ update script hello\n    body: \"echo hi\" -> \"echo there\""),
        "{out}"
    );
    up.ok(&["apply", "-f", lb_path, "--project", "other", "--prune"]);
    assert_eq!(
        up.json(&["script", "show", "other/hello"])["body"],
        "echo there"
    );
    up.fails(&["script", "show", "other/migrate"], 3);

    // A file lb cannot take: usage error (2), every key named, nothing sent.
    std::fs::write(
        &file,
        "services:\n  web:\n    image: x\n    privileged: true\n    volumes: ['./src:/src']\n    \
         env_file: missing.env\n",
    )
    .unwrap();
    let line = up.fails(&["apply", "-f", f, "--project", "bad"], 2);
    for key in [
        "services.web.privileged",
        "services.web.volumes[0]",
        "services.web.env_file",
    ] {
        assert!(line.contains(key), "{key} not named: {line}");
    }
    up.fails(&["project", "get", "bad"], 3);
    std::fs::write(&file, "services:\n  web: [\n").unwrap();
    let line = up.fails(&["apply", "-f", f, "--project", "bad"], 2);
    assert!(line.contains("invalid YAML at line 3 column"), "{line}");
    // diff's errors keep their codes (a bad file: 2), not 1.
    let line = up.fails(&["diff", "-f", f, "--project", "bad"], 2);
    assert!(line.contains("invalid YAML"), "{line}");
}
