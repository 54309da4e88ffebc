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
//! | `GET/POST /v1/tokens`, `DELETE /v1/tokens/{name}` (revoke) | token | API tokens (a new token's value is in the answer, once) |
//! | `GET /v1/trust`, `POST /v1/trust` (a [`TrustChange`](super::trust::TrustChange)) | token | the registry trust policy |
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

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Scope;
use super::error::ApiError;
use super::{Bundle, Daemon, Outcome, Pending};
use crate::audit::AuditEvent;
use crate::secret::Secret;
use crate::{Event, db::now_unix};

/// Largest deployment body: a component, base64, plus cassettes.
pub(crate) const MAX_DEPLOY_BYTES: usize = 96 << 20;

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
        .route("/v1/agents/{name}/pause", post(pause))
        .route("/v1/agents/{name}/version", post(deploy_version))
        .route("/v1/agents/{name}/unpause", post(unpause))
        .route(
            "/v1/agents/{name}/bindings/{binding}",
            axum::routing::put(set_binding).delete(clear_binding),
        )
        .route("/v1/suspensions", get(suspensions))
        .route("/v1/invocations", get(list_invocations))
        .route("/v1/invocations/{id}", get(invocation))
        .route("/v1/keys", get(list_keys).post(add_key))
        .route("/v1/keys/{id}/rotate", post(rotate_key))
        .route("/v1/keys/{id}/delete", post(delete_key))
        .route("/v1/keys/{id}", axum::routing::delete(revoke_key))
        .route("/v1/tokens", get(list_tokens).post(add_token))
        .route("/v1/tokens/{name}", axum::routing::delete(revoke_token))
        .route("/v1/trust", get(show_trust).post(change_trust))
        .route("/v1/usage", get(usage))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/audit/export", get(audit_export))
        .route("/v1/registry/usage", get(registry_usage))
        .route("/v1/registry/repositories", get(registry_repositories))
        .route("/v1/registry/gc", post(registry_gc))
        .layer(axum::middleware::from_fn_with_state(
            daemon.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/hooks/github", post(super::hooks::github_hook))
        .route("/hooks/slack", post(super::hooks::slack_hook))
        .route("/hooks/webhook/{name}", post(super::hooks::generic_hook))
        .merge(admin)
        .layer(DefaultBodyLimit::max(max_event))
        .with_state(daemon.clone())
        .merge(crate::registry::api::routes(daemon.clone()))
        .merge(if daemon.options().ui {
            crate::ui::routes(daemon.clone(), daemon.options().public_url.as_deref())
        } else {
            Router::new()
        })
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
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    // An admin token opens every route; a viewer token every read; a
    // publisher token none (it is for the registry).
    let scoped = presented.and_then(|token| daemon.tokens.authenticate_scoped(token));
    let read_only = matches!(scoped, Some((_, Scope::Viewer)));
    let actor = match scoped {
        Some((name, Scope::Admin | Scope::Viewer)) => Some(name),
        _ => None,
    };
    if read_only && !reads {
        daemon.audit.append_refusal(AuditEvent::Admin {
            actor: actor.clone().unwrap_or_default(),
            action,
            allowed: false,
        });
        return Ok(ApiError::new(
            StatusCode::FORBIDDEN,
            "read-only",
            "a viewer token reads and changes nothing: use an admin token",
        )
        .into_response());
    }
    let is_invoke = request.uri().path().ends_with("/invoke");
    // Invocations are audited as invocations; every other admin request,
    // and every refused one, as an admin event.
    if actor.is_none() {
        // Anyone can be refused: within the log's bound on refusals.
        daemon.audit.append_refusal(AuditEvent::Admin {
            actor: "unknown".into(),
            action,
            allowed: false,
        });
    } else if !is_invoke {
        daemon.audit.append(AuditEvent::Admin {
            actor: actor.clone().unwrap_or_default(),
            action,
            allowed: true,
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
    let resumed = daemon.resume(&name, only, request.force, &actor(request_actor))?;
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
        .ok_or_else(|| super::DaemonError::UnknownAgent(name).into())
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
        .map_err(ApiError::host)??;
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
        .map_err(ApiError::host)??;
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
    /// Rows older than this row id (the next page).
    before: Option<i64>,
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
        before: query.before,
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

async fn add_key(
    State(daemon): State<Arc<Daemon>>,
    request_actor: Option<axum::Extension<Actor>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key: NewKey = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request("the body must be {\"id\", \"provider\", \"secret\"}")
    })?;
    let info = daemon.change_key("add", &actor(request_actor), |vault| {
        vault.add(&key.id, &key.provider, &key.secret)
    })?;
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
    let info = daemon.change_key("rotate", &actor(request_actor), |vault| {
        vault.rotate(&id, &new.secret)
    })?;
    Ok(Json(json!({"key": info})))
}

async fn delete_key(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    request_actor: Option<axum::Extension<Actor>>,
) -> Result<Json<Value>, ApiError> {
    let info = daemon.change_key("delete", &actor(request_actor), |vault| vault.delete(&id))?;
    Ok(Json(json!({"deleted": info})))
}

async fn revoke_key(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    request_actor: Option<axum::Extension<Actor>>,
) -> Result<Json<Value>, ApiError> {
    let info = daemon.change_key("revoke", &actor(request_actor), |vault| vault.revoke(&id))?;
    Ok(Json(json!({"key": info})))
}

async fn list_tokens(State(daemon): State<Arc<Daemon>>) -> Result<Json<Value>, ApiError> {
    let tokens = daemon.tokens.list().map_err(ApiError::host)?;
    Ok(Json(json!({"tokens": tokens})))
}

/// A token to create: admin, or a publisher's for some namespaces.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    #[serde(default)]
    publish: Vec<String>,
    /// `admin` (the default, or a publisher token with `publish`) or
    /// `viewer`.
    #[serde(default)]
    role: Option<String>,
}

async fn add_token(
    State(daemon): State<Arc<Daemon>>,
    request_actor: Option<axum::Extension<Actor>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: NewToken = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request(
            "the body must be {\"name\", \"publish\": [namespace, …]} or {\"name\", \"role\": \"viewer\"}",
        )
    })?;
    let scope = match (request.role.as_deref(), request.publish.is_empty()) {
        (None | Some("admin"), true) => Scope::Admin,
        (None | Some("publish"), false) => Scope::Publish(request.publish),
        (Some("viewer"), true) => Scope::Viewer,
        _ => {
            return Err(ApiError::bad_request(
                "role is admin or viewer; publish (namespaces) makes a publisher token and takes no role",
            ));
        }
    };
    let token = daemon.tokens.create_scoped(&request.name, &scope)?;
    daemon.audit.append(AuditEvent::Token {
        change: "add".into(),
        name: request.name.clone(),
        scope: scope.label(),
        actor: actor(request_actor),
    });
    // The only time the value is shown: never kept by a cache on the way.
    let body =
        Json(json!({"name": request.name, "scope": scope.label(), "token": token.expose_str()}));
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        body,
    )
        .into_response())
}

