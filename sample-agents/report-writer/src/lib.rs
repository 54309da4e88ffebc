//! Report writer: on a weekly `schedule` event, lists the week's issues of
//! a repository through the `github` tool, has a capable model (binding
//! `writer`) write the report, and files it as a Notion page under the
//! operator's reports page through the `notion` tool.
//!
//! Triage runs on every issue, so it uses a cheap, fast model; this runs
//! once a week, where quality matters, so its operator binds a capable one.

use clawcage_sdk::{CompletionRequest, Event, Json, Model, Tool, handler, info};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Notion takes at most 2 000 characters in one rich-text run.
const MAX_PARAGRAPH_CHARS: usize = 2_000;
/// Notion takes at most 100 blocks in one request.
const MAX_BLOCKS: usize = 100;

#[derive(Deserialize)]
struct Schedule {
    /// `owner/repo`.
    repo: String,
    /// ISO 8601 start of the week.
    since: String,
    /// The Notion page the report goes under.
    notion_parent: String,
}

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
enum Report {
    /// The event is not one this agent handles.
    Ignored { reason: String },
    /// The report was written and filed.
    Filed {
        repo: String,
        issues: usize,
        page_id: String,
        paragraphs: usize,
    },
}

/// The part of an issue the model needs.
fn brief(issue: &Value) -> Value {
    let labels: Vec<&str> = issue["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["name"].as_str())
        .collect();
    json!({
        "number": issue["number"],
        "title": issue["title"],
        "state": issue["state"],
        "labels": labels,
        "is_pull_request": issue.get("pull_request").is_some(),
    })
}

/// Splits the report into Notion paragraph blocks.
fn paragraphs(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .flat_map(|p| {
            let chars: Vec<char> = p.chars().collect();
            chars
                .chunks(MAX_PARAGRAPH_CHARS)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
        })
        .take(MAX_BLOCKS)
        .map(|content| {
            json!({"object": "block", "type": "paragraph",
                   "paragraph": {"rich_text": [{"type": "text", "text": {"content": content}}]}})
        })
        .collect()
}

#[handler]
fn handle(event: Event) -> clawcage_sdk::Result<Json<Report>> {
    if event.source != "schedule" || event.kind != "weekly-report" {
        return Ok(Json(Report::Ignored {
            reason: format!(
                "{}/{} is not schedule/weekly-report",
                event.source, event.kind
            ),
        }));
    }
    let schedule: Schedule = event.payload()?;

    let github = Tool::open("github")?;
    let issues: Value = github.call(
        "issues.list",
        &json!({"repo": schedule.repo, "state": "all", "since": schedule.since, "max_items": 200}),
    )?;
    let issues: Vec<Value> = issues.as_array().into_iter().flatten().map(brief).collect();
    info!("{} issues since {}", issues.len(), schedule.since);

    let model = Model::open("writer")?;
    let request = CompletionRequest::new()
        .system(
            "You write the weekly engineering report for a team. Be concrete and brief: \
             what was opened, what was closed, and what needs attention. Plain paragraphs.",
        )
        .user(format!(
            "Repository {}, issues updated since {}:\n{}",
            schedule.repo,
            schedule.since,
            serde_json::to_string_pretty(&issues)?
        ))
        .max_tokens(1_500)
        .temperature(0.2);
    let text = model.complete(&request)?.text();

    let blocks = paragraphs(&text);
    let notion = Tool::open("notion")?;
    let page: Value = notion.call(
        "pages.create",
        &json!({
            "parent": {"page_id": schedule.notion_parent},
            "properties": {"title": {"title": [{"text": {"content": format!("Weekly report: {} since {}", schedule.repo, schedule.since)}}]}},
            "children": blocks,
        }),
    )?;

    Ok(Json(Report::Filed {
        repo: schedule.repo,
        issues: issues.len(),
        page_id: page["id"].as_str().unwrap_or_default().to_string(),
        paragraphs: blocks.len(),
    }))
}
