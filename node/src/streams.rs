//! Long-lived streams the API opens on a user's behalf: logs that follow and
//! interactive exec. Each runs as its own task, sends its output up the
//! channel as it comes, and ends with one `End` message. Closing the stream
//! (the user went away, or the channel dropped) stops the task.

use std::collections::HashMap;

use futures::StreamExt;
use lb_model::protocol::{FromNode, StreamInput, StreamKind};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::runtime::Runtime;

/// Stdin and resizes waiting for a stream's task; beyond this the user is
/// typing faster than the command reads and input is refused.
const INPUT_QUEUE: usize = 1024;

/// The open streams of one channel session.
#[derive(Default)]
pub struct Table {
    inputs: HashMap<String, mpsc::Sender<StreamInput>>,
}

impl Table {
    /// Starts a stream.
    pub fn open<R: Runtime>(
        &mut self,
        runtime: &R,
        up: &mpsc::Sender<FromNode>,
        stream: String,
        replica: String,
        kind: StreamKind,
    ) {
        self.inputs.retain(|_, tx| !tx.is_closed());
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        self.inputs.insert(stream.clone(), tx);
        let (runtime, up) = (runtime.clone(), up.clone());
        tokio::spawn(async move {
            let ended = match kind {
                StreamKind::Logs {
                    tail,
                    follow,
                    timestamps,
                } => {
                    let what = (tail.min(10_000), follow, timestamps);
                    logs(&runtime, &up, &stream, &replica, what, rx).await
                }
                StreamKind::Exec {
                    command,
                    tty,
                    stdin,
                    cols,
                    rows,
                    env,
                } => {
                    exec(
                        &runtime,
                        &up,
                        &stream,
                        &replica,
                        (command, env),
                        tty,
                        stdin,
                        (cols, rows),
                        rx,
                    )
                    .await
                }
            };
            let (exit_code, error) = match ended {
                Ok(code) => (code, None),
                Err(err) => (None, Some(err)),
            };
            let _ = up
                .send(FromNode::End {
                    stream,
                    exit_code,
                    error,
                })
                .await;
        });
    }

    /// Input for a stream; dropped when the stream is gone or its queue full.
    pub fn input(&mut self, stream: &str, input: StreamInput) {
        if let Some(tx) = self.inputs.get(stream) {
            if tx.try_send(input).is_err() {
                tracing::warn!(stream, "stream input dropped: the command is not reading");
            }
        }
    }

    /// The user went away.
    pub fn close(&mut self, stream: &str) {
        self.inputs.remove(stream);
    }
}

/// Sends logs until the container stops (or at once without `follow`) or
/// the stream is closed.
async fn logs<R: Runtime>(
    runtime: &R,
    up: &mpsc::Sender<FromNode>,
    stream: &str,
    replica: &str,
    (tail, follow, timestamps): (u32, bool, bool),
    mut closed: mpsc::Receiver<StreamInput>,
) -> Result<Option<i64>, String> {
    let mut output = runtime
        .log_stream(replica, tail, follow, timestamps)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(chunk) => {
                    let (channel, data) = chunk.map_err(|e| e.to_string())?;
                    send_output(up, stream, channel, data.to_vec()).await?;
                }
                None => return Ok(None),
            },
            input = closed.recv() => {
                if input.is_none() {
                    return Ok(None);
                }
            }
        }
    }
}

/// Runs a command with stdin attached; answers its exit code.
#[allow(clippy::too_many_arguments)]
async fn exec<R: Runtime>(
    runtime: &R,
    up: &mpsc::Sender<FromNode>,
    stream: &str,
    replica: &str,
    (command, env): (Vec<String>, Vec<String>),
    tty: bool,
    stdin: bool,
    (cols, rows): (u16, u16),
    mut inputs: mpsc::Receiver<StreamInput>,
) -> Result<Option<i64>, String> {
    let mut attached = runtime
        .exec_attached(replica, command, env, tty, stdin)
        .await
        .map_err(|e| e.to_string())?;
    if tty && cols > 0 && rows > 0 {
        // Best effort: a command that already exited cannot be resized.
        let _ = runtime.resize_exec(&attached.id, cols, rows).await;
    }
    let mut input = Some(attached.input);
    loop {
        tokio::select! {
            chunk = attached.output.next() => match chunk {
                Some(chunk) => {
                    let (channel, data) = chunk.map_err(|e| e.to_string())?;
                    send_output(up, stream, channel, data.to_vec()).await?;
                }
                None => break,
            },
            message = inputs.recv() => match message {
                Some(StreamInput::Stdin { data }) => {
                    if let Some(writer) = input.as_mut() {
                        if writer.write_all(&data).await.is_err() || writer.flush().await.is_err() {
                            input = None;
                        }
                    }
                }
                Some(StreamInput::Resize { cols, rows }) => {
                    if tty && cols > 0 && rows > 0 {
                        let _ = runtime.resize_exec(&attached.id, cols, rows).await;
                    }
                }
                Some(StreamInput::CloseStdin) => {
                    if let Some(mut writer) = input.take() {
                        let _ = writer.shutdown().await;
                    }
                }
                None => {
                    // The user went away: hang up the command's stdin (a
                    // shell then exits) and stop reading its output.
                    if let Some(mut writer) = input.take() {
                        let _ = writer.shutdown().await;
                    }
                    return Ok(None);
                }
            },
        }
    }
    runtime
        .exec_exit_code(&attached.id)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

async fn send_output(
    up: &mpsc::Sender<FromNode>,
    stream: &str,
    channel: u8,
    data: Vec<u8>,
) -> Result<(), String> {
    up.send(FromNode::Output {
        stream: stream.to_owned(),
        channel,
        data,
    })
    .await
    .map_err(|_| "the channel to the API closed".to_string())
}