async fn revoke_token(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    request_actor: Option<axum::Extension<Actor>>,
) -> Result<Json<Value>, ApiError> {
    daemon.tokens.revoke(&name)?;
    daemon.audit.append(AuditEvent::Token {
        change: "revoke".into(),
        name: name.clone(),
        scope: String::new(),
        actor: actor(request_actor),
    });
    Ok(Json(json!({"revoked": name})))
}

async fn show_trust(State(daemon): State<Arc<Daemon>>) -> Result<Json<Value>, ApiError> {
    let policy = crate::registry::signing::TrustPolicy::load(&daemon.trust_policy_path())
        .map_err(ApiError::host)?;
    Ok(Json(json!({"trust": policy})))
}

async fn change_trust(
    State(daemon): State<Arc<Daemon>>,
    request_actor: Option<axum::Extension<Actor>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let change: super::trust::TrustChange = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not {{\"change\": \"add\"|\"remove\"|\"allow-unsigned\"|\"deny-unsigned\", \"namespace\", \"key\"?}}: {e}"
        ))
    })?;
    let actor = actor(request_actor);
    // File I/O and a wait for the audit writer: off the async workers.
    let policy = tokio::task::spawn_blocking(move || {
        super::trust::change_trust(&daemon.trust_policy_path(), &change, &daemon.audit, &actor)
    })
    .await
    .map_err(ApiError::host)??;
    Ok(Json(json!({"trust": policy})))
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

/// Query of `GET /v1/audit` and `GET /v1/audit/export`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    /// Records after this sequence number, oldest first.
    pub after: Option<i64>,
    /// Records before this sequence number, newest first.
    pub before: Option<i64>,
    /// `desc` for newest first (the default with `before`).
    pub order: Option<String>,
    /// Only this kind of record.
    pub kind: Option<String>,
    /// Only records about this agent.
    pub agent: Option<String>,
    /// Only records of this actor.
    pub actor: Option<String>,
    /// At most this many (default 1,000; at most 10,000).
    pub limit: Option<usize>,
}

