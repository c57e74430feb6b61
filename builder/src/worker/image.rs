//! What the builder asks of Docker, as the [`ImageBuilder`] trait: build an
//! image from a context tar, push a tag with a registry token, remove a
//! local image. [`BollardImages`] is the engine's implementation; the
//! worker's logic is tested against a recording fake.

use bollard::auth::DockerCredentials;
use bollard::image::{BuildImageOptions, PushImageOptions, RemoveImageOptions};
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
    /// Pushes a tag to lb's registry.
    fn push(&self, request: PushRequest) -> OutputStream;
    /// Removes a local image (errors ignored: it may be gone already).
    async fn remove(&self, image: &str);
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
    fn build(&self, request: BuildRequest, context: Vec<u8>) -> OutputStream {
        let options = BuildImageOptions {
            dockerfile: request.dockerfile,
            t: request.tag,
            rm: true,
            forcerm: true,
            memory: Some(request.memory),
            memswap: Some(request.memory as i64),
            labels: request.labels.into_iter().collect(),
            ..Default::default()
        };
        let docker = self.docker.clone();
        forward(move |tx| async move {
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

    async fn remove(&self, image: &str) {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
        };
        let _ = self.docker.remove_image(image, Some(options), None).await;
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
