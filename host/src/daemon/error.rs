//! What the daemon answers when it does not do what was asked: one error
//! type for the daemon's operations, and the one place where every error
//! kind gets its HTTP status, code and `Retry-After`.
//!
//! Errors are `{"error": {"code": "…", "message": "…"}}`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::TokenError;
use crate::vault::VaultError;

/// Why the daemon did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// No such agent.
    #[error("no agent named {0:?}")]
    UnknownAgent(String),
    /// The agent's queue is full.
    #[error("agent {agent:?} is busy: {queued} events are waiting")]
    Busy {
        /// The agent.
        agent: String,
        /// How many wait.
        queued: usize,
    },
    /// An operator paused the agent.
    #[error("agent {agent:?} is paused (by {by}); it takes no event until an operator resumes it")]
    Paused {
        /// The agent.
        agent: String,
        /// Who paused it.
        by: String,
    },
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The state directory's disk is nearly full: new events are refused
    /// rather than fail halfway through writing their records.
    #[error(
        "the state directory's disk has {free_mib} MiB free, less than the {min_mib} MiB kept in reserve; new events wait until space is freed"
    )]
    DiskFull {
        /// Free space, in MiB.
        free_mib: u64,
        /// The reserve (`--min-free-disk-mib`), in MiB.
        min_mib: u64,
    },
    /// The deployment was refused: its manifest, component or files, or the
    /// trust policy for a registry component.
    #[error("{0}")]
    InvalidDeployment(String),
    /// A key that came back in an answer was not rotated since, and
    /// `force` was not given.
    #[error("{0}")]
    NotRotated(String),
    /// The request is not valid (a name, a key, a field).
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state.
    #[error("{0}")]
    Conflict(String),
    /// The host failed: files, the database, a task. A bug or an
    /// environment problem, never the caller's doing.
    #[error("{0}")]
    Host(String),
}

impl DaemonError {
    /// The host failed doing `what`.
    pub(crate) fn host(what: impl std::fmt::Display, error: impl std::fmt::Display) -> Self {
        Self::Host(format!("{what}: {error}"))
    }
}

/// An API error: status, code, message and, for refusals worth retrying,
/// `Retry-After` seconds.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The request itself is wrong (its body, a query parameter).
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    /// The host failed (storage, a task): a bug or an environment problem.
    pub(crate) fn host(error: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "host-error",
            error.to_string(),
        )
    }

    fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The status answered.
    #[cfg(test)]
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<DaemonError> for ApiError {
    fn from(error: DaemonError) -> Self {
        let message = error.to_string();
        match error {
            DaemonError::UnknownAgent(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown-agent", message)
            }
            DaemonError::Busy { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", message).retry_after(1)
            }
            DaemonError::Paused { .. } => Self::new(StatusCode::CONFLICT, "paused", message),
            DaemonError::ShuttingDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting-down", message)
            }
            DaemonError::DiskFull { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "disk-full", message).retry_after(30)
            }
            DaemonError::InvalidDeployment(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid-deployment", message)
            }
            DaemonError::NotRotated(_) => Self::new(StatusCode::CONFLICT, "rotate-first", message),
            DaemonError::Invalid(_) => Self::bad_request(message),
            DaemonError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not-found", message),
            DaemonError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            DaemonError::Host(_) => Self::host(message),
        }
    }
}

impl From<VaultError> for ApiError {
    fn from(error: VaultError) -> Self {
        let message = error.to_string();
        match error {
            VaultError::UnknownKey(_) => Self::new(StatusCode::NOT_FOUND, "unknown-key", message),
            VaultError::Exists(_)
            | VaultError::Revoked(_)
            | VaultError::RevokedExists(_)
            | VaultError::Active(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            VaultError::Invalid(_) => Self::bad_request(message),
            _ => Self::host(message),
        }
    }
}

impl From<TokenError> for DaemonError {
    fn from(error: TokenError) -> Self {
        let message = error.to_string();
        match error {
            TokenError::Invalid(_) => Self::Invalid(message),
            TokenError::Exists(_) => Self::Conflict(message),
            TokenError::Unknown(_) => Self::NotFound(message),
            TokenError::Storage(_) => Self::Host(message),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        DaemonError::from(error).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_removal_is_a_host_error_not_an_unknown_agent() {
        let failed: ApiError = DaemonError::host("agents/x", "permission denied").into();
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let unknown: ApiError = DaemonError::UnknownAgent("x".into()).into();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn refusals_worth_retrying_say_when() {
        let busy: ApiError = DaemonError::Busy {
            agent: "a".into(),
            queued: 3,
        }
        .into();
        assert_eq!(busy.into_response().headers()[header::RETRY_AFTER], "1");
        let full: ApiError = DaemonError::DiskFull {
            free_mib: 1,
            min_mib: 256,
        }
        .into();
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.into_response().headers()[header::RETRY_AFTER], "30");
    }
}
