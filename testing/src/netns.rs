//! Hosts that can be cut off: a Linux bridge made for one test, with an
//! address on the host side, and a network namespace per "host" joined to
//! it by a veth pair. Processes run inside a namespace through `ip netns
//! exec`; a partition is an iptables DROP on the namespace's own interface
//! (the TCP connections stay open and fall silent, as on a real network),
//! or its link set down. Everything is removed when the [`Net`] is dropped.
//!
//! Only the test's own bridge and namespaces are touched (names
//! `lbt-<tag>…`). A namespaced process still reaches the host's Docker
//! engine through `/var/run/docker.sock`, a unix socket that network
//! namespaces do not separate. Needs root (CAP_NET_ADMIN) and `ip`,
//! `iptables`.

use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::hash::{BuildHasher, Hasher};
use std::process::Command;

/// A bridge and the namespaces joined to it.
pub struct Net {
    tag: String,
    bridge: String,
    /// The first three octets of the /24, e.g. `10.213.7`.
    subnet: String,
    hosts: Vec<String>,
}

/// One namespace on the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name (for `ip netns exec`).
    pub netns: String,
    /// Its address on the bridge.
    pub ip: String,
}

fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Runs a command, panicking with its output when it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (the netns tests need iproute2 and iptables)")
        });
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Like [`run`], ignoring failure (cleanup of what may be gone already).
fn try_run(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).output();
}

impl Net {
    /// Makes the bridge `lbt-<tag>` on a free 10.x.y.0/24, the host side
    /// at `.1`. Panics (with the reason) without root or `ip`.
    pub fn new() -> Self {
        let used = Command::new("ip")
            .args(["-4", "-o", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let (tag, subnet) = loop {
            let r = random();
            let subnet = format!("10.{}.{}", 100 + (r % 150), (r >> 8) % 256);
            if !used.contains(&format!(" {subnet}.")) {
                break (format!("{:06x}", (r >> 16) & 0xff_ffff), subnet);
            }
        };
        let bridge = format!("lbt-{tag}");
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        let net = Self {
            tag,
            bridge,
            subnet,
            hosts: Vec::new(),
        };
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.host_ip()),
                "dev",
                &net.bridge,
            ],
        );
        run("ip", &["link", "set", &net.bridge, "up"]);
        net
    }

    /// The host side's address: servers in the test process bind here to
    /// be reached from the namespaces.
    pub fn host_ip(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// Makes a namespace joined to the bridge, with loopback up.
    pub fn host(&mut self, name: &str) -> Host {
        let n = self.hosts.len() + 2;
        let netns = format!("lbt-{}-{name}", self.tag);
        let outer = format!("lbt{}h{n}", self.tag);
        let inner = format!("lbt{}n{n}", self.tag);
        let ip = format!("{}.{n}", self.subnet);
        run("ip", &["netns", "add", &netns]);
        self.hosts.push(netns.clone());
        run(
            "ip",
            &[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ],
        );
        run("ip", &["link", "set", &inner, "netns", &netns]);
        run("ip", &["link", "set", &outer, "master", &self.bridge]);
        run("ip", &["link", "set", &outer, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        inside(&["ip", "link", "set", &inner, "name", "eth0"]);
        inside(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        inside(&["ip", "link", "set", "eth0", "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        Host { netns, ip }
    }
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace destroys its end of the veth, and with it
        // the pair; processes still inside keep nothing reachable.
        for netns in &self.hosts {
            try_run("ip", &["netns", "del", netns]);
        }
        try_run("ip", &["link", "del", &self.bridge]);
    }
}

impl Host {
    /// A command run inside the namespace (`ip netns exec NS program`); the
    /// process is `program` itself (`ip` execs it), so signals reach it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    fn iptables(&self, op: &str) {
        for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.netns,
                    "iptables",
                    op,
                    chain,
                    dir,
                    "eth0",
                    "-j",
                    "DROP",
                ],
            );
        }
    }

    /// Cuts the host off: every packet in or out of its interface is
    /// dropped (connections stay open and fall silent).
    pub fn partition(&self) {
        self.iptables("-I");
    }

    /// Ends a [`Host::partition`].
    pub fn heal(&self) {
        self.iptables("-D");
    }

    /// Sets the host's interface down or up (sockets see errors at once,
    /// unlike [`Host::partition`]).
    pub fn link(&self, up: bool) {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.netns,
                "ip",
                "link",
                "set",
                "eth0",
                if up { "up" } else { "down" },
            ],
        );
    }
}
