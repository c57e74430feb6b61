//! Authentication: JWT access tokens (HS256 only; the signing key is made on
//! first start and kept in the store so every API instance shares it), long
//! lived API tokens (stored as SHA-256 hashes), the limit on failed
//! logins per user and per client address, and that client address behind
//! trusted reverse proxies.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lb_model::keys::Keys;
use lb_model::User;
use lb_store::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accounts::now;
use crate::error::{ApiError, Result};

/// Prefix of API tokens: `lbt_<user id>_<token id>_<secret>`.
pub const API_TOKEN_PREFIX: &str = "lbt_";

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user.
    pub user: User,
}

impl Caller {
    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.user.role == lb_model::Role::Admin
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
}

/// Signs and checks access tokens.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl Tokens {
    /// Loads the cluster's signing key, creating it if this is the first
    /// start. Concurrent first starts agree: the key is created only if
    /// absent and then read back.
    pub async fn load(
        store: &dyn Store,
        keys: &Keys,
        ttl: Duration,
    ) -> Result<Self, lb_store::Error> {
        let secret = lb_store::secrets::cluster_secret(store, keys, "jwt-signing-key").await?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        Ok(Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            ttl,
        })
    }

    /// A signed access token for the user, and its expiry (Unix seconds).
    pub fn issue(&self, uid: &str) -> Result<(String, i64)> {
        let iat = now();
        let exp = iat + self.ttl.as_secs().max(1) as i64;
        let claims = Claims {
            sub: uid.to_owned(),
            iat,
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)?;
        Ok((token, exp))
    }

    /// The user id of a valid access token.
    pub fn verify(&self, token: &str) -> Result<String> {
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims.sub),
            Err(err) if matches!(err.kind(), ErrorKind::ExpiredSignature) => {
                Err(ApiError::unauthorized("token expired: log in again"))
            }
            Err(_) => Err(ApiError::unauthorized("invalid token")),
        }
    }
}

/// A stored API token (the secret only as a hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiToken {
    /// Token id.
    pub id: String,
    /// The owner's name for it.
    pub name: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// Creation time.
    pub created: i64,
}

/// SHA-256 of a secret, hex.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new API token for `uid`: the record to store and the token to show once.
pub fn new_api_token(uid: &str, name: &str) -> (ApiToken, String) {
    let id = lb_model::ids::new_id();
    let secret_bytes: [u8; 32] = rand::random();
    let secret: String = secret_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("{API_TOKEN_PREFIX}{uid}_{id}_{secret}");
    (
        ApiToken {
            id,
            name: name.to_owned(),
            hash: hash_secret(&secret),
            created: now(),
        },
        token,
    )
}

/// Constant-time comparison of two strings.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Splits an API token into (user id, token id, secret).
pub fn parse_api_token(token: &str) -> Option<(&str, &str, &str)> {
    let rest = token.strip_prefix(API_TOKEN_PREFIX)?;
    let mut parts = rest.splitn(3, '_');
    let (uid, tid, secret) = (parts.next()?, parts.next()?, parts.next()?);
    (lb_model::ids::is_id(uid) && lb_model::ids::is_id(tid) && !secret.is_empty())
        .then_some((uid, tid, secret))
}

/// Failed-login limiter, in this API instance's memory: per user name *and*
/// client address (so an attacker guessing a name delays only their own
/// address, and the account's owner still logs in from theirs), and per
/// client address whatever the names (so one address cannot spray many).
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    window: Duration,
    per_user: usize,
    per_address: usize,
}

