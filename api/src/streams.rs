//! Requests from users to nodes (logs, one-off exec) over the node channels
//! this API instance holds, and the answers back to the waiting handler; and
//! long-lived streams (logs that follow, interactive exec) whose output
//! flows back to the user's connection.
//!
//! Only the instance holding a node's channel can reach it. A request for a
//! node whose channel another instance holds goes there (`crate::peers`):
//! the store says which instance that is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lb_model::protocol::{FromNode, StreamInput, StreamKind, ToNode};
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, Result};

/// Open node channels and requests waiting for answers.
#[derive(Default)]
pub struct Streams {
    /// Node id -> (connection number, its channel).
    nodes: Mutex<HashMap<String, (u64, mpsc::Sender<ToNode>)>>,
    connections: std::sync::atomic::AtomicU64,
    waiting: Mutex<HashMap<String, oneshot::Sender<FromNode>>>,
    /// Stream id -> (node, where its output goes).
    open: Mutex<HashMap<String, (String, mpsc::Sender<FromNode>)>>,
    /// The other API instances, once this one is bound.
    peers: std::sync::OnceLock<crate::peers::Peers>,
}

/// Output a stream may hold for a user who reads slower than the node
/// writes; a user further behind is cut off rather than stalling the node's
/// channel for everyone.
const STREAM_QUEUE: usize = 1024;

/// An open stream to a replica: its output arrives on `output`; dropping it
/// tells the node to stop.
pub struct Session {
    id: String,
    node: mpsc::Sender<ToNode>,
    streams: Option<std::sync::Arc<Streams>>,
    /// Output and, last, the end of the stream. Closes early when the node
    /// goes away or the reader fell too far behind.
    pub output: mpsc::Receiver<FromNode>,
}

impl Session {
    /// Sends input to the stream.
    pub async fn input(&self, input: StreamInput) -> Result<()> {
        self.node
            .send(ToNode::Input {
                stream: self.id.clone(),
                input,
            })
            .await
            .map_err(|_| ApiError::unavailable("the replica's node went away"))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(streams) = &self.streams {
            streams
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
        }
        let _ = self.node.try_send(ToNode::Close {
            stream: self.id.clone(),
        });
    }
}

impl Session {
    /// A session relayed from another instance: `node` carries input (and
    /// the close) there, `output` brings back what the node sends.
    pub fn relayed(
        id: String,
        node: mpsc::Sender<ToNode>,
        output: mpsc::Receiver<FromNode>,
    ) -> Self {
        Session {
            id,
            node,
            streams: None,
            output,
        }
    }
}

impl Streams {
    /// Tells this instance how to reach the others (once, at bind).
    pub fn set_peers(&self, peers: crate::peers::Peers) {
        let _ = self.peers.set(peers);
    }

    /// The peers, once set.
    pub fn peers(&self) -> Option<&crate::peers::Peers> {
        self.peers.get()
    }

    /// A node's channel opened: requests for it arrive on the receiver.
    /// Answers the connection's number for [`Streams::detach`].
    pub fn attach(&self, node: &str) -> (u64, mpsc::Receiver<ToNode>) {
        let (tx, rx) = mpsc::channel(64);
        let number = self
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_owned(), (number, tx));
        (number, rx)
    }

    /// A node's channel closed: its streams end (their readers see the
    /// output close without an end message).
    /// A newer connection of the same node is left alone.
    pub fn detach(&self, node: &str, connection: u64) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        if nodes.get(node).is_some_and(|(n, _)| *n == connection) {
            nodes.remove(node);
        }
        drop(nodes);
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (n, _)| n != node);
    }

    /// The channel to a node, if this instance holds it.
    fn sender(&self, node: &str) -> Result<mpsc::Sender<ToNode>> {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|(_, tx)| tx.clone())
            .ok_or_else(|| {
                ApiError::unavailable("the replica's node is not connected to this API instance")
            })
    }

    /// Sends a request to a node and waits for its answer; a node whose
    /// channel another instance holds is asked through that instance.
    pub async fn ask(
        &self,
        node: &str,
        make: impl FnOnce(String) -> ToNode,
        limit: Duration,
    ) -> Result<FromNode> {
        let message = make(lb_model::ids::new_id());
        if self.sender(node).is_err() {
            if let Some(peers) = self.peers() {
                if let Some(url) = peers.holder(node).await? {
                    return peers.ask(&url, node, &message, limit).await;
                }
            }
        }
        self.ask_local(node, message, limit).await
    }

    /// Sends a request (carrying its own request id) to a node whose
    /// channel this instance holds, and waits for the answer.
    pub async fn ask_local(
        &self,
        node: &str,
        message: ToNode,
        limit: Duration,
    ) -> Result<FromNode> {
        let sender = self.sender(node)?;
        let id = match &message {
            ToNode::Logs { request, .. } | ToNode::Exec { request, .. } => request.clone(),
            _ => return Err(ApiError::bad_request("not a request a node answers")),
        };
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), tx);
        let sent = sender.send(message).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(limit, rx).await.map(Result::ok),
            Err(_) => Ok(None),
        };
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match answer {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err(ApiError::unavailable("the replica's node went away")),
            Err(_) => Err(ApiError::unavailable(format!(
                "the node did not answer within {} s",
                limit.as_secs()
            ))),
        }
    }

    /// Opens a stream to a replica on a node, through the instance holding
    /// its channel if that is another one.
    pub async fn open(
        self: &std::sync::Arc<Self>,
        node: &str,
        replica: &str,
        kind: StreamKind,
    ) -> Result<Session> {
        if self.sender(node).is_err() {
            if let Some(peers) = self.peers() {
                if let Some(url) = peers.holder(node).await? {
                    return peers.open(&url, node, replica, kind).await;
                }
            }
        }
        self.open_local(node, replica, kind).await
    }

    /// Opens a stream to a replica on a node whose channel this instance
    /// holds.
    pub async fn open_local(
        self: &std::sync::Arc<Self>,
        node: &str,
        replica: &str,
        kind: StreamKind,
    ) -> Result<Session> {
        let sender = self.sender(node)?;
        let id = lb_model::ids::new_id();
        let (tx, output) = mpsc::channel(STREAM_QUEUE);
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), (node.to_owned(), tx));
        let session = Session {
            id: id.clone(),
            node: sender.clone(),
            streams: Some(self.clone()),
            output,
        };
        let message = ToNode::Open {
            stream: id,
            replica: replica.to_owned(),
            kind,
        };
        sender
            .send(message)
            .await
            .map_err(|_| ApiError::unavailable("the replica's node went away"))?;
        Ok(session)
    }

    /// Delivers a node's answer to the request or stream waiting for it.
    pub fn answer(&self, message: FromNode) {
        let request = match &message {
            FromNode::Logs { request, .. } | FromNode::Exec { request, .. } => request.clone(),
            FromNode::Output { stream, .. } | FromNode::End { stream, .. } => {
                let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
                let ended = matches!(message, FromNode::End { .. });
                if let Some((_, tx)) = open.get(stream) {
                    let id = stream.clone();
                    if tx.try_send(message).is_err() || ended {
                        // Too far behind, or done: the reader sees the end.
                        open.remove(&id);
                    }
                }
                return;
            }
            _ => return,
        };
        if let Some(tx) = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request)
        {
            let _ = tx.send(message);
        }
    }
}
