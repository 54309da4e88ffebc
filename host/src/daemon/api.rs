//! The daemon's HTTP API.
//!
//! | route | auth | what |
//! | --- | --- | --- |
//! | `GET /healthz`, `GET /readyz` | none | liveness; readiness (503 while draining, or once the audit log stopped) |
//! | `GET /metrics` | none | Prometheus text format |
//! | `GET /v1/agents`, `GET /v1/agents/{name}` | token | deployed agents; one in detail |
//! | `PUT /v1/agents/{name}` | token | deploy or replace (a [`Bundle`]) |
//! | `DELETE /v1/agents/{name}` | token | remove |
//! | `POST /v1/agents/{name}/invoke[?async=true]` | token | run an event |
//! | `GET /v1/invocations?agent=&outcome=&source=&since=&limit=` | token | recent invocations, newest first, with their model calls' tokens and cost |
//! | `GET /v1/invocations/{id}` | token | an async invocation's state |
//! | `GET/POST /v1/keys`, `POST /v1/keys/{id}/rotate`, `DELETE /v1/keys/{id}` (revoke), `POST /v1/keys/{id}/delete` | token | the vault |
//! | `GET /v1/usage?agent=&since=&by=model|day` | token | spend |
//! | `GET /v1/audit?after=&limit=`, `GET /v1/audit/verify` | token | the audit log |
//! | `POST /hooks/github`, `/hooks/slack`, `/hooks/webhook/{name}` | signature | triggers |
//!
//! Errors are `{"error": {"code": "…", "message": "…"}}` with a fitting
//! status: 400 bad request or event, 401 no or bad token, 404 unknown
//! agent, 413 body too large, 422 the agent returned an error, 429 queue
//! full (with `Retry-After`), 500 the agent crashed or the host failed, 503
//! a limit stopped the agent, or the daemon is draining.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Bundle, Daemon, Outcome, Pending, Refusal};
use crate::audit::AuditEvent;
use crate::secret::Secret;
use crate::{Event, db::now_unix};

/// Largest deployment body: a component, base64, plus cassettes.
pub const MAX_DEPLOY_BYTES: usize = 96 << 20;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
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

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    /// The host failed (storage, a task): a bug or an environment problem.
    fn host(error: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "host-error",
            error.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = seconds.to_string().parse()
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

use axum::Json;

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::UnknownAgent(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown-agent", refusal.to_string())
            }
            Refusal::Busy { .. } => Self {
                retry_after: Some(1),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", refusal.to_string())
            },
            Refusal::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                refusal.to_string(),
            ),
            Refusal::DiskFull { .. } => Self {
                retry_after: Some(30),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "disk-full",
                    refusal.to_string(),
                )
            },
        }
    }
}

