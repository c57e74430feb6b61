//! What the node asks of a container engine, as one trait: [`Runtime`].
//! Every Docker call of the node goes through it; [`DockerRuntime`] is the
//! real one (bollard, in `docker.rs`, with project networks in `network.rs`), and
//! the unit tests use a recording fake (`fake.rs`). Answers that mean
//! "already done" (304, 404, 409 where true) are success, so every step can
//! be repeated.

mod docker;
#[cfg(test)]
pub(crate) mod fake;
pub mod images;
pub mod network;
pub mod pull;

use std::future::Future;
use std::pin::Pin;

use futures::stream::BoxStream;
use futures::Stream;
use lb_model::protocol::ExecOutput;
use lb_model::{Assignment, Health};

pub use docker::DockerRuntime;

/// Label keys on every container lb makes.
pub mod labels {
    /// The node that owns the container.
    pub const NODE: &str = "lb.node";
    /// Project id.
    pub const PROJECT: &str = "lb.project";
    /// Service id.
    pub const SERVICE: &str = "lb.service";
    /// Replica id.
    pub const REPLICA: &str = "lb.replica";
    /// Service generation.
    pub const GENERATION: &str = "lb.generation";
    /// A hash of everything the container was made from.
    pub const SPEC: &str = "lb.spec";
    /// The stop grace period in seconds, so a container whose assignment is
    /// gone is still stopped with its own.
    pub const STOP_TIMEOUT: &str = "lb.stop-timeout";
}

/// What went wrong in the engine. The display is the engine's own words,
/// as shown to users in replica statuses and stream errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The engine answered with an error status.
    #[error("{message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The engine's message.
        message: String,
    },
    /// The engine could not be reached, or its answer not read.
    #[error("{0}")]
    Engine(String),
    /// No container of this node holds the replica.
    #[error("replica {0} has no container on this node")]
    NoContainer(String),
    /// The image could not be pulled.
    #[error("cannot pull {image}: {message}")]
    Pull {
        /// The image.
        image: String,
        /// The engine's or the registry's message.
        message: String,
    },
    /// lb's registry refused this node the image (deleted, or its project
    /// no longer runs here): the engine's cached copy is not run either.
    #[error(
        "not run: lb's registry refuses this node {image} ({message}); a cached copy is not used"
    )]
    Refused {
        /// The image.
        image: String,
        /// What the registry answered.
        message: String,
    },
    /// The engine started an attached command detached.
    #[error("Docker started the command detached")]
    Detached,
}

/// Result with the runtime [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Output of a stream: `(channel, bytes)`, channel 1 stdout, 2 stderr.
pub type Output = Pin<Box<dyn Stream<Item = Result<(u8, bytes::Bytes)>> + Send>>;

/// A command running with stdin attached.
pub struct Attached {
    /// The exec id.
    pub id: String,
    /// What it writes.
    pub output: Output,
    /// Its stdin.
    pub input: Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// A container of this node, as listed.
#[derive(Debug, Clone)]
pub struct Container {
    /// Docker id.
    pub id: String,
    /// Replica id.
    pub replica: String,
    /// `running`, `exited`, `created`, ...
    pub state: String,
    /// Spec hash label.
    pub spec: String,
    /// Bound ports: (container port, host port).
    pub ports: Vec<(u16, u16)>,
    /// Its stop grace period in seconds, from its label (none on containers
    /// made before lb recorded it).
    pub stop_timeout: Option<u32>,
    /// The engine's verdict of the image's own `HEALTHCHECK` (none without
    /// one).
    pub health: Option<Health>,
    /// Its address on the engine's network, when it has one.
    pub address: Option<String>,
}

/// One health probe of a replica's container (see [`Runtime::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `GET http://127.0.0.1:<host_port><path>`: 2xx and 3xx pass.
    Http {
        /// The host port bound to the check's container port.
        host_port: u16,
        /// The path.
        path: String,
    },
    /// A TCP connect to the container's address and port (to
    /// `127.0.0.1:<host_port>` when it has no address: a host port may be
    /// answered by Docker's proxy whether the process listens or not).
    Tcp {
        /// The container's address on the engine's network.
        address: Option<String>,
        /// The container port.
        port: u16,
        /// The host port bound to it.
        host_port: u16,
    },
    /// The engine's verdict of the image's own `HEALTHCHECK`: fails with
    /// its last probe's exit code and output while `unhealthy`.
    Image {
        /// The container.
        container: String,
    },
    /// A command run in the container: exit code 0 passes.
    Command {
        /// The container.
        container: String,
        /// The command.
        command: Vec<String>,
    },
}

