//! lb's test helpers, a dev-dependency only: a real etcd server (Debian's
//! `etcd-server`, `/usr/bin/etcd`) on free loopback ports in a temp dir,
//! stopped when dropped, and the local busybox test images, one with bash
//! (nothing can be pulled on the machines lb is tested on).

pub mod etcd_cluster;
pub mod netns;
pub mod pebble;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd of one member.
pub struct EtcdServer {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl EtcdServer {
    /// Starts etcd and waits until it answers. Panics with a clear message
    /// when the `etcd` binary is missing (install Debian's `etcd-server`).
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let mut server = Self {
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        server.spawn().await;
        server
    }

    /// The client URL, e.g. `http://127.0.0.1:23790`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log file");
        let child = Command::new(std::env::var("LB_TEST_ETCD").unwrap_or_else(|_| "etcd".into()))
            .args(["--name", "test", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &self.endpoint()])
            .args(["--advertise-client-urls", &self.endpoint()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            // etcd's default limits (128 ops a transaction, 1.5 MiB a
            // request), as a user's cluster has them.
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start `etcd`: install Debian's etcd-server (contrib/test.sh does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = etcd_client::Client::connect([self.endpoint()], None).await {
                let mut kv = client.kv_client();
                if kv.get("/", None).await.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not answer within 20 s; see {}",
                self.dir.path().join("etcd.log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills etcd (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills etcd and starts it again on the same data and ports.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The test image `lb-test-busybox:1`, built once per process with the
/// `docker` CLI from Debian's busybox-static (`/bin/busybox`) into an empty
/// image, with a page at `/www/index.html` ("hello from lb\n"). No registry
/// is reachable here, so tests build what they run.
pub fn busybox_image() -> &'static str {
    const IMAGE: &str = "lb-test-busybox:1";
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = tempfile::tempdir().expect("temp dir for the image");
        std::fs::copy("/bin/busybox", dir.path().join("busybox"))
            .expect("Debian's busybox-static at /bin/busybox (contrib/deps.sh --test installs it)");
        std::fs::write(dir.path().join("index.html"), "hello from lb\n").expect("write index.html");
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY index.html /www/index.html\n",
        )
        .expect("write Dockerfile");
        let out = Command::new("docker")
            .args(["build", "-q", "-t", IMAGE])
            .arg(dir.path())
            .output()
            .expect("run docker build");
        assert!(
            out.status.success(),
            "docker build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    IMAGE
}

/// The test image `lb-test-bash:1`, built once per process: the busybox
/// test image with busybox's applets installed in `/bin` (`sh`, `sleep`,
/// `ps`, ...) and Debian's statically linked bash (`/bin/bash-static`,
/// package bash-static) as `/bin/bash`.
pub fn bash_image() -> &'static str {
    const IMAGE: &str = "lb-test-bash:1";
    static ONCE: std::sync::Once = std::sync::Once::new();
    let base = busybox_image();
    ONCE.call_once(|| {
        let dir = tempfile::tempdir().expect("temp dir for the image");
        std::fs::copy("/bin/bash-static", dir.path().join("bash")).expect(
            "Debian's bash-static at /bin/bash-static (contrib/deps.sh --test installs it)",
        );
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!(
                "FROM {base}\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
                 COPY bash /bin/bash\n"
            ),
        )
        .expect("write Dockerfile");
        let out = Command::new("docker")
            .args(["build", "-q", "-t", IMAGE])
            .arg(dir.path())
            .output()
            .expect("run docker build");
        assert!(
            out.status.success(),
            "docker build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    IMAGE
}

/// Runs git in `dir` (a fixed author), panicking with its output on failure.
pub fn git(dir: &std::path::Path, args: &[&str]) {
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

/// A git repository served over dumb HTTP by a real web server
/// (`python3 -m http.server`), as a user's code host would; stopped when
/// dropped.
pub struct GitRepo {
    /// The working copy commits are made in.
    pub work: PathBuf,
    bare: PathBuf,
    /// The clone URL.
    pub url: String,
    server: Child,
}

impl Drop for GitRepo {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl GitRepo {
    /// An empty repository (branch `main`) under `root`, served.
    pub fn serve(root: &std::path::Path) -> Self {
        let work = root.join("work");
        let served = root.join("served");
        let bare = served.join("app.git");
        std::fs::create_dir_all(&work).expect("work dir");
        std::fs::create_dir_all(&served).expect("served dir");
        git(&work, &["init", "-q", "-b", "main"]);
        git(root, &["init", "-q", "--bare", &bare.to_string_lossy()]);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(&served)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        GitRepo {
            work,
            bare,
            url: format!("http://127.0.0.1:{port}/app.git"),
            server,
        }
    }

    /// Writes files, commits everything in the working copy, publishes it.
    pub fn commit(&self, files: &[(&str, &[u8])], message: &str) {
        for (name, bytes) in files {
            std::fs::write(self.work.join(name), bytes).expect("write file");
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(
            &self.work,
            &["push", "-q", &self.bare.to_string_lossy(), "main"],
        );
        git(&self.bare, &["update-server-info"]);
    }
}
