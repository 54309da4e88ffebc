//! Webhook signatures: GitHub's `X-Hub-Signature-256`, Slack's `v0`
//! signatures with their timestamp window, and a generic HMAC-SHA256
//! header. Every comparison is ring's constant-time HMAC verification.
//!
//! The endpoints (`/hooks/github`, `/hooks/slack`, `/hooks/webhook/{name}`)
//! verify a delivery against every subscribed agent's secret, refuse a
//! repeated delivery id, and start the event on each agent that verified.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use ring::hmac;
use serde_json::{Value, json};

use super::Daemon;
use super::error::ApiError;
use crate::Event;
use crate::audit::AuditEvent;
use crate::db::now_unix;

/// How far a Slack request's timestamp may be from now, in seconds (Slack's
/// own recommendation), so a captured request cannot be replayed later.
pub(crate) const SLACK_WINDOW_SECS: i64 = 300;

fn verify_hex_hmac(secret: &[u8], message: &[&[u8]], hex_tag: &str) -> Result<(), String> {
    let tag = hex::decode(hex_tag).map_err(|_| "the signature is not hex".to_string())?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &message.concat(), &tag)
        .map_err(|_| "the signature does not match".to_string())
}

/// Verifies GitHub's `X-Hub-Signature-256: sha256=<hex>` over the raw body.
pub(crate) fn verify_github(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), String> {
    let header = header.ok_or("X-Hub-Signature-256 is missing")?;
    let hex_tag = header
        .strip_prefix("sha256=")
        .ok_or("X-Hub-Signature-256 is not sha256=<hex>")?;
    verify_hex_hmac(secret, &[body], hex_tag)
}

/// Verifies a generic `X-Signature-256: sha256=<hex>` over the raw body.
pub(crate) fn verify_generic(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), String> {
    let header = header.ok_or("X-Signature-256 is missing")?;
    let hex_tag = header
        .strip_prefix("sha256=")
        .ok_or("X-Signature-256 is not sha256=<hex>")?;
    verify_hex_hmac(secret, &[body], hex_tag)
}

/// Verifies Slack's `X-Slack-Signature: v0=<hex>` over
/// `v0:<X-Slack-Request-Timestamp>:<body>`, refusing timestamps more than
/// [`SLACK_WINDOW_SECS`] from `now`.
pub(crate) fn verify_slack(
    secret: &[u8],
    body: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    now: i64,
) -> Result<(), String> {
    let timestamp = timestamp.ok_or("X-Slack-Request-Timestamp is missing")?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| "X-Slack-Request-Timestamp is not a number".to_string())?;
    if (now - seconds).abs() > SLACK_WINDOW_SECS {
        return Err(format!(
            "the request is {}s old, outside the {SLACK_WINDOW_SECS}s window (a replay?)",
            now - seconds
        ));
    }
    let signature = signature.ok_or("X-Slack-Signature is missing")?;
    let hex_tag = signature
        .strip_prefix("v0=")
        .ok_or("X-Slack-Signature is not v0=<hex>")?;
    verify_hex_hmac(secret, &[b"v0:", timestamp.as_bytes(), b":", body], hex_tag)
}

/// Signs like GitHub (`sha256=<hex>`): for tests and for clients of generic
/// webhooks.
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// Signs like Slack (`v0=<hex>`).
pub fn sign_slack(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let base = [format!("v0:{timestamp}:").as_bytes(), body].concat();
    format!("v0={}", hex::encode(hmac::sign(&key, &base).as_ref()))
}

/// A JSON value's string, for event ids and kinds from webhooks.
pub(crate) fn json_str<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}

impl Daemon {
    /// Records a webhook delivery; `false` when it was seen before.
    pub(crate) fn first_delivery(&self, source: &str, delivery_id: &str) -> bool {
        let conn = self.db.lock();
        // Forget deliveries older than a week.
        let _ = conn.execute(
            "DELETE FROM deliveries WHERE at < ?1",
            [crate::db::now_unix() - 7 * 86_400],
        );
        conn.execute(
            "INSERT INTO deliveries (source, delivery_id, at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            rusqlite::params![source, delivery_id, crate::db::now_unix()],
        )
        .map(|inserted| inserted == 1)
        .unwrap_or(false)
    }

