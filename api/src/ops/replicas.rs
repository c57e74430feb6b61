//! A service's replicas: their placements and statuses, the list shown to
//! users, which replica a log or exec request goes to, and the one-off
//! requests (last log lines, a command run to its end) asked of its node.

use std::time::Duration;

use lb_model::keys::Parsed;
use lb_model::protocol::{ExecOutput, FromNode, ToNode};
use lb_model::{Replica, ReplicaState, ReplicaStatus};
use lb_store::StoreExt;

use super::resolve::{self, LoadedService};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::decode;
use crate::models::{ReplicaPort, ReplicaView};

/// Placements and statuses of a service's replicas, in id order.
pub async fn of(ctx: &Ctx, pid: &str, sid: &str) -> Result<Vec<(Replica, Option<ReplicaStatus>)>> {
    let (kvs, _) = ctx.store.list(&ctx.keys.replicas_prefix(pid, sid)).await?;
    let mut out: Vec<(Replica, Option<ReplicaStatus>)> = Vec::new();
    for kv in &kvs {
        match ctx.keys.parse(&kv.key) {
            Some(Parsed::Replica { .. }) => out.push((decode(kv)?, None)),
            Some(Parsed::ReplicaStatus { rid, .. }) => {
                // The status key sorts right after its placement.
                if let Some(last) = out.last_mut().filter(|(r, _)| r.id == rid) {
                    last.1 = Some(decode(kv)?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A service's replicas as shown: the ports a replica's node bound, else
/// those the spec asks for; the node's message, else the scheduler's reason.
pub async fn list(ctx: &Ctx, loaded: &LoadedService) -> Result<Vec<ReplicaView>> {
    Ok(of(ctx, &loaded.pid, &loaded.meta.id)
        .await?
        .into_iter()
        .map(|(replica, status)| view(loaded, replica, status.unwrap_or_default()))
        .collect())
}

fn view(loaded: &LoadedService, replica: Replica, status: ReplicaStatus) -> ReplicaView {
    let ports = if status.ports.is_empty() {
        loaded
            .spec
            .ports
            .iter()
            .map(|p| ReplicaPort {
                container: p.container,
                host: p.host,
            })
            .collect()
    } else {
        status
            .ports
            .iter()
            .map(|p| ReplicaPort {
                container: p.container,
                host: Some(p.host),
            })
            .collect()
    };
    let message = if status.message.is_empty() {
        replica.reason.clone().unwrap_or_default()
    } else {
        status.message
    };
    ReplicaView {
        id: replica.id,
        node: replica.node,
        state: status.state,
        image: replica.image,
        generation: replica.generation,
        ports,
        restarts: status.restarts,
        message,
        health: status.health,
        health_message: status.health_message,
        exit_code: status.exit_code,
        oom_killed: status.oom_killed,
    }
}

/// A command to run: 1 to 1000 arguments, no NUL bytes.
pub fn check_command(command: &[String]) -> Result<()> {
    if command.is_empty() || command.len() > 1000 {
        return Err(ApiError::invalid(
            "command",
            "must hold 1 to 1000 arguments",
        ));
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid("command", "an argument holds a NUL byte"));
    }
    Ok(())
}

/// `tail` of a logs request, checked: default 100, at most 10,000.
pub fn check_tail(tail: Option<u32>) -> Result<u32> {
    let tail = tail.unwrap_or(100);
    if tail > 10_000 {
        return Err(ApiError::invalid(
            "tail",
            format!("{tail} is more than 10000"),
        ));
    }
    Ok(tail)
}

/// The replica a stream goes to: the one named (of this service), or the
/// first running one. Answers it with its node.
pub async fn target(
    ctx: &Ctx,
    loaded: &LoadedService,
    replica: Option<&str>,
) -> Result<(String, String)> {
    let replicas = of(ctx, &loaded.pid, &loaded.meta.id).await?;
    let chosen = match replica {
        Some(rid) => replicas.iter().find(|(r, _)| r.id == rid).ok_or_else(|| {
            ApiError::not_found(format!(
                "replica {rid:?} not found in service {:?}",
                loaded.meta.name
            ))
            .with_field("replica")
        })?,
        None => replicas
            .iter()
            .find(|(_, s)| s.as_ref().is_some_and(|s| s.state == ReplicaState::Running))
            .ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "service {:?} has no running replica",
                    loaded.meta.name
                ))
            })?,
    };
    let node = chosen.0.node.clone().ok_or_else(|| {
        ApiError::unprocessable(format!(
            "replica {:?} is not placed on a node yet",
            chosen.0.id
        ))
    })?;
    Ok((chosen.0.id.clone(), node))
}

/// The replica a logs request reads, with how its container last ended
/// (the `X-Lb-*` headers of `GET .../logs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSource {
    /// The replica id.
    pub replica: String,
    /// Its node.
    pub node: String,
    /// Its state as its node last reported it.
    pub state: ReplicaState,
    /// Its container's last exit code, when it has exited.
    pub exit_code: Option<i64>,
    /// Whether that exit was an out-of-memory kill.
    pub oom_killed: bool,
    /// Restarts so far.
    pub restarts: u32,
}

