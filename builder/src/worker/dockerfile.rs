//! What a Dockerfile may reach, checked before the engine sees it: every
//! image it names (`FROM`, `COPY --from`, also inside `ONBUILD`) and every
//! URL it fetches (`ADD <url>`).
//!
//! The file is read the way Docker's classic builder reads it: parser
//! directives (`# escape=`), line continuations, comment lines inside them,
//! case-insensitive instructions, flags, the JSON form, `ARG`s before the
//! first `FROM` substituted into `FROM`, stage names and indexes, and `ARG`
//! and `ENV` values substituted into `ADD` sources. lb passes no build
//! arguments, so every value is the one the file sets; a variable the file
//! does not set may come from the base image, so where one could turn into
//! (or change) a URL's host the line is refused.
//!
//! Allowed images: earlier stages, `scratch`, the building project's own
//! repositories in lb's registry (pulled before the build with a token for
//! that project, so an image another tenant left in the engine is never
//! trusted), and full references to other registries. Refused: another
//! project's repository in lb's registry, image ids (`sha256:...`, and a
//! bare hex name, which Docker reads as an id prefix), registries at
//! loopback, private or link-local addresses. `ADD` URLs whose host is, or
//! resolves to, such an address are refused too; the URLs let through are
//! not left to the engine (which would follow redirects and resolve the
//! name again, from the host): [`super::fetch`] fetches them, each hop
//! checked again, and the `ADD` lines [`remote_adds`] finds become `COPY`s
//! of the fetched files ([`rewrite`], line numbers kept). `ONBUILD ADD
//! <url>` is refused, as lb cannot fetch for the later build.
//!
//! A base image's own `ONBUILD` triggers run at the `FROM` that names it:
//! once the bases are pulled, [`confine_triggers`] reads each trigger the
//! engine lists (`Config.OnBuild`) like a line of the file — the images it
//! reaches checked, any URL refused. Every refusal names the Dockerfile's
//! line (and the trigger), never a URL's credentials.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use lb_model::ids::is_id;
use lb_model::keys::Keys;
use lb_model::Project;
use lb_store::registry::Access;
use lb_store::Store;

/// How long a host's name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Stands in for the value of a variable the Dockerfile does not set.
const UNKNOWN: char = '\u{0}';

/// Something a Dockerfile line reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// An image (`FROM`, `COPY --from`), variables substituted.
    Image(String),
    /// A URL `ADD` fetches, variables substituted ([`UNKNOWN`] where the
    /// value is not known).
    Url(String),
}

/// One thing reached, with the line that reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The line's number (its first line when continued), from 1.
    pub line: usize,
    /// The instruction as written (shortened).
    pub instruction: String,
    /// What it reaches.
    pub reach: Reach,
    /// The image a `FROM` builds on (its `ONBUILD` triggers run then).
    pub base: bool,
    /// Reached by an `ONBUILD` line, in a later build.
    pub onbuild: bool,
}

impl Finding {
    fn refuse(&self, why: impl std::fmt::Display) -> String {
        format!("Dockerfile line {}: {}: {why}", self.line, self.instruction)
    }
}

/// An image reference, sorted by where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// Another registry (Docker Hub when no host is named); `host` is the
    /// registry's host and port when the reference names one.
    Public {
        /// `host[:port]` of the registry, when named.
        host: Option<String>,
    },
    /// A repository of lb's registry.
    Lb {
        /// `<project>/<service>` as written.
        repository: String,
        /// The tag or digest (`latest` when none is written).
        reference: String,
    },
}

/// An image of the building project to pull before the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    /// `<registry>/<project>/<service>` as written.
    pub image: String,
    /// The tag or digest.
    pub reference: String,
    /// The registry access it needs (pull, on the ids it resolved to).
    pub access: Access,
}

/// An image a `FROM` line builds on: its `ONBUILD` triggers are read
/// (from the engine, once it holds the image) before the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// The `FROM` line's number.
    pub line: usize,
    /// The `FROM` line (shortened).
    pub instruction: String,
    /// The image, as the engine is asked for it.
    pub image: String,
}

/// What a Dockerfile may reach, once checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confined {
    /// The project's images to pull first.
    pub pulls: Vec<Pull>,
    /// The images `FROM` lines build on (not stages, not `scratch`).
    pub bases: Vec<Base>,
}

/// Checks what `dockerfile` reaches for a build of project `pid`, with
/// lb's registry at `registry` (host:port); answers the images of the
/// project to pull first and the bases whose triggers to check, or why the
/// Dockerfile is refused. An `ONBUILD ADD <url>` is refused: lb fetches
/// remote sources itself ([`super::fetch`]), which it cannot do for a
/// later build.
pub async fn confine(
    store: &dyn Store,
    keys: &Keys,
    pid: &str,
    registry: &str,
    dockerfile: &str,
) -> Result<Confined, String> {
    let mut confined = Confined::default();
    for finding in parse(dockerfile)? {
        match &finding.reach {
            Reach::Image(reference) => {
                let pull = check_image(store, keys, pid, registry, reference)
                    .await
                    .map_err(|e| finding.refuse(e))?;
                if let Some(pull) = pull {
                    if !confined.pulls.contains(&pull) {
                        confined.pulls.push(pull);
                    }
                }
                if finding.base {
                    confined.bases.push(Base {
                        line: finding.line,
                        instruction: finding.instruction.clone(),
                        image: reference.trim().to_owned(),
                    });
                }
            }
            Reach::Url(url) => {
                check_url(url).await.map_err(|e| finding.refuse(e))?;
                if finding.onbuild {
                    return Err(finding.refuse(
                        "ONBUILD ADD of a URL is not allowed: lb fetches remote ADD sources itself, which it cannot do for the later build that runs the trigger",
                    ));
                }
            }
        }
    }
    Ok(confined)
}

