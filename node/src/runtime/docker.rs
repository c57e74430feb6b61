//! The real [`Runtime`]: Docker through bollard, the only file of the node
//! that names it with `network.rs` (project networks). Containers are found
//! by this node's label; 304, 404 and 409 answers that mean "already done"
//! are success.

use std::collections::HashMap;

use bollard::container::{
    Config as ContainerConfig, CreateContainerOptions, ListContainersOptions, LogOutput,
    LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::image::CreateImageOptions;
use bollard::models::{
    ContainerSummary, HostConfig, HostConfigLogConfig, Mount, MountTypeEnum, PortBinding,
    ResourcesUlimits,
};
use bollard::system::EventsOptions;
use bollard::Docker;
use futures::stream::BoxStream;
use futures::StreamExt;
use lb_model::protocol::ExecOutput;
use lb_model::{Assignment, Health, Protocol};

use super::network::{self, Networks};
use super::{labels, pull, Attached, Check, Container, Error, Exit, Output, Result, Runtime};

/// The most output kept from logs or a command (1 MiB).
const MAX_OUTPUT: usize = 1 << 20;
/// A container's open-files limit (soft and hard). It may not pass the
/// Docker daemon's own hard limit (runc refuses to raise it: "error setting
/// rlimit type 7"), which is 20,000 on some hosts: 16,384 stays under it.
const NOFILE: i64 = 16384;
/// A container's log is rotated at this size by Docker's json-file driver...
const LOG_MAX_SIZE: &str = "10m";
/// ...and this many files are kept, so a chatty replica holds at most 30 MB.
const LOG_MAX_FILES: &str = "3";
/// The writable /tmp of a read-only container.
const READ_ONLY_TMP: &str = "rw,nosuid,nodev,size=64m";

impl From<DockerError> for Error {
    fn from(err: DockerError) -> Self {
        match err {
            DockerError::DockerResponseServerError {
                status_code,
                message,
            } => Error::Status {
                status: status_code,
                message,
            },
            other => Error::Engine(other.to_string()),
        }
    }
}

/// Whether Docker answered with one of `codes`.
fn is_status(err: &DockerError, codes: &[u16]) -> bool {
    matches!(err, DockerError::DockerResponseServerError { status_code, .. } if codes.contains(status_code))
}

/// Ok when Docker's error is one of `codes` ("already done").
fn done_unless(result: Result<(), DockerError>, codes: &[u16]) -> Result<()> {
    match result {
        Err(e) if is_status(&e, codes) => Ok(()),
        other => Ok(other?),
    }
}

/// A chunk of output as `(channel, bytes)`: 2 for stderr, 1 for the rest.
fn chunk(output: Result<LogOutput, DockerError>) -> Result<(u8, bytes::Bytes)> {
    Ok(match output? {
        LogOutput::StdErr { message } => (2, message),
        other => (1, other.into_bytes()),
    })
}

/// Docker, scoped to one node's containers.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    node: String,
    /// The project networks replicas join.
    networks: Networks,
    /// The client of HTTP health checks: no proxy, no redirects followed
    /// (a 3xx passes as it is).
    http: reqwest::Client,
}

