//! One-off jobs: a command run to completion in a new container made from a
//! service's current image, env, volumes and network, at
//! `/lb/projects/<pid>/services/<sid>/jobs/<job id>`.
//!
//! The API writes a job `pending` (from `POST .../jobs` or, for a schedule,
//! the scheduler's cron); the scheduler places it like a replica (its
//! memory and CPU reserved on the node) by writing the node an
//! [`crate::Assignment`] with [`JobRun`] set, whose container is never
//! restarted; the node reports it `running` and, once it exits (or its
//! time limit kills it), its exit code and the tail of its logs; the API
//! records the end and removes the assignment, and with it the container.

use serde::{Deserialize, Serialize};

use super::service::MAX_COMMAND_TOTAL;
use super::{Result, Timestamp, ValidationError};

/// The time limit of a job that gives none, in seconds (one hour).
pub const DEFAULT_JOB_TIMEOUT: u64 = 3600;
/// The longest time limit, in seconds (one day).
pub const MAX_JOB_TIMEOUT: u64 = 86_400;
/// The most bytes of a job's output kept in its record (the last ones).
pub const JOB_LOG_MAX: usize = 64 * 1024;
/// Finished jobs kept per service; older ones are deleted by the scheduler.
pub const JOB_HISTORY: usize = 50;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a node (or placed, not yet started by it).
    #[default]
    Pending,
    /// Its container runs.
    Running,
    /// It exited with code 0.
    Succeeded,
    /// It exited with another code, could not start, or its node was lost.
    Failed,
    /// Cancelled by a user (or replaced by its schedule's next run).
    Cancelled,
    /// Killed at its time limit.
    TimedOut,
}

impl JobState {
    /// Whether the job is over (nothing will change it again).
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }

    /// Its name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
        }
    }
}

/// The body of `POST .../services/{s}/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The command and its arguments (the image's entrypoint is kept, as
    /// for a service's `command`).
    pub command: Vec<String>,
    /// Seconds before it is killed (default [`DEFAULT_JOB_TIMEOUT`]).
    #[serde(default)]
    pub timeout: Option<u64>,
}

impl JobRequest {
    /// Checks the fields; the error names the one at fault.
    pub fn validate(&self) -> Result<()> {
        check_command("command", &self.command)?;
        check_timeout("timeout", self.timeout)
    }
}

/// Checks a job's command: 1–1000 arguments, no NUL, at most
/// [`MAX_COMMAND_TOTAL`] bytes.
pub fn check_command(field: &str, command: &[String]) -> Result<()> {
    if command.is_empty() || command.len() > 1000 {
        return Err(ValidationError::new(field, "must hold 1 to 1000 arguments"));
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err(ValidationError::new(field, "an argument holds a NUL byte"));
    }
    let total: usize = command.iter().map(String::len).sum();
    if total > MAX_COMMAND_TOTAL {
        return Err(ValidationError::new(
            field,
            format!("{total} bytes in all; at most {MAX_COMMAND_TOTAL}"),
        ));
    }
    Ok(())
}

/// Checks a time limit: 1 s to [`MAX_JOB_TIMEOUT`].
pub fn check_timeout(field: &str, timeout: Option<u64>) -> Result<()> {
    match timeout {
        Some(t) if t == 0 || t > MAX_JOB_TIMEOUT => Err(ValidationError::new(
            field,
            format!("{t} s is out of range (1–{MAX_JOB_TIMEOUT} s)"),
        )),
        _ => Ok(()),
    }
}

/// A job record, as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The job id (also its container's replica label).
    pub id: String,
    /// Project id.
    pub project: String,
    /// Service id.
    pub service: String,
    /// The command.
    pub command: Vec<String>,
    /// Its time limit in seconds.
    pub timeout: u64,
    /// Where it is.
    pub state: JobState,
    /// The schedule that fired it (`None`: started by a user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule's tick that fired it, Unix seconds (one job per tick).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<Timestamp>,
    /// Who started it (a user id), or `schedule:<name>`.
    #[serde(default)]
    pub created_by: String,
    /// The node it was placed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The image it ran (set when placed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Why it waits, or why it ended the way it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Its exit code, once it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The last [`JOB_LOG_MAX`] bytes of its output (stdout and stderr).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub logs: String,
    /// A user asked to cancel it: the node stops its container and the end
    /// is recorded as `cancelled`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
    /// When it was created.
    pub created: Timestamp,
    /// When its container started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
}

