//! `lbc run`, `lbc job` and `lbc cron ls` against a real `lb up` running
//! busybox jobs on the real Docker engine: `lbc run` prints the job's
//! output and exits with its exit code.

mod common;

use common::Up;

#[test]
fn run_exits_with_the_jobs_code_and_prints_its_output() {
    let image = lb_testing::busybox_image();
    let up = Up::start();
    up.ok(&["project", "create", "app"]);
    up.ok(&["project", "use", "app"]);
    up.ok(&[
        "service",
        "create",
        "work",
        "--image",
        image,
        "-r",
        "0",
        "-m",
        "16",
        "-e",
        "GREETING=hi-from-env",
        "--stop-timeout",
        "1",
    ]);

    let out = up.ok(&[
        "run",
        "work",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "echo \"$GREETING\"",
    ]);
    assert!(out.contains("hi-from-env"), "{out}");

    let out = up.run(&[
        "run",
        "work",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "echo failing; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("failing"),
        "{out:?}"
    );

    // Killed at its time limit: the code is the kill's.
    let out = up.run(&[
        "run",
        "work",
        "--timeout",
        "1",
        "--",
        "/bin/busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed_out"),
        "{out:?}"
    );

    let jobs = up.json(&["job", "ls", "work"]);
    let items = jobs["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{jobs:#}");
    assert_eq!(items[0]["state"], "timed_out");
    assert_eq!(items[1]["exit_code"], 7);
    let id = items[1]["id"].as_str().unwrap();
    let shown = up.json(&["job", "show", "work", id]);
    assert!(
        shown["logs"].as_str().unwrap().contains("failing"),
        "{shown:#}"
    );
    let err = up.fails(&["job", "cancel", "work", id], 4);
    assert!(err.contains("already over"), "{err}");

    // A schedule shows its next run.
    up.ok(&["cron", "ls", "work"]);
}
