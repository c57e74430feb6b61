//! `ADD <url>` fetched by the builder, not by the engine: the engine would
//! fetch from the host, where no firewall applies to it, following
//! redirects and resolving the name again after lb checked it. Here each
//! hop's host is resolved once, checked with the same rules as the
//! Dockerfile's own hosts ([`forbidden_ip`]: no loopback, private or
//! link-local address) and connected to at the address checked; redirects
//! are followed by hand ([`MAX_REDIRECTS`]), each one checked; the bytes
//! are capped (`--build-max-context`, for all of a build's URLs together)
//! and the fetch is timed out ([`FETCH_TIMEOUT`]).
//!
//! The bytes go into the build context under [`RESERVED`]
//! (`.lb-add/<n>/<file name>`, mode 0600 as the engine writes a remote
//! file, the name derived from the URL as Docker does) and the `ADD` line
//! becomes a `COPY` of them (not an `ADD`: a remote `ADD` does not unpack
//! archives, a local one would), flags and destination kept, on the same
//! line number.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::header::{CONTENT_DISPOSITION, LOCATION};
use reqwest::Url;

use super::dockerfile::{self, forbidden_ip, redact, Reach};

/// The context directory the fetched files go to.
pub const RESERVED: &str = ".lb-add";
/// Redirects followed at most, per URL.
pub const MAX_REDIRECTS: usize = 5;
/// How long one request may take, body included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a host's name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A URL's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The body.
    pub bytes: Vec<u8>,
    /// The `filename` of a `Content-Disposition` answer, if any.
    pub disposition: Option<String>,
}

/// Fetches a URL for the build.
#[async_trait::async_trait]
pub trait Fetch: Send + Sync {
    /// `url`'s content, at most `max` bytes; the error says why not (never
    /// with the URL's credentials).
    async fn fetch(&self, url: &str, max: u64) -> Result<Fetched, String>;
}

/// The Dockerfile rewritten and the files to add to the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Localized {
    /// The Dockerfile with each remote `ADD` made a `COPY`.
    pub dockerfile: String,
    /// `(path in the context, bytes)` of each URL fetched.
    pub files: Vec<(String, Vec<u8>)>,
    /// Lines for the build log.
    pub log: Vec<String>,
}

/// Fetches every URL `dockerfile`'s own `ADD` lines name (already checked
/// by [`dockerfile::confine`]) with `fetch`, at most `max` bytes in all;
/// `None` when it names none.
pub async fn localize(
    dockerfile: &str,
    max: u64,
    fetch: &dyn Fetch,
) -> Result<Option<Localized>, String> {
    let adds = dockerfile::remote_adds(dockerfile)?;
    if adds.is_empty() {
        return Ok(None);
    }
    let mut files = Vec::new();
    let mut sources = Vec::new();
    let mut log = Vec::new();
    let mut total = 0u64;
    for add in &adds {
        let mut paths = Vec::new();
        for url in &add.urls {
            let shown = redact(url);
            let refuse = |why: String| format!("Dockerfile line {}: ADD {shown}: {why}", add.line);
            let left = max.saturating_sub(total);
            let fetched = fetch.fetch(url, left).await.map_err(refuse)?;
            total += fetched.bytes.len() as u64;
            let name = file_name(url, fetched.disposition.as_deref()).map_err(refuse)?;
            let path = format!("{RESERVED}/{}/{name}", files.len());
            log.push(format!(
                "Dockerfile line {}: fetched {shown} ({} bytes) for COPY {path}",
                add.line,
                fetched.bytes.len()
            ));
            files.push((path.clone(), fetched.bytes));
            paths.push(path);
        }
        sources.push(paths);
    }
    let rewritten = dockerfile::rewrite(dockerfile, &adds, &sources);
    // What goes to the engine fetches nothing itself.
    if dockerfile::remote_adds(&rewritten)?.len()
        + dockerfile::parse(&rewritten)?
            .iter()
            .filter(|f| matches!(f.reach, Reach::Url(_)) && !f.onbuild)
            .count()
        > 0
    {
        return Err("the Dockerfile still fetches a URL after lb fetched its ADD sources".into());
    }
    Ok(Some(Localized {
        dockerfile: rewritten,
        files,
        log,
    }))
}

/// The file name Docker gives a remote `ADD` source: the URL path's last
/// segment, else the answer's `Content-Disposition` file name. Names a
/// `COPY` would read as a pattern or cannot hold are refused.
pub fn file_name(url: &str, disposition: Option<&str>) -> Result<String, String> {
    let parsed = Url::parse(url).map_err(|_| "is not a well-formed URL".to_string())?;
    let from_path = parsed
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .map(|s| dockerfile::percent_decode(s).unwrap_or_else(|| s.to_owned()));
    let from_disposition = disposition
        .filter(|d| !d.ends_with('/'))
        .and_then(|d| d.rsplit('/').next())
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    let Some(name) = from_path.or(from_disposition) else {
        return Err("cannot tell a file name from the URL (its path ends with /)".into());
    };
    let bad = |c: char| {
        c.is_control()
            || (c.is_whitespace() && c != ' ')
            || matches!(
                c,
                '/' | '\\' | '*' | '?' | '[' | ']' | '$' | '"' | '\'' | '`'
            )
    };
    if name == "." || name == ".." || name.chars().any(bad) || name.len() > 255 {
        return Err(format!(
            "the file name {name:?} the URL gives is not one lb passes on (no tabs, quotes, \\, $ or pattern characters)"
        ));
    }
    Ok(name)
}