impl AuditQuery {
    /// The filter it asks for, or why it is not one.
    pub(crate) fn filter(&self) -> Result<crate::audit::AuditFilter, String> {
        let newest_first = match self.order.as_deref() {
            None => self.before.is_some(),
            Some("desc") => true,
            Some("asc") => false,
            Some(other) => return Err(format!("order={other:?}: use `asc` or `desc`")),
        };
        if let Some(kind) = &self.kind
            && !crate::audit::KINDS.contains(&kind.as_str())
        {
            return Err(format!(
                "kind={kind:?} is not a kind of record (one of: {})",
                crate::audit::KINDS.join(", ")
            ));
        }
        let nonempty = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        Ok(crate::audit::AuditFilter {
            after: self.after,
            before: self.before,
            kind: nonempty(&self.kind),
            agent: nonempty(&self.agent),
            actor: nonempty(&self.actor),
            newest_first,
            limit: self.limit.unwrap_or(1000).min(crate::audit::MAX_PAGE),
        })
    }
}

async fn audit(
    State(daemon): State<Arc<Daemon>>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = query.filter().map_err(ApiError::bad_request)?;
    let records = tokio::task::spawn_blocking(move || daemon.audit.query(&filter))
        .await
        .map_err(ApiError::host)?
        .map_err(ApiError::host)?;
    Ok(Json(json!({"records": records})))
}

/// `GET /v1/audit/export`: every record the filter matches, oldest first,
/// one JSON object a line (JSON Lines), streamed a page at a time.
async fn audit_export(
    State(daemon): State<Arc<Daemon>>,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let filter = query.filter().map_err(ApiError::bad_request)?;
    Ok(audit_jsonl(daemon, filter))
}

