//! A project's stored scripts: create, read, replace and delete them, run
//! one inside a service's running replicas, and read the runs recorded.
//!
//! A run is a second process in a running container (the container is not
//! restarted): an exec stream (`StreamKind::Exec` with stdin) whose command
//! is the interpreter reading its program from stdin ([`Script::command`])
//! and whose stdin is the body, then end of file. The body is never part of
//! a command line. Runs on every replica go in parallel. At the time limit
//! the stream is dropped and the run's processes are killed by a one-off
//! exec that finds them by the `LB_SCRIPT_RUN` variable they carry (this
//! needs `sh`, `tr`, `grep` and `kill` in the image; without them the
//! answer says the run was not killed).
//!
//! A run on one replica can also stream ([`prepare_stream`]): its output is
//! copied, as it comes, to a queue the caller reads (the websocket of
//! `GET .../scripts/{name}/run`), and the run is recorded as any other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use lb_model::protocol::{FromNode, StreamInput, StreamKind, ToNode};
use lb_model::script::{check_args, KEEP_RUNS, MAX_OUTPUT, RUN_VAR};
use lb_model::{ReplicaRun, ReplicaState, RunRequest, Script, ScriptRun, ScriptView, Target};
use lb_store::{Compare, Op, StoreExt, Txn};
use tokio::sync::mpsc;

use super::resolve::{self, LoadedService};
use super::{matches, replicas, retry_txn, Attempt};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::decode;

/// Bytes of the body sent in one stdin message.
const STDIN_CHUNK: usize = 32 * 1024;

fn not_found(name: &str, project: &str) -> ApiError {
    ApiError::not_found(format!("script {name:?} not found in project {project:?}"))
}

/// A project's scripts, by name.
pub async fn list(ctx: &Ctx, caller: &Caller, p: &str) -> Result<Vec<ScriptView>> {
    let project = resolve::project(ctx, caller, p).await?;
    let (kvs, _) = ctx
        .store
        .list(&ctx.keys.scripts(&project.project.id))
        .await?;
    kvs.iter()
        .map(|kv| {
            Ok(ScriptView {
                script: decode(kv)?,
                revision: kv.mod_revision,
            })
        })
        .collect()
}

/// A script, with its record's revision.
pub async fn get(ctx: &Ctx, caller: &Caller, p: &str, name: &str) -> Result<ScriptView> {
    let project = resolve::project(ctx, caller, p).await?;
    load(ctx, &project.project.id, &project.project.name, name).await
}

async fn load(ctx: &Ctx, pid: &str, project: &str, name: &str) -> Result<ScriptView> {
    if lb_model::validate_name(name).is_err() {
        return Err(not_found(name, project));
    }
    let kv = ctx
        .store
        .get(&ctx.keys.script(pid, name))
        .await?
        .ok_or_else(|| not_found(name, project))?;
    Ok(ScriptView {
        script: decode(&kv)?,
        revision: kv.mod_revision,
    })
}

/// Checks a script written to `name` (the body's name, if given, must be
/// the same) and stamps it.
fn prepare(caller: &Caller, name: &str, mut script: Script) -> Result<Script> {
    if script.name.is_empty() {
        script.name = name.to_owned();
    }
    if script.name != name {
        return Err(ApiError::invalid(
            "name",
            format!("{:?} differs from the path's {name:?}", script.name),
        ));
    }
    script.validate()?;
    script.updated = lb_model::now();
    script.updated_by = caller.user.username.clone();
    Ok(script)
}

/// Creates a script; 409 when the name is taken.
pub async fn create(ctx: &Ctx, caller: &Caller, p: &str, script: Script) -> Result<ScriptView> {
    let project = resolve::project(ctx, caller, p).await?;
    let name = script.name.clone();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    let script = prepare(caller, &name, script)?;
    let key = ctx.keys.script(&project.project.id, &name);
    match ctx.store.create(&key, lb_store::encode(&script)).await? {
        Some(revision) => Ok(ScriptView { script, revision }),
        None => Err(ApiError::conflict(format!(
            "script {name:?} already exists in project {:?}",
            project.project.name
        ))),
    }
}