impl LoginLimiter {
    /// At most `per_user` failures per user from one address and
    /// `per_address` per address in `window`.
    pub fn new(window: Duration, per_user: usize, per_address: usize) -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            window,
            per_user,
            per_address,
        }
    }

    fn keys(username: &str, addr: Option<IpAddr>) -> (String, Option<String>) {
        let from = addr.map_or_else(|| "-".to_owned(), |a| a.to_string());
        (
            format!("user:{username}@{from}"),
            addr.map(|a| format!("addr:{a}")),
        )
    }

    /// Refuses with 429 when either limit is reached.
    pub fn check(&self, username: &str, addr: Option<IpAddr>) -> Result<()> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (user_key, addr_key) = Self::keys(username, addr);
        let mut wait = None;
        for (key, limit) in [
            (Some(user_key), self.per_user),
            (addr_key, self.per_address),
        ] {
            let Some(key) = key else { continue };
            if let Some(times) = failures.get_mut(&key) {
                times.retain(|t| now.duration_since(*t) < self.window);
                if times.len() >= limit {
                    let oldest = times[times.len() - limit];
                    let left = self
                        .window
                        .saturating_sub(now.duration_since(oldest))
                        .as_secs()
                        + 1;
                    wait = Some(wait.map_or(left, |w: u64| w.max(left)));
                }
            }
        }
        match wait {
            Some(secs) => Err(ApiError::too_many(
                format!("too many failed logins; retry in {secs} s"),
                secs,
            )),
            None => Ok(()),
        }
    }

    /// Records a failure.
    pub fn failed(&self, username: &str, addr: Option<IpAddr>) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (user_key, addr_key) = Self::keys(username, addr);
        let now = Instant::now();
        failures.entry(user_key).or_default().push(now);
        if let Some(key) = addr_key {
            failures.entry(key).or_default().push(now);
        }
        // Bound the memory an attacker can make us hold.
        if failures.len() > 100_000 {
            let window = self.window;
            failures.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < window));
        }
    }

    /// Forgets a user's failures from this address after a successful login.
    pub fn succeeded(&self, username: &str, addr: Option<IpAddr>) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&Self::keys(username, addr).0);
    }
}

/// The most `X-Forwarded-For` entries looked at, right to left.
const MAX_FORWARDED_HOPS: usize = 32;

