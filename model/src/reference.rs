//! Image references: parsed, checked and normalised to the one full form
//! a container is created from (`host/path[:tag]` or `host/path@digest`).
//!
//! Docker reads a string it cannot find as a name as an image id or id
//! prefix (`6192`, `sha256:6192`, a full id, an intermediate layer's id), so
//! a service naming one would run whatever image in the engine's cache has
//! it: another tenant's included. lb therefore refuses such strings and
//! never hands Docker anything but a full reference with a registry host,
//! which Docker only looks up by name. The grammar is Docker's
//! (`distribution/reference`): a name without a host is on `docker.io`, and
//! a one-part name there is under `library/`; a reference without tag or
//! digest means `:latest`.

use std::fmt;

use crate::{truncate, ValidationError};

/// Docker Hub's registry host, as Docker normalises it.
pub const DOCKER_HUB: &str = "docker.io";
/// The longest reference taken (Docker's own limit on a name is 255).
pub const MAX_REFERENCE: usize = 512;
const MAX_NAME: usize = 255;
const MAX_TAG: usize = 128;

/// A full image reference: registry host, repository path, and a tag or a
/// digest (or both; then the digest is what runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry host (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The repository path (`library/busybox`, `<project>/<service>`).
    pub repository: String,
    /// The tag (`latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    /// `sha256:<64 hex>` (or `sha512:<128 hex>`).
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises a reference, refusing what Docker could read
    /// as an image id. The error names the field `image`.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let bad = |why: &str| ValidationError::new("image", format!("{:?} {why}", truncate(text)));
        if text.is_empty() || text.len() > MAX_REFERENCE {
            return Err(bad(&format!(
                "must be 1 to {MAX_REFERENCE} characters long"
            )));
        }
        if is_hex(text) {
            return Err(bad(
                "could be read as an image id: name an image by its reference \
                 (e.g. docker.io/library/busybox:1.36 or <registry>/<project>/<service>:<tag>)",
            ));
        }
        if let Some((alg, _)) = text.split_once(':') {
            if is_digest_algorithm(alg) {
                return Err(bad("is an image id: name an image by its reference, \
                     pinned as <name>@sha256:<digest> if need be"));
            }
        }
        let (rest, digest) = match text.rsplit_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(|why| bad(&why))?;
                (rest, Some(digest.to_owned()))
            }
            None => (text, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is
        // the registry's port).
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !is_tag(tag) {
                return Err(bad(&format!(
                    "has an invalid tag {:?} (letters, digits, '_', '.', '-', \
                     at most {MAX_TAG}, not starting with '.' or '-')",
                    truncate(tag)
                )));
            }
        }
        if name.is_empty() {
            return Err(bad("has no repository name"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_registry_host(first) => (first.to_owned(), path),
            _ => (DOCKER_HUB.to_owned(), name),
        };
        check_host(&registry).map_err(|why| bad(&why))?;
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        for component in repository.split('/') {
            if !is_path_component(component) {
                return Err(bad(&format!(
                    "has an invalid path component {:?} (lower-case letters and digits, \
                     separated by '.', '_', '__' or dashes)",
                    truncate(component)
                )));
            }
        }
        if registry.len() + 1 + repository.len() > MAX_NAME {
            return Err(bad(&format!(
                "has a name longer than {MAX_NAME} characters"
            )));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What a container is created from and a pull asks for: the name with
    /// the digest when there is one (the tag then dropped), else with the
    /// tag.
    pub fn runnable(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => self.pinned(digest),
            (None, Some(tag)) => format!("{}:{tag}", self.name()),
            (None, None) => format!("{}:latest", self.name()),
        }
    }

    /// The name pinned to `digest`: `registry/repository@digest`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The tag or digest a registry's manifest URL names (the digest when
    /// both are given).
    pub fn manifest(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

/// The full form: `registry/repository[:tag][@digest]`.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether a registry host names the same registry as `host`: equal
/// (hosts case-insensitively), or both on loopback with the same port
/// (`localhost:5000`, `127.0.0.1:5000` and `[::1]:5000` are one registry
/// to the machine they run on).
pub fn same_registry(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    let split = |h: &str| -> Option<(String, String)> {
        let (host, port) = h.rsplit_once(':')?;
        Some((host.to_ascii_lowercase(), port.to_owned()))
    };
    let loopback = |host: &str| {
        host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    match (split(a), split(b)) {
        (Some((ha, pa)), Some((hb, pb))) => pa == pb && loopback(&ha) && loopback(&hb),
        _ => false,
    }
}

/// 1–64 hex digits: what Docker may take for an image id or its prefix.
fn is_hex(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_digest_algorithm(alg: &str) -> bool {
    matches!(alg, "sha256" | "sha384" | "sha512")
}

fn check_digest(digest: &str) -> Result<(), String> {
    let (alg, hex) = digest.split_once(':').unwrap_or(("", digest));
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "has an invalid digest {:?} (sha256:<64 hex digits>)",
                truncate(digest)
            ))
        }
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "has an invalid digest {:?} ({alg}:<{len} lower-case hex digits>)",
            truncate(digest)
        ));
    }
    Ok(())
}