/// The real [`Fetch`]: every hop checked and pinned to the address checked.
pub struct Pinned;

enum Host {
    Ip(IpAddr),
    Name(String),
}

/// A URL's host: an address (the URL parser has made `127.1` or
/// `2130706433` one already) or a name.
fn host(url: &Url) -> Option<Host> {
    let host = url.host_str().filter(|h| !h.is_empty())?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Some(match bare.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(host.to_owned()),
    })
}

/// Where `url` may be fetched from: the address to connect to, or why not.
async fn address(url: &Url) -> Result<SocketAddr, String> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| "names no port".to_string())?;
    let refuse = |host: &str, why: String| {
        format!(
            "{host} {why}: a build may not fetch from loopback, private or link-local addresses"
        )
    };
    let checked = |ip: IpAddr, host: &str| match forbidden_ip(ip) {
        Some(why) => Err(refuse(host, format!("is a {why} address"))),
        None => Ok(SocketAddr::new(ip, port)),
    };
    match host(url) {
        None => Err("names no host".into()),
        Some(Host::Ip(ip)) => checked(ip, &ip.to_string()),
        Some(Host::Name(name)) => {
            let name = name.as_str();
            let bare = name.trim_end_matches('.').to_ascii_lowercase();
            if bare == "localhost" || bare.ends_with(".localhost") {
                return Err(refuse(name, "is a loopback address".into()));
            }
            let resolved =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
                    .await
                    .map_err(|_| format!("{name} did not resolve in time"))?
                    .map_err(|e| format!("{name} does not resolve: {e}"))?;
            let addrs: Vec<SocketAddr> = resolved.collect();
            for addr in &addrs {
                if let Some(why) = forbidden_ip(addr.ip()) {
                    return Err(refuse(
                        name,
                        format!("resolves to {}, a {why} address", addr.ip()),
                    ));
                }
            }
            addrs
                .first()
                .copied()
                .ok_or_else(|| format!("{name} does not resolve"))
        }
    }
}

#[async_trait::async_trait]
impl Fetch for Pinned {
    async fn fetch(&self, url: &str, max: u64) -> Result<Fetched, String> {
        let mut current = Url::parse(url).map_err(|_| "is not a well-formed URL".to_string())?;
        for hop in 0..=MAX_REDIRECTS {
            let via = if hop == 0 {
                String::new()
            } else {
                format!("redirected to {}: ", redact(current.as_str()))
            };
            if !matches!(current.scheme(), "http" | "https") {
                return Err(format!("{via}only http and https URLs are fetched"));
            }
            let addr = address(&current).await.map_err(|e| format!("{via}{e}"))?;
            let mut builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(FETCH_TIMEOUT);
            if let Some(Host::Name(name)) = host(&current) {
                builder = builder.resolve(&name, addr);
            }
            let client = builder.build().map_err(|e| chain(&e))?;
            let mut response = client
                .get(current.clone())
                .send()
                .await
                .map_err(|e| format!("{via}{}", chain(&e)))?;
            let status = response.status();
            if status.is_redirection() {
                if let Some(location) = response.headers().get(LOCATION) {
                    let location = location
                        .to_str()
                        .map_err(|_| format!("{via}a redirect to a malformed location"))?;
                    current = current
                        .join(location)
                        .map_err(|_| format!("{via}a redirect to a malformed location"))?;
                    continue;
                }
            }
            if !status.is_success() {
                return Err(format!("{via}the server answered {status}"));
            }
            let too_big = || {
                format!(
                    "{via}larger than the {} MiB a build may fetch (--build-max-context)",
                    max >> 20
                )
            };
            if response.content_length().is_some_and(|n| n > max) {
                return Err(too_big());
            }
            let disposition = response
                .headers()
                .get(CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok())
                .and_then(disposition_name);
            let mut bytes = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| format!("{via}{}", chain(&e)))?
            {
                if (bytes.len() + chunk.len()) as u64 > max {
                    return Err(too_big());
                }
                bytes.extend_from_slice(&chunk);
            }
            return Ok(Fetched { bytes, disposition });
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }
}

