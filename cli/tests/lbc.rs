//! End-to-end tests of the `lbc` binary against a real `lb up` (see
//! `common/mod.rs`): accounts and contexts, projects and services with their
//! flags, output formats and exit codes, operations on running replicas,
//! logs, one-off exec, and bad input. The interactive terminal is in
//! `exec_tty.rs`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{expect_failure, lbc_in, run_with_stdin, wait_for, Up, ADMIN_PASSWORD};
use serde_json::Value;

#[test]
fn bad_input_is_one_line_with_its_exit_code() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| run_with_stdin(lbc_in(home.path(), args), "");
    // Usage (2): unknown flags, bad values, nothing configured.
    let line = expect_failure(run(&["service", "ls", "--bogus"]), &["--bogus"], 2);
    assert!(line.contains("--bogus"), "{line}");
    expect_failure(run(&["scale", "web", "many"]), &["scale"], 2);
    let line = expect_failure(run(&["whoami"]), &["whoami"], 2);
    assert!(line.contains("no API configured"), "{line}");
    let line = expect_failure(
        run(&["context", "add", "x", "--api", "ftp://h"]),
        &["context add"],
        2,
    );
    assert!(line.contains("ftp://h"), "{line}");
    let line = expect_failure(
        run(&[
            "--project",
            "p",
            "service",
            "create",
            "web",
            "--image",
            "i",
            "-p",
            "http",
        ]),
        &["-p http"],
        2,
    );
    assert!(line.contains("port \"http\""), "{line}");
    let line = expect_failure(
        run(&[
            "--project",
            "p",
            "service",
            "create",
            "web",
            "-m",
            "lots",
            "--image",
            "i",
        ]),
        &["-m lots"],
        2,
    );
    assert!(line.contains("memory"), "{line}");
    expect_failure(run(&["context", "use", "nope"]), &["context use"], 3);
    // Server (6): nothing listens there.
    let mut cmd = lbc_in(home.path(), &["whoami"]);
    cmd.env("LB_API", "http://127.0.0.1:1").env("LB_TOKEN", "x");
    let line = expect_failure(run_with_stdin(cmd, ""), &["whoami (unreachable)"], 6);
    assert!(line.contains("cannot reach the API"), "{line}");
    // A broken config file names itself.
    let config = home.path().join(".config/lbc/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "current-context = [\n").unwrap();
    let line = expect_failure(run(&["context", "ls"]), &["context ls"], 2);
    assert!(line.contains("config.toml"), "{line}");
    std::fs::remove_file(&config).unwrap();
    // Completion scripts.
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completion", shell]);
        assert!(out.status.success(), "completion {shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("lbc") && script.contains("deploy"),
            "{shell}"
        );
    }
    assert!(run(&["--version"]).status.success());
}

