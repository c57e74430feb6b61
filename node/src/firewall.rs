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
//! Anything else returns to the chains that jumped here: published ports,
//! replies to the host's own connections (ingress, health checks) and
//! outbound traffic are untouched. Both chains are written whole, in one
//! `iptables-restore --noflush`, at node start and whenever a port is
//! learnt (the registry's comes with the first assignment set); they stay
//! while the node is stopped (its replicas keep running) and go with
//! [`uninstall`]. What could not be applied is logged, kept in
//! [`Firewall::problems`] and reported in every heartbeat (the node's
//! `problems`, its state `isolation not enforced` in the API's node list). `LB_NO_FIREWALL=1` turns the rules off, for
//! machines without iptables (the project networks still separate
//! projects, by Docker's own inter-network isolation). IPv4 only: project
//! networks have no IPv6.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

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
pub fn rules(node: &str, ports: &BTreeSet<u16>) -> String {
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
    let (scheme, rest) = match address.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, address),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let after_host = match authority.rfind(']') {
        Some(end) => &authority[end + 1..],
        None => authority,
    };
    match after_host.rsplit_once(':') {
        Some((_, port)) => port.parse().ok(),
        None => match scheme {
            Some("http") | Some("ws") => Some(80),
            Some("https") | Some("wss") => Some(443),
            _ => None,
        },
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

/// Applies the rules of `node` protecting `ports`; answers what could not
/// be applied (empty when all was).
pub async fn apply(node: &str, ports: &BTreeSet<u16>) -> Vec<String> {
    let (forward, input) = chains(node);
    let mut problems = Vec::new();
    if let Err(err) = restore(&rules(node, ports)).await {
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
    state: Arc<Mutex<State>>,
    /// One apply at a time.
    applying: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct State {
    ports: BTreeSet<u16>,
    problems: Vec<String>,
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
            state: Arc::new(Mutex::new(State {
                ports: all,
                problems: Vec::new(),
            })),
            applying: Arc::default(),
        }
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
        let problems = apply(&self.node, &ports).await;
        if problems.is_empty() {
            tracing::info!(ports = ?ports, "firewall applied");
        }
        for problem in &problems {
            tracing::warn!("firewall: {problem}");
        }
        self.set_problems(problems);
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
    /// the registry's port as soon as an assignment set names it. Ends when
    /// either side goes away.
    pub async fn watch(self, mut from: mpsc::Receiver<ToNode>, to: mpsc::Sender<ToNode>) {
        while let Some(message) = from.recv().await {
            if let ToNode::Desired {
                registry: Some(registry),
                ..
            } = &message
            {
                if let Some(port) = port_of(registry) {
                    self.protect(port).await;
                }
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
        let text = rules("n1", &ports);
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
        let text = rules("n1", &ports);
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
        let text = rules("n1", &BTreeSet::new());
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
}
