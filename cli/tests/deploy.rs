//! `lbc deploy` against a real build: a git repository served by
//! `git daemon` on loopback, built by lb's builder into its registry, run by
//! its node. Then a failing build (exit 1), `build ls|get|logs` and
//! `rollback`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{wait_for, Up};

struct GitDaemon(Child);

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.test"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A repository `app` with a Dockerfile building a busybox httpd image,
/// served at `git://127.0.0.1:PORT/app`.
fn serve_repo(base: &Path) -> (GitDaemon, String) {
    let repo = base.join("app");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::copy("/bin/busybox", repo.join("busybox")).expect("Debian's busybox-static");
    std::fs::write(repo.join("index.html"), "version one\n").unwrap();
    std::fs::write(
        repo.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY index.html /www/index.html\n\
         CMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "version one"]);
    let port = free_port();
    #[allow(clippy::zombie_processes)] // waited for by GitDaemon's Drop
    let child = Command::new("git")
        .arg("daemon")
        .arg("--reuseaddr")
        .arg("--listen=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg("--export-all")
        .arg(base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start git daemon");
    let daemon = GitDaemon(child);
    wait_for("git daemon to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (daemon, format!("git://127.0.0.1:{port}/app"))
}

#[test]
fn deploy_follows_a_real_build_until_the_new_version_runs() {
    let up = Up::start();
    let repos = up.dir.path().join("repos");
    let (_daemon, url) = serve_repo(&repos);
    up.ok(&["project", "create", "shop"]);
    up.ok(&["project", "use", "shop"]);
    up.ok(&[
        "service", "create", "app", "--repo", &url, "--branch", "main", "-m", "16", "-p", "8080",
    ]);

    // The build is followed to the end and the new version runs.
    let out = up.run(&["deploy", "app"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "deploy failed ({:?}): {stderr}\nstdout: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("==> Cloning"), "steps shown: {stderr}");
    assert!(stderr.contains("Build 1 succeeded"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Deployed build 1"), "{stdout}");
    let build = up.json(&["build", "get", "app", "1"]);
    assert_eq!(build["status"], "succeeded");
    let digest = build["digest"].as_str().unwrap().to_owned();
    let replicas = up.wait_running("app", 1);
    assert!(
        replicas[0]["image"].as_str().unwrap().contains(&digest),
        "the replica runs the build: {replicas:?}"
    );
    let served = up.ok(&[
        "exec",
        "app",
        "--",
        "/bin/busybox",
        "wget",
        "-qO-",
        "http://127.0.0.1:8080/",
    ]);
    assert_eq!(served, "version one\n");
    let log = up.ok(&["build", "logs", "app", "1"]);
    assert!(!log.is_empty(), "a build log");
    let list = up.ok(&["build", "ls", "app"]);
    assert!(
        list.starts_with("NUMBER") && list.contains("succeeded"),
        "{list}"
    );

    // A broken Dockerfile: the deploy fails with exit 1 and says why.
    let repo = repos.join("app");
    std::fs::write(repo.join("Dockerfile"), "FROM scratch\nCOPY missing /x\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "broken"]);
    let out = up.run(&["deploy", "app"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lbc: error: build 2 failed"), "{stderr}");
    assert_eq!(up.json(&["build", "get", "app", "2"])["status"], "failed");
    up.fails(&["rollback", "app", "2"], 4);
    up.fails(&["build", "cancel", "app", "2"], 4);
    up.fails(&["build", "get", "app", "9"], 3);

    // Rollback to the good build.
    up.ok(&["rollback", "app", "1"]);
    let spec = up.json(&["service", "get", "app"]);
    assert!(spec["spec"]["image"].as_str().unwrap().contains(&digest));
}

#[test]
fn deploy_shows_the_pending_reason_and_times_out_with_it() {
    let up = Up::start();
    let repos = up.dir.path().join("repos");
    let (_daemon, url) = serve_repo(&repos);
    up.ok(&["project", "create", "shop"]);
    up.ok(&["project", "use", "shop"]);
    // More memory than the node has: the new replica can never be placed.
    up.ok(&[
        "service", "create", "app", "--repo", &url, "--branch", "main", "-m", "512G", "-p", "8080",
    ]);
    let help = up.ok(&["deploy", "--help"]);
    assert!(
        help.contains("[default: 600]"),
        "a 10-minute default: {help}"
    );

    // 40 s: the build takes seconds here, and the harness calls a run of
    // over 60 s a hang.
    let started = std::time::Instant::now();
    let out = up.run(&["deploy", "app", "--timeout", "40"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("lbc deploy:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Build 1 succeeded"), "{stderr}");
    // Progress while waiting, with the scheduler's reason.
    assert!(
        stderr.contains("==> Rolling out: 0/1 replicas of generation")
            && stderr.contains("pending: no node has 524288 MiB free"),
        "progress with the pending reason: {stderr}"
    );
    // The failure says why.
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("lbc: error: timed out after 40 s: 0/1 replicas of generation")
            && last.contains("pending: no node has 524288 MiB free"),
        "{last}"
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(55),
        "gave up at its deadline: {took:?}"
    );
    // The build itself succeeded: deploying is not building.
    assert_eq!(
        up.json(&["build", "get", "app", "1"])["status"],
        "succeeded"
    );
}