#[test]
fn accounts_contexts_and_tokens() {
    let up = Up::start();
    // `Up` logged in as admin in context "default".
    let config = std::fs::read_to_string(up.config_file()).unwrap();
    assert!(config.contains("current-context = \"default\""), "{config}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(up.config_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the config holds tokens");
    }
    assert!(!config.contains(ADMIN_PASSWORD));
    let me = up.json(&["whoami"]);
    assert_eq!(me["username"], "admin");
    assert!(up.ok(&["whoami"]).contains("admin"));

    // A wrong password: auth (5), nothing kept.
    let out = up.run_stdin(
        &[
            "--context",
            "bad",
            "login",
            "--api",
            &up.url,
            "-u",
            "admin",
            "--password-stdin",
        ],
        "wrong password",
    );
    let line = expect_failure(out, &["login (wrong)"], 5);
    assert!(line.contains("invalid user name or password"), "{line}");

    // Signup into a second context; the current one stays.
    let out = up.run_stdin(
        &[
            "--context",
            "bob",
            "signup",
            "--api",
            &up.url,
            "-u",
            "bob",
            "--password-stdin",
        ],
        "bob's password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("bob's password"));
    assert_eq!(up.json(&["--context", "bob", "whoami"])["username"], "bob");
    assert_eq!(up.json(&["whoami"])["username"], "admin");
    let out = up.run_stdin(
        &[
            "--context",
            "bob2",
            "signup",
            "--api",
            &up.url,
            "-u",
            "bob",
            "--password-stdin",
        ],
        "another password",
    );
    let line = expect_failure(out, &["signup (taken)"], 4);
    assert!(line.contains("taken"), "{line}");

    // Contexts: listed without tokens, switched, removed.
    let contexts = up.json(&["context", "ls"]);
    let text = contexts.to_string();
    let names: Vec<&str> = contexts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"bob") && names.contains(&"default"),
        "{text}"
    );
    assert!(
        !text.contains("ey"),
        "a token leaked into context ls: {text}"
    );
    let table = up.ok(&["context", "ls"]);
    assert!(
        table.lines().next().unwrap().starts_with("CURRENT"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with('*') && l.contains("default")),
        "{table}"
    );
    up.ok(&["context", "use", "bob"]);
    assert_eq!(up.json(&["whoami"])["username"], "bob");

    // API tokens: shown once, usable through LB_API/LB_TOKEN, revocable.
    let out = up.run(&["token", "create", "ci"]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("lbt_"), "{token}");
    let listed = up.ok(&["token", "ls"]);
    assert!(
        listed.contains("ci") && !listed.contains(&token),
        "{listed}"
    );
    let id = up.ok(&["token", "ls", "-q"]).trim().to_owned();
    let elsewhere = tempfile::tempdir().unwrap();
    let with_token = |args: &[&str]| {
        let mut cmd = lbc_in(elsewhere.path(), args);
        cmd.env("LB_API", &up.url).env("LB_TOKEN", &token);
        run_with_stdin(cmd, "")
    };
    let out = with_token(&["whoami", "-o", "json"]);
    assert!(out.status.success());
    let me: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["username"], "bob");
    let line = up.fails(&["token", "revoke", &id], 2);
    assert!(line.contains("refusing to revoke API token"), "{line}");
    up.ok(&["token", "revoke", &id, "--yes"]);
    expect_failure(with_token(&["whoami"]), &["whoami (revoked)"], 5);
    up.fails(&["token", "revoke", &id, "-y"], 3);

    // Logout forgets the token.
    up.ok(&["logout"]);
    let line = up.fails(&["whoami"], 5);
    assert!(line.contains("not logged in"), "{line}");
    assert!(!std::fs::read_to_string(up.config_file())
        .unwrap()
        .contains("[contexts.bob]\napi = \"http://127.0.0.1:1\""));
    up.ok(&["context", "rm", "bob"]);
    up.fails(&["context", "use", "bob"], 3);
    up.ok(&["context", "use", "default"]);
    assert_eq!(up.json(&["whoami"])["username"], "admin");
}