impl Job {
    /// The job a request (or a schedule) starts, pending.
    pub fn new(
        id: String,
        project: String,
        service: String,
        command: Vec<String>,
        timeout: Option<u64>,
        created_by: String,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            project,
            service,
            command,
            timeout: timeout.unwrap_or(DEFAULT_JOB_TIMEOUT),
            state: JobState::Pending,
            schedule: None,
            tick: None,
            created_by,
            node: None,
            image: None,
            message: String::new(),
            exit_code: None,
            logs: String::new(),
            cancel: false,
            created: now,
            started: None,
            finished: None,
        }
    }

    /// Records the end: the final state, code, output tail and reason.
    pub fn finish(
        &mut self,
        state: JobState,
        exit_code: Option<i64>,
        logs: &str,
        message: impl Into<String>,
        now: Timestamp,
    ) {
        self.state = state;
        self.exit_code = exit_code;
        self.logs = log_tail(logs, JOB_LOG_MAX);
        self.message = message.into();
        self.finished = Some(now);
    }
}

/// What the node needs to know of a job: its assignment runs once, never
/// restarted, and is killed at its time limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    /// Seconds from its start before it is killed.
    pub timeout: u64,
    /// Stop it now (the job was cancelled): its end is reported as such.
    #[serde(default)]
    pub cancel: bool,
}

/// How a job's container ended, as its node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEnd {
    /// Its exit code (`None` when it never started).
    pub exit_code: Option<i64>,
    /// The last bytes of its output.
    pub logs: String,
    /// Killed at its time limit.
    #[serde(default)]
    pub timed_out: bool,
    /// Stopped because the job was cancelled.
    #[serde(default)]
    pub cancelled: bool,
    /// Why it could not run (image pull, create), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl JobEnd {
    /// The job's final state and message for this end.
    pub fn outcome(&self, timeout: u64) -> (JobState, String) {
        if let Some(error) = &self.error {
            return (JobState::Failed, error.clone());
        }
        if self.cancelled {
            return (JobState::Cancelled, "cancelled".into());
        }
        if self.timed_out {
            return (
                JobState::TimedOut,
                format!("killed after its {timeout} s limit"),
            );
        }
        match self.exit_code {
            Some(0) => (JobState::Succeeded, String::new()),
            Some(code) => (JobState::Failed, format!("exited with code {code}")),
            None => (JobState::Failed, "ended without an exit code".into()),
        }
    }
}

/// The last `max` bytes of `text`, cut at a character boundary.
pub fn log_tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_field_at_fault() {
        let ok = JobRequest {
            command: vec!["true".into()],
            timeout: Some(5),
        };
        assert!(ok.validate().is_ok());
        let empty = JobRequest {
            command: vec![],
            timeout: None,
        };
        assert_eq!(empty.validate().unwrap_err().field, "command");
        let zero = JobRequest {
            timeout: Some(0),
            ..ok.clone()
        };
        assert_eq!(zero.validate().unwrap_err().field, "timeout");
        let long = JobRequest {
            timeout: Some(MAX_JOB_TIMEOUT + 1),
            ..ok
        };
        assert_eq!(long.validate().unwrap_err().field, "timeout");
        let unknown = serde_json::from_str::<JobRequest>(r#"{"command": ["a"], "image": "x"}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn ends_map_to_states() {
        let end = |code, timed_out, cancelled| JobEnd {
            exit_code: code,
            logs: String::new(),
            timed_out,
            cancelled,
            error: None,
        };
        assert_eq!(end(Some(0), false, false).outcome(5).0, JobState::Succeeded);
        assert_eq!(end(Some(3), false, false).outcome(5).0, JobState::Failed);
        assert_eq!(end(Some(137), true, false).outcome(5).0, JobState::TimedOut);
        assert_eq!(
            end(Some(137), false, true).outcome(5).0,
            JobState::Cancelled
        );
        assert!(JobState::TimedOut.is_final() && !JobState::Running.is_final());
    }

    #[test]
    fn the_log_tail_keeps_the_end_on_a_character_boundary() {
        assert_eq!(log_tail("abc", 10), "abc");
        assert_eq!(log_tail("abcdef", 3), "def");
        assert_eq!(log_tail("aéb", 2), "b");
    }
}
