//! lb's model crate: what lb stores in the key tree and shows through the API
//! (serde types with validation), the key tree itself and its parsing
//! ([`keys`]), ids ([`ids`]), the node wire protocol ([`protocol`]) and the
//! REST API's request and response shapes ([`views`]).
//! Pure: no IO, no async runtime, no store client — the node and `lbc`
//! depend on this crate alone, so they cannot reach the store.
//!
//! A validation error names the field at fault, so the API can return it in
//! its error body.

pub mod apply;
pub mod backoff;
pub mod format;
pub mod ids;
pub mod ingress;
pub mod keys;
pub mod protocol;
pub mod reference;
pub mod script;
pub mod stack;
pub mod status;
pub mod views;

mod assignment;
mod build;
mod cert;
mod deploy;
mod hardening;
mod health;
mod job;
mod node;
mod ports;
mod project;
mod quota;
mod replica;
mod schedule;
mod service;
mod source;
mod user;
mod vendor;

pub use assignment::Assignment;
pub use build::{
    join_log_chunks, Build, BuildStatus, BuildStep, StackApply, StackFiles, BUILD_LOG_DROPPED,
    BUILD_LOG_MAX, STACK_MAX,
};
pub use cert::{CertRecord, CertSource, CertStatus, CertView};
pub use deploy::{settles, Deploy, Outcome as DeployOutcome, KEEP_DEPLOYS};
pub use hardening::{Hardening, ALLOWED_CAP_ADD, DEFAULT_PIDS, DROPPED_CAPS, MAX_PIDS, MIN_PIDS};
pub use health::{takes_traffic, Health, HealthCheck, Probe};
pub use job::{
    check_command, log_tail, Job, JobEnd, JobRequest, JobRun, JobState, DEFAULT_JOB_TIMEOUT,
    JOB_HISTORY, JOB_LOG_MAX, MAX_JOB_TIMEOUT,
};
pub use node::{parse_bytes, Capacity, DiskLimit, Node, NodeStatus};
pub use ports::PortError;
pub use project::Project;
pub use quota::{Exceeded, Limit, Quota, MAX_LIMIT};
pub use replica::{PortBinding, Replica, ReplicaState, ReplicaStatus};
pub use schedule::{
    check_schedules, parse_cron, parse_timezone, Concurrency, Schedule, ScheduleRecord,
    MAX_SCHEDULES,
};
pub use script::{Interpreter, ReplicaRun, RunRequest, Script, ScriptRun, ScriptView, Target};
pub use service::{
    validate_label, Port, Protocol, ServiceMeta, ServiceSpec, ServiceState, Volume,
    DEFAULT_STOP_TIMEOUT, MAX_STOP_TIMEOUT,
};
pub use source::{BuildKind, BuildSpec, Source};
pub use user::{Role, User};
pub use vendor::{repository_of, Allowlist, HookRecord, Vendor, VendorLink, MAX_DELIVERIES};

/// An invalid value, with the field it is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field at fault, dotted for nested fields (`ports[1].container`).
    pub field: String,
    /// What is wrong, lower-case, naming the value.
    pub message: String,
}

impl ValidationError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, nested under `parent` (`parent.field`).
    pub fn under(self, parent: &str) -> Self {
        let field = if self.field.starts_with('[') || self.field.is_empty() {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        Self { field, ..self }
    }
}

/// Result with [`ValidationError`].
pub type Result<T, E = ValidationError> = std::result::Result<T, E>;

/// Checks a name: a DNS label, 1–63 characters of lower-case letters, digits
/// and '-', neither starting nor ending with '-'.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "{:?} is {} characters long (at most 63)",
            truncate(name),
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "{:?} may hold only lower-case letters, digits and '-'",
            truncate(name)
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!("{name:?} must not start or end with '-'"));
    }
    Ok(())
}

/// Checks a name and reports it on `field`.
pub fn check_name(field: &str, name: &str) -> Result<()> {
    validate_name(name).map_err(|m| ValidationError::new(field, m))
}

/// A value cut short for an error message.
pub(crate) fn truncate(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_owned()
    } else {
        format!("{}...", s.chars().take(80).collect::<String>())
    }
}

/// Seconds since the Unix epoch, as stored in records.
pub type Timestamp = i64;

/// The current time as stored in records (0 if the clock is before 1970).
pub fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, ok: bool) {
        assert_eq!(validate_name(name).is_ok(), ok, "{name:?}");
    }

    #[test]
    fn names_are_dns_labels() {
        check("web", true);
        check("a", true);
        check("web-1", true);
        check("0abc", true);
        check(&"a".repeat(63), true);
        check(&"a".repeat(64), false);
        check("", false);
        check("Web", false);
        check("web_1", false);
        check("-web", false);
        check("web-", false);
        check("wéb", false);
        check("web.example", false);
    }
}