#[test]
fn projects_and_services() {
    let up = Up::start();
    // Projects.
    let project = up.json(&["project", "create", "demo", "-d", "the demo"]);
    assert_eq!(project["name"], "demo");
    assert_eq!(project["description"], "the demo");
    up.fails(&["project", "create", "demo"], 4);
    up.fails(&["project", "create", "Not A Name"], 2);
    up.fails(&["project", "get", "missing"], 3);
    let id = up
        .ok(&["project", "create", "other", "-q"])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 26, "{id}");
    let ls = up.ok(&["project", "ls"]);
    assert!(ls.starts_with("NAME"), "{ls}");
    assert!(ls.contains("demo") && ls.contains("other"), "{ls}");
    let yaml = up.ok(&["project", "get", "demo", "-o", "yaml"]);
    assert!(yaml.contains("name: demo"), "{yaml}");
    up.ok(&["project", "update", "other", "-d", "changed"]);
    assert_eq!(up.json(&["project", "get", &id])["description"], "changed");
    up.ok(&["project", "rm", "other", "--yes"]);
    up.fails(&["project", "get", "other"], 3);

    // A bare SERVICE needs a default project.
    let line = up.fails(&["service", "get", "web"], 2);
    assert!(line.contains("project use"), "{line}");
    up.ok(&["project", "use", "demo"]);
    assert!(up.ok(&["project", "ls"]).contains("demo (default)"));
    up.fails(&["project", "use", "missing"], 3);

    // A service with every flag (no replicas: nothing needs to run).
    let svc = up.json(&[
        "service",
        "create",
        "web",
        "--image",
        "nginx:1.25",
        "-r",
        "0",
        "-m",
        "64M",
        "--cpu",
        "0.25",
        "-p",
        "8080",
        "-p",
        "31999:53/udp",
        "-e",
        "MODE=prod",
        "-e",
        "EMPTY=",
        "--volume",
        "data:/data",
        "--node-selector",
        "zone=a",
        "--domain",
        "web.example.test",
        "-d",
        "front",
        "--",
        "nginx",
        "-g",
        "daemon off;",
    ]);
    let spec = &svc["spec"];
    assert_eq!(spec["image"], "nginx:1.25");
    assert_eq!(spec["replicas"], 0);
    assert_eq!(spec["memory"], 64);
    assert_eq!(spec["cpu"], 0.25);
    assert_eq!(spec["ports"][0]["container"], 8080);
    assert_eq!(spec["ports"][0]["host"], Value::Null);
    assert_eq!(spec["ports"][1]["host"], 31999);
    assert_eq!(spec["ports"][1]["protocol"], "udp");
    assert_eq!(spec["env"]["MODE"], "prod");
    assert_eq!(spec["env"]["EMPTY"], "");
    assert_eq!(spec["volumes"][0]["path"], "/data");
    assert_eq!(spec["node_selector"]["zone"], "a");
    assert_eq!(spec["domains"][0], "web.example.test");
    assert_eq!(spec["description"], "front");
    assert_eq!(
        spec["command"],
        serde_json::json!(["nginx", "-g", "daemon off;"])
    );
    up.fails(&["service", "create", "web", "--image", "x"], 4);
    let line = up.fails(
        &["service", "create", "small", "--image", "x", "-m", "3"],
        2,
    );
    assert!(line.contains("memory"), "{line}");

    // From a repository, with a template; PROJECT/SERVICE names.
    let svc = up.json(&[
        "service",
        "create",
        "demo/api",
        "--repo",
        "https://github.com/o/r.git",
        "--branch",
        "main",
        "--template",
        "python/flask",
        "-r",
        "0",
    ]);
    let source = &svc["spec"]["source"];
    assert_eq!(source["url"], "https://github.com/o/r.git");
    assert_eq!(source["branch"], "main");
    assert_eq!(source["build"]["kind"], "template");
    assert_eq!(source["build"]["language"], "python");
    assert_eq!(source["build"]["framework"], "flask");
    let svc = up.json(&[
        "service",
        "create",
        "worker",
        "--repo",
        "https://github.com/o/r.git",
        "--dockerfile",
        "docker/Dockerfile",
        "-r",
        "0",
    ]);
    assert_eq!(
        svc["spec"]["source"]["build"]["dockerfile"],
        "docker/Dockerfile"
    );
    up.fails(&["service", "create", "x", "--template", "python"], 2);
    // A stack: the compose file's path in the source, no replicas of its own.
    let svc = up.json(&[
        "service",
        "create",
        "stack",
        "--repo",
        "https://github.com/o/r.git",
        "--compose",
        "deploy/docker-compose.yml",
    ]);
    assert_eq!(
        svc["spec"]["source"]["compose"],
        "deploy/docker-compose.yml"
    );
    assert_eq!(svc["spec"]["replicas"], 0);
    up.ok(&["service", "rm", "stack", "--yes"]);
    up.fails(&["service", "create", "y", "--compose", "c.yml"], 2);
    up.fails(
        &[
            "service",
            "create",
            "y",
            "--repo",
            "https://github.com/o/r.git",
            "--compose",
            "c.yml",
            "--template",
            "python/flask",
        ],
        2,
    );

    // Update changes only what is given; `-e KEY-` removes.
    let svc = up.json(&[
        "service",
        "update",
        "web",
        "-e",
        "MODE-",
        "-e",
        "NEW=1",
        "-m",
        "1G",
        "--node-selector",
        "zone-",
    ]);
    let spec = &svc["spec"];
    assert_eq!(spec["env"], serde_json::json!({"EMPTY": "", "NEW": "1"}));
    assert_eq!(spec["memory"], 1024);
    assert_eq!(spec["node_selector"], serde_json::json!({}));
    assert_eq!(spec["image"], "nginx:1.25", "untouched");
    assert_eq!(spec["cpu"], 0.25, "untouched");
    up.fails(&["service", "update", "web"], 2);
    up.fails(&["service", "update", "missing", "-r", "1"], 3);
    // The stop grace period, checked by the API with the field named.
    let svc = up.json(&["service", "update", "web", "--stop-timeout", "30"]);
    assert_eq!(svc["spec"]["stop_timeout"], 30);
    let line = up.fails(&["service", "update", "web", "--stop-timeout", "301"], 2);
    assert!(line.contains("stop_timeout"), "{line}");

    // Lists, one resource, ids.
    let table = up.ok(&["service", "ls"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("REPLICAS"),
        "{table}"
    );
    assert!(table.contains("nginx:1.25"), "{table}");
    let ids = up.ok(&["service", "ls", "-q"]);
    assert_eq!(ids.lines().count(), 3, "{ids}");
    let list = up.json(&["service", "ls"]);
    assert_eq!(list["total"], 3);
    let shown = up.ok(&["service", "get", "demo/web"]);
    assert!(
        shown.contains("demo/web") && shown.contains("1024 MiB"),
        "{shown}"
    );
    assert!(
        !shown.contains('\x1b'),
        "no colour off a terminal: {shown:?}"
    );
    up.fails(&["service", "get", "demo/web/x"], 2);
    up.fails(&["service", "get", "nope/web"], 3);

    up.ok(&["service", "rm", "worker", "-y"]);
    up.fails(&["service", "get", "worker"], 3);
    up.ok(&["project", "rm", "demo", "--yes"]);
    up.fails(&["service", "get", "web"], 3);
}