/// Creates or replaces a script (`expected`: the revision `If-Match` pins).
/// Answers it and whether it was created.
pub async fn put(
    ctx: &Ctx,
    caller: &Caller,
    (p, name): (&str, &str),
    expected: Option<i64>,
    script: Script,
) -> Result<(ScriptView, bool)> {
    let script = prepare(caller, name, script)?;
    let value = lb_store::encode(&script);
    let what = format!("script {name:?}");
    retry_txn(expected, &what, || async {
        let project = resolve::project(ctx, caller, p).await?;
        let key = ctx.keys.script(&project.project.id, name);
        let current = ctx.store.get(&key).await?.map_or(0, |kv| kv.mod_revision);
        if expected.is_some() && current == 0 {
            return Err(not_found(name, &project.project.name));
        }
        if !matches(expected, current) {
            return Ok(Attempt::Conflict);
        }
        Ok(
            match ctx.store.put_if(&key, value.clone(), current).await? {
                Some(revision) => Attempt::Done((
                    ScriptView {
                        script: script.clone(),
                        revision,
                    },
                    current == 0,
                )),
                None => Attempt::Conflict,
            },
        )
    })
    .await
}

/// Deletes a script and its runs.
pub async fn delete(
    ctx: &Ctx,
    caller: &Caller,
    p: &str,
    name: &str,
    expected: Option<i64>,
) -> Result<()> {
    let what = format!("script {name:?}");
    retry_txn(expected, &what, || async {
        let project = resolve::project(ctx, caller, p).await?;
        let pid = &project.project.id;
        let current = load(ctx, pid, &project.project.name, name).await?;
        if !matches(expected, current.revision) {
            return Ok(Attempt::Conflict);
        }
        let txn = Txn::new()
            .when(Compare::ModRevision(
                ctx.keys.script(pid, name),
                current.revision,
            ))
            .then(Op::delete(ctx.keys.script(pid, name)))
            .then(Op::DeletePrefix(ctx.keys.script_runs(pid, name)));
        Ok(if ctx.store.txn(txn).await?.succeeded {
            Attempt::Done(())
        } else {
            Attempt::Conflict
        })
    })
    .await
}

/// A script's recorded runs, newest first (the last [`KEEP_RUNS`]).
pub async fn runs(ctx: &Ctx, caller: &Caller, p: &str, name: &str) -> Result<Vec<ScriptRun>> {
    let project = resolve::project(ctx, caller, p).await?;
    let pid = &project.project.id;
    load(ctx, pid, &project.project.name, name).await?;
    let (kvs, _) = ctx.store.list(&ctx.keys.script_runs(pid, name)).await?;
    kvs.iter().rev().map(decode).collect()
}

/// A run checked and ready: the service, the script, where it goes and its
/// record so far.
struct Begun {
    loaded: LoadedService,
    script: Script,
    args: Option<Vec<String>>,
    targets: Vec<(String, String)>,
    run: ScriptRun,
}

/// Checks a run request and finds the replicas it goes to.
async fn begin(
    ctx: &Ctx,
    caller: &Caller,
    (p, s, name): (&str, &str, &str),
    request: RunRequest,
) -> Result<Begun> {
    if let Some(args) = &request.args {
        check_args("args", args)?;
    }
    let loaded = resolve::service(ctx, caller, p, s).await?;
    let view = load(ctx, &loaded.pid, &loaded.project_name, name).await?;
    let script = view.script;
    let targets = targets(ctx, &loaded, &request.replica).await?;
    let run = ScriptRun {
        id: lb_model::ids::new_id(),
        script: name.to_owned(),
        service: loaded.meta.name.clone(),
        by: caller.user.username.clone(),
        started: lb_model::now(),
        args: request.args.clone().unwrap_or_else(|| script.args.clone()),
        replicas: Vec::new(),
    };
    Ok(Begun {
        loaded,
        script,
        args: request.args,
        targets,
        run,
    })
}

/// Runs a script in a service's running replicas: the first running one,
/// the one named, or all of them in parallel. Records the run and answers
/// it, each replica's output cut at [`MAX_OUTPUT`]. When the interpreter is
/// missing in every replica, answers 422 naming it (the run is recorded).
pub async fn run(
    ctx: &Ctx,
    caller: &Caller,
    (p, s, name): (&str, &str, &str),
    request: RunRequest,
) -> Result<ScriptRun> {
    let begun = begin(ctx, caller, (p, s, name), request).await?;
    let id = begun.run.id.clone();
    let service = begun.loaded.meta.name.clone();
    // A task of its own: a caller who goes away does not stop the run
    // half-way, and its time limit and record still hold.
    let task = tokio::spawn(execute(
        ctx.clone(),
        begun.loaded.pid,
        begun.script,
        begun.args,
        begun.targets,
        begun.run,
        None,
    ));
    let run = task
        .await
        .map_err(|e| ApiError::internal(format!("script run {id}: {e}")))?;
    tracing::info!(run = %id, script = name, %service, exit = run.exit_code(), "script run");
    if !run.replicas.is_empty()
        && run.replicas.iter().all(|r| {
            r.error
                .as_deref()
                .is_some_and(|e| e.starts_with("interpreter "))
        })
    {
        let message = run.replicas[0].error.clone().unwrap_or_default();
        return Err(ApiError::unprocessable(format!(
            "{message} (service {service:?}); run {id} recorded"
        ))
        .with_field("interpreter"));
    }
    Ok(run)
}