impl DockerRuntime {
    /// Connects to the local Docker engine and checks that it answers.
    pub async fn connect(node: &str) -> crate::Result<Self> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| crate::Error::Docker(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| crate::Error::Docker(e.to_string()))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("lb-health-check")
            .build()
            .map_err(|e| {
                crate::Error::Docker(format!("cannot make the health check client: {e}"))
            })?;
        Ok(Self {
            networks: Networks::new(docker.clone(), node),
            docker,
            node: node.to_owned(),
            http,
        })
    }

    fn filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={}", labels::NODE, self.node)],
        )])
    }

    /// The container of a replica of this node.
    async fn container_of(&self, replica: &str) -> Result<String> {
        self.list()
            .await?
            .into_iter()
            .find(|c| c.replica == replica)
            .map(|c| c.id)
            .ok_or_else(|| Error::NoContainer(replica.to_owned()))
    }

    /// The container config of an assignment.
    fn config(
        &self,
        a: &Assignment,
        spec_hash: &str,
        host_ports: &[u16],
    ) -> ContainerConfig<String> {
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
        ContainerConfig {
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
                cap_drop: Some(a.hardening.cap_drop()),
                cap_add: Some(a.hardening.cap_add()),
                pids_limit: Some(i64::from(a.hardening.pids_limit())),
                ulimits: Some(vec![ResourcesUlimits {
                    name: Some("nofile".into()),
                    soft: Some(NOFILE),
                    hard: Some(NOFILE),
                }]),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([
                        ("max-size".to_owned(), LOG_MAX_SIZE.to_owned()),
                        ("max-file".to_owned(), LOG_MAX_FILES.to_owned()),
                    ])),
                }),
                readonly_rootfs: Some(a.hardening.read_only),
                tmpfs: a
                    .hardening
                    .read_only
                    .then(|| HashMap::from([("/tmp".to_owned(), READ_ONLY_TMP.to_owned())])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Refuses a container config that would reach outside its confinement:
/// privileged, the host's network, pid, ipc, uts or user namespace, a bind
/// mount of a host path, devices, or capabilities beyond the allowed list.
/// lb never builds one; this keeps it so whatever changes above.
fn check_confined(config: &ContainerConfig<String>) -> Result<()> {
    let refuse = |what: &str| {
        Err(Error::Engine(format!(
            "refusing to create an unconfined container: {what}"
        )))
    };
    let Some(host) = &config.host_config else {
        return refuse("no host config (no limits)");
    };
    if host.privileged != Some(false) {
        return refuse("privileged");
    }
    let is_host = |mode: &Option<String>| {
        mode.as_deref()
            .is_some_and(|m| m == "host" || m.starts_with("container:"))
    };
    for (name, mode) in [
        ("network", &host.network_mode),
        ("pid", &host.pid_mode),
        ("ipc", &host.ipc_mode),
        ("uts", &host.uts_mode),
        ("userns", &host.userns_mode),
    ] {
        if is_host(mode) {
            return refuse(&format!("{name} mode {mode:?}"));
        }
    }
    if host.binds.as_ref().is_some_and(|b| !b.is_empty()) {
        return refuse("a bind mount");
    }
    let volume_only = host
        .mounts
        .iter()
        .flatten()
        .all(|m| m.typ == Some(MountTypeEnum::VOLUME));
    if !volume_only {
        return refuse("a mount that is not a named volume");
    }
    if host.devices.as_ref().is_some_and(|d| !d.is_empty()) {
        return refuse("a host device");
    }
    let added = host.cap_add.iter().flatten();
    if let Some(cap) = added
        .into_iter()
        .find(|c| !lb_model::ALLOWED_CAP_ADD.contains(&c.as_str()))
    {
        return refuse(&format!("capability {cap:?}"));
    }
    if host.pids_limit.is_none_or(|p| p <= 0) || host.cap_drop.is_none() {
        return refuse("no pids limit or no dropped capabilities");
    }
    Ok(())
}

impl Runtime for DockerRuntime {
    async fn list(&self) -> Result<Vec<Container>> {
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
                let health = s.status.as_deref().and_then(docker_health);
                let address = s
                    .network_settings
                    .and_then(|n| n.networks)
                    .and_then(|n| n.into_values().find_map(|e| e.ip_address))
                    .filter(|ip| !ip.is_empty());
                Some(Container {
                    health,
                    address,
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

    fn events(&self) -> BoxStream<'static, ()> {
        let mut filters = self.filters();
        filters.insert("type".into(), vec!["container".into()]);
        self.docker
            .events(Some(EventsOptions::<String> {
                filters,
                ..Default::default()
            }))
            .map(|_| ())
            .boxed()
    }

    async fn ensure_image(&self, image: &str, pull: Option<(&str, &str)>) -> Result<String> {
        /// Pulls `image` (a full reference), answering the engine's status
        /// lines.
        async fn pull_image(
            docker: &Docker,
            image: &str,
            credentials: Option<bollard::auth::DockerCredentials>,
        ) -> Result<Vec<String>> {
            let options = CreateImageOptions {
                from_image: image,
                ..Default::default()
            };
            let mut steps = docker.create_image(Some(options), None, credentials);
            let mut statuses = Vec::new();
            while let Some(step) = steps.next().await {
                let step = step.map_err(|e| Error::Pull {
                    image: image.to_owned(),
                    message: Error::from(e).to_string(),
                })?;
                if let Some(message) = step.error {
                    return Err(Error::Pull {
                        image: image.to_owned(),
                        message,
                    });
                }
                statuses.extend(step.status);
            }
            Ok(statuses)
        }
        match pull::source(image, pull.map(|(registry, _)| registry))? {
            // Pulled with the node's credential every time, cached or not:
            // the registry re-authorizes and names the digest.
            pull::Source::Lb(reference) => {
                let user = format!("node-{}", self.node);
                // The registry is asked first: the engine may answer a
                // digest from its cache without it.
                if let Some((registry, secret)) = pull {
                    match pull::check_manifest(&self.http, registry, &reference, &user, secret)
                        .await
                    {
                        pull::Verdict::Granted(_) => {}
                        pull::Verdict::Refused(message) => {
                            return Err(Error::Refused {
                                image: reference.to_string(),
                                message,
                            })
                        }
                        pull::Verdict::Unreachable(why) => {
                            // Not a refusal: the engine's copy, if any.
                            if let Some(digest) = self.local_digest(&reference).await? {
                                tracing::warn!(image = %reference, %why,
                                    "lb's registry does not answer: using the engine's copy");
                                return Ok(reference.pinned(&digest));
                            }
                            return Err(Error::Pull {
                                image: reference.to_string(),
                                message: format!("lb's registry does not answer ({why}) and the engine has no copy"),
                            });
                        }
                    }
                }
                let credentials = pull.map(|(registry, secret)| bollard::auth::DockerCredentials {
                    username: Some(user.clone()),
                    password: Some(secret.to_owned()),
                    serveraddress: Some(registry.to_owned()),
                    ..Default::default()
                });
                let statuses = pull_image(&self.docker, &reference.runnable(), credentials).await?;
                let digest = pull::resolved(&reference, statuses.iter().map(String::as_str))?;
                Ok(reference.pinned(&digest))
            }
            // Another registry: the engine's copy of this full reference,
            // else a pull.
            pull::Source::Public(reference) => {
                let full = reference.runnable();
                match self.docker.inspect_image(&full).await {
                    Ok(_) => return Ok(full),
                    Err(e) if is_status(&e, &[404]) => {}
                    Err(e) => return Err(e.into()),
                }
                pull_image(&self.docker, &full, None).await?;
                Ok(full)
            }
        }
    }

    async fn create(&self, a: &Assignment, spec_hash: &str, host_ports: &[u16]) -> Result<String> {
        // The network stays until the container has joined it.
        let (_network_held, network) = self.networks.ensure(&a.project).await?;
        let mut config = self.config(a, spec_hash, host_ports);
        // A job's container is not one of the service's replicas: it does
        // not answer to the service's name.
        let alias = match a.job {
            Some(_) => format!("job-{}", a.replica.to_lowercase()),
            None => a.service_name.clone(),
        };
        network::attach(&mut config, &network, &alias);
        check_confined(&config)?;
        // Never a string the engine could read as an image id.
        pull::check_runnable(&a.image)?;
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

    async fn start(&self, id: &str) -> Result<()> {
        done_unless(
            self.docker.start_container::<String>(id, None).await,
            &[304],
        )
    }

    async fn stop(&self, id: &str, grace_secs: u32) -> Result<()> {
        let options = StopContainerOptions {
            t: i64::from(grace_secs),
        };
        done_unless(
            self.docker.stop_container(id, Some(options)).await,
            &[304, 404],
        )
    }

    async fn remove(&self, id: &str, grace_secs: u32) -> Result<()> {
        let project = self.project_of(id).await;
        self.stop(id, grace_secs).await?;
        let options = RemoveContainerOptions {
            force: true,
            v: false,
            ..Default::default()
        };
        done_unless(
            self.docker.remove_container(id, Some(options)).await,
            &[404, 409],
        )?;
        if let Some(project) = project {
            // The container is gone whether or not its network can go.
            if let Err(err) = self.networks.release(&project).await {
                tracing::warn!(error = %err, "cannot remove an empty project network");
            }
        }
        Ok(())
    }

    async fn exit(&self, id: &str) -> Result<Exit> {
        let inspect = self.docker.inspect_container(id, None).await?;
        let state = inspect.state.unwrap_or_default();
        Ok(Exit {
            code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
        })
    }

    async fn logs(&self, replica: &str, tail: u32, timestamps: bool) -> Result<String> {
        let id = self.container_of(replica).await?;
        let options = LogsOptions::<String> {
            stdout: true,
            stderr: true,
            timestamps,
            tail: tail.to_string(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(&id, Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?.into_bytes());
            if out.len() > MAX_OUTPUT {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn log_stream(
        &self,
        replica: &str,
        tail: u32,
        follow: bool,
        timestamps: bool,
    ) -> Result<Output> {
        let id = self.container_of(replica).await?;
        let options = LogsOptions::<String> {
            stdout: true,
            stderr: true,
            follow,
            timestamps,
            tail: tail.to_string(),
            ..Default::default()
        };
        Ok(Box::pin(self.docker.logs(&id, Some(options)).map(chunk)))
    }

    async fn exec_attached(
        &self,
        replica: &str,
        command: Vec<String>,
        env: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> Result<Attached> {
        let id = self.container_of(replica).await?;
        let options = CreateExecOptions {
            cmd: Some(command),
            env: (!env.is_empty()).then_some(env),
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty),
            ..Default::default()
        };
        let exec = self.docker.create_exec(&id, options).await?;
        let start = StartExecOptions {
            detach: false,
            tty,
            output_capacity: None,
        };
        match self.docker.start_exec(&exec.id, Some(start)).await? {
            StartExecResults::Attached { output, input } => Ok(Attached {
                id: exec.id,
                output: Box::pin(output.map(chunk)),
                input,
            }),
            StartExecResults::Detached => Err(Error::Detached),
        }
    }

    async fn resize_exec(&self, exec: &str, cols: u16, rows: u16) -> Result<()> {
        let options = ResizeExecOptions {
            width: cols,
            height: rows,
        };
        Ok(self.docker.resize_exec(exec, options).await?)
    }

    async fn exec_exit_code(&self, exec: &str) -> Result<i64> {
        let inspect = self.docker.inspect_exec(exec).await?;
        Ok(inspect.exit_code.unwrap_or(-1))
    }

    async fn exec(&self, replica: &str, command: Vec<String>) -> Result<ExecOutput> {
        let id = self.container_of(replica).await?;
        self.exec_in(&id, command).await
    }

    async fn check(&self, check: &Check) -> std::result::Result<(), String> {
        match check {
            Check::Http { host_port, path } => {
                let url = format!("http://127.0.0.1:{host_port}{path}");
                let response = self.http.get(url).send().await.map_err(|e| {
                    if e.is_connect() {
                        "connection refused".to_owned()
                    } else {
                        innermost(&e)
                    }
                })?;
                let status = response.status();
                if status.is_success() || status.is_redirection() {
                    Ok(())
                } else {
                    Err(status.as_u16().to_string())
                }
            }
            Check::Tcp {
                address,
                port,
                host_port,
            } => {
                let target = match address {
                    Some(ip) => format!("{ip}:{port}"),
                    None => format!("127.0.0.1:{host_port}"),
                };
                tokio::net::TcpStream::connect(&target)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Check::Image { container } => {
                let inspect = self
                    .docker
                    .inspect_container(container, None)
                    .await
                    .map_err(|e| Error::from(e).to_string())?;
                let health = inspect.state.and_then(|s| s.health);
                let unhealthy = health.as_ref().and_then(|h| h.status)
                    == Some(bollard::models::HealthStatusEnum::UNHEALTHY);
                if !unhealthy {
                    return Ok(());
                }
                let last = health
                    .and_then(|h| h.log)
                    .and_then(|log| log.into_iter().last());
                let code = last.as_ref().and_then(|l| l.exit_code).unwrap_or(-1);
                let said: String = last
                    .and_then(|l| l.output)
                    .unwrap_or_default()
                    .trim()
                    .chars()
                    .take(200)
                    .collect();
                Err(if said.is_empty() {
                    format!("exit code {code}")
                } else {
                    format!("exit code {code}: {said}")
                })
            }
            Check::Command { container, command } => {
                let out = self
                    .exec_in(container, command.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                if out.exit_code == 0 {
                    return Ok(());
                }
                let said = if out.stderr.trim().is_empty() {
                    out.stdout
                } else {
                    out.stderr
                };
                let said: String = said.trim().chars().take(200).collect();
                Err(if said.is_empty() {
                    format!("exit code {}", out.exit_code)
                } else {
                    format!("exit code {}: {said}", out.exit_code)
                })
            }
        }
    }
}

/// The engine's health verdict in a container list's status ("Up 5
/// seconds (healthy)"); none for a container without a `HEALTHCHECK`.
fn docker_health(status: &str) -> Option<Health> {
    if status.ends_with("(healthy)") {
        Some(Health::Healthy)
    } else if status.ends_with("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if status.ends_with("(health: starting)") {
        Some(Health::Starting)
    } else {
        None
    }
}

/// The innermost cause of an error, which names what went wrong.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut err = err;
    while let Some(source) = err.source() {
        err = source;
    }
    err.to_string()
}

impl DockerRuntime {
    /// The project of a container, from its label (none when it is gone).
    async fn project_of(&self, id: &str) -> Option<String> {
        let inspect = self.docker.inspect_container(id, None).await.ok()?;
        inspect.config?.labels?.get(labels::PROJECT).cloned()
    }

    /// The digest of the engine's copy of an image of lb's registry, if
    /// it holds one: the pinned digest itself, or the one its tag's
    /// `RepoDigests` name in the same repository.
    async fn local_digest(
        &self,
        reference: &lb_model::reference::Reference,
    ) -> Result<Option<String>> {
        let image = match self.docker.inspect_image(&reference.runnable()).await {
            Ok(image) => image,
            Err(e) if is_status(&e, &[404]) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if let Some(digest) = &reference.digest {
            return Ok(Some(digest.clone()));
        }
        let prefix = format!("{}@", reference.name());
        Ok(image
            .repo_digests
            .unwrap_or_default()
            .iter()
            .find_map(|d| d.strip_prefix(&prefix).map(str::to_owned)))
    }

    /// Removes this node's project networks that no container uses (those
    /// of projects deleted while the node was down).
    pub async fn prune_networks(&self) -> Result<()> {
        self.networks.prune().await
    }

    /// Runs a command in a container and collects its output.
    async fn exec_in(&self, id: &str, command: Vec<String>) -> Result<ExecOutput> {
        let options = CreateExecOptions {
            cmd: Some(command),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self.docker.create_exec(id, options).await?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        if let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec.id, None).await?
        {
            while let Some(chunk) = output.next().await {
                match chunk? {
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
        Ok(ExecOutput {
            exit_code: self.exec_exit_code(&exec.id).await?,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config as lb makes it: not privileged, a pids limit, caps dropped.
    fn confined() -> ContainerConfig<String> {
        ContainerConfig {
            host_config: Some(HostConfig {
                privileged: Some(false),
                pids_limit: Some(1024),
                cap_drop: Some(vec!["NET_RAW".into()]),
                mounts: Some(vec![Mount {
                    typ: Some(MountTypeEnum::VOLUME),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_confined_containers_are_created() {
        assert!(check_confined(&confined()).is_ok());
        let unconfined: [fn(&mut HostConfig); 9] = [
            |h| h.privileged = Some(true),
            |h| h.privileged = None,
            |h| h.network_mode = Some("host".into()),
            |h| h.pid_mode = Some("host".into()),
            |h| h.ipc_mode = Some("container:other".into()),
            |h| h.binds = Some(vec!["/etc:/host-etc".into()]),
            |h| {
                h.mounts = Some(vec![Mount {
                    typ: Some(MountTypeEnum::BIND),
                    ..Default::default()
                }])
            },
            |h| h.cap_add = Some(vec!["SYS_ADMIN".into()]),
            |h| h.pids_limit = None,
        ];
        for (i, change) in unconfined.iter().enumerate() {
            let mut config = confined();
            if let Some(host) = config.host_config.as_mut() {
                change(host);
            }
            let err = check_confined(&config).expect_err(&format!("case {i} passed"));
            assert!(err.to_string().contains("unconfined"), "{err}");
        }
        let mut added = confined();
        if let Some(host) = added.host_config.as_mut() {
            host.cap_add = Some(vec!["NET_RAW".into()]);
        }
        assert!(check_confined(&added).is_ok());
    }
}
