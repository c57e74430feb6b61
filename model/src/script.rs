//! Stored scripts (`/lb/projects/<pid>/scripts/<name>`) and the record of
//! their runs (`/lb/projects/<pid>/script-runs/<name>/<run id>`), with the
//! shapes the API takes and answers for them.
//!
//! A script runs inside a running replica as a second process: its body is
//! written to the interpreter's stdin (`sh -s -- ARGS`, `bash -s -- ARGS`,
//! `python3 - ARGS`, or the command given, which must read its program from
//! stdin), never spliced into a command line; the container is not
//! restarted. [`Script::command`] is the command run, pure, so the rule is
//! tested here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{check_name, Timestamp, ValidationError};

/// The largest body accepted (256 KiB).
pub const MAX_BODY: usize = 256 * 1024;
/// The default time limit of a run, in seconds.
pub const DEFAULT_TIMEOUT: u64 = 60;
/// The longest time limit of a run, in seconds.
pub const MAX_TIMEOUT: u64 = 3600;
/// Arguments at most (defaults or given to a run).
pub const MAX_ARGS: usize = 100;
/// Environment variables at most.
pub const MAX_ENV: usize = 100;
/// Runs kept per script; older ones are deleted when a run is recorded.
pub const KEEP_RUNS: usize = 20;
/// Bytes of stdout and of stderr a run's answer carries per replica; the
/// rest is dropped and the answer says so.
pub const MAX_OUTPUT: usize = 64 * 1024;
/// Bytes of stdout and of stderr a run's record keeps per replica.
pub const RECORD_OUTPUT: usize = 2 * 1024;
/// The variable every run carries, naming it (the run id): lb finds the
/// run's processes by it to kill them at the time limit.
pub const RUN_VAR: &str = "LB_SCRIPT_RUN";

/// The interpreters known by name.
pub const INTERPRETERS: [&str; 3] = ["sh", "bash", "python3"];

/// What runs a script's body: a known interpreter by name, or a command
/// (program and arguments) reading the program from stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Interpreter {
    /// `sh`, `bash` or `python3`.
    Name(String),
    /// A command, e.g. `["/bin/busybox", "sh", "-s", "--"]`: the run's
    /// arguments are appended.
    Command(Vec<String>),
}

impl Default for Interpreter {
    fn default() -> Self {
        Self::Name("sh".into())
    }
}

impl Interpreter {
    /// The program the container must have (for error messages).
    pub fn program(&self) -> &str {
        match self {
            Self::Name(name) => name,
            Self::Command(command) => command.first().map_or("", String::as_str),
        }
    }

    fn validate(&self) -> crate::Result<()> {
        match self {
            Self::Name(name) if INTERPRETERS.contains(&name.as_str()) => Ok(()),
            Self::Name(name) => Err(ValidationError::new(
                "interpreter",
                format!(
                    "{:?} is not one of sh, bash, python3 (or give a command as an array)",
                    crate::truncate(name)
                ),
            )),
            Self::Command(command) => {
                if command.is_empty() || command.len() > 32 {
                    return Err(ValidationError::new(
                        "interpreter",
                        "a command must hold 1 to 32 arguments",
                    ));
                }
                if command[0].trim().is_empty() {
                    return Err(ValidationError::new(
                        "interpreter[0]",
                        "the program must not be empty",
                    ));
                }
                check_strings("interpreter", command)
            }
        }
    }
}

/// A stored script: what the API takes on `PUT .../scripts/{name}` and
/// stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Its name in the project, a DNS label (from the path if left out).
    #[serde(default)]
    pub name: String,
    /// What runs it.
    #[serde(default)]
    pub interpreter: Interpreter,
    /// The program, at most 256 KiB.
    pub body: String,
    /// Arguments when a run gives none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables the run gets (beside the container's own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Seconds a run may take before it is killed (1 to 3600, default 60).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// When it was last written (set by the API).
    #[serde(default)]
    pub updated: Timestamp,
    /// Who last wrote it (set by the API).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub updated_by: String,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT
}

