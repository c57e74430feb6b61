//! `lbc logs [-f] [-t] [--tail N] [--replica R] SERVICE`: every replica's
//! output (one stream each, lines prefixed with a short replica id when
//! there are several), like `docker compose logs`. A replica whose
//! container exited gets its last output and then `replica ab12cd exited
//! with code N`.

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

/// How `lbc logs` reads: follow, the tail, timestamps.
#[derive(Debug, Clone, Copy)]
pub struct How {
    /// Keep streaming.
    pub follow: bool,
    /// Lines from the end.
    pub tail: u32,
    /// Each line with its time.
    pub timestamps: bool,
}

/// How a replica's container last ended, as the API shows it (the logs
/// answer's `X-Lb-*` headers, else the replica list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ended {
    /// The replica's state.
    pub state: ReplicaState,
    /// Its last exit code.
    pub exit_code: Option<i64>,
    /// Whether that exit was an out-of-memory kill.
    pub oom_killed: bool,
    /// Restarts so far.
    pub restarts: u32,
    /// Its message (for a replica that failed to start).
    pub message: String,
}

impl Ended {
    fn of_view(view: &ReplicaView) -> Self {
        Self {
            state: view.state,
            exit_code: view.exit_code,
            oom_killed: view.oom_killed,
            restarts: view.restarts,
            message: view.message.clone(),
        }
    }

    /// The view's, updated from the logs answer's headers (read with the
    /// output, so they match it).
    fn with_headers(mut self, headers: &reqwest::header::HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(state) = get("x-lb-replica-state")
            .and_then(|s| serde_json::from_value(serde_json::json!(s)).ok())
        {
            self.state = state;
            self.exit_code = get("x-lb-exit-code").and_then(|c| c.parse().ok());
            self.oom_killed = get("x-lb-oom-killed") == Some("true");
            if let Some(n) = get("x-lb-restarts").and_then(|n| n.parse().ok()) {
                self.restarts = n;
            }
        }
        self
    }

    /// The line printed after a replica's output when its container
    /// ended: "replica ab12cd exited with code 3, restarted 4 times".
    /// `None` for one that runs and never exited.
    pub fn line(&self, id: &str) -> Option<String> {
        let short = short_id(id);
        let restarted = match self.restarts {
            0 => String::new(),
            1 => ", restarted once".to_owned(),
            n => format!(", restarted {n} times"),
        };
        let oom = if self.oom_killed {
            " (killed: out of memory)"
        } else {
            ""
        };
        match (self.state, self.exit_code) {
            (ReplicaState::Running, Some(code)) if self.restarts > 0 => Some(format!(
                "replica {short} exited with code {code}{oom}{restarted}: it runs again"
            )),
            (ReplicaState::Running, _) => None,
            (_, Some(code)) => Some(format!(
                "replica {short} exited with code {code}{oom}{restarted}"
            )),
            (ReplicaState::Failed, None) => Some(format!(
                "replica {short} failed{restarted}{}",
                if self.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", crate::client::one_line(&self.message))
                }
            )),
            _ => None,
        }
    }
}

