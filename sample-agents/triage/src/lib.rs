//! Triage: on a GitHub `issues.opened` event, a fast model runs a tool-use
//! loop: it reads the issue and calls `add_labels` (applied through the
//! `github` tool), then ends with a one-line summary, which the agent posts
//! to the team's Slack channel (through the `slack` tool).
//!
//! The agent never holds a credential: the model is a binding the operator
//! chose, and the tools are host capabilities. A tool the operator has not
//! granted comes back to the model as a failed tool result, so the run
//! still completes and the report says what is missing.

use clawcage_sdk::{
    CompletionRequest, Event, InferenceError, Json, Message, Model, StopReason, Tool, ToolError,
    ToolResult, ToolSpec, handler, info, warn,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Labels the model may choose from.
const LABELS: &[&str] = &["bug", "feature", "question", "docs", "security"];
/// Most model turns per issue.
const MAX_ROUNDS: usize = 4;
/// The Slack channel summaries go to. The operator grants the `slack` tool
/// on exactly this channel id.
const TRIAGE_CHANNEL: &str = "C0TRIAGE01";

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

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
enum Report {
    /// The agent has no model; nothing was done.
    NotGranted { missing: Vec<String> },
    /// The event is not one this agent handles.
    Ignored { reason: String },
    /// The model triaged the issue.
    Triaged {
        repo: String,
        number: u64,
        labels: Vec<String>,
        summary: String,
        rounds: usize,
        /// Whether the summary reached Slack.
        posted_to_slack: bool,
        /// Tool calls that could not be carried out, and why.
        failed_actions: Vec<String>,
    },
}

fn tools() -> Vec<ToolSpec> {
    vec![ToolSpec::new(
        "add_labels",
        "Adds labels to the issue being triaged.",
        &json!({
            "type": "object",
            "properties": {"labels": {"type": "array", "items": {"type": "string", "enum": LABELS}}},
            "required": ["labels"]
        }),
    )]
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
    let model = match Model::open("default") {
        Ok(model) => model,
        Err(InferenceError::NotGranted(reason)) => {
            warn!("cannot triage: {reason}");
            let mut missing = vec!["model binding `default`".to_string()];
            if let Err(ToolError::NotGranted(_)) = Tool::open("github") {
                missing.push("tool `github`".to_string());
            }
            return Ok(Json(Report::NotGranted { missing }));
        }
        Err(error) => return Err(error.into()),
    };

    let issue = &payload.issue;
    let mut request = CompletionRequest::new()
        .system(format!(
            "You triage GitHub issues for {}. Call add_labels with the fitting labels, \
             then answer with a one-sentence summary.",
            payload.repository.full_name
        ))
        .user(format!(
            "Issue #{}: {}\n\n{}",
            issue.number,
            issue.title,
            issue.body.as_deref().unwrap_or("")
        ))
        .max_tokens(400)
        .temperature(0.0);
    request.tools = tools();

    let mut labels = Vec::new();
    let mut failed_actions = Vec::new();
    let mut rounds = 0;
    let summary = loop {
        rounds += 1;
        let completion = model.complete(&request)?;
        info!(
            "round {rounds}: {:?}, {} tokens in, {} out",
            completion.stop_reason, completion.usage.input_tokens, completion.usage.output_tokens
        );
        if completion.stop_reason != StopReason::ToolUse || rounds == MAX_ROUNDS {
            break completion.text();
        }
        request.messages.push(completion.to_message());
        let mut results = Vec::new();
        for tool_use in completion.tool_uses() {
            let outcome = match tool_use.name.as_str() {
                "add_labels" => {
                    #[derive(Deserialize)]
                    struct Input {
                        labels: Vec<String>,
                    }
                    let wanted: Vec<String> = tool_use
                        .input::<Input>()
                        .map(|i| i.labels)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|l| LABELS.contains(&l.as_str()))
                        .collect();
                    labels.extend(wanted.iter().cloned());
                    Tool::open("github").and_then(|github| {
                        github.call(
                            "issues.add_labels",
                            &json!({"repo": payload.repository.full_name, "number": issue.number, "labels": wanted}),
                        )
                    })
                }
                other => Err(ToolError::InvalidInput(format!("no tool named {other}"))),
            };
            let (content, is_error) = match outcome {
                Ok(value) => (value.to_string(), false),
                Err(error) => {
                    failed_actions.push(format!("{}: {error}", tool_use.name));
                    (error.to_string(), true)
                }
            };
            results.push(ToolResult {
                tool_use_id: tool_use.id.clone(),
                content,
                is_error,
            });
        }
        request.messages.push(Message::tool_results(results));
    };

    let text = format!(
        "{}#{} {} [{}]: {summary}",
        payload.repository.full_name,
        issue.number,
        issue.title,
        labels.join(", ")
    );
    let posted = Tool::open("slack").and_then(|slack| {
        slack.call(
            "chat.postMessage",
            &json!({"channel": TRIAGE_CHANNEL, "text": text}),
        )
    });
    if let Err(error) = &posted {
        failed_actions.push(format!("post to Slack: {error}"));
    }

    Ok(Json(Report::Triaged {
        repo: payload.repository.full_name,
        number: issue.number,
        labels,
        summary,
        rounds,
        posted_to_slack: posted.is_ok(),
        failed_actions,
    }))
}
