//! Why a command failed, and the exit code of each kind of failure: the
//! same codes for every command, so scripts can tell a typo from a daemon
//! that is down.

use crate::daemon::DaemonError;
use crate::daemon::auth::TokenError;
use crate::db::DbError;
use crate::vault::VaultError;

/// Exit codes, one per kind of failure, the same for every command.
///
/// | code | meaning |
/// | --- | --- |
/// | 0 | success |
/// | 1 | the agent's handler returned an error (`run`, `invoke`) |
/// | 2 | bad usage: an unknown flag, a missing argument, a value that does not parse |
/// | 3 | a file could not be read or written |
/// | 4 | the manifest is invalid |
/// | 5 | the file is not a WebAssembly component |
/// | 6 | the component does not fit the `clawcage:agent` world |
/// | 7 | the event is invalid |
/// | 8 | the agent crashed (panic, abort, trap) |
/// | 9 | the agent hit a limit (deadline, memory, fuel, stack, result size) |
/// | 10 | the host failed, or is busy or draining |
/// | 11 | the state directory is not initialised (`clawcage init`) |
/// | 12 | not found: no such key, agent, token, namespace or invocation |
/// | 13 | refused: the request conflicts with the state (a key that exists or was revoked, rotate first, an untrusted or invalid deployment) |
/// | 14 | no daemon answers at the URL |
/// | 15 | not authorised: no token, a wrong one, or one without the right |
pub mod exit {
    /// The handler returned an error.
    pub const AGENT_ERROR: u8 = 1;
    /// Bad command-line usage (clap's own code), or a value that does not
    /// parse.
    pub(crate) const USAGE: u8 = 2;
    /// A file could not be read or written.
    pub const MISSING_FILE: u8 = 3;
    /// The manifest is invalid.
    pub const BAD_MANIFEST: u8 = 4;
    /// The file is not a WebAssembly component.
    pub const NOT_A_COMPONENT: u8 = 5;
    /// The component does not fit the `clawcage:agent` world.
    pub const WRONG_WORLD: u8 = 6;
    /// The event is not valid.
    pub const BAD_EVENT: u8 = 7;
    /// The agent crashed (panic, abort, trap).
    pub const CRASHED: u8 = 8;
    /// The agent hit a limit (deadline, memory, fuel, stack, result size).
    pub const LIMIT: u8 = 9;
    /// The host failed, or is busy or draining.
    pub(crate) const HOST: u8 = 10;
    /// The state directory is not initialised.
    pub(crate) const NOT_INITIALISED: u8 = 11;
    /// No such key, agent, token, namespace or invocation.
    pub const NOT_FOUND: u8 = 12;
    /// The request conflicts with the state.
    pub(crate) const REFUSED: u8 = 13;
    /// No daemon answers.
    pub(crate) const UNREACHABLE: u8 = 14;
    /// No token, a wrong one, or one without the right.
    pub(crate) const UNAUTHORISED: u8 = 15;
}

/// A failed command: its exit code ([`exit`]) and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The exit code.
    pub code: u8,
    /// The message, printed after `error: `.
    pub message: String,
}

impl CliError {
    /// A failure of kind `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A value the user gave does not parse or is out of range.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }

    /// Whether the message contains `text` (for tests and callers that
    /// match on it).
    pub fn contains(&self, text: &str) -> bool {
        self.message.contains(text)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// A failure without a more precise kind is the host's.
impl From<String> for CliError {
    fn from(message: String) -> Self {
        Self::new(exit::HOST, message)
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        Self::new(exit::HOST, message)
    }
}

impl From<CliError> for String {
    fn from(error: CliError) -> Self {
        error.message
    }
}

impl From<DbError> for CliError {
    fn from(error: DbError) -> Self {
        let code = match &error {
            DbError::NotInitialised(_) => exit::NOT_INITIALISED,
            _ => exit::HOST,
        };
        Self::new(code, error.to_string())
    }
}

impl From<VaultError> for CliError {
    fn from(error: VaultError) -> Self {
        let code = match &error {
            VaultError::NoMasterKey => exit::NOT_INITIALISED,
            VaultError::UnknownKey(_) => exit::NOT_FOUND,
            VaultError::Exists(_)
            | VaultError::Revoked(_)
            | VaultError::RevokedExists(_)
            | VaultError::Active(_) => exit::REFUSED,
            VaultError::Invalid(_) => exit::USAGE,
            VaultError::Db(DbError::NotInitialised(_)) => exit::NOT_INITIALISED,
            _ => exit::HOST,
        };
        Self::new(code, error.to_string())
    }
}

impl From<DaemonError> for CliError {
    fn from(error: DaemonError) -> Self {
        let code = match &error {
            DaemonError::UnknownAgent(_) | DaemonError::NotFound(_) => exit::NOT_FOUND,
            DaemonError::Invalid(_) => exit::USAGE,
            DaemonError::InvalidDeployment(_)
            | DaemonError::NotRotated(_)
            | DaemonError::Conflict(_) => exit::REFUSED,
            _ => exit::HOST,
        };
        Self::new(code, error.to_string())
    }
}

impl From<TokenError> for CliError {
    fn from(error: TokenError) -> Self {
        let code = match &error {
            TokenError::Invalid(_) => exit::USAGE,
            TokenError::Exists(_) => exit::REFUSED,
            TokenError::Unknown(_) => exit::NOT_FOUND,
            TokenError::Storage(_) => exit::HOST,
        };
        Self::new(code, error.to_string())
    }
}

impl From<crate::registry::client::ClientError> for CliError {
    fn from(error: crate::registry::client::ClientError) -> Self {
        use crate::registry::client::ClientError;
        let code = match &error {
            ClientError::Unreachable { .. } => exit::UNREACHABLE,
            ClientError::Refused { status, .. } => {
                reqwest::StatusCode::from_u16(*status).map_or(exit::HOST, code_for_status)
            }
            ClientError::Invalid(_) => exit::REFUSED,
        };
        Self::new(code, error.to_string())
    }
}

/// The exit code for a daemon's HTTP answer.
pub(crate) fn code_for_status(status: reqwest::StatusCode) -> u8 {
    match status.as_u16() {
        401 | 403 => exit::UNAUTHORISED,
        404 => exit::NOT_FOUND,
        400 | 409 | 413 | 422 => exit::REFUSED,
        _ => exit::HOST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_typo_and_a_missing_init_have_their_own_codes() {
        let typo: CliError = VaultError::UnknownKey("anthropc".into()).into();
        assert_eq!(typo.code, exit::NOT_FOUND);
        let uninitialised: CliError = DbError::NotInitialised("/tmp/x".into()).into();
        assert_eq!(uninitialised.code, exit::NOT_INITIALISED);
        assert_eq!(
            CliError::from(VaultError::NoMasterKey).code,
            exit::NOT_INITIALISED
        );
        assert_eq!(
            code_for_status(reqwest::StatusCode::CONFLICT),
            exit::REFUSED
        );
        assert_eq!(
            code_for_status(reqwest::StatusCode::FORBIDDEN),
            exit::UNAUTHORISED
        );
    }
}
