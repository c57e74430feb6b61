//! `lbc apply -f FILE [--prune]` and `lbc diff -f FILE [--prune]`: a
//! project made to match a file, lb's format or a docker-compose file
//! (told apart by the file's name or content). The file is read here: a
//! compose file's `env_file`s are read relative to it, and the API gets
//! lb's format as JSON (`PUT /projects/{p}/apply`, `?dry_run=true` for diff).
//!
//! `lbc diff` exits as diff(1) and `git diff --exit-code` do: 0 when nothing
//! would change, 1 when something would (the plan is printed either way);
//! errors keep their codes (2 and up).

use std::path::{Path, PathBuf};

use lb_model::apply::{self, Format};
use reqwest::Method;
use serde_json::Value;

use crate::args::ApplyArgs;
use crate::client::segment;
use crate::error::{Error, Result};
use crate::output::Shown;
use crate::session::Session;

/// Runs `lbc apply` (`dry_run`: `lbc diff`).
pub async fn run(session: &mut Session, args: ApplyArgs, dry_run: bool) -> Result<()> {
    let (format, doc) = read(&args.file)?;
    let project = match (&session.project_flag, &doc.project) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => session.project().map_err(|_| {
            Error::usage(format!(
                "{} names no project: pass --project, add `{}` to it, or set a default with \
                 `lbc project use NAME`",
                args.file.display(),
                if format == Format::Compose {
                    "name: NAME"
                } else {
                    "project: NAME"
                }
            ))
        })?,
    };
    let mut query = Vec::new();
    if args.prune {
        query.push("prune=true");
    }
    if dry_run {
        query.push("dry_run=true");
    }
    let path = format!(
        "/projects/{}/apply{}{}",
        segment(&project),
        if query.is_empty() { "" } else { "?" },
        query.join("&")
    );
    let client = session.client()?;
    let answer = client
        .call(Method::PUT, &path, Some(&doc.to_value()))
        .await?;
    let text = describe(&answer, dry_run, args.prune);
    let changes = changes(&answer);
    session.out.show(Shown::Message {
        value: answer,
        text,
    })?;
    if dry_run && changes > 0 {
        return Err(Error::Exit(1));
    }
    Ok(())
}

/// The names listed under `key` in a plan (`plan` or `plan.scripts`).
fn names_in(plan: &Value, key: &str) -> Vec<String> {
    plan[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().or_else(|| v["name"].as_str()).map(str::to_owned))
        .collect()
}

/// The changes a plan holds: services and scripts created, updated and
/// deleted, and the project when it is created.
fn changes(answer: &Value) -> usize {
    let plan = &answer["plan"];
    let listed = ["creates", "updates", "deletes"]
        .iter()
        .map(|key| names_in(plan, key).len() + names_in(&plan["scripts"], key).len())
        .sum::<usize>();
    listed + usize::from(answer["created_project"] == true)
}

/// Reads and converts a file; a file lb cannot take is a usage error
/// naming every key at fault.
fn read(file: &Path) -> Result<(Format, apply::Document)> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::usage(format!("cannot read {}: {e}", file.display())))?;
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let env_file = |path: &str| -> std::result::Result<String, String> {
        std::fs::read_to_string(dir.join(path)).map_err(|e| format!("cannot read it: {e}"))
    };
    let name = file.to_string_lossy();
    apply::parse(&text, Some(name.as_ref()), &env_file).map_err(|e| match &e {
        apply::DocumentError::Syntax { .. } => Error::usage(format!("{}: {e}", file.display())),
        apply::DocumentError::Invalid(_) => {
            Error::usage(format!("{} cannot be applied: {e}", file.display()))
        }
    })
}

