//! An in-memory [`Runtime`] for unit tests: it records every call, counts
//! what runs at once, and models time with tokio's clock (so tests run with
//! paused time). Creates take `create`; a container's process ignores
//! SIGTERM for `stop`, so a stop takes that long or the grace period,
//! whichever is shorter, as Docker kills at the end of the grace.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use lb_model::protocol::ExecOutput;
use lb_model::Assignment;
use tokio::sync::broadcast;

use super::{Attached, Check, Container, Error, Exit, Output, Result, Runtime};

/// A call made to the fake, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Call {
    List,
    EnsureImage(String),
    /// (replica, spec hash, host ports)
    Create(String, String, Vec<u16>),
    Start(String),
    /// (container, grace seconds)
    Stop(String, u32),
    /// (container, grace seconds)
    Remove(String, u32),
    Exit(String),
    Logs(String),
    Exec(String),
    /// A health probe of a replica.
    Check(String),
}

/// What the fake holds and has seen.
#[derive(Default)]
pub(crate) struct State {
    pub containers: BTreeMap<String, Container>,
    pub exits: HashMap<String, Exit>,
    pub calls: Vec<Call>,
    next: u64,
    /// Operations in flight per replica, and how often one began while
    /// another was in flight.
    in_flight: HashMap<String, usize>,
    pub overlaps: usize,
    pub creates_now: usize,
    pub max_creates: usize,
    pub stops_now: usize,
    pub max_stops: usize,
    /// What a replica's health probes answer (pass when absent), and
    /// replicas whose probes never answer.
    pub checks: HashMap<String, std::result::Result<(), String>>,
    pub hanging: std::collections::HashSet<String>,
}

impl State {
    /// How many calls matched.
    pub fn count(&self, what: impl Fn(&Call) -> bool) -> usize {
        self.calls.iter().filter(|c| what(c)).count()
    }

    /// (container, grace) of every stop, removals included.
    pub fn stops(&self) -> Vec<(String, u32)> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Stop(id, grace) => Some((id.clone(), *grace)),
                _ => None,
            })
            .collect()
    }
}

/// The recording fake; clones share their state.
#[derive(Clone)]
pub(crate) struct Fake {
    state: Arc<Mutex<State>>,
    create: Duration,
    stop: Duration,
    /// Send `()` to signal an engine event.
    pub events: broadcast::Sender<()>,
}