/// Output of a streamed run as it comes: the channel (1 stdout, 2 stderr)
/// and the bytes.
pub type Chunk = (u8, Vec<u8>);

/// Output chunks a streamed run holds for a reader who is behind; further
/// behind, the stream stops carrying output (the run and its record go on).
const STREAM_QUEUE: usize = 1024;

/// Where a streamed run copies its output.
#[derive(Clone)]
struct Tee {
    tx: mpsc::Sender<Chunk>,
    /// Set when output was left out because the reader fell behind.
    cut: Arc<AtomicBool>,
}

impl Tee {
    fn send(&self, channel: u8, data: &[u8]) {
        if self.cut.load(Ordering::Relaxed) {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send((channel, data.to_vec()))
        {
            self.cut.store(true, Ordering::Relaxed);
        }
    }
}

/// A run on one replica checked and ready to stream ([`Prepared::start`]).
pub struct Prepared {
    ctx: Ctx,
    begun: Begun,
}

/// A streamed run going on: its output as it comes, then its result.
pub struct Streaming {
    /// The run id.
    pub id: String,
    /// The replica it runs in.
    pub replica: String,
    /// Output as it comes; closes when the run is over and recorded.
    pub output: mpsc::Receiver<Chunk>,
    /// Set when output was left out of `output` because it was read too
    /// slowly (the answer and the record still hold it, cut at
    /// [`MAX_OUTPUT`]).
    pub cut: Arc<AtomicBool>,
    /// The run, once over and recorded.
    pub done: tokio::task::JoinHandle<ScriptRun>,
}

/// Checks a run that streams: one replica (the first running one or the
/// one named, not `"all"`), the script and its arguments; nothing runs yet.
pub async fn prepare_stream(
    ctx: &Ctx,
    caller: &Caller,
    (p, s, name): (&str, &str, &str),
    request: RunRequest,
) -> Result<Prepared> {
    if request.replica == Target::All {
        return Err(ApiError::invalid(
            "replica",
            "a run streams from one replica: give its id, or none for the first running one",
        ));
    }
    let begun = begin(ctx, caller, (p, s, name), request).await?;
    Ok(Prepared {
        ctx: ctx.clone(),
        begun,
    })
}

impl Prepared {
    /// Starts the run in a task of its own: the reader going away does not
    /// stop it, and its time limit and record still hold.
    pub fn start(self) -> Streaming {
        let Begun {
            loaded,
            script,
            args,
            targets,
            run,
        } = self.begun;
        let (tx, output) = mpsc::channel(STREAM_QUEUE);
        let cut = Arc::new(AtomicBool::new(false));
        let tee = Tee {
            tx,
            cut: cut.clone(),
        };
        let id = run.id.clone();
        let replica = targets.first().map(|(r, _)| r.clone()).unwrap_or_default();
        tracing::info!(run = %id, script = %script.name, service = %loaded.meta.name, %replica, "script run streams");
        let done = tokio::spawn(execute(
            self.ctx,
            loaded.pid,
            script,
            args,
            targets,
            run,
            Some(tee),
        ));
        Streaming {
            id,
            replica,
            output,
            cut,
            done,
        }
    }
}

/// Runs `script` in every target in parallel (output copied to `tee` as
/// it comes) and records the run.
async fn execute(
    ctx: Ctx,
    pid: String,
    script: Script,
    args: Option<Vec<String>>,
    targets: Vec<(String, String)>,
    mut run: ScriptRun,
    tee: Option<Tee>,
) -> ScriptRun {
    let command = script.command(args.as_deref());
    let env = script.environment(&run.id);
    let timeout = Duration::from_secs(script.timeout);
    let program = script.interpreter.program();
    let ctx = &ctx;
    let run_id = run.id.as_str();
    run.replicas = join_all(targets.into_iter().map(|(replica, node)| {
        let (command, env, body) = (command.clone(), env.clone(), script.body.as_str());
        let tee = tee.clone();
        async move {
            let mut result = run_in(
                ctx,
                (&node, &replica),
                (command, env, body),
                (timeout, run_id),
                tee,
            )
            .await;
            result.replica = replica;
            name_missing_interpreter(&mut result, program);
            result
        }
    }))
    .await;
    if let Err(err) = record(ctx, &pid, &script.name, &run).await {
        tracing::warn!(run = %run.id, error = %err.message, "a script run was not recorded");
    }
    run
}

/// The replicas a run goes to, with their nodes.
async fn targets(
    ctx: &Ctx,
    loaded: &LoadedService,
    target: &Target,
) -> Result<Vec<(String, String)>> {
    match target {
        Target::One => Ok(vec![replicas::target(ctx, loaded, None).await?]),
        Target::Replica(rid) => Ok(vec![replicas::target(ctx, loaded, Some(rid)).await?]),
        Target::All => {
            let all: Vec<(String, String)> = replicas::of(ctx, &loaded.pid, &loaded.meta.id)
                .await?
                .into_iter()
                .filter(|(_, s)| s.as_ref().is_some_and(|s| s.state == ReplicaState::Running))
                .filter_map(|(r, _)| Some((r.id, r.node?)))
                .collect();
            if all.is_empty() {
                return Err(ApiError::unprocessable(format!(
                    "service {:?} has no running replica",
                    loaded.meta.name
                )));
            }
            Ok(all)
        }
    }
}

/// Runs the command in one replica with the body on its stdin, to its end
/// or the time limit; output is copied to `tee` as it comes.
async fn run_in(
    ctx: &Ctx,
    (node, replica): (&str, &str),
    (command, env, body): (Vec<String>, Vec<String>, &str),
    (timeout, run_id): (Duration, &str),
    tee: Option<Tee>,
) -> ReplicaRun {
    let start = Instant::now();
    let mut out = ReplicaRun::default();
    let mut output = Output::default();
    let kind = StreamKind::Exec {
        command,
        tty: false,
        stdin: true,
        cols: 0,
        rows: 0,
        env,
    };
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let session = match ctx.streams.open(node, replica, kind).await {
        Ok(session) => Some(session),
        Err(err) => {
            out.error = Some(err.message);
            None
        }
    };
    if let Some(mut session) = session {
        let mut sent = Ok(());
        for chunk in body.as_bytes().chunks(STDIN_CHUNK) {
            sent = session
                .input(StreamInput::Stdin {
                    data: chunk.to_vec(),
                })
                .await;
            if sent.is_err() {
                break;
            }
        }
        if sent.is_ok() {
            sent = session.input(StreamInput::CloseStdin).await;
        }
        if let Err(err) = sent {
            out.error = Some(err.message);
        } else {
            loop {
                tokio::select! {
                    message = session.output.recv() => match message {
                        Some(FromNode::Output { channel, data, .. }) => {
                            if let Some(tee) = &tee {
                                tee.send(channel, &data);
                            }
                            output.add(channel, &data);
                        }
                        Some(FromNode::End { exit_code, error, .. }) => {
                            out.exit_code = exit_code;
                            out.error = error;
                            if exit_code.is_none() && out.error.is_none() {
                                out.error = Some("the run ended without an exit code".into());
                            }
                            break;
                        }
                        Some(_) => {}
                        None => {
                            out.error = Some("the replica's node went away, or the output came faster than it was read".into());
                            break;
                        }
                    },
                    () = &mut deadline => {
                        drop(session);
                        out.timed_out = true;
                        out.error = Some(match kill(ctx, node, replica, run_id).await {
                            Ok(()) => format!("timed out after {} s: killed", timeout.as_secs()),
                            Err(why) => format!("timed out after {} s; its processes could not be killed: {why}", timeout.as_secs()),
                        });
                        break;
                    }
                }
            }
        }
    }
    out.stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    out.stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    out.truncated = output.truncated;
    out.duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    out
}

/// A run's output, each stream cut at [`MAX_OUTPUT`].
#[derive(Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
}

