//! `lbc script ls | show | put | rm | run | runs`: a project's stored
//! scripts, run inside a service's running replicas as a second process
//! (the containers are not restarted).
//!
//! `run` prints each replica's stdout and stderr (with a header per replica
//! on stderr when there are several) and exits with the run's exit code: the
//! first non-zero across the replicas, 124 for a timeout, 127 when the
//! script could not run (e.g. its interpreter is missing). On one replica
//! (no `--all`) with table output, the run streams over the run websocket
//! (`GET .../scripts/{name}/run`): output is printed as it comes.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use futures::StreamExt;
use lb_model::views::List;
use lb_model::{Interpreter, ReplicaRun, ScriptRun, ScriptView};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::args::ScriptCmd;
use crate::client::{segment, typed};
use crate::error::{Error, Result};
use crate::output::{age, Format, Shown, Table};
use crate::session::Session;

/// Runs `lbc script ...`.
pub async fn run(session: &mut Session, cmd: ScriptCmd) -> Result<()> {
    match cmd {
        ScriptCmd::Ls => ls(session).await,
        ScriptCmd::Show { name } => show(session, &name).await,
        ScriptCmd::Put {
            name,
            interpreter,
            file,
            args,
            env,
            timeout,
        } => {
            let path = script_path(session, &name)?;
            let body = read_body(&file)?;
            let mut script = json!({
                "interpreter": interpreter_of(&interpreter),
                "body": body,
                "args": args,
                "env": env_of(&env)?,
            });
            if let Some(timeout) = timeout {
                script["timeout"] = json!(timeout);
            }
            let answer = session
                .client()?
                .call(Method::PUT, &path, Some(&script))
                .await?;
            let view: ScriptView = typed(&answer)?;
            session.out.show(Shown::Message {
                text: format!(
                    "Script {:?} stored ({} bytes, {}).",
                    view.script.name,
                    view.script.body.len(),
                    interpreter_text(&view.script.interpreter)
                ),
                value: answer,
            })
        }
        ScriptCmd::Rm { name } => {
            let path = script_path(session, &name)?;
            session.client()?.call(Method::DELETE, &path, None).await?;
            session.out.show(Shown::Message {
                value: json!({ "deleted": name }),
                text: format!("Script {name:?} deleted with its runs."),
            })
        }
        ScriptCmd::Runs { name } => runs(session, &name).await,
        ScriptCmd::Run {
            name,
            service,
            replica,
            all,
            args,
        } => {
            let (project, service_name) = session.service_ref(&service)?;
            let path = format!(
                "/projects/{}/services/{}/scripts/{}/run",
                segment(&project),
                segment(&service_name),
                segment(&name)
            );
            if replica.is_some() && all {
                return Err(Error::usage("give --replica ID or --all, not both"));
            }
            if !all && session.out.format == Format::Table {
                let client = session.client()?;
                return stream(&client, &path, replica.as_deref(), &args).await;
            }
            let replica = match (replica, all) {
                (Some(_), true) => unreachable!("refused above"),
                (Some(id), false) => json!(id),
                (None, true) => json!("all"),
                (None, false) => Value::Null,
            };
            let mut body = json!({ "replica": replica });
            if !args.is_empty() {
                body["args"] = json!(args);
            }
            let answer = session.client()?.post(&path, &body).await?;
            let run: ScriptRun = typed(&answer)?;
            if session.out.format == Format::Table {
                print_run(&run);
            } else {
                session.out.show(Shown::Message {
                    value: answer,
                    text: String::new(),
                })?;
            }
            match run.exit_code() {
                0 => Ok(()),
                code => Err(Error::Exit(code.clamp(1, 255) as i32)),
            }
        }
    }
}

/// `/projects/{p}/scripts/{name}` of `NAME` or `PROJECT/NAME`.
fn script_path(session: &Session, reference: &str) -> Result<String> {
    let (p, name) = session.service_ref(reference)?;
    Ok(format!(
        "/projects/{}/scripts/{}",
        segment(&p),
        segment(&name)
    ))
}

async fn ls(session: &mut Session) -> Result<()> {
    let project = session.project()?;
    let list = session
        .client()?
        .get(&format!("/projects/{}/scripts", segment(&project)))
        .await?;
    let items = typed::<List<ScriptView>>(&list)?.items;
    let table = Table {
        headers: vec!["NAME", "INTERPRETER", "BYTES", "TIMEOUT", "UPDATED", "BY"],
        rows: items
            .iter()
            .map(|v| {
                let s = &v.script;
                vec![
                    s.name.clone(),
                    interpreter_text(&s.interpreter),
                    s.body.len().to_string(),
                    format!("{}s", s.timeout),
                    age(s.updated),
                    s.updated_by.clone(),
                ]
            })
            .collect(),
    };
    let ids = items.iter().map(|v| v.script.name.clone()).collect();
    session.out.show(Shown::List {
        value: list,
        table,
        ids,
    })
}

async fn show(session: &mut Session, name: &str) -> Result<()> {
    let path = script_path(session, name)?;
    let answer = session.client()?.get(&path).await?;
    let view: ScriptView = typed(&answer)?;
    let s = &view.script;
    if session.out.format == Format::Table && !session.out.quiet {
        // The body as it is, after the fields: `lbc script show x > x.sh`
        // is not the way to get it back (use -o json), but it reads well.
        let env: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "Name:         {}", s.name);
        let _ = writeln!(out, "Interpreter:  {}", interpreter_text(&s.interpreter));
        let _ = writeln!(out, "Args:         {}", s.args.join(" "));
        let _ = writeln!(out, "Env:          {}", env.join(" "));
        let _ = writeln!(out, "Timeout:      {}s", s.timeout);
        let _ = writeln!(
            out,
            "Updated:      {} ago by {}",
            age(s.updated),
            s.updated_by
        );
        let _ = writeln!(out, "Revision:     {}", view.revision);
        let _ = writeln!(out, "---");
        let _ = out.write_all(s.body.as_bytes());
        if !s.body.ends_with('\n') {
            let _ = writeln!(out);
        }
        return Ok(());
    }
    session.out.show(Shown::One {
        value: answer,
        fields: Vec::new(),
        id: s.name.clone(),
    })
}

