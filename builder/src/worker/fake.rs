//! Test doubles for the worker: [`FakeImages`], a recording
//! [`ImageBuilder`] whose build answers a script of outputs (or hangs), and
//! [`FakeSources`], a checkout that writes files instead of cloning.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use futures::StreamExt;
use lb_git::{Checkout, Credentials};

use super::git::Sources;
use super::image::{BuildRequest, ImageBuilder, Output, OutputStream, PullRequest, PushRequest};

/// One call the worker made to Docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A build: the request and the context's file names, sorted.
    Build(BuildRequest, Vec<String>),
    /// A pull from lb's registry.
    Pull(PullRequest),
    /// A push.
    Push(PushRequest),
    /// A local image removed.
    Remove(String),
}

/// A recording [`ImageBuilder`].
#[derive(Default)]
pub struct FakeImages {
    /// The calls, in order.
    pub calls: Mutex<Vec<Call>>,
    /// What a build answers.
    pub build_output: Vec<Output>,
    /// A build never ends after its output (a slow build).
    pub build_hangs: bool,
    /// What a push answers.
    pub push_output: Vec<Output>,
}

impl FakeImages {
    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl ImageBuilder for FakeImages {
    fn build(&self, request: BuildRequest, context: Vec<u8>) -> OutputStream {
        let mut names: Vec<String> = tar::Archive::new(context.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        self.calls.lock().unwrap().push(Call::Build(request, names));
        let out = futures::stream::iter(self.build_output.clone().into_iter().map(Ok));
        if self.build_hangs {
            out.chain(futures::stream::pending()).boxed()
        } else {
            out.boxed()
        }
    }

    fn pull(&self, request: PullRequest) -> OutputStream {
        self.calls.lock().unwrap().push(Call::Pull(request));
        futures::stream::iter([Ok(Output::Text("pulled".into()))]).boxed()
    }

    fn push(&self, request: PushRequest) -> OutputStream {
        self.calls.lock().unwrap().push(Call::Push(request));
        futures::stream::iter(self.push_output.clone().into_iter().map(Ok)).boxed()
    }

    async fn remove(&self, image: &str) {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Remove(image.to_owned()));
    }
}

/// What a checkout was asked for: url, branch, commit.
pub type Asked = (String, Option<String>, Option<String>);

/// A checkout that writes `files` and answers `sha` (or fails with `error`).
#[derive(Default)]
pub struct FakeSources {
    /// Path in the repository -> contents.
    pub files: BTreeMap<String, String>,
    /// The commit answered.
    pub sha: String,
    /// When set, every checkout fails with it.
    pub error: Option<String>,
    /// The (url, branch, commit) of each checkout.
    pub asked: Mutex<Vec<Asked>>,
}

#[async_trait::async_trait]
impl Sources for FakeSources {
    async fn checkout(
        &self,
        _credentials: Credentials,
        url: &str,
        branch: Option<&str>,
        commit: Option<&str>,
        into: &Path,
    ) -> Result<Checkout, String> {
        self.asked.lock().unwrap().push((
            url.to_owned(),
            branch.map(str::to_owned),
            commit.map(str::to_owned),
        ));
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        for (path, text) in &self.files {
            let path = into.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Ok(Checkout {
            sha: commit.unwrap_or(&self.sha).to_owned(),
            subject: "the subject".into(),
        })
    }
}
