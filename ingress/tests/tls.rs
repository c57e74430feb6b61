//! HTTPS against real clients: curl over TLS with HTTP/2 (ALPN) and
//! HTTP/1.1, certificates made by `openssl`, chosen by SNI from the table.

mod common;

use common::*;
use lb_ingress::tls::certified_key;

/// curl against `https://<host>:<port><path>` resolved to the ingress,
/// trusting `ca`.
async fn https(ingress: &Ingress, host: &str, ca: &std::path::Path, extra: &[&str]) -> Reply {
    let port = ingress.https.unwrap().port();
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}/tls");
    let mut args = vec![
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_version}",
    ];
    args.extend(extra);
    args.push(&url);
    curl(&args).await
}

#[tokio::test]
async fn https_serves_h2_and_http11_with_the_certificate_of_the_name() {
    let web = echo("web").await;
    let wild = echo("wild").await;
    let dir = tempfile::tempdir().unwrap();
    let app = certificate(dir.path(), &["app.test"]);
    let star = certificate(dir.path(), &["*.wild.test"]);
    std::fs::write(
        dir.path().join("ca.pem"),
        format!("{}{}", app.chain_pem, star.chain_pem),
    )
    .unwrap();
    let ca = dir.path().join("ca.pem");
    let mut t = table(vec![
        route("web", &["app.test", "nocert.test"], &[web]),
        route("wild", &["*.wild.test"], &[wild]),
    ]);
    t.certificates = vec![app, star];
    let ingress = Ingress::with(test_config(true), t).await;

    let r = https(&ingress, "app.test", &ca, &["--http2"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.ends_with("\n2"), "not HTTP/2: {r:?}");
    let seen = r.body.to_lowercase();
    assert!(seen.starts_with("web\n"), "{seen}");
    assert!(seen.contains("x-forwarded-proto: https\n"), "{seen}");
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");

    let r = https(&ingress, "app.test", &ca, &["--http1.1"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.ends_with("\n1.1"), "not HTTP/1.1: {r:?}");

    let r = https(&ingress, "a.wild.test", &ca, &["--http2"]).await;
    assert!(r.body.starts_with("wild\n"), "wildcard certificate: {r:?}");

    // A routed name without a certificate: no default certificate, the
    // handshake fails (curl 35: SSL connect error).
    let r = https(&ingress, "nocert.test", &ca, &[]).await;
    assert_eq!((r.status, r.exit), (0, 35), "{r:?}");
}

#[tokio::test]
async fn a_certificate_added_later_is_served_and_a_bad_one_is_not() {
    let web = echo("web").await;
    let dir = tempfile::tempdir().unwrap();
    let good = certificate(dir.path(), &["app.test"]);
    std::fs::write(dir.path().join("ca.pem"), &good.chain_pem).unwrap();
    let ca = dir.path().join("ca.pem");
    let mut t = table(vec![route("web", &["app.test"], &[web])]);
    let ingress = Ingress::with(test_config(true), t.clone()).await;
    let r = https(&ingress, "app.test", &ca, &[]).await;
    assert_eq!(r.exit, 35, "no certificate yet: {r:?}");

    // A key of another certificate: refused, no handshake.
    let other = certificate(dir.path(), &["other.test"]);
    let mut mismatched = good.clone();
    mismatched.key_pem = other.key_pem.clone();
    let err = certified_key(&mismatched).unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    assert!(!err.contains("PRIVATE"), "key material in an error: {err}");
    t.revision = 2;
    t.certificates = vec![mismatched];
    ingress.routes.send_replace(t.clone().into());
    let r = https(&ingress, "app.test", &ca, &[]).await;
    assert_eq!(r.exit, 35, "mismatched key served: {r:?}");

    t.revision = 3;
    t.certificates = vec![good];
    ingress.routes.send_replace(t.into());
    let r = https(&ingress, "app.test", &ca, &[]).await;
    assert_eq!(r.status, 200, "{r:?}");

    let mut garbage = other;
    garbage.chain_pem = "not a pem".into();
    assert!(certified_key(&garbage).is_err());
}
