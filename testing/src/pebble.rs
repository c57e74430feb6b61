//! A real ACME server for tests: Debian's `pebble` with validation on (no
//! `PEBBLE_VA_ALWAYS_VALID`), and `pebble-challtestsrv` (same package) as
//! its DNS server answering every name with 127.0.0.1, so HTTP-01 is really
//! fetched from `127.0.0.1:<http port>`, the port the test's responder (or
//! lb's ingress) listens on. Pebble's own TLS certificate comes from a CA
//! the test makes with `openssl`; pebble's root, the one issued chains lead
//! to, is fetched from its management port (`/roots/0`) with `curl`. Both
//! processes run on free loopback ports in a temp dir and are killed when
//! the [`Pebble`] is dropped.
//!
//! Needs /usr/bin/pebble, /usr/bin/pebble-challtestsrv, openssl and curl
//! (`contrib/deps.sh --test`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long pebble and its DNS server may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A free loopback port (bound and released), e.g. for the HTTP-01 port.
pub fn free_port() -> u16 {
    super::free_port()
}

/// Runs `program` with `args` in `dir` and returns its stdout; panics with
/// its output when it cannot start or fails.
pub fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running pebble and its DNS server.
pub struct Pebble {
    dir: tempfile::TempDir,
    directory: String,
    management: u16,
    http_port: u16,
    pebble: Child,
    dns: Child,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls until a loopback TCP port accepts, or panics naming it.
async fn wait_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + START_DEADLINE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "{what} never listened on port {port}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes pebble's TLS certificate for localhost and 127.0.0.1 in `dir`:
/// `ca.pem` (the CA to trust pebble's API with), `cert.pem`, `key.pem`.
fn tls_certificate(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=lb test CA",
    ]);
    run(dir, "openssl", &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(dir, "openssl", &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    run(
        dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

impl Pebble {
    /// Starts pebble-challtestsrv (every name is 127.0.0.1) and pebble,
    /// validating HTTP-01 at `127.0.0.1:<http_port>`, and waits until both
    /// listen. Runs with `PEBBLE_VA_NOSLEEP=1` and, to be deterministic,
    /// no rejected nonces and no reused authorizations (every order is
    /// validated by a real fetch).
    pub async fn start(http_port: u16) -> Pebble {
        let dir = tempfile::tempdir().expect("temp dir for pebble");
        let path = dir.path();
        tls_certificate(path);

        let (dns, dns_mgmt) = (free_port(), free_port());
        let dns_log = path.join("challtestsrv.log");
        let log = std::fs::File::create(&dns_log).expect("challtestsrv log file");
        let mut dns_child = Command::new("pebble-challtestsrv")
            .args([
                "-management",
                &format!("127.0.0.1:{dns_mgmt}"),
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv6",
                "",
            ])
            .stdout(log.try_clone().expect("challtestsrv log file"))
            .stderr(log)
            .spawn()
            .expect("cannot start pebble-challtestsrv: install Debian's pebble");
        let guard = Kill(Some(&mut dns_child));
        wait_port(dns_mgmt, "pebble-challtestsrv", &dns_log).await;
        run(
            path,
            "curl",
            &[
                "-sSf",
                "-d",
                r#"{"ip":"127.0.0.1"}"#,
                &format!("http://127.0.0.1:{dns_mgmt}/set-default-ipv4"),
            ],
        );
        drop(guard);

        let (listen, management, tls) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": path.join("cert.pem"),
                "privateKey": path.join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        std::fs::write(path.join("pebble.json"), config.to_string()).expect("write pebble.json");
        let pebble_log = path.join("pebble.log");
        let log = std::fs::File::create(&pebble_log).expect("pebble log file");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(path.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("pebble log file"))
            .stderr(log)
            .spawn();
        let pebble = match pebble {
            Ok(child) => child,
            Err(e) => {
                let _ = dns_child.kill();
                let _ = dns_child.wait();
                panic!("cannot start pebble: {e} (install Debian's pebble)");
            }
        };
        let pebble = Pebble {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management,
            http_port,
            pebble,
            dns: dns_child,
            dir,
        };
        wait_port(listen, "pebble", &pebble_log).await;
        wait_port(management, "pebble's management", &pebble_log).await;
        pebble
    }

    /// The ACME directory URL, `https://127.0.0.1:<port>/dir`.
    pub fn directory(&self) -> &str {
        &self.directory
    }

    /// The CA of pebble's own TLS certificate (PEM): what an ACME client
    /// trusts pebble's API with (`--acme-ca-file`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The port pebble fetches HTTP-01 answers from, on 127.0.0.1.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The temp dir pebble runs in (a test may put its files there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pebble's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Pebble's root certificate (PEM), which issued chains lead to,
    /// fetched from its management port, written to `root.pem` in
    /// [`Pebble::dir`]; returns that file. Pebble makes a new root each
    /// time it starts.
    pub fn root_file(&self) -> PathBuf {
        let root = run(
            self.dir.path(),
            "curl",
            &[
                "-sSf",
                "--cacert",
                "ca.pem",
                &format!("https://127.0.0.1:{}/roots/0", self.management),
            ],
        );
        assert!(
            root.contains("BEGIN CERTIFICATE"),
            "pebble's /roots/0 is no certificate: {root}"
        );
        let file = self.dir.path().join("root.pem");
        std::fs::write(&file, root).expect("write root.pem");
        file
    }
}

/// Kills and reaps a child if a start fails half-way (a panic while it is
/// held); dropped once the child is in a [`Pebble`].
struct Kill<'a>(Option<&'a mut Child>);

impl Drop for Kill<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(child) = self.0.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