/// Docker's rule: the first part of a name is a registry host when it has
/// a '.' or a ':' or is `localhost` (or is an IPv6 address in brackets).
fn is_registry_host(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.starts_with('[')
}

/// `host[:port]`: DNS labels (letters, digits, inner dashes) joined by
/// dots, or an IPv6 address in brackets; a port of 1–65535.
fn check_host(host: &str) -> Result<(), String> {
    let bad = || format!("has an invalid registry host {:?}", truncate(host));
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
        ip.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => return Ok(()),
            _ => (None, after.strip_prefix(':').ok_or_else(bad)?),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (Some(name), port),
            None => (Some(host), ""),
        }
    };
    if let Some(name) = name {
        let label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !name.split('.').all(label) {
            return Err(bad());
        }
    }
    if host.contains(':') && !host.ends_with(']') && !port.parse::<u16>().is_ok_and(|p| p != 0) {
        return Err(bad());
    }
    Ok(())
}

fn is_tag(tag: &str) -> bool {
    (1..=MAX_TAG).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !tag.starts_with(['.', '-'])
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:6192a4d0c2e7f3a1b5c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7";

    /// `expect`: the full form (`Display`) and what runs, or `None` for a
    /// refusal.
    fn check(input: &str, expect: Option<(&str, &str)>) {
        let got = Reference::parse(input);
        match (got, expect) {
            (Ok(r), Some((full, runnable))) => {
                assert_eq!(
                    (r.to_string().as_str(), r.runnable().as_str()),
                    (full, runnable),
                    "{input}"
                );
                // The full form parses to itself.
                assert_eq!(Reference::parse(&r.to_string()).unwrap(), r, "{input}");
            }
            (Err(e), None) => assert_eq!(e.field, "image", "{input}: {e}"),
            (got, expect) => panic!("{input}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn reference_normalises_docker_hub_names() {
        check(
            "busybox",
            Some((
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox:latest",
            )),
        );
        check(
            "nginx:1.25",
            Some((
                "docker.io/library/nginx:1.25",
                "docker.io/library/nginx:1.25",
            )),
        );
        check(
            "lb-test-busybox:1",
            Some((
                "docker.io/library/lb-test-busybox:1",
                "docker.io/library/lb-test-busybox:1",
            )),
        );
        check(
            "bitnami/redis:7",
            Some(("docker.io/bitnami/redis:7", "docker.io/bitnami/redis:7")),
        );
        check(
            "index.docker.io/library/x",
            Some(("docker.io/library/x:latest", "docker.io/library/x:latest")),
        );
        check(
            "docker.io/x",
            Some(("docker.io/library/x:latest", "docker.io/library/x:latest")),
        );
        // A single name made of letters beyond hex is a name.
        check(
            "x",
            Some(("docker.io/library/x:latest", "docker.io/library/x:latest")),
        );
        check(
            "bench",
            Some((
                "docker.io/library/bench:latest",
                "docker.io/library/bench:latest",
            )),
        );
    }

    #[test]
    fn reference_keeps_hosts_ports_tags_and_digests() {
        check(
            "127.0.0.1:5000/p/s:7",
            Some(("127.0.0.1:5000/p/s:7", "127.0.0.1:5000/p/s:7")),
        );
        let pinned = format!("127.0.0.1:5000/p/s@{D}");
        check(&pinned, Some((&pinned, &pinned)));
        let both = format!("ghcr.io/a/b/c:1.0@{D}");
        check(&both, Some((&both, &format!("ghcr.io/a/b/c@{D}"))));
        check(
            "localhost/x",
            Some(("localhost/x:latest", "localhost/x:latest")),
        );
        check(
            "localhost:5000/a_b__c.d-e---f:v1.2_3-rc",
            Some((
                "localhost:5000/a_b__c.d-e---f:v1.2_3-rc",
                "localhost:5000/a_b__c.d-e---f:v1.2_3-rc",
            )),
        );
        check(
            "[::1]:5000/p/s:1",
            Some(("[::1]:5000/p/s:1", "[::1]:5000/p/s:1")),
        );
        check(
            "Registry.Example.COM/x:TAG",
            Some(("Registry.Example.COM/x:TAG", "Registry.Example.COM/x:TAG")),
        );
        let with_digest = format!("busybox@{D}");
        check(
            &with_digest,
            Some((
                &format!("docker.io/library/busybox@{D}"),
                &format!("docker.io/library/busybox@{D}"),
            )),
        );
        let r = Reference::parse(&format!("127.0.0.1:5000/p/s:7@{D}")).unwrap();
        assert_eq!(r.manifest(), D);
        assert_eq!(r.name(), "127.0.0.1:5000/p/s");
        assert_eq!(Reference::parse("a/b:1").unwrap().manifest(), "1");
    }

    #[test]
    fn reference_refuses_what_docker_could_read_as_an_id() {
        let full = &D["sha256:".len()..];
        for id in [
            "6192",
            "61",
            "a",
            "cafe",
            "deadbeef",
            full,
            &full[..12],
            "sha256:6192",
            "sha256:61",
            D,
            "sha512:6192",
        ] {
            check(id, None);
        }
        // Letters beyond hex or a tag make it a name.
        check(
            "cafe:1",
            Some(("docker.io/library/cafe:1", "docker.io/library/cafe:1")),
        );
        check(
            "6192x",
            Some((
                "docker.io/library/6192x:latest",
                "docker.io/library/6192x:latest",
            )),
        );
    }

    #[test]
    fn reference_refuses_malformed_ones() {
        for bad in [
            "",
            "bad image",
            "Upper/x",
            "x/Upper",
            "x:",
            ":1",
            "@sha256:ab",
            "x@sha256:ab",
            "x@md5:abcd",
            "x@",
            "/x",
            "x/",
            "x//y",
            "x:-tag",
            "x:.tag",
            "-x",
            "x-",
            "x..y",
            "x___y",
            "host:0/x",
            "host:99999/x",
            "-host.example/x",
            "[::zz]:5000/x",
            "a+b",
            "x\0",
            &"a".repeat(600),
            &format!("x:{}", "t".repeat(129)),
            &format!("registry.example/{}", "a".repeat(250)),
        ] {
            check(bad, None);
        }
    }

    #[test]
    fn registries_compare_with_loopback_aliases() {
        assert!(same_registry("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(same_registry("localhost:5000", "127.0.0.1:5000"));
        assert!(same_registry("[::1]:5000", "127.0.0.1:5000"));
        assert!(same_registry("127.0.0.2:5000", "localhost:5000"));
        assert!(same_registry("LB.example:5000", "lb.example:5000"));
        assert!(!same_registry("localhost:5001", "127.0.0.1:5000"));
        assert!(!same_registry("10.0.0.1:5000", "127.0.0.1:5000"));
        assert!(!same_registry("docker.io", "127.0.0.1:5000"));
        assert!(!same_registry("lb.example:5000", "127.0.0.1:5000"));
    }
}
