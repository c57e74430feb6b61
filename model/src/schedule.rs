//! Cron schedules: a service's `schedules`, each firing a one-off job (see
//! [`crate::Job`]) at every tick of its cron expression, and the record of
//! its last tick at `/lb/projects/<pid>/services/<sid>/schedules/<name>`,
//! which the scheduler leader compares on its revision when it fires, so a
//! tick fires once cluster-wide.
//!
//! Expressions are read by the `croner` crate: five fields (minute, hour,
//! day of month, month, day of week) or six with seconds first; `L`, `#`,
//! `W` and names (`MON`, `JAN`) as croner reads them. Times are those of
//! the schedule's `timezone` (an IANA name, default `UTC`).

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::{Deserialize, Serialize};

use super::job::{check_command, check_timeout};
use super::{check_name, Result, Timestamp, ValidationError};

/// The most schedules one service may have.
pub const MAX_SCHEDULES: usize = 20;

/// What a tick does while an earlier run of the schedule still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Skip the tick.
    #[default]
    Forbid,
    /// Run another one beside it.
    Allow,
    /// Cancel the running ones and run a new one.
    Replace,
}

fn utc() -> String {
    "UTC".into()
}

/// One schedule of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Name, a DNS label, unique in the service.
    pub name: String,
    /// The cron expression (5 fields, or 6 with seconds first).
    pub cron: String,
    /// The job's command.
    pub command: Vec<String>,
    /// `UTC` or an IANA time zone (`Europe/Helsinki`).
    #[serde(default = "utc")]
    pub timezone: String,
    /// forbid (default), allow or replace.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// The job's time limit in seconds (default one hour).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// Parses a cron expression as schedules take it.
pub fn parse_cron(expr: &str) -> std::result::Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))
}

/// Parses a time zone as schedules take it.
pub fn parse_timezone(name: &str) -> std::result::Result<Tz, String> {
    Tz::from_str(name).map_err(|_| format!("{name:?} is not an IANA time zone"))
}

impl Schedule {
    /// Checks every field; the error names the one at fault (unprefixed:
    /// the spec nests it under `schedules[i]`).
    pub fn validate(&self) -> Result<()> {
        check_name("name", &self.name)?;
        if self.cron.len() > 200 {
            return Err(ValidationError::new("cron", "at most 200 characters"));
        }
        parse_cron(&self.cron).map_err(|m| ValidationError::new("cron", m))?;
        parse_timezone(&self.timezone).map_err(|m| ValidationError::new("timezone", m))?;
        check_command("command", &self.command)?;
        check_timeout("timeout", self.timeout)
    }

    /// The first tick strictly after `after` (Unix seconds), if any.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let cron = parse_cron(&self.cron).ok()?;
        let tz = parse_timezone(&self.timezone).ok()?;
        let at = Utc.timestamp_opt(after, 0).single()?.with_timezone(&tz);
        cron.find_next_occurrence(&at, false)
            .ok()
            .map(|t: DateTime<Tz>| t.timestamp())
    }

    /// The tick to fire at `now`, given the last one fired: the latest tick
    /// after `last` and not after `now`. Ticks missed while no scheduler
    /// ran collapse into this one (a schedule never fires a backlog).
    pub fn due(&self, last: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let first = self.next_after(last)?;
        if first > now {
            return None;
        }
        // The latest tick not after `now`: walk back from the next one.
        let cron = parse_cron(&self.cron).ok()?;
        let tz = parse_timezone(&self.timezone).ok()?;
        let at = Utc.timestamp_opt(now, 0).single()?.with_timezone(&tz);
        let latest = cron
            .find_previous_occurrence(&at, true)
            .ok()
            .map(|t| t.timestamp())
            .filter(|t| *t > last && *t <= now);
        Some(latest.unwrap_or(first))
    }
}