impl Output {
    fn add(&mut self, channel: u8, data: &[u8]) {
        let to = if channel == 2 {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        let room = MAX_OUTPUT.saturating_sub(to.len());
        if data.len() > room {
            self.truncated = true;
        }
        to.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// Kills every process of a run in a replica: those whose environment
/// holds `LB_SCRIPT_RUN=<run>` (the interpreter and what it started). The
/// run id is lb's own (upper-case letters and digits), the shell text fixed.
async fn kill(ctx: &Ctx, node: &str, replica: &str, run: &str) -> std::result::Result<(), String> {
    const KILL: &str = "for d in /proc/[0-9]*; do \
        if tr '\\0' '\\n' < \"$d/environ\" 2>/dev/null | grep -qx \"$0=$1\"; then \
        kill -9 \"${d#/proc/}\" 2>/dev/null; fi; done; exit 0";
    let command = vec![
        "sh".into(),
        "-c".into(),
        KILL.into(),
        RUN_VAR.into(),
        run.to_owned(),
    ];
    let make = |request| ToNode::Exec {
        request,
        replica: replica.to_owned(),
        command,
        timeout: 10,
    };
    match ctx.streams.ask(node, make, Duration::from_secs(15)).await {
        Ok(FromNode::Exec {
            result: Ok(output), ..
        }) if output.exit_code == 0 => Ok(()),
        Ok(FromNode::Exec {
            result: Ok(output), ..
        }) => Err(format!(
            "exit code {}: {}",
            output.exit_code,
            first_line(&format!("{}{}", output.stderr, output.stdout))
        )),
        Ok(FromNode::Exec {
            result: Err(message),
            ..
        }) => Err(message),
        Ok(_) => Err("the node answered something else".into()),
        Err(err) => Err(err.message),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

/// Turns Docker's answer to a missing program (exit 126 or 127 with "exec
/// failed: ... executable file not found", or the same as an error) into
/// an error naming the interpreter.
fn name_missing_interpreter(run: &mut ReplicaRun, program: &str) {
    let said = format!(
        "{}\n{}\n{}",
        run.error.as_deref().unwrap_or(""),
        run.stdout,
        run.stderr
    );
    let failed_exec = said.contains("exec failed")
        && (said.contains("executable file not found")
            || said.contains("no such file or directory"));
    let by_code = matches!(run.exit_code, Some(126 | 127)) || run.error.is_some();
    if failed_exec && by_code {
        let detail = said
            .lines()
            .find(|l| l.contains("exec failed"))
            .unwrap_or("")
            .trim()
            .to_owned();
        run.error = Some(format!(
            "interpreter {program} not found in replica {} ({detail})",
            run.replica
        ));
    }
}

/// Records a run (output cut to heads) and deletes the runs beyond the
/// last [`KEEP_RUNS`] of the script.
async fn record(ctx: &Ctx, pid: &str, name: &str, run: &ScriptRun) -> Result<()> {
    let key = ctx.keys.script_run(pid, name, &run.id);
    ctx.store.put(&key, lb_store::encode(&run.record())).await?;
    let (kvs, _) = ctx.store.list(&ctx.keys.script_runs(pid, name)).await?;
    if kvs.len() > KEEP_RUNS {
        let old = kvs[..kvs.len() - KEEP_RUNS]
            .iter()
            .map(|kv| Op::delete(kv.key.clone()))
            .collect();
        ctx.store.write_all(old).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_per_stream() {
        let mut out = Output::default();
        out.add(1, &vec![b'a'; MAX_OUTPUT - 1]);
        out.add(2, b"err");
        assert!(!out.truncated);
        out.add(1, b"bc");
        assert_eq!(out.stdout.len(), MAX_OUTPUT);
        assert!(out.truncated);
        assert_eq!(out.stderr, b"err");
    }

    #[test]
    fn a_missing_interpreter_is_named() {
        let check = |code: Option<i64>, stdout: &str, error: Option<&str>, named: bool| {
            let mut run = ReplicaRun {
                replica: "R".into(),
                exit_code: code,
                stdout: stdout.into(),
                error: error.map(str::to_owned),
                ..Default::default()
            };
            name_missing_interpreter(&mut run, "python3");
            let said = run.error.unwrap_or_default();
            assert_eq!(
                said.starts_with("interpreter python3 not found"),
                named,
                "{said}"
            );
        };
        let docker = "OCI runtime exec failed: exec failed: unable to start container process: exec: \"python3\": executable file not found in $PATH: unknown";
        check(Some(126), docker, None, true);
        check(None, "", Some(docker), true);
        check(Some(127), "sh: foo: not found", None, false);
        check(Some(0), docker, None, false);
        check(Some(1), "", None, false);
    }
}
