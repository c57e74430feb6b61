//! Docker through bollard: the containers of this node, found by label, and
//! the few operations the reconciler needs. 404 and 304/409 answers that mean
//! "already done" are treated as done, so every step can be repeated.

use std::collections::HashMap;
use std::future::Future;

use bollard::container::{
    Config as ContainerConfig, CreateContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bollard::errors::Error as DockerError;
use bollard::image::CreateImageOptions;
use bollard::models::{ContainerSummary, HostConfig, Mount, MountTypeEnum, PortBinding};
use bollard::system::EventsOptions;
use bollard::Docker;
use futures::{Stream, StreamExt};
use lb_model::{Assignment, Protocol};

use crate::{Error, Result};

/// The most output kept from logs or a command (1 MiB).
const MAX_OUTPUT: usize = 1 << 20;

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

/// Output of a stream: `(channel, bytes)`, channel 1 stdout, 2 stderr.
pub type Output = std::pin::Pin<Box<dyn Stream<Item = Result<(u8, bytes::Bytes), String>> + Send>>;

/// A command running with stdin attached.
pub struct Attached {
    /// The exec id.
    pub id: String,
    /// What it writes.
    pub output: Output,
    /// Its stdin.
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// Docker, scoped to one node's containers.
#[derive(Clone)]
pub struct Runtime {
    docker: Docker,
    node: String,
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
}

/// The exit of a stopped container.
#[derive(Debug, Clone, Default)]
pub struct Exit {
    /// Exit code.
    pub code: Option<i64>,
    /// Killed for exceeding its memory.
    pub oom_killed: bool,
}

fn is_status(err: &DockerError, codes: &[u16]) -> bool {
    matches!(err, DockerError::DockerResponseServerError { status_code, .. } if codes.contains(status_code))
}

/// The Docker daemon's own message in an error.
pub fn message(err: &DockerError) -> String {
    match err {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

impl Runtime {
    /// Connects to the local Docker engine and checks that it answers.
    pub async fn connect(node: &str) -> Result<Self> {
        let docker =
            Docker::connect_with_local_defaults().map_err(|e| Error::Docker(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| Error::Docker(e.to_string()))?;
        Ok(Self {
            docker,
            node: node.to_owned(),
        })
    }

    /// The node id containers are labelled with.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={}", labels::NODE, self.node)],
        )])
    }

    /// Every container of this node, running or not.
    pub async fn list(&self) -> Result<Vec<Container>, DockerError> {
        let options = ListContainersOptions {
            all: true,
            filters: self.filters(),
            ..Default::default()
        };
        let summaries: Vec<ContainerSummary> = self.docker.list_containers(Some(options)).await?;
        Ok(summaries
            .into_iter()
            .filter_map(|s| {
                let labels = s.labels.unwrap_or_default();
                Some(Container {
                    id: s.id?,
                    replica: labels.get(labels::REPLICA)?.clone(),
                    state: s.state.unwrap_or_default(),
                    spec: labels.get(labels::SPEC).cloned().unwrap_or_default(),
                    stop_timeout: labels
                        .get(labels::STOP_TIMEOUT)
                        .and_then(|t| t.parse().ok()),
                    ports: {
                        let mut ports: Vec<(u16, u16)> = s
                            .ports
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|p| Some((p.private_port, p.public_port?)))
                            .collect();
                        ports.sort_unstable();
                        ports.dedup();
                        ports
                    },
                })
            })
            .collect())
    }

    /// Docker events about this node's containers.
    pub fn events(&self) -> impl Stream<Item = ()> + Send + 'static {
        let mut filters = self.filters();
        filters.insert("type".into(), vec!["container".into()]);
        self.docker
            .events(Some(EventsOptions::<String> {
                filters,
                ..Default::default()
            }))
            .map(|_| ())
    }

    /// Pulls the image if the engine lacks it; the error is the registry's.
    /// With `pull` = (registry, node credential) the registry is asked with
    /// the node's credential (its token endpoint answers pull access to
    /// what this node is assigned).
    pub async fn ensure_image(
        &self,
        image: &str,
        pull: Option<(&str, &str)>,
    ) -> Result<(), String> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, &[404]) => {}
            Err(e) => return Err(message(&e)),
        }
        let options = CreateImageOptions {
            from_image: image,
            ..Default::default()
        };
        let credentials = pull.map(|(registry, secret)| bollard::auth::DockerCredentials {
            username: Some(format!("node-{}", self.node)),
            password: Some(secret.to_owned()),
            serveraddress: Some(registry.to_owned()),
            ..Default::default()
        });
        let mut pull = self.docker.create_image(Some(options), None, credentials);
        while let Some(step) = pull.next().await {
            step.map_err(|e| format!("cannot pull {image}: {}", message(&e)))?;
        }
        Ok(())
    }

    /// Creates (not starts) the container of an assignment.
    pub async fn create(
        &self,
        a: &Assignment,
        spec_hash: &str,
        host_ports: &[u16],
    ) -> Result<String, DockerError> {
        let mut exposed = HashMap::new();
        let mut bindings = HashMap::new();
        for (port, host) in a.ports.iter().zip(host_ports) {
            let proto = match port.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            let key = format!("{}/{proto}", port.container);
            exposed.insert(key.clone(), HashMap::new());
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some("0.0.0.0".into()),
                    host_port: Some(host.to_string()),
                }]),
            );
        }
        let mounts = a
            .volumes
            .iter()
            .map(|v| Mount {
                typ: Some(MountTypeEnum::VOLUME),
                source: Some(format!("lb-{}-{}", a.service.to_lowercase(), v.name)),
                target: Some(v.path.clone()),
                ..Default::default()
            })
            .collect();
        let memory = (a.memory * 1024 * 1024) as i64;
        let labels = HashMap::from([
            (labels::NODE.to_owned(), self.node.clone()),
            (labels::PROJECT.to_owned(), a.project.clone()),
            (labels::SERVICE.to_owned(), a.service.clone()),
            (labels::REPLICA.to_owned(), a.replica.clone()),
            (labels::GENERATION.to_owned(), a.generation.to_string()),
            (labels::SPEC.to_owned(), spec_hash.to_owned()),
            (labels::STOP_TIMEOUT.to_owned(), a.stop_timeout.to_string()),
        ]);
        let config = ContainerConfig {
            image: Some(a.image.clone()),
            env: Some(a.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: a.command.clone(),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            host_config: Some(HostConfig {
                memory: Some(memory),
                // Swap equal to the limit: no swap beyond it.
                memory_swap: Some(memory),
                nano_cpus: Some((a.cpu * 1e9) as i64),
                port_bindings: Some(bindings),
                mounts: Some(mounts),
                privileged: Some(false),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!("lb-{}-{}", a.service_name, a.replica.to_lowercase());
        let options = CreateContainerOptions {
            name,
            platform: None,
        };
        Ok(self
            .docker
            .create_container(Some(options), config)
            .await?
            .id)
    }

    /// Starts a container (already running is fine).
    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        match self.docker.start_container::<String>(id, None).await {
            Err(e) if is_status(&e, &[304]) => Ok(()),
            other => other,
        }
    }

    /// Stops with a grace period, then Docker kills.
    pub async fn stop(&self, id: &str, grace_secs: u32) -> Result<(), DockerError> {
        let t = i64::from(grace_secs);
        match self
            .docker
            .stop_container(id, Some(StopContainerOptions { t }))
            .await
        {
            Err(e) if is_status(&e, &[304, 404]) => Ok(()),
            other => other,
        }
    }

    /// Stops (with grace) and removes a container; gone already is fine.
    pub async fn remove(&self, id: &str, grace_secs: u32) -> Result<(), DockerError> {
        self.stop(id, grace_secs).await?;
        let options = RemoveContainerOptions {
            force: true,
            v: false,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Err(e) if is_status(&e, &[404, 409]) => Ok(()),
            other => other,
        }
    }

    /// The running container of a replica of this node.
    async fn container_of(&self, replica: &str) -> Result<String, String> {
        let containers = self.list().await.map_err(|e| message(&e))?;
        containers
            .into_iter()
            .find(|c| c.replica == replica)
            .map(|c| c.id)
            .ok_or_else(|| format!("replica {replica} has no container on this node"))
    }

    /// The last `tail` lines of a replica's output (stdout and stderr).
    pub async fn logs(&self, replica: &str, tail: u32) -> Result<String, String> {
        use bollard::container::LogsOptions;
        let id = self.container_of(replica).await?;
        let options = LogsOptions::<String> {
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(&id, Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| message(&e))?;
            out.extend_from_slice(&chunk.into_bytes());
            if out.len() > MAX_OUTPUT {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// A replica's output as it comes: `(channel, bytes)` with channel 1 for
    /// stdout and 2 for stderr; the last `tail` lines first, then, with
    /// `follow`, new output until the container stops.
    pub async fn log_stream(
        &self,
        replica: &str,
        tail: u32,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<(u8, bytes::Bytes), String>> + Send + 'static, String>
    {
        use bollard::container::{LogOutput, LogsOptions};
        let id = self.container_of(replica).await?;
        let options = LogsOptions::<String> {
            stdout: true,
            stderr: true,
            follow,
            tail: tail.to_string(),
            ..Default::default()
        };
        Ok(self.docker.logs(&id, Some(options)).map(|chunk| {
            Ok(match chunk.map_err(|e| message(&e))? {
                LogOutput::StdErr { message } => (2, message),
                other => (1, other.into_bytes()),
            })
        }))
    }

    /// Starts a command in a replica's container with stdin attached (and a
    /// TTY when asked): its output, the writer to its stdin, and the exec id
    /// for [`Runtime::resize_exec`] and [`Runtime::exec_exit_code`].
    pub async fn exec_attached(
        &self,
        replica: &str,
        command: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> Result<Attached, String> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        let id = self.container_of(replica).await?;
        let options = CreateExecOptions {
            cmd: Some(command),
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(&id, options)
            .await
            .map_err(|e| message(&e))?;
        let start = StartExecOptions {
            detach: false,
            tty,
            output_capacity: None,
        };
        match self
            .docker
            .start_exec(&exec.id, Some(start))
            .await
            .map_err(|e| message(&e))?
        {
            StartExecResults::Attached { output, input } => Ok(Attached {
                id: exec.id,
                output: Box::pin(output.map(|chunk| {
                    use bollard::container::LogOutput;
                    Ok(match chunk.map_err(|e| message(&e))? {
                        LogOutput::StdErr { message } => (2, message),
                        other => (1, other.into_bytes()),
                    })
                })),
                input,
            }),
            StartExecResults::Detached => Err("Docker started the command detached".into()),
        }
    }

    /// Tells a running exec its terminal's size.
    pub async fn resize_exec(&self, exec: &str, cols: u16, rows: u16) -> Result<(), String> {
        use bollard::exec::ResizeExecOptions;
        let options = ResizeExecOptions {
            width: cols,
            height: rows,
        };
        self.docker
            .resize_exec(exec, options)
            .await
            .map_err(|e| message(&e))
    }

    /// A finished exec's exit code.
    pub async fn exec_exit_code(&self, exec: &str) -> Result<i64, String> {
        let inspect = self
            .docker
            .inspect_exec(exec)
            .await
            .map_err(|e| message(&e))?;
        Ok(inspect.exit_code.unwrap_or(-1))
    }

    /// Runs a command in a replica's container and collects its output.
    pub async fn exec(
        &self,
        replica: &str,
        command: Vec<String>,
    ) -> Result<lb_model::protocol::ExecOutput, String> {
        use bollard::container::LogOutput;
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let id = self.container_of(replica).await?;
        let options = CreateExecOptions {
            cmd: Some(command),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(&id, options)
            .await
            .map_err(|e| message(&e))?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| message(&e))?
        {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|e| message(&e))? {
                    LogOutput::StdOut { message } if stdout.len() < MAX_OUTPUT => {
                        stdout.extend_from_slice(&message)
                    }
                    LogOutput::StdErr { message } if stderr.len() < MAX_OUTPUT => {
                        stderr.extend_from_slice(&message)
                    }
                    _ => {}
                }
            }
        }
        let inspect = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| message(&e))?;
        Ok(lb_model::protocol::ExecOutput {
            exit_code: inspect.exit_code.unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// How a stopped container ended.
    pub async fn exit(&self, id: &str) -> Result<Exit, DockerError> {
        let inspect = self.docker.inspect_container(id, None).await?;
        let state = inspect.state.unwrap_or_default();
        Ok(Exit {
            code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
        })
    }
}

/// The Docker operations the reconciler uses, so its logic can be tested
/// against an in-memory engine; [`Runtime`] is the real one.
pub trait Engine: Clone + Send + Sync + 'static {
    /// Every container of this node, running or not.
    fn list(&self) -> impl Future<Output = Result<Vec<Container>, DockerError>> + Send;
    /// A signal per Docker event about this node's containers.
    fn events(&self) -> futures::stream::BoxStream<'static, ()>;
    /// Pulls the image if missing (see [`Runtime::ensure_image`]).
    fn ensure_image(
        &self,
        image: &str,
        pull: Option<(&str, &str)>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Creates (not starts) the container of an assignment.
    fn create(
        &self,
        a: &Assignment,
        spec_hash: &str,
        host_ports: &[u16],
    ) -> impl Future<Output = Result<String, DockerError>> + Send;
    /// Starts a container (already running is fine).
    fn start(&self, id: &str) -> impl Future<Output = Result<(), DockerError>> + Send;
    /// Stops with a grace period (already stopped or gone is fine).
    fn stop(
        &self,
        id: &str,
        grace_secs: u32,
    ) -> impl Future<Output = Result<(), DockerError>> + Send;
    /// Stops with a grace period and removes (gone is fine).
    fn remove(
        &self,
        id: &str,
        grace_secs: u32,
    ) -> impl Future<Output = Result<(), DockerError>> + Send;
    /// How a stopped container ended.
    fn exit(&self, id: &str) -> impl Future<Output = Result<Exit, DockerError>> + Send;
}

impl Engine for Runtime {
    async fn list(&self) -> Result<Vec<Container>, DockerError> {
        Runtime::list(self).await
    }
    fn events(&self) -> futures::stream::BoxStream<'static, ()> {
        Runtime::events(self).boxed()
    }
    async fn ensure_image(&self, image: &str, pull: Option<(&str, &str)>) -> Result<(), String> {
        Runtime::ensure_image(self, image, pull).await
    }
    async fn create(
        &self,
        a: &Assignment,
        spec_hash: &str,
        host_ports: &[u16],
    ) -> Result<String, DockerError> {
        Runtime::create(self, a, spec_hash, host_ports).await
    }
    async fn start(&self, id: &str) -> Result<(), DockerError> {
        Runtime::start(self, id).await
    }
    async fn stop(&self, id: &str, grace_secs: u32) -> Result<(), DockerError> {
        Runtime::stop(self, id, grace_secs).await
    }
    async fn remove(&self, id: &str, grace_secs: u32) -> Result<(), DockerError> {
        Runtime::remove(self, id, grace_secs).await
    }
    async fn exit(&self, id: &str) -> Result<Exit, DockerError> {
        Runtime::exit(self, id).await
    }
}
