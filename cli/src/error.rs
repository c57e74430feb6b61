//! The one error type of lbc and its exit codes: every failure is one line
//! on stderr and an exit code per class, documented in the README.

use std::fmt;

/// Exit codes, one per class of failure (the remote exit code of `lbc exec`
/// passes through as is).
pub mod code {
    /// Success.
    pub const OK: i32 = 0;
    /// An operation ran and failed: a build failed or was canceled, a
    /// deploy did not come up.
    pub const FAILED: i32 = 1;
    /// Bad usage: unknown flags, bad arguments, input the API refused (400, 413).
    pub const USAGE: i32 = 2;
    /// Not found (404).
    pub const NOT_FOUND: i32 = 3;
    /// Conflict with the current state: a name taken, a stale revision (409),
    /// or a request the state does not allow now (422).
    pub const CONFLICT: i32 = 4;
    /// Not logged in, bad credentials, not allowed (401, 403, 429 on login).
    pub const AUTH: i32 = 5;
    /// The server failed or could not be reached (5xx, network, bad answers).
    pub const SERVER: i32 = 6;
}

/// The class of a failure, which picks the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// See [`code::FAILED`].
    Failed,
    /// See [`code::USAGE`].
    Usage,
    /// See [`code::NOT_FOUND`].
    NotFound,
    /// See [`code::CONFLICT`].
    Conflict,
    /// See [`code::AUTH`].
    Auth,
    /// See [`code::SERVER`].
    Server,
}

/// A failure of an lbc command.
#[derive(Debug)]
pub enum Error {
    /// A failure with a message, shown as `lbc: error: <message>`.
    Message {
        /// Its class.
        kind: Kind,
        /// One line, naming the input at fault.
        message: String,
    },
    /// Exit with this code and print nothing (a remote command's exit code).
    Exit(i32),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self::Message {
            kind,
            message: message.into(),
        }
    }
    /// Bad usage.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }
    /// Missing or refused credentials.
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(Kind::Auth, message)
    }
    /// A server fault or an unreachable server.
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(Kind::Server, message)
    }
    /// An operation that ran and failed.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Kind::Failed, message)
    }

    /// The class of an HTTP error status.
    pub fn kind_of_status(status: u16) -> Kind {
        match status {
            400 | 405 | 413 | 414 | 415 => Kind::Usage,
            401 | 403 | 429 => Kind::Auth,
            404 => Kind::NotFound,
            409 | 412 | 422 => Kind::Conflict,
            _ => Kind::Server,
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Exit(code) => *code,
            Self::Message { kind, .. } => match kind {
                Kind::Failed => code::FAILED,
                Kind::Usage => code::USAGE,
                Kind::NotFound => code::NOT_FOUND,
                Kind::Conflict => code::CONFLICT,
                Kind::Auth => code::AUTH,
                Kind::Server => code::SERVER,
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Message { message, .. } => f.write_str(message),
            Self::Exit(code) => write!(f, "exit code {code}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::failed(format!("i/o: {e}"))
    }
}
