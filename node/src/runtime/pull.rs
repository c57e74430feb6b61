//! Which image a container is created from (issue 16): images by
//! authority, not by the engine's cache.
//!
//! - An image in lb's registry is pulled with the node's credential before
//!   every create, also when the engine holds it already: the registry's
//!   token endpoint grants the pull only for images of the projects this
//!   node runs replicas of, so a digest in the cache is re-authorized, never
//!   trusted. The registry names the digest the tag stands for (Docker's
//!   `Digest: sha256:...` line), and the container is created from
//!   `<registry>/<repository>@<digest>`.
//!   Docker may take a digest it holds from its cache without asking the
//!   registry, so before every create the node first reads the manifest
//!   itself (a `HEAD` with a token for its own credential, see
//!   [`check_manifest`]): 401, 403 or 404 refuse the container whatever the
//!   cache holds; a registry that does not answer at all (down,
//!   unreachable, 5xx) leaves the engine's copy usable, so replicas of
//!   images already here restart through a registry outage.
//! - Any other image is named by its full reference
//!   (`docker.io/library/busybox:latest`), taken from the engine when there
//!   and pulled (without credentials) when not. Such a copy cannot be
//!   another tenant's: tenants' images live in lb's registry, and the
//!   engine finds an image by a full reference only under the very name it
//!   was pulled or tagged with.
//! - Nothing else is handed to Docker: a string it could read as an image
//!   id or id prefix (`6192`, `sha256:6192`, a full id) is refused, and a
//!   container is only created from a normalised full reference.

use lb_model::reference::{same_registry, Reference};

use super::{Error, Result};

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// lb's registry: pulled with the node's credential every time.
    Lb(Reference),
    /// Another registry: the engine's copy of that full reference, or a
    /// pull.
    Public(Reference),
}

/// Parses an assignment's image: in lb's registry when its host is
/// `registry` (the address the API named, when the node has its
/// credential for it).
pub fn source(image: &str, registry: Option<&str>) -> Result<Source> {
    let reference = Reference::parse(image).map_err(|e| Error::Pull {
        image: image.to_owned(),
        message: e.message,
    })?;
    Ok(match registry {
        Some(r) if same_registry(&reference.registry, r) => Source::Lb(reference),
        _ => Source::Public(reference),
    })
}

/// What lb's registry says of this node reading a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Readable: the digest the registry named (`Docker-Content-Digest`).
    Granted(Option<String>),
    /// 401, 403 or 404: this node may not run it.
    Refused(String),
    /// No answer the node can go by (down, unreachable, a 5xx).
    Unreachable(String),
}

/// Seconds each request of [`check_manifest`] may take.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The media types a manifest `HEAD` accepts (those lb's registry stores).
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// The `key="value"` pairs of a `Bearer` challenge.
pub fn challenge(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim().strip_prefix("Bearer ")?;
    let mut pairs = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let end = after.find('"')?;
        pairs.push((key.trim().to_owned(), after[..end].to_owned()));
        rest = after[end + 1..].trim_start_matches([',', ' ']);
    }
    Some(pairs)
}

