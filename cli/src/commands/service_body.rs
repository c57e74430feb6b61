//! The JSON bodies `lbc service create` and `lbc service update` send,
//! from their flags: the new service's fields, or a JSON merge patch of the
//! spec (`KEY-` removes an env variable or node-selector label).

use lb_model::{Port, Volume};
use serde_json::{json, Map, Value};

use crate::args::ServiceFlags;
use crate::error::{Error, Result};

/// MiB from `256`, `256M`, `256Mi`, `256MiB`, `1G`, `1Gi`, `1GiB`.
pub fn parse_memory(s: &str) -> Result<u64> {
    let t = s.trim();
    let bad = || {
        Error::usage(format!(
            "memory {s:?} is invalid: give MiB as 256, 256M or 1G"
        ))
    };
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "m" | "mi" | "mib" | "mb" => 1,
        "g" | "gi" | "gib" | "gb" => 1024,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(bad)
}

/// A port from `CONTAINER`, `HOST:CONTAINER`, either with `/tcp` or `/udp`:
/// lb-model's parser, the one the API and apply documents use.
pub fn parse_port(s: &str) -> Result<Port> {
    s.parse::<Port>().map_err(|e| Error::usage(e.to_string()))
}

/// `KEY=VALUE` (or `KEY-` when removal is allowed: value `None`).
fn parse_pair(what: &str, s: &str, removal: bool) -> Result<(String, Option<String>)> {
    if removal {
        if let Some(key) = s.strip_suffix('-').filter(|k| !k.contains('=')) {
            if !key.is_empty() {
                return Ok((key.to_owned(), None));
            }
        }
    }
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), Some(v.to_owned()))),
        _ => Err(Error::usage(format!(
            "{what} {s:?} is invalid: give KEY=VALUE{}",
            if removal {
                " (or KEY- to remove it)"
            } else {
                ""
            }
        ))),
    }
}

fn parse_volume(s: &str) -> Result<Volume> {
    match s.split_once(':') {
        Some((name, path)) if !name.is_empty() && path.starts_with('/') => Ok(Volume {
            name: name.to_owned(),
            path: path.to_owned(),
        }),
        _ => Err(Error::usage(format!(
            "volume {s:?} is invalid: give NAME:/PATH"
        ))),
    }
}

fn parse_template(s: &str) -> Result<(String, String)> {
    match s.split_once('/') {
        Some((l, f)) if !l.is_empty() && !f.is_empty() && !f.contains('/') => {
            Ok((l.to_owned(), f.to_owned()))
        }
        _ => Err(Error::usage(format!(
            "template {s:?} is invalid: give LANG/FRAMEWORK, e.g. python/flask"
        ))),
    }
}

fn pairs(what: &str, items: &[String], removal: bool) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for item in items {
        let (k, v) = parse_pair(what, item, removal)?;
        out.insert(k, v.map_or(Value::Null, Value::String));
    }
    Ok(out)
}

