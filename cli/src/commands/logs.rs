//! `lbc logs [-f] [--tail N] [--replica R] SERVICE`: every replica's output
//! (one stream each, lines prefixed with a short replica id when there are
//! several), like `docker compose logs`.

use std::io::Write;

use futures::{SinkExt, StreamExt};
use lb_model::views::{List, ReplicaView, StreamEnd};
use lb_model::ReplicaState;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{error_of_control, segment, typed, Client};
use crate::error::{Error, Result};
use crate::session::Session;

/// Colours of replica prefixes on a terminal.
const COLORS: [&str; 6] = ["36", "33", "35", "32", "34", "31"];

/// The short id lbc prints for a replica: its last 6 characters (the start
/// of an id is its creation time, shared by replicas made together).
pub fn short_id(id: &str) -> String {
    let n = id.chars().count();
    id.chars()
        .skip(n.saturating_sub(6))
        .collect::<String>()
        .to_lowercase()
}

/// Runs `lbc logs`.
pub async fn run(
    session: &mut Session,
    service: &str,
    follow: bool,
    tail: u32,
    replica: Option<String>,
) -> Result<()> {
    if tail > 10_000 {
        return Err(Error::usage(format!("--tail {tail} is more than 10000")));
    }
    let path = session.service_path(service)?;
    let client = session.client()?;
    let replicas = client.get(&format!("{path}/replicas")).await?;
    let items = typed::<List<ReplicaView>>(&replicas)?.items;
    let ids: Vec<String> = match &replica {
        Some(r) => vec![super::ids::resolve(
            items.iter().map(|i| i.id.as_str()),
            r,
            service,
        )?],
        // Replicas that have a container to read: placed and not pending.
        None => items
            .into_iter()
            .filter(|i| i.node.is_some() && i.state != ReplicaState::Pending)
            .map(|i| i.id)
            .collect(),
    };
    if ids.is_empty() {
        return Err(Error::new(
            crate::error::Kind::Conflict,
            format!("service {service:?} has no replica with output yet"),
        ));
    }
    let prefixed = ids.len() > 1;
    let color = session.out.color;
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let mut tasks = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let prefix = prefixed.then(|| {
            let short = short_id(id);
            if color {
                format!("\x1b[{}m{short} |\x1b[0m ", COLORS[n % COLORS.len()])
            } else {
                format!("{short} | ")
            }
        });
        let query = format!("{path}/logs?tail={tail}&replica={}", segment(id));
        let client = client.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut lines = Lines::new(prefix, tx);
            if follow {
                follow_one(&client, &format!("{query}&follow=true"), &mut lines).await
            } else {
                let text = client.get_text(&query).await?;
                lines.push(text.as_bytes());
                lines.finish();
                Ok(())
            }
        }));
    }
    drop(tx);
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = rx.blocking_recv() {
            if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                // A closed pipe (`| head`): stop quietly.
                return;
            }
        }
    });
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(Error::failed(format!("a log stream failed: {e}")));
            }
        }
    }
    let _ = writer.await;
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Reads one replica's websocket to its end.
async fn follow_one(client: &Client, query: &str, lines: &mut Lines) -> Result<()> {
    let mut socket = client.websocket(query).await?;
    let result = read_stream(&mut socket, |bytes| lines.push(bytes)).await;
    lines.finish();
    let _ = socket.close(None).await;
    result
}

/// Reads a log websocket (binary frames of output, text frames of control
/// messages) until it closes; an `{"error"}` control message is the result.
pub async fn read_stream(
    socket: &mut crate::client::Socket,
    mut on_bytes: impl FnMut(&[u8]),
) -> Result<()> {
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Binary(bytes)) => on_bytes(&bytes),
            Ok(Message::Text(text)) => {
                let end: StreamEnd = serde_json::from_str(&text).unwrap_or_default();
                if let Some(error) = &end.error {
                    return Err(error_of_control(error));
                }
            }
            Ok(Message::Ping(p)) => {
                let _ = socket.send(Message::Pong(p)).await;
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(e) => {
                return Err(Error::server(format!("the log stream broke: {e}")));
            }
        }
    }
    Ok(())
}

/// Splits a replica's bytes into lines and prefixes each.
struct Lines {
    prefix: Option<String>,
    partial: Vec<u8>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

impl Lines {
    fn new(prefix: Option<String>, tx: mpsc::UnboundedSender<Vec<u8>>) -> Self {
        Self {
            prefix,
            partial: Vec::new(),
            tx,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let Some(prefix) = &self.prefix else {
            let _ = self.tx.send(bytes.to_vec());
            return;
        };
        self.partial.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(&line);
        }
        if !out.is_empty() {
            let _ = self.tx.send(out);
        }
    }

    fn finish(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let mut out = self.prefix.clone().unwrap_or_default().into_bytes();
        out.append(&mut self.partial);
        out.push(b'\n');
        let _ = self.tx.send(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_whole() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut lines = Lines::new(Some("ab | ".into()), tx);
        lines.push(b"one\ntw");
        lines.push(b"o\nthr");
        lines.finish();
        let mut all = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            all.extend(chunk);
        }
        assert_eq!(
            String::from_utf8(all).unwrap(),
            "ab | one\nab | two\nab | thr\n"
        );
    }

    #[test]
    fn short_ids() {
        assert_eq!(short_id("01J0000000ABCDEFGHJKMNPQRS"), "mnpqrs");
        assert_eq!(short_id("AB"), "ab");
    }
}
