//! Static sites built by the real builder with the machine's Docker engine
//! and served by the image's own nginx, checked with real HTTP requests:
//! caching headers on a hashed asset and on `index.html`, gzip, the SPA
//! fallback on and off, 404 for a missing asset. The API server and the
//! builder run in this process; the repository is served over dumb HTTP.
//!
//! No image is pulled. `lb-test-nginx:1` is Debian's nginx (`/usr/sbin/nginx`,
//! the libraries `ldd` lists, `/etc/nginx/mime.types`) in an image made
//! `FROM scratch`; `lb-test-node:1` is the machine's node and npm the same
//! way, with busybox for the shell. The builder's `static` and `node` base
//! images point at them.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use lb_api::server::Signup;
use lb_store::embedded::EmbeddedStore;
use lb_store::Shared;
use serde_json::{json, Value};

/// Copies `binary` and the shared libraries `ldd` lists for it into `root`
/// at their own paths.
fn copy_with_libraries(binary: &str, root: &Path) {
    copy_into(Path::new(binary), root);
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    assert!(out.status.success(), "ldd {binary}: {out:?}");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; vdso has no path.
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            copy_into(Path::new(path), root);
        }
    }
}

/// Copies the file at `path` (symlinks followed) to the same path under `root`.
fn copy_into(path: &Path, root: &Path) {
    let target = root.join(path.strip_prefix("/").unwrap());
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(path, &target).unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
}

/// Copies the directory tree at `path` to the same path under `root`
/// (symlinks kept as links).
fn copy_tree(path: &Path, root: &Path) {
    let target = root.join(path.strip_prefix("/").unwrap());
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let out = Command::new("cp")
        .arg("-a")
        .arg(path)
        .arg(&target)
        .output()
        .expect("run cp");
    assert!(out.status.success(), "cp {}: {out:?}", path.display());
}

/// `docker build -t tag dir`, panicking with Docker's output on failure.
fn docker_build(tag: &str, dir: &Path) {
    let out = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(dir)
        .output()
        .expect("run docker build");
    assert!(
        out.status.success(),
        "docker build {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's nginx in an image made FROM scratch, run like the official
/// image: `nginx -g "daemon off;"` as root, workers as `nobody`.
fn nginx_image() -> &'static str {
    const IMAGE: &str = "lb-test-nginx:1";
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        // Debian's nginx (contrib/deps.sh --test installs it).
        copy_with_libraries("/usr/sbin/nginx", &root);
        copy_into(Path::new("/etc/nginx/mime.types"), &root);
        // The paths Debian's build uses (`nginx -V`), and the users the
        // workers switch to.
        for d in [
            "var/lib/nginx",
            "var/log/nginx",
            "run",
            "tmp",
            "usr/share/nginx/html",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
        std::fs::write(
            root.join("etc/nginx/nginx.conf"),
            "events {}\nhttp { include mime.types; server { listen 80; root /usr/share/nginx/html; } }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
             STOPSIGNAL SIGQUIT\nEXPOSE 80\nCMD [\"nginx\", \"-g\", \"daemon off;\"]\n",
        )
        .unwrap();
        docker_build(IMAGE, dir.path());
    });
    IMAGE
}

/// The machine's node and npm in an image made FROM scratch, with busybox
/// as the shell and core tools; npm's audit and notices off (no network).
fn node_image() -> &'static str {
    const IMAGE: &str = "lb-test-node:1";
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let node = which("node");
        let npm_cli = std::fs::canonicalize(which("npm")).expect("npm's real path");
        // .../npm/bin/npm-cli.js: the package, and the directory holding it
        // (with its dependencies where a distribution splits them out).
        let npm = npm_cli.ancestors().nth(2).expect("npm's package directory");
        let modules = npm.parent().expect("npm's parent directory");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        copy_with_libraries(node.to_str().unwrap(), &root);
        copy_tree(modules, &root);
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        if node != Path::new("/usr/bin/node") {
            std::fs::copy(&node, root.join("usr/bin/node")).unwrap();
        }
        std::os::unix::fs::symlink(&npm_cli, root.join("usr/bin/npm")).unwrap();
        // `#!/usr/bin/env node`
        std::os::unix::fs::symlink("/bin/busybox", root.join("usr/bin/env")).unwrap();
        copy_into(Path::new("/bin/busybox"), &root);
        for d in ["root", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY rootfs/ /\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/root NPM_CONFIG_AUDIT=false \
             NPM_CONFIG_FUND=false NPM_CONFIG_UPDATE_NOTIFIER=false\n",
        )
        .unwrap();
        docker_build(IMAGE, dir.path());
    });
    IMAGE
}

/// The path of a command on PATH, panicking with what to install.
fn which(command: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(command))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{command} not found: the node test needs node and npm"))
}

