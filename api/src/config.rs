//! The API's settings: the listen address, signup policy, token lifetime,
//! login limits and the proxies trusted to name the client, the UI's
//! library directory, and the git vendors' applications and public URL.
//! Plain data, filled in by the binary's flags; nothing here does IO.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use lb_model::keys::Keys;
use lb_model::Vendor;

/// Where Debian installs browser libraries.
pub const DEFAULT_VENDOR_DIR: &str = "/usr/share/javascript";

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signup {
    /// Anyone may sign up.
    Open,
    /// Only an admin creates accounts.
    Closed,
}

/// API settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address for the API and UI.
    pub listen: SocketAddr,
    /// Key tree.
    pub keys: Keys,
    /// Git vendors: OAuth applications, public URL, polling.
    pub vendors: VendorSettings,
    /// Signup policy.
    pub signup: Signup,
    /// Lifetime of access tokens from login.
    pub token_ttl: Duration,
    /// Failed logins allowed per user name in 5 minutes.
    pub login_limit_per_user: usize,
    /// Failed logins allowed per client address in 5 minutes.
    pub login_limit_per_address: usize,
    /// Peers whose `X-Forwarded-For` names the client (reverse proxies in
    /// front of the API); default loopback. Any other peer's header is
    /// ignored, so a client cannot name its own address.
    pub trusted_proxies: Vec<Cidr>,
    /// Where the web UI's browser libraries are (Debian's
    /// `/usr/share/javascript`), served under `/vendor/`.
    pub ui_vendor_dir: std::path::PathBuf,
    /// The URL other API instances reach this one at (forwarded log and
    /// exec requests); default `http://<bound address>`.
    pub advertise_url: Option<String>,
    /// What the API needs to know of the ingress (base domain, public ports).
    pub ingress: crate::ingress::IngressSettings,
    /// The ACME issuer's settings; `None`: no issuer in this server.
    pub acme: Option<lb_certs::AcmeConfig>,
    /// The data dir whose files (registry blobs, keys) `GET /backup` copies
    /// beside the store; `None`: the store only.
    pub backup_dir: Option<std::path::PathBuf>,
}

impl Config {
    /// Settings with defaults for everything but the address and signup.
    pub fn new(listen: SocketAddr, signup: Signup) -> Self {
        Self {
            listen,
            keys: Keys::default(),
            vendors: Default::default(),
            signup,
            token_ttl: Duration::from_secs(12 * 3600),
            login_limit_per_user: 5,
            login_limit_per_address: 20,
            trusted_proxies: Cidr::loopback().to_vec(),
            ui_vendor_dir: DEFAULT_VENDOR_DIR.into(),
            advertise_url: None,
            ingress: Default::default(),
            acme: None,
            backup_dir: None,
        }
    }
}

/// A block of addresses: `10.0.0.0/8`, `fd00::/8`, or one address (`/32`,
/// `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The loopback blocks, `127.0.0.0/8` and `::1/128`.
    pub fn loopback() -> [Cidr; 2] {
        [
            Cidr {
                addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                prefix: 8,
            },
            Cidr {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ]
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or address/prefix (CIDR)"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One vendor's OAuth application and addresses.
#[derive(Clone)]
pub struct VendorConfig {
    /// The OAuth application's client id.
    pub client_id: String,
    /// Its client secret (never logged, never returned).
    pub client_secret: String,
    /// The web address users sign in at (`https://github.com`, a GitHub
    /// Enterprise or self-hosted GitLab address).
    pub web_url: String,
    /// The REST API's base (`https://api.github.com`,
    /// `https://ghe.example.com/api/v3`, `https://gitlab.example.com/api/v4`,
    /// `https://api.bitbucket.org/2.0`).
    pub api_url: String,
}

impl std::fmt::Debug for VendorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<hidden>")
            .field("web_url", &self.web_url)
            .field("api_url", &self.api_url)
            .finish()
    }
}

/// Vendor settings of the API.
#[derive(Debug, Clone, Default)]
pub struct VendorSettings {
    /// The address users and vendors reach the API at (OAuth callbacks and
    /// webhook URLs are built from it). Default: `http://<listen address>`.
    pub public_url: Option<String>,
    /// GitHub's application, if configured.
    pub github: Option<VendorConfig>,
    /// GitLab's application, if configured.
    pub gitlab: Option<VendorConfig>,
    /// Bitbucket's application, if configured.
    pub bitbucket: Option<VendorConfig>,
    /// How often plain git URLs with `autodeploy` are polled (`None`: never).
    pub poll_interval: Option<Duration>,
}

impl VendorSettings {
    /// A vendor's application, if configured.
    pub fn get(&self, vendor: Vendor) -> Option<&VendorConfig> {
        match vendor {
            Vendor::Github => self.github.as_ref(),
            Vendor::Gitlab => self.gitlab.as_ref(),
            Vendor::Bitbucket => self.bitbucket.as_ref(),
        }
    }

    /// The public base URL, without a trailing slash.
    pub fn base(&self) -> String {
        self.public_url
            .as_deref()
            .unwrap_or("http://127.0.0.1:2967")
            .trim_end_matches('/')
            .to_owned()
    }

    /// The webhook URL of a service.
    pub fn hook_url(&self, vendor: Option<Vendor>, sid: &str) -> String {
        let v = vendor.map_or("github", Vendor::as_str);
        format!("{}/api/v1/hooks/{v}/{sid}", self.base())
    }

    /// The OAuth redirect URI of a vendor.
    pub fn callback_url(&self, vendor: Vendor) -> String {
        format!("{}/api/v1/vendors/{vendor}/callback", self.base())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.7")));
        assert!(net.contains(ip("::ffff:10.1.0.1")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(!net.contains(ip("::1")));
        let one: Cidr = "192.0.2.9".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.9/32");
        assert!(one.contains(ip("192.0.2.9")) && !one.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let [v4_lo, v6_lo] = Cidr::loopback();
        assert!(v4_lo.contains(ip("127.0.0.2")) && v6_lo.contains(ip("::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