/// Checks a service's schedules: each valid, names unique, at most
/// [`MAX_SCHEDULES`].
pub fn check_schedules(schedules: &[Schedule]) -> Result<()> {
    if schedules.len() > MAX_SCHEDULES {
        return Err(ValidationError::new(
            "schedules",
            format!("at most {MAX_SCHEDULES} schedules"),
        ));
    }
    for (i, s) in schedules.iter().enumerate() {
        s.validate()
            .map_err(|e| e.under(&format!("schedules[{i}]")))?;
        if schedules[..i].iter().any(|o| o.name == s.name) {
            return Err(ValidationError::new(
                format!("schedules[{i}].name"),
                format!("{:?} is used twice", s.name),
            ));
        }
    }
    Ok(())
}

/// The record of a schedule's last tick, at
/// `/lb/projects/<pid>/services/<sid>/schedules/<name>`; written only by
/// the scheduler leader, in the transaction that fires the tick's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The last tick handled (fired or skipped), Unix seconds. A new
    /// schedule starts from when the scheduler first saw it.
    pub last_tick: Timestamp,
    /// The job the last fired tick created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<String>,
    /// Why the last tick fired nothing (`forbid` with a run still going).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, tz: &str) -> Schedule {
        Schedule {
            name: "tick".into(),
            cron: cron.into(),
            command: vec!["true".into()],
            timezone: tz.into(),
            concurrency: Concurrency::Forbid,
            timeout: None,
        }
    }

    /// Validates a schedule and compares the field at fault.
    fn check(cron: &str, tz: &str, expect: Option<&str>) {
        let got = schedule(cron, tz).validate().err().map(|e| e.field);
        assert_eq!(got.as_deref(), expect, "{cron:?} in {tz:?}");
    }

    #[test]
    fn expressions_and_zones_are_checked() {
        check("*/5 * * * *", "UTC", None);
        check("*/2 * * * * *", "UTC", None);
        check("0 3 * * MON", "Europe/Helsinki", None);
        check("0 0 L * *", "America/New_York", None);
        check("* * *", "UTC", Some("cron"));
        check("61 * * * *", "UTC", Some("cron"));
        check("every minute", "UTC", Some("cron"));
        check("* * * * *", "Mars/Olympus", Some("timezone"));
        check("* * * * *", "", Some("timezone"));
    }

    #[test]
    fn names_are_unique() {
        let a = schedule("* * * * *", "UTC");
        let err = check_schedules(&[a.clone(), a]).unwrap_err();
        assert_eq!(err.field, "schedules[1].name");
        let mut bad = schedule("* * * * *", "UTC");
        bad.command.clear();
        let err = check_schedules(&[bad]).unwrap_err();
        assert_eq!(err.field, "schedules[0].command");
    }

    // 2026-01-01T00:00:00Z
    const T0: Timestamp = 1_767_225_600;

    #[test]
    fn ticks_follow_the_expression() {
        let s = schedule("*/5 * * * *", "UTC");
        assert_eq!(s.next_after(T0), Some(T0 + 300));
        assert_eq!(s.next_after(T0 + 1), Some(T0 + 300));
        let secs = schedule("*/2 * * * * *", "UTC");
        assert_eq!(secs.next_after(T0), Some(T0 + 2));
        // 03:00 in Helsinki (UTC+2 in winter) is 01:00 UTC.
        let hel = schedule("0 3 * * *", "Europe/Helsinki");
        assert_eq!(hel.next_after(T0), Some(T0 + 3600));
    }

    #[test]
    fn missed_ticks_fire_once() {
        let s = schedule("*/5 * * * *", "UTC");
        // Nothing due before the next tick.
        assert_eq!(s.due(T0, T0 + 299), None);
        assert_eq!(s.due(T0, T0 + 300), Some(T0 + 300));
        // An hour down: twelve ticks missed, one fires, the latest.
        assert_eq!(s.due(T0, T0 + 3600 + 17), Some(T0 + 3600));
        // Fired: nothing more until the next one.
        assert_eq!(s.due(T0 + 3600, T0 + 3600 + 17), None);
        assert_eq!(s.due(T0 + 3600, T0 + 3900), Some(T0 + 3900));
    }
}