struct Setup {
    api: String,
    token: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(base_images: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Shared = Arc::new(
            EmbeddedStore::open_dir(&dir.path().join("store"))
                .await
                .unwrap(),
        );
        let config = lb_api::Config::new("127.0.0.1:0".parse().unwrap(), Signup::Open);
        let server = lb_api::Server::bind(&config, store.clone(), std::future::pending())
            .await
            .unwrap();
        let api = format!("http://{}", server.addr());
        tokio::spawn(server.run());
        let builder = lb_builder::Config {
            keys: Default::default(),
            registry_listen: "127.0.0.1:0".parse().unwrap(),
            registry_address: "127.0.0.1:0".into(),
            data_dir: dir.path().to_owned(),
            api: api.clone(),
            concurrency: 2,
            build_memory: 512,
            build_timeout: Duration::from_secs(300),
            keep_images: 3,
            max_context: 64 << 20,
            base_images: base_images
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            housekeeping: Default::default(),
        };
        let bound = lb_builder::bind(store, &builder).await.unwrap();
        tokio::spawn(lb_builder::run(bound, std::future::pending()));
        let client = reqwest::Client::new();
        let creds = json!({"username": "alice", "password": "alice-password"});
        client
            .post(format!("{api}/api/v1/auth/signup"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        let login: Value = client
            .post(format!("{api}/api/v1/auth/login"))
            .json(&creds)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let s = Setup {
            api,
            token: login["token"].as_str().unwrap().to_owned(),
            client,
            _dir: dir,
        };
        let (status, body) = s.call("POST", "/projects", json!({"name": "demo"})).await;
        assert_eq!(status, 201, "{body}");
        s
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let mut req = self
            .client
            .request(
                method.parse().unwrap(),
                format!("{}/api/v1{path}", self.api),
            )
            .bearer_auth(&self.token);
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Creates a service building `repo` with `build`, builds it and
    /// answers the image tag (kept in the local Docker engine).
    async fn build(&self, name: &str, repo: &str, build: Value) -> String {
        let spec = json!({"name": name, "replicas": 0,
            "source": {"url": repo, "branch": "main", "build": build}});
        let (status, body) = self.call("POST", "/projects/demo/services", spec).await;
        assert_eq!(status, 201, "{body}");
        let path = format!("/projects/demo/services/{name}/builds");
        let (status, body) = self.call("POST", &path, json!({})).await;
        assert_eq!(status, 201, "{body}");
        let deadline = Instant::now() + Duration::from_secs(300);
        let build = loop {
            let (_, build) = self.call("GET", &format!("{path}/1"), Value::Null).await;
            if ["succeeded", "failed", "canceled"].contains(&build["status"].as_str().unwrap_or(""))
            {
                break build;
            }
            assert!(
                Instant::now() < deadline,
                "build of {name} did not end: {build}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if build["status"] != "succeeded" {
            let log = self
                .client
                .get(format!("{}/api/v1{path}/1/logs", self.api))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            panic!("build of {name}: {build}\n{log}");
        }
        build["image"].as_str().unwrap().to_owned()
    }
}

/// A container of `image` with its port 80 on a free loopback port,
/// removed when dropped.
struct Running {
    id: String,
    base: String,
}

impl Running {
    async fn start(image: &str) -> Self {
        let out = Command::new("docker")
            .args(["run", "-d", "-p", "127.0.0.1::80", image])
            .output()
            .unwrap();
        assert!(out.status.success(), "docker run {image}: {out:?}");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let out = Command::new("docker")
            .args(["port", &id, "80/tcp"])
            .output()
            .unwrap();
        let port = String::from_utf8_lossy(&out.stdout);
        let running = Running {
            base: format!("http://{}", port.lines().next().unwrap_or_default().trim()),
            id,
        };
        // Ready when nginx answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/", running.base)).await.is_err() {
            if Instant::now() > deadline {
                let logs = Command::new("docker")
                    .args(["logs", &running.id])
                    .output()
                    .unwrap();
                panic!("{image} did not answer on {}: {logs:?}", running.base);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running
    }

    /// GET `path` with gzip accepted: (status, Cache-Control, the
    /// response's headers, body).
    async fn get(&self, path: &str) -> (u16, String, reqwest::header::HeaderMap, String) {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let cache = headers
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = if headers.contains_key("content-encoding") {
            String::new()
        } else {
            resp.text().await.unwrap()
        };
        (status, cache, headers, body)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const INDEX: &str =
    "<!doctype html><title>lb</title><script src=\"/assets/index-4f2a9c1b.js\"></script>\n";

/// Checks a served site: `hashed` answers with a year's caching and gzip,
/// html is revalidated, `/some/route` follows `spa`, a missing asset is 404.
async fn check_site(site: &Running, hashed: &str, spa: bool) {
    let (status, cache, headers, _) = site.get(hashed).await;
    assert_eq!(
        (status, cache.as_str()),
        (200, IMMUTABLE),
        "{hashed}: {headers:?}"
    );
    assert_eq!(headers["content-encoding"], "gzip", "{hashed}: {headers:?}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript"),
        "{headers:?}"
    );
    assert_eq!(headers["server"], "nginx", "no version: {headers:?}");
    for path in ["/", "/index.html"] {
        let (status, cache, headers, body) = site.get(path).await;
        assert_eq!(
            (status, cache.as_str()),
            (200, "no-cache"),
            "{path}: {headers:?}"
        );
        assert_eq!(body, INDEX, "{path}");
    }
    let (status, cache, headers, body) = site.get("/some/route").await;
    if spa {
        assert_eq!((status, cache.as_str()), (200, "no-cache"), "{headers:?}");
        assert_eq!(body, INDEX);
    } else {
        assert_eq!(status, 404, "spa off: {headers:?} {body}");
    }
    for missing in [
        "/assets/x.js",
        "/some/route.js",
        "/.lb-nginx.conf",
        "/.lb-Dockerfile",
    ] {
        let (status, _, headers, body) = site.get(missing).await;
        assert_eq!(status, 404, "{missing}: {headers:?} {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_static_site_is_served_with_caching_headers_and_the_spa_fallback() {
    let nginx = nginx_image();
    let dir = tempfile::tempdir().unwrap();
    let repo = lb_testing::GitRepo::serve(dir.path());
    let script = "console.log('lb static site');\n".repeat(40);
    // GitRepo::commit writes files, not directories.
    std::fs::create_dir_all(dir.path().join("work/assets")).unwrap();
    repo.commit(
        &[
            ("index.html", INDEX.as_bytes()),
            ("assets/index-4f2a9c1b.js", script.as_bytes()),
            ("main.3f2a1b9c.js", script.as_bytes()),
            ("robots.txt", b"User-agent: *\n"),
            (".env", b"SECRET=1\n"),
        ],
        "site",
    );
    let s = Setup::start(&[("static", nginx)]).await;
    let html = json!({"kind": "template", "language": "static", "framework": "html"});
    let mut spa = html.clone();
    spa["spa"] = json!(true);
    let plain = s.build("plain", &repo.url, html).await;
    let spa = s.build("spa", &repo.url, spa).await;

    let site = Running::start(&spa).await;
    check_site(&site, "/assets/index-4f2a9c1b.js", true).await;
    // A hash in the name outside assets/ is cached alike; other files are
    // revalidated; dotfiles of the repository are not served.
    let (status, cache, ..) = site.get("/main.3f2a1b9c.js").await;
    assert_eq!((status, cache.as_str()), (200, IMMUTABLE));
    let (status, cache, ..) = site.get("/robots.txt").await;
    assert_eq!((status, cache.as_str()), (200, "no-cache"));
    assert_eq!(site.get("/.env").await.0, 404);

    let site = Running::start(&plain).await;
    check_site(&site, "/assets/index-4f2a9c1b.js", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_project_is_built_with_node_and_served_by_nginx() {
    let nginx = nginx_image();
    let node = node_image();
    let dir = tempfile::tempdir().unwrap();
    let repo = lb_testing::GitRepo::serve(dir.path());
    // A real build step: node writes dist/ with a content-hashed script.
    let build = format!(
        "const fs = require('fs'), crypto = require('crypto');\n\
         const js = \"console.log('lb static site');\\n\".repeat(40);\n\
         fs.mkdirSync('dist/assets', {{ recursive: true }});\n\
         fs.writeFileSync('dist/assets/index-4f2a9c1b.js', js);\n\
         fs.writeFileSync('dist/index.html', {INDEX:?});\n\
         const hash = crypto.createHash('sha256').update(js).digest('hex').slice(0, 8);\n\
         fs.writeFileSync('dist/hash.txt', hash);\n\
         fs.writeFileSync('dist/main.' + hash + '.js', js);\n"
    );
    repo.commit(
        &[
            (
                "package.json",
                br#"{"name": "site", "version": "1.0.0", "private": true, "scripts": {"build": "node build.js"}}"#,
            ),
            ("build.js", build.as_bytes()),
        ],
        "vite-like site",
    );
    let s = Setup::start(&[("static", nginx), ("node", node)]).await;
    let image = s
        .build(
            "web",
            &repo.url,
            json!({"kind": "template", "language": "node", "framework": "vite", "spa": true}),
        )
        .await;
    let site = Running::start(&image).await;
    check_site(&site, "/assets/index-4f2a9c1b.js", true).await;
    let (_, _, _, hash) = site.get("/hash.txt").await;
    let (status, cache, ..) = site.get(&format!("/main.{hash}.js")).await;
    assert_eq!((status, cache.as_str()), (200, IMMUTABLE), "main.{hash}.js");
    // The node tree stayed in the build stage.
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Size}}", &image])
        .output()
        .unwrap();
    let size: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(size < 50 << 20, "the served image holds {size} bytes");
}
