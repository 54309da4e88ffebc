//! The dashboard's pages. Markup only: no script, no inline style (the
//! Content-Security-Policy forbids both), every control labelled, every
//! value escaped by maud.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, html};

use super::session::Session;
use crate::daemon::invocations::Invocation;
use crate::daemon::{AgentInfo, Daemon};
use crate::vault::KeyInfo;

fn when(seconds: Option<i64>) -> String {
    seconds
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || "—".into(),
            |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ClawCage" }
                link rel="stylesheet" href="/ui/static/app.css";
            }
            body {
                header {
                    nav aria-label="Main" {
                        strong { "ClawCage" }
                        @if session.is_some() {
                            a href="/ui/" { "Overview" }
                            a href="/ui/keys" { "BYOK keys" }
                        }
                    }
                    @if let Some(session) = session {
                        form method="post" action="/ui/logout" class="signout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            span { (session.actor) " (" (session.scope.label()) ")" }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// Sign-in: an API token (admin, or viewer for reading only).
pub(super) fn login(error: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            @if let Some(error) = error { p role="alert" class="error" { (error) } }
            form method="post" action="/ui/login" {
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="off" required;
                p class="hint" { "An admin token, or a viewer token to read only. It opens a session and is not kept in the browser." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// A message after a refused change.
pub(super) fn message(title: &str, text: &str) -> Markup {
    page(
        title,
        None,
        html! { p role="alert" class="error" { (text) } p { a href="/ui/keys" { "Back" } } },
    )
}

/// Health and the latest invocations.
pub(super) fn overview(
    session: &Session,
    daemon: &Daemon,
    agents: &[AgentInfo],
    recent: &[Invocation],
) -> Markup {
    let failures = recent.iter().filter(|i| i.outcome != "ok").count();
    page(
        "Overview",
        Some(session),
        html! {
            section aria-labelledby="health" {
                h2 id="health" { "Health" }
                dl {
                    dt { "Status" } dd { @if daemon.is_shutting_down() { "draining" } @else { "running" } }
                    dt { "Agents" } dd { (agents.len()) }
                    dt { "Events running" } dd { (daemon.running()) }
                    dt { "Events queued" } dd { (agents.iter().map(|a| a.queued).sum::<usize>()) }
                    dt { "Failures in the last " (recent.len()) } dd { (failures) }
                }
            }
            section aria-labelledby="agents" {
                h2 id="agents" { "Agents" }
                @if agents.is_empty() { p { "No agent is deployed." } } @else {
                    table {
                        thead { tr { th scope="col" { "Agent" } th scope="col" { "Models" } th scope="col" { "Tools" } th scope="col" { "Queued" } th scope="col" { "Origin" } } }
                        tbody {
                            @for agent in agents {
                                tr {
                                    td { (agent.name) }
                                    td { (agent.models.join(", ")) }
                                    td { (agent.tools.join(", ")) }
                                    td { (agent.queued) }
                                    td { (agent.origin.as_ref().map_or("file", |o| o.reference.as_str())) }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="recent" {
                h2 id="recent" { "Recent invocations" }
                @if recent.is_empty() { p { "None yet." } } @else {
                    table {
                        thead { tr { th scope="col" { "Started" } th scope="col" { "Agent" } th scope="col" { "Source" } th scope="col" { "Outcome" } th scope="col" { "ms" } th scope="col" { "Tokens" } } }
                        tbody {
                            @for i in recent {
                                tr {
                                    td { (i.started_at) }
                                    td { (i.agent) }
                                    td { (i.source) }
                                    td { (i.outcome) }
                                    td { (i.duration_ms) }
                                    td { (i.tokens) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// BYOK settings: the keys (never their values), the agents using each,
/// and, for an admin, forms to add, rotate and revoke.
pub(super) fn keys(
    session: &Session,
    keys: &[KeyInfo],
    used_by: &BTreeMap<String, Vec<String>>,
    error: Option<&str>,
) -> Markup {
    let admin = session.may_change();
    page(
        "BYOK keys",
        Some(session),
        html! {
            @if let Some(error) = error { p role="alert" class="error" { (error) } }
            p { "Keys are encrypted at rest; their values are never shown again. Revoking one stops every call that uses it at once." }
            @if keys.is_empty() { p { "No key yet." } } @else {
                table {
                    thead { tr {
                        th scope="col" { "Id" } th scope="col" { "Provider" } th scope="col" { "Fingerprint" }
                        th scope="col" { "Created" } th scope="col" { "Rotated" } th scope="col" { "Status" }
                        th scope="col" { "Used by" }
                        @if admin { th scope="col" { "Change" } }
                    } }
                    tbody {
                        @for key in keys {
                            @let agents = used_by.get(&key.id).map(|a| a.join(", ")).unwrap_or_default();
                            tr {
                                td { (key.id) }
                                td { (key.provider) }
                                td { code { (key.fingerprint) } }
                                td { (when(Some(key.created_at))) }
                                td { (when(key.rotated_at)) }
                                td { @if key.revoked_at.is_some() { "revoked " (when(key.revoked_at)) } @else { "active" } }
                                td { @if agents.is_empty() { "—" } @else { (agents) } }
                                @if admin {
                                    td {
                                        @if key.revoked_at.is_none() {
                                            form method="post" action={ "/ui/keys/" (key.id) "/rotate" } {
                                                input type="hidden" name="csrf" value=(session.csrf);
                                                label for={ "rotate-" (key.id) } { "New value for " (key.id) }
                                                input id={ "rotate-" (key.id) } name="secret" type="password" autocomplete="off" required;
                                                button type="submit" { "Rotate" }
                                            }
                                            form method="post" action={ "/ui/keys/" (key.id) "/revoke" } {
                                                input type="hidden" name="csrf" value=(session.csrf);
                                                @if !agents.is_empty() { p class="hint" { "Revoking stops " (agents) "." } }
                                                button type="submit" class="danger" { "Revoke " (key.id) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if admin {
                section aria-labelledby="add" {
                    h2 id="add" { "Add a key" }
                    form method="post" action="/ui/keys" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        label for="id" { "Id" }
                        input id="id" name="id" required pattern="[A-Za-z0-9._-]{1,64}";
                        label for="provider" { "Provider" }
                        select id="provider" name="provider" {
                            @for provider in crate::vault::PROVIDERS { option value=(provider) { (provider) } }
                        }
                        label for="secret" { "Value" }
                        input id="secret" name="secret" type="password" autocomplete="off" required;
                        p class="hint" { "Sent once, encrypted into the vault, never shown again." }
                        button type="submit" { "Add" }
                    }
                }
            }
        },
    )
}
