//! What happened: the invocations (filtered, paged, each with a metadata
//! page) and the audit log (filtered, paged, its chain verified, exported
//! as JSON Lines). Metadata only: never a prompt, an answer or a payload,
//! because none is recorded.

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::{csrf, dollars, page, when, when_rfc3339};
use super::session::Session;
use super::{Csrf, SignedIn, Ui, blocking, csrf_refusal, failed, html as respond};
use crate::audit::{AuditFilter, AuditRecord, Verification};
use crate::daemon::invocations::{Invocation, InvocationFilter};

/// Rows a page lists.
const PAGE: usize = 50;

/// Filters of the invocation list, as the form sends them.
#[derive(Debug, Default, Deserialize)]
pub(super) struct InvocationQuery {
    #[serde(default)]
    agent: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    source: String,
    /// `1h`, `24h`, `7d`, `30d`, or empty for all.
    #[serde(default)]
    since: String,
    /// The next page: rows older than this one.
    before: Option<i64>,
}

impl InvocationQuery {
    /// The query string of these filters (for the next page's link).
    fn query_string(&self) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("agent", &self.agent),
            ("outcome", &self.outcome),
            ("source", &self.source),
            ("since", &self.since),
        ] {
            if !value.is_empty() {
                pairs.append_pair(name, value);
            }
        }
        pairs.finish()
    }
}

/// Times the filter offers.
const SINCE: &[(&str, &str)] = &[
    ("", "any time"),
    ("1h", "the last hour"),
    ("24h", "the last 24 hours"),
    ("7d", "the last 7 days"),
    ("30d", "the last 30 days"),
];

/// Outcomes the filter offers: `ok` and every error kind.
const OUTCOMES: &[&str] = &[
    "ok",
    "invalid-event",
    "agent-error",
    "limit",
    "crashed",
    "result-too-large",
    "busy",
    "host-error",
];

fn nonempty(value: &str) -> Option<String> {
    Some(value.trim().to_string()).filter(|v| !v.is_empty())
}

pub(super) async fn invocations(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Query(query): Query<InvocationQuery>,
) -> Response {
    let since = match nonempty(&query.since) {
        Some(since) => match crate::ledger::parse_since(&since, crate::db::now_unix()) {
            Ok(since) => Some(since),
            Err(e) => return failed(StatusCode::BAD_REQUEST, &e, "/ui/invocations"),
        },
        None => None,
    };
    let filter = InvocationFilter {
        agent: nonempty(&query.agent),
        outcome: nonempty(&query.outcome),
        source: nonempty(&query.source),
        since,
        before: query.before,
        limit: PAGE,
    };
    let daemon = ui.daemon.clone();
    let (rows, agents) = match blocking(move || {
        let rows = daemon.invocations.list(&filter);
        (rows, daemon.list())
    })
    .await
    {
        Ok((Ok(rows), agents)) => (rows, agents),
        Ok((Err(e), _)) => {
            return failed(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), "/ui/");
        }
        Err(response) => return response,
    };
    let next = (rows.len() == PAGE)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    respond(page(
        "Invocations",
        "Invocations",
        Some(&session),
        html! {
            form method="get" action="/ui/invocations" class="filters" {
                label for="agent" { "Agent" }
                select id="agent" name="agent" {
                    option value="" { "all" }
                    @for a in &agents { option value=(a.name) selected[query.agent == a.name] { (a.name) } }
                }
                label for="outcome" { "Outcome" }
                select id="outcome" name="outcome" {
                    option value="" { "all" }
                    @for o in OUTCOMES { option value=(o) selected[query.outcome == *o] { (o) } }
                }
                label for="source" { "Source" }
                input id="source" name="source" value=(query.source) maxlength="64" placeholder="api, github, schedule…";
                label for="since" { "Started" }
                select id="since" name="since" {
                    @for (value, label) in SINCE { option value=(value) selected[query.since == *value] { (label) } }
                }
                button type="submit" { "Filter" }
            }
            (invocation_table(&rows))
            nav aria-label="Pages" class="pages" {
                @if query.before.is_some() { a href={ "/ui/invocations?" (query.query_string()) } { "Newest" } }
                @if let Some(next) = next {
                    @let filters = query.query_string();
                    a href={ "/ui/invocations?" (filters) (if filters.is_empty() { "" } else { "&" }) "before=" (next) } { "Older" }
                }
            }
        },
    ))
}