impl LogSource {
    /// The response headers that say whose output it is and how that
    /// replica's container last ended: `X-Lb-Replica`,
    /// `X-Lb-Replica-State`, `X-Lb-Restarts`, and when it has exited,
    /// `X-Lb-Exit-Code` and `X-Lb-Oom-Killed`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let state = serde_json::to_value(self.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut out = vec![
            ("x-lb-replica", self.replica.clone()),
            ("x-lb-replica-state", state),
            ("x-lb-restarts", self.restarts.to_string()),
        ];
        if let Some(code) = self.exit_code {
            out.push(("x-lb-exit-code", code.to_string()));
            out.push(("x-lb-oom-killed", self.oom_killed.to_string()));
        }
        out
    }
}

/// Which replica a logs request without `replica` reads: the first running
/// one, else the one whose container ended most recently (a crashed or
/// exited replica's last output); `None` when no replica has a container.
fn log_choice(replicas: &[(Replica, Option<ReplicaStatus>)]) -> Option<usize> {
    let running = replicas.iter().position(|(r, s)| {
        r.node.is_some() && s.as_ref().is_some_and(|s| s.state == ReplicaState::Running)
    });
    running.or_else(|| {
        replicas
            .iter()
            .enumerate()
            .filter(|(_, (r, _))| r.node.is_some())
            .filter_map(|(i, (_, s))| s.as_ref().map(|s| (i, s)))
            .filter(|(_, s)| s.container_id.is_some() || s.state == ReplicaState::Exited)
            // The latest report; the first of equals.
            .max_by_key(|(i, s)| (s.updated, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
    })
}

/// The replica a logs request reads: the one named (of this service), else
/// the first running one, else the one whose container ended last (its
/// last output, with its exit code in [`LogSource::headers`]). 422 only
/// when the service has no replica, or none with a container yet.
pub async fn log_source(
    ctx: &Ctx,
    loaded: &LoadedService,
    replica: Option<&str>,
) -> Result<LogSource> {
    let replicas = of(ctx, &loaded.pid, &loaded.meta.id).await?;
    let chosen = match replica {
        Some(rid) => replicas.iter().find(|(r, _)| r.id == rid).ok_or_else(|| {
            ApiError::not_found(format!(
                "replica {rid:?} not found in service {:?}",
                loaded.meta.name
            ))
            .with_field("replica")
        })?,
        None => match log_choice(&replicas) {
            Some(i) => &replicas[i],
            None if replicas.is_empty() => {
                return Err(ApiError::unprocessable(format!(
                    "service {:?} has no replica",
                    loaded.meta.name
                )))
            }
            None => {
                let (r, s) = &replicas[0];
                let why = s
                    .as_ref()
                    .map(|s| s.message.clone())
                    .filter(|m| !m.is_empty())
                    .or_else(|| r.reason.clone())
                    .unwrap_or_else(|| "not started yet".to_owned());
                return Err(ApiError::unprocessable(format!(
                    "service {:?} has no replica with output yet (replica {:?}: {why})",
                    loaded.meta.name, r.id
                )));
            }
        },
    };
    let node = chosen.0.node.clone().ok_or_else(|| {
        ApiError::unprocessable(format!(
            "replica {:?} is not placed on a node yet",
            chosen.0.id
        ))
    })?;
    let status = chosen.1.clone().unwrap_or_default();
    Ok(LogSource {
        replica: chosen.0.id.clone(),
        node,
        state: status.state,
        exit_code: status.exit_code,
        oom_killed: status.oom_killed,
        restarts: status.restarts,
    })
}

/// The last `tail` lines of a replica's output, asked of its node.
pub async fn logs(
    ctx: &Ctx,
    node: &str,
    replica: &str,
    tail: u32,
    timestamps: bool,
) -> Result<String> {
    let make = |request| ToNode::Logs {
        request,
        replica: replica.to_owned(),
        tail,
        timestamps,
    };
    match ctx.streams.ask(node, make, Duration::from_secs(30)).await? {
        FromNode::Logs {
            result: Ok(text), ..
        } => Ok(text),
        FromNode::Logs {
            result: Err(message),
            ..
        } => Err(ApiError::unprocessable(message)),
        _ => Err(ApiError::internal(
            "a node answered logs with something else",
        )),
    }
}

/// Runs a command in a replica of a service the caller may see (the one
/// named, else the first running one) to its end, within `timeout` seconds
/// (1 to 300); answers its exit code and output.
pub async fn exec(
    ctx: &Ctx,
    caller: &Caller,
    (p, s): (&str, &str),
    replica: Option<&str>,
    command: Vec<String>,
    timeout: Option<u64>,
) -> Result<ExecOutput> {
    check_command(&command)?;
    let timeout = timeout.unwrap_or(30);
    if !(1..=300).contains(&timeout) {
        return Err(ApiError::invalid(
            "timeout",
            format!("{timeout} s is out of range (1–300)"),
        ));
    }
    let loaded = resolve::service(ctx, caller, p, s).await?;
    let (replica, node) = target(ctx, &loaded, replica).await?;
    let make = |request| ToNode::Exec {
        request,
        replica: replica.clone(),
        command,
        timeout,
    };
    let limit = Duration::from_secs(timeout + 5);
    match ctx.streams.ask(&node, make, limit).await? {
        FromNode::Exec {
            result: Ok(output), ..
        } => Ok(output),
        FromNode::Exec {
            result: Err(message),
            ..
        } => Err(ApiError::unprocessable(message)),
        _ => Err(ApiError::internal(
            "a node answered exec with something else",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(
        id: &str,
        state: Option<ReplicaState>,
        updated: i64,
    ) -> (Replica, Option<ReplicaStatus>) {
        let replica = Replica {
            id: id.into(),
            project: "p".into(),
            service: "s".into(),
            node: Some("n1".into()),
            image: "img".into(),
            generation: 1,
            reason: None,
            created: 1,
        };
        let status = state.map(|state| ReplicaStatus {
            state,
            container_id: (state != ReplicaState::Pending).then(|| format!("c-{id}")),
            exit_code: matches!(state, ReplicaState::Exited).then_some(3),
            updated,
            ..Default::default()
        });
        (replica, status)
    }

    #[test]
    fn logs_read_a_running_replica_else_the_last_ended_one() {
        use ReplicaState::*;
        let mut list = vec![
            placed("a", Some(Exited), 50),
            placed("b", Some(Running), 10),
            placed("c", Some(Exited), 90),
        ];
        assert_eq!(log_choice(&list), Some(1), "a running one first");
        list[1] = placed("b", Some(Exited), 10);
        assert_eq!(log_choice(&list), Some(2), "else the latest exit");
        list[2] = placed("c", Some(Pending), 99);
        list[2].1.as_mut().unwrap().container_id = None;
        assert_eq!(log_choice(&list), Some(0), "a pending one has no output");
        let mut unplaced = placed("d", None, 0);
        unplaced.0.node = None;
        assert_eq!(log_choice(&[unplaced]), None);
        assert_eq!(log_choice(&[]), None);
    }

    #[test]
    fn commands_and_tails_are_bounded() {
        assert!(check_command(&["ls".into()]).is_ok());
        assert_eq!(
            check_command(&[]).unwrap_err().field.as_deref(),
            Some("command")
        );
        assert!(check_command(&["a\0b".into()]).is_err());
        assert_eq!(check_tail(None).unwrap(), 100);
        assert_eq!(check_tail(Some(10_000)).unwrap(), 10_000);
        assert_eq!(
            check_tail(Some(10_001)).unwrap_err().field.as_deref(),
            Some("tail")
        );
    }
}
