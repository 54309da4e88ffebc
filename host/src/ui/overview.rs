//! The overview: the daemon's health (status, the audit writer, events
//! running and queued, recent failures) and the agents at a glance.

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::pages::{dollars, page, when_rfc3339};
use super::{SignedIn, Ui, blocking, html as respond};
use crate::daemon::invocations::InvocationFilter;

/// How many recent invocations the overview counts failures among.
const RECENT: usize = 50;

pub(super) async fn overview(State(ui): State<Ui>, axum::Extension(session): SignedIn) -> Response {
    let daemon = ui.daemon.clone();
    let data = blocking(move || {
        let recent = daemon
            .invocations
            .list(&InvocationFilter {
                limit: RECENT,
                ..Default::default()
            })
            .unwrap_or_default();
        (daemon.list(), recent)
    })
    .await;
    let (agents, recent) = match data {
        Ok(data) => data,
        Err(response) => return response,
    };
    let daemon = &ui.daemon;
    let failures: Vec<_> = recent.iter().filter(|i| i.outcome != "ok").collect();
    let queued: usize = agents.iter().map(|a| a.queued).sum();
    let paused = agents.iter().filter(|a| a.paused.is_some()).count();
    let audit_stopped = daemon.audit.stopped();
    respond(page(
        "Overview",
        "Overview",
        Some(&session),
        html! {
            section aria-labelledby="health" {
                h2 id="health" { "Health" }
                dl {
                    dt { "Status" }
                    dd { @if daemon.is_shutting_down() { "draining: new events are refused" } @else { "running" } }
                    dt { "Audit log" }
                    dd {
                        @if let Some(reason) = &audit_stopped { span class="error" { "stopped: " (reason) } }
                        @else { "appending" }
                    }
                    dt { "Agents" } dd { (agents.len()) @if paused > 0 { " (" (paused) " paused)" } }
                    dt { "Events running" } dd { (daemon.running()) " of " (daemon.options().max_concurrent) }
                    dt { "Events queued" } dd { (queued) }
                    dt { "Failures" } dd { (failures.len()) " in the last " (recent.len()) " invocations" }
                }
            }
            @if !failures.is_empty() {
                section aria-labelledby="failures" {
                    h2 id="failures" { "Recent failures" }
                    table {
                        thead { tr { th scope="col" { "Started" } th scope="col" { "Agent" } th scope="col" { "Source" } th scope="col" { "Outcome" } } }
                        tbody {
                            @for i in failures.iter().take(10) {
                                tr {
                                    td { a href={ "/ui/invocations/" (i.id) } { (when_rfc3339(&i.started_at)) } }
                                    td { (i.agent) }
                                    td { (i.source) }
                                    td { span class="error" { (i.outcome) } }
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
                        thead { tr { th scope="col" { "Started" } th scope="col" { "Agent" } th scope="col" { "Source" } th scope="col" { "Outcome" } th scope="col" { "ms" } th scope="col" { "Tokens" } th scope="col" { "Cost" } } }
                        tbody {
                            @for i in recent.iter().take(20) {
                                tr {
                                    td { a href={ "/ui/invocations/" (i.id) } { (when_rfc3339(&i.started_at)) } }
                                    td { a href={ "/ui/agents/" (i.agent) } { (i.agent) } }
                                    td { (i.source) }
                                    td { (i.outcome) }
                                    td class="num" { (i.duration_ms) }
                                    td class="num" { (i.tokens) }
                                    td class="num" { (dollars(i.cost_micros)) }
                                }
                            }
                        }
                    }
                    p { a href="/ui/invocations" { "All invocations" } }
                }
            }
        },
    ))
}
