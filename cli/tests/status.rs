//! `lbc status`, `lbc env`, confirmation of `rm`, short replica ids and the
//! names behind shell completion, against a real `lb up` running busybox
//! replicas on the real Docker engine; a service with one of two replicas
//! crashing reads `degraded` in `lbc status` and `lbc service ls`.

mod common;

use std::time::Duration;

use common::{lbc_in, run_with_stdin, wait_for, Up};
use serde_json::Value;

/// Waits until every replica of `service` runs its current generation;
/// answers them.
fn wait_rolled_out(up: &Up, service: &str, count: usize) -> Vec<Value> {
    let mut last = Value::Null;
    let mut items = Vec::new();
    wait_for(
        &format!("{count} replicas of {service}'s current generation running"),
        Duration::from_secs(90),
        || {
            let generation = up.json(&["service", "get", service])["status"]["generation"].clone();
            let list = up.json(&["replicas", service]);
            items = list["items"].as_array().cloned().unwrap_or_default();
            last = list;
            items.len() == count
                && items
                    .iter()
                    .all(|r| r["state"] == "running" && r["generation"] == generation)
        },
    );
    let _ = last;
    items
}

/// Removes a Docker volume when dropped (lb keeps a service's volumes on
/// purpose, so the test removes the one it made, also when it fails).
struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f", &self.0])
                .output();
        }
    }
}