/// Runs `lbc logs`.
pub async fn run(
    session: &mut Session,
    service: &str,
    how: How,
    replica: Option<String>,
) -> Result<()> {
    let How {
        follow,
        tail,
        timestamps,
    } = how;
    if tail > 10_000 {
        return Err(Error::usage(format!("--tail {tail} is more than 10000")));
    }
    let path = session.service_path(service)?;
    let client = session.client()?;
    let replicas = client.get(&format!("{path}/replicas")).await?;
    let items = typed::<List<ReplicaView>>(&replicas)?.items;
    let chosen: Vec<&ReplicaView> = match &replica {
        Some(r) => {
            let id = super::ids::resolve(items.iter().map(|i| i.id.as_str()), r, service)?;
            items.iter().filter(|i| i.id == id).collect()
        }
        // Replicas that have a container to read: placed and not pending.
        None => items
            .iter()
            .filter(|i| i.node.is_some() && i.state != ReplicaState::Pending)
            .collect(),
    };
    if chosen.is_empty() {
        return Err(Error::new(
            crate::error::Kind::Conflict,
            format!("service {service:?} has no replica with output yet"),
        ));
    }
    let prefixed = chosen.len() > 1;
    let color = session.out.color;
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let mut tasks = Vec::new();
    for (n, view) in chosen.iter().enumerate() {
        let id = view.id.clone();
        let prefix = prefixed.then(|| {
            let short = short_id(&id);
            if color {
                format!("\x1b[{}m{short} |\x1b[0m ", COLORS[n % COLORS.len()])
            } else {
                format!("{short} | ")
            }
        });
        let mut query = format!("{path}/logs?tail={tail}&replica={}", segment(&id));
        if timestamps {
            query.push_str("&timestamps=true");
        }
        let client = client.clone();
        let tx = tx.clone();
        let ended = Ended::of_view(view);
        let list_path = format!("{path}/replicas");
        tasks.push(tokio::spawn(async move {
            let mut lines = Lines::new(prefix, tx);
            if follow {
                let result = follow_one(&client, &format!("{query}&follow=true"), &mut lines).await;
                // The stream ended: how the replica is now.
                let now = match client.get(&list_path).await {
                    Ok(list) => typed::<List<ReplicaView>>(&list)
                        .ok()
                        .and_then(|l| l.items.into_iter().find(|r| r.id == id))
                        .map(|r| Ended::of_view(&r)),
                    Err(_) => None,
                };
                if let Some(line) = now.and_then(|e| e.line(&id)) {
                    lines.line(&line);
                }
                result
            } else {
                match client.get_text_headers(&query).await {
                    Ok((text, headers)) => {
                        lines.push(text.as_bytes());
                        lines.finish();
                        if let Some(line) = ended.with_headers(&headers).line(&id) {
                            lines.line(&line);
                        }
                        Ok(())
                    }
                    // A replica that does not run may have no container
                    // left to read: say how it ended all the same.
                    Err(e) if ended.state != ReplicaState::Running => {
                        lines.line(&format!("(no output from replica {}: {e})", short_id(&id)));
                        if let Some(line) = ended.line(&id) {
                            lines.line(&line);
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
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
    /// Unprefixed: whether the last bytes sent ended inside a line.
    open: bool,
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

impl Lines {
    fn new(prefix: Option<String>, tx: mpsc::UnboundedSender<Vec<u8>>) -> Self {
        Self {
            prefix,
            partial: Vec::new(),
            open: false,
            tx,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let Some(prefix) = &self.prefix else {
            if let Some(last) = bytes.last() {
                self.open = *last != b'\n';
                let _ = self.tx.send(bytes.to_vec());
            }
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

    /// A whole line of lbc's own (after what came before it).
    fn line(&mut self, text: &str) {
        self.finish();
        let mut out = Vec::new();
        if std::mem::take(&mut self.open) {
            out.push(b'\n');
        }
        out.extend_from_slice(self.prefix.as_deref().unwrap_or_default().as_bytes());
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
        let _ = self.tx.send(out);
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
    fn own_lines_start_on_a_line_of_their_own() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut lines = Lines::new(None, tx);
        lines.push(b"boom");
        lines.line("replica x exited with code 3");
        let mut all = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            all.extend(chunk);
        }
        assert_eq!(
            String::from_utf8(all).unwrap(),
            "boom\nreplica x exited with code 3\n"
        );
    }

    #[test]
    fn how_a_replica_ended() {
        use ReplicaState::*;
        let id = "01J0000000ABCDEFGHJKMNPQRS";
        let ended = |state, exit_code, restarts| Ended {
            state,
            exit_code,
            restarts,
            ..Default::default()
        };
        assert_eq!(ended(Running, None, 0).line(id), None);
        assert_eq!(ended(Running, Some(0), 0).line(id), None);
        assert_eq!(
            ended(Exited, Some(3), 4).line(id).unwrap(),
            "replica mnpqrs exited with code 3, restarted 4 times"
        );
        assert_eq!(
            ended(Running, Some(3), 1).line(id).unwrap(),
            "replica mnpqrs exited with code 3, restarted once: it runs again"
        );
        let mut oom = ended(Exited, Some(137), 0);
        oom.oom_killed = true;
        assert_eq!(
            oom.line(id).unwrap(),
            "replica mnpqrs exited with code 137 (killed: out of memory)"
        );
        let mut failed = ended(Failed, None, 0);
        failed.message = "pull access denied".into();
        assert_eq!(
            failed.line(id).unwrap(),
            "replica mnpqrs failed: pull access denied"
        );
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-lb-replica-state", "exited".parse().unwrap());
        headers.insert("x-lb-exit-code", "3".parse().unwrap());
        headers.insert("x-lb-restarts", "2".parse().unwrap());
        let read = ended(Running, None, 0).with_headers(&headers);
        assert_eq!(
            (read.state, read.exit_code, read.restarts),
            (Exited, Some(3), 2)
        );
    }

    #[test]
    fn short_ids() {
        assert_eq!(short_id("01J0000000ABCDEFGHJKMNPQRS"), "mnpqrs");
        assert_eq!(short_id("AB"), "ab");
    }
}