/// The answer for people: one line a change.
fn describe(answer: &Value, dry_run: bool, prune: bool) -> String {
    let names = |key: &str| names_in(&answer["plan"], key);
    let project = answer["project"].as_str().unwrap_or_default();
    let mut lines = Vec::new();
    if answer["created_project"] == true {
        let verb = if dry_run {
            "would be created"
        } else {
            "created"
        };
        lines.push(format!("project {project} {verb}"));
    }
    let (create, update, delete) = if dry_run {
        ("+ create", "~ update", "- delete")
    } else {
        ("+ created", "~ updated", "- deleted")
    };
    for name in names("deletes") {
        lines.push(format!("{delete} {name}"));
    }
    for update_entry in answer["plan"]["updates"].as_array().into_iter().flatten() {
        let name = update_entry["name"].as_str().unwrap_or_default();
        lines.push(format!("{update} {name}"));
        for change in update_entry["changes"].as_array().into_iter().flatten() {
            lines.push(format!(
                "    {}: {} -> {}",
                change["field"].as_str().unwrap_or_default(),
                short(&change["from"]),
                short(&change["to"])
            ));
        }
    }
    for name in names("creates") {
        lines.push(format!("{create} {name}"));
    }
    let scripts = &answer["plan"]["scripts"];
    let script_names = |key: &str| names_in(scripts, key);
    for name in script_names("deletes") {
        lines.push(format!("{delete} script {name}"));
    }
    for entry in scripts["updates"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().unwrap_or_default();
        lines.push(format!("{update} script {name}"));
        for change in entry["changes"].as_array().into_iter().flatten() {
            lines.push(format!(
                "    {}: {} -> {}",
                change["field"].as_str().unwrap_or_default(),
                short(&change["from"]),
                short(&change["to"])
            ));
        }
    }
    for name in script_names("creates") {
        lines.push(format!("{create} script {name}"));
    }
    let mut unchanged = names("unchanged");
    unchanged.extend(
        script_names("unchanged")
            .iter()
            .map(|n| format!("script {n}")),
    );
    if !unchanged.is_empty() {
        lines.push(format!("  unchanged: {}", unchanged.join(", ")));
    }
    let mut kept = names("kept");
    kept.extend(script_names("kept").iter().map(|n| format!("script {n}")));
    if !kept.is_empty() && !prune {
        lines.push(format!(
            "  not in the file, kept (--prune deletes them): {}",
            kept.join(", ")
        ));
    }
    let changes = ["creates", "updates", "deletes"]
        .iter()
        .map(|key| names(key).len() + script_names(key).len())
        .sum::<usize>();
    lines.push(match (changes, dry_run) {
        (0, _) => format!("project {project}: nothing to change"),
        (n, true) => format!("project {project}: {n} change(s) planned, nothing written"),
        (n, false) => format!("project {project}: {n} change(s) applied"),
    });
    lines.join("\n")
}

/// A value on one line, cut short.
fn short(value: &Value) -> String {
    let text = match value {
        Value::Null => "(none)".to_owned(),
        other => other.to_string(),
    };
    if text.chars().count() > 80 {
        format!("{}...", text.chars().take(77).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plans_read_as_lines() {
        let answer = json!({"project": "demo", "created_project": false, "dry_run": true,
            "plan": {"creates": [{"name": "db", "spec": {}}],
                     "updates": [{"name": "web", "revision": 3, "changes": [
                        {"field": "replicas", "from": 1, "to": 2},
                        {"field": "env.OLD", "from": "x", "to": null}]}],
                     "deletes": [], "unchanged": ["api"], "kept": ["old"]},
            "done": []});
        assert_eq!(
            describe(&answer, true, false),
            "~ update web\n    replicas: 1 -> 2\n    env.OLD: \"x\" -> (none)\n+ create db\n  \
             unchanged: api\n  not in the file, kept (--prune deletes them): old\n\
             project demo: 2 change(s) planned, nothing written"
        );
        assert_eq!(changes(&answer), 2);
        let same = json!({"project": "demo", "created_project": false,
            "plan": {"creates": [], "updates": [], "deletes": [], "unchanged": ["api"],
                     "scripts": {"creates": [], "unchanged": ["hello"]}}});
        assert_eq!(changes(&same), 0);
        let new_project = json!({"project": "demo", "created_project": true, "plan": {}});
        assert_eq!(changes(&new_project), 1);
    }
}