/// reqwest's error and its causes, without the URL (it may hold
/// credentials).
fn chain(e: &reqwest::Error) -> String {
    let mut parts = vec![if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the request failed".to_owned()
    }];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !parts.contains(&text) && !text.contains("://") {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The `filename` parameter of a `Content-Disposition` value.
fn disposition_name(value: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|param| {
        let (key, value) = param.trim().split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("filename") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Some(value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers each URL from a table, recording what was asked.
    struct Fake {
        asked: Mutex<Vec<(String, u64)>>,
    }

    #[async_trait::async_trait]
    impl Fetch for Fake {
        async fn fetch(&self, url: &str, max: u64) -> Result<Fetched, String> {
            self.asked.lock().unwrap().push((url.to_owned(), max));
            match url {
                "http://example.com/redirect" => {
                    Err("redirected to http://127.0.0.1/x: 127.0.0.1 is a loopback address".into())
                }
                "http://example.com/dl/" => Ok(Fetched {
                    bytes: b"named".to_vec(),
                    disposition: Some("report.pdf".into()),
                }),
                _ => Ok(Fetched {
                    bytes: url.as_bytes().to_vec(),
                    disposition: None,
                }),
            }
        }
    }

    fn fake() -> Fake {
        Fake {
            asked: Mutex::new(Vec::new()),
        }
    }

    #[tokio::test]
    async fn remote_adds_become_copies_of_fetched_files() {
        let f = fake();
        let text = "FROM busybox\nENV V=1.2\nADD --chown=10:10 https://example.com/app-${V}.tgz /opt/\n\
                    RUN true\nADD [\"http://example.com/dl/\", \"http://example.com/a%20b.txt\", \"/d/\"]\n";
        let l = localize(text, 1000, &f).await.unwrap().unwrap();
        assert_eq!(
            l.dockerfile,
            "FROM busybox\nENV V=1.2\nCOPY --chown=10:10 [\".lb-add/0/app-1.2.tgz\",\"/opt/\"]\n\
             RUN true\nCOPY [\".lb-add/1/report.pdf\",\".lb-add/2/a b.txt\",\"/d/\"]\n"
        );
        let names: Vec<&str> = l.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                ".lb-add/0/app-1.2.tgz",
                ".lb-add/1/report.pdf",
                ".lb-add/2/a b.txt"
            ]
        );
        assert_eq!(l.files[0].1, b"https://example.com/app-1.2.tgz");
        // The budget is for all of them together.
        let asked = f.asked.lock().unwrap().clone();
        assert_eq!(asked[0].1, 1000);
        assert_eq!(asked[1].1, 1000 - 31);
        assert!(l.log[0].starts_with("Dockerfile line 3: fetched https://example.com/app-1.2.tgz"));
        // None to fetch: nothing to do.
        assert_eq!(localize("FROM a\nADD x.tgz /\n", 10, &f).await, Ok(None));
    }

    #[tokio::test]
    async fn fetch_errors_name_the_line_and_the_url_without_credentials() {
        let e = localize(
            "FROM a\n\nADD http://example.com/redirect /x\n",
            10,
            &fake(),
        )
        .await
        .unwrap_err();
        assert!(
            e.starts_with("Dockerfile line 3: ADD http://example.com/redirect: redirected to"),
            "{e}"
        );
        let e = localize("FROM a\nADD http://u:secret@example.com/ /x\n", 10, &fake())
            .await
            .unwrap_err();
        assert!(
            e.contains("http://***@example.com/") && !e.contains("secret"),
            "{e}"
        );
        assert!(e.contains("cannot tell a file name"), "{e}");
    }

    #[test]
    fn file_names_are_docker_s() {
        assert_eq!(file_name("http://h/a/b.tgz?x=1#f", None).unwrap(), "b.tgz");
        assert_eq!(file_name("http://h/a/%41.txt", None).unwrap(), "A.txt");
        assert_eq!(file_name("http://h/a/", Some("r.bin")).unwrap(), "r.bin");
        assert_eq!(file_name("http://h/", Some("dir/r.bin")).unwrap(), "r.bin");
        assert!(file_name("http://h/", None).is_err());
        assert!(file_name("http://h/*.txt", None).is_err());
        assert!(file_name("http://h/%2e%2e", None).is_err());
        assert!(file_name("http://h/$HOME", None).is_err());
        assert_eq!(
            disposition_name("attachment; filename=\"x y.zip\""),
            Some("x y.zip".into())
        );
    }

    #[tokio::test]
    async fn local_addresses_are_refused_before_connecting() {
        for url in [
            "http://127.0.0.1:1/x",
            "http://localhost:1/x",
            "http://2130706433/x",
            "http://127.1/x",
            "http://[::1]/x",
            "http://[::ffff:10.0.0.1]/x",
            "http://169.254.169.254/latest",
            "http://0x7f.1/x",
        ] {
            let e = Pinned.fetch(url, 10).await.unwrap_err();
            assert!(e.contains("may not fetch"), "{url}: {e}");
        }
        let e = Pinned.fetch("ftp://example.com/x", 10).await.unwrap_err();
        assert!(e.contains("only http"), "{e}");
    }
}
