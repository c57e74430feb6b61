//! `lbc domains ls | add | rm | cert` and `lbc open` against a real `lb up`
//! (see `common/mod.rs`): domains claimed once cluster-wide (exit 4 naming
//! the domain), bad domains (exit 2), an uploaded certificate made by
//! Debian's `openssl` and one whose key does not match, and `open` with no
//! browser on PATH, with a recording `xdg-open`, and for a service without
//! a URL.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{expect_failure, run_with_stdin, wait_for, Up};
use serde_json::Value;

/// A self-signed certificate for `domain` and its key, made by openssl.
fn certificate(dir: &Path, name: &str, domain: &str) -> (String, String) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            &format!("/CN={domain}"),
            "-addext",
            &format!("subjectAltName=DNS:{domain}"),
        ])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

#[test]
fn domains_certificates_and_open() {
    let up = Up::start();
    let tmp = tempfile::tempdir().unwrap();
    up.ok(&["project", "create", "demo"]);
    up.ok(&["project", "use", "demo"]);
    // No replicas: domains and URLs are the spec's business.
    up.ok(&[
        "service",
        "create",
        "web",
        "--image",
        "nginx:1.25",
        "-r",
        "0",
        "-p",
        "8080",
    ]);
    up.ok(&[
        "service",
        "create",
        "api",
        "--image",
        "nginx:1.25",
        "-r",
        "0",
        "-p",
        "80",
        "-p",
        "9000",
    ]);

    // A PATH without a browser (lbc itself runs by its full path).
    let bare = tmp.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    let open = |service: &str, path: &Path| {
        let mut cmd = up.lbc(&["open", service]);
        cmd.env("PATH", path);
        run_with_stdin(cmd, "")
    };

    // No domain yet, no --base-domain: no URL, and how to get one.
    let line = expect_failure(open("web", &bare), &["open web"], 4);
    assert!(
        line.contains("no URL") && line.contains("lbc domains add"),
        "{line}"
    );
    // Two TCP ports and no ingress port: say so.
    let line = expect_failure(open("api", &bare), &["open api"], 4);
    assert!(line.contains("--ingress-port"), "{line}");

    // Add, list, the URL shows.
    assert!(up
        .ok(&["domains", "add", "web", "app.example.test"])
        .contains("app.example.test"));
    let table = up.ok(&["domains", "ls", "web"]);
    let mut lines = table.lines();
    assert!(
        lines.next().unwrap().starts_with("DOMAIN"),
        "header: {table}"
    );
    let row = lines.next().unwrap_or_default();
    assert!(
        row.starts_with("app.example.test") && row.contains("none"),
        "{table}"
    );
    let list = up.json(&["domains", "ls", "web"]);
    assert_eq!(list[0]["domain"], "app.example.test");
    assert_eq!(list[0]["certificate"], Value::Null);
    assert_eq!(up.ok(&["domains", "ls", "web", "-q"]), "app.example.test\n");
    let shown = up.ok(&["service", "get", "web"]);
    let urls = shown
        .lines()
        .find(|l| l.starts_with("URLs"))
        .unwrap_or_else(|| panic!("no URLs line: {shown}"));
    assert!(urls.contains("http://app.example.test"), "{shown}");
    let svc = up.json(&["service", "get", "web"]);
    let url = svc["urls"][0].as_str().unwrap().to_owned();
    assert!(url.starts_with("http://app.example.test"), "{svc}");

    // `open` with no browser prints the URL and succeeds.
    let out = open("web", &bare);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), url);
    // With one, it is handed the URL.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let opened = tmp.path().join("opened");
    let script = bin.join("xdg-open");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1\" > {}\n", opened.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = open("web", &bin);
    assert!(out.status.success(), "{out:?}");
    wait_for("xdg-open to be run", Duration::from_secs(10), || {
        std::fs::read_to_string(&opened).is_ok_and(|s| s.trim() == url)
    });

    // Taken by another service: conflict naming the domain; bad ones: usage.
    // (A service with two TCP ports takes domains once it names its
    // ingress port.)
    let svc = up.json(&["service", "update", "api", "--ingress-port", "9000"]);
    assert_eq!(svc["spec"]["ingress_port"], 9000);
    let line = up.fails(&["domains", "add", "api", "app.example.test"], 4);
    assert!(line.contains("app.example.test"), "{line}");
    let line = up.fails(&["domains", "add", "web", "not_a..domain"], 2);
    assert!(line.contains("not_a..domain"), "{line}");
    up.fails(&["domains", "ls", "missing"], 3);

    // The owner's own certificate: uploaded, listed, removed.
    let (chain, key) = certificate(tmp.path(), "app", "app.example.test");
    let (_, other_key) = certificate(tmp.path(), "other", "app.example.test");
    let line = up.fails(
        &[
            "domains",
            "cert",
            "web",
            "app.example.test",
            "--chain",
            &chain,
            "--key",
            &other_key,
        ],
        2,
    );
    assert!(line.contains("app.example.test"), "{line}");
    let line = up.fails(
        &[
            "domains",
            "cert",
            "web",
            "app.example.test",
            "--chain",
            "/nonexistent/chain.pem",
            "--key",
            &key,
        ],
        2,
    );
    assert!(line.contains("/nonexistent/chain.pem"), "{line}");
    up.fails(&["domains", "cert", "web", "app.example.test"], 2);
    up.ok(&[
        "domains",
        "cert",
        "web",
        "app.example.test",
        "--chain",
        &chain,
        "--key",
        &key,
    ]);
    let list = up.json(&["domains", "ls", "web"]);
    let cert = &list[0]["certificate"];
    assert_eq!(cert["status"], "issued", "{list}");
    assert_eq!(cert["source"], "uploaded", "{list}");
    assert!(!list.to_string().contains("PRIVATE KEY"), "{list}");
    let table = up.ok(&["domains", "ls", "web"]);
    assert!(
        table.contains("issued") && table.contains("uploaded") && table.contains("in "),
        "{table}"
    );
    up.ok(&["domains", "cert", "web", "app.example.test", "--remove"]);
    assert_eq!(
        up.json(&["domains", "ls", "web"])[0]["certificate"],
        Value::Null
    );

    // Removed: gone from the list and the URLs; a second removal is 404.
    up.ok(&["domains", "rm", "web", "app.example.test", "--yes"]);
    assert_eq!(up.json(&["domains", "ls", "web"]), serde_json::json!([]));
    assert_eq!(
        up.json(&["service", "get", "web"])["urls"],
        serde_json::json!([])
    );
    let line = up.fails(&["domains", "rm", "web", "app.example.test", "--yes"], 3);
    assert!(line.contains("app.example.test"), "{line}");

    // The ingress port chosen: open finds the other service's URL.
    up.ok(&["domains", "add", "api", "api.example.test"]);
    let out = open("api", &bare);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("http://api.example.test"),
        "{out:?}"
    );
}
