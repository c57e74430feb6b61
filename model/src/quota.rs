//! A user's quota: the limits an admin sets on what one user may hold
//! (projects, services, replicas, memory, queued builds, registry bytes).
//! Stored at `/lb/quotas/<uid>`; a user without a record, and a limit left
//! out (`null`), is unlimited. The API refuses a change that would pass a
//! limit with 403 naming it; the registry refuses a push that would.

use serde::{Deserialize, Serialize};

use crate::{Result, ValidationError};

/// The limits of one user; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Projects the user owns.
    #[serde(default)]
    pub projects: Option<u64>,
    /// Services in all of the user's projects.
    #[serde(default)]
    pub services: Option<u64>,
    /// Replicas asked for by all of the user's services (paused ones too).
    #[serde(default)]
    pub replicas: Option<u64>,
    /// MiB: the sum over the user's services of replicas × memory limit.
    #[serde(default)]
    pub memory: Option<u64>,
    /// Builds of the user's services waiting in the queue.
    #[serde(default)]
    pub queued_builds: Option<u64>,
    /// Bytes of blobs in the user's projects' registry repositories.
    #[serde(default)]
    pub registry_bytes: Option<u64>,
}

/// One limit of a [`Quota`], as named in errors and bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `projects`.
    Projects,
    /// `services`.
    Services,
    /// `replicas`.
    Replicas,
    /// `memory`.
    Memory,
    /// `queued_builds`.
    QueuedBuilds,
    /// `registry_bytes`.
    RegistryBytes,
}

impl Limit {
    /// The field's name.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Projects => "projects",
            Limit::Services => "services",
            Limit::Replicas => "replicas",
            Limit::Memory => "memory",
            Limit::QueuedBuilds => "queued_builds",
            Limit::RegistryBytes => "registry_bytes",
        }
    }

    /// What it counts, for messages.
    fn unit(self) -> &'static str {
        match self {
            Limit::Memory => " MiB",
            Limit::RegistryBytes => " bytes",
            _ => "",
        }
    }
}

/// A limit a change would pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// Which limit.
    pub limit: Limit,
    /// Its value.
    pub max: u64,
    /// What the user would hold after the change.
    pub wanted: u64,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = self.limit.unit();
        write!(
            f,
            "quota exceeded: {} limit is {}{unit}, this would make {}{unit}",
            self.limit.name(),
            self.max,
            self.wanted
        )
    }
}

/// The largest value a limit may take (far beyond any real cluster, and
/// exact in a JSON number).
pub const MAX_LIMIT: u64 = 1 << 53;

impl Quota {
    /// The value of one limit.
    pub fn get(&self, limit: Limit) -> Option<u64> {
        match limit {
            Limit::Projects => self.projects,
            Limit::Services => self.services,
            Limit::Replicas => self.replicas,
            Limit::Memory => self.memory,
            Limit::QueuedBuilds => self.queued_builds,
            Limit::RegistryBytes => self.registry_bytes,
        }
    }

    /// `Err` when holding `wanted` would pass `limit`.
    pub fn check(&self, limit: Limit, wanted: u64) -> std::result::Result<(), Exceeded> {
        match self.get(limit) {
            Some(max) if wanted > max => Err(Exceeded { limit, max, wanted }),
            _ => Ok(()),
        }
    }

    /// Every limit at most [`MAX_LIMIT`].
    pub fn validate(&self) -> Result<()> {
        for limit in [
            Limit::Projects,
            Limit::Services,
            Limit::Replicas,
            Limit::Memory,
            Limit::QueuedBuilds,
            Limit::RegistryBytes,
        ] {
            if self.get(limit).is_some_and(|v| v > MAX_LIMIT) {
                return Err(ValidationError::new(
                    limit.name(),
                    format!("at most {MAX_LIMIT}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_limits_are_unlimited_and_unknown_fields_refused() {
        let q: Quota = serde_json::from_str("{}").unwrap();
        assert_eq!(q, Quota::default());
        assert!(q.check(Limit::Projects, u64::MAX).is_ok());
        assert!(serde_json::from_str::<Quota>(r#"{"cpu": 1}"#).is_err());
        let q: Quota = serde_json::from_str(r#"{"projects": 2, "memory": null}"#).unwrap();
        assert!(q.check(Limit::Projects, 2).is_ok());
        let e = q.check(Limit::Projects, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "quota exceeded: projects limit is 2, this would make 3"
        );
        let big = Quota {
            memory: Some(MAX_LIMIT + 1),
            ..Quota::default()
        };
        assert_eq!(big.validate().unwrap_err().field, "memory");
    }
}