async fn runs(session: &mut Session, name: &str) -> Result<()> {
    let path = format!("{}/runs", script_path(session, name)?);
    let list = session.client()?.get(&path).await?;
    let items = typed::<List<ScriptRun>>(&list)?.items;
    let table = Table {
        headers: vec!["RUN", "STARTED", "BY", "SERVICE", "REPLICAS", "EXIT"],
        rows: items
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    age(r.started),
                    r.by.clone(),
                    r.service.clone(),
                    r.replicas.len().to_string(),
                    r.exit_code().to_string(),
                ]
            })
            .collect(),
    };
    let ids = items.iter().map(|r| r.id.clone()).collect();
    session.out.show(Shown::List {
        value: list,
        table,
        ids,
    })
}

/// A run on one replica over the run websocket: its output printed as it
/// comes, then its exit code ours (as [`ScriptRun::exit_code`]).
async fn stream(
    client: &crate::client::Client,
    path: &str,
    replica: Option<&str>,
    args: &[String],
) -> Result<()> {
    let mut query: Vec<String> = replica
        .iter()
        .map(|id| format!("replica={}", segment(id)))
        .collect();
    query.extend(args.iter().map(|a| format!("arg={}", segment(a))));
    let url = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let mut socket = client.websocket(&url).await?;
    let broke = |e: tokio_tungstenite::tungstenite::Error| {
        Error::server(format!("the script run stream broke: {e}"))
    };
    let mut end: Option<ReplicaRun> = None;
    let mut cut = false;
    while let Some(message) = socket.next().await {
        match message.map_err(broke)? {
            Message::Binary(bytes) => super::exec::write_frame(&bytes),
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).unwrap_or_default();
                if value["error"].is_object() {
                    let error: lb_model::views::ErrorBody = typed(&value)?;
                    return Err(crate::client::error_of_control(&error.error));
                }
                cut = value["output_cut"] == true;
                end = Some(typed(&value)?);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let Some(end) = end else {
        return Err(Error::server("the script run stream ended without its end"));
    };
    let mut stderr = std::io::stderr().lock();
    if cut {
        let _ = writeln!(
            stderr,
            "lbc: some output was left out (read too slowly); `lbc script runs` has its head"
        );
    }
    if let Some(error) = &end.error {
        let _ = writeln!(stderr, "lbc: replica {}: {error}", end.replica);
    }
    let run = ScriptRun {
        replicas: vec![end],
        ..Default::default()
    };
    match run.exit_code() {
        0 => Ok(()),
        code => Err(Error::Exit(code.clamp(1, 255) as i32)),
    }
}

/// Each replica's output: stdout to stdout, stderr and notes to stderr.
fn print_run(run: &ScriptRun) {
    let several = run.replicas.len() > 1;
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    for r in &run.replicas {
        if several {
            let exit = r
                .exit_code
                .map_or_else(|| "no exit code".to_owned(), |c| format!("exit {c}"));
            let _ = writeln!(
                stderr,
                "== replica {} ({exit}, {} ms) ==",
                r.replica, r.duration_ms
            );
        }
        let _ = stdout.write_all(r.stdout.as_bytes());
        let _ = stdout.flush();
        let _ = stderr.write_all(r.stderr.as_bytes());
        if r.truncated {
            let _ = writeln!(
                stderr,
                "lbc: output of replica {} was cut (64 KiB a stream)",
                r.replica
            );
        }
        if let Some(error) = &r.error {
            let _ = writeln!(stderr, "lbc: replica {}: {error}", r.replica);
        }
    }
}

/// `--interpreter`: sh, bash, python3, or a command (split on spaces).
fn interpreter_of(given: &str) -> Value {
    let words: Vec<&str> = given.split_whitespace().collect();
    if words.len() > 1 {
        json!(words)
    } else {
        json!(given)
    }
}

fn interpreter_text(interpreter: &Interpreter) -> String {
    match interpreter {
        Interpreter::Name(name) => name.clone(),
        Interpreter::Command(command) => command.join(" "),
    }
}

/// `--env KEY=VALUE` pairs.
fn env_of(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(Error::usage(format!("--env {pair:?} is not KEY=VALUE"))),
        })
        .collect()
}

/// The body from a file, or stdin for `-`.
fn read_body(file: &str) -> Result<String> {
    let mut bytes = Vec::new();
    if file == "-" {
        std::io::stdin().read_to_end(&mut bytes)?;
    } else {
        bytes =
            std::fs::read(file).map_err(|e| Error::usage(format!("cannot read {file:?}: {e}")))?;
    }
    String::from_utf8(bytes).map_err(|_| Error::usage(format!("{file:?} is not UTF-8 text")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters_and_env_from_flags() {
        assert_eq!(interpreter_of("bash"), json!("bash"));
        assert_eq!(
            interpreter_of("/bin/busybox sh"),
            json!(["/bin/busybox", "sh"])
        );
        assert_eq!(env_of(&["A=1=2".into()]).unwrap()["A"], "1=2");
        assert!(env_of(&["=1".into()]).is_err());
        assert!(env_of(&["A".into()]).is_err());
    }
}
