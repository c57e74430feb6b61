//! `lbc deploys SERVICE`: a service's deploy history (each new generation:
//! a build's, a rollback, a spec change), newest first, with the live one
//! and the one coming marked; and the reading of those records that `lbc
//! status` and `lbc deploy` share.

use lb_model::views::{List, ServiceView};
use lb_model::{Deploy, DeployOutcome};
use serde_json::Value;

use crate::client::typed;
use crate::error::Result;
use crate::output::{age, word, Shown, Table};
use crate::session::Session;

/// The generations of the live deploy (the newest rolled out) and of the
/// one coming (a newer one in progress or halted): the service's
/// `status.live` and `status.coming`, else worked out from the records.
pub fn live_and_coming(service: &ServiceView, deploys: &[Deploy]) -> (Option<u64>, Option<u64>) {
    let status = &service.status;
    if status.live.is_some() || status.coming.is_some() {
        return (
            status.live.as_ref().map(|d| d.generation),
            status.coming.as_ref().map(|d| d.generation),
        );
    }
    let live = deploys
        .iter()
        .filter(|d| d.outcome == DeployOutcome::RolledOut)
        .map(|d| d.generation)
        .max();
    let coming = deploys
        .iter()
        .filter(|d| matches!(d.outcome, DeployOutcome::InProgress | DeployOutcome::Halted))
        .filter(|d| live.is_none_or(|l| d.generation > l))
        .map(|d| d.generation)
        .max();
    (live, coming)
}

/// "rolled_out", "halted: replica ab12cd exited with code 3", "superseded".
pub fn outcome_words(deploy: &Deploy) -> String {
    let outcome = word(&deploy.outcome);
    if deploy.reason.is_empty() || deploy.outcome == DeployOutcome::RolledOut {
        outcome
    } else {
        format!("{outcome}: {}", crate::client::one_line(&deploy.reason))
    }
}

/// "generation 3 (build #2, by alice)".
pub fn named(deploy: &Deploy) -> String {
    format!(
        "generation {} ({}, by {})",
        deploy.generation, deploy.cause, deploy.by
    )
}

/// The outcome's word, in the colours of `paint_state` on a terminal.
fn paint_outcome(outcome: DeployOutcome, color: bool) -> String {
    let text = word(&outcome);
    let code = match outcome {
        DeployOutcome::RolledOut => "32",
        DeployOutcome::Halted => "31",
        DeployOutcome::InProgress => "33",
        DeployOutcome::Superseded => return text,
    };
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text
    }
}

fn ago(t: lb_model::Timestamp) -> String {
    match age(t) {
        a if a.is_empty() => a,
        a => format!("{a} ago"),
    }
}

/// Runs `lbc deploys SERVICE`.
pub async fn list(session: &mut Session, service: &str) -> Result<()> {
    let path = session.service_path(service)?;
    let client = session.client()?;
    let view: ServiceView = typed(&client.get(&path).await?)?;
    let mut value = client.get(&format!("{path}/deploys")).await?;
    let items = typed::<List<Deploy>>(&value)?.items;
    let (live, coming) = live_and_coming(&view, &items);
    let color = session.out.color;
    let table = Table {
        headers: vec![
            "GEN", "NOW", "OUTCOME", "CAUSE", "BY", "STARTED", "FINISHED", "REASON",
        ],
        rows: items
            .iter()
            .map(|d| {
                let now = if Some(d.generation) == live {
                    "live"
                } else if Some(d.generation) == coming {
                    "coming"
                } else {
                    ""
                };
                vec![
                    d.generation.to_string(),
                    now.to_owned(),
                    paint_outcome(d.outcome, color),
                    d.cause.clone(),
                    d.by.clone(),
                    ago(d.started),
                    d.finished.map(ago).unwrap_or_default(),
                    crate::client::one_line(&d.reason),
                ]
            })
            .collect(),
    };
    if let Value::Object(map) = &mut value {
        map.insert("live".into(), live.into());
        map.insert("coming".into(), coming.into());
    }
    let ids = items.iter().map(|d| d.generation.to_string()).collect();
    session.out.show(Shown::List { value, table, ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(generation: u64, outcome: DeployOutcome, reason: &str) -> Deploy {
        let mut d = Deploy::start(generation, None, "spec change", "alice", 10);
        d.outcome = outcome;
        d.reason = reason.into();
        d
    }

    #[test]
    fn live_and_coming_from_the_records() {
        use DeployOutcome::*;
        let view: ServiceView =
            serde_json::from_value(serde_json::json!({"spec": {"name": "web", "image": "x"}}))
                .unwrap();
        let list = [
            deploy(4, Halted, "rollout halted: replica r exited with code 3"),
            deploy(3, Superseded, ""),
            deploy(2, RolledOut, ""),
            deploy(1, RolledOut, ""),
        ];
        assert_eq!(live_and_coming(&view, &list), (Some(2), Some(4)));
        assert_eq!(live_and_coming(&view, &list[2..]), (Some(2), None));
        assert_eq!(
            outcome_words(&list[0]),
            "halted: rollout halted: replica r exited with code 3"
        );
        assert_eq!(outcome_words(&list[2]), "rolled_out");
        assert_eq!(named(&list[1]), "generation 3 (spec change, by alice)");
    }
}