fn invocation_table(rows: &[Invocation]) -> Markup {
    html! {
        @if rows.is_empty() { p { "No invocation matches." } } @else {
            table {
                thead { tr {
                    th scope="col" { "Started" } th scope="col" { "Agent" } th scope="col" { "Source" } th scope="col" { "Kind" }
                    th scope="col" { "Outcome" } th scope="col" { "ms" } th scope="col" { "Model calls" } th scope="col" { "Tokens" } th scope="col" { "Cost" }
                } }
                tbody {
                    @for i in rows {
                        tr {
                            td { a href={ "/ui/invocations/" (i.id) } { (when_rfc3339(&i.started_at)) } }
                            td { (i.agent) }
                            td { (i.source) }
                            td { (i.kind) }
                            td { @if i.outcome == "ok" { "ok" } @else { span class="error" { (i.outcome) } } }
                            td class="num" { (i.duration_ms) }
                            td class="num" { (i.model_calls) }
                            td class="num" { (i.tokens) }
                            td class="num" { (dollars(i.cost_micros)) }
                        }
                    }
                }
            }
        }
    }
}

pub(super) async fn invocation(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Path(id): Path<i64>,
) -> Response {
    let daemon = ui.daemon.clone();
    let (invocation, calls) = match blocking(move || daemon.invocations.get(id)).await {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => {
            return failed(
                StatusCode::NOT_FOUND,
                "No such invocation (the oldest are pruned).",
                "/ui/invocations",
            );
        }
        Ok(Err(e)) => {
            return failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
                "/ui/invocations",
            );
        }
        Err(response) => return response,
    };
    respond(page(
        &format!("Invocation {}", invocation.event_id),
        "Invocations",
        Some(&session),
        html! {
            p class="hint" { "Metadata only: the event's payload, the prompts and the answers are never recorded." }
            dl {
                dt { "Event id" } dd { code { (invocation.event_id) } }
                dt { "Agent" } dd { a href={ "/ui/agents/" (invocation.agent) } { (invocation.agent) } }
                dt { "Source" } dd { (invocation.source) }
                dt { "Kind" } dd { (invocation.kind) }
                dt { "Started" } dd { (when_rfc3339(&invocation.started_at)) }
                dt { "Duration" } dd { (invocation.duration_ms) " ms" }
                dt { "Outcome" } dd { (invocation.outcome) }
                dt { "Tokens" } dd { (invocation.tokens) }
                dt { "Cost" } dd { (dollars(invocation.cost_micros)) }
            }
            section aria-labelledby="calls" {
                h2 id="calls" { "Model calls" }
                @if calls.is_empty() { p { "None." } } @else {
                    table {
                        thead { tr {
                            th scope="col" { "At" } th scope="col" { "Binding" } th scope="col" { "Provider" } th scope="col" { "Model" } th scope="col" { "Key" }
                            th scope="col" { "In" } th scope="col" { "Out" } th scope="col" { "Cost" } th scope="col" { "ms" } th scope="col" { "Outcome" }
                        } }
                        tbody {
                            @for call in &calls {
                                tr {
                                    td { (when(Some(call.at))) }
                                    td { (call.binding) @if call.fallback > 0 { " (fallback " (call.fallback) ")" } }
                                    td { (call.provider) }
                                    td { (call.model) }
                                    td { (call.key_id.as_deref().unwrap_or("—")) }
                                    td class="num" { (call.input_tokens) @if call.estimated { "≈" } }
                                    td class="num" { (call.output_tokens) }
                                    td class="num" { (dollars(call.cost_micros)) }
                                    td class="num" { (call.latency_ms) }
                                    td { (call.outcome) }
                                }
                            }
                        }
                    }
                }
            }
            p { a href={ "/ui/audit?agent=" (invocation.agent) } { "Audit records of " (invocation.agent) } }
        },
    ))
}

/// Filters of the audit page, as the form sends them.
#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    actor: String,
    /// The next page: records before this one.
    before: Option<i64>,
}

impl AuditQuery {
    fn filter(&self, limit: usize) -> Result<AuditFilter, String> {
        crate::daemon::api::AuditQuery {
            kind: nonempty(&self.kind),
            agent: nonempty(&self.agent),
            actor: nonempty(&self.actor),
            before: self.before,
            order: Some("desc".into()),
            limit: Some(limit),
            ..Default::default()
        }
        .filter()
    }

    fn query_string(&self) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("kind", &self.kind),
            ("agent", &self.agent),
            ("actor", &self.actor),
        ] {
            if !value.is_empty() {
                pairs.append_pair(name, value);
            }
        }
        pairs.finish()
    }
}

pub(super) async fn audit(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Query(query): Query<AuditQuery>,
) -> Response {
    audit_page(ui, session, query, None).await
}

