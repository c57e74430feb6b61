//! What the builder asks of Docker, as the [`ImageBuilder`] trait: build an
//! image from a context tar, pull a base image and push a tag with a
//! registry token, remove a local image. [`BollardImages`] is the engine's
//! implementation; the worker's logic is tested against a recording fake.
//!
//! Builds run their `RUN` containers on the bridge network
//! [`BUILD_NETWORK`] (made when missing, labelled `lb.network=build`,
//! containers on it kept from talking to each other), never on Docker's
//! default bridge. Its bridge interface is [`BUILD_BRIDGE`], `lbp-build`:
//! the node's firewall (`lb_node::firewall`) holds every `lbp+` interface
//! as a project bridge, so builds get the same rules as replicas (no
//! other project's network, no lb port on the host, no link-local
//! address) wherever a node runs beside the builder.

use std::collections::HashMap;

use bollard::auth::DockerCredentials;
use bollard::image::{BuildImageOptions, CreateImageOptions, PushImageOptions, RemoveImageOptions};
use bollard::network::CreateNetworkOptions;
use bollard::Docker;
use futures::stream::BoxStream;
use futures::StreamExt;

/// An image build's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    /// The tag given to the image (`<registry>/<repo>:<n>`).
    pub tag: String,
    /// The Dockerfile's name inside the context.
    pub dockerfile: String,
    /// Memory (and memory plus swap) limit, bytes.
    pub memory: u64,
    /// Labels set on the image.
    pub labels: Vec<(String, String)>,
}

/// The network builds run on.
pub const BUILD_NETWORK: &str = "lb-build";
/// Its bridge interface: `lbp` first, as the firewall's `lbp+` matches.
pub const BUILD_BRIDGE: &str = "lbp-build";
/// The label (key, value) lb's build network carries.
pub const BUILD_NETWORK_LABEL: (&str, &str) = ("lb.network", "build");

/// A pull's settings: an image of lb's registry, with a token for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// The image without tag or digest (`<registry>/<repo>`).
    pub image: String,
    /// The tag or digest.
    pub reference: String,
    /// The registry (host:port) the token is for.
    pub registry: String,
    /// The registry token (pull on the repository).
    pub token: String,
}

/// A push's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    /// The image without its tag (`<registry>/<repo>`).
    pub image: String,
    /// The tag pushed.
    pub tag: String,
    /// The registry (host:port) the token is for.
    pub registry: String,
    /// The registry token (push and pull on the repository).
    pub token: String,
}

/// One piece of Docker's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Text for the build log (may hold several lines).
    Text(String),
    /// Docker reports the build or push failed, with its message.
    Error(String),
}

/// A stream of Docker output; `Err` when talking to Docker failed.
pub type OutputStream = BoxStream<'static, Result<Output, String>>;

/// What the builder asks of Docker.
#[async_trait::async_trait]
pub trait ImageBuilder: Send + Sync {
    /// Builds an image from `context` (a tar holding the Dockerfile).
    fn build(&self, request: BuildRequest, context: Vec<u8>) -> OutputStream;
    /// Pulls an image from lb's registry with a token.
    fn pull(&self, request: PullRequest) -> OutputStream;
    /// Pushes a tag to lb's registry.
    fn push(&self, request: PushRequest) -> OutputStream;
    /// Removes a local image (errors ignored: it may be gone already).
    async fn remove(&self, image: &str);
    /// The `ONBUILD` triggers of a base image (`Config.OnBuild`), as the
    /// build will find it: the engine's copy, pulled first (without
    /// credentials) when the engine has none, as the build would.
    async fn onbuild(&self, _image: &str) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    /// Prunes the build cache to `max` bytes (`prune.rs`); the bytes freed.
    async fn prune_cache(&self, _max: u64) -> Result<u64, String> {
        Ok(0)
    }
}

/// [`ImageBuilder`] with the machine's Docker engine.
pub struct BollardImages {
    docker: Docker,
}

impl BollardImages {
    /// Connects to the local Docker engine.
    pub fn connect() -> Result<Self, String> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| format!("cannot reach Docker: {e}"))?;
        Ok(Self { docker })
    }
}

#[async_trait::async_trait]
impl ImageBuilder for BollardImages {
    async fn prune_cache(&self, max: u64) -> Result<u64, String> {
        super::prune::prune(&self.docker, max).await
    }

