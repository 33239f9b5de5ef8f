//! The CLI's failures: one line on stderr, and an exit code per kind.

use std::fmt;

/// What kind of failure, which fixes the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad input, a refused request, an invalid signature or a failed verification (1).
    Failed,
    /// Authentication failed or the caller lacks permission (3).
    Auth,
    /// The key, version or approval does not exist (4).
    NotFound,
    /// A conflict, a state that forbids the operation, or an approval still needed (5).
    Conflict,
    /// The server failed, is rate limiting, or cannot be reached (6).
    Server,
}

impl Kind {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Failed => 1,
            Kind::Auth => 3,
            Kind::NotFound => 4,
            Kind::Conflict => 5,
            Kind::Server => 6,
        }
    }
}

/// A failure to report.
#[derive(Debug)]
pub struct CliError {
    /// Its kind.
    pub kind: Kind,
    /// One line naming the cause.
    pub message: String,
    /// The server's request id, when the server answered.
    pub request_id: Option<String>,
}

impl CliError {
    /// A failure of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        CliError { kind, message: message.into(), request_id: None }
    }

    /// Bad local input (exit 1).
    pub fn input(message: impl Into<String>) -> Self {
        CliError::new(Kind::Failed, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(id) = &self.request_id {
            write!(f, " (request {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

/// The CLI's result type.
pub type Result<T, E = CliError> = std::result::Result<T, E>;