impl Script {
    /// Checks every field; the error names the one at fault.
    pub fn validate(&self) -> crate::Result<()> {
        check_name("name", &self.name)?;
        self.interpreter.validate()?;
        if self.body.len() > MAX_BODY {
            return Err(ValidationError::new(
                "body",
                format!("{} bytes is more than {MAX_BODY}", self.body.len()),
            ));
        }
        if self.body.contains('\0') {
            return Err(ValidationError::new("body", "holds a NUL byte"));
        }
        check_args("args", &self.args)?;
        if self.env.len() > MAX_ENV {
            return Err(ValidationError::new(
                "env",
                format!("{} variables is more than {MAX_ENV}", self.env.len()),
            ));
        }
        for (name, value) in &self.env {
            check_env_name(name).map_err(|m| ValidationError::new(format!("env.{name}"), m))?;
            if value.contains('\0') {
                return Err(ValidationError::new(
                    format!("env.{name}"),
                    "the value holds a NUL byte",
                ));
            }
        }
        if !(1..=MAX_TIMEOUT).contains(&self.timeout) {
            return Err(ValidationError::new(
                "timeout",
                format!("{} s is out of range (1–{MAX_TIMEOUT})", self.timeout),
            ));
        }
        Ok(())
    }

    /// The command run for `args` (the run's, else the defaults): the body
    /// goes on its stdin, nothing of it on the command line.
    pub fn command(&self, args: Option<&[String]>) -> Vec<String> {
        let args = args.unwrap_or(&self.args);
        let mut command: Vec<String> = match &self.interpreter {
            Interpreter::Name(name) if name == "python3" => vec!["python3".into(), "-".into()],
            Interpreter::Name(name) => vec![name.clone(), "-s".into(), "--".into()],
            Interpreter::Command(command) => command.clone(),
        };
        command.extend(args.iter().cloned());
        command
    }

    /// The environment of run `run`: `NAME=value` pairs, the script's and
    /// [`RUN_VAR`].
    pub fn environment(&self, run: &str) -> Vec<String> {
        let mut env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("{RUN_VAR}={run}"));
        env
    }
}

/// Checks a list of arguments: at most [`MAX_ARGS`], no NUL bytes, 64 KiB
/// in all.
pub fn check_args(field: &str, args: &[String]) -> crate::Result<()> {
    if args.len() > MAX_ARGS {
        return Err(ValidationError::new(
            field,
            format!("{} arguments is more than {MAX_ARGS}", args.len()),
        ));
    }
    if args.iter().map(String::len).sum::<usize>() > 64 * 1024 {
        return Err(ValidationError::new(field, "more than 64 KiB in all"));
    }
    check_strings(field, args)
}

fn check_strings(field: &str, items: &[String]) -> crate::Result<()> {
    match items.iter().position(|a| a.contains('\0')) {
        Some(i) => Err(ValidationError::new(
            format!("{field}[{i}]"),
            "holds a NUL byte",
        )),
        None => Ok(()),
    }
}

/// An environment variable's name: a letter or '_', then letters, digits
/// and '_', at most 128 characters; not [`RUN_VAR`].
fn check_env_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || name.len() > 128 || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "{:?} is not a variable name (a letter or '_', then letters, digits, '_')",
            crate::truncate(name)
        ));
    }
    if name == RUN_VAR {
        return Err(format!("{RUN_VAR} is set by lb"));
    }
    Ok(())
}

/// A stored script as the API shows it: the record and its revision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScriptView {
    /// The script.
    #[serde(flatten)]
    pub script: Script,
    /// Its record's revision (the ETag).
    #[serde(default)]
    pub revision: i64,
}

/// Which replicas a run goes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Target {
    /// The first running one.
    #[default]
    One,
    /// The one with this id.
    Replica(String),
    /// Every running one, in parallel.
    All,
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::One => s.serialize_none(),
            Self::Replica(id) => s.serialize_str(id),
            Self::All => s.serialize_str("all"),
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<String>::deserialize(d)? {
            None => Self::One,
            Some(s) if s == "all" => Self::All,
            Some(s) => Self::Replica(s),
        })
    }
}

