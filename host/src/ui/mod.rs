//! The operator's dashboard at `/ui/`: server-rendered HTML (maud, compiled
//! into the binary), on the daemon's own port, over the same service layer
//! as the JSON API (the vault, the audit log, the agents), never the
//! database directly.
//!
//! Security, deny by default:
//! - every page but sign-in needs a session ([`session`]); a session is
//!   opened only with an admin or viewer token, and a viewer's changes
//!   nothing;
//! - every state-changing request is a `POST` carrying the session's CSRF
//!   token, and is refused when the browser says it comes from another
//!   site (`Sec-Fetch-Site`, `Origin`);
//! - every response has a strict Content-Security-Policy (nothing inline,
//!   nothing from another origin), `X-Frame-Options: DENY`,
//!   `Referrer-Policy: no-referrer` and `Cache-Control: no-store`;
//! - a secret typed into a form (a key being added or rotated) goes to the
//!   vault and nowhere else: never rendered back, logged or audited.
//!
//! Sign-in, refused sign-ins, sign-out and every change are audit records.

mod activity;
mod agents;
mod keys;
mod overview;
mod pages;
mod registry;
pub(crate) mod session;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::audit::AuditEvent;
use crate::daemon::Daemon;
use crate::daemon::auth::Scope;
use crate::secret::Secret;
use session::{Session, Sessions};

/// The session cookie's name.
const COOKIE: &str = "cc_session";

/// The policy every dashboard response carries.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's state.
#[derive(Clone)]
pub(super) struct Ui {
    pub(super) daemon: Arc<Daemon>,
    sessions: Arc<Sessions>,
    /// Cookies are `Secure` when the daemon is reached over https.
    secure: bool,
}

/// The dashboard's routes, for merging into the daemon's router.
/// `public_url` is where operators reach the daemon; an `https` one makes
/// the session cookie `Secure`.
pub fn routes(daemon: Arc<Daemon>, public_url: Option<&str>) -> Router {
    let ui = Ui {
        daemon,
        sessions: Arc::default(),
        secure: public_url.is_some_and(|u| u.starts_with("https://")),
    };
    let signed_in = Router::new()
        .route("/ui/", get(overview::overview))
        .route("/ui/agents", get(agents::list))
        .route("/ui/agents/{name}", get(agents::detail))
        .route("/ui/agents/{name}/pause", post(agents::pause))
        .route("/ui/agents/{name}/resume", post(agents::resume))
        .route("/ui/agents/{name}/test", post(agents::test_event))
        .route("/ui/agents/{name}/version", post(agents::deploy_version))
        .route("/ui/agents/{name}/bindings/{binding}", post(agents::assign))
        .route(
            "/ui/agents/{name}/bindings/{binding}/clear",
            post(agents::unassign),
        )
        .route("/ui/usage", get(usage::usage))
        .route("/ui/usage.csv", get(usage::csv))
        .route("/ui/invocations", get(activity::invocations))
        .route("/ui/invocations/{id}", get(activity::invocation))
        .route("/ui/audit", get(activity::audit))
        .route("/ui/audit.jsonl", get(activity::audit_export))
        .route("/ui/audit/verify", post(activity::verify))
        .route("/ui/registry", get(registry::registry))
        .route("/ui/registry/trust", post(registry::change_trust))
        .route("/ui/registry/deploy", post(registry::deploy))
        .route("/ui/keys", get(keys::keys).post(keys::add_key))
        .route("/ui/keys/{id}/rotate", post(keys::rotate_key))
        .route("/ui/keys/{id}/revoke", post(keys::revoke_key))
        .route("/ui/keys/{id}/delete", post(keys::delete_key))
        .route("/ui/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(
            ui.clone(),
            require_session,
        ));
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/static/app.css", get(stylesheet))
        .merge(signed_in)
        .layer(axum::middleware::from_fn_with_state(ui.clone(), guard))
        .with_state(ui)
}

/// Headers on every dashboard response; cross-site writes refused before
/// anything else runs; and every refused write (another site, a wrong CSRF
/// token, a viewer) on the record, within the audit log's bound on
/// refusals.
async fn guard(State(ui): State<Ui>, request: Request, next: Next) -> Response {
    let writes = request.method() != Method::GET && request.method() != Method::HEAD;
    if !writes {
        return secured(next.run(request).await);
    }
    let action = format!("ui {} {}", request.method(), request.uri().path());
    let actor =
        session_of(&ui, request.headers()).map_or_else(|| "unknown".to_string(), |s| s.actor);
    if cross_site(request.headers()) {
        ui.daemon.audit.append_refusal(AuditEvent::Admin {
            actor,
            action: format!("{action} (from another site)"),
            allowed: false,
        });
        return secured(
            (
                StatusCode::FORBIDDEN,
                "refused: a request from another site",
            )
                .into_response(),
        );
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::FORBIDDEN {
        ui.daemon.audit.append_refusal(AuditEvent::Admin {
            actor,
            action,
            allowed: false,
        });
    }
    secured(response)
}

fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Whether the browser says the request comes from another site: its
/// `Sec-Fetch-Site`, or an `Origin` whose host is not this one.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    origin == "null" || origin_host != host
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            pair.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

/// The session of a request, if it has a live one whose token is still
/// active (with the token's current scope).
fn session_of(ui: &Ui, headers: &HeaderMap) -> Option<Session> {
    let id = cookie_value(headers)?;
    let mut session = ui.sessions.get(&id)?;
    match ui.daemon.tokens.active_scope(&session.actor) {
        Some(scope @ (Scope::Admin | Scope::Viewer)) => {
            session.scope = scope;
            Some(session)
        }
        _ => {
            ui.sessions.close(&id);
            None
        }
    }
}

async fn require_session(State(ui): State<Ui>, mut request: Request, next: Next) -> Response {
    match session_of(&ui, request.headers()) {
        Some(session) => {
            request.extensions_mut().insert(session);
            next.run(request).await
        }
        None => Redirect::to("/ui/login").into_response(),
    }
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("app.css"),
    )
        .into_response()
}

