//! Talking to a running daemon from the command line.

use std::time::Duration;

use serde_json::Value;

/// One request to a running daemon: the answer's JSON, or its error
/// message. The body is taken as zeroizing text, since it may hold a
/// secret (key routes).
pub(crate) async fn remote_call(
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<zeroize::Zeroizing<String>>,
) -> Result<Value, String> {
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
        .map_err(|e| unreachable_daemon(base, &e))?;
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        Err(format!(
            "{status}: {}",
            value["error"]["message"]
                .as_str()
                .unwrap_or("the daemon refused")
        ))
    }
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

pub(crate) fn block_on<T, F: std::future::Future<Output = Result<T, String>>>(
    future: F,
) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(future)
}
