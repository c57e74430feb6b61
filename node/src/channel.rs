//! The websocket to the API (`/api/v1/nodes/connect`): assignments come in
//! and go to the reconciler; statuses from the reconciler and periodic
//! heartbeats go out. Reconnects with exponential backoff and jitter; a
//! refused credential ends the daemon.
//!
//! Several API instances may be named (`--api A,B`): the node connects to
//! one, and when that channel fails or the API ends it (an instance cut off
//! from the store drops its channels), the next attempt goes to the next
//! instance, round the list; the one that answered is kept while it holds.
//!
//! Liveness both ways: the API pings every second, and a connection from
//! which nothing came for [`API_SILENCE`] is dropped and made again. A node
//! that heard nothing from the API for the scheduler's grace (learnt from
//! the desired set) fences itself: its replicas are being placed elsewhere,
//! so it sets the reconciler's [`Fenced`] flag and sends it an empty desired
//! set (every container killed and removed) until the API is back with the
//! node's desired set.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use lb_model::backoff::Backoff;
use lb_model::protocol::{FromNode, ToNode};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::credential::Credential;
use crate::reconcile::Fenced;
use crate::runtime::Runtime;
use crate::{Config, Error, Result};

const HEARTBEAT: Duration = Duration::from_secs(5);
/// The first reconnect delay, after a session that connected.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connection from which nothing came for this long (the API pings every
/// second) is given up and made again.
const API_SILENCE: Duration = Duration::from_secs(3);
/// How long an attempt to connect may take (a SYN dropped by a partition
/// would otherwise wait for the kernel's retries, minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// When the node last heard from the API, and what it learnt of the grace.
#[derive(Debug)]
struct Fence {
    heard: Instant,
    grace: Option<Duration>,
    fenced: Fenced,
}

impl Fence {
    /// When the node must fence itself, unless it hears from the API first.
    fn due(&self) -> Option<Instant> {
        match self.fenced.load(Ordering::SeqCst) {
            true => None,
            false => self.grace.map(|g| self.heard + g),
        }
    }

    /// Sleeps until the fence is due (for ever when it is not).
    async fn wait(&self) {
        match self.due() {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// Tells the reconciler to kill every replica.
    async fn fence(&mut self, to_reconciler: &mpsc::Sender<ToNode>) {
        tracing::warn!(
            silent_ms = self.heard.elapsed().as_millis() as u64,
            "no word from the API for the node grace: fenced, removing every replica"
        );
        self.fenced.store(true, Ordering::SeqCst);
        let nothing = ToNode::Desired {
            replicas: Vec::new(),
            registry: None,
            grace_ms: None,
        };
        let _ = to_reconciler.send(nothing).await;
    }

    /// The API sent the whole desired set: no longer fenced.
    fn desired(&mut self, grace_ms: Option<u64>) {
        self.grace = grace_ms.map(Duration::from_millis);
        self.fenced.store(false, Ordering::SeqCst);
    }
}

/// Keeps the channel up until the credential is refused; sets `fenced`
/// while the node is fenced. Every heartbeat carries what `firewall` could
/// not apply.
#[allow(clippy::too_many_arguments)]
pub async fn run<R: Runtime>(
    config: &Config,
    credential: &Credential,
    runtime: &R,
    to_reconciler: mpsc::Sender<ToNode>,
    answers: mpsc::Sender<FromNode>,
    mut statuses: mpsc::Receiver<FromNode>,
    fenced: Fenced,
    firewall: &crate::firewall::Firewall,
) -> Result<()> {
    let urls: Vec<String> = config.api_urls().into_iter().map(connect_url).collect();
    if urls.is_empty() {
        return Err(Error::Join("no API URL given".into()));
    }
    // The instance tried next: the last one that connected, until it fails.
    let mut current = 0;
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let mut fence = Fence {
        heard: Instant::now(),
        grace: None,
        fenced,
    };
    loop {
        let started = Instant::now();
        let url = &urls[current];
        match session(
            config,
            credential,
            url,
            runtime,
            &to_reconciler,
            &answers,
            &mut statuses,
            &mut fence,
            firewall,
        )
        .await
        {
            Err(Error::Refused) => return Err(Error::Refused),
            Err(err) => tracing::warn!(error = %err, api = %url, "channel to the API lost"),
            Ok(true) => {
                tracing::info!(api = %url, "channel to the API ended");
                backoff.reset();
            }
            Ok(false) => {}
        }
        // However it ended, the next attempt goes to the next instance
        // (the same one when only one is named).
        current = (current + 1) % urls.len();
        // A session that heard from the API was up, however it ended: the
        // next attempt starts from the first delay (else each partition
        // left the backoff longer, up to its 30 s, after the heal).
        if fence.heard > started {
            backoff.reset();
        }
        let wake = Instant::now() + backoff.next_delay();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                _ = fence.wait() => fence.fence(&to_reconciler).await,
            }
        }
    }
}