/// The status an invocation's outcome answers with.
fn outcome_status(outcome: &Outcome) -> StatusCode {
    match outcome.error.as_ref().map(|e| e.kind) {
        None => StatusCode::OK,
        Some("invalid-event") => StatusCode::BAD_REQUEST,
        Some("agent-error") => StatusCode::UNPROCESSABLE_ENTITY,
        Some("limit" | "result-too-large") => StatusCode::SERVICE_UNAVAILABLE,
        Some("busy") => StatusCode::TOO_MANY_REQUESTS,
        Some(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Who a request authenticated as (set by the auth layer).
#[derive(Debug, Clone)]
struct Actor(String);

/// The router, over a daemon.
pub fn router(daemon: Arc<Daemon>) -> Router {
    let max_event = daemon.options().max_event_bytes;
    let max_blob = usize::try_from(daemon.options().max_blob_bytes).unwrap_or(usize::MAX);
    let admin = Router::new()
        .route("/v1/agents", get(list_agents))
        .route(
            "/v1/agents/{name}",
            get(show_agent)
                .put(deploy)
                .delete(remove)
                .layer(DefaultBodyLimit::max(MAX_DEPLOY_BYTES)),
        )
        .route("/v1/agents/{name}/invoke", post(invoke))
        .route("/v1/agents/{name}/resume", post(resume))
        .route("/v1/suspensions", get(suspensions))
        .route("/v1/invocations", get(list_invocations))
        .route("/v1/invocations/{id}", get(invocation))
        .route("/v1/keys", get(list_keys).post(add_key))
        .route("/v1/keys/{id}/rotate", post(rotate_key))
        .route("/v1/keys/{id}/delete", post(delete_key))
        .route("/v1/keys/{id}", axum::routing::delete(revoke_key))
        .route("/v1/usage", get(usage))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/verify", get(audit_verify))
        .layer(axum::middleware::from_fn_with_state(
            daemon.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/hooks/github", post(github_hook))
        .route("/hooks/slack", post(slack_hook))
        .route("/hooks/webhook/{name}", post(generic_hook))
        .merge(admin)
        .layer(DefaultBodyLimit::max(max_event))
        .with_state(daemon.clone())
        .merge(crate::registry::api::routes(daemon, max_blob))
}

async fn authenticate(
    State(daemon): State<Arc<Daemon>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let action = format!("{} {}", request.method(), request.uri().path());
    let actor = presented.and_then(|token| daemon.tokens.authenticate(token));
    let is_invoke = request.uri().path().ends_with("/invoke");
    // Invocations are audited as invocations; every other admin request,
    // and every refused one, as an admin event.
    if actor.is_none() || !is_invoke {
        daemon.audit.append(AuditEvent::Admin {
            actor: actor.clone().unwrap_or_else(|| "unknown".into()),
            action,
            allowed: actor.is_some(),
        });
    }
    let Some(actor) = actor else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API token is required: Authorization: Bearer cc_…",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("static header"),
        );
        return Ok(response);
    };
    request.extensions_mut().insert(Actor(actor));
    Ok(next.run(request).await)
}

fn actor(request_actor: Option<axum::Extension<Actor>>) -> String {
    request_actor.map_or_else(|| "unknown".into(), |a| a.0.0.clone())
}

async fn ready(State(daemon): State<Arc<Daemon>>) -> Response {
    if daemon.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if let Some(reason) = daemon.audit.stopped() {
        // Events would run unaudited: take this daemon out of rotation.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the audit log stopped: {reason}"),
        )
            .into_response()
    } else {
        "ready".into_response()
    }
}

async fn metrics(State(daemon): State<Arc<Daemon>>) -> Response {
    let agents = daemon.list();
    let queue: Vec<(String, u64)> = agents
        .iter()
        .map(|a| (format!("agent=\"{}\"", a.name), a.queued as u64))
        .collect();
    let text = daemon.metrics.render(&[
        (
            "clawcage_queue_depth",
            "Events waiting for a slot, by agent.",
            queue,
        ),
        (
            "clawcage_instances_in_use",
            "Events running now (instance pool use).",
            vec![(String::new(), daemon.running() as u64)],
        ),
        (
            "clawcage_instances_max",
            "Events that may run at once.",
            vec![(String::new(), daemon.options().max_concurrent as u64)],
        ),
        (
            "clawcage_agents",
            "Agents deployed.",
            vec![(String::new(), agents.len() as u64)],
        ),
        (
            "clawcage_suspensions",
            "Model bindings and tool grants suspended after a blocked leak.",
            vec![(String::new(), daemon.suspensions().len() as u64)],
        ),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn suspensions(State(daemon): State<Arc<Daemon>>) -> Json<Value> {
    Json(json!({"suspensions": daemon.suspensions()}))
}

/// What to resume: one binding (`model`), one grant (`tool`), or, with
/// neither, everything suspended for the agent.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeRequest {
    model: Option<String>,
    tool: Option<String>,
    /// Resume although the key that came back was not rotated since.
    #[serde(default)]
    force: bool,
}

async fn resume(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    request_actor: Option<axum::Extension<Actor>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: ResumeRequest = if body.is_empty() {
        ResumeRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body is not {{\"model\": …}} or {{\"tool\": …}}: {e}"
            ))
        })?
    };
    let only = match (&request.model, &request.tool) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "name a model or a tool, not both".to_string(),
            ));
        }
        (Some(model), None) => Some((crate::suspend::Capability::Model, model.as_str())),
        (None, Some(tool)) => Some((crate::suspend::Capability::Tool, tool.as_str())),
        (None, None) => None,
    };
    let resumed = daemon
        .resume(&name, only, request.force, &actor(request_actor))
        .map_err(|e| match e {
            super::ResumeError::NotRotated(message) => {
                ApiError::new(StatusCode::CONFLICT, "rotate-first", message)
            }
            super::ResumeError::Failed(message) => ApiError::host(message),
        })?;
    Ok(Json(json!({"resumed": resumed})))
}

