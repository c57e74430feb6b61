//! `lbc exec [-i] [-t] SERVICE -- CMD...`: a one-off command through
//! `POST .../exec` (its output printed, its exit code ours), or with `-i` or
//! `-t` an interactive session over the exec websocket: raw mode on a
//! terminal, window size changes sent on SIGWINCH, the remote exit code
//! becomes lbc's.
//!
//! Websocket framing: the first client message is a text frame
//! `{"command", "tty", "stdin", "replica", "cols", "rows"}`; then binary
//! frames `0x00` + stdin bytes and text frames `{"resize": {"cols", "rows"}}`
//! or `{"close_stdin": true}`. The server sends binary `0x01` + stdout and
//! `0x02` + stderr, and at the end a text frame `{"exit_code": N}` or
//! `{"error": {...}}`, then closes.

use std::io::{IsTerminal, Read, Write};

use futures::{SinkExt, StreamExt};
use lb_model::protocol::ExecOutput;
use lb_model::views::{List, ReplicaView, StreamEnd};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::args::Exec;
use crate::client::{error_of_control, typed};
use crate::error::{Error, Result};
use crate::session::Session;

/// Runs `lbc exec`.
pub async fn run(session: &mut Session, mut args: Exec) -> Result<()> {
    let service_path = session.service_path(&args.service)?;
    let path = format!("{service_path}/exec");
    let client = session.client()?;
    if let Some(given) = &args.replica {
        // A short id or prefix becomes the full id.
        let list = client.get(&format!("{service_path}/replicas")).await?;
        let items = typed::<List<ReplicaView>>(&list)?.items;
        let id = super::ids::resolve(items.iter().map(|r| r.id.as_str()), given, &args.service)?;
        args.replica = Some(id);
    }
    if !args.interactive && !args.tty {
        return one_off(&client, &path, &args).await;
    }
    interactive(&client, &path, &args).await
}

async fn one_off(client: &crate::client::Client, path: &str, args: &Exec) -> Result<()> {
    if !(1..=300).contains(&args.timeout) {
        return Err(Error::usage(format!(
            "--timeout {} is out of range (1–300 seconds)",
            args.timeout
        )));
    }
    let answer = client
        .post(
            path,
            &json!({"command": args.command, "replica": args.replica, "timeout": args.timeout}),
        )
        .await?;
    let output: ExecOutput =
        typed(&answer).map_err(|_| Error::server("the exec answer holds no exit code"))?;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(output.stdout.as_bytes());
    let _ = stdout.flush();
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(output.stderr.as_bytes());
    let _ = stderr.flush();
    match output.exit_code {
        0 => Ok(()),
        code => Err(Error::Exit(code.clamp(1, 255) as i32)),
    }
}

/// Leaves raw mode when dropped, however the session ends.
struct RawMode;

impl RawMode {
    fn enable() -> Result<Self> {
        crossterm::terminal::enable_raw_mode()
            .map_err(|e| Error::failed(format!("cannot put the terminal in raw mode: {e}")))?;
        Ok(Self)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

fn window() -> (u16, u16) {
    crossterm::terminal::size().unwrap_or((80, 24))
}

async fn interactive(client: &crate::client::Client, path: &str, args: &Exec) -> Result<()> {
    let terminal = std::io::stdin().is_terminal();
    let mut socket = client.websocket(path).await?;
    let (cols, rows) = window();
    let start = json!({"command": args.command, "tty": args.tty, "stdin": args.interactive,
        "replica": args.replica, "cols": cols, "rows": rows});
    socket
        .send(Message::Text(start.to_string()))
        .await
        .map_err(|e| Error::server(format!("the exec stream broke: {e}")))?;
    // Raw mode only for a terminal session that reads our terminal.
    let _raw = if args.tty && args.interactive && terminal {
        Some(RawMode::enable()?)
    } else {
        None
    };
    let (mut sink, mut stream) = socket.split();

    // stdin: a blocking reader thread; None marks the end.
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Option<Vec<u8>>>(16);
    if args.interactive {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = stdin_tx.blocking_send(None);
                        return;
                    }
                    Ok(n) => {
                        if stdin_tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        drop(stdin_tx);
    }
    let mut stdin_open = args.interactive;
    let mut resize = if args.tty && terminal {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };

    let mut exit_code: Option<i64> = None;
    let broke = |e: tokio_tungstenite::tungstenite::Error| {
        Error::server(format!("the exec stream broke: {e}"))
    };
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { break };
                match message {
                    Ok(Message::Binary(bytes)) => write_frame(&bytes),
                    Ok(Message::Text(text)) => {
                        let end: StreamEnd = serde_json::from_str(&text).unwrap_or_default();
                        if let Some(code) = end.exit_code {
                            exit_code = Some(code);
                        } else if let Some(error) = &end.error {
                            return Err(error_of_control(error));
                        }
                    }
                    Ok(Message::Close(_)) => break,
                    Ok(_) => {}
                    Err(e) => return Err(broke(e)),
                }
            }
            input = stdin_rx.recv(), if stdin_open => {
                match input.flatten() {
                    Some(bytes) => {
                        let mut frame = Vec::with_capacity(bytes.len() + 1);
                        frame.push(0u8);
                        frame.extend_from_slice(&bytes);
                        sink.send(Message::Binary(frame)).await.map_err(broke)?;
                    }
                    None => {
                        stdin_open = false;
                        let close = json!({"close_stdin": true}).to_string();
                        sink.send(Message::Text(close)).await.map_err(broke)?;
                    }
                }
            }
            Some(()) = async { match resize.as_mut() { Some(s) => s.recv().await, None => None } } => {
                let (cols, rows) = window();
                let msg = json!({"resize": {"cols": cols, "rows": rows}}).to_string();
                sink.send(Message::Text(msg)).await.map_err(broke)?;
            }
        }
    }
    let _ = sink.close().await;
    match exit_code {
        Some(0) => Ok(()),
        Some(code) => Err(Error::Exit(code.clamp(1, 255) as i32)),
        None => Err(Error::server("the exec stream ended without an exit code")),
    }
}

/// Writes one binary frame of an exec or script-run stream: `0x01` +
/// stdout or `0x02` + stderr, flushed at once; other tags are ignored.
pub(super) fn write_frame(bytes: &[u8]) {
    match bytes.split_first() {
        Some((1, data)) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(data);
            let _ = out.flush();
        }
        Some((2, data)) => {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(data);
            let _ = err.flush();
        }
        _ => {}
    }
}