/// A JSON Lines response of the records `filter` matches, oldest first,
/// read a page at a time on a blocking thread (the whole log never sits in
/// memory).
pub(crate) fn audit_jsonl(daemon: Arc<Daemon>, mut filter: crate::audit::AuditFilter) -> Response {
    const PAGE: usize = 2_000;
    filter.newest_first = false;
    filter.limit = PAGE;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        loop {
            let page = match daemon.audit.query(&filter) {
                Ok(page) => page,
                Err(e) => {
                    let _ = sender.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            };
            let Some(last) = page.last() else { return };
            filter.after = Some(last.seq);
            let mut chunk = Vec::with_capacity(page.len() * 256);
            for record in &page {
                if serde_json::to_writer(&mut chunk, record).is_err() {
                    return;
                }
                chunk.push(b'\n');
            }
            if sender.blocking_send(Ok(Bytes::from(chunk))).is_err() || page.len() < PAGE {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    (
        [
            (header::CONTENT_TYPE, "application/jsonl"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"clawcage-audit.jsonl\"",
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Body of `POST /v1/agents/{name}/version`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionRequest {
    /// `repository@version` or `repository@sha256:…`.
    reference: String,
}

/// `POST /v1/agents/{name}/version` (`{"reference": "acme/triage@1.3.0"}`):
/// the agent runs that registry component from its next event, with its
/// manifest as deployed, if the trust policy allows it.
async fn deploy_version(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    request_actor: Option<axum::Extension<Actor>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: VersionRequest = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request("the body must be {\"reference\": \"repository@version\"}")
    })?;
    let actor = actor(request_actor);
    let info = tokio::task::spawn_blocking(move || {
        daemon.deploy_version(&name, &request.reference, &actor)
    })
    .await
    .map_err(ApiError::host)??;
    Ok(Json(json!({"agent": info})))
}

/// `GET /v1/registry/repositories`: repositories, their versions, digests
/// and the signers their signatures name.
async fn registry_repositories(State(daemon): State<Arc<Daemon>>) -> Result<Json<Value>, ApiError> {
    let repositories = tokio::task::spawn_blocking(move || daemon.registry().map(|r| r.catalog()))
        .await
        .map_err(ApiError::host)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not-found", "no registry"))?;
    Ok(Json(json!({"repositories": repositories})))
}

/// `POST /v1/agents/{name}/pause`: the agent takes no event until
/// unpaused.
async fn pause(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    request_actor: Option<axum::Extension<Actor>>,
) -> Result<Json<Value>, ApiError> {
    let actor = actor(request_actor);
    let pause = tokio::task::spawn_blocking(move || daemon.pause(&name, &actor))
        .await
        .map_err(ApiError::host)??;
    Ok(Json(json!({"paused": pause})))
}

/// `POST /v1/agents/{name}/unpause`: the agent takes events again.
async fn unpause(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    request_actor: Option<axum::Extension<Actor>>,
) -> Result<Json<Value>, ApiError> {
    let actor = actor(request_actor);
    let was_paused = tokio::task::spawn_blocking(move || daemon.unpause(&name, &actor))
        .await
        .map_err(ApiError::host)??;
    Ok(Json(json!({"unpaused": was_paused})))
}

/// `GET /v1/registry/usage`: bytes of blobs each namespace holds, and its
/// quota.
async fn registry_usage(State(daemon): State<Arc<Daemon>>) -> Result<Json<Value>, ApiError> {
    let worker = daemon.clone();
    let usage = tokio::task::spawn_blocking(move || {
        let registry = worker.registry()?;
        let quota = registry.blobs.quota();
        Some(
            registry
                .blobs
                .usage_by_namespace()
                .into_iter()
                .map(|(namespace, bytes)| json!({"namespace": namespace, "bytes": bytes, "quota_bytes": quota}))
                .collect::<Vec<_>>(),
        )
    })
    .await
    .map_err(ApiError::host)?
    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not-found", "no registry"))?;
    Ok(Json(json!({"namespaces": usage})))
}

/// Query of `POST /v1/registry/gc`.
#[derive(Debug, serde::Deserialize)]
struct GcQuery {
    /// Keep what no manifest names if it is younger than this (default: an
    /// hour), so a push in progress keeps its blobs.
    grace_secs: Option<u64>,
}

/// `POST /v1/registry/gc[?grace_secs=]`: collects blobs no manifest names
/// and their compiled artifacts; never a deployed agent's component.
async fn registry_gc(
    State(daemon): State<Arc<Daemon>>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    Query(query): Query<GcQuery>,
) -> Result<Json<Value>, ApiError> {
    let grace = query.grace_secs.map_or(
        crate::registry::gc::DEFAULT_GRACE,
        std::time::Duration::from_secs,
    );
    let worker = daemon.clone();
    let collection = tokio::task::spawn_blocking(move || {
        let registry = worker.registry()?;
        let in_use = crate::registry::api::in_use(&worker);
        let cache = worker.options().engine.cache_dir.clone();
        Some(registry.collect(&in_use.components, grace, cache.as_deref()))
    })
    .await
    .map_err(ApiError::host)?
    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not-found", "no registry"))?;
    tracing::info!(%actor, blobs = collection.blobs_removed, bytes = collection.bytes_freed, "registry garbage collected");
    Ok(Json(json!(collection)))
}

/// Body of `PUT /v1/agents/{name}/bindings/{binding}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingAssignment {
    model: Option<String>,
    key: Option<String>,
}

/// `PUT /v1/agents/{name}/bindings/{binding}` (`{"model", "key"}`, either
/// or both): the operator's assignment, over the manifest's, from the next
/// call.
async fn set_binding(
    State(daemon): State<Arc<Daemon>>,
    Path((name, binding)): Path<(String, String)>,
    request_actor: Option<axum::Extension<Actor>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let assignment: BindingAssignment = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request("the body must be {\"model\", \"key\"} (either or both)")
    })?;
    let actor = actor(request_actor);
    let worker = daemon.clone();
    let detail = tokio::task::spawn_blocking(move || {
        worker.set_binding(
            &name,
            &binding,
            assignment.model.as_deref(),
            assignment.key.as_deref(),
            &actor,
        )
    })
    .await
    .map_err(ApiError::host)??;
    Ok(Json(json!({"agent": detail})))
}

/// `DELETE /v1/agents/{name}/bindings/{binding}`: the manifest's model and
/// key again.
async fn clear_binding(
    State(daemon): State<Arc<Daemon>>,
    Path((name, binding)): Path<(String, String)>,
    request_actor: Option<axum::Extension<Actor>>,
) -> Result<Json<Value>, ApiError> {
    let actor = actor(request_actor);
    let worker = daemon.clone();
    let detail = tokio::task::spawn_blocking(move || worker.clear_binding(&name, &binding, &actor))
        .await
        .map_err(ApiError::host)??;
    Ok(Json(json!({"agent": detail})))
}

async fn audit_verify(State(daemon): State<Arc<Daemon>>) -> Result<Json<Value>, ApiError> {
    let verification = daemon.audit.verify().map_err(ApiError::host)?;
    Ok(Json(json!(verification)))
}
