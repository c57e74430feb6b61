//! `lbc quota [USER]` and `lbc quota set USER --max-...` (admin): a user's
//! limits beside what the user holds (`GET|PUT /users/{user}/quota`).

use lb_model::Quota;
use reqwest::Method;
use serde_json::Value;

use crate::args::{QuotaArgs, QuotaCmd, QuotaSet};
use crate::client::{segment, typed};
use crate::error::{Error, Result};
use crate::output::Shown;
use crate::session::Session;

/// A limit as typed: a number, or `unlimited` (`none`) to lift it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Max(pub Option<u64>);

fn unlimited(s: &str) -> bool {
    matches!(s.trim().to_ascii_lowercase().as_str(), "unlimited" | "none")
}

/// A count: `10`, or `unlimited`.
pub fn parse_count(s: &str) -> std::result::Result<Max, String> {
    if unlimited(s) {
        return Ok(Max(None));
    }
    s.trim()
        .parse::<u64>()
        .map(|n| Max(Some(n)))
        .map_err(|_| format!("{s:?} is not a count (a whole number, or unlimited)"))
}

/// Memory in MiB: `512` (MiB), a size (`2GiB`), or `unlimited`.
pub fn parse_mib(s: &str) -> std::result::Result<Max, String> {
    if unlimited(s) {
        return Ok(Max(None));
    }
    if let Ok(mib) = s.trim().parse::<u64>() {
        return Ok(Max(Some(mib)));
    }
    lb_model::parse_bytes(s).map(|b| Max(Some(b >> 20)))
}

/// Bytes: a size (`10GiB`, `1048576`), or `unlimited`.
pub fn parse_size(s: &str) -> std::result::Result<Max, String> {
    if unlimited(s) {
        return Ok(Max(None));
    }
    lb_model::parse_bytes(s).map(|b| Max(Some(b)))
}

/// The limits given on the command line over `quota` (the others kept);
/// `None` when no flag was given.
fn merged(mut quota: Quota, set: &QuotaSet) -> Option<Quota> {
    let mut changed = false;
    for (flag, slot) in [
        (set.max_projects, &mut quota.projects),
        (set.max_services, &mut quota.services),
        (set.max_replicas, &mut quota.replicas),
        (set.max_memory, &mut quota.memory),
        (set.max_queued_builds, &mut quota.queued_builds),
        (set.max_registry_bytes, &mut quota.registry_bytes),
    ] {
        if let Some(Max(max)) = flag {
            *slot = max;
            changed = true;
        }
    }
    changed.then_some(quota)
}

/// `used of max` (`unlimited` when there is none), in `unit`.
fn of(used: &Value, max: &Value, show: impl Fn(u64) -> String) -> String {
    let used = show(used.as_u64().unwrap_or(0));
    match max.as_u64() {
        Some(max) => format!("{used} of {}", show(max)),
        None => format!("{used} of unlimited"),
    }
}

fn bytes(b: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if b >= GIB {
        format!("{:.1} GiB", b as f64 / GIB as f64)
    } else if b >= MIB {
        format!("{:.1} MiB", b as f64 / MIB as f64)
    } else {
        format!("{b} B")
    }
}

/// Shows a `QuotaView` answer.
fn show(session: &Session, value: Value) -> Result<()> {
    let q = &value["quota"];
    let u = &value["usage"];
    let count = |n: u64| n.to_string();
    let fields = vec![
        (
            "User",
            value["username"].as_str().unwrap_or_default().to_owned(),
        ),
        ("Projects", of(&u["projects"], &q["projects"], count)),
        ("Services", of(&u["services"], &q["services"], count)),
        ("Replicas", of(&u["replicas"], &q["replicas"], count)),
        (
            "Memory",
            of(&u["memory"], &q["memory"], |m| format!("{m} MiB")),
        ),
        (
            "Queued builds",
            of(&u["queued_builds"], &q["queued_builds"], count),
        ),
        (
            "Registry",
            of(&u["registry_bytes"], &q["registry_bytes"], bytes),
        ),
    ];
    let id = value["user"].as_str().unwrap_or_default().to_owned();
    session.out.show(Shown::One { id, fields, value })
}

/// Runs `lbc quota ...`.
pub async fn run(session: &mut Session, args: QuotaArgs) -> Result<()> {
    let client = session.client()?;
    match args.set {
        None => {
            let user = match args.user {
                Some(user) => user,
                None => {
                    let me = client.get("/me").await?;
                    me["id"].as_str().unwrap_or_default().to_owned()
                }
            };
            let path = format!("/users/{}/quota", segment(&user));
            let value = client.get(&path).await?;
            show(session, value)
        }
        Some(QuotaCmd::Set(set)) => {
            let path = format!("/users/{}/quota", segment(&set.user));
            let current = client.get(&path).await?;
            let quota: Quota = typed(&current["quota"])?;
            let quota = merged(quota, &set).ok_or_else(|| {
                Error::usage(
                    "quota set: give at least one limit (--max-projects, --max-services, \
                     --max-replicas, --max-memory, --max-queued-builds, --max-registry-bytes)",
                )
            })?;
            let body = serde_json::to_value(&quota)
                .map_err(|e| Error::failed(format!("cannot encode the quota: {e}")))?;
            let value = client.call(Method::PUT, &path, Some(&body)).await?;
            show(session, value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse() {
        assert_eq!(parse_count("10"), Ok(Max(Some(10))));
        assert_eq!(parse_count("unlimited"), Ok(Max(None)));
        assert_eq!(parse_count("None"), Ok(Max(None)));
        assert!(parse_count("-1").is_err());
        assert!(parse_count("ten").is_err());
        assert_eq!(parse_mib("512"), Ok(Max(Some(512))));
        assert_eq!(parse_mib("2GiB"), Ok(Max(Some(2048))));
        assert!(parse_mib("lots").is_err());
        assert_eq!(parse_size("1MiB"), Ok(Max(Some(1 << 20))));
        assert_eq!(parse_size("unlimited"), Ok(Max(None)));
    }

    #[test]
    fn only_the_flags_given_change() {
        let set = QuotaSet {
            user: "ann".into(),
            max_projects: Some(Max(Some(2))),
            max_services: None,
            max_replicas: Some(Max(None)),
            max_memory: None,
            max_queued_builds: None,
            max_registry_bytes: None,
        };
        let before = Quota {
            replicas: Some(5),
            memory: Some(1024),
            ..Default::default()
        };
        let after = merged(before, &set).unwrap();
        assert_eq!(
            (after.projects, after.replicas, after.memory),
            (Some(2), None, Some(1024))
        );
        let nothing = QuotaSet {
            max_projects: None,
            max_replicas: None,
            ..set
        };
        assert!(merged(Quota::default(), &nothing).is_none());
    }

    #[test]
    fn usage_is_shown_against_the_limit() {
        let count = |n: u64| n.to_string();
        assert_eq!(of(&Value::from(1), &Value::from(10), count), "1 of 10");
        assert_eq!(of(&Value::from(3), &Value::Null, count), "3 of unlimited");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(12), "12 B");
    }
}
