//! `lbc quota [USER]` and `lbc quota set USER --max-...` against a real
//! `lb up`: the admin reads and changes a user's limits (only the flags
//! given change, `unlimited` lifts one), the limit then holds for the user,
//! and bad input fails with its exit code.

mod common;

use common::{expect_failure, Up};

#[test]
fn an_admin_reads_and_sets_a_users_quota() {
    let up = Up::start();
    let out = up.run_stdin(
        &[
            "--context",
            "ann",
            "signup",
            "--api",
            &up.url,
            "-u",
            "ann",
            "--password-stdin",
        ],
        "ann's password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ann = |args: &[&str]| {
        let mut all = vec!["--context", "ann"];
        all.extend(args);
        up.run(&all)
    };
    assert!(ann(&["project", "create", "first"]).status.success());

    // Unlimited at first, with what ann holds.
    let view = up.json(&["quota", "ann"]);
    assert_eq!(view["username"], "ann", "{view}");
    assert!(view["quota"]["projects"].is_null(), "{view}");
    assert_eq!(view["usage"]["projects"], 1, "{view}");
    let text = up.ok(&["quota", "ann"]);
    assert!(
        text.contains("Projects") && text.contains("1 of unlimited"),
        "{text}"
    );

    // Set two limits; then lift one: the other stays.
    let view = up.json(&[
        "quota",
        "set",
        "ann",
        "--max-projects",
        "1",
        "--max-memory",
        "1GiB",
    ]);
    assert_eq!(view["quota"]["projects"], 1, "{view}");
    assert_eq!(view["quota"]["memory"], 1024, "{view}");
    let text = up.ok(&["quota", "ann"]);
    assert!(text.contains("1 of 1"), "{text}");
    assert!(text.contains("0 MiB of 1024 MiB"), "{text}");

    // The limit holds for ann.
    let out = ann(&["project", "create", "second"]);
    let line = expect_failure(out, &["project create (over quota)"], 5);
    assert!(line.contains("projects"), "{line}");

    let view = up.json(&["quota", "set", "ann", "--max-projects", "unlimited"]);
    assert!(view["quota"]["projects"].is_null(), "{view}");
    assert_eq!(view["quota"]["memory"], 1024, "{view}");
    assert!(ann(&["project", "create", "second"]).status.success());

    // The user by id works as by name; -q prints the id.
    let id = up.ok(&["quota", "ann", "-q"]).trim().to_owned();
    assert_eq!(up.json(&["quota", &id])["username"], "ann");

    // Bad input: no limit, a bad value, an unknown user, not an admin.
    let line = up.fails(&["quota", "set", "ann"], 2);
    assert!(line.contains("--max-projects"), "{line}");
    let line = up.fails(&["quota", "set", "ann", "--max-replicas=-3"], 2);
    assert!(line.contains("max-replicas"), "{line}");
    let line = up.fails(&["quota", "set", "ann", "--max-memory", "lots"], 2);
    assert!(line.contains("max-memory"), "{line}");
    up.fails(&["quota", "nobody"], 3);
    let out = ann(&["quota"]);
    let line = expect_failure(out, &["quota (not an admin)"], 5);
    assert!(line.contains("admin"), "{line}");
}