/// The client's address for the login limits. A peer that is not a trusted
/// proxy is the client, whatever headers it sends (a client cannot name
/// its own address). A trusted proxy's `X-Forwarded-For` (every header of
/// that name, in order, as one comma-separated list) is read from the
/// right, each entry appended by the proxy before it: the first address
/// that is not itself a trusted proxy is the client. An entry that is not
/// an address (`unknown`, a name) stops the walk at the last trusted hop,
/// as does a list of only trusted proxies. `Forwarded:` (RFC 7239) is not
/// read.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &[crate::config::Cidr],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(client) {
        return client;
    }
    let entries: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    for entry in entries.iter().rev().take(MAX_FORWARDED_HOPS) {
        // Plain addresses, or with a port (`192.0.2.1:4711`, `[2001:db8::1]:80`).
        let Some(ip) = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// The client's address (see [`client_ip`]) as a filter, in place of
/// `warp::addr::remote()` for the routes that log in. The port is the
/// peer's when the peer is the client, else 0.
pub fn client_addr(
    ctx: crate::context::Ctx,
) -> impl warp::Filter<Extract = (Option<SocketAddr>,), Error = std::convert::Infallible> + Clone {
    use warp::Filter;
    warp::addr::remote()
        .and(warp::header::headers_cloned())
        .map(
            move |peer: Option<SocketAddr>, headers: warp::http::HeaderMap| {
                peer.map(|peer| {
                    let values = headers
                        .get_all("x-forwarded-for")
                        .iter()
                        .filter_map(|v| v.to_str().ok());
                    let ip = client_ip(peer.ip(), values, &ctx.config.trusted_proxies);
                    if ip == peer.ip().to_canonical() {
                        SocketAddr::new(ip, peer.port())
                    } else {
                        SocketAddr::new(ip, 0)
                    }
                })
            },
        )
}

/// Resolves a bearer token (access token or API token) to the caller.
pub async fn authenticate(
    store: &dyn Store,
    keys: &Keys,
    tokens: &Tokens,
    token: &str,
) -> Result<Caller> {
    let uid = if token.starts_with(API_TOKEN_PREFIX) {
        let (uid, tid, secret) =
            parse_api_token(token).ok_or_else(|| ApiError::unauthorized("invalid token"))?;
        let record = store
            .get(&keys.user_token(uid, tid))
            .await?
            .ok_or_else(|| ApiError::unauthorized("token revoked or unknown"))?;
        let stored: ApiToken = serde_json::from_slice(&record.value).map_err(ApiError::internal)?;
        if !constant_time_eq(stored.hash.as_bytes(), hash_secret(secret).as_bytes()) {
            return Err(ApiError::unauthorized("invalid token"));
        }
        uid.to_owned()
    } else {
        tokens.verify(token)?
    };
    let record = store
        .get(&keys.user(&uid))
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token's user no longer exists"))?;
    let user: User = serde_json::from_slice(&record.value).map_err(ApiError::internal)?;
    Ok(Caller { user })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_tokens_parse_and_hash() {
        let uid = lb_model::ids::new_id();
        let (record, token) = new_api_token(&uid, "ci");
        let (u, t, secret) = parse_api_token(&token).unwrap();
        assert_eq!((u, t), (uid.as_str(), record.id.as_str()));
        assert_eq!(hash_secret(secret), record.hash);
        assert!(!record.hash.contains(secret));
        assert!(parse_api_token("lbt_x_y_z").is_none());
        assert!(parse_api_token("eyJhbGciOi").is_none());
    }

    #[test]
    fn limiter_counts_per_user_and_per_address() {
        let limiter = LoginLimiter::new(Duration::from_secs(60), 3, 5);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            limiter.check("bob", Some(a)).unwrap();
            limiter.failed("bob", Some(a));
        }
        let err = limiter.check("bob", Some(a)).unwrap_err();
        assert_eq!(err.status, 429);
        assert!(err.retry_after.unwrap() >= 1);
        // Another user from the same address: two more failures allowed.
        limiter.check("eve", Some(a)).unwrap();
        limiter.failed("eve", Some(a));
        limiter.failed("eve", Some(a));
        assert_eq!(limiter.check("carol", Some(a)).unwrap_err().status, 429);
        // Another address for a fresh user is fine.
        limiter
            .check("dave", Some("10.0.0.2".parse().unwrap()))
            .unwrap();
        // bob's owner, from their own address, is not locked out by the
        // failures from 10.0.0.1.
        limiter
            .check("bob", Some("10.0.0.3".parse().unwrap()))
            .unwrap();
    }

    #[test]
    fn the_client_is_named_only_by_trusted_proxies() {
        use crate::config::Cidr;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut trusted = Cidr::loopback().to_vec();
        trusted.push("10.0.0.0/8".parse().unwrap());
        let client = |peer: &str, xff: &[&str]| client_ip(ip(peer), xff.iter().copied(), &trusted);
        // A peer that is no trusted proxy is the client, whatever it says.
        assert_eq!(client("203.0.113.5", &["192.0.2.1"]), ip("203.0.113.5"));
        assert_eq!(client("203.0.113.5", &[]), ip("203.0.113.5"));
        // A trusted proxy without the header is the client.
        assert_eq!(client("127.0.0.1", &[]), ip("127.0.0.1"));
        assert_eq!(client("::ffff:127.0.0.1", &[]), ip("127.0.0.1"));
        // Behind one proxy: the address it appended.
        assert_eq!(client("127.0.0.1", &["192.0.2.1"]), ip("192.0.2.1"));
        assert_eq!(client("::1", &["2001:db8::7"]), ip("2001:db8::7"));
        // What the client sent itself sits left of that and is not believed.
        assert_eq!(
            client("127.0.0.1", &["198.51.100.9, 192.0.2.1"]),
            ip("192.0.2.1")
        );
        // Behind a chain of trusted proxies: the right-most untrusted one,
        // also across several header lines and with ports.
        assert_eq!(
            client(
                "127.0.0.1",
                &["198.51.100.9, 192.0.2.1", "10.1.1.1 , 10.2.2.2"]
            ),
            ip("192.0.2.1")
        );
        assert_eq!(client("127.0.0.1", &["192.0.2.1:4711"]), ip("192.0.2.1"));
        assert_eq!(
            client("127.0.0.1", &["[2001:db8::1]:80"]),
            ip("2001:db8::1")
        );
        assert_eq!(client("127.0.0.1", &["::ffff:192.0.2.1"]), ip("192.0.2.1"));
        // Garbage or only proxies: the last trusted hop, never further left.
        assert_eq!(
            client("127.0.0.1", &["192.0.2.1, unknown"]),
            ip("127.0.0.1")
        );
        assert_eq!(
            client("127.0.0.1", &["192.0.2.1, unknown, 10.0.0.3"]),
            ip("10.0.0.3")
        );
        assert_eq!(client("127.0.0.1", &["10.0.0.3, 10.0.0.4"]), ip("10.0.0.3"));
        assert_eq!(client("127.0.0.1", &[""]), ip("127.0.0.1"));
        // Without loopback in the list, a local peer's header is ignored too.
        let only: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_ip(ip("127.0.0.1"), ["192.0.2.1"], &only),
            ip("127.0.0.1")
        );
        // A long list stops after MAX_FORWARDED_HOPS entries.
        let long = vec!["10.9.9.9"; MAX_FORWARDED_HOPS + 5].join(",");
        let long = format!("192.0.2.1,{long}");
        assert_eq!(client("127.0.0.1", &[long.as_str()]), ip("10.9.9.9"));
    }
}
