//! Usage and spend: tokens and cost per agent, provider, model and day over
//! the last 30 days (charts and tables), every agent's budget bars (used,
//! held, limit), and the same rows as CSV.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::pages::{Series, budget_bar, day_chart, dollars, page};
use super::{SignedIn, Ui, blocking, html as respond};
use crate::ledger::UsageSummary;

/// Days the charts cover, today included.
const DAYS: i64 = 30;

#[derive(Debug, Default, Deserialize)]
pub(super) struct UsageQuery {
    /// Only this agent.
    #[serde(default)]
    agent: String,
}

/// The first second of the window: midnight UTC, `DAYS - 1` days ago.
fn window_start(now: i64) -> i64 {
    crate::ledger::day_start(now) - (DAYS - 1) * 86_400
}

/// Every day of the window, oldest first.
fn window_days(now: i64) -> Vec<String> {
    let start = window_start(now);
    (0..DAYS)
        .filter_map(|i| chrono::DateTime::from_timestamp(start + i * 86_400, 0))
        .map(|t| t.format("%Y-%m-%d").to_string())
        .collect()
}

async fn rows(ui: &Ui, agent: Option<String>) -> Result<Vec<UsageSummary>, Response> {
    let daemon = ui.daemon.clone();
    blocking(move || {
        let now = crate::db::now_unix();
        daemon
            .services
            .ledger
            .summary_by(agent.as_deref(), window_start(now), true)
            .unwrap_or_default()
    })
    .await
}

/// Sums `value` of `rows` under `key`.
fn total_by<K: Ord>(
    rows: &[UsageSummary],
    key: impl Fn(&UsageSummary) -> K,
) -> BTreeMap<K, (u64, u64, u64)> {
    let mut totals: BTreeMap<K, (u64, u64, u64)> = BTreeMap::new();
    for row in rows {
        let entry = totals.entry(key(row)).or_default();
        entry.0 += row.calls;
        entry.1 += row.input_tokens + row.output_tokens;
        entry.2 += row.cost_micros;
    }
    totals
}

pub(super) async fn usage(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Query(query): Query<UsageQuery>,
) -> Response {
    let agent = Some(query.agent.clone()).filter(|a| !a.is_empty());
    let rows = match rows(&ui, agent.clone()).await {
        Ok(rows) => rows,
        Err(response) => return response,
    };
    let budgets = match super::agents::all_details(&ui).await {
        Ok(budgets) => budgets,
        Err(response) => return response,
    };
    let per_day = total_by(&rows, |r| r.day.clone().unwrap_or_default());
    let days = window_days(crate::db::now_unix());
    let cost: Vec<(String, u64)> = days
        .iter()
        .map(|d| (d.clone(), per_day.get(d).map_or(0, |t| t.2)))
        .collect();
    let tokens: Vec<(String, u64)> = days
        .iter()
        .map(|d| (d.clone(), per_day.get(d).map_or(0, |t| t.1)))
        .collect();
    let by_agent = total_by(&rows, |r| r.agent.clone());
    let by_model = total_by(&rows, |r| (r.provider.clone(), r.model.clone()));
    let by_key = total_by(&rows, |r| r.key_id.clone().unwrap_or_default());
    let csv_link = match &agent {
        Some(agent) => format!("/ui/usage.csv?agent={agent}"),
        None => "/ui/usage.csv".into(),
    };
    let tokens_text = |n: u64| format!("{n} tokens");
    let title = match &agent {
        Some(agent) => format!("Usage of {agent}"),
        None => "Usage and spend".into(),
    };
    respond(page(
        &title,
        "Usage",
        Some(&session),
        html! {
            form method="get" action="/ui/usage" class="filters" {
                label for="agent" { "Agent" }
                select id="agent" name="agent" {
                    option value="" { "all agents" }
                    @for a in &budgets { option value=(a.info.name) selected[agent.as_deref() == Some(a.info.name.as_str())] { (a.info.name) } }
                }
                button type="submit" { "Show" }
            }
            p { "The last " (DAYS) " days, UTC. " a href=(csv_link) download { "Download CSV" } }
            div class="charts" {
                (day_chart("cost-chart", &Series { title: "Spend per day", unit: "Spend", days: &cost, show: dollars }))
                (day_chart("tokens-chart", &Series { title: "Tokens per day", unit: "Tokens", days: &tokens, show: |n| n.to_string() }))
            }
            section aria-labelledby="by-agent" {
                h2 id="by-agent" { "By agent" }
                (table("Agent", by_agent.iter().map(|(k, v)| (k.clone(), *v))))
            }
            section aria-labelledby="by-model" {
                h2 id="by-model" { "By provider and model" }
                (table("Provider · model", by_model.iter().map(|((p, m), v)| (format!("{p} · {m}"), *v))))
            }
            section aria-labelledby="by-key" {
                h2 id="by-key" { "By key" }
                (table("Key", by_key.iter().map(|(k, v)| (if k.is_empty() { "—".to_string() } else { k.clone() }, *v))))
            }
            section aria-labelledby="budgets" {
                h2 id="budgets" { "Budgets" }
                @for a in budgets.iter().filter(|a| agent.as_deref().is_none_or(|name| name == a.info.name)) {
                    @let budget = &a.manifest.budget;
                    h3 { a href={ "/ui/agents/" (a.info.name) } { (a.info.name) } }
                    (budget_bar("Spend today", a.spend.day_cost_micros, a.spend.held_cost_micros, budget.usd_micros_per_day, dollars))
                    (budget_bar("Spend this month", a.spend.month_cost_micros, a.spend.held_cost_micros, budget.usd_micros_per_month, dollars))
                    (budget_bar("Tokens today", a.spend.day_tokens, a.spend.held_tokens, budget.tokens_per_day, tokens_text))
                    (budget_bar("Tokens this month", a.spend.month_tokens, a.spend.held_tokens, budget.tokens_per_month, tokens_text))
                }
            }
        },
    ))
}