/// One connection; answers whether it got as far as connecting.
#[allow(clippy::too_many_arguments)]
async fn session<R: Runtime>(
    config: &Config,
    credential: &Credential,
    url: &str,
    runtime: &R,
    to_reconciler: &mpsc::Sender<ToNode>,
    answers: &mpsc::Sender<FromNode>,
    statuses: &mut mpsc::Receiver<FromNode>,
    fence: &mut Fence,
    firewall: &crate::firewall::Firewall,
) -> Result<bool> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Error::Join(format!("bad API URL {url}: {e}")))?;
    let auth = format!("Bearer {}", credential.credential)
        .parse()
        .map_err(|_| Error::Join("credential is not a valid header".into()))?;
    request.headers_mut().insert("authorization", auth);
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request));
    tokio::pin!(connect);
    let connected = loop {
        tokio::select! {
            connected = &mut connect => break connected,
            _ = fence.wait() => fence.fence(to_reconciler).await,
        }
    };
    let Ok(connected) = connected else {
        tracing::debug!(api = %url, "cannot connect to the API: timed out");
        return Ok(false);
    };
    let socket = match connected {
        Ok((socket, _)) => socket,
        Err(tungstenite::Error::Http(resp)) if resp.status() == 401 || resp.status() == 403 => {
            return Err(Error::Refused);
        }
        Err(err) => {
            tracing::debug!(error = %err, api = %url, "cannot connect to the API");
            return Ok(false);
        }
    };
    tracing::info!(api = %url, "connected to the API");
    let (mut tx, mut rx) = socket.split();
    let hello = FromNode::Hello {
        address: config.address.clone().unwrap_or_else(|| "127.0.0.1".into()),
        capacity: crate::host::capacity_of(config),
        ingress: config.routes.is_some(),
    };
    send(&mut tx, &hello).await?;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut containers = 0u32;
    // Streams live as long as this connection: dropping the table closes them.
    let mut streams = crate::streams::Table::default();
    // The last frame of any kind on this connection.
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(heard + API_SILENCE) => {
                return Err(Error::Channel(format!("nothing from the API for {} s", API_SILENCE.as_secs())));
            }
            _ = fence.wait() => fence.fence(to_reconciler).await,
            _ = heartbeat.tick() => {
                let mut status = crate::host::status_of(config, containers);
                status.problems = firewall.problems();
                send(&mut tx, &FromNode::Heartbeat(status)).await?;
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
                // Frames that waited in the socket while this process did
                // not run (stopped, starved) do not undo a silence already
                // past: the fence and the reconnect come first.
                let now = Instant::now();
                if fence.due().is_some_and(|at| at <= now) {
                    fence.fence(to_reconciler).await;
                }
                if heard + API_SILENCE <= now {
                    return Err(Error::Channel(format!("nothing from the API for {} s", API_SILENCE.as_secs())));
                }
                if let Some(Ok(_)) = incoming {
                    heard = now;
                    fence.heard = now;
                }
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => return Ok(true),
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return Err(Error::Channel(err.to_string())),
                };
                match serde_json::from_str::<ToNode>(&text) {
                    Ok(ToNode::Logs { request, replica, tail, timestamps }) => {
                        let (runtime, answers) = (runtime.clone(), answers.clone());
                        tokio::spawn(async move {
                            let result = runtime.logs(&replica, tail.min(10_000), timestamps).await.map_err(|e| e.to_string());
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
                        if let ToNode::Desired { grace_ms, .. } = &message {
                            fence.desired(*grace_ms);
                        }
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

/// The channel's websocket URL on the API at `api` (a base URL).
fn connect_url(api: &str) -> String {
    format!("{}/api/v1/nodes/connect", api.trim_end_matches('/'))
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1)
}

async fn send<S>(tx: &mut S, message: &FromNode) -> Result<()>
where
    S: futures::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let text = serde_json::to_string(message).map_err(|e| Error::Channel(e.to_string()))?;
    tx.send(Message::Text(text))
        .await
        .map_err(|e| Error::Channel(e.to_string()))
}