    /// A webhook signing secret from the vault.
    pub(crate) fn webhook_secret(&self, key_id: &str) -> Option<crate::secret::Secret> {
        self.services.vault.secret(key_id, "webhook").ok()
    }

    /// Agents subscribed to a trigger source, with their triggers.
    pub(crate) fn subscribers(&self, source: &str) -> Vec<(String, crate::manifest::Trigger)> {
        self.read_agents()
            .iter()
            .flat_map(|(name, deployed)| {
                deployed
                    .manifest
                    .triggers
                    .iter()
                    .filter(|t| t.source == source)
                    .map(|t| (name.clone(), t.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

// --- The webhook endpoints ------------------------------------------------

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn refuse_hook(daemon: &Daemon, endpoint: &str, reason: String) -> ApiError {
    daemon.metrics.add(
        "clawcage_webhooks_refused_total",
        &[("endpoint", endpoint)],
        1,
    );
    daemon.audit.append_refusal(AuditEvent::WebhookRefused {
        endpoint: endpoint.to_string(),
        reason: reason.clone(),
    });
    tracing::warn!(endpoint, reason = %reason, "webhook refused");
    ApiError::new(StatusCode::UNAUTHORIZED, "bad-signature", reason)
}

/// Starts `event` on every agent in `targets`; answers with their ids.
fn dispatch(
    daemon: &Arc<Daemon>,
    targets: Vec<String>,
    event: &Event,
    source: &str,
) -> Json<Value> {
    let mut started = Vec::new();
    for agent in targets {
        let mut copy = event.clone();
        copy.id = event.id.as_ref().map(|id| format!("{id}:{agent}"));
        match daemon.invoke_async(&agent, copy, source) {
            Ok(id) => started.push(json!({"agent": agent, "id": id})),
            Err(e) => started.push(json!({"agent": agent, "error": e.to_string()})),
        }
    }
    Json(json!({"started": started}))
}

pub(super) async fn github_hook(
    State(daemon): State<Arc<Daemon>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let signature = header_str(&headers, "x-hub-signature-256");
    let github_event = header_str(&headers, "x-github-event").unwrap_or_default();
    let delivery = header_str(&headers, "x-github-delivery")
        .unwrap_or_default()
        .to_string();
    // Agents whose secret verifies the signature: a repository's webhook
    // has one secret, shared by the agents subscribed to it.
    let verified: Vec<(String, crate::manifest::Trigger)> = daemon
        .subscribers("github")
        .into_iter()
        .filter(|(_, trigger)| {
            trigger
                .secret
                .as_deref()
                .and_then(|id| daemon.webhook_secret(id))
                .is_some_and(|secret| verify_github(secret.expose(), &body, signature).is_ok())
        })
        .collect();
    if verified.is_empty() {
        return Err(refuse_hook(
            &daemon,
            "github",
            "no subscribed agent's secret verifies X-Hub-Signature-256".into(),
        ));
    }
    if github_event == "ping" {
        return Ok(Json(json!({"pong": true})));
    }
    let payload: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError::bad_request("the body is not JSON"))?;
    let kind = match json_str(&payload, "/action") {
        Some(action) => format!("{github_event}.{action}"),
        None => github_event.to_string(),
    };
    deliver(&daemon, "github", delivery, kind, payload, verified)
}

/// Runs a verified delivery once: refuses one without an id, answers a
/// repeated one with `duplicate`, and starts the event on every verified
/// subscriber whose event filter matches.
fn deliver(
    daemon: &Arc<Daemon>,
    source: &str,
    delivery: String,
    kind: String,
    payload: Value,
    verified: Vec<(String, crate::manifest::Trigger)>,
) -> Result<Json<Value>, ApiError> {
    if delivery.is_empty() {
        return Err(ApiError::bad_request(format!(
            "the {source} delivery has no id"
        )));
    }
    if !daemon.first_delivery(source, &delivery) {
        return Ok(Json(json!({"duplicate": true, "delivery": delivery})));
    }
    let targets = verified
        .into_iter()
        .filter(|(_, t)| t.events.is_empty() || t.events.contains(&kind))
        .map(|(agent, _)| agent)
        .collect();
    let event = Event {
        id: Some(delivery),
        source: source.into(),
        kind,
        payload,
    };
    Ok(dispatch(daemon, targets, &event, source))
}

pub(super) async fn slack_hook(
    State(daemon): State<Arc<Daemon>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let timestamp = header_str(&headers, "x-slack-request-timestamp");
    let signature = header_str(&headers, "x-slack-signature");
    let now = now_unix();
    let mut first_error = None;
    let verified: Vec<(String, crate::manifest::Trigger)> = daemon
        .subscribers("slack")
        .into_iter()
        .filter(|(_, trigger)| {
            let Some(secret) = trigger
                .secret
                .as_deref()
                .and_then(|id| daemon.webhook_secret(id))
            else {
                return false;
            };
            match verify_slack(secret.expose(), &body, timestamp, signature, now) {
                Ok(()) => true,
                Err(e) => {
                    first_error.get_or_insert(e);
                    false
                }
            }
        })
        .collect();
    if verified.is_empty() {
        let reason = first_error.unwrap_or_else(|| "no agent subscribes to Slack events".into());
        return Err(refuse_hook(&daemon, "slack", reason));
    }
    let payload: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError::bad_request("the body is not JSON"))?;
    if json_str(&payload, "/type") == Some("url_verification") {
        let challenge = json_str(&payload, "/challenge").unwrap_or_default();
        return Ok(Json(json!({"challenge": challenge})));
    }
    let kind = json_str(&payload, "/event/type")
        .unwrap_or("event_callback")
        .to_string();
    let delivery = json_str(&payload, "/event_id")
        .unwrap_or_default()
        .to_string();
    deliver(&daemon, "slack", delivery, kind, payload, verified)
}

pub(super) async fn generic_hook(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let signature = header_str(&headers, "x-signature-256");
    let endpoint = format!("webhook/{name}");
    let verified: Vec<String> = daemon
        .subscribers("webhook")
        .into_iter()
        .filter(|(_, t)| t.name.as_deref() == Some(name.as_str()))
        .filter(|(_, trigger)| {
            trigger
                .secret
                .as_deref()
                .and_then(|id| daemon.webhook_secret(id))
                .is_some_and(|secret| verify_generic(secret.expose(), &body, signature).is_ok())
        })
        .map(|(agent, _)| agent)
        .collect();
    if verified.is_empty() {
        return Err(refuse_hook(
            &daemon,
            &endpoint,
            "no subscribed agent's secret verifies X-Signature-256".into(),
        ));
    }
    let payload: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    // Without a delivery id, the body's hash identifies the delivery.
    let delivery = header_str(&headers, "x-delivery-id").map_or_else(
        || hex::encode(ring::digest::digest(&ring::digest::SHA256, &body).as_ref()),
        str::to_string,
    );
    if !daemon.first_delivery(&endpoint, &delivery) {
        return Ok(Json(json!({"duplicate": true, "delivery": delivery})));
    }
    let kind = header_str(&headers, "x-event-kind")
        .unwrap_or(&name)
        .to_string();
    let event = Event {
        id: Some(delivery),
        source: "webhook".into(),
        kind,
        payload,
    };
    Ok(dispatch(&daemon, verified, &event, &endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signatures() {
        // GitHub's documented example.
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign_sha256(secret, body), good);
        assert!(verify_github(secret, body, Some(good)).is_ok());
        assert!(verify_github(secret, b"Hello, World?", Some(good)).is_err());
        assert!(verify_github(b"other", body, Some(good)).is_err());
        assert!(verify_github(secret, body, None).is_err());
        assert!(verify_github(secret, body, Some("sha1=abc")).is_err());
    }

    #[test]
    fn slack_signatures_and_their_window() {
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J";
        let now = 1_531_420_618;
        let signature = sign_slack(secret, now, body);
        let ts = now.to_string();
        assert!(verify_slack(secret, body, Some(&ts), Some(&signature), now + 10).is_ok());
        let stale = verify_slack(secret, body, Some(&ts), Some(&signature), now + 301);
        assert!(stale.unwrap_err().contains("window"));
        let other_ts = (now + 1).to_string();
        assert!(verify_slack(secret, body, Some(&other_ts), Some(&signature), now).is_err());
    }
}