/// Checks a base image's `ONBUILD` triggers (as the engine lists them,
/// `Config.OnBuild`) the way the file's own lines are: the images they
/// reach; any URL is refused (a trigger's `ADD <url>` would be fetched by
/// the engine). Answers more of the project's images to pull.
pub async fn confine_triggers(
    store: &dyn Store,
    keys: &Keys,
    pid: &str,
    registry: &str,
    base: &Base,
    triggers: &[String],
) -> Result<Vec<Pull>, String> {
    let mut pulls = Vec::new();
    for trigger in triggers {
        let one_line = trigger.replace(['\n', '\r'], " ");
        let shown: String = redact(&one_line).chars().take(200).collect();
        let refuse = |why: String| {
            format!(
                "Dockerfile line {}: {}: the image's ONBUILD trigger {shown:?} {why}",
                base.line, base.instruction
            )
        };
        // Read with either escape character: the image's own is not known.
        let text = format!("# escape=`\nONBUILD {one_line}\n");
        let findings = parse(&text).map_err(|e| refuse(format!("cannot be read: {e}")))?;
        for finding in findings {
            match &finding.reach {
                Reach::Url(_) => {
                    return Err(refuse(
                        "fetches a URL: a base image's ONBUILD ADD <url> is not allowed (lb fetches remote ADD sources itself); use a base without it".into(),
                    ))
                }
                Reach::Image(reference) => {
                    let pull = check_image(store, keys, pid, registry, reference)
                        .await
                        .map_err(|e| refuse(format!("reaches an image that is refused: {e}")))?;
                    if let Some(pull) = pull {
                        if !pulls.contains(&pull) {
                            pulls.push(pull);
                        }
                    }
                }
            }
        }
    }
    Ok(pulls)
}

/// Whether a build may use the image `reference`: `Some` pull when it is
/// one of the project's own in lb's registry.
async fn check_image(
    store: &dyn Store,
    keys: &Keys,
    pid: &str,
    registry: &str,
    reference: &str,
) -> Result<Option<Pull>, String> {
    match classify(reference, registry)? {
        Image::Public { host: None } => Ok(None),
        Image::Public { host: Some(host) } => {
            let why = match split_host_port(&host, 443) {
                Some((name, port)) => forbidden_host(&name, port).await,
                None => Some("is not a well-formed host".into()),
            };
            match why {
                Some(why) => Err(format!(
                    "the registry {host} {why}; a build may use its own project's images in lb's registry ({registry}/<project>/<service>) and images of public registries"
                )),
                None => Ok(None),
            }
        }
        Image::Lb {
            repository,
            reference,
        } => {
            let access = own_repository(store, keys, pid, &repository).await?;
            Ok(Some(Pull {
                image: format!("{registry}/{repository}"),
                reference,
                access,
            }))
        }
    }
}

/// `text` with the credentials of any `scheme://user:password@` taken out.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***@");
                rest = &tail[at + 1..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// The access to pull `repository` (`<project>/<service>` by ids or names)
/// when it is one of project `pid`'s; an error otherwise, which does not
/// tell whether another project's repository exists.
async fn own_repository(
    store: &dyn Store,
    keys: &Keys,
    pid: &str,
    repository: &str,
) -> Result<Access, String> {
    let not_ours = || {
        format!(
            "{repository:?} is not a repository of this project: a build may use its own project's images in lb's registry and images of public registries"
        )
    };
    let mut parts = repository.split('/');
    let (Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "lb's registry holds <project>/<service> repositories, not {repository:?}"
        ));
    };
    let project: Project = match store.get(&keys.project(pid)).await {
        Ok(Some(kv)) => serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?,
        Ok(None) => return Err("the project was deleted".into()),
        Err(e) => return Err(e.to_string()),
    };
    if !p.eq_ignore_ascii_case(pid) && p != project.name {
        return Err(not_ours());
    }
    let upper = s.to_uppercase();
    let sid = if is_id(&upper) {
        upper
    } else if lb_model::validate_name(s).is_ok() {
        match store.get(&keys.service_index(pid, s)).await {
            Ok(Some(kv)) => String::from_utf8_lossy(&kv.value).into_owned(),
            Ok(None) => return Err(format!("this project has no service {s:?}")),
            Err(e) => return Err(e.to_string()),
        }
    } else {
        return Err(not_ours());
    };
    match store.get(&keys.service_meta(pid, &sid)).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(format!("this project has no service {s:?}")),
        Err(e) => return Err(e.to_string()),
    }
    Ok(Access {
        kind: "repository".into(),
        name: repository.to_owned(),
        actions: vec!["pull".into()],
        project: pid.to_owned(),
        service: sid,
    })
}

/// Where an image reference points, or why it is refused.
pub fn classify(reference: &str, registry: &str) -> Result<Image, String> {
    let image = reference.trim();
    if image.is_empty() {
        return Err("the image reference is empty".into());
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let (name, tag) = match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (name, None),
    };
    let is_hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    // `sha256:<hex>`, or a name-less digest: an image id.
    if digest.is_none() && tag.is_some_and(is_hex) && !name.contains('/') && name.starts_with("sha")
    {
        return Err(format!(
            "{image:?} is an image id: name an image by its repository (and tag or digest)"
        ));
    }
    if digest.is_none() && tag.is_none() && is_hex(name) {
        return Err(format!(
            "{image:?} reads as an image id: name an image by its repository (and tag or digest)"
        ));
    }
    if name.is_empty() {
        return Err(format!("{image:?} names no repository"));
    }
    // Docker's rule: the first component names a registry when it holds a
    // `.` or `:`, is `localhost`, or has upper-case letters.
    let host = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            Some((first, rest))
        }
        _ => None,
    };
    let Some((host, path)) = host else {
        return Ok(Image::Public { host: None });
    };
    if !host.eq_ignore_ascii_case(registry) {
        return Ok(Image::Public {
            host: Some(host.to_owned()),
        });
    }
    let reference = match (tag, digest) {
        (_, Some(digest)) => digest.to_owned(),
        (Some(tag), None) => tag.to_owned(),
        (None, None) => "latest".to_owned(),
    };
    Ok(Image::Lb {
        repository: path.to_owned(),
        reference,
    })
}