pub(super) fn html(markup: maud::Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

async fn login_page(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    // Already signed in: straight to the overview.
    if session_of(&ui, &headers).is_some() {
        return Redirect::to("/ui/").into_response();
    }
    html(pages::login(None))
}

#[derive(Deserialize)]
struct SignIn {
    token: Secret,
}

async fn login(State(ui): State<Ui>, Form(form): Form<SignIn>) -> Response {
    let scoped = ui
        .daemon
        .tokens
        .authenticate_scoped(form.token.expose_str().unwrap_or_default().trim());
    let (actor, scope) = match scoped {
        Some((actor, scope @ (Scope::Admin | Scope::Viewer))) => (actor, scope),
        _ => {
            ui.daemon.audit.append_refusal(AuditEvent::Admin {
                actor: "unknown".into(),
                action: "ui sign-in".into(),
                allowed: false,
            });
            let mut response = html(pages::login(Some(
                "That is not an active admin or viewer token.",
            )));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            return response;
        }
    };
    let Some(id) = ui.sessions.open(&actor, scope) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "60")],
            "too many dashboard sessions are open; try again later",
        )
            .into_response();
    };
    ui.daemon.audit.append(AuditEvent::Admin {
        actor,
        action: "ui sign-in".into(),
        allowed: true,
    });
    let secure = if ui.secure { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict{secure}");
    let mut response = Redirect::to("/ui/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// A form that carries nothing but its CSRF token.
#[derive(Deserialize)]
pub(super) struct Csrf {
    pub(super) csrf: String,
}

fn csrf_ok(session: &Session, presented: &str) -> bool {
    crate::daemon::auth::constant_time_eq(session.csrf.as_bytes(), presented.as_bytes())
}

pub(super) fn refused(message: &str) -> Response {
    (StatusCode::FORBIDDEN, message.to_string()).into_response()
}

async fn logout(
    State(ui): State<Ui>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return refused("refused: the form's CSRF token is missing or wrong");
    }
    if let Some(id) = cookie_value(&headers) {
        ui.sessions.close(&id);
    }
    ui.daemon.audit.append(AuditEvent::Admin {
        actor: session.actor,
        action: "ui sign-out".into(),
        allowed: true,
    });
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("cc_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// Checks a state-changing form: an admin session and its CSRF token.
/// Answers the refusal, if any.
pub(super) fn refusal(session: &Session, csrf: &str) -> Option<Response> {
    if !csrf_ok(session, csrf) {
        return Some(refused(
            "refused: the form's CSRF token is missing or wrong",
        ));
    }
    if !session.may_change() {
        return Some(refused("refused: a viewer token changes nothing"));
    }
    None
}

/// Checks a form that reads only (a chain verification): its CSRF token.
pub(super) fn csrf_refusal(session: &Session, csrf: &str) -> Option<Response> {
    (!csrf_ok(session, csrf)).then(|| refused("refused: the form's CSRF token is missing or wrong"))
}

/// An error page with `status`, and a link back to `back`.
pub(super) fn failed(status: StatusCode, text: &str, back: &str) -> Response {
    let mut response = html(pages::message("Not done", text, back));
    *response.status_mut() = status;
    response
}

/// After a change: back to `to` (so a reload does not post again), or the
/// reason it was not done.
pub(super) fn done(result: Result<(), String>, to: &str) -> Response {
    match result {
        Ok(()) => Redirect::to(to).into_response(),
        Err(message) => failed(StatusCode::BAD_REQUEST, &message, to),
    }
}

/// A change from a form: refused without an admin session and its CSRF
/// token; else `work` runs on a blocking thread, and the browser goes to
/// `to` (so a reload does not post again), or sees why it was not done.
pub(super) async fn change<E: std::fmt::Display>(
    session: &Session,
    csrf: &str,
    to: &str,
    work: impl FnOnce() -> Result<(), E> + Send + 'static,
) -> Response {
    if let Some(refusal) = refusal(session, csrf) {
        return refusal;
    }
    match blocking(move || work().map_err(|e| e.to_string())).await {
        Ok(result) => done(result, to),
        Err(response) => response,
    }
}

/// Runs `work` (database reads, files, the vault) on a blocking thread,
/// never on the async workers that serve every other request.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the dashboard failed: {e}"),
            "/ui/",
        )
    })
}

/// The signed-in session of a request (set by [`require_session`]).
pub(super) type SignedIn = axum::Extension<Session>;
