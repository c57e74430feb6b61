//! End-to-end test of `lbc script` against a real `lb up` (see
//! `common/mod.rs`): put from a file and from stdin, ls, show, run in one
//! replica and in all (the output printed, the exit code lbc's), runs, rm.
//! The busybox test image has no `sh` in PATH: the scripts name their
//! interpreter as a command, `/bin/busybox sh -s --`.

mod common;

use common::{wait_for, Up};
use std::time::Duration;

#[test]
fn scripts_are_stored_and_run_with_their_exit_code() {
    let image = lb_testing::busybox_image();
    let up = Up::start();
    up.ok(&["project", "create", "ops"]);
    up.ok(&["project", "use", "ops"]);
    up.ok(&[
        "service",
        "create",
        "idle",
        "--image",
        image,
        "-r",
        "2",
        "-m",
        "16",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do /bin/busybox sleep 1; done",
    ]);
    let replicas = up.wait_running("idle", 2);
    let file = up.dir.path().join("greet.sh");
    std::fs::write(
        &file,
        "echo \"hello $1 from $WHO\"\necho warn >&2\nexit $CODE\n",
    )
    .unwrap();
    let stored = up.ok(&[
        "script",
        "put",
        "greet",
        "--interpreter",
        "/bin/busybox sh -s --",
        "-f",
        file.to_str().unwrap(),
        "--arg",
        "world",
        "-e",
        "WHO=lbc",
        "-e",
        "CODE=0",
    ]);
    assert!(stored.contains("Script \"greet\" stored"), "{stored}");
    let ls = up.ok(&["script", "ls"]);
    assert!(ls.starts_with("NAME"), "{ls}");
    assert!(
        ls.contains("greet") && ls.contains("/bin/busybox sh -s --"),
        "{ls}"
    );
    let show = up.ok(&["script", "show", "greet"]);
    assert!(
        show.contains("WHO=lbc") && show.contains("echo warn >&2"),
        "{show}"
    );

    // One replica: stdout and stderr apart, exit code 0.
    let out = up.run(&["script", "run", "greet", "-s", "idle", "--", "there"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello there from lbc\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "warn\n");

    // A failing body from stdin: lbc exits with the script's code, on every
    // replica, with a header for each.
    let out = up.run_stdin(
        &[
            "script",
            "put",
            "fail",
            "--interpreter",
            "/bin/busybox sh -s --",
            "-f",
            "-",
        ],
        "echo failing; exit 7\n",
    );
    assert!(out.status.success(), "{out:?}");
    let out = up.run(&["script", "run", "fail", "-s", "idle", "--all"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "failing\nfailing\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for r in &replicas {
        let id = r["id"].as_str().unwrap();
        assert!(
            stderr.contains(&format!("== replica {id} (exit 7")),
            "{stderr}"
        );
    }
    // One replica streams (the run websocket): the script's code is ours.
    let out = up.run(&["script", "run", "fail", "-s", "idle"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "failing\n");
    // -o json: the API's answer.
    let run = up.json(&[
        "script",
        "run",
        "greet",
        "-s",
        "idle",
        "--replica",
        replicas[1]["id"].as_str().unwrap(),
    ]);
    assert_eq!(run["replicas"][0]["exit_code"], 0, "{run}");
    assert_eq!(run["replicas"][0]["stdout"], "hello world from lbc\n");

    // Usage and not found.
    up.fails(
        &[
            "script",
            "run",
            "greet",
            "-s",
            "idle",
            "--all",
            "--replica",
            "x",
        ],
        2,
    );
    up.fails(&["script", "run", "nope", "-s", "idle"], 3);
    up.fails(&["script", "put", "Bad", "-f", file.to_str().unwrap()], 2);

    // History, then gone with rm.
    wait_for("two runs of greet", Duration::from_secs(5), || {
        up.ok(&["script", "runs", "greet"]).lines().count() == 3
    });
    up.ok(&["script", "rm", "greet"]);
    up.fails(&["script", "show", "greet"], 3);
    assert!(!up.ok(&["script", "ls"]).contains("greet"));
}
