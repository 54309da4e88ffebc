//! Triage: on a GitHub `issues.opened` event, a fast model classifies the
//! issue, the `github` tool adds the labels, and the `slack` tool (when
//! granted) posts a summary.
//!
//! Without grants it does nothing harmful: it reports which capabilities it
//! is missing, so an operator sees at once what to bind.

use clawcage_sdk::{
    CompletionRequest, Event, InferenceError, Json, Model, Tool, ToolError, handler, info, warn,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Labels the model may choose from.
const LABELS: &[&str] = &["bug", "feature", "question", "docs", "security"];

#[derive(Deserialize)]
struct IssueEvent {
    issue: Issue,
    repository: Repository,
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    title: String,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct Classification {
    labels: Vec<String>,
    summary: String,
}

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
enum Report {
    /// The agent lacks capabilities; nothing was done.
    NotGranted { missing: Vec<String> },
    /// The event is not one this agent handles.
    Ignored { reason: String },
    /// The issue was labelled.
    Triaged {
        repo: String,
        number: u64,
        labels: Vec<String>,
        summary: String,
        notified: bool,
    },
}

#[handler]
fn handle(event: Event) -> clawcage_sdk::Result<Json<Report>> {
    if event.source != "github" || event.kind != "issues.opened" {
        return Ok(Json(Report::Ignored {
            reason: format!(
                "{}/{} is not github/issues.opened",
                event.source, event.kind
            ),
        }));
    }
    let payload: IssueEvent = event.payload()?;

    let mut missing = Vec::new();
    let model = match Model::open("default") {
        Ok(model) => Some(model),
        Err(InferenceError::NotGranted(reason)) => {
            warn!("cannot triage: {reason}");
            missing.push("model binding `default`".to_string());
            None
        }
        Err(error) => return Err(error.into()),
    };
    let github = match Tool::open("github") {
        Ok(tool) => Some(tool),
        Err(ToolError::NotGranted(reason)) => {
            warn!("cannot triage: {reason}");
            missing.push("tool `github`".to_string());
            None
        }
        Err(error) => return Err(error.into()),
    };
    let (Some(model), Some(github)) = (model, github) else {
        return Ok(Json(Report::NotGranted { missing }));
    };

    let issue = &payload.issue;
    let request = CompletionRequest::new()
        .system(format!(
            "You triage GitHub issues. Answer with JSON only: \
             {{\"labels\": [...], \"summary\": \"one sentence\"}}. \
             Choose labels from: {}.",
            LABELS.join(", ")
        ))
        .user(format!(
            "Title: {}\n\n{}",
            issue.title,
            issue.body.as_deref().unwrap_or("")
        ))
        .max_tokens(300)
        .temperature(0.0);
    let completion = model.complete(&request)?;
    let text = completion.text();
    let classification: Classification =
        serde_json::from_str(extract_json(&text)).map_err(|e| {
            clawcage_sdk::Error::msg(format!(
                "the model did not answer with the expected JSON: {e}"
            ))
        })?;
    let labels: Vec<String> = classification
        .labels
        .into_iter()
        .filter(|label| LABELS.contains(&label.as_str()))
        .collect();
    info!(
        "issue #{} classified as {labels:?} ({} tokens in, {} out)",
        issue.number, completion.usage.input_tokens, completion.usage.output_tokens
    );

    github.call(
        "issues.add_labels",
        &json!({ "repo": payload.repository.full_name, "number": issue.number, "labels": labels }),
    )?;

    let notified = match Tool::open("slack") {
        Ok(slack) => {
            slack.call(
                "chat.postMessage",
                &json!({ "text": format!("#{} {}: {} [{}]", issue.number, issue.title, classification.summary, labels.join(", ")) }),
            )?;
            true
        }
        Err(ToolError::NotGranted(_)) => false,
        Err(error) => return Err(error.into()),
    };

    Ok(Json(Report::Triaged {
        repo: payload.repository.full_name,
        number: issue.number,
        labels,
        summary: classification.summary,
        notified,
    }))
}

/// Models sometimes wrap JSON in prose or a code fence; take the object.
fn extract_json(text: &str) -> &str {
    match (text.find('{'), text.rfind('}')) {
        (Some(start), Some(end)) if start < end => &text[start..=end],
        _ => text,
    }
}
