//! Several API instances behind one address: a node's channel lands on one
//! of them, which records itself at `/lb/nodes/<id>/channel` (bound to the
//! channel's lease). A log or exec request reaching another instance is
//! forwarded there over two internal routes, authenticated with a cluster
//! secret kept in the store:
//!
//! - `POST /api/v1/internal/ask`: `{"node", "message", "limit"}` -> the
//!   node's answer (one-off logs and exec);
//! - `GET /api/v1/internal/stream` (websocket): first `{"node", "replica",
//!   "kind"}`, then `ToNode` messages one way and `FromNode` the other.
//!
//! The receiving instance only serves nodes it holds itself, so a request
//! is forwarded at most once.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use lb_model::keys::Keys;
use lb_model::protocol::{FromNode, StreamKind, ToNode};
use lb_store::Shared;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::error::{ApiError, Result};
use crate::streams::Session;

/// How this instance reaches the others.
pub struct Peers {
    /// This instance's own base URL.
    pub url: String,
    secret: String,
    store: Shared,
    keys: Keys,
    http: reqwest::Client,
}

/// `POST /internal/ask`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct AskRequest {
    /// The node.
    pub node: String,
    /// The request for it.
    pub message: ToNode,
    /// Seconds to wait for the answer.
    pub limit: u64,
}

/// The first message of `/internal/stream`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct StreamRequest {
    /// The node.
    pub node: String,
    /// The replica.
    pub replica: String,
    /// What to stream.
    pub kind: StreamKind,
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!(
        "the API instance holding the replica's node cannot be reached: {e}"
    ))
}

impl Peers {
    /// Loads (or creates, once per cluster) the internal secret.
    pub async fn load(
        store: Shared,
        keys: Keys,
        url: String,
        http: reqwest::Client,
    ) -> Result<Self, lb_store::Error> {
        let secret = lb_store::secrets::cluster_secret(&*store, &keys, "internal-secret").await?;
        Ok(Self {
            url,
            secret: String::from_utf8_lossy(&secret).into_owned(),
            store,
            keys,
            http,
        })
    }

    /// Whether an `Authorization` header carries the internal secret.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        header
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|t| crate::auth::constant_time_eq(t.as_bytes(), self.secret.as_bytes()))
    }

    /// The URL of the other instance holding a node's channel, if any.
    pub async fn holder(&self, node: &str) -> Result<Option<String>> {
        let kv = self.store.get(&self.keys.node_channel(node)).await?;
        Ok(kv
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .filter(|url| *url != self.url))
    }

    /// Asks a node through the instance at `url`.
    pub async fn ask(
        &self,
        url: &str,
        node: &str,
        message: &ToNode,
        limit: Duration,
    ) -> Result<FromNode> {
        let body = AskRequest {
            node: node.to_owned(),
            message: message.clone(),
            limit: limit.as_secs(),
        };
        let resp = self
            .http
            .post(format!("{url}/api/v1/internal/ask"))
            .bearer_auth(&self.secret)
            .timeout(limit + Duration::from_secs(5))
            .json(&body)
            .send()
            .await
            .map_err(unavailable)?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let message = body["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("answered {status}"));
            return Err(ApiError::unavailable(message));
        }
        resp.json().await.map_err(unavailable)
    }

    /// Opens a stream through the instance at `url`.
    pub async fn open(
        &self,
        url: &str,
        node: &str,
        replica: &str,
        kind: StreamKind,
    ) -> Result<Session> {
        let ws = format!("{url}/api/v1/internal/stream")
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1);
        let mut request = ws.into_client_request().map_err(unavailable)?;
        let header = format!("Bearer {}", self.secret)
            .parse()
            .map_err(|_| unavailable("bad secret"))?;
        request.headers_mut().insert("authorization", header);
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(unavailable)?;
        let (mut tx, mut rx) = socket.split();
        let first = StreamRequest {
            node: node.to_owned(),
            replica: replica.to_owned(),
            kind,
        };
        let text = serde_json::to_string(&first).map_err(ApiError::internal)?;
        tx.send(Message::Text(text)).await.map_err(unavailable)?;
        let (to_node, mut inputs) = mpsc::channel::<ToNode>(64);
        let (out, output) = mpsc::channel::<FromNode>(1024);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    input = inputs.recv() => {
                        let Some(input) = input else { break };
                        let close = matches!(input, ToNode::Close { .. });
                        let Ok(text) = serde_json::to_string(&input) else { break };
                        if tx.send(Message::Text(text)).await.is_err() || close {
                            break;
                        }
                    }
                    incoming = rx.next() => {
                        let Some(Ok(Message::Text(text))) = incoming else { break };
                        let Ok(message) = serde_json::from_str::<FromNode>(&text) else { break };
                        let end = matches!(message, FromNode::End { .. });
                        if out.send(message).await.is_err() || end {
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(Message::Close(None)).await;
        });
        Ok(Session::relayed(lb_model::ids::new_id(), to_node, output))
    }
}