/// Asks lb's registry at `registry` (host:port, plain HTTP as the engine
/// reaches it) whether this node, `user` with its credential `secret`, may
/// read `reference`'s manifest: a `HEAD`, with a token from the realm the
/// registry's challenge names.
pub async fn check_manifest(
    http: &reqwest::Client,
    registry: &str,
    reference: &Reference,
    user: &str,
    secret: &str,
) -> Verdict {
    let url = format!(
        "http://{registry}/v2/{}/manifests/{}",
        reference.repository,
        reference.manifest()
    );
    let head = |token: Option<&str>| {
        let mut req = http
            .head(&url)
            .header("accept", MANIFEST_TYPES)
            .timeout(CHECK_TIMEOUT);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    let verdict = |resp: &reqwest::Response, what: &str| match resp.status().as_u16() {
        200..=299 => Verdict::Granted(
            resp.headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        code @ (401 | 403 | 404) => Verdict::Refused(format!("{what}: HTTP {code}")),
        code => Verdict::Unreachable(format!("{what}: HTTP {code}")),
    };
    let first = match head(None).await {
        Ok(resp) => resp,
        Err(err) => return Verdict::Unreachable(format!("{url}: {err}")),
    };
    if first.status() != 401 {
        return verdict(&first, "manifest");
    }
    let pairs = first
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .and_then(challenge)
        .unwrap_or_default();
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let Some(realm) = get("realm") else {
        return Verdict::Refused("manifest: HTTP 401 without a token realm".into());
    };
    let scope = format!("repository:{}:pull", reference.repository);
    let mut query = vec![("scope", scope)];
    query.extend(get("service").map(|s| ("service", s)));
    let token = match http
        .get(&realm)
        .query(&query)
        .basic_auth(user, Some(secret))
        .timeout(CHECK_TIMEOUT)
        .send()
        .await
    {
        Ok(resp) if resp.status().is_success() => resp.json::<serde_json::Value>().await.ok(),
        Ok(resp) if matches!(resp.status().as_u16(), 401 | 403) => {
            return Verdict::Refused(format!("token: HTTP {}", resp.status().as_u16()))
        }
        Ok(resp) => return Verdict::Unreachable(format!("token: HTTP {}", resp.status().as_u16())),
        Err(err) => return Verdict::Unreachable(format!("token: {err}")),
    };
    let Some(token) = token.as_ref().and_then(|t| {
        t["token"]
            .as_str()
            .or_else(|| t["access_token"].as_str())
            .map(str::to_owned)
    }) else {
        return Verdict::Unreachable("token: no token in the answer".into());
    };
    match head(Some(&token)).await {
        Ok(resp) => verdict(&resp, "manifest"),
        Err(err) => Verdict::Unreachable(format!("{url}: {err}")),
    }
}

/// The digest a pull of `reference` resolved to: the registry's
/// `Digest: ...` status line, which must agree with a digest the
/// reference pins.
pub fn resolved<'a>(
    reference: &Reference,
    statuses: impl IntoIterator<Item = &'a str>,
) -> Result<String> {
    let named = statuses
        .into_iter()
        .filter_map(|s| s.strip_prefix("Digest: "))
        .map(str::trim)
        .last();
    let fail = |message: String| Error::Pull {
        image: reference.to_string(),
        message,
    };
    match (named, &reference.digest) {
        (Some(got), Some(pinned)) if got != pinned => Err(fail(format!(
            "the registry answered digest {got}, not the one named"
        ))),
        (Some(got), _) => Reference::parse(&reference.pinned(got))
            .map(|_| got.to_owned())
            .map_err(|_| fail(format!("the registry answered an invalid digest {got:?}"))),
        (None, Some(pinned)) => Ok(pinned.clone()),
        (None, None) => Err(fail("the registry named no digest for the tag".into())),
    }
}

/// Refuses to create a container from anything but a normalised full
/// reference (what [`Reference::runnable`] makes): the engine could read
/// another string as an image id.
pub fn check_runnable(image: &str) -> Result<()> {
    let full = Reference::parse(image).map(|r| r.runnable());
    if full.as_deref() == Ok(image) {
        return Ok(());
    }
    Err(Error::Engine(format!(
        "refusing to create a container from {image:?}: not a full image reference"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const E: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn lb_images_are_told_from_others_by_host() {
        let reg = Some("127.0.0.1:5000");
        let Source::Lb(r) = source("127.0.0.1:5000/p/s:3", reg).unwrap() else {
            panic!("not lb's")
        };
        assert_eq!(r.runnable(), "127.0.0.1:5000/p/s:3");
        assert!(matches!(
            source("localhost:5000/p/s:3", reg).unwrap(),
            Source::Lb(_)
        ));
        let Source::Public(r) = source("lb-test-busybox:1", reg).unwrap() else {
            panic!("lb's")
        };
        assert_eq!(r.runnable(), "docker.io/library/lb-test-busybox:1");
        assert!(matches!(
            source("127.0.0.1:5000/p/s:3", None).unwrap(),
            Source::Public(_)
        ));
        for id in ["6192", "61", "sha256:6192", &D[7..], D] {
            assert!(
                matches!(source(id, reg), Err(Error::Pull { .. })),
                "{id} taken"
            );
        }
    }

    #[test]
    fn the_digest_comes_from_the_registry() {
        let tagged = Reference::parse("127.0.0.1:5000/p/s:3").unwrap();
        let pinned = Reference::parse(&format!("127.0.0.1:5000/p/s@{D}")).unwrap();
        let answer = format!("Digest: {D}");
        let lines = ["Pulling from p/s", &answer, "Status: Image is up to date"];
        assert_eq!(resolved(&tagged, lines).unwrap(), D);
        assert_eq!(resolved(&pinned, lines).unwrap(), D);
        assert_eq!(resolved(&pinned, ["Status: done"]).unwrap(), D);
        assert!(resolved(&tagged, ["Status: done"]).is_err());
        assert!(resolved(&tagged, ["Digest: sha256:6192"]).is_err());
        let other = format!("Digest: {E}");
        assert!(resolved(&pinned, [other.as_str()]).is_err());
    }

    #[test]
    fn challenges_are_read() {
        let pairs = challenge(
            r#"Bearer realm="http://127.0.0.1:2967/api/v1/registry/token",service="lb-registry",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            pairs,
            [
                (
                    "realm".to_owned(),
                    "http://127.0.0.1:2967/api/v1/registry/token".to_owned()
                ),
                ("service".to_owned(), "lb-registry".to_owned()),
                ("scope".to_owned(), "repository:a/b:pull,push".to_owned()),
            ]
        );
        assert_eq!(challenge("Basic realm=\"x\""), None);
        assert_eq!(challenge("Bearer realm=x"), None);
    }

    /// A registry stand-in on a real socket: answers each request (its
    /// head, lower-cased) with `(status, extra header lines, body)`.
    async fn serve(
        answer: fn(&str, u16) -> (u16, String, String),
    ) -> (u16, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                let (status, headers, body) = answer(&request, port);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        });
        (port, task)
    }

    async fn verdict(port: u16) -> Verdict {
        let http = reqwest::Client::new();
        let reference = Reference::parse(&format!("127.0.0.1:{port}/p/s@{D}")).unwrap();
        check_manifest(
            &http,
            &format!("127.0.0.1:{port}"),
            &reference,
            "node-n",
            "secret",
        )
        .await
    }

    /// The token dance: a challenge without a token, a token for the
    /// node's Basic credentials and the pull scope, then `with_token`.
    fn registry(request: &str, port: u16, with_token: u16) -> (u16, String, String) {
        if request.starts_with("get /token?") {
            assert!(
                request.contains("scope=repository%3ap%2fs%3apull")
                    && request.contains("authorization: basic"),
                "{request}"
            );
            return (200, String::new(), r#"{"token": "t"}"#.into());
        }
        assert!(
            request.starts_with("head /v2/p/s/manifests/sha256:1111"),
            "{request}"
        );
        if request.contains("authorization: bearer t") {
            return (
                with_token,
                format!("docker-content-digest: {D}\r\n"),
                String::new(),
            );
        }
        let challenge = format!(
            "www-authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"lb\"\r\n"
        );
        (401, challenge, String::new())
    }

    #[tokio::test]
    async fn the_registry_is_asked_and_its_answer_read() {
        // Nothing listening: unreachable (the engine's copy may serve).
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(matches!(verdict(port).await, Verdict::Unreachable(_)));
        for (with_token, expect) in [
            (200, "granted"),
            (404, "refused 404"),
            (403, "refused 403"),
            (401, "refused 401"),
            (503, "unreachable 503"),
        ] {
            let (port, task) = match with_token {
                200 => serve(|r, p| registry(r, p, 200)).await,
                404 => serve(|r, p| registry(r, p, 404)).await,
                403 => serve(|r, p| registry(r, p, 403)).await,
                401 => serve(|r, p| registry(r, p, 401)).await,
                _ => serve(|r, p| registry(r, p, 503)).await,
            };
            let got = match verdict(port).await {
                Verdict::Granted(Some(d)) if d == D => "granted".to_owned(),
                Verdict::Refused(m) => format!("refused {}", m.rsplit(' ').next().unwrap()),
                Verdict::Unreachable(m) => {
                    format!("unreachable {}", m.rsplit(' ').next().unwrap())
                }
                other => format!("{other:?}"),
            };
            assert_eq!(got, expect);
            task.abort();
        }
        // The token endpoint refusing the node's credential: refused.
        let (port, task) = serve(|r, p| {
            if r.starts_with("get /token") {
                (401, String::new(), String::new())
            } else {
                registry(r, p, 200)
            }
        })
        .await;
        assert!(matches!(verdict(port).await, Verdict::Refused(m) if m.starts_with("token")));
        task.abort();
    }

    #[test]
    fn containers_come_only_from_full_references() {
        for ok in [
            "docker.io/library/busybox:latest".to_owned(),
            format!("127.0.0.1:5000/p/s@{D}"),
        ] {
            check_runnable(&ok).unwrap();
        }
        for bad in [
            "6192",
            "busybox",
            "busybox:1",
            "sha256:6192",
            D,
            &D[7..],
            "docker.io/library/busybox",
            &format!("127.0.0.1:5000/p/s:1@{D}"),
        ] {
            assert!(check_runnable(bad).is_err(), "{bad} taken");
        }
    }
}