async fn audit_page(
    ui: Ui,
    session: Session,
    query: AuditQuery,
    verification: Option<Verification>,
) -> Response {
    let filter = match query.filter(PAGE) {
        Ok(filter) => filter,
        Err(e) => return failed(StatusCode::BAD_REQUEST, &e, "/ui/audit"),
    };
    let daemon = ui.daemon.clone();
    let records = match blocking(move || daemon.audit.query(&filter)).await {
        Ok(Ok(records)) => records,
        Ok(Err(e)) => return failed(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), "/ui/"),
        Err(response) => return response,
    };
    let filters = query.query_string();
    let next = (records.len() == PAGE)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    let export = if filters.is_empty() {
        "/ui/audit.jsonl".to_string()
    } else {
        format!("/ui/audit.jsonl?{filters}")
    };
    respond(page(
        "Audit log",
        "Audit",
        Some(&session),
        html! {
            p { "Every change, refusal, sign-in and invocation, chained by SHA-256 so an edit, a deletion or a reordering shows. Metadata only." }
            @if let Some(v) = &verification {
                div role="status" class={ "result " (if v.problem.is_some() { "bad" } else { "good" }) } {
                    @match &v.problem {
                        None => { p { strong { "The chain is intact: " } (v.records) " records." } }
                        Some(problem) => { p { strong class="error" { "The chain is broken: " } (problem) } }
                    }
                    p { "Head hash: " code class="hash" { (v.head) } }
                    p class="hint" { "Keep the head hash somewhere else: a later verification that no longer reaches it shows a truncated log." }
                }
            }
            form method="post" action="/ui/audit/verify" {
                (csrf(&session))
                button type="submit" { "Verify the chain" }
            }
            form method="get" action="/ui/audit" class="filters" {
                label for="kind" { "Kind" }
                select id="kind" name="kind" {
                    option value="" { "all" }
                    @for kind in crate::audit::KINDS { option value=(kind) selected[query.kind == *kind] { (kind) } }
                }
                label for="agent" { "Agent" }
                input id="agent" name="agent" value=(query.agent) maxlength="64";
                label for="actor" { "Actor" }
                input id="actor" name="actor" value=(query.actor) maxlength="64";
                button type="submit" { "Filter" }
            }
            p { a href=(export) download { "Export as JSON Lines" } " (every record these filters match, oldest first)" }
            (audit_table(&records))
            nav aria-label="Pages" class="pages" {
                @if query.before.is_some() { a href={ "/ui/audit?" (filters) } { "Newest" } }
                @if let Some(next) = next {
                    a href={ "/ui/audit?" (filters) (if filters.is_empty() { "" } else { "&" }) "before=" (next) } { "Older" }
                }
            }
        },
    ))
}

/// An event's fields but its kind, as `name=value` pairs.
fn fields(event: &serde_json::Value) -> String {
    match event.as_object() {
        Some(map) => map
            .iter()
            .filter(|(name, value)| *name != "kind" && !value.is_null())
            .map(|(name, value)| match value {
                serde_json::Value::String(s) => format!("{name}={s}"),
                other => format!("{name}={other}"),
            })
            .collect::<Vec<_>>()
            .join("  "),
        None => event.to_string(),
    }
}

fn audit_table(records: &[AuditRecord]) -> Markup {
    html! {
        @if records.is_empty() { p { "No record matches." } } @else {
            table {
                thead { tr { th scope="col" { "#" } th scope="col" { "At" } th scope="col" { "Kind" } th scope="col" { "Record" } } }
                tbody {
                    @for r in records {
                        tr {
                            td class="num" { (r.seq) }
                            td { (when(Some(r.at))) }
                            td { (r.event["kind"].as_str().unwrap_or("?")) }
                            td class="record" { (fields(&r.event)) }
                        }
                    }
                }
            }
        }
    }
}

pub(super) async fn audit_export(
    State(ui): State<Ui>,
    axum::Extension(_session): SignedIn,
    Query(query): Query<AuditQuery>,
) -> Response {
    match query.filter(crate::audit::MAX_PAGE) {
        Ok(filter) => crate::daemon::api::audit_jsonl(
            ui.daemon.clone(),
            AuditFilter {
                before: None,
                ..filter
            },
        ),
        Err(e) => failed(StatusCode::BAD_REQUEST, &e, "/ui/audit"),
    }
}

/// Verifies the chain (it reads, changes nothing: a viewer may too) and
/// shows the audit page with the result.
pub(super) async fn verify(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Form(form): Form<Csrf>,
) -> Response {
    if let Some(refusal) = csrf_refusal(&session, &form.csrf) {
        return refusal;
    }
    let daemon = ui.daemon.clone();
    let verification = match blocking(move || daemon.audit.verify()).await {
        Ok(Ok(verification)) => verification,
        Ok(Err(e)) => {
            return failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
                "/ui/audit",
            );
        }
        Err(response) => return response,
    };
    audit_page(ui, session, AuditQuery::default(), Some(verification)).await
}