impl Fake {
    /// Creates take `create`; processes take `stop` to end after SIGTERM.
    pub fn new(create: Duration, stop: Duration) -> Self {
        Self {
            state: Arc::default(),
            create,
            stop,
            events: broadcast::channel(1024).0,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn record(&self, call: Call) {
        self.state().calls.push(call);
    }

    fn begin(&self, replica: &str) {
        let mut s = self.state();
        let n = s.in_flight.entry(replica.to_owned()).or_default();
        *n += 1;
        if *n > 1 {
            s.overlaps += 1;
        }
    }

    fn end(&self, replica: &str) {
        *self
            .state()
            .in_flight
            .entry(replica.to_owned())
            .or_default() -= 1;
    }

    fn replica_of(&self, id: &str) -> String {
        self.state()
            .containers
            .get(id)
            .map(|c| c.replica.clone())
            .unwrap_or_default()
    }

    /// The process of a replica's container exits with `code`.
    pub fn crash(&self, replica: &str, code: i64) {
        let mut s = self.state();
        let Some(c) = s.containers.values_mut().find(|c| c.replica == replica) else {
            panic!("replica {replica} has no container");
        };
        c.state = "exited".into();
        let id = c.id.clone();
        s.exits.insert(
            id,
            Exit {
                code: Some(code),
                oom_killed: false,
            },
        );
        drop(s);
        let _ = self.events.send(());
    }

    /// How many containers there are.
    pub fn count(&self) -> usize {
        self.state().containers.len()
    }

    /// The containers of a replica.
    pub fn containers_of(&self, replica: &str) -> Vec<Container> {
        self.state()
            .containers
            .values()
            .filter(|c| c.replica == replica)
            .cloned()
            .collect()
    }
}

fn not_found() -> Error {
    Error::Status {
        status: 404,
        message: "no such container".into(),
    }
}

impl Runtime for Fake {
    async fn list(&self) -> Result<Vec<Container>> {
        let mut s = self.state();
        s.calls.push(Call::List);
        Ok(s.containers.values().cloned().collect())
    }

    fn events(&self) -> BoxStream<'static, ()> {
        futures::stream::unfold(self.events.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(()) => return Some(((), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }

    async fn ensure_image(&self, image: &str, _: Option<(&str, &str)>) -> Result<String> {
        self.record(Call::EnsureImage(image.to_owned()));
        Ok(image.to_owned())
    }

    async fn create(&self, a: &Assignment, spec_hash: &str, host_ports: &[u16]) -> Result<String> {
        self.record(Call::Create(
            a.replica.clone(),
            spec_hash.to_owned(),
            host_ports.to_vec(),
        ));
        self.begin(&a.replica);
        {
            let mut s = self.state();
            s.creates_now += 1;
            s.max_creates = s.max_creates.max(s.creates_now);
        }
        tokio::time::sleep(self.create).await;
        let id = {
            let mut s = self.state();
            s.creates_now -= 1;
            s.next += 1;
            let id = format!("c{}", s.next);
            let ports = a
                .ports
                .iter()
                .zip(host_ports)
                .map(|(p, h)| (p.container, *h))
                .collect();
            let container = Container {
                id: id.clone(),
                replica: a.replica.clone(),
                state: "created".into(),
                spec: spec_hash.into(),
                ports,
                stop_timeout: Some(a.stop_timeout),
                health: None,
                address: None,
            };
            s.containers.insert(id.clone(), container);
            id
        };
        self.end(&a.replica);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.record(Call::Start(id.to_owned()));
        let replica = self.replica_of(id);
        self.begin(&replica);
        let found = match self.state().containers.get_mut(id) {
            Some(c) => {
                c.state = "running".into();
                // Docker starts the image's HEALTHCHECK over.
                c.health = c.health.map(|_| lb_model::Health::Starting);
                true
            }
            None => false,
        };
        self.end(&replica);
        if found {
            Ok(())
        } else {
            Err(not_found())
        }
    }

    async fn stop(&self, id: &str, grace_secs: u32) -> Result<()> {
        self.record(Call::Stop(id.to_owned(), grace_secs));
        let replica = self.replica_of(id);
        self.begin(&replica);
        let running = {
            let s = self.state();
            s.containers.get(id).is_some_and(|c| c.state == "running")
        };
        if running {
            {
                let mut s = self.state();
                s.stops_now += 1;
                s.max_stops = s.max_stops.max(s.stops_now);
            }
            let grace = Duration::from_secs(grace_secs.into());
            tokio::time::sleep(self.stop.min(grace)).await;
            let mut s = self.state();
            s.stops_now -= 1;
            if let Some(c) = s.containers.get_mut(id) {
                c.state = "exited".into();
            }
        }
        self.end(&replica);
        Ok(())
    }

    async fn remove(&self, id: &str, grace_secs: u32) -> Result<()> {
        self.record(Call::Remove(id.to_owned(), grace_secs));
        self.stop(id, grace_secs).await?;
        self.state().containers.remove(id);
        Ok(())
    }

    async fn exit(&self, id: &str) -> Result<Exit> {
        let mut s = self.state();
        s.calls.push(Call::Exit(id.to_owned()));
        Ok(s.exits.get(id).cloned().unwrap_or_default())
    }

    async fn logs(&self, replica: &str, _tail: u32, _timestamps: bool) -> Result<String> {
        self.record(Call::Logs(replica.to_owned()));
        Ok(format!("logs of {replica}\n"))
    }

    async fn log_stream(
        &self,
        replica: &str,
        _tail: u32,
        _follow: bool,
        _timestamps: bool,
    ) -> Result<Output> {
        self.record(Call::Logs(replica.to_owned()));
        let line = bytes::Bytes::from(format!("logs of {replica}\n"));
        Ok(Box::pin(futures::stream::iter([Ok((1, line))])))
    }

    async fn exec(&self, replica: &str, command: Vec<String>) -> Result<ExecOutput> {
        self.record(Call::Exec(replica.to_owned()));
        Ok(ExecOutput {
            exit_code: 0,
            stdout: command.join(" "),
            stderr: String::new(),
        })
    }

    async fn exec_attached(
        &self,
        replica: &str,
        _command: Vec<String>,
        _env: Vec<String>,
        _tty: bool,
        _stdin: bool,
    ) -> Result<Attached> {
        self.record(Call::Exec(replica.to_owned()));
        Ok(Attached {
            id: format!("exec-{replica}"),
            output: Box::pin(futures::stream::empty()),
            input: Box::pin(tokio::io::sink()),
        })
    }

    async fn resize_exec(&self, _exec: &str, _cols: u16, _rows: u16) -> Result<()> {
        Ok(())
    }

    async fn exec_exit_code(&self, _exec: &str) -> Result<i64> {
        Ok(0)
    }

    async fn check(&self, check: &Check) -> std::result::Result<(), String> {
        let (answer, hangs) = {
            let mut s = self.state();
            let replica = s
                .containers
                .values()
                .find(|c| match check {
                    Check::Command { container, .. } | Check::Image { container } => {
                        c.id == *container
                    }
                    Check::Http { host_port, .. } | Check::Tcp { host_port, .. } => {
                        c.ports.iter().any(|(_, h)| h == host_port)
                    }
                })
                .map(|c| c.replica.clone())
                .unwrap_or_default();
            s.calls.push(Call::Check(replica.clone()));
            let answer = s.checks.get(&replica).cloned().unwrap_or(Ok(()));
            let hangs = s.hanging.contains(&replica);
            (answer, hangs)
        };
        if hangs {
            std::future::pending::<()>().await;
        }
        answer
    }
}