async fn list_agents(State(daemon): State<Arc<Daemon>>) -> Json<Value> {
    Json(json!({"agents": daemon.list()}))
}

async fn show_agent(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    daemon
        .show(&name)
        .map(|detail| Json(json!({"agent": detail})))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown-agent",
                format!("no agent named {name:?}"),
            )
        })
}

async fn deploy(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    request_actor: Option<axum::Extension<Actor>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let bundle: Bundle = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a deployment: {e}")))?;
    let actor = actor(request_actor);
    let info = tokio::task::spawn_blocking(move || daemon.deploy(&name, bundle, &actor))
        .await
        .map_err(ApiError::host)?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid-deployment", e))?;
    Ok(Json(json!({"deployed": info})))
}

async fn remove(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    request_actor: Option<axum::Extension<Actor>>,
) -> Result<StatusCode, ApiError> {
    // It may wait for a deployment in progress: off the async workers.
    let actor = actor(request_actor);
    tokio::task::spawn_blocking(move || daemon.remove(&name, &actor))
        .await
        .map_err(ApiError::host)?
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "unknown-agent", e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct InvokeQuery {
    #[serde(default, rename = "async")]
    run_async: bool,
}

async fn invoke(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(query): Query<InvokeQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut event: Event = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-event",
            format!("the body is not an event: {e}"),
        )
    })?;
    if event.source.is_empty() {
        event.source = "api".into();
    }
    if query.run_async {
        let id = daemon.invoke_async(&name, event, "api")?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "status": "running", "poll": format!("/v1/invocations/{id}")})),
        )
            .into_response());
    }
    let outcome = daemon.invoke(&name, event, "api").await?;
    Ok((outcome_status(&outcome), Json(outcome)).into_response())
}

async fn invocation(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Result<Json<Pending>, ApiError> {
    daemon.result(&id).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown-invocation",
            format!(
                "no invocation {id:?} (results are kept for the last {} async invocations)",
                super::MAX_KEPT_RESULTS
            ),
        )
    })
}

#[derive(Debug, Deserialize)]
struct InvocationQuery {
    agent: Option<String>,
    outcome: Option<String>,
    source: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

async fn list_invocations(
    State(daemon): State<Arc<Daemon>>,
    Query(query): Query<InvocationQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = query
        .since
        .as_deref()
        .map(|since| crate::ledger::parse_since(since, now_unix()))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let filter = super::invocations::InvocationFilter {
        agent: query.agent,
        outcome: query.outcome,
        source: query.source,
        since,
        limit: query.limit.unwrap_or(100),
    };
    let rows = daemon.invocations.list(&filter).map_err(ApiError::host)?;
    Ok(Json(json!({"invocations": rows})))
}

async fn list_keys(State(daemon): State<Arc<Daemon>>) -> Result<Json<Value>, ApiError> {
    let keys = daemon.services.vault.list().map_err(ApiError::host)?;
    Ok(Json(json!({"keys": keys})))
}

/// A key in a request body. The secret is only ever in the body, and is
/// zeroized when dropped.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    id: String,
    provider: String,
    secret: Secret,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSecret {
    secret: Secret,
}

fn vault_error(e: crate::vault::VaultError) -> ApiError {
    use crate::vault::VaultError;
    match e {
        VaultError::UnknownKey(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown-key", e.to_string())
        }
        VaultError::Exists(_)
        | VaultError::Revoked(_)
        | VaultError::RevokedExists(_)
        | VaultError::Active(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
        VaultError::Invalid(_) => ApiError::bad_request(e.to_string()),
        other => ApiError::host(other),
    }
}

async fn add_key(
    State(daemon): State<Arc<Daemon>>,
    request_actor: Option<axum::Extension<Actor>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key: NewKey = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request("the body must be {\"id\", \"provider\", \"secret\"}")
    })?;
    let info = daemon
        .services
        .vault
        .add(&key.id, &key.provider, &key.secret)
        .map_err(vault_error)?;
    daemon.audit.append(AuditEvent::Key {
        change: "add".into(),
        key_id: info.id.clone(),
        provider: info.provider.clone(),
        actor: actor(request_actor),
    });
    Ok((StatusCode::CREATED, Json(json!({"key": info}))))
}