/// Refuses a URL whose host is, or resolves to, a loopback, private or
/// link-local address, or whose host the Dockerfile leaves to a variable
/// it does not set.
async fn check_url(url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| lower.starts_with(scheme).then(|| &url[scheme.len()..]));
    let Some(rest) = rest else {
        // A variable the file does not set stands before any scheme: the
        // source may be a URL lb cannot check.
        return Err(
            "the source may be a URL, through a variable this Dockerfile does not set: write it out"
                .into(),
        );
    };
    let default_port = if lower.starts_with("https") { 443 } else { 80 };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains(UNKNOWN) {
        return Err(
            "the URL's host comes from a variable this Dockerfile does not set: write it out"
                .into(),
        );
    }
    if authority.contains(['\\', ' ', '\t']) || authority.chars().any(char::is_control) {
        return Err(format!("{url:?} is not a well-formed URL"));
    }
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = split_host_port(host_port, default_port)
        .ok_or_else(|| format!("{url:?} is not a well-formed URL"))?;
    let host = percent_decode(&host).ok_or_else(|| format!("{url:?} is not a well-formed URL"))?;
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    if let Some(why) = forbidden_host(&host, port).await {
        return Err(format!(
            "{host} {why}: a build may not fetch from loopback, private or link-local addresses"
        ));
    }
    Ok(())
}

/// `host[:port]` or `[v6][:port]` split, the port defaulted.
fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) if !p.is_empty() => p.parse().ok()?,
            _ => default_port,
        };
        return Some((host.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((host, "")) => Some((host.to_owned(), default_port)),
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((s.to_owned(), default_port)),
    }
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
pub(super) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Why a host (a name or an address, without a port) may not be reached
/// from a build: "is a loopback address", "resolves to ..."; `None` when
/// it may. A name that does not resolve is let through: the engine cannot
/// reach it either.
async fn forbidden_host(host: &str, port: u16) -> Option<String> {
    let host = host.trim_end_matches('.');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return forbidden_ip(ip).map(|why| format!("is a {why} address"));
    }
    let lower = host.to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Some("is a loopback address".into());
    }
    let resolved =
        tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await;
    let Ok(Ok(addrs)) = resolved else {
        return None;
    };
    for addr in addrs {
        if let Some(why) = forbidden_ip(addr.ip()) {
            return Some(format!("resolves to {}, a {why} address", addr.ip()));
        }
    }
    None
}

/// Why a build may not reach `ip`, if it may not.
pub fn forbidden_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let seg = v6.segments();
            // NAT64's well-known prefix carries an IPv4 address.
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return forbidden_v4(Ipv4Addr::new(a, b, c, d));
            }
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if seg[..6] == [0, 0, 0, 0, 0, 0] && v6 != Ipv6Addr::UNSPECIFIED {
                // IPv4-compatible (deprecated) addresses.
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                forbidden_v4(Ipv4Addr::new(a, b, c, d))
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if a == 0 {
        Some("unspecified")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Reading the Dockerfile.

/// A logical line: continuations joined, comment lines dropped.
struct Line {
    number: usize,
    /// The number of its last physical line (continued lines).
    last: usize,
    text: String,
}

/// Everything `dockerfile` reaches, in order. When the file sets another
/// escape character, it is read both ways and the findings joined, so a
/// builder that reads the directive differently cannot hide a line.
pub fn parse(dockerfile: &str) -> Result<Vec<Finding>, String> {
    let text = dockerfile.strip_prefix('\u{feff}').unwrap_or(dockerfile);
    let escape = escape_directive(text)?;
    let (mut findings, _) = read(text, escape)?;
    if escape != '\\' {
        for f in read(text, '\\').map(|r| r.0).unwrap_or_default() {
            if !findings.contains(&f) {
                findings.push(f);
            }
        }
    }
    Ok(findings)
}

/// An `ADD` line of the file's own (not `ONBUILD`) that fetches URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAdd {
    /// Its first physical line, from 1.
    pub line: usize,
    /// Its last physical line (continued lines).
    pub last: usize,
    /// Its flags (`--chown`, `--chmod`, ...), quotes taken off.
    pub flags: Vec<(String, String)>,
    /// The URLs, variables substituted (as the engine would).
    pub urls: Vec<String>,
    /// The destination as written.
    pub dest: String,
}

/// The `ADD` lines of `dockerfile` that fetch URLs, read with its escape
/// character. An `ADD` mixing URLs and local sources is refused (it cannot
/// become one `COPY`).
pub fn remote_adds(dockerfile: &str) -> Result<Vec<RemoteAdd>, String> {
    let text = dockerfile.strip_prefix('\u{feff}').unwrap_or(dockerfile);
    Ok(read(text, escape_directive(text)?)?.1)
}

/// `dockerfile` with each of `adds` replaced by a `COPY` of `sources` (one
/// list per add, in the context) to the same destination with the same
/// flags, on the add's first line; its continued lines left blank, so
/// every other line keeps its number.
pub fn rewrite(dockerfile: &str, adds: &[RemoteAdd], sources: &[Vec<String>]) -> String {
    let mut lines: Vec<String> = dockerfile.split('\n').map(str::to_owned).collect();
    for (add, sources) in adds.iter().zip(sources) {
        let mut copy = String::from("COPY");
        for (name, value) in &add.flags {
            copy.push_str(&format!(" --{name}"));
            if !value.is_empty() {
                copy.push('=');
                copy.push_str(value);
            }
        }
        let words: Vec<&str> = sources
            .iter()
            .map(String::as_str)
            .chain([add.dest.as_str()])
            .collect();
        copy.push(' ');
        copy.push_str(&serde_json::to_string(&words).unwrap_or_default());
        for n in add.line..=add.last {
            if let Some(line) = lines.get_mut(n - 1) {
                let bom = n == 1 && line.starts_with('\u{feff}');
                let cr = line.ends_with('\r');
                *line = String::new();
                if bom {
                    line.push('\u{feff}');
                }
                if n == add.line {
                    line.push_str(&copy);
                }
                if cr {
                    line.push('\r');
                }
            }
        }
    }
    lines.join("\n")
}

/// The `# escape=` parser directive at the top of the file, if any.
fn escape_directive(text: &str) -> Result<char, String> {
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            break;
        }
        if key.eq_ignore_ascii_case("escape") {
            return match value.trim() {
                "\\" => Ok('\\'),
                "`" => Ok('`'),
                other => Err(format!(
                    "Dockerfile: escape directive {other:?} must be \\ or `"
                )),
            };
        }
    }
    Ok('\\')
}

