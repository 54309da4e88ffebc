//! Agents: the list, and each agent's origin, status, bindings (with the
//! operator's assignments beside the manifest's values), tools and scopes,
//! triggers, limits, budget and spend; and for an admin, forms to assign a
//! model and key per binding, pause and resume, send a test event and
//! deploy another registry version.

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::{budget_bar, csrf, dollars, page, when};
use super::session::Session;
use super::{Csrf, SignedIn, Ui, blocking, change, failed, html as respond, refusal};
use crate::daemon::{AgentDetail, Outcome};
use crate::vault::KeyInfo;

/// Largest test event payload the form takes.
const MAX_TEST_PAYLOAD_BYTES: usize = 64 << 10;

/// Every deployed agent in detail (spend included), on a blocking thread.
pub(super) async fn all_details(ui: &Ui) -> Result<Vec<AgentDetail>, Response> {
    let daemon = ui.daemon.clone();
    blocking(move || {
        daemon
            .list()
            .into_iter()
            .filter_map(|a| daemon.show(&a.name))
            .collect()
    })
    .await
}

pub(super) async fn list(State(ui): State<Ui>, axum::Extension(session): SignedIn) -> Response {
    let agents = match all_details(&ui).await {
        Ok(agents) => agents,
        Err(response) => return response,
    };
    respond(page(
        "Agents",
        "Agents",
        Some(&session),
        html! {
            @if agents.is_empty() { p { "No agent is deployed. Deploy one with " code { "clawcage deploy" } "." } } @else {
                table {
                    thead { tr {
                        th scope="col" { "Agent" } th scope="col" { "Status" } th scope="col" { "Origin" }
                        th scope="col" { "Models" } th scope="col" { "Tools" } th scope="col" { "Queued" }
                        th scope="col" { "Spent today" } th scope="col" { "This month" }
                    } }
                    tbody {
                        @for agent in &agents {
                            tr {
                                td { a href={ "/ui/agents/" (agent.info.name) } { (agent.info.name) } }
                                td { (status(agent)) }
                                td { (origin(agent)) }
                                td { (agent.info.models.join(", ")) }
                                td { (agent.info.tools.join(", ")) }
                                td class="num" { (agent.info.queued) }
                                td class="num" { (dollars(agent.spend.day_cost_micros)) }
                                td class="num" { (dollars(agent.spend.month_cost_micros)) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

fn status(agent: &AgentDetail) -> Markup {
    html! {
        @if let Some(pause) = &agent.info.paused {
            span class="warn" { "paused" } " by " (pause.by)
        } @else if !agent.suspensions.is_empty() {
            span class="warn" { "running, " (agent.suspensions.len()) " suspended" }
        } @else {
            "running"
        }
    }
}

fn origin(agent: &AgentDetail) -> Markup {
    html! {
        @match &agent.info.origin {
            Some(origin) => {
                code { (origin.requested) }
                @if let Some(signer) = &origin.signer { br; span class="hint" { "signed by " code { (short(signer)) } } }
                @else { br; span class="hint" { "unsigned" } }
            }
            None => { "file" }
        }
    }
}

/// The first and last characters of a long hex value.
pub(super) fn short(hex: &str) -> String {
    if hex.len() > 20 {
        format!("{}…{}", &hex[..12], &hex[hex.len() - 6..])
    } else {
        hex.to_string()
    }
}

/// What the detail page shows besides the agent.
struct Extras {
    keys: Vec<KeyInfo>,
    /// Tags of the repository the agent came from.
    versions: Vec<String>,
}

async fn load(ui: &Ui, name: String) -> Result<(AgentDetail, Extras), Response> {
    let daemon = ui.daemon.clone();
    let loaded = blocking(move || {
        let detail = daemon.show(&name)?;
        let keys = daemon.services.vault.list().unwrap_or_default();
        let versions = detail
            .info
            .origin
            .as_ref()
            .and_then(|o| {
                crate::registry::parse_reference(&o.reference)
                    .ok()
                    .map(|(r, _)| r.to_string())
            })
            .and_then(|repository| daemon.registry()?.manifests.tags(&repository).ok())
            .unwrap_or_default();
        Some((detail, Extras { keys, versions }))
    })
    .await?;
    loaded.ok_or_else(|| failed(StatusCode::NOT_FOUND, "No such agent.", "/ui/agents"))
}

pub(super) async fn detail(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Path(name): Path<String>,
) -> Response {
    match load(&ui, name).await {
        Ok((detail, extras)) => respond(detail_page(&session, &detail, &extras, None)),
        Err(response) => response,
    }
}

fn detail_page(
    session: &Session,
    agent: &AgentDetail,
    extras: &Extras,
    tested: Option<&Outcome>,
) -> Markup {
    let admin = session.may_change();
    let name = &agent.info.name;
    let manifest = &agent.manifest;
    let budget = &manifest.budget;
    let spend = &agent.spend;
    let tokens = |n: u64| format!("{n} tokens");
    page(
        name,
        "Agents",
        Some(session),
        html! {
            @if let Some(description) = &manifest.description { p { (description) } }
            dl {
                dt { "Status" } dd { (status(agent)) }
                dt { "Origin" } dd { (origin(agent)) }
                dt { "Component" } dd { code { (short(&agent.info.sha256)) } }
                @if let Some(origin) = &agent.info.origin { dt { "Pinned to" } dd { code { (origin.reference) } } }
            }
            @if admin {
                form method="post" action={ "/ui/agents/" (name) (if agent.info.paused.is_some() { "/resume" } else { "/pause" }) } {
                    (csrf(session))
                    @if agent.info.paused.is_some() {
                        button type="submit" { "Resume " (name) }
                        p class="hint" { "It takes events again (API, webhooks, schedule)." }
                    } @else {
                        button type="submit" class="danger" { "Pause " (name) }
                        p class="hint" { "Its events are refused until it is resumed; events running finish." }
                    }
                }
            }

            section aria-labelledby="bindings" {
                h2 id="bindings" { "Model bindings" }
                @if manifest.models.is_empty() { p { "None: it makes no model calls." } } @else {
                    table {
                        thead { tr {
                            th scope="col" { "Binding" } th scope="col" { "Provider" } th scope="col" { "Model" } th scope="col" { "Key" }
                            th scope="col" { "Manifest says" }
                            @if admin { th scope="col" { "Assign" } }
                        } }
                        tbody {
                            @for (binding, model) in &manifest.models {
                                @let over = agent.overrides.iter().find(|o| &o.over.binding == binding);
                                @let suspended = agent.suspensions.iter().any(|s| s.capability == crate::suspend::Capability::Model && &s.name == binding);
                                tr {
                                    th scope="row" { (binding) @if suspended { br; span class="warn" { "suspended" } } }
                                    td { (model.provider) }
                                    td { (model.model) }
                                    td { (model.key.as_deref().unwrap_or("—")) }
                                    td {
                                        @if let Some(over) = over {
                                            (over.manifest_model) " · " (over.manifest_key.as_deref().unwrap_or("—"))
                                            br; span class="hint" { "assigned by " (over.over.set_by) }
                                        } @else { "as shown" }
                                    }
                                    @if admin {
                                        td {
                                            form method="post" action={ "/ui/agents/" (name) "/bindings/" (binding) } {
                                                (csrf(session))
                                                label for={ "model-" (binding) } { "Model for " (binding) }
                                                input id={ "model-" (binding) } name="model" value=(model.model) required maxlength="128";
                                                label for={ "key-" (binding) } { "Key for " (binding) }
                                                select id={ "key-" (binding) } name="key" {
                                                    option value="" { "the manifest's" }
                                                    @for key in extras.keys.iter().filter(|k| k.revoked_at.is_none()) {
                                                        option value=(key.id) selected[model.key.as_deref() == Some(key.id.as_str())] { (key.id) " (" (key.provider) ")" }
                                                    }
                                                }
                                                button type="submit" { "Assign" }
                                            }
                                            @if over.is_some() {
                                                form method="post" action={ "/ui/agents/" (name) "/bindings/" (binding) "/clear" } {
                                                    (csrf(session))
                                                    button type="submit" { "Back to the manifest's" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }

            section aria-labelledby="tools" {
                h2 id="tools" { "Tools and scopes" }
                @if manifest.tools.is_empty() { p { "None." } } @else {
                    table {
                        thead { tr { th scope="col" { "Tool" } th scope="col" { "Actions" } th scope="col" { "Resources" } th scope="col" { "Credential" } } }
                        tbody {
                            @for (tool, grant) in &manifest.tools {
                                tr {
                                    th scope="row" { (tool) }
                                    td { (grant.actions.join(", ")) }
                                    td { (grant.resources.join(", ")) @if !grant.rules.is_empty() { " (" (grant.rules.len()) " HTTP rules)" } }
                                    td { (grant.credential.as_deref().unwrap_or("—")) }
                                }
                            }
                        }
                    }
                }
            }

            section aria-labelledby="triggers" {
                h2 id="triggers" { "Triggers" }
                @if agent.info.triggers.is_empty() { p { "None: it runs when invoked." } } @else {
                    ul { @for trigger in &agent.info.triggers { li { code { (trigger) } } } }
                }
            }

            section aria-labelledby="limits" {
                h2 id="limits" { "Limits" }
                dl {
                    dt { "Memory" } dd { (manifest.limits.memory_bytes >> 20) " MiB" }
                    dt { "Deadline" } dd { (manifest.limits.deadline_ms) " ms" }
                    dt { "Fuel" } dd { (manifest.limits.fuel.map_or_else(|| "unlimited".to_string(), |f| f.to_string())) }
                    dt { "Concurrency" } dd { (manifest.concurrency.max_concurrent) " at once, " (manifest.concurrency.max_queued) " queued" }
                    dt { "Calls per minute" } dd { (budget.requests_per_minute.map_or_else(|| "unlimited".to_string(), |n| n.to_string())) }
                }
            }

            section aria-labelledby="budget" {
                h2 id="budget" { "Budget and spend" }
                (budget_bar("Spend today", spend.day_cost_micros, spend.held_cost_micros, budget.usd_micros_per_day, dollars))
                (budget_bar("Spend this month", spend.month_cost_micros, spend.held_cost_micros, budget.usd_micros_per_month, dollars))
                (budget_bar("Tokens today", spend.day_tokens, spend.held_tokens, budget.tokens_per_day, tokens))
                (budget_bar("Tokens this month", spend.month_tokens, spend.held_tokens, budget.tokens_per_month, tokens))
                p { a href={ "/ui/usage?agent=" (name) } { "Usage by day" } " · " a href={ "/ui/invocations?agent=" (name) } { "Invocations" } }
            }

            @if admin {
                section aria-labelledby="test" {
                    h2 id="test" { "Send a test event" }
                    @if let Some(outcome) = tested {
                        div role="status" class="result" {
                            @match &outcome.error {
                                None => { p { strong { "ok" } " in " (format!("{:.1}", outcome.elapsed_ms)) " ms" } }
                                Some(error) => { p { strong class="error" { (error.kind) } " in " (format!("{:.1}", outcome.elapsed_ms)) " ms: " (error.message) } }
                            }
                            @if let Some(result) = &outcome.result { pre { (result) } }
                        }
                    }
                    form method="post" action={ "/ui/agents/" (name) "/test" } {
                        (csrf(session))
                        label for="kind" { "Kind" }
                        input id="kind" name="kind" value="test" required maxlength="128";
                        label for="payload" { "Payload (JSON)" }
                        textarea id="payload" name="payload" rows="4" maxlength=(MAX_TEST_PAYLOAD_BYTES) { "{}" }
                        p class="hint" { "Runs the agent once, as an event from source ui: its model and tool calls are real and counted." }
                        button type="submit" { "Send" }
                    }
                }
                @if !extras.versions.is_empty() {
                    section aria-labelledby="version" {
                        h2 id="version" { "Deploy a version" }
                        @let repository = agent.info.origin.as_ref().and_then(|o| crate::registry::parse_reference(&o.reference).ok()).map(|(r, _)| r.to_string()).unwrap_or_default();
                        form method="post" action={ "/ui/agents/" (name) "/version" } {
                            (csrf(session))
                            label for="reference" { "Version of " (repository) }
                            select id="reference" name="reference" {
                                @for tag in extras.versions.iter().rev() {
                                    @let reference = format!("{repository}@{tag}");
                                    option value=(reference) selected[agent.info.origin.as_ref().is_some_and(|o| o.requested == reference)] { (tag) }
                                }
                            }
                            p class="hint" { "Same manifest, grants and assignments; the trust policy decides." }
                            button type="submit" { "Deploy" }
                        }
                    }
                }
            }
            p class="hint" { "Last shown " (when(Some(crate::db::now_unix()))) }
        },
    )
}

#[derive(Deserialize)]
pub(super) struct Assignment {
    csrf: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    key: String,
}

pub(super) async fn assign(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Path((name, binding)): Path<(String, String)>,
    Form(form): Form<Assignment>,
) -> Response {
    let to = format!("/ui/agents/{name}");
    let actor = session.actor.clone();
    change(&session, &form.csrf, &to, move || {
        let model = Some(form.model.trim()).filter(|m| !m.is_empty());
        let key = Some(form.key.trim()).filter(|k| !k.is_empty());
        ui.daemon
            .set_binding(&name, &binding, model, key, &actor)
            .map(drop)
    })
    .await
}

pub(super) async fn unassign(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Path((name, binding)): Path<(String, String)>,
    Form(form): Form<Csrf>,
) -> Response {
    let to = format!("/ui/agents/{name}");
    let actor = session.actor.clone();
    change(&session, &form.csrf, &to, move || {
        ui.daemon.clear_binding(&name, &binding, &actor).map(drop)
    })
    .await
}

pub(super) async fn pause(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Path(name): Path<String>,
    Form(form): Form<Csrf>,
) -> Response {
    let to = format!("/ui/agents/{name}");
    let actor = session.actor.clone();
    change(&session, &form.csrf, &to, move || {
        ui.daemon.pause(&name, &actor).map(drop)
    })
    .await
}

pub(super) async fn resume(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Path(name): Path<String>,
    Form(form): Form<Csrf>,
) -> Response {
    let to = format!("/ui/agents/{name}");
    let actor = session.actor.clone();
    change(&session, &form.csrf, &to, move || {
        ui.daemon.unpause(&name, &actor).map(drop)
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct TestEvent {
    csrf: String,
    kind: String,
    #[serde(default)]
    payload: String,
}

pub(super) async fn test_event(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Path(name): Path<String>,
    Form(form): Form<TestEvent>,
) -> Response {
    if let Some(refusal) = refusal(&session, &form.csrf) {
        return refusal;
    }
    let back = format!("/ui/agents/{name}");
    if form.payload.len() > MAX_TEST_PAYLOAD_BYTES {
        return failed(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The payload is larger than 64 KiB.",
            &back,
        );
    }
    let payload: serde_json::Value = if form.payload.trim().is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_str(&form.payload) {
            Ok(payload) => payload,
            Err(e) => {
                return failed(
                    StatusCode::BAD_REQUEST,
                    &format!("The payload is not JSON: {e}"),
                    &back,
                );
            }
        }
    };
    let event = crate::Event::new("ui", form.kind.trim(), payload);
    let outcome = match ui.daemon.invoke(&name, event, "ui").await {
        Ok(outcome) => outcome,
        Err(refused) => return failed(StatusCode::CONFLICT, &refused.to_string(), &back),
    };
    match load(&ui, name).await {
        Ok((detail, extras)) => respond(detail_page(&session, &detail, &extras, Some(&outcome))),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
pub(super) struct Version {
    csrf: String,
    reference: String,
}

pub(super) async fn deploy_version(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Path(name): Path<String>,
    Form(form): Form<Version>,
) -> Response {
    let to = format!("/ui/agents/{name}");
    let actor = session.actor.clone();
    change(&session, &form.csrf, &to, move || {
        ui.daemon
            .deploy_version(&name, &form.reference, &actor)
            .map(drop)
    })
    .await
}