async fn rotate_key(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    request_actor: Option<axum::Extension<Actor>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let new: NewSecret = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("the body must be {\"secret\"}"))?;
    let info = daemon
        .services
        .vault
        .rotate(&id, &new.secret)
        .map_err(vault_error)?;
    daemon.audit.append(AuditEvent::Key {
        change: "rotate".into(),
        key_id: info.id.clone(),
        provider: info.provider.clone(),
        actor: actor(request_actor),
    });
    Ok(Json(json!({"key": info})))
}

async fn delete_key(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    request_actor: Option<axum::Extension<Actor>>,
) -> Result<Json<Value>, ApiError> {
    let info = daemon.services.vault.delete(&id).map_err(vault_error)?;
    daemon.audit.append(AuditEvent::Key {
        change: "delete".into(),
        key_id: info.id.clone(),
        provider: info.provider.clone(),
        actor: actor(request_actor),
    });
    Ok(Json(json!({"deleted": info})))
}

async fn revoke_key(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    request_actor: Option<axum::Extension<Actor>>,
) -> Result<Json<Value>, ApiError> {
    let info = daemon.services.vault.revoke(&id).map_err(vault_error)?;
    daemon.audit.append(AuditEvent::Key {
        change: "revoke".into(),
        key_id: info.id.clone(),
        provider: info.provider.clone(),
        actor: actor(request_actor),
    });
    Ok(Json(json!({"key": info})))
}

#[derive(Debug, Deserialize)]
struct UsageQuery {
    agent: Option<String>,
    since: Option<String>,
    /// `model` (the default) or `day`.
    by: Option<String>,
}

async fn usage(
    State(daemon): State<Arc<Daemon>>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = crate::ledger::parse_since(query.since.as_deref().unwrap_or("month"), now_unix())
        .map_err(ApiError::bad_request)?;
    let by_day = match query.by.as_deref() {
        None | Some("model") => false,
        Some("day") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "by={other:?}: use `model` (the default) or `day`"
            )));
        }
    };
    let rows = daemon
        .services
        .ledger
        .summary_by(query.agent.as_deref(), since, by_day)
        .map_err(ApiError::host)?;
    Ok(Json(json!({"since": since, "usage": rows})))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    limit: Option<usize>,
}

async fn audit(
    State(daemon): State<Arc<Daemon>>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(1000).min(10_000);
    let records = daemon
        .audit
        .read(query.after, limit)
        .map_err(ApiError::host)?;
    Ok(Json(json!({"records": records})))
}

async fn audit_verify(State(daemon): State<Arc<Daemon>>) -> Result<Json<Value>, ApiError> {
    let verification = daemon.audit.verify().map_err(ApiError::host)?;
    Ok(Json(json!(verification)))
}

// --- Webhooks -------------------------------------------------------------

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn refuse_hook(daemon: &Daemon, endpoint: &str, reason: String) -> ApiError {
    daemon.metrics.add(
        "clawcage_webhooks_refused_total",
        &[("endpoint", endpoint)],
        1,
    );
    daemon.audit.append(AuditEvent::WebhookRefused {
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

async fn github_hook(
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
                .is_some_and(|secret| {
                    super::hooks::verify_github(secret.expose(), &body, signature).is_ok()
                })
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
    let kind = match super::json_str(&payload, "/action") {
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

async fn slack_hook(
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
            match super::hooks::verify_slack(secret.expose(), &body, timestamp, signature, now) {
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
    if super::json_str(&payload, "/type") == Some("url_verification") {
        let challenge = super::json_str(&payload, "/challenge").unwrap_or_default();
        return Ok(Json(json!({"challenge": challenge})));
    }
    let kind = super::json_str(&payload, "/event/type")
        .unwrap_or("event_callback")
        .to_string();
    let delivery = super::json_str(&payload, "/event_id")
        .unwrap_or_default()
        .to_string();
    deliver(&daemon, "slack", delivery, kind, payload, verified)
}

async fn generic_hook(
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
                .is_some_and(|secret| {
                    super::hooks::verify_generic(secret.expose(), &body, signature).is_ok()
                })
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