fn lines(text: &str, escape: char) -> Vec<Line> {
    let is_comment = |l: &str| l.trim_start().starts_with('#');
    // Ends with the escape character (then blanks): continued.
    let continued = |l: &str| -> Option<String> {
        let t = l.trim_end_matches([' ', '\t']);
        t.strip_suffix(escape).map(str::to_owned)
    };
    let mut out = Vec::new();
    let mut physical = text.lines().map(|l| l.trim_end_matches('\r')).enumerate();
    while let Some((i, raw)) = physical.next() {
        let first = raw.trim_start();
        if first.is_empty() || is_comment(first) {
            continue;
        }
        let mut text = match continued(first) {
            None => {
                out.push(Line {
                    number: i + 1,
                    last: i + 1,
                    text: first.to_owned(),
                });
                continue;
            }
            Some(t) => t,
        };
        let mut last = i + 1;
        for (j, next) in physical.by_ref() {
            last = j + 1;
            if is_comment(next) || next.trim().is_empty() {
                continue;
            }
            match continued(next) {
                Some(t) => text.push_str(&t),
                None => {
                    text.push_str(next);
                    break;
                }
            }
        }
        out.push(Line {
            number: i + 1,
            last,
            text,
        });
    }
    out
}

/// A variable's value as far as the file tells.
#[derive(Debug, Clone)]
enum Var {
    Set(String),
    /// Declared without a value: may come from the base image.
    Unknown,
}

/// The variables a stage's lines are expanded with.
#[derive(Debug, Clone, Default)]
struct Env {
    vars: HashMap<String, Var>,
    /// The stage's base is an image, whose environment lb does not know.
    image_base: bool,
}

impl Env {
    fn lookup(&self, name: &str) -> Option<String> {
        match self.vars.get(name) {
            Some(Var::Set(v)) => Some(v.clone()),
            Some(Var::Unknown) => None,
            None if self.image_base => None,
            None => Some(String::new()),
        }
    }
}

fn read(text: &str, escape: char) -> Result<(Vec<Finding>, Vec<RemoteAdd>), String> {
    let mut findings = Vec::new();
    let mut adds = Vec::new();
    let mut meta: HashMap<String, String> = HashMap::new();
    // Stages so far: name (lower case) and environment at their end.
    let mut stages: Vec<(Option<String>, Env)> = Vec::new();
    let mut env = Env::default();
    for line in lines(text, escape) {
        let (word, rest) = split_word(&line.text);
        let instruction: String = redact(&line.text).chars().take(200).collect();
        let at = |reach| Finding {
            line: line.number,
            instruction: instruction.clone(),
            reach,
            base: false,
            onbuild: false,
        };
        let err = |why: String| format!("Dockerfile line {}: {instruction}: {why}", line.number);
        match word.to_ascii_lowercase().as_str() {
            "arg" => {
                for (name, value) in assignments(rest, escape, true) {
                    if stages.is_empty() {
                        let value = match value {
                            Some(v) => expand(&v, escape, &|n| {
                                Some(meta.get(n).cloned().unwrap_or_default())
                            })
                            .map_err(err)?,
                            None => String::new(),
                        };
                        meta.insert(name, value);
                    } else {
                        let var = match value {
                            Some(v) => expand_known(&v, escape, &env).map_err(err)?,
                            None => match meta.get(&name) {
                                Some(v) => Var::Set(v.clone()),
                                None => Var::Unknown,
                            },
                        };
                        // A value already set (by ENV) wins over an ARG
                        // without one.
                        if !matches!(var, Var::Unknown) || !env.vars.contains_key(&name) {
                            env.vars.insert(name, var);
                        }
                    }
                }
            }
            "env" if !stages.is_empty() => {
                for (name, value) in assignments(rest, escape, false) {
                    let var =
                        expand_known(&value.unwrap_or_default(), escape, &env).map_err(err)?;
                    env.vars.insert(name, var);
                }
            }
            "from" => {
                if let Some(last) = stages.last_mut() {
                    last.1 = std::mem::take(&mut env);
                }
                let (_, args) = flags(rest);
                let words: Vec<&str> = args.split_whitespace().collect();
                let (image, name) = match words.as_slice() {
                    [image] => (*image, None),
                    [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        (*image, Some(name.to_ascii_lowercase()))
                    }
                    _ => return Err(err("FROM takes an image and an optional AS name".into())),
                };
                let image = expand(image, escape, &|n| {
                    Some(meta.get(n).cloned().unwrap_or_default())
                })
                .map_err(err)?;
                let lower = image.to_ascii_lowercase();
                env = if let Some((_, e)) = stages
                    .iter()
                    .find(|(n, _)| n.as_deref() == Some(lower.as_str()))
                {
                    e.clone()
                } else if lower == "scratch" {
                    Env::default()
                } else {
                    findings.push(Finding {
                        base: true,
                        ..at(Reach::Image(image))
                    });
                    Env {
                        vars: HashMap::new(),
                        image_base: true,
                    }
                };
                stages.push((name, Env::default()));
            }
            "copy" | "add" => {
                let current = stages.len().saturating_sub(1);
                let kind = word.to_ascii_lowercase();
                let reached = copy(&kind, rest, escape, &env, &stages[..current]).map_err(err)?;
                if reached.iter().any(|r| matches!(r, Reach::Url(_))) {
                    // Not known: refused by `confine` (no URL to fetch).
                    if let Some((flags, urls, dest)) =
                        remote_add(rest, escape, &env).map_err(err)?
                    {
                        adds.push(RemoteAdd {
                            line: line.number,
                            last: line.last,
                            flags,
                            urls,
                            dest,
                        });
                    }
                }
                reached.into_iter().for_each(|r| findings.push(at(r)));
            }
            "onbuild" => {
                // Run in a later build, with that build's variables: none
                // is known here.
                let (inner, rest) = split_word(rest);
                let inner = inner.to_ascii_lowercase();
                if inner == "copy" || inner == "add" {
                    let unknown = Env {
                        vars: HashMap::new(),
                        image_base: true,
                    };
                    copy(&inner, rest, escape, &unknown, &[])
                        .map_err(err)?
                        .into_iter()
                        .for_each(|r| {
                            findings.push(Finding {
                                onbuild: true,
                                ..at(r)
                            })
                        });
                }
            }
            _ => {}
        }
    }
    Ok((findings, adds))
}

