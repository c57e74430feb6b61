//! lb-git against real git: a repository served by `git daemon` (the git
//! protocol, shallow clones) and by a dumb HTTP server (`python3 -m
//! http.server`, no shallow clones), refused transports, a credential
//! header seen by a server, and a server that never answers.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use lb_git::{Credentials, Error, Git};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A child process killed when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare repository `repo.git` under the returned dir with two commits on
/// `main` and one on `feature`: (dir, first commit, main's head, feature's head).
fn repository() -> (tempfile::TempDir, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("a"), "one").unwrap();
    git(&work, &["add", "a"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let first = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("a"), "two").unwrap();
    git(&work, &["commit", "-q", "-am", "second on main"]);
    let main = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(work.join("b"), "f").unwrap();
    git(&work, &["add", "b"]);
    git(&work, &["commit", "-q", "-m", "feature work"]);
    let feature = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["checkout", "-q", "main"]);
    git(dir.path(), &["clone", "-q", "--bare", "work", "repo.git"]);
    git(&dir.path().join("repo.git"), &["update-server-info"]);
    (dir, first, main, feature)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port` (at most 10 s).
fn wait_listening(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no server on port {port} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn git_daemon(base: &Path) -> (Server, String) {
    let port = free_port();
    let child = Command::new("git")
        .arg("daemon")
        .arg("--export-all")
        .arg("--reuseaddr")
        .arg("--listen=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(base)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    wait_listening(port);
    (server, format!("git://127.0.0.1:{port}/repo.git"))
}

fn dumb_http(base: &Path) -> (Server, String) {
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(base)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    wait_listening(port);
    (server, format!("http://127.0.0.1:{port}/repo.git"))
}

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn ls_remote_answers_a_branch_head() {
    let (dir, _, main, feature) = repository();
    let (_server, url) = git_daemon(dir.path());
    let git = Git::new(LIMIT);
    assert_eq!(
        git.ls_remote(&url, Some("main")).await.unwrap(),
        Some(main.clone())
    );
    assert_eq!(
        git.ls_remote(&url, Some("feature")).await.unwrap(),
        Some(feature)
    );
    assert_eq!(git.ls_remote(&url, None).await.unwrap(), Some(main));
    assert_eq!(git.ls_remote(&url, Some("nope")).await.unwrap(), None);
}

#[tokio::test]
async fn clones_a_branch_head_shallow_and_a_commit_in_full() {
    let (dir, first, _, feature) = repository();
    let (_server, url) = git_daemon(dir.path());
    let work = tempfile::tempdir().unwrap();
    let git = Git::new(LIMIT);

    let head = work.path().join("head");
    let out = git
        .clone_at(&url, Some("feature"), None, &head)
        .await
        .unwrap();
    assert_eq!(out.sha, feature);
    assert_eq!(out.subject, "feature work");
    assert!(
        head.join(".git/shallow").exists(),
        "a branch head is cloned shallow"
    );

    let at = work.path().join("at");
    let out = git
        .clone_at(&url, Some("main"), Some(&first), &at)
        .await
        .unwrap();
    assert_eq!(
        out,
        lb_git::Checkout {
            sha: first,
            subject: "first".into()
        }
    );
    assert_eq!(std::fs::read_to_string(at.join("a")).unwrap(), "one");

    let missing = work.path().join("missing");
    let e = git
        .clone_at(
            &url,
            None,
            Some("0123456789012345678901234567890123456789"),
            &missing,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Failed { ref command, .. } if command == "checkout"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_dumb_http_server_gets_a_full_clone() {
    let (dir, _, main, _) = repository();
    let (_server, url) = dumb_http(dir.path());
    let work = tempfile::tempdir().unwrap();
    let into = work.path().join("repo");
    let out = Git::new(LIMIT)
        .clone_at(&url, None, None, &into)
        .await
        .unwrap();
    assert_eq!(out.sha, main);
    assert!(!into.join(".git/shallow").exists());
}

#[tokio::test]
async fn local_and_ext_transports_are_refused() {
    let (dir, _, _, _) = repository();
    let work = tempfile::tempdir().unwrap();
    let git = Git::new(LIMIT);
    let marker = work.path().join("ran");
    let path = dir.path().join("repo.git");
    for url in [
        path.display().to_string(),
        format!("file://{}", path.display()),
        format!("ext::sh -c touch% {}", marker.display()),
    ] {
        let e = git.ls_remote(&url, Some("main")).await.unwrap_err();
        assert!(matches!(e, Error::Failed { .. }), "{url}: {e:?}");
        let e = git
            .clone_at(&url, None, None, &work.path().join("c"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Failed { .. }), "{url}: {e:?}");
    }
    assert!(!marker.exists(), "ext:: ran a command");
}

#[tokio::test]
async fn credentials_reach_the_server_as_a_header() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let _ = socket
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        String::from_utf8_lossy(&request).into_owned()
    });
    let origin = format!("http://127.0.0.1:{port}/");
    let git = Git::new(LIMIT).with_credentials(Credentials::http_header(
        &origin,
        "Authorization: Basic dXNlcjpzZWNyZXQ=".into(),
    ));
    let e = git
        .ls_remote(&format!("{origin}o/r.git"), None)
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("dXNlcjpzZWNyZXQ="), "{e}");
    let request = server.await.unwrap();
    assert!(
        request
            .to_lowercase()
            .contains("authorization: basic dxnlcjpzzwnyzxq="),
        "{request}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/o/r.git", listener.local_addr().unwrap());
    // Accepts and holds connections without a word.
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let start = Instant::now();
    let e = Git::new(Duration::from_millis(500))
        .ls_remote(&url, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Timeout { ref command, .. } if command == "ls-remote"),
        "{e:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    held.abort();
}
