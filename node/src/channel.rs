//! The websocket to the API (`/api/v1/nodes/connect`): assignments come in
//! and go to the reconciler; statuses from the reconciler and periodic
//! heartbeats go out. Reconnects with exponential backoff and jitter; a
//! refused credential ends the daemon.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use lb_model::backoff::Backoff;
use lb_model::protocol::{FromNode, ToNode};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::credential::Credential;
use crate::runtime::Runtime;
use crate::{Config, Error, Result};

const HEARTBEAT: Duration = Duration::from_secs(5);
/// The first reconnect delay, after a session that connected.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keeps the channel up until the credential is refused.
pub async fn run<R: Runtime>(
    config: &Config,
    credential: &Credential,
    runtime: &R,
    to_reconciler: mpsc::Sender<ToNode>,
    answers: mpsc::Sender<FromNode>,
    mut statuses: mpsc::Receiver<FromNode>,
) -> Result<()> {
    let url = format!("{}/api/v1/nodes/connect", config.api.trim_end_matches('/'))
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    loop {
        match session(
            config,
            credential,
            &url,
            runtime,
            &to_reconciler,
            &answers,
            &mut statuses,
        )
        .await
        {
            Err(Error::Refused) => return Err(Error::Refused),
            Err(err) => tracing::warn!(error = %err, "channel to the API lost"),
            Ok(true) => backoff.reset(),
            Ok(false) => {}
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One connection; answers whether it got as far as connecting.
async fn session<R: Runtime>(
    config: &Config,
    credential: &Credential,
    url: &str,
    runtime: &R,
    to_reconciler: &mpsc::Sender<ToNode>,
    answers: &mpsc::Sender<FromNode>,
    statuses: &mut mpsc::Receiver<FromNode>,
) -> Result<bool> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Error::Join(format!("bad API URL {url}: {e}")))?;
    let auth = format!("Bearer {}", credential.credential)
        .parse()
        .map_err(|_| Error::Join("credential is not a valid header".into()))?;
    request.headers_mut().insert("authorization", auth);
    let socket = match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => socket,
        Err(tungstenite::Error::Http(resp)) if resp.status() == 401 || resp.status() == 403 => {
            return Err(Error::Refused);
        }
        Err(err) => {
            tracing::debug!(error = %err, "cannot connect to the API");
            return Ok(false);
        }
    };
    tracing::info!("connected to the API");
    let (mut tx, mut rx) = socket.split();
    let hello = FromNode::Hello {
        address: config.address.clone().unwrap_or_else(|| "127.0.0.1".into()),
        capacity: crate::host::capacity(&config.data_dir),
        ingress: config.routes.is_some(),
    };
    send(&mut tx, &hello).await?;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut containers = 0u32;
    // Streams live as long as this connection: dropping the table closes them.
    let mut streams = crate::streams::Table::default();
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                send(&mut tx, &FromNode::Heartbeat(crate::host::status(&config.data_dir, containers))).await?;
            }
            status = statuses.recv() => {
                let Some(status) = status else { return Ok(true) };
                if let FromNode::Heartbeat(h) = &status {
                    containers = h.containers;
                    continue;
                }
                send(&mut tx, &status).await?;
            }
            incoming = rx.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => return Ok(true),
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return Err(Error::Join(format!("channel error: {err}"))),
                };
                match serde_json::from_str::<ToNode>(&text) {
                    Ok(ToNode::Logs { request, replica, tail }) => {
                        let (runtime, answers) = (runtime.clone(), answers.clone());
                        tokio::spawn(async move {
                            let result = runtime.logs(&replica, tail.min(10_000)).await.map_err(|e| e.to_string());
                            let _ = answers.send(FromNode::Logs { request, result }).await;
                        });
                    }
                    Ok(ToNode::Exec { request, replica, command, timeout }) => {
                        let (runtime, answers) = (runtime.clone(), answers.clone());
                        tokio::spawn(async move {
                            let limit = Duration::from_secs(timeout.clamp(1, 3600));
                            let result = match tokio::time::timeout(limit, runtime.exec(&replica, command)).await {
                                Ok(result) => result.map_err(|e| e.to_string()),
                                Err(_) => Err(format!("the command did not finish within {} s", limit.as_secs())),
                            };
                            let _ = answers.send(FromNode::Exec { request, result }).await;
                        });
                    }
                    Ok(ToNode::Open { stream, replica, kind }) => {
                        streams.open(runtime, answers, stream, replica, kind);
                    }
                    Ok(ToNode::Input { stream, input }) => streams.input(&stream, input),
                    Ok(ToNode::Close { stream }) => streams.close(&stream),
                    Ok(ToNode::Routes(table)) => {
                        if let Some(routes) = &config.routes {
                            routes.send_replace(std::sync::Arc::new(*table));
                        }
                    }
                    Ok(message) => {
                        if to_reconciler.send(message).await.is_err() {
                            return Ok(true);
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "unreadable message from the API"),
                }
            }
        }
    }
}

async fn send<S>(tx: &mut S, message: &FromNode) -> Result<()>
where
    S: futures::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let text = serde_json::to_string(message).map_err(|e| Error::Join(e.to_string()))?;
    tx.send(Message::Text(text))
        .await
        .map_err(|e| Error::Join(format!("channel error: {e}")))
}