/// Sources and destination of an `ADD` (shell or JSON form).
fn add_words(args: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(args.trim()) {
        Ok(list) if args.trim_start().starts_with('[') => list,
        _ => args.split_whitespace().map(str::to_owned).collect(),
    }
}

fn is_url(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// An `ADD` that fetches URLs: its flags, URLs (expanded) and
/// destination (as written); refused when it adds local sources too;
/// `None` when a variable the file does not set is in a source.
#[allow(clippy::type_complexity)]
fn remote_add(
    rest: &str,
    escape: char,
    env: &Env,
) -> Result<Option<(Vec<(String, String)>, Vec<String>, String)>, String> {
    let (flags, args) = flags(rest);
    let words = add_words(args);
    let Some((dest, sources)) = words.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err("ADD takes one or more sources and a destination".into());
    };
    let mut urls = Vec::new();
    for source in sources {
        let expanded = expand(source, escape, &|n| env.lookup(n))?;
        if expanded.contains(UNKNOWN) {
            return Ok(None);
        }
        if !is_url(&expanded) {
            return Err(
                "an ADD that fetches a URL may not add other sources on the same line: give each its own ADD".into(),
            );
        }
        urls.push(expanded);
    }
    Ok(Some((flags, urls, dest.clone())))
}

/// What a `COPY` or `ADD` reaches: its `--from` image (unless an earlier
/// stage) and, for `ADD`, its URL sources.
fn copy(
    kind: &str,
    rest: &str,
    escape: char,
    env: &Env,
    earlier: &[(Option<String>, Env)],
) -> Result<Vec<Reach>, String> {
    let mut out = Vec::new();
    let (flags, args) = flags(rest);
    for (name, value) in flags {
        if name != "from" {
            continue;
        }
        if value.contains('$') {
            return Err("--from with a variable: name the stage or image as it is".into());
        }
        let lower = value.to_ascii_lowercase();
        let stage = earlier
            .iter()
            .any(|(n, _)| n.as_deref() == Some(lower.as_str()))
            || lower.parse::<usize>().is_ok_and(|i| i < earlier.len());
        if !stage {
            out.push(Reach::Image(value));
        }
    }
    if kind != "add" {
        return Ok(out);
    }
    let words = add_words(args);
    let sources = if words.len() > 1 {
        &words[..words.len() - 1]
    } else {
        &words[..]
    };
    for source in sources {
        let expanded = expand(source, escape, &|n| env.lookup(n))?;
        let lower = expanded.to_ascii_lowercase();
        let before_unknown = lower.split(UNKNOWN).next().unwrap_or("");
        let url = lower.starts_with("http://") || lower.starts_with("https://");
        // An unset variable before the scheme is complete may make a URL.
        let maybe = expanded.contains(UNKNOWN)
            && ("http://".starts_with(before_unknown) || "https://".starts_with(before_unknown));
        if url || maybe {
            out.push(Reach::Url(expanded));
        }
    }
    Ok(out)
}

/// The first word and the rest.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Leading `--name=value` (or `--name`) flags, and the rest.
fn flags(s: &str) -> (Vec<(String, String)>, &str) {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while rest.starts_with("--") {
        let (word, after) = split_word(rest);
        let body = &word[2..];
        let (name, value) = body.split_once('=').unwrap_or((body, ""));
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        out.push((name.to_ascii_lowercase(), value.to_owned()));
        rest = after;
    }
    (out, rest)
}

/// `ARG a=1 b` / `ENV a=1 b=2` (or the old `ENV a value with spaces`):
/// names and raw values.
fn assignments(rest: &str, escape: char, arg: bool) -> Vec<(String, Option<String>)> {
    let words = shell_words(rest, escape);
    if !arg && words.first().is_some_and(|w| !w.contains('=')) {
        let (name, value) = split_word(rest);
        return vec![(name.to_owned(), Some(value.trim().to_owned()))];
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (w, None),
        })
        .collect()
}

