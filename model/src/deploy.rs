//! A deploy: one new generation of a service on its way to its replicas,
//! kept as history at `.../services/<sid>/deploys/<generation>`.
//!
//! Whoever starts a generation (a spec change or rollback in the API, a
//! build's deploy in the builder) writes its record in the same transaction,
//! with what caused it and who, and marks the one before it `superseded` if
//! it had not settled. The scheduler settles the current one from what its
//! replicas do: `rolled_out` once every wanted replica of the generation
//! serves and no old one is left, `halted` when the rollout stops on a
//! failing replica. "Build succeeded" is the build's fact; "deployed" is
//! this record's.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Deploys kept per service; older records are dropped as new ones start.
pub const KEEP_DEPLOYS: u64 = 50;

/// How a deploy ended, or that it has not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Its replicas are still being replaced.
    #[default]
    InProgress,
    /// Every wanted replica runs this generation.
    RolledOut,
    /// The rollout stopped on a failing new replica (`reason` says which);
    /// the old replicas keep serving.
    Halted,
    /// A newer deploy started before this one settled.
    Superseded,
}

impl Outcome {
    /// Whether the deploy is over.
    pub fn settled(self) -> bool {
        self != Outcome::InProgress
    }
}

/// One deploy of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    /// The service generation it rolls out.
    pub generation: u64,
    /// The image the generation runs (none for a service not built yet).
    #[serde(default)]
    pub image: Option<String>,
    /// What started it: `created`, `spec change`, `rollback`, `build #3`.
    pub cause: String,
    /// Who or what: a user's name, `webhook`, `poll`, `apply`.
    pub by: String,
    /// When it started.
    pub started: Timestamp,
    /// When it settled.
    #[serde(default)]
    pub finished: Option<Timestamp>,
    /// How it ended.
    #[serde(default)]
    pub outcome: Outcome,
    /// Why it halted (or what superseded it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Deploy {
    /// A deploy of `generation` starting `now`.
    pub fn start(
        generation: u64,
        image: Option<String>,
        cause: impl Into<String>,
        by: impl Into<String>,
        now: Timestamp,
    ) -> Self {
        Deploy {
            generation,
            image,
            cause: cause.into(),
            by: by.into(),
            started: now,
            finished: None,
            outcome: Outcome::InProgress,
            reason: String::new(),
        }
    }

    /// This deploy settled as `outcome` at `now` (with `reason`).
    pub fn settle(&mut self, outcome: Outcome, reason: impl Into<String>, now: Timestamp) {
        self.outcome = outcome;
        self.reason = reason.into();
        self.finished = Some(now);
    }
}

/// How the scheduler reads a generation's rollout: `Some` outcome once it
/// settled. `running_current` counts the replicas of `generation` that
/// serve, `old` those of earlier generations still placed, `halted` the
/// rollout's halt reason if it stopped.
pub fn settles(
    wanted: u32,
    running_current: u32,
    old: u32,
    halted: Option<&str>,
) -> Option<(Outcome, String)> {
    if let Some(reason) = halted {
        return Some((Outcome::Halted, reason.to_owned()));
    }
    (running_current >= wanted && old == 0).then(|| (Outcome::RolledOut, String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_settles_when_every_wanted_replica_runs_it_and_no_old_one_is_left() {
        assert_eq!(settles(3, 2, 1, None), None, "one old replica left");
        assert_eq!(settles(3, 3, 1, None), None, "the old one not yet removed");
        assert_eq!(settles(3, 2, 0, None), None, "one new replica missing");
        assert_eq!(
            settles(3, 3, 0, None),
            Some((Outcome::RolledOut, String::new()))
        );
        assert_eq!(
            settles(0, 0, 0, None),
            Some((Outcome::RolledOut, String::new())),
            "scaled to 0: nothing to roll"
        );
        assert_eq!(
            settles(3, 1, 2, Some("rollout halted: replica R exited")),
            Some((Outcome::Halted, "rollout halted: replica R exited".into()))
        );
    }

    #[test]
    fn records_read_back_and_old_ones_parse() {
        let mut d = Deploy::start(4, Some("img@sha256:ab".into()), "build #2", "alice", 10);
        assert!(!d.outcome.settled());
        d.settle(Outcome::RolledOut, "", 12);
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains("\"outcome\":\"rolled_out\""), "{json}");
        assert_eq!(serde_json::from_str::<Deploy>(&json).unwrap(), d);
        let minimal: Deploy = serde_json::from_str(
            r#"{"generation": 1, "cause": "created", "by": "bob", "started": 1}"#,
        )
        .unwrap();
        assert_eq!(minimal.outcome, Outcome::InProgress);
    }
}