/// The fields both create and update set from flags (a JSON merge patch).
fn common(flags: &ServiceFlags, removal: bool) -> Result<Map<String, Value>> {
    let mut body = Map::new();
    if let Some(image) = &flags.image {
        body.insert("image".into(), json!(image));
    }
    if let Some(d) = &flags.description {
        body.insert("description".into(), json!(d));
    }
    if let Some(r) = flags.replicas {
        body.insert("replicas".into(), json!(r));
    }
    if let Some(m) = &flags.memory {
        body.insert("memory".into(), json!(parse_memory(m)?));
    }
    if let Some(cpu) = flags.cpu {
        if !(cpu.is_finite() && cpu > 0.0) {
            return Err(Error::usage(format!(
                "cpu {cpu} is invalid: give more than 0"
            )));
        }
        body.insert("cpu".into(), json!(cpu));
    }
    if let Some(t) = flags.stop_timeout {
        body.insert("stop_timeout".into(), json!(t));
    }
    if !flags.ports.is_empty() {
        let ports = flags
            .ports
            .iter()
            .map(|p| parse_port(p))
            .collect::<Result<Vec<_>>>()?;
        body.insert("ports".into(), json!(ports));
    }
    if !flags.env.is_empty() {
        body.insert(
            "env".into(),
            Value::Object(pairs("env", &flags.env, removal)?),
        );
    }
    if !flags.volumes.is_empty() {
        let volumes = flags
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<Result<Vec<_>>>()?;
        body.insert("volumes".into(), json!(volumes));
    }
    if !flags.node_selector.is_empty() {
        body.insert(
            "node_selector".into(),
            Value::Object(pairs("node selector", &flags.node_selector, removal)?),
        );
    }
    if !flags.domains.is_empty() {
        body.insert("domains".into(), json!(flags.domains));
    }
    if let Some(port) = flags.ingress_port {
        if port == 0 {
            return Err(Error::usage("ingress port 0 is invalid: give 1 to 65535"));
        }
        body.insert("ingress_port".into(), json!(port));
    }
    if let Some(a) = flags.autodeploy {
        body.insert("autodeploy".into(), json!(a));
    }
    if !flags.command.is_empty() {
        body.insert("command".into(), json!(flags.command));
    }
    let mut build = Map::new();
    if let Some(d) = &flags.dockerfile {
        build.insert("kind".into(), json!("dockerfile"));
        build.insert("dockerfile".into(), json!(d));
    }
    if let Some(t) = &flags.template {
        if flags.dockerfile.is_some() {
            return Err(Error::usage(
                "--dockerfile and --template exclude each other",
            ));
        }
        let (language, framework) = parse_template(t)?;
        build.insert("kind".into(), json!("template"));
        build.insert("language".into(), json!(language));
        build.insert("framework".into(), json!(framework));
    }
    let mut source = Map::new();
    if let Some(file) = &flags.compose {
        if !build.is_empty() {
            return Err(Error::usage(
                "--compose excludes --dockerfile and --template: a stack builds no image of its own",
            ));
        }
        source.insert("compose".into(), json!(file));
    }
    if let Some(url) = &flags.repo {
        source.insert("url".into(), json!(url));
    }
    if let Some(b) = &flags.branch {
        source.insert("branch".into(), json!(b));
    }
    if !build.is_empty() {
        source.insert("build".into(), Value::Object(build));
    }
    if !source.is_empty() {
        body.insert("source".into(), Value::Object(source));
    }
    Ok(body)
}

pub(super) fn create_body(name: &str, flags: &ServiceFlags) -> Result<Value> {
    if flags.image.is_none() && flags.repo.is_none() {
        return Err(Error::usage("a service needs --image IMAGE or --repo URL"));
    }
    if flags.repo.is_none()
        && (flags.branch.is_some()
            || flags.dockerfile.is_some()
            || flags.template.is_some()
            || flags.compose.is_some())
    {
        return Err(Error::usage(
            "--branch, --dockerfile, --template and --compose need --repo URL",
        ));
    }
    let mut body = common(flags, false)?;
    body.insert("name".into(), json!(name));
    // A stack runs nothing itself.
    if flags.compose.is_some() && flags.replicas.is_none() {
        body.insert("replicas".into(), json!(0));
    }
    Ok(Value::Object(body))
}

pub(super) fn update_patch(flags: &ServiceFlags) -> Result<Value> {
    let body = common(flags, true)?;
    if body.is_empty() {
        return Err(Error::usage(
            "nothing to change: pass at least one flag (see `lbc service update --help`)",
        ));
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory() {
        assert_eq!(parse_memory("256").unwrap(), 256);
        assert_eq!(parse_memory("256M").unwrap(), 256);
        assert_eq!(parse_memory("1Gi").unwrap(), 1024);
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("1T").is_err());
        assert!(parse_memory("").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(
            json!(parse_port("8080").unwrap()),
            json!({"container": 8080, "host": null, "protocol": "tcp"})
        );
        assert_eq!(
            json!(parse_port("80:8080/udp").unwrap()),
            json!({"container": 8080, "host": 80, "protocol": "udp"})
        );
        for bad in ["", "0", "x", "1:2:3", "70000", "80/sctp", ":80"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pairs_and_removal() {
        assert_eq!(
            parse_pair("env", "A=b=c", false).unwrap(),
            ("A".into(), Some("b=c".into()))
        );
        assert_eq!(parse_pair("env", "A-", true).unwrap(), ("A".into(), None));
        assert!(parse_pair("env", "A-", false).is_err());
        assert!(parse_pair("env", "=x", false).is_err());
    }
}