/// Words split at blanks outside quotes, quotes and escapes kept.
fn shell_words(s: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            (c, _) if c == escape && quote != Some('\'') => {
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            ('\'' | '"', None) => {
                quote = Some(c);
                word.push(c);
            }
            (c, Some(q)) if c == q => {
                quote = None;
                word.push(c);
            }
            (c, None) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            (c, _) => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// A value expanded in a stage: set, or unknown where it uses a variable
/// whose value is not known.
fn expand_known(word: &str, escape: char, env: &Env) -> Result<Var, String> {
    let v = expand(word, escape, &|n| env.lookup(n))?;
    Ok(if v.contains(UNKNOWN) {
        Var::Unknown
    } else {
        Var::Set(v)
    })
}

/// One word with quotes removed and `$name`, `${name}`, `${name:-word}`,
/// `${name-word}`, `${name:+word}`, `${name+word}` substituted; `lookup`
/// answers `None` for a value not known, written as [`UNKNOWN`].
fn expand(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut double = false;
    while i < chars.len() {
        let c = chars[i];
        if c == escape {
            if let Some(&n) = chars.get(i + 1) {
                out.push(n);
                i += 2;
            } else {
                out.push(c);
                i += 1;
            }
            continue;
        }
        if c == '\'' && !double {
            let end = chars[i + 1..]
                .iter()
                .position(|&x| x == '\'')
                .map(|p| i + 1 + p)
                .unwrap_or(chars.len());
            out.extend(&chars[i + 1..end]);
            i = end + 1;
            continue;
        }
        if c == '"' {
            double = !double;
            i += 1;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('{') => {
                // Find the matching brace.
                let mut depth = 0;
                let mut end = None;
                for (j, &x) in chars.iter().enumerate().skip(i + 1) {
                    if x == '{' {
                        depth += 1;
                    } else if x == '}' {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                }
                let end = end.ok_or_else(|| format!("unclosed ${{ in {word:?}"))?;
                let inner: String = chars[i + 2..end].iter().collect();
                let name_len = inner
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(inner.len());
                let (name, op) = inner.split_at(name_len);
                if name.is_empty() {
                    return Err(format!("bad substitution in {word:?}"));
                }
                let v = lookup(name);
                let (colon, op) = match op.strip_prefix(':') {
                    Some(op) => (true, op),
                    None => (false, op),
                };
                let given = |v: &Option<String>| match v {
                    Some(v) => !(colon && v.is_empty()),
                    None => false,
                };
                let replaced = if op.is_empty() && !colon {
                    v.unwrap_or_else(|| UNKNOWN.to_string())
                } else if let Some(alt) = op.strip_prefix('-') {
                    match &v {
                        None => UNKNOWN.to_string(),
                        _ if given(&v) => v.unwrap_or_default(),
                        _ => expand(alt, escape, lookup)?,
                    }
                } else if let Some(alt) = op.strip_prefix('+') {
                    match &v {
                        None => UNKNOWN.to_string(),
                        _ if given(&v) => expand(alt, escape, lookup)?,
                        _ => String::new(),
                    }
                } else {
                    return Err(format!(
                        "the substitution ${{{inner}}} is not supported in {word:?}"
                    ));
                };
                out.push_str(&replaced);
                i = end + 1;
            }
            Some(&n) if n.is_ascii_alphanumeric() || n == '_' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&x| !(x.is_ascii_alphanumeric() || x == '_'))
                    .map(|p| i + 1 + p)
                    .unwrap_or(chars.len());
                let name: String = chars[i + 1..end].iter().collect();
                out.push_str(&lookup(&name).unwrap_or_else(|| UNKNOWN.to_string()));
                i = end;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &str = "127.0.0.1:5000";

    fn images(text: &str) -> Vec<String> {
        parse(text)
            .unwrap()
            .into_iter()
            .filter_map(|f| match f.reach {
                Reach::Image(i) => Some(format!("{}:{i}", f.line)),
                Reach::Url(_) => None,
            })
            .collect()
    }

    fn urls(text: &str) -> Vec<String> {
        parse(text)
            .unwrap()
            .into_iter()
            .filter_map(|f| match f.reach {
                Reach::Url(u) => Some(format!("{}:{}", f.line, u.replace(UNKNOWN, "?"))),
                Reach::Image(_) => None,
            })
            .collect()
    }

    #[test]
    fn images_named_are_found_with_their_lines() {
        let check = |text: &str, expect: &[&str]| assert_eq!(images(text), expect, "{text}");
        check("FROM busybox\nRUN x\n", &["1:busybox"]);
        check("from scratch\ncopy . /\n", &[]);
        // Meta ARGs substitute into FROM; unset ones are empty.
        check(
            "ARG REG=127.0.0.1:5000\nARG IMG=${REG}/p/s:1\nFROM $IMG AS build\n",
            &["3:127.0.0.1:5000/p/s:1"],
        );
        check("ARG T\nFROM busybox${T:-:1}\n", &["2:busybox:1"]);
        check("ARG T=2\nFROM busybox:${T:+x}\n", &["2:busybox:x"]);
        // Stages by name (any case) and index; an image otherwise.
        check(
            "FROM a AS Build\nFROM build\nCOPY --from=BUILD /x /x\nCOPY --from=0 /y /y\n\
             COPY --from=1 /z /z\nCOPY --from=other /w /w\n",
            &["1:a", "5:1", "6:other"],
        );
        // Flags, continuations with comments and blank lines between.
        check(
            "FROM --platform=linux/amd64 \\\n# a comment\n\n  reg.example/x/y:1 \\\n  AS b\n",
            &["1:reg.example/x/y:1"],
        );
        check(
            "FROM a\nCOPY --chown=1 --from=\"img:1\" x y\n",
            &["1:a", "2:img:1"],
        );
        // ONBUILD reaches images too.
        check(
            "FROM a\nONBUILD COPY --from=evil:1 / /\n",
            &["1:a", "2:evil:1"],
        );
        // A stage named later is an image at this line.
        check("FROM later\nFROM b AS later\n", &["1:later", "2:b"]);
    }

    #[test]
    fn an_escape_directive_is_read_both_ways() {
        // With ` as escape, the \ does not continue: line 3 is a FROM.
        let text = "# escape=`\nRUN echo \\\nFROM 127.0.0.1:5000/x/y\n";
        let found = images(text);
        assert!(
            found.contains(&"3:127.0.0.1:5000/x/y".to_owned()),
            "{found:?}"
        );
        // And a ` continuation with a \ builder still shows line 3.
        let text = "# escape=`\nRUN echo `\nFROM 127.0.0.1:5000/x/y\n";
        let found = images(text);
        assert!(
            found.contains(&"3:127.0.0.1:5000/x/y".to_owned()),
            "{found:?}"
        );
        assert!(parse("# escape=x\nFROM a\n")
            .unwrap_err()
            .contains("escape"));
    }

    #[test]
    fn add_urls_are_found_with_variables_substituted() {
        let check = |text: &str, expect: &[&str]| assert_eq!(urls(text), expect, "{text}");
        check(
            "FROM a\nADD http://127.0.0.1:80/x /x\n",
            &["2:http://127.0.0.1:80/x"],
        );
        check(
            "FROM a\nADD [\"HTTPS://h/x\", \"/x\"]\n",
            &["2:HTTPS://h/x"],
        );
        check(
            "FROM a\nADD --chown=1 local.tar /x\nCOPY http://h/x /x\n",
            &[],
        );
        check(
            "FROM scratch\nARG H=127.0.0.1\nENV P=8080 Q=x\nADD http://${H}:$P/$Q /x\n",
            &["4:http://127.0.0.1:8080/x"],
        );
        // Not set by the file: it may come from the base image.
        check("FROM a\nADD $URL /x\n", &["2:?"]);
        check("FROM a\nADD http://$HOST/x /x\n", &["2:http://?/x"]);
        check("FROM a\nADD ./$DIR/x /x\n", &[]);
        check("FROM scratch\nADD $URL /x\n", &[]);
        // ONBUILD runs later with unknown variables.
        check(
            "FROM a\nONBUILD ADD http://10.0.0.1/x /x\n",
            &["2:http://10.0.0.1/x"],
        );
        // Meta ARGs reach a stage only when declared in it.
        check(
            "ARG H=10.0.0.1\nFROM scratch\nARG H\nADD http://$H/x /x\n",
            &["4:http://10.0.0.1/x"],
        );
    }

    #[test]
    fn references_are_classified() {
        let public = |host: Option<&str>| {
            Ok(Image::Public {
                host: host.map(str::to_owned),
            })
        };
        let lb = |repository: &str, reference: &str| {
            Ok(Image::Lb {
                repository: repository.into(),
                reference: reference.into(),
            })
        };
        let check = |reference: &str, expect: Result<Image, &str>| {
            let got = classify(reference, REG);
            match (&got, &expect) {
                (Err(e), Err(want)) => assert!(e.contains(want), "{reference}: {e}"),
                _ => assert_eq!(got, expect.map_err(str::to_owned), "{reference}"),
            }
        };
        check("busybox", public(None));
        check("library/busybox:1.36", public(None));
        check("lb-test-busybox:1", public(None));
        check("ghcr.io/o/r@sha256:abcd", public(Some("ghcr.io")));
        check("localhost/x", public(Some("localhost")));
        check("Upper/x", public(Some("Upper")));
        check("127.0.0.1:5000/p/s", lb("p/s", "latest"));
        check("127.0.0.1:5000/p/s:3", lb("p/s", "3"));
        check("127.0.0.1:5000/p/s@sha256:ab", lb("p/s", "sha256:ab"));
        check("127.0.0.1:5000/p", lb("p", "latest"));
        check("6192", Err("reads as an image id"));
        check("61", Err("reads as an image id"));
        check("sha256:6192ab", Err("is an image id"));
        check(&"a".repeat(64), Err("reads as an image id"));
        check("", Err("empty"));
        // A name with a tag is looked up by name, never as an id.
        check("6192:latest", public(None));
    }

    #[test]
    fn addresses_are_sorted() {
        let check = |ip: &str, expect: Option<&str>| {
            assert_eq!(forbidden_ip(ip.parse().unwrap()), expect, "{ip}")
        };
        check("127.0.0.1", Some("loopback"));
        check("127.8.9.1", Some("loopback"));
        check("0.0.0.0", Some("unspecified"));
        check("10.1.2.3", Some("private"));
        check("172.16.0.1", Some("private"));
        check("172.31.255.1", Some("private"));
        check("192.168.1.1", Some("private"));
        check("169.254.169.254", Some("link-local"));
        check("100.64.0.1", Some("shared (carrier-grade NAT)"));
        check("224.0.0.1", Some("reserved"));
        check("::1", Some("loopback"));
        check("::", Some("unspecified"));
        check("fe80::1", Some("link-local"));
        check("fd00::1", Some("unique-local"));
        check("::ffff:127.0.0.1", Some("loopback"));
        check("::ffff:10.0.0.1", Some("private"));
        check("64:ff9b::a9fe:a9fe", Some("link-local"));
        check("8.8.8.8", None);
        check("172.32.0.1", None);
        check("2606:4700::1111", None);
    }

    #[test]
    fn bases_and_onbuild_lines_are_marked() {
        let found = parse(
            "FROM a AS one\nFROM one\nFROM scratch\nCOPY --from=b / /\nFROM c\n\
             ONBUILD COPY --from=d / /\n",
        )
        .unwrap();
        let marks: Vec<(usize, bool, bool)> =
            found.iter().map(|f| (f.line, f.base, f.onbuild)).collect();
        assert_eq!(
            marks,
            [
                (1, true, false),
                (4, false, false),
                (5, true, false),
                (6, false, true)
            ]
        );
    }

    #[test]
    fn remote_adds_are_read_with_their_lines() {
        let text = "FROM a\nARG H=example.com\nADD --chown=1:2 --chmod=640 \\\n\
                    # note\n  http://$H/f.tgz \\\n  /opt/\nADD local.tar /x\n\
                    ONBUILD ADD http://example.com/y /y\n\
                    add [\"https://example.com/a b\", \"https://example.com/c\", \"/d dir/\"]\n";
        let adds = remote_adds(text).unwrap();
        assert_eq!(
            adds,
            [
                RemoteAdd {
                    line: 3,
                    last: 6,
                    flags: vec![
                        ("chown".into(), "1:2".into()),
                        ("chmod".into(), "640".into())
                    ],
                    urls: vec!["http://example.com/f.tgz".into()],
                    dest: "/opt/".into(),
                },
                RemoteAdd {
                    line: 9,
                    last: 9,
                    flags: vec![],
                    urls: vec![
                        "https://example.com/a b".into(),
                        "https://example.com/c".into()
                    ],
                    dest: "/d dir/".into(),
                },
            ]
        );
        let sources = vec![
            vec![".lb-add/0/f.tgz".to_owned()],
            vec![".lb-add/1/a".to_owned(), ".lb-add/2/c".to_owned()],
        ];
        let rewritten = rewrite(text, &adds, &sources);
        let lines: Vec<&str> = rewritten.split('\n').collect();
        assert_eq!(lines.len(), text.split('\n').count());
        assert_eq!(
            lines[2],
            "COPY --chown=1:2 --chmod=640 [\".lb-add/0/f.tgz\",\"/opt/\"]"
        );
        assert_eq!(&lines[3..6], ["", "", ""]);
        assert_eq!(lines[6], "ADD local.tar /x");
        assert_eq!(
            lines[8],
            "COPY [\".lb-add/1/a\",\".lb-add/2/c\",\"/d dir/\"]"
        );
        // Nothing fetches a URL now but the ONBUILD line, at its number.
        assert!(remote_adds(&rewritten).unwrap().is_empty());
        assert_eq!(urls(&rewritten), ["8:http://example.com/y"]);
        // CRLF files keep their line ends.
        let crlf = "FROM a\r\nADD http://example.com/x /x\r\nRUN true\r\n";
        let adds = remote_adds(crlf).unwrap();
        let out = rewrite(crlf, &adds, &[vec![".lb-add/0/x".into()]]);
        assert_eq!(
            out,
            "FROM a\r\nCOPY [\".lb-add/0/x\",\"/x\"]\r\nRUN true\r\n"
        );
        // A URL and a local source on one line cannot become one COPY.
        let e = remote_adds("FROM a\nADD http://example.com/x local.tar /d/\n").unwrap_err();
        assert!(
            e.contains("Dockerfile line 2") && e.contains("own ADD"),
            "{e}"
        );
        // A source from a variable the file does not set: confine refuses it.
        assert!(remote_adds("FROM a\nADD $URL /x\n").unwrap().is_empty());
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact("ADD https://u:p@h.example/x?a=b@c /x"),
            "ADD https://***@h.example/x?a=b@c /x"
        );
        assert_eq!(
            redact("http://h/x and ftp://a@b"),
            "http://h/x and ftp://***@b"
        );
        let f = parse("FROM a\nADD http://me:secret@10.0.0.1/x /x\n").unwrap();
        assert!(!f[1].instruction.contains("secret"), "{}", f[1].instruction);
    }

    async fn store() -> (tempfile::TempDir, lb_store::embedded::EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = lb_store::embedded::EmbeddedStore::open_dir(&dir.path().join("s"))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_bases_triggers_are_checked() {
        let (_dir, store) = store().await;
        let keys = Keys::new("/lb");
        let base = Base {
            line: 3,
            instruction: "FROM evil/base".into(),
            image: "evil/base".into(),
        };
        let check = |triggers: &[&str]| {
            let triggers: Vec<String> = triggers.iter().map(|t| t.to_string()).collect();
            let (store, keys, base) = (&store, &keys, &base);
            async move { confine_triggers(store, keys, "P1", REG, base, &triggers).await }
        };
        // Harmless triggers pass.
        assert_eq!(
            check(&["RUN echo hi", "COPY . /app", "ADD local.tar /x"]).await,
            Ok(vec![])
        );
        for (trigger, expect) in [
            ("ADD http://127.0.0.1:2967/x /x", "fetches a URL"),
            ("ADD https://example.com/x /x", "fetches a URL"),
            ("add htt`p://127.0.0.1/x /x", "fetches a URL"),
            ("ADD $URL /x", "fetches a URL"),
            ("COPY --from=sha256:6192ab / /", "is an image id"),
            ("COPY --from=6192ab / /", "reads as an image id"),
            // (The project's record is checked first: none in this store.)
            (
                "COPY --from=127.0.0.1:5000/other/svc / /",
                "reaches an image that is refused",
            ),
            ("COPY --from=$IMG / /", "variable"),
        ] {
            let e = check(&[trigger]).await.unwrap_err();
            assert!(
                e.starts_with("Dockerfile line 3: FROM evil/base: the image's ONBUILD trigger"),
                "{e}"
            );
            assert!(e.contains(expect), "{trigger}: {e}");
        }
        let e = check(&["ADD http://u:pw@example.com/x /x"])
            .await
            .unwrap_err();
        assert!(!e.contains("pw"), "{e}");
    }

    #[tokio::test]
    async fn onbuild_add_of_a_url_is_refused() {
        let (_dir, store) = store().await;
        let keys = Keys::new("/lb");
        let e = confine(
            &store,
            &keys,
            "P1",
            REG,
            "FROM scratch\nONBUILD ADD http://93.184.215.14/x /x\n",
        )
        .await
        .unwrap_err();
        assert!(
            e.contains("Dockerfile line 2") && e.contains("ONBUILD ADD of a URL"),
            "{e}"
        );
        let c = confine(
            &store,
            &keys,
            "P1",
            REG,
            "FROM busybox AS a\nFROM a\nFROM scratch\nFROM other:1\n",
        )
        .await
        .unwrap();
        let bases: Vec<(usize, &str)> =
            c.bases.iter().map(|b| (b.line, b.image.as_str())).collect();
        assert_eq!(bases, [(1, "busybox"), (4, "other:1")]);
    }

    #[tokio::test]
    async fn urls_to_local_addresses_are_refused() {
        for url in [
            "http://127.0.0.1:8080/x",
            "http://localhost/x",
            "https://user@[::1]:443/x",
            "http://169.254.169.254/latest/meta-data",
            "http://%31%32%37.0.0.1/x",
            "http://2130706433/x",
            "http://127.1/x",
            "http://10.0.0.1./x",
        ] {
            let e = check_url(url).await.unwrap_err();
            assert!(e.contains("may not fetch"), "{url}: {e}");
        }
        let e = check_url("http://\u{0}/x").await.unwrap_err();
        assert!(e.contains("variable"), "{e}");
        let e = check_url("\u{0}").await.unwrap_err();
        assert!(e.contains("variable"), "{e}");
        let e = check_url("http://127.0.0.1\\@example.com/")
            .await
            .unwrap_err();
        assert!(e.contains("well-formed"), "{e}");
        // A public address is let through (no resolving needed).
        check_url("http://93.184.215.14/x").await.unwrap();
    }
}
