//! The node's own firewall: iptables rules that keep replicas away from the
//! host's lb services, from each other's projects and from link-local
//! (cloud metadata) addresses, whatever address lb listens on.
//!
//! Replicas sit on project bridges named `lbp…` (see `runtime::network`),
//! so the rules match them by the interface wildcard `lbp+` and need no
//! change as projects come and go. Two chains of this node's own, named
//! after a hash of its id (several nodes may share a host):
//!
//! - `LB-ISOLATION-<tag>`, jumped to from the top of Docker's `DOCKER-USER`
//!   (the `FORWARD` path): traffic within one project bridge passes, traffic
//!   between two project bridges and to `169.254.0.0/16` is dropped.
//! - `LB-INPUT-<tag>`, jumped to from the top of `INPUT` (a replica's
//!   connection to any of the host's own addresses, the bridge gateway
//!   included, arrives there, not in `FORWARD`): new TCP connections to lb's
//!   ports (the API, the registry, etcd's 2379 and 2380) and anything to
//!   `169.254.0.0/16` are dropped.
//!
//!
//! lb's services on other hosts of a cluster are reached through `FORWARD`,
//! so `LB-ISOLATION-<tag>` also drops new TCP connections from replicas to
//! the addresses of the API URLs the node is given (`--api`, each at its
//! port and at etcd's 2379 and 2380: the node is not told where etcd runs,
//! and it runs next to the API in lb's clusters; an etcd on a host of its
//! own is not covered) and of the registry it pulls from (its host:port).
//! Names are resolved when the rules are written; loopback, unspecified
//! (`0.0.0.0`) and link-local addresses get no rule of their own (they
//! never pass `FORWARD`, or are dropped already).
//!
//! Anything else returns to the chains that jumped here: published ports,
//! replies to the host's own connections (ingress, health checks) and
//! outbound traffic are untouched. Both chains are written whole, in one
//! `iptables-restore --noflush`, at node start and whenever a port is
//! learnt (the registry's comes with each assignment set, and the last one
//! learnt is kept in `<data dir>/firewall.json`, so a restart protects it
//! from the start); they stay while the node is stopped (its replicas keep
//! running) and go with [`uninstall`]. Every [`UPKEEP`] the node compares
//! its chains and hooks (one `iptables -S`) with what it last wrote and
//! writes them again when they changed (`iptables -F`, a firewalld
//! reload), saying once at warn what was missing. What could not be
//! applied is logged, kept in [`Firewall::problems`] and reported in every
//! heartbeat (the node's `problems`, its state `isolation not enforced` in
//! the API's node list), and cleared when a later write succeeds.
//! `LB_NO_FIREWALL=1` turns the rules off, for machines without iptables
//! (the project networks still separate projects, by Docker's own
//! inter-network isolation). IPv4 only: project networks have no IPv6.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_model::protocol::ToNode;
use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio::sync::mpsc;

/// The interface wildcard of every project bridge (`runtime::network`
/// names them `lbp` + 12 hex digits).
pub const BRIDGES: &str = "lbp+";
/// etcd's client and peer ports, closed to replicas whether etcd runs here
/// or not.
pub const ETCD_PORTS: [u16; 2] = [2379, 2380];
/// Link-local addresses, cloud metadata services among them.
pub const LINK_LOCAL: &str = "169.254.0.0/16";
/// The environment variable that turns the firewall off.
pub const DISABLE_ENV: &str = "LB_NO_FIREWALL";
/// At most this many ports in one `multiport` match.
const MULTIPORT_MAX: usize = 15;
/// Time between two checks that the chains and hooks are still in place.
pub const UPKEEP: Duration = Duration::from_secs(30);
/// The file in the node's data dir that keeps the registry last learnt.
pub const MEMORY: &str = "firewall.json";
/// How long a name in an API URL or the registry address may take to
/// resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// lb's services on other hosts: the ports replicas may not open, by
/// address (reached through `FORWARD`).
pub type Remote = BTreeMap<Ipv4Addr, BTreeSet<u16>>;

