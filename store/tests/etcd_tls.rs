//! The store on an etcd that demands TLS with client certificates, then etcd
//! users: a real etcd (Debian's etcd-server) started over https with
//! `--client-cert-auth`, certificates made here with the `openssl` CLI, users
//! made with `etcdctl`. A client without a certificate, or with a wrong
//! password, is refused; lb's store with the certificate (and the user)
//! reads and writes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lb_store::etcd::{EtcdAccess, EtcdStore};
use lb_store::{Store, StoreExt};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate
/// (CN `lb-client`), all under `dir`.
fn make_certificates(dir: &Path) {
    let ossl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=lb test ca",
    ]);
    for (name, cn, ext) in [
        (
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "lb-client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        ossl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ]);
        ossl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}

/// etcd over https with client-certificate auth, killed on drop.
struct TlsEtcd {
    dir: tempfile::TempDir,
    endpoint: String,
    child: Child,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsEtcd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        make_certificates(dir.path());
        let endpoint = format!("https://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let path = |name: &str| dir.path().join(name);
        let log = std::fs::File::create(path("etcd.log")).unwrap();
        let child = Command::new(std::env::var("LB_TEST_ETCD").unwrap_or_else(|_| "etcd".into()))
            .args(["--name", "tls", "--data-dir"])
            .arg(path("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("tls={peer}")])
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(path("ca.pem"))
            .arg("--cert-file")
            .arg(path("server.pem"))
            .arg("--key-file")
            .arg(path("server.key"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start `etcd`: install Debian's etcd-server");
        Self {
            dir,
            endpoint,
            child,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA and the client certificate.
    fn access(&self) -> EtcdAccess {
        EtcdAccess {
            ca_cert: Some(self.path("ca.pem")),
            cert: Some(self.path("client.pem")),
            key: Some(self.path("client.key")),
            ..EtcdAccess::default()
        }
    }

    /// Connects with `access`, retrying until etcd is up (20 s).
    async fn connect(&self, access: &EtcdAccess) -> EtcdStore {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match EtcdStore::connect_with(std::slice::from_ref(&self.endpoint), access).await {
                Ok(store) => return store,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "etcd over TLS did not answer within 20 s: {e}; see {}",
                    self.path("etcd.log").display()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// etcdctl with the client certificate and `extra` arguments.
    fn etcdctl(&self, extra: &[&str]) -> String {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .arg(format!("--cacert={}", self.path("ca.pem").display()))
            .arg(format!("--cert={}", self.path("client.pem").display()))
            .arg(format!("--key={}", self.path("client.key").display()))
            .args(extra);
        run(&mut cmd)
    }
}

#[tokio::test]
async fn the_store_reaches_etcd_only_with_a_client_certificate() {
    let etcd = TlsEtcd::start();
    let store = etcd.connect(&etcd.access()).await;
    store.create("/lb/tls-test", b"yes".to_vec()).await.unwrap();
    let read = store.get("/lb/tls-test").await.unwrap().unwrap();
    assert_eq!(read.value, b"yes");

    // The CA but no client certificate: the handshake is refused.
    let no_cert = EtcdAccess {
        ca_cert: Some(etcd.path("ca.pem")),
        ..EtcdAccess::default()
    };
    let refused = EtcdStore::connect_with(std::slice::from_ref(&etcd.endpoint), &no_cert).await;
    assert!(refused.is_err(), "a client without certificate got in");
    // Plain HTTP to the TLS port does not get in either.
    let plain = etcd.endpoint.replace("https://", "http://");
    assert!(EtcdStore::connect(&[plain]).await.is_err());
    // A certificate without its key is refused before connecting.
    let half = EtcdAccess {
        key: None,
        ..etcd.access()
    };
    let err = EtcdStore::connect_with(std::slice::from_ref(&etcd.endpoint), &half)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--etcd-key"), "{err}");
}

#[tokio::test]
async fn the_store_logs_in_as_an_etcd_user() {
    let etcd = TlsEtcd::start();
    // Wait for etcd, then turn on auth with a root user and an lb user
    // holding the /lb/ prefix (as the README's cluster section says).
    etcd.connect(&etcd.access()).await;
    etcd.etcdctl(&["user", "add", "root:rootpw"]);
    etcd.etcdctl(&["user", "grant-role", "root", "root"]);
    etcd.etcdctl(&["user", "add", "lb:s3cret-pw"]);
    etcd.etcdctl(&["role", "add", "lb"]);
    etcd.etcdctl(&[
        "role",
        "grant-permission",
        "lb",
        "--prefix=true",
        "readwrite",
        "/lb/",
    ]);
    // The store reads its revision from the key "/".
    etcd.etcdctl(&["role", "grant-permission", "lb", "read", "/"]);
    etcd.etcdctl(&["user", "grant-role", "lb", "lb"]);
    etcd.etcdctl(&["auth", "enable"]);

    let user = |password: &str| EtcdAccess {
        user: Some("lb".into()),
        password: Some(password.into()),
        ..etcd.access()
    };
    let store = EtcdStore::connect_with(std::slice::from_ref(&etcd.endpoint), &user("s3cret-pw"))
        .await
        .unwrap();
    store
        .create("/lb/user-test", b"mine".to_vec())
        .await
        .unwrap();
    assert_eq!(
        store.get("/lb/user-test").await.unwrap().unwrap().value,
        b"mine"
    );
    // Outside its prefix the user may not write.
    assert!(store.put("/other", b"x".to_vec()).await.is_err());

    let wrong = EtcdStore::connect_with(std::slice::from_ref(&etcd.endpoint), &user("wrong")).await;
    let err = wrong.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("authentication failed"), "{err}");
    // Without a password the user is refused before connecting, and the
    // password never shows in Debug output.
    let none = EtcdAccess {
        password: None,
        ..user("")
    };
    assert!(
        EtcdStore::connect_with(std::slice::from_ref(&etcd.endpoint), &none)
            .await
            .is_err()
    );
    assert!(!format!("{:?}", user("s3cret-pw")).contains("s3cret"));
}