#[test]
fn operations_logs_and_exec() {
    let image = lb_testing::busybox_image();
    let up = Up::start();
    up.ok(&["project", "create", "ops"]);
    up.ok(&["project", "use", "ops"]);
    up.ok(&[
        "service", "create", "tick", "--image", image, "-r", "2", "-m", "16", "-p", "8080", "--",
        "/bin/busybox", "sh", "-c",
        "trap 'exit 0' TERM; /bin/busybox httpd -p 8080 -h /www; i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done",
    ]);
    let replicas = up.wait_running("tick", 2);
    let table = up.ok(&["replicas", "tick"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(":8080") && !table.contains("->"),
        "host port shown as HOST:CONTAINER: {table}"
    );

    // Nodes.
    let nodes = up.ok(&["node", "ls"]);
    assert!(nodes.contains("alive"), "{nodes}");
    let node = up.json(&["node", "ls"])["items"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(up.json(&["node", "get", &node])["name"], node.as_str());
    up.fails(&["node", "get", "nope"], 3);

    // Logs of every replica, prefixed; of one, not.
    for r in &replicas {
        let id = r["id"].as_str().unwrap();
        wait_for("three lines of output", Duration::from_secs(20), || {
            up.ok(&["logs", "--replica", id, "tick"]).lines().count() >= 3
        });
    }
    let logs = up.ok(&["logs", "--tail", "2", "tick"]);
    for r in &replicas {
        let id = r["id"].as_str().unwrap();
        let short = id[id.len() - 6..].to_lowercase();
        assert!(
            logs.lines()
                .any(|l| l.starts_with(&format!("{short} | tick "))),
            "{short} in {logs}"
        );
    }
    let one = replicas[0]["id"].as_str().unwrap();
    let logs = up.ok(&["logs", "--replica", one, "--tail", "3", "tick"]);
    assert_eq!(logs.lines().count(), 3, "{logs}");
    assert!(logs.lines().all(|l| l.starts_with("tick ")), "{logs}");
    up.fails(&["logs", "--replica", "nope", "tick"], 3);

    // logs -f keeps streaming new lines.
    let mut child = up
        .lbc(&["logs", "-f", "--tail", "1", "--replica", one, "tick"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("logs -f streamed only {seen:?} in 20 s");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let numbers: Vec<u64> = seen
        .iter()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive lines: {seen:?}"
    );

    // One-off exec: output on the right streams, the exit code passed on.
    let out = up.run(&[
        "exec",
        "tick",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(
        up.ok(&[
            "exec",
            "tick",
            "--",
            "/bin/busybox",
            "wget",
            "-qO-",
            "http://127.0.0.1:8080/"
        ]),
        "hello from lb\n"
    );
    // -i without -t: stdin streamed to the command over the websocket.
    let out = up.run_stdin(
        &[
            "exec",
            "-i",
            "tick",
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            "cat; exit 3",
        ],
        "from stdin\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from stdin\n");
    assert_eq!(out.status.code(), Some(3));

    up.fails(&["exec", "-i", "missing", "--", "true"], 3);
    up.fails(
        &["exec", "-i", "tick", "--replica", "nope", "--", "true"],
        3,
    );
    up.fails(&["exec", "tick", "--replica", "nope", "--", "true"], 3);

    // Scale, pause, resume, restart.
    up.ok(&["scale", "tick", "3"]);
    up.wait_running("tick", 3);
    up.ok(&["scale", "tick", "1"]);
    up.wait_running("tick", 1);
    up.ok(&["pause", "tick"]);
    wait_for(
        "no running replica while paused",
        Duration::from_secs(60),
        || {
            let now = up.json(&["replicas", "tick"]);
            now["items"]
                .as_array()
                .is_some_and(|items| items.iter().all(|r| r["state"] != "running"))
        },
    );
    assert_eq!(
        up.json(&["service", "get", "tick"])["spec"]["state"],
        "paused"
    );
    let shown = up.ok(&["service", "get", "tick"]);
    assert!(shown.contains("paused"), "{shown}");
    up.ok(&["resume", "tick"]);
    let before = up.wait_running("tick", 1);
    let replica = before[0]["id"].as_str().unwrap().to_owned();
    let container = container_of(&replica);
    up.ok(&["restart", "tick"]);
    wait_for(
        "a new container for the replica",
        Duration::from_secs(60),
        || {
            let now = container_of(&replica);
            !now.is_empty() && now != container
        },
    );
    up.fails(&["scale", "missing", "2"], 3);
    up.fails(&["rollback", "tick", "9"], 3);
}

/// The running container of a replica, by the label the node puts on it.
fn container_of(replica: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=lb.replica={replica}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