/// A short, stable tag of a node id for names with little room (chains,
/// networks): 12 hex digits of its SHA-256.
pub fn node_tag(node: &str) -> String {
    let digest = Sha256::digest(node.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The node's two chains: (forward, input).
pub fn chains(node: &str) -> (String, String) {
    let tag = node_tag(node);
    (format!("LB-ISOLATION-{tag}"), format!("LB-INPUT-{tag}"))
}

/// The `iptables-restore --noflush` input that (re)writes both chains
/// whole: declaring a chain creates it or empties it, in one transaction.
pub fn rules(node: &str, ports: &BTreeSet<u16>, remote: &Remote) -> String {
    let (forward, input) = chains(node);
    let comment = format!("-m comment --comment \"lb node {node}\"");
    let mut out = format!("*filter\n:{forward} - [0:0]\n:{input} - [0:0]\n");
    // Between replicas of one project: the packet is bridged, not routed.
    out.push_str(&format!(
        "-A {forward} -i {BRIDGES} -o {BRIDGES} -m physdev --physdev-is-bridged {comment} -j RETURN\n"
    ));
    out.push_str(&format!(
        "-A {forward} -i {BRIDGES} -o {BRIDGES} {comment} -j DROP\n"
    ));
    out.push_str(&format!(
        "-A {forward} -i {BRIDGES} -d {LINK_LOCAL} {comment} -j DROP\n"
    ));
    // lb's services on other hosts.
    for (address, ports) in remote {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        for chunk in ports.chunks(MULTIPORT_MAX) {
            out.push_str(&format!(
                "-A {forward} -i {BRIDGES} -d {address}/32 -p tcp -m multiport --dports {} -m conntrack --ctstate NEW {comment} -j DROP\n",
                chunk.join(",")
            ));
        }
    }
    out.push_str(&format!("-A {forward} -j RETURN\n"));
    out.push_str(&format!(
        "-A {input} -i {BRIDGES} -d {LINK_LOCAL} {comment} -j DROP\n"
    ));
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    for chunk in ports.chunks(MULTIPORT_MAX) {
        out.push_str(&format!(
            "-A {input} -i {BRIDGES} -p tcp -m multiport --dports {} -m conntrack --ctstate NEW {comment} -j DROP\n",
            chunk.join(",")
        ));
    }
    out.push_str(&format!("-A {input} -j RETURN\nCOMMIT\n"));
    out
}

/// The port of a URL or `host:port` address (`http://0.0.0.0:2967/x`,
/// `127.0.0.1:5000`, `[::1]:80`); a URL without one has its scheme's.
pub fn port_of(address: &str) -> Option<u16> {
    host_and_port(address).map(|(_, port)| port)
}

/// The host (without brackets) and port of a URL or `host:port` address;
/// a URL without a port has its scheme's.
pub fn host_and_port(address: &str) -> Option<(String, u16)> {
    let (scheme, rest) = match address.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, address),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let (host, after_host) = match (authority.strip_prefix('['), authority.rfind(']')) {
        (Some(_), Some(end)) => (&authority[1..end], &authority[end + 1..]),
        _ => match authority.rsplit_once(':') {
            Some((host, _)) => (host, &authority[host.len()..]),
            None => (authority, ""),
        },
    };
    let port = match after_host.strip_prefix(':') {
        Some(port) => port.parse().ok()?,
        None => match scheme {
            Some("http") | Some("ws") => 80,
            Some("https") | Some("wss") => 443,
            _ => return None,
        },
    };
    Some((host.to_owned(), port))
}

/// Whether a rule for `address` in the forward chain means anything: not
/// for loopback or unspecified addresses (never forwarded), link-local
/// ones (all dropped already), broadcast or multicast.
fn is_remote(address: Ipv4Addr) -> bool {
    !(address.is_loopback()
        || address.is_unspecified()
        || address.is_link_local()
        || address.is_broadcast()
        || address.is_multicast())
}

/// The IPv4 addresses of `host` that get rules of their own: an address
/// as it is, a name resolved.
async fn resolve(host: &str, port: u16) -> Result<Vec<Ipv4Addr>, String> {
    let found: Vec<Ipv4Addr> = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(address)) => vec![address],
        Ok(IpAddr::V6(address)) => address.to_ipv4_mapped().into_iter().collect(),
        Err(_) => {
            match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await
            {
                Ok(Ok(found)) => found
                    .filter_map(|a| match a.ip() {
                        IpAddr::V4(address) => Some(address),
                        IpAddr::V6(_) => None,
                    })
                    .collect(),
                Ok(Err(err)) => return Err(format!("cannot resolve {host}: {err}")),
                Err(_) => return Err(format!("cannot resolve {host}: timed out")),
            }
        }
    };
    Ok(found.into_iter().filter(|a| is_remote(*a)).collect())
}

/// The remote endpoints of `targets` (host -> ports), resolved; and what
/// could not be resolved.
async fn resolve_all(targets: &BTreeMap<String, BTreeSet<u16>>) -> (Remote, Vec<String>) {
    let mut remote = Remote::new();
    let mut failed = Vec::new();
    for (host, ports) in targets {
        let Some(first) = ports.iter().next() else {
            continue;
        };
        match resolve(host, *first).await {
            Ok(addresses) => {
                for address in addresses {
                    remote.entry(address).or_default().extend(ports);
                }
            }
            Err(err) => failed.push(err),
        }
    }
    (remote, failed)
}