/// The exit of a stopped container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exit {
    /// Exit code.
    pub code: Option<i64>,
    /// Killed for exceeding its memory.
    pub oom_killed: bool,
}

/// The container engine as the node uses it, scoped to this node's
/// containers (those labelled with its id).
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Every container of this node, running or not.
    fn list(&self) -> impl Future<Output = Result<Vec<Container>>> + Send;
    /// A signal per engine event about this node's containers.
    fn events(&self) -> BoxStream<'static, ()>;
    /// Makes the image ready and answers the full reference to create the
    /// container from (see [`pull`]). With `pull` = (lb's registry, node
    /// credential), an image in lb's registry is pulled with the node's
    /// credential every time (its token endpoint answers pull access to
    /// what this node is assigned) and answered pinned by digest; another
    /// image is taken from the engine by its full reference, or pulled.
    fn ensure_image(
        &self,
        image: &str,
        pull: Option<(&str, &str)>,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Creates (not starts) the container of an assignment, labelled with
    /// `spec_hash`, its ports bound to `host_ports` in order.
    fn create(
        &self,
        a: &Assignment,
        spec_hash: &str,
        host_ports: &[u16],
    ) -> impl Future<Output = Result<String>> + Send;
    /// Starts a container (already running is fine).
    fn start(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Stops with a grace period, then the engine kills (already stopped or
    /// gone is fine).
    fn stop(&self, id: &str, grace_secs: u32) -> impl Future<Output = Result<()>> + Send;
    /// Stops with a grace period and removes (gone is fine).
    fn remove(&self, id: &str, grace_secs: u32) -> impl Future<Output = Result<()>> + Send;
    /// How a stopped container ended.
    fn exit(&self, id: &str) -> impl Future<Output = Result<Exit>> + Send;
    /// The last `tail` lines of a replica's output (stdout and stderr),
    /// each after its time with `timestamps`.
    fn logs(
        &self,
        replica: &str,
        tail: u32,
        timestamps: bool,
    ) -> impl Future<Output = Result<String>> + Send;
    /// A replica's output as it comes: the last `tail` lines first, then,
    /// with `follow`, new output until the container stops.
    fn log_stream(
        &self,
        replica: &str,
        tail: u32,
        follow: bool,
        timestamps: bool,
    ) -> impl Future<Output = Result<Output>> + Send;
    /// Runs a command in a replica's container and collects its output.
    fn exec(
        &self,
        replica: &str,
        command: Vec<String>,
    ) -> impl Future<Output = Result<ExecOutput>> + Send;
    /// Starts a command in a replica's container with stdin attached (and a
    /// TTY when asked).
    fn exec_attached(
        &self,
        replica: &str,
        command: Vec<String>,
        env: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> impl Future<Output = Result<Attached>> + Send;
    /// Tells a running exec its terminal's size.
    fn resize_exec(
        &self,
        exec: &str,
        cols: u16,
        rows: u16,
    ) -> impl Future<Output = Result<()>> + Send;
    /// A finished exec's exit code.
    fn exec_exit_code(&self, exec: &str) -> impl Future<Output = Result<i64>> + Send;
    /// Runs one health probe; the error says why it failed in a few words
    /// ("503", "connection refused", "exit code 1: ..."). The caller bounds
    /// it with the check's timeout.
    fn check(&self, check: &Check) -> impl Future<Output = Result<(), String>> + Send;
}