#[test]
fn status_env_rm_and_short_ids() {
    let image = lb_testing::busybox_image();
    // Declared before `up`: dropped after it, once no container uses it.
    let mut volume = Volume(String::new());
    let up = Up::start();
    up.ok(&["project", "create", "app"]);
    up.ok(&["project", "use", "app"]);
    up.ok(&[
        "service",
        "create",
        "web",
        "--image",
        image,
        "-r",
        "2",
        "-m",
        "16",
        "-e",
        "GREETING=hi",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 1; done",
    ]);
    up.wait_running("web", 2);

    // Status of one service: state, version, rollout, replicas with nodes.
    wait_for("web running", Duration::from_secs(30), || {
        up.json(&["status", "web"])["state"] == "running"
    });
    let shown = up.ok(&["status", "web"]);
    eprintln!("lbc status web:\n{shown}");
    assert!(shown.starts_with("Service:"), "{shown}");
    assert!(shown.contains("app/web"), "{shown}");
    assert!(shown.contains("Live:") && shown.contains(image), "{shown}");
    assert!(
        shown.contains("complete: 2/2 replicas of generation"),
        "{shown}"
    );
    assert!(
        shown.contains("REPLICA") && shown.contains("NODE"),
        "{shown}"
    );
    let node = up.json(&["node", "ls"])["items"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(shown.contains(&node), "node name {node} in {shown}");
    let status = up.json(&["status", "web"]);
    assert_eq!(status["rollout"]["running"], 2, "{status}");
    assert_eq!(status["replicas"].as_array().unwrap().len(), 2);

    // A service no node can hold: pending with the scheduler's reason.
    up.ok(&["service", "create", "big", "--image", image, "-m", "512G"]);
    wait_for("big pending with a reason", Duration::from_secs(30), || {
        let status = up.json(&["status", "big"]);
        status["state"] == "pending"
            && status["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no node has"))
    });
    let shown = up.ok(&["status", "big"]);
    eprintln!("lbc status big:\n{shown}");
    assert!(
        shown.contains("Pending:") && shown.contains("no node has"),
        "{shown}"
    );
    let all = up.ok(&["status"]);
    eprintln!("lbc status:\n{all}");
    assert!(all.starts_with("SERVICE"), "{all}");
    let line = |name: &str| {
        all.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {all}"))
            .to_owned()
    };
    assert!(
        line("web").contains("running") && line("web").contains("2/2"),
        "{all}"
    );
    assert!(
        line("big").contains("pending") && line("big").contains("no node has"),
        "{all}"
    );

    // One of two replicas crashing beside one that runs: degraded, with the
    // reason. Both share the service's volume on the one node: the first to
    // make the directory holds it and runs, the other exits with code 4 on
    // every start.
    up.ok(&[
        "service",
        "create",
        "half",
        "--image",
        image,
        "-r",
        "2",
        "-m",
        "16",
        "--volume",
        "lock:/lock",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "mkdir /lock/held || exit 4; trap 'exit 0' TERM; while true; do sleep 1; done",
    ]);
    let sid = up.json(&["service", "get", "half"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    volume.0 = format!("lb-{}-lock", sid.to_lowercase());
    wait_for("half degraded", Duration::from_secs(60), || {
        let status = up.json(&["status", "half"]);
        assert_ne!(status["state"], "running", "{status}");
        status["state"] == "degraded"
    });
    let status = up.json(&["status", "half"]);
    let detail = status["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("1/2 running; replica ") && detail.contains("exited with code 4"),
        "{status}"
    );
    let shown = up.ok(&["status", "half"]);
    eprintln!("lbc status half:\n{shown}");
    let state = shown
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or_else(|| panic!("a State line in {shown}"));
    assert!(
        state.contains("degraded (1/2 running; replica ") && state.contains("exited with code 4"),
        "{shown}"
    );
    let listed = up.ok(&["service", "ls"]);
    eprintln!("lbc service ls:\n{listed}");
    let half = listed
        .lines()
        .find(|l| l.starts_with("half "))
        .unwrap_or_else(|| panic!("half in {listed}"));
    assert!(
        half.contains(" degraded ")
            && half.contains("1/2 running; replica ")
            && half.contains("exited with code 4"),
        "{listed}"
    );
    let all = up.ok(&["status"]);
    let half = all
        .lines()
        .find(|l| l.starts_with("half "))
        .unwrap_or_else(|| panic!("half in {all}"));
    assert!(
        half.contains(" degraded ") && half.contains("1/2") && half.contains("exited with code 4"),
        "{all}"
    );
    up.ok(&["service", "rm", "half", "--yes"]);

    // env: set, ls, unset; the replicas get the new environment.
    let said = up.ok(&["env", "set", "web", "GREETING=hello world", "EXTRA=1=2"]);
    assert!(said.contains("EXTRA set, GREETING set"), "{said}");
    let env = up.json(&["env", "ls", "web"]);
    assert_eq!(env["GREETING"], "hello world");
    assert_eq!(env["EXTRA"], "1=2");
    let table = up.ok(&["env", "ls", "web"]);
    assert!(
        table.starts_with("KEY") && table.contains("hello world"),
        "{table}"
    );
    let replicas = wait_rolled_out(&up, "web", 2);
    for r in &replicas {
        // A short id (the end lbc prints), shortened again: a unique prefix.
        let id = r["id"].as_str().unwrap();
        let short = &id[id.len() - 6..id.len() - 1].to_lowercase();
        let out = up.ok(&[
            "exec",
            "web",
            "--replica",
            short,
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            "echo \"$GREETING\"",
        ]);
        assert_eq!(out, "hello world\n", "replica {id}");
    }
    let said = up.ok(&["env", "unset", "web", "EXTRA", "NOPE"]);
    assert!(said.contains("EXTRA removed, NOPE was not set"), "{said}");
    let env = up.json(&["env", "ls", "web"]);
    assert!(env.get("EXTRA").is_none(), "{env}");
    let said = up.ok(&["env", "set", "web", "GREETING=hello world"]);
    assert!(said.contains("nothing changed"), "{said}");
    up.fails(&["env", "set", "web", "=x"], 2);
    up.fails(&["env", "set", "web", "NOVALUE"], 2);
    up.fails(&["env", "set", "web"], 2);
    up.fails(&["env", "ls", "nope"], 3);
    let replicas = wait_rolled_out(&up, "web", 2);
    let out = up.ok(&[
        "exec",
        "web",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "echo ${EXTRA:-gone}",
    ]);
    assert_eq!(out, "gone\n");

    // Short ids: an ambiguous prefix lists the candidates; an unknown one
    // is not found.
    let ids: Vec<&str> = replicas.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let common: String = ids[0]
        .chars()
        .zip(ids[1].chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a)
        .collect();
    assert!(
        !common.is_empty(),
        "replica ids made together share a prefix: {ids:?}"
    );
    let line = up.fails(&["logs", "web", "--replica", &common], 2);
    assert!(
        line.contains("ambiguous") && line.contains(ids[0]) && line.contains(ids[1]),
        "{line}"
    );
    up.fails(&["logs", "web", "--replica", "zzzzzzzz"], 3);
    up.fails(
        &[
            "exec",
            "web",
            "--replica",
            &common,
            "--",
            "/bin/busybox",
            "true",
        ],
        2,
    );

    // rm without a terminal and without --yes: refused, nothing deleted.
    let line = up.fails(&["service", "rm", "big"], 2);
    assert!(
        line.contains("refusing") && line.contains("--yes"),
        "{line}"
    );
    up.ok(&["service", "get", "big"]);
    let line = up.fails(&["project", "rm", "app"], 2);
    assert!(
        line.contains("with its 2 services") && line.contains("--yes"),
        "{line}"
    );
    up.ok(&["project", "get", "app"]);
    up.fails(&["service", "rm", "nope"], 3);
    // On a terminal: asked; "n" keeps it (exit 1), "y" deletes.
    let ask = |answer: &str| {
        let cmd = up.lbc(&["service", "rm", "big"]);
        let mut p = expectrl::Session::spawn(cmd).expect("spawn lbc service rm on a pty");
        p.set_expect_timeout(Some(Duration::from_secs(30)));
        p.expect("Delete service \"big\" with its replicas and builds? [y/N] ")
            .expect("the question");
        p.send_line(answer).unwrap();
        match p.get_process().wait().expect("wait for lbc") {
            expectrl::WaitStatus::Exited(_, code) => code,
            other => panic!("lbc did not exit normally: {other:?}"),
        }
    };
    assert_eq!(ask("n"), 1);
    up.ok(&["service", "get", "big"]);
    assert_eq!(ask("y"), 0);
    up.fails(&["service", "get", "big"], 3);
    up.ok(&["service", "create", "big", "--image", image, "-m", "512G"]);
    // With it: gone.
    up.ok(&["service", "rm", "big", "--yes"]);
    up.fails(&["service", "get", "big"], 3);

    // The names shell completion offers, from the API.
    let services = up.ok(&["__complete", "services"]);
    assert_eq!(
        services.lines().collect::<Vec<_>>(),
        ["web", "app/web"],
        "{services}"
    );
    assert_eq!(up.ok(&["__complete", "projects"]).trim(), "app");
    let bash = up.ok(&["completion", "bash"]);
    assert!(bash.contains("__complete \"$kind\""), "{bash}");
    // Without an API: nothing, and no error.
    let out = run_with_stdin(
        lbc_in(&up.dir.path().join("nohome"), &["__complete", "services"]),
        "",
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{out:?}"
    );

    up.ok(&["project", "rm", "app", "-y"]);
    up.fails(&["project", "get", "app"], 3);
}
