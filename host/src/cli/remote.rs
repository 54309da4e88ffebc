//! Talking to a running daemon from the command line: where it is, the
//! token, and one request.

use std::time::Duration;

use serde_json::Value;
use zeroize::Zeroizing;

use super::failure::{CliError, code_for_status, exit};
use super::state::StateArgs;

/// Where `clawcage serve` listens by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7878";

/// The token file `init` writes, for local clients.
pub const TOKEN_FILE: &str = "admin.token";

/// Where a running daemon is and the token to use, on every command that
/// can talk to one. Given after the command or any of its subcommands.
///
/// `key`, `usage`, `audit`, `token` and `trust` work on the local state
/// directory unless `--remote` (or `CLAWCAGE_URL`) is set; `agent`,
/// `invoke`, `invocations`, `push`, `sign` and `pull` always talk to a
/// daemon, at `http://127.0.0.1:7878` unless told otherwise.
#[derive(Clone, Default, clap::Args)]
pub struct DaemonArgs {
    /// A running daemon's URL (`http://127.0.0.1:7878` for the default
    /// `clawcage serve`).
    #[arg(
        long = "remote",
        env = "CLAWCAGE_URL",
        global = true,
        value_name = "URL"
    )]
    pub remote: Option<String>,
    /// An API token (default: `admin.token` in the state directory).
    #[arg(long, env = "CLAWCAGE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The state directory, to find `admin.token` (and, without
    /// `--remote`, the state itself).
    #[command(flatten)]
    pub state: StateArgs,
}

impl std::fmt::Debug for DaemonArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonArgs")
            .field("remote", &self.remote)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("state", &self.state)
            .finish()
    }
}

impl DaemonArgs {
    /// The daemon's URL: `--remote`, `CLAWCAGE_URL`, or the default.
    pub fn url(&self) -> &str {
        self.remote.as_deref().unwrap_or(DEFAULT_URL)
    }

    /// Whether a daemon was named, so a command that also works locally
    /// goes through the API.
    pub(crate) fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The token: `--token`, `CLAWCAGE_TOKEN`, or `admin.token`.
    pub fn token(&self) -> Result<String, CliError> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let path = self.state.dir()?.join(TOKEN_FILE);
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .map_err(|e| {
                CliError::new(
                    exit::UNAUTHORISED,
                    format!(
                        "no --token, CLAWCAGE_TOKEN or {}: {e} (`clawcage token add` makes one)",
                        path.display()
                    ),
                )
            })
    }

    /// One request with a JSON body (or none); the answer's JSON.
    pub(crate) fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let body = body.map(|b| Zeroizing::new(b.to_string()));
        self.call_with(method, path, body)
    }

    /// One request whose body may hold a secret (kept in zeroizing memory).
    pub(crate) fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Zeroizing<String>>,
    ) -> Result<Value, CliError> {
        let token = self.token()?;
        block_on(remote_call(self.url(), &token, method, path, body))
    }
}

/// One request to a running daemon: the answer's JSON, or its error
/// message with the exit code its status calls for. The body is taken as
/// zeroizing text, since it may hold a secret (key routes).
pub(crate) async fn remote_call(
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Zeroizing<String>>,
) -> Result<Value, CliError> {
    let (status, value) = remote_answer(base, token, method, path, body).await?;
    if status.is_success() {
        Ok(value)
    } else {
        Err(refusal(status, &value))
    }
}

/// The error for a daemon's refusal: its message, and the exit code its
/// status calls for.
pub(crate) fn refusal(status: reqwest::StatusCode, value: &Value) -> CliError {
    CliError::new(
        code_for_status(status),
        format!(
            "{status}: {}",
            value["error"]["message"]
                .as_str()
                .unwrap_or("the daemon refused")
        ),
    )
}

/// One request to a running daemon: its status and JSON body, whatever the
/// status; an error only when the daemon could not be asked.
pub(crate) async fn remote_answer(
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Zeroizing<String>>,
) -> Result<(reqwest::StatusCode, Value), CliError> {
    let client = crate::outbound::client_builder(crate::outbound::DEFAULT_CONNECT_TIMEOUT)?
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut request = client.request(method, &url).bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.as_bytes().to_vec());
    }
    let response = request
        .send()
        .await
        .map_err(|e| CliError::new(exit::UNREACHABLE, unreachable_daemon(base, &e)))?;
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    Ok((status, value))
}

/// What to say when the daemon at `base` could not be asked.
pub(crate) fn unreachable_daemon(base: &str, error: &reqwest::Error) -> String {
    if error.is_connect() {
        format!(
            "no daemon answers at {base}: start one with `clawcage serve` (it listens on 127.0.0.1:7878), or point --remote / CLAWCAGE_URL at yours"
        )
    } else if error.is_timeout() {
        format!("the daemon at {base} did not answer in time")
    } else {
        format!("cannot talk to the daemon at {base}: {error}")
    }
}

/// Runs a client future on a fresh single-threaded runtime.
pub(crate) fn block_on<T, E, F>(future: F) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: From<String>,
{
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| E::from(e.to_string()))?
        .block_on(future)
}

/// A path segment or query value, percent-encoded (everything but RFC
/// 3986's unreserved characters), so a name cannot reach another route.
pub(crate) fn segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_name_cannot_reach_another_route() {
        assert_eq!(super::segment("../keys/x?y"), "..%2Fkeys%2Fx%3Fy");
        assert_eq!(super::segment("hello-1.0_x~"), "hello-1.0_x~");
    }
}