    fn build(&self, request: BuildRequest, context: Vec<u8>) -> OutputStream {
        let options = BuildImageOptions {
            dockerfile: request.dockerfile,
            t: request.tag,
            rm: true,
            forcerm: true,
            memory: Some(request.memory),
            memswap: Some(request.memory as i64),
            labels: request.labels.into_iter().collect(),
            networkmode: BUILD_NETWORK.to_owned(),
            ..Default::default()
        };
        let docker = self.docker.clone();
        forward(move |tx| async move {
            if let Err(e) = build_network(&docker).await {
                let _ = tx.send(Err(e)).await;
                return;
            }
            let stream = docker.build_image(options, None, Some(context.into()));
            pipe(stream, tx, |item| match item {
                Ok(info) => Ok(match (info.error, info.stream) {
                    (Some(error), _) => Output::Error(error),
                    (None, text) => Output::Text(text.unwrap_or_default()),
                }),
                // Docker reports a failed step as an error in the stream.
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    Ok(Output::Error(error))
                }
                Err(e) => Err(format!("docker build: {e}")),
            })
            .await
        })
    }

    fn pull(&self, request: PullRequest) -> OutputStream {
        let credentials = DockerCredentials {
            registrytoken: Some(request.token),
            serveraddress: Some(request.registry),
            ..Default::default()
        };
        let docker = self.docker.clone();
        forward(move |tx| async move {
            let options = Some(CreateImageOptions {
                from_image: request.image,
                tag: request.reference,
                ..Default::default()
            });
            let stream = docker.create_image(options, None, Some(credentials));
            pipe(stream, tx, |item| match item {
                Ok(info) => Ok(match (info.error, info.status) {
                    (Some(error), _) => Output::Error(error),
                    (None, Some(status)) if info.progress.is_none() => Output::Text(status),
                    (None, _) => Output::Text(String::new()),
                }),
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    Ok(Output::Error(error))
                }
                Err(e) => Ok(Output::Error(e.to_string())),
            })
            .await
        })
    }

    fn push(&self, request: PushRequest) -> OutputStream {
        let credentials = DockerCredentials {
            registrytoken: Some(request.token),
            serveraddress: Some(request.registry),
            ..Default::default()
        };
        let docker = self.docker.clone();
        forward(move |tx| async move {
            let options = Some(PushImageOptions { tag: request.tag });
            let stream = docker.push_image(&request.image, options, Some(credentials));
            pipe(stream, tx, |item| match item {
                Ok(info) => Ok(match (info.error, info.status) {
                    (Some(error), _) => Output::Error(error),
                    // Progress bars are not logged, only their statuses.
                    (None, Some(status)) if info.progress.is_none() => Output::Text(status),
                    (None, _) => Output::Text(String::new()),
                }),
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    Ok(Output::Error(error))
                }
                Err(e) => Err(e.to_string()),
            })
            .await
        })
    }

    async fn onbuild(&self, image: &str) -> Result<Vec<String>, String> {
        let triggers = |i: bollard::models::ImageInspect| {
            i.config.and_then(|c| c.on_build).unwrap_or_default()
        };
        match self.docker.inspect_image(image).await {
            Ok(inspect) => return Ok(triggers(inspect)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(format!("inspect {image}: {e}")),
        }
        // Without a tag the engine would pull every tag.
        let last = image.rsplit('/').next().unwrap_or(image);
        let from_image = if image.contains('@') || last.contains(':') {
            image.to_owned()
        } else {
            format!("{image}:latest")
        };
        let options = Some(CreateImageOptions {
            from_image,
            ..Default::default()
        });
        let mut stream = self.docker.create_image(options, None, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(error) = info.error {
                        return Err(format!("pull {image}: {error}"));
                    }
                }
                Err(e) => return Err(format!("pull {image}: {e}")),
            }
        }
        self.docker
            .inspect_image(image)
            .await
            .map(triggers)
            .map_err(|e| format!("inspect {image}: {e}"))
    }

    async fn remove(&self, image: &str) {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
        };
        let _ = self.docker.remove_image(image, Some(options), None).await;
    }
}

/// Makes [`BUILD_NETWORK`] when it is missing; refuses one of that name
/// lb did not make (the firewall knows builds by the label).
async fn build_network(docker: &Docker) -> Result<(), String> {
    let (key, value) = BUILD_NETWORK_LABEL;
    let ours = |labels: Option<&HashMap<String, String>>| {
        labels.and_then(|l| l.get(key)).is_some_and(|v| v == value)
    };
    let inspect = || docker.inspect_network::<String>(BUILD_NETWORK, None);
    match inspect().await {
        Ok(network) if ours(network.labels.as_ref()) => return Ok(()),
        Ok(_) => {
            return Err(format!(
                "a Docker network {BUILD_NETWORK:?} exists without the label {key}={value}: remove it, lb makes its own"
            ))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(format!("build network {BUILD_NETWORK}: {e}")),
    }
    let options = CreateNetworkOptions {
        name: BUILD_NETWORK,
        check_duplicate: true,
        driver: "bridge",
        options: HashMap::from([
            ("com.docker.network.bridge.name", BUILD_BRIDGE),
            ("com.docker.network.bridge.enable_icc", "false"),
        ]),
        labels: HashMap::from([BUILD_NETWORK_LABEL]),
        ..Default::default()
    };
    match docker.create_network(options).await {
        Ok(_) => Ok(()),
        // Made by another build meanwhile.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => match inspect().await {
            Ok(network) if ours(network.labels.as_ref()) => Ok(()),
            _ => Err(format!(
                "build network {BUILD_NETWORK}: made meanwhile without lb's label"
            )),
        },
        Err(e) => Err(format!("build network {BUILD_NETWORK}: {e}")),
    }
}

type Sender = tokio::sync::mpsc::Sender<Result<Output, String>>;

/// An [`OutputStream`] fed by a task (bollard's streams borrow the client):
/// the task ends, and with it the Docker request, as soon as the stream is
/// dropped (a canceled build).
fn forward<F, Fut>(run: F) -> OutputStream
where
    F: FnOnce(Sender) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let closed = tx.clone();
    let work = run(tx);
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            () = closed.closed() => {}
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// Sends each item of `stream`, mapped, until it ends or nobody listens.
async fn pipe<S, T>(stream: S, tx: Sender, map: impl Fn(T) -> Result<Output, String>)
where
    S: futures::Stream<Item = T>,
{
    futures::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        if tx.send(map(item)).await.is_err() {
            return;
        }
    }
}
