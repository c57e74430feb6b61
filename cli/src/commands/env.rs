//! `lbc env ls | set | unset`: a service's environment variables. `ls`
//! prints the values as they are (the variables are the user's own; the
//! help says so). A change is a merge patch of the spec sent with
//! `If-Match` on the revision just read, so a concurrent change is never
//! overwritten: on a conflict the service is read again and the change tried
//! once more.

use std::collections::BTreeMap;

use lb_model::views::ServiceView;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::args::EnvCmd;
use crate::client::{typed, Client};
use crate::error::{code, Error, Result};
use crate::output::{Shown, Table};
use crate::session::Session;

/// Runs `lbc env ...`.
pub async fn run(session: &mut Session, cmd: EnvCmd) -> Result<()> {
    match cmd {
        EnvCmd::Ls { service } => {
            let path = session.service_path(&service)?;
            let value = session.client()?.get(&path).await?;
            let view: ServiceView = typed(&value)?;
            let env = view.spec.env;
            let table = Table {
                headers: vec!["KEY", "VALUE"],
                rows: env
                    .iter()
                    .map(|(k, v)| vec![k.clone(), v.clone()])
                    .collect(),
            };
            session.out.show(Shown::List {
                value: json!(env),
                table,
                ids: env.keys().cloned().collect(),
            })
        }
        EnvCmd::Set { service, pairs } => {
            let mut changes = BTreeMap::new();
            for pair in &pairs {
                let (key, value) = parse_pair(pair)?;
                changes.insert(key, Some(value));
            }
            change(session, &service, changes).await
        }
        EnvCmd::Unset { service, keys } => {
            let mut changes = BTreeMap::new();
            for key in keys {
                if key.is_empty() || key.contains('=') {
                    return Err(Error::usage(format!(
                        "{key:?} is not a variable name: give KEY (without =VALUE)"
                    )));
                }
                changes.insert(key, None);
            }
            change(session, &service, changes).await
        }
    }
}

/// `KEY=VALUE` (the value may hold `=` and be empty).
fn parse_pair(pair: &str) -> Result<(String, String)> {
    match pair.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(Error::usage(format!("{pair:?} is invalid: give KEY=VALUE"))),
    }
}

/// The merge patch of `env` that makes `changes` (`None` removes) on
/// `current`, and the words saying what it does; `None` when nothing would
/// change.
fn patch_of(
    current: &BTreeMap<String, String>,
    changes: &BTreeMap<String, Option<String>>,
) -> (Option<Value>, Vec<String>) {
    let mut patch = Map::new();
    let mut said = Vec::new();
    for (key, wanted) in changes {
        match (current.get(key), wanted) {
            (Some(old), Some(new)) if old == new => said.push(format!("{key} unchanged")),
            (_, Some(new)) => {
                patch.insert(key.clone(), Value::String(new.clone()));
                said.push(format!("{key} set"));
            }
            (Some(_), None) => {
                patch.insert(key.clone(), Value::Null);
                said.push(format!("{key} removed"));
            }
            (None, None) => said.push(format!("{key} was not set")),
        }
    }
    let patch = (!patch.is_empty()).then(|| json!({ "env": patch }));
    (patch, said)
}

/// Reads the service, patches its env with `If-Match`, and on a conflict
/// does both once more.
async fn change(
    session: &mut Session,
    service: &str,
    changes: BTreeMap<String, Option<String>>,
) -> Result<()> {
    let path = session.service_path(service)?;
    let client = session.client()?;
    let mut attempt = 1;
    loop {
        match try_change(&client, &path, &changes).await? {
            Outcome::Done(value, said) => {
                let generation = typed::<ServiceView>(&value)?.status.generation;
                return session.out.show(Shown::Message {
                    text: format!(
                        "Service {service:?}: {}; its replicas are replaced with the new \
                         environment (generation {generation}).",
                        said.join(", ")
                    ),
                    value,
                });
            }
            Outcome::Unchanged(value, said) => {
                return session.out.show(Shown::Message {
                    text: format!("Service {service:?}: {}; nothing changed.", said.join(", ")),
                    value,
                });
            }
            Outcome::Conflict(e) if attempt == 1 => {
                attempt += 1;
                session
                    .out
                    .note(&format!("({e}: reading service {service:?} again)"));
            }
            Outcome::Conflict(e) => return Err(e),
        }
    }
}

enum Outcome {
    Done(Value, Vec<String>),
    Unchanged(Value, Vec<String>),
    Conflict(Error),
}

async fn try_change(
    client: &Client,
    path: &str,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<Outcome> {
    let value = client.get(path).await?;
    let view: ServiceView = typed(&value)?;
    let (patch, said) = patch_of(&view.spec.env, changes);
    let Some(patch) = patch else {
        return Ok(Outcome::Unchanged(value, said));
    };
    match client
        .call_if_match(Method::PATCH, path, &patch, view.revision)
        .await
    {
        Ok(value) => Ok(Outcome::Done(value, said)),
        Err(e) if e.exit_code() == code::CONFLICT => Ok(Outcome::Conflict(e)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        assert_eq!(parse_pair("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert_eq!(parse_pair("A=").unwrap(), ("A".into(), "".into()));
        assert!(parse_pair("=x").is_err());
        assert!(parse_pair("A").is_err());
    }

    #[test]
    fn patches() {
        let current: BTreeMap<String, String> =
            [("A".into(), "1".into()), ("B".into(), "2".into())].into();
        let changes: BTreeMap<String, Option<String>> = [
            ("A".into(), Some("1".into())),
            ("B".into(), None),
            ("C".into(), Some("3".into())),
            ("D".into(), None),
        ]
        .into();
        let (patch, said) = patch_of(&current, &changes);
        assert_eq!(patch, Some(json!({"env": {"B": null, "C": "3"}})));
        assert_eq!(said, ["A unchanged", "B removed", "C set", "D was not set"]);
        let (patch, said) = patch_of(&current, &[("A".into(), Some("1".into()))].into());
        assert_eq!(patch, None);
        assert_eq!(said, ["A unchanged"]);
    }
}