fn table(what: &str, rows: impl Iterator<Item = (String, (u64, u64, u64))>) -> maud::Markup {
    let rows: Vec<_> = rows.collect();
    html! {
        @if rows.is_empty() { p { "No model calls in these days." } } @else {
            table {
                thead { tr { th scope="col" { (what) } th scope="col" { "Calls" } th scope="col" { "Tokens" } th scope="col" { "Cost" } } }
                tbody {
                    @for (name, (calls, tokens, cost)) in &rows {
                        tr { td { (name) } td class="num" { (calls) } td class="num" { (tokens) } td class="num" { (dollars(*cost)) } }
                    }
                }
            }
        }
    }
}

/// A CSV field: quoted, quotes doubled, and a leading `=`, `+`, `-`, `@`,
/// tab or carriage return defused with `'`, so a spreadsheet never runs a
/// value (a model name, say) as a formula.
fn csv_field(value: &str) -> String {
    let defused = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

pub(super) async fn csv(
    State(ui): State<Ui>,
    axum::Extension(_session): SignedIn,
    Query(query): Query<UsageQuery>,
) -> Response {
    let agent = Some(query.agent).filter(|a| !a.is_empty());
    let rows = match rows(&ui, agent).await {
        Ok(rows) => rows,
        Err(response) => return response,
    };
    let mut out = String::from(
        "day,agent,provider,model,key_id,calls,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,estimated_calls,cost_usd\n",
    );
    for r in &rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{:.6}\n",
            csv_field(r.day.as_deref().unwrap_or_default()),
            csv_field(&r.agent),
            csv_field(&r.provider),
            csv_field(&r.model),
            csv_field(r.key_id.as_deref().unwrap_or_default()),
            r.calls,
            r.input_tokens,
            r.output_tokens,
            r.cache_read_tokens,
            r.cache_write_tokens,
            r.estimated_calls,
            r.cost_micros as f64 / 1e6,
        ));
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"clawcage-usage.csv\"",
            ),
        ],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("gpt-4o"), "\"gpt-4o\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-1+2"), "\"'-1+2\"");
        assert_eq!(csv_field("@SUM(A1)"), "\"'@SUM(A1)\"");
    }

    #[test]
    fn the_window_is_thirty_days_ending_today() {
        let now = 1_764_547_200 + 3_600; // 2025-12-01 01:00 UTC
        let days = window_days(now);
        assert_eq!(days.len(), 30);
        assert_eq!(days.last().unwrap(), "2025-12-01");
        assert_eq!(days.first().unwrap(), "2025-11-02");
    }
}