/// `POST .../services/{s}/scripts/{name}/run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// `null` (the first running replica), a replica id, or `"all"`.
    #[serde(default)]
    pub replica: Target,
    /// Arguments (absent: the script's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
}

/// What a run did in one replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaRun {
    /// The replica id.
    pub replica: String,
    /// The script's exit code (none when it did not run to its end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Its stdout, cut at [`MAX_OUTPUT`] (a record keeps [`RECORD_OUTPUT`]).
    pub stdout: String,
    /// Its stderr, cut alike.
    pub stderr: String,
    /// Output was cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Milliseconds from start to end.
    pub duration_ms: u64,
    /// It ran out of time and was killed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// Why it did not run or end (e.g. the interpreter is missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReplicaRun {
    /// The same, its output cut to what a record keeps.
    pub fn head(&self) -> Self {
        let cut = |s: &str| {
            if s.len() <= RECORD_OUTPUT {
                (s.to_owned(), false)
            } else {
                let mut end = RECORD_OUTPUT;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                (s[..end].to_owned(), true)
            }
        };
        let (stdout, a) = cut(&self.stdout);
        let (stderr, b) = cut(&self.stderr);
        Self {
            stdout,
            stderr,
            truncated: self.truncated || a || b,
            ..self.clone()
        }
    }
}

/// A run: the answer of a run request and, with its output cut to heads,
/// its record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScriptRun {
    /// The run id (time-sortable).
    pub id: String,
    /// The script's name.
    pub script: String,
    /// The service it ran in (name).
    pub service: String,
    /// Who ran it (user name).
    pub by: String,
    /// When it started.
    pub started: Timestamp,
    /// The arguments it got.
    pub args: Vec<String>,
    /// One entry per replica, in replica id order.
    pub replicas: Vec<ReplicaRun>,
}

impl ScriptRun {
    /// The exit code a command line reports: the first non-zero of the
    /// replicas' (in order), 124 for a timeout, 127 for another error, else 0.
    pub fn exit_code(&self) -> i64 {
        self.replicas
            .iter()
            .map(|r| match (r.exit_code, r.timed_out, &r.error) {
                (_, true, _) => 124,
                (Some(code), _, _) => code,
                (None, _, _) => 127,
            })
            .find(|c| *c != 0)
            .unwrap_or(0)
    }