/// The lines of an `iptables -S` listing that the node's rules consist
/// of: its two chains and their rules, the jumps to them, and Docker's
/// jump from `FORWARD` to `DOCKER-USER` they depend on; in listing order.
pub fn ours(listing: &str, node: &str) -> Vec<String> {
    let (forward, input) = chains(node);
    let exact = [
        format!("-N {forward}"),
        format!("-N {input}"),
        format!("-A DOCKER-USER -j {forward}"),
        format!("-A INPUT -j {input}"),
        "-A FORWARD -j DOCKER-USER".to_owned(),
    ];
    let rule_of = [format!("-A {forward} "), format!("-A {input} ")];
    listing
        .lines()
        .map(str::trim_end)
        .filter(|l| exact.iter().any(|e| e == l) || rule_of.iter().any(|p| l.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

/// What changed from `before` to `now` (two [`ours`] listings), for a
/// log line: the lines gone, else the lines added; `None` when nothing.
pub fn changed(before: &[String], now: &[String]) -> Option<String> {
    if before == now {
        return None;
    }
    let gone: Vec<&str> = before
        .iter()
        .filter(|l| !now.contains(l))
        .map(String::as_str)
        .collect();
    let (what, lines) = if gone.is_empty() {
        let added: Vec<&str> = now
            .iter()
            .filter(|l| !before.contains(l))
            .map(String::as_str)
            .collect();
        if added.is_empty() {
            ("rules out of order", Vec::new())
        } else {
            ("unexpected", added)
        }
    } else {
        ("missing", gone)
    };
    const SHOWN: usize = 8;
    let mut text = what.to_owned();
    if !lines.is_empty() {
        text.push_str(": ");
        text.push_str(
            &lines
                .iter()
                .take(SHOWN)
                .copied()
                .collect::<Vec<_>>()
                .join("; "),
        );
        if lines.len() > SHOWN {
            text.push_str(&format!("; and {} more", lines.len() - SHOWN));
        }
    }
    Some(text)
}

/// `iptables -S` (the filter table): one command, for the upkeep's check.
async fn listing() -> Result<String, String> {
    let out = Command::new("iptables")
        .args(["-w", "-S"])
        .output()
        .await
        .map_err(|e| cannot_run("iptables", &e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "iptables -S: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why `program` could not be started: "not found" said plainly (a
/// machine without iptables, or a PATH without `/usr/sbin`).
fn cannot_run(program: &str, err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::NotFound {
        format!("{program} not found (not installed, or not on PATH)")
    } else {
        format!("cannot run {program}: {err}")
    }
}

/// Runs `iptables -w <args>`: Ok(true) on exit 0, Ok(false) on another exit
/// code, Err when it cannot run or says something unexpected.
async fn iptables(args: &[&str]) -> Result<bool, String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .await
        .map_err(|e| cannot_run("iptables", &e))?;
    Ok(out.status.success())
}

/// Runs `iptables -w <args>` that must succeed.
async fn iptables_must(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .await
        .map_err(|e| cannot_run("iptables", &e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Writes both chains whole.
async fn restore(text: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| cannot_run("iptables-restore", &e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| format!("iptables-restore: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("iptables-restore: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables-restore: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Jumps from `from` to `chain` at the top of `from`, once.
async fn hook(from: &str, chain: &str) -> Result<(), String> {
    if iptables(&["-C", from, "-j", chain]).await? {
        return Ok(());
    }
    iptables_must(&["-I", from, "1", "-j", chain]).await
}

/// Applies the rules of `node` protecting `ports` here and `remote`
/// elsewhere; answers what could not be applied (empty when all was).
pub async fn apply(node: &str, ports: &BTreeSet<u16>, remote: &Remote) -> Vec<String> {
    let (forward, input) = chains(node);
    let mut problems = Vec::new();
    if let Err(err) = restore(&rules(node, ports, remote)).await {
        problems.push(format!("chains {forward} and {input} not written: {err}"));
        return problems;
    }
    // Docker makes DOCKER-USER and jumps to it from FORWARD; without them
    // (Docker's iptables integration off) the FORWARD rules do nothing.
    if !iptables(&["-n", "-L", "DOCKER-USER"])
        .await
        .unwrap_or(false)
    {
        problems.push(
            "there is no DOCKER-USER chain (Docker's iptables integration off?): \
             replicas are not kept apart from each other's projects or from 169.254.0.0/16 by lb's rules"
                .to_owned(),
        );
    } else {
        if let Err(err) = hook("DOCKER-USER", &forward).await {
            problems.push(format!("cannot hook {forward} from DOCKER-USER: {err}"));
        }
        if !iptables(&["-C", "FORWARD", "-j", "DOCKER-USER"])
            .await
            .unwrap_or(false)
        {
            problems.push(
                "FORWARD does not jump to DOCKER-USER: lb's forward rules do nothing".to_owned(),
            );
        }
    }
    if let Err(err) = hook("INPUT", &input).await {
        problems.push(format!(
            "cannot hook {input} from INPUT: replicas may reach lb's ports on the host: {err}"
        ));
    }
    problems
}

/// What an uninstall removed and what it could not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Uninstalled {
    /// The chains removed (with their jumps).
    pub chains: Vec<String>,
    /// What could not be removed.
    pub problems: Vec<String>,
}

/// The chain that jumps to one of lb's chains: `DOCKER-USER` for
/// `LB-ISOLATION-*`, `INPUT` for `LB-INPUT-*`.
fn parent_of(chain: &str) -> Option<&'static str> {
    if chain.starts_with("LB-ISOLATION-") {
        Some("DOCKER-USER")
    } else if chain.starts_with("LB-INPUT-") {
        Some("INPUT")
    } else {
        None
    }
}

/// lb's chains in `iptables -S` output: every node's on this host.
pub fn lb_chains(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .map(str::trim)
        .filter(|c| parent_of(c).is_some())
        .map(str::to_owned)
        .collect()
}

/// Removes the jumps to `chain` and the chain; a chain not there is fine.
async fn remove_chain(chain: &str, done: &mut Uninstalled) {
    let Some(from) = parent_of(chain) else {
        return;
    };
    while iptables(&["-C", from, "-j", chain]).await.unwrap_or(false) {
        if let Err(err) = iptables_must(&["-D", from, "-j", chain]).await {
            done.problems.push(format!("chain {chain}: {err}"));
            break;
        }
    }
    match iptables(&["-n", "-L", chain]).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(err) => {
            done.problems.push(format!("chain {chain}: {err}"));
            return;
        }
    }
    for step in [["-F", chain], ["-X", chain]] {
        if let Err(err) = iptables_must(&step).await {
            done.problems.push(format!("chain {chain}: {err}"));
            return;
        }
    }
    done.chains.push(chain.to_owned());
}

/// Removes the hooks and chains of `node` (a clean uninstall); answers
/// what was removed and what could not be. Chains that are not there are
/// fine: a second run removes nothing and succeeds.
pub async fn uninstall_node(node: &str) -> Uninstalled {
    let (forward, input) = chains(node);
    let mut done = Uninstalled::default();
    for chain in [forward, input] {
        remove_chain(&chain, &mut done).await;
    }
    done
}

/// Removes the node's hooks and chains; answers what could not be removed
/// (see [`uninstall_node`]).
pub async fn uninstall(node: &str) -> Vec<String> {
    uninstall_node(node).await.problems
}

/// Removes every node's chains on this host (`lb node uninstall --all`).
pub async fn uninstall_all() -> Uninstalled {
    let listing = match Command::new("iptables").args(["-w", "-S"]).output().await {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            return Uninstalled {
                problems: vec![format!(
                    "iptables -S: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )],
                ..Default::default()
            }
        }
        Err(err) => {
            return Uninstalled {
                problems: vec![cannot_run("iptables", &err)],
                ..Default::default()
            }
        }
    };
    let mut done = Uninstalled::default();
    for chain in lb_chains(&listing) {
        remove_chain(&chain, &mut done).await;
    }
    done
}

/// This node's firewall: the ports it protects, kept applied.
#[derive(Clone)]
pub struct Firewall {
    node: String,
    enabled: bool,
    /// Where the registry last learnt is kept (`<data dir>/firewall.json`).
    memory: Option<PathBuf>,
    state: Arc<Mutex<State>>,
    /// One apply at a time.
    applying: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct State {
    ports: BTreeSet<u16>,
    /// lb's services on other hosts: host (name or address) -> ports.
    targets: BTreeMap<String, BTreeSet<u16>>,
    /// The registry's host:port, as last learnt.
    registry: Option<String>,
    problems: Vec<String>,
    /// The node's lines of `iptables -S` right after the last apply
    /// ([`ours`]); `None` before one, or when none could be read.
    written: Option<Vec<String>>,
    /// A name could not be resolved at the last apply: the next upkeep
    /// tick applies again.
    unresolved: bool,
    /// The last change the upkeep logged at warn (the same one again is
    /// logged at debug).
    warned: Option<String>,
}

/// What `<data dir>/firewall.json` keeps.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Memory {
    registry: Option<String>,
}

impl Firewall {
    /// The firewall of `node`, protecting etcd's ports and `ports`; off when
    /// `LB_NO_FIREWALL` is set to anything but `0`/`false`/empty.
    pub fn new(node: &str, ports: impl IntoIterator<Item = u16>) -> Self {
        let disabled = std::env::var(DISABLE_ENV)
            .map(|v| !matches!(v.trim(), "" | "0" | "false"))
            .unwrap_or(false);
        let mut all: BTreeSet<u16> = ETCD_PORTS.into_iter().collect();
        all.extend(ports);
        Self {
            node: node.to_owned(),
            enabled: !disabled,
            memory: None,
            state: Arc::new(Mutex::new(State {
                ports: all,
                ..State::default()
            })),
            applying: Arc::default(),
        }
    }

    /// Also keeps replicas from the API instances at `urls` on other hosts
    /// (through `FORWARD`): each at its URL's port and at etcd's.
    pub fn guarding_apis<'a>(self, urls: impl IntoIterator<Item = &'a str>) -> Self {
        if let Ok(mut state) = self.state.lock() {
            for (host, port) in urls.into_iter().filter_map(host_and_port) {
                let ports = state.targets.entry(host).or_default();
                ports.insert(port);
                ports.extend(ETCD_PORTS);
            }
        }
        self
    }

    /// Keeps the registry learnt in `<data_dir>/firewall.json`, and protects
    /// the one kept there from the start.
    pub fn remembering(mut self, data_dir: &Path) -> Self {
        let path = data_dir.join(MEMORY);
        let kept = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Memory>(&bytes).ok())
            .and_then(|m| m.registry);
        if let Some(registry) = kept {
            self.learn_registry(&registry);
        }
        self.memory = Some(path);
        self
    }

    /// Adds the registry at `registry` (host:port) to what is protected;
    /// true when something is new.
    fn learn_registry(&self, registry: &str) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let mut new = state.registry.as_deref() != Some(registry);
        state.registry = Some(registry.to_owned());
        if let Some((host, port)) = host_and_port(registry) {
            new |= state.ports.insert(port);
            new |= state.targets.entry(host).or_default().insert(port);
        }
        new
    }

    /// Protects the registry at `registry` (host:port): its port here, its
    /// address elsewhere; remembered for the next start. Applies the rules
    /// again when it is new.
    pub async fn protect_registry(&self, registry: &str) {
        if !self.learn_registry(registry) {
            return;
        }
        if let Some(path) = &self.memory {
            let memory = Memory {
                registry: Some(registry.to_owned()),
            };
            let written = serde_json::to_vec_pretty(&memory)
                .map_err(std::io::Error::other)
                .and_then(|bytes| crate::credential::write_private(path, &bytes));
            if let Err(err) = written {
                tracing::warn!(
                    "firewall: cannot keep the registry's address in {}: {err}",
                    path.display()
                );
            }
        }
        self.apply().await;
    }

    /// Writes the rules (again), logging and keeping what could not be
    /// applied.
    pub async fn apply(&self) {
        let _one = self.applying.lock().await;
        if !self.enabled {
            tracing::warn!(
                "{DISABLE_ENV} is set: no firewall, replicas may reach the host's lb ports and 169.254.0.0/16"
            );
            self.set_problems(vec![format!("off ({DISABLE_ENV} is set)")]);
            return;
        }
        let ports = self.ports();
        let targets = self
            .state
            .lock()
            .map(|s| s.targets.clone())
            .unwrap_or_default();
        let (remote, unresolved) = resolve_all(&targets).await;
        for err in &unresolved {
            tracing::warn!(
                "firewall: {err}: replicas may reach lb's ports there (tried again in {} s)",
                UPKEEP.as_secs()
            );
        }
        let problems = apply(&self.node, &ports, &remote).await;
        let written = listing().await.ok().map(|l| ours(&l, &self.node));
        let before = self
            .state
            .lock()
            .map(|s| s.problems.clone())
            .unwrap_or_default();
        if problems.is_empty() {
            tracing::info!(ports = ?ports, remote = ?remote, "firewall applied");
        }
        for problem in &problems {
            if before.contains(problem) {
                tracing::debug!("firewall: {problem}");
            } else {
                tracing::warn!("firewall: {problem}");
            }
        }
        if let Ok(mut s) = self.state.lock() {
            s.problems = problems;
            s.written = written;
            s.unresolved = !unresolved.is_empty();
        }
    }

    /// One upkeep check: one `iptables -S`, compared with what the last
    /// apply left; the rules are written again when they changed (or a
    /// name could not be resolved). Answers what changed, if anything.
    pub async fn check(&self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let listing = match listing().await {
            Ok(listing) => listing,
            Err(err) => {
                // The apply said so already (no iptables here).
                tracing::debug!("firewall check: {err}");
                return None;
            }
        };
        let now = ours(&listing, &self.node);
        let (written, unresolved) = self
            .state
            .lock()
            .map(|s| (s.written.clone(), s.unresolved))
            .unwrap_or_default();
        let change = match &written {
            Some(written) => changed(written, &now),
            None => None,
        };
        if change.is_none() && !unresolved {
            return None;
        }
        if let Some(change) = &change {
            let again = self
                .state
                .lock()
                .map(|mut s| s.warned.replace(change.clone()).as_ref() == Some(change))
                .unwrap_or(false);
            if again {
                tracing::debug!("firewall: rules changed ({change}), writing them again");
            } else {
                tracing::warn!(
                    "firewall: the node's iptables rules changed under it ({change}): writing them again"
                );
            }
        }
        self.apply().await;
        change
    }

    /// Checks the rules every `every` ([`Firewall::check`]) until `stop`
    /// resolves.
    pub async fn upkeep(self, every: Duration, stop: impl Future<Output = ()>) {
        if !self.enabled {
            return;
        }
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(every) => {}
            }
            self.check().await;
        }
    }

    /// Protects one more port, applying the rules again when it is new.
    pub async fn protect(&self, port: u16) {
        let new = self
            .state
            .lock()
            .map(|mut s| s.ports.insert(port))
            .unwrap_or(false);
        if new {
            self.apply().await;
        }
    }

    /// The ports protected.
    pub fn ports(&self) -> BTreeSet<u16> {
        self.state
            .lock()
            .map(|s| s.ports.clone())
            .unwrap_or_default()
    }

    /// lb's services on other hosts kept from replicas: host -> ports.
    pub fn targets(&self) -> BTreeMap<String, BTreeSet<u16>> {
        self.state
            .lock()
            .map(|s| s.targets.clone())
            .unwrap_or_default()
    }

    /// What the last apply could not do, each prefixed `firewall: ` (as
    /// the node's heartbeat reports them); empty when all was applied.
    pub fn problems(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| {
                s.problems
                    .iter()
                    .map(|p| format!("firewall: {p}"))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_problems(&self, problems: Vec<String>) {
        if let Ok(mut s) = self.state.lock() {
            s.problems = problems;
        }
    }

    /// Passes messages from the channel on to the reconciler, protecting
    /// the registry as soon as an assignment set names it. Ends when
    /// either side goes away.
    pub async fn watch(self, mut from: mpsc::Receiver<ToNode>, to: mpsc::Sender<ToNode>) {
        while let Some(message) = from.recv().await {
            if let ToNode::Desired {
                registry: Some(registry),
                ..
            } = &message
            {
                self.protect_registry(registry).await;
            }
            if to.send(message).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_read_from_urls_and_addresses() {
        for (input, expect) in [
            ("http://127.0.0.1:2967", Some(2967)),
            ("http://0.0.0.0:41234/api/v1", Some(41234)),
            ("127.0.0.1:5000", Some(5000)),
            ("[::1]:5001", Some(5001)),
            ("https://lb.example.com", Some(443)),
            ("http://lb.example.com/", Some(80)),
            ("http://user:pw@lb.example.com:8080/x", Some(8080)),
            ("[::1]", None),
            ("registry.local", None),
        ] {
            assert_eq!(port_of(input), expect, "{input}");
        }
    }

    #[test]
    fn chains_are_the_nodes_own() {
        let (forward, input) = chains("01JNODE");
        assert!(forward.starts_with("LB-ISOLATION-") && input.starts_with("LB-INPUT-"));
        // iptables takes chain names of at most 28 characters.
        assert!(
            forward.len() <= 28 && input.len() <= 28,
            "{forward} {input}"
        );
        assert_eq!(chains("01JNODE"), (forward.clone(), input));
        assert_ne!(chains("01JOTHER").0, forward);
    }

    #[test]
    fn the_rules_are_written_whole() {
        let ports: BTreeSet<u16> = [2379, 2380, 2967, 5000].into_iter().collect();
        let text = rules("n1", &ports, &Remote::new());
        let (f, i) = chains("n1");
        let c = "-m comment --comment \"lb node n1\"";
        let expect = format!(
            "*filter\n\
             :{f} - [0:0]\n\
             :{i} - [0:0]\n\
             -A {f} -i lbp+ -o lbp+ -m physdev --physdev-is-bridged {c} -j RETURN\n\
             -A {f} -i lbp+ -o lbp+ {c} -j DROP\n\
             -A {f} -i lbp+ -d 169.254.0.0/16 {c} -j DROP\n\
             -A {f} -j RETURN\n\
             -A {i} -i lbp+ -d 169.254.0.0/16 {c} -j DROP\n\
             -A {i} -i lbp+ -p tcp -m multiport --dports 2379,2380,2967,5000 -m conntrack --ctstate NEW {c} -j DROP\n\
             -A {i} -j RETURN\n\
             COMMIT\n"
        );
        assert_eq!(text, expect);
    }

    #[test]
    fn many_ports_are_split_in_multiport_sized_rules() {
        let ports: BTreeSet<u16> = (1000..1020).collect();
        let text = rules("n1", &ports, &Remote::new());
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("--dports")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("1000,") && lines[0].contains(",1014 "),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("--dports 1015,1016,1017,1018,1019 "),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn no_ports_still_drops_link_local() {
        let text = rules("n1", &BTreeSet::new(), &Remote::new());
        assert!(!text.contains("--dports"), "{text}");
        assert_eq!(text.matches(LINK_LOCAL).count(), 2, "{text}");
    }

    #[test]
    fn lbs_chains_are_found_in_a_listing() {
        let listing = "-P INPUT ACCEPT\n-N DOCKER-USER\n-N LB-ISOLATION-0a1b2c3d4e5f\n\
                       -N LB-INPUT-0a1b2c3d4e5f\n-N LB-OTHER\n-N MY-LB-INPUT-x\n\
                       -A INPUT -j LB-INPUT-0a1b2c3d4e5f\n";
        assert_eq!(
            lb_chains(listing),
            ["LB-ISOLATION-0a1b2c3d4e5f", "LB-INPUT-0a1b2c3d4e5f"]
        );
        assert_eq!(parent_of("LB-ISOLATION-x"), Some("DOCKER-USER"));
        assert_eq!(parent_of("LB-INPUT-x"), Some("INPUT"));
        assert_eq!(parent_of("DOCKER-USER"), None);
    }

    #[test]
    fn the_firewall_protects_etcd_and_learnt_ports() {
        let fw = Firewall::new("n1", [2967]);
        assert_eq!(fw.ports(), [2379, 2380, 2967].into_iter().collect());
    }

    #[test]
    fn hosts_and_ports_are_read_from_urls_and_addresses() {
        for (input, expect) in [
            ("http://10.0.0.7:2967/", Some(("10.0.0.7", 2967))),
            ("https://lb.example.com", Some(("lb.example.com", 443))),
            (
                "registry.example.com:5000",
                Some(("registry.example.com", 5000)),
            ),
            ("[fd00::1]:5000", Some(("fd00::1", 5000))),
            ("http://u:p@h:1/x", Some(("h", 1))),
            ("h", None),
            ("h:notaport", None),
        ] {
            let got = host_and_port(input);
            assert_eq!(
                got.as_ref().map(|(h, p)| (h.as_str(), *p)),
                expect,
                "{input}"
            );
        }
    }

    #[test]
    fn remote_api_and_registry_endpoints_get_forward_drops() {
        let mut remote = Remote::new();
        remote.insert(
            "10.0.0.7".parse().unwrap(),
            [2379, 2380, 2967].into_iter().collect(),
        );
        remote.insert("10.0.0.9".parse().unwrap(), [5000].into_iter().collect());
        let text = rules("n1", &BTreeSet::new(), &remote);
        let (f, _) = chains("n1");
        let c = "-m comment --comment \"lb node n1\"";
        let drops: Vec<&str> = text.lines().filter(|l| l.contains("/32")).collect();
        assert_eq!(
            drops,
            [
                format!("-A {f} -i lbp+ -d 10.0.0.7/32 -p tcp -m multiport --dports 2379,2380,2967 -m conntrack --ctstate NEW {c} -j DROP"),
                format!("-A {f} -i lbp+ -d 10.0.0.9/32 -p tcp -m multiport --dports 5000 -m conntrack --ctstate NEW {c} -j DROP"),
            ]
        );
        // Before the forward chain's final RETURN, after the link-local drop.
        let lines: Vec<&str> = text.lines().collect();
        let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
        assert!(at("169.254.0.0/16") < at("10.0.0.7/32"));
        assert!(at("10.0.0.9/32") < at(&format!("-A {f} -j RETURN")));
    }

    #[tokio::test]
    async fn api_urls_and_the_registry_are_resolved_to_remote_endpoints() {
        let fw = Firewall::new("n1", [2967]).guarding_apis([
            "http://10.0.0.7:2967",
            "http://127.0.0.1:2967",
            "http://0.0.0.0:2967",
            "http://localhost:2968",
        ]);
        assert!(fw.learn_registry("10.0.0.9:5000"));
        assert!(!fw.learn_registry("10.0.0.9:5000"));
        let (remote, failed) = resolve_all(&fw.targets()).await;
        assert!(failed.is_empty(), "{failed:?}");
        let expect: Remote = [
            ("10.0.0.7", vec![2379, 2380, 2967]),
            ("10.0.0.9", vec![5000]),
        ]
        .into_iter()
        .map(|(a, p)| (a.parse().unwrap(), p.into_iter().collect()))
        .collect();
        // Loopback and unspecified addresses (by name too) get no rule.
        assert_eq!(remote, expect);
        assert!(fw.ports().contains(&5000));
        let (_, failed) = resolve_all(
            &[("no-such-host.invalid".to_owned(), [1].into_iter().collect())]
                .into_iter()
                .collect(),
        )
        .await;
        assert_eq!(failed.len(), 1, "{failed:?}");
    }

    #[tokio::test]
    async fn the_registry_learnt_is_protected_from_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut fw = Firewall::new("n1", []).remembering(dir.path());
        assert!(!fw.ports().contains(&5123));
        // Off: the apply does nothing, the address is kept all the same.
        fw.enabled = false;
        fw.protect_registry("10.0.0.9:5123").await;
        assert!(fw.ports().contains(&5123));
        let path = dir.path().join(MEMORY);
        let kept: Memory = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(kept.registry.as_deref(), Some("10.0.0.9:5123"));
        let again = Firewall::new("n1", []).remembering(dir.path());
        assert!(again.ports().contains(&5123));
        assert!(again.targets().contains_key("10.0.0.9"));
        // A file that is not ours is ignored.
        std::fs::write(&path, b"garbage").unwrap();
        let fresh = Firewall::new("n1", []).remembering(dir.path());
        assert!(!fresh.ports().contains(&5123));
    }

    #[test]
    fn the_upkeep_sees_what_went_missing() {
        let (f, i) = chains("n1");
        let listing = format!(
            "-P INPUT ACCEPT\n-N DOCKER-USER\n-N {f}\n-N {i}\n-N LB-ISOLATION-other\n\
             -A INPUT -j {i}\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j {f}\n\
             -A DOCKER-USER -j RETURN\n-A {f} -i lbp+ -j DROP\n-A {f} -j RETURN\n\
             -A {i} -j RETURN\n-A LB-ISOLATION-other -j RETURN\n"
        );
        let written = ours(&listing, "n1");
        assert_eq!(written.len(), 8, "{written:?}");
        assert!(!written.iter().any(|l| l.contains("other")));
        assert_eq!(changed(&written, &written), None);
        // The DOCKER-USER jump deleted.
        let hook = format!("-A DOCKER-USER -j {f}\n");
        let now = ours(&listing.replace(&hook, ""), "n1");
        assert_eq!(
            changed(&written, &now).unwrap(),
            format!("missing: -A DOCKER-USER -j {f}")
        );
        // The chain flushed.
        let now = ours(
            &listing
                .replace(&format!("-A {f} -i lbp+ -j DROP\n"), "")
                .replace(&format!("-A {f} -j RETURN\n"), ""),
            "n1",
        );
        let change = changed(&written, &now).unwrap();
        assert!(
            change.starts_with("missing: ") && change.contains("-j DROP"),
            "{change}"
        );
        // Something put into the chain.
        let now = ours(&format!("{listing}-A {f} -j ACCEPT\n"), "n1");
        assert_eq!(
            changed(&written, &now).unwrap(),
            format!("unexpected: -A {f} -j ACCEPT")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_upkeep_ends_on_stop_and_sleeps_between_checks() {
        // Off: returns at once.
        let mut off = Firewall::new("n1", []);
        off.enabled = false;
        off.upkeep(UPKEEP, std::future::pending()).await;
        // On: the stop ends it while it sleeps.
        let mut fw = Firewall::new("n1", []);
        fw.enabled = true;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(fw.upkeep(UPKEEP, async move {
            let _ = stopped.await;
        }));
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        drop(stop);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the upkeep ended on stop")
            .unwrap();
    }
}
