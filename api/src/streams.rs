//! Requests from users to nodes (logs, one-off exec) over the node channels
//! this API instance holds, and the answers back to the waiting handler.
//!
//! Only the instance holding a node's channel can reach it; forwarding a
//! request that lands on another instance is not built yet.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lb_pkg::protocol::{FromNode, ToNode};
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, Result};

/// Open node channels and requests waiting for answers.
#[derive(Default)]
pub struct Streams {
    nodes: Mutex<HashMap<String, mpsc::Sender<ToNode>>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<FromNode>>>,
}

impl Streams {
    /// A node's channel opened: requests for it arrive on the receiver.
    pub fn attach(&self, node: &str) -> mpsc::Receiver<ToNode> {
        let (tx, rx) = mpsc::channel(64);
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_owned(), tx);
        rx
    }

    /// A node's channel closed.
    pub fn detach(&self, node: &str) {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node);
    }

    /// Sends a request to a node and waits for its answer.
    pub async fn ask(
        &self,
        node: &str,
        make: impl FnOnce(String) -> ToNode,
        limit: Duration,
    ) -> Result<FromNode> {
        let sender = self
            .nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned();
        let Some(sender) = sender else {
            return Err(ApiError::unavailable(
                "the replica's node is not connected to this API instance",
            ));
        };
        let id = lb_pkg::ids::new_id();
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), tx);
        let sent = sender.send(make(id.clone())).await;
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

    /// Delivers a node's answer to the request waiting for it.
    pub fn answer(&self, message: FromNode) {
        let request = match &message {
            FromNode::Logs { request, .. } | FromNode::Exec { request, .. } => request.clone(),
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