    /// The record kept: output cut to heads.
    pub fn record(&self) -> Self {
        Self {
            replicas: self.replicas.iter().map(ReplicaRun::head).collect(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(json: serde_json::Value) -> Script {
        serde_json::from_value(json).unwrap()
    }

    fn field(s: &Script) -> String {
        s.validate().unwrap_err().field
    }

    #[test]
    fn scripts_are_checked_field_by_field() {
        let ok = script(serde_json::json!({"name": "migrate", "body": "echo hi"}));
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.timeout, DEFAULT_TIMEOUT);
        assert_eq!(ok.interpreter, Interpreter::Name("sh".into()));
        let bad = |json: serde_json::Value| field(&script(json));
        assert_eq!(bad(serde_json::json!({"name": "Bad", "body": ""})), "name");
        assert_eq!(
            bad(serde_json::json!({"name": "a", "body": "", "interpreter": "perl"})),
            "interpreter"
        );
        assert_eq!(
            bad(serde_json::json!({"name": "a", "body": "", "interpreter": []})),
            "interpreter"
        );
        assert_eq!(
            bad(serde_json::json!({"name": "a", "body": "", "interpreter": ["x", "a\u{0}"]})),
            "interpreter[1]"
        );
        assert_eq!(
            bad(serde_json::json!({"name": "a", "body": "x".repeat(MAX_BODY + 1)})),
            "body"
        );
        assert_eq!(
            bad(serde_json::json!({"name": "a", "body": "", "timeout": 0})),
            "timeout"
        );
        assert_eq!(
            bad(serde_json::json!({"name": "a", "body": "", "timeout": MAX_TIMEOUT + 1})),
            "timeout"
        );
        assert_eq!(
            bad(serde_json::json!({"name": "a", "body": "", "env": {"1X": "v"}})),
            "env.1X"
        );
        assert_eq!(
            bad(serde_json::json!({"name": "a", "body": "", "env": {RUN_VAR: "v"}})),
            format!("env.{RUN_VAR}")
        );
        assert_eq!(
            bad(serde_json::json!({"name": "a", "body": "", "args": ["a\u{0}"]})),
            "args[0]"
        );
        let many: Vec<String> = (0..=MAX_ARGS).map(|i| i.to_string()).collect();
        assert_eq!(
            bad(serde_json::json!({"name": "a", "body": "", "args": many})),
            "args"
        );
        assert!(serde_json::from_value::<Script>(
            serde_json::json!({"name": "a", "body": "", "bogus": 1})
        )
        .is_err());
    }

    #[test]
    fn the_body_never_reaches_the_command_line() {
        let body = "echo \"$1\"; rm -rf / # $(danger)";
        let mut s = script(serde_json::json!({"name": "a", "body": body, "args": ["d"]}));
        let given = vec!["x y".to_string(), "$(z)".to_string()];
        assert_eq!(s.command(None), ["sh", "-s", "--", "d"]);
        assert_eq!(s.command(Some(&given)), ["sh", "-s", "--", "x y", "$(z)"]);
        s.interpreter = Interpreter::Name("bash".into());
        assert_eq!(s.command(Some(&[])), ["bash", "-s", "--"]);
        s.interpreter = Interpreter::Name("python3".into());
        assert_eq!(s.command(Some(&given)), ["python3", "-", "x y", "$(z)"]);
        s.interpreter = Interpreter::Command(vec!["/bin/busybox".into(), "sh".into()]);
        assert_eq!(s.command(None), ["/bin/busybox", "sh", "d"]);
        for command in [s.command(None), s.command(Some(&given))] {
            assert!(command.iter().all(|a| !a.contains("echo")), "{command:?}");
        }
        s.env.insert("B".into(), "2 3".into());
        assert_eq!(s.environment("R1"), ["B=2 3", "LB_SCRIPT_RUN=R1"]);
    }

    #[test]
    fn targets_are_null_an_id_or_all() {
        let parse = |json: &str| serde_json::from_str::<RunRequest>(json).unwrap().replica;
        assert_eq!(parse("{}"), Target::One);
        assert_eq!(parse(r#"{"replica": null}"#), Target::One);
        assert_eq!(parse(r#"{"replica": "all"}"#), Target::All);
        assert_eq!(parse(r#"{"replica": "R1"}"#), Target::Replica("R1".into()));
        assert_eq!(
            serde_json::to_value(Target::All).unwrap(),
            serde_json::json!("all")
        );
    }

    #[test]
    fn runs_report_the_first_failure_and_keep_heads() {
        let run = |codes: &[(Option<i64>, bool)]| ScriptRun {
            replicas: codes
                .iter()
                .map(|(code, timed_out)| ReplicaRun {
                    exit_code: *code,
                    timed_out: *timed_out,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(run(&[(Some(0), false), (Some(0), false)]).exit_code(), 0);
        assert_eq!(
            run(&[(Some(0), false), (Some(3), false), (Some(4), false)]).exit_code(),
            3
        );
        assert_eq!(run(&[(None, true)]).exit_code(), 124);
        assert_eq!(run(&[(None, false)]).exit_code(), 127);
        let long = ReplicaRun {
            stdout: "é".repeat(RECORD_OUTPUT),
            ..Default::default()
        };
        let head = long.head();
        assert!(head.stdout.len() <= RECORD_OUTPUT && head.truncated);
        assert!(!ReplicaRun::default().head().truncated);
    }
}
