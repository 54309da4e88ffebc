//! `clawcage agent`, `clawcage invoke` and `clawcage invocations`: agents on
//! a running daemon.

use std::io::Write;
use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Value, json};

use super::failure::{CliError, exit};
use super::output::{OutputArgs, Table, rfc3339_field};
use super::remote::{DaemonArgs, segment};
use crate::daemon::Bundle;

/// `clawcage agent`: deploys, lists, shows and removes agents on a running
/// daemon.
#[derive(Debug, clap::Args)]
pub struct AgentCommand {
    /// The daemon.
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: AgentAction,
}

/// Agent subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AgentAction {
    /// Uploads a manifest, its component and its cassettes; replaces a
    /// deployed agent of the same name for its next event.
    Deploy {
        /// The manifest.
        manifest: PathBuf,
        /// Deploy this registry component (`acme/triage@1.2.0` or
        /// `acme/triage@sha256:<hex>`) instead of the manifest's
        /// `component`; the daemon's trust policy must allow it.
        #[arg(long)]
        component: Option<String>,
    },
    /// Lists deployed agents.
    List,
    /// Shows one agent: origin, bindings and fallbacks, tools and scopes,
    /// triggers, limits, budget, queue and suspensions.
    Show {
        /// Its name.
        name: String,
    },
    /// Removes an agent.
    Remove {
        /// Its name.
        name: String,
    },
    /// Assigns a model and/or a vault key to one of an agent's model
    /// bindings, over its manifest, from its next call (kept across
    /// redeployments, audited).
    Assign {
        /// The agent.
        name: String,
        /// The binding (`default`, …).
        binding: String,
        /// The provider's model id.
        #[arg(long, required_unless_present = "key")]
        model: Option<String>,
        /// The vault key id (of the binding's provider).
        #[arg(long)]
        key: Option<String>,
    },
    /// Clears an assignment: the manifest's model and key again.
    Unassign {
        /// The agent.
        name: String,
        /// The binding.
        binding: String,
    },
    /// Pauses an agent: it takes no event (API, webhook or schedule) until
    /// unpaused; events running finish. Kept across restarts, audited.
    Pause {
        /// The agent.
        name: String,
    },
    /// Unpauses an agent: it takes events again.
    Unpause {
        /// The agent.
        name: String,
    },
    /// Lists the bindings and grants suspended after a blocked leak.
    Suspensions,
    /// Resumes an agent's suspended bindings and grants: all of them, or
    /// the one named. Rotate the key first if the provider or tool that
    /// echoed it cannot be trusted with it.
    Resume {
        /// The agent.
        name: String,
        /// Only this model binding.
        #[arg(long, conflicts_with = "tool")]
        model: Option<String>,
        /// Only this tool grant.
        #[arg(long)]
        tool: Option<String>,
        /// Resume although the key that came back was not rotated since
        /// (a guest that was guessing at it gets another answer).
        #[arg(long)]
        force: bool,
    },
}

/// One agent as a table row: name, component, bindings, grants, triggers,
/// queue and origin.
fn agent_row(agent: &Value) -> Vec<String> {
    let list = |field: &str| {
        let items: Vec<&str> = agent[field]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if items.is_empty() {
            "-".to_string()
        } else {
            items.join(",")
        }
    };
    vec![
        agent["name"].as_str().unwrap_or("").to_string(),
        agent["sha256"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(12)
            .collect(),
        list("models"),
        list("tools"),
        list("triggers"),
        agent["queued"].to_string(),
        if agent["paused"].is_object() {
            "paused".to_string()
        } else {
            "running".to_string()
        },
        agent["origin"]["reference"]
            .as_str()
            .unwrap_or("-")
            .to_string(),
    ]
}

const AGENT_COLUMNS: [&str; 8] = [
    "NAME", "SHA256", "MODELS", "TOOLS", "TRIGGERS", "QUEUED", "STATUS", "ORIGIN",
];

fn suspension_table(suspensions: &Value) -> Table {
    let mut table = Table::new(&["AGENT", "KIND", "NAME", "KEY", "SINCE", "SEEN IN"]);
    for s in suspensions.as_array().into_iter().flatten() {
        table.row(vec![
            s["agent"].as_str().unwrap_or("").into(),
            s["capability"].as_str().unwrap_or("").into(),
            s["name"].as_str().unwrap_or("").into(),
            s["key_id"].as_str().unwrap_or("-").into(),
            rfc3339_field(&s["since"]),
            s["view"].as_str().unwrap_or("").into(),
        ]);
    }
    table
}

impl AgentCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), CliError> {
        let daemon = &self.daemon;
        let json = self.output.is_json();
        match &self.action {
            AgentAction::Deploy {
                manifest,
                component,
            } => {
                let mut bundle = Bundle::from_manifest_file(manifest)
                    .map_err(|e| CliError::new(exit::BAD_MANIFEST, e))?;
                if let Some(reference) = component {
                    crate::registry::parse_reference(reference).map_err(CliError::usage)?;
                    bundle = bundle
                        .with_registry_component(reference)
                        .map_err(|e| CliError::new(exit::BAD_MANIFEST, e))?;
                }
                let name = crate::manifest::Manifest::from_toml(&bundle.manifest)
                    .map_err(|e| CliError::new(exit::BAD_MANIFEST, e.to_string()))?
                    .name;
                let body = json!({"manifest": bundle.manifest, "component": bundle.component, "files": bundle.files});
                let value = daemon.call(
                    Method::PUT,
                    &format!("/v1/agents/{}", segment(&name)),
                    Some(body),
                )?;
                if json {
                    super::output::json(out, &value);
                } else {
                    let deployed = &value["deployed"];
                    let _ = writeln!(
                        out,
                        "deployed {} ({}){}",
                        deployed["name"].as_str().unwrap_or(""),
                        deployed["sha256"].as_str().unwrap_or(""),
                        deployed["origin"]["reference"]
                            .as_str()
                            .map(|r| format!(" from {r}"))
                            .unwrap_or_default()
                    );
                }
            }
            AgentAction::List => {
                let value = daemon.call(Method::GET, "/v1/agents", None)?;
                if json {
                    super::output::json(out, &value);
                } else {
                    let mut table = Table::new(&AGENT_COLUMNS);
                    for agent in value["agents"].as_array().into_iter().flatten() {
                        table.row(agent_row(agent));
                    }
                    table.print(out, "no agents deployed");
                }
            }
            AgentAction::Show { name } => {
                let value =
                    daemon.call(Method::GET, &format!("/v1/agents/{}", segment(name)), None)?;
                if json {
                    super::output::json(out, &value);
                } else {
                    show(out, &value["agent"]);
                }
            }
            AgentAction::Suspensions => {
                let value = daemon.call(Method::GET, "/v1/suspensions", None)?;
                if json {
                    super::output::json(out, &value);
                } else {
                    suspension_table(&value["suspensions"]).print(out, "nothing is suspended");
                }
            }
            AgentAction::Resume {
                name,
                model,
                tool,
                force,
            } => {
                let mut body = serde_json::Map::new();
                if *force {
                    body.insert("force".into(), json!(true));
                }
                if let Some(model) = model {
                    body.insert("model".into(), json!(model));
                }
                if let Some(tool) = tool {
                    body.insert("tool".into(), json!(tool));
                }
                let value = daemon.call(
                    Method::POST,
                    &format!("/v1/agents/{}/resume", segment(name)),
                    Some(Value::Object(body)),
                )?;
                if json {
                    super::output::json(out, &value);
                } else {
                    suspension_table(&value["resumed"]).print(out, "nothing was suspended");
                }
            }
            AgentAction::Assign {
                name,
                binding,
                model,
                key,
            } => {
                let answer = daemon.call(
                    Method::PUT,
                    &format!("/v1/agents/{}/bindings/{}", segment(name), segment(binding)),
                    Some(json!({"model": model, "key": key})),
                )?;
                if json {
                    super::output::json(out, &answer);
                } else {
                    let _ = writeln!(
                        out,
                        "{name}.{binding}: model {}, key {} (from the next call)",
                        model.as_deref().unwrap_or("as in the manifest"),
                        key.as_deref().unwrap_or("as in the manifest")
                    );
                }
            }
            AgentAction::Unassign { name, binding } => {
                let answer = daemon.call(
                    Method::DELETE,
                    &format!("/v1/agents/{}/bindings/{}", segment(name), segment(binding)),
                    None,
                )?;
                if json {
                    super::output::json(out, &answer);
                } else {
                    let _ = writeln!(out, "{name}.{binding}: the manifest's model and key again");
                }
            }
            AgentAction::Pause { name } | AgentAction::Unpause { name } => {
                let pause = matches!(self.action, AgentAction::Pause { .. });
                let verb = if pause { "pause" } else { "unpause" };
                let answer = daemon.call(
                    Method::POST,
                    &format!("/v1/agents/{}/{verb}", segment(name)),
                    None,
                )?;
                if json {
                    super::output::json(out, &answer);
                } else if pause {
                    let _ = writeln!(
                        out,
                        "{name}: paused (its events are refused until unpaused)"
                    );
                } else if answer["unpaused"] == true {
                    let _ = writeln!(out, "{name}: takes events again");
                } else {
                    let _ = writeln!(out, "{name}: was not paused");
                }
            }
            AgentAction::Remove { name } => {
                daemon.call(
                    Method::DELETE,
                    &format!("/v1/agents/{}", segment(name)),
                    None,
                )?;
                if json {
                    super::output::json(out, &json!({"removed": name}));
                } else {
                    let _ = writeln!(out, "removed {name}");
                }
            }
        }
        Ok(())
    }
}

/// One agent for people: its summary, then its manifest as deployed.
fn show(out: &mut dyn Write, agent: &Value) {
    let mut table = Table::new(&AGENT_COLUMNS);
    table.row(agent_row(agent));
    table.print(out, "");
    if let Some(reference) = agent["origin"]["reference"].as_str() {
        let _ = writeln!(
            out,
            "\norigin: {reference}, signed by {}",
            agent["origin"]["signer"].as_str().unwrap_or("nobody")
        );
    }
    let suspensions = suspension_table(&agent["suspensions"]);
    if !suspensions.is_empty() {
        let _ = writeln!(out, "\nsuspended:");
        suspensions.print(out, "");
    }
    let overrides = agent["overrides"].as_array().cloned().unwrap_or_default();
    if !overrides.is_empty() {
        let _ = writeln!(out, "\nassigned by an operator (over the manifest):");
        let mut table = Table::new(&[
            "BINDING",
            "MODEL",
            "MANIFEST MODEL",
            "KEY",
            "MANIFEST KEY",
            "BY",
            "AT",
        ]);
        for o in &overrides {
            let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
            table.row(vec![
                text(&o["binding"]),
                text(&o["model"]),
                text(&o["manifest_model"]),
                text(&o["key"]),
                text(&o["manifest_key"]),
                text(&o["set_by"]),
                rfc3339_field(&o["set_at"]),
            ]);
        }
        table.print(out, "");
    }
    // The manifest in effect (with any assignments): vault ids, never a
    // secret.
    match serde_json::from_value::<crate::manifest::Manifest>(agent["manifest"].clone())
        .ok()
        .and_then(|manifest| toml::to_string(&manifest).ok())
    {
        Some(text) => {
            let _ = write!(out, "\nmanifest:\n{text}");
        }
        None => {
            let _ = writeln!(out, "\nmanifest:");
            super::output::json(out, &agent["manifest"]);
        }
    }
}

/// `clawcage invocations`: recent invocations on a running daemon.
#[derive(Debug, clap::Args)]
pub struct InvocationsCommand {
    /// The daemon.
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Only this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only this outcome (`ok`, or an error kind such as `crashed`).
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only this source (`api`, `github`, `schedule`, …).
    #[arg(long)]
    pub source: Option<String>,
    /// Only since then: `today`, a date, a time ago (`7d`, `36h`, `90m`).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many (newest first; at most 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

impl InvocationsCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), CliError> {
        let mut query = vec![format!("limit={}", self.limit)];
        for (name, value) in [
            ("agent", &self.agent),
            ("outcome", &self.outcome),
            ("source", &self.source),
            ("since", &self.since),
        ] {
            if let Some(value) = value {
                query.push(format!("{name}={}", segment(value)));
            }
        }
        let path = format!("/v1/invocations?{}", query.join("&"));
        let value = self.daemon.call(Method::GET, &path, None)?;
        if self.output.is_json() {
            super::output::json(out, &value);
            return Ok(());
        }
        let rows = value["invocations"].as_array().cloned().unwrap_or_default();
        let mut table = Table::new(&[
            "STARTED", "AGENT", "SOURCE", "KIND", "MS", "OUTCOME", "CALLS", "TOKENS", "COST USD",
        ]);
        for row in &rows {
            table.row(vec![
                row["started_at"].as_str().unwrap_or("").into(),
                row["agent"].as_str().unwrap_or("").into(),
                row["source"].as_str().unwrap_or("").into(),
                row["kind"].as_str().unwrap_or("").into(),
                row["duration_ms"].to_string(),
                row["outcome"].as_str().unwrap_or("").into(),
                row["model_calls"].to_string(),
                row["tokens"].to_string(),
                format!(
                    "{:.6}",
                    row["cost_micros"].as_u64().unwrap_or(0) as f64 / 1e6
                ),
            ]);
        }
        table.print(out, "no invocations");
        Ok(())
    }
}

/// `clawcage invoke`: runs an event on a deployed agent. Exits as `run`
/// does: 0 with the handler's result, else the code of the failure's kind.
#[derive(Debug, clap::Args)]
pub struct InvokeCommand {
    /// The daemon.
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The agent.
    pub agent: String,
    /// The event.
    #[command(flatten)]
    pub event: super::event::EventArgs,
}

/// The exit code of an invocation's failure kind (see
/// [`crate::daemon::OutcomeError`]).
fn outcome_code(kind: &str) -> u8 {
    match kind {
        "invalid-event" => exit::BAD_EVENT,
        "agent-error" => exit::AGENT_ERROR,
        "limit" | "result-too-large" => exit::LIMIT,
        "crashed" => exit::CRASHED,
        _ => exit::HOST,
    }
}

impl InvokeCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), CliError> {
        let text = self
            .event
            .json_text()
            .map_err(|e| CliError::new(exit::BAD_EVENT, e.to_string()))?;
        let event: Value = serde_json::from_str(&text)
            .map_err(|e| CliError::new(exit::BAD_EVENT, format!("the event is not JSON: {e}")))?;
        let path = format!("/v1/agents/{}/invoke", segment(&self.agent));
        let token = self.daemon.token()?;
        // An outcome with an error comes with a 4xx/5xx status and the
        // outcome as the body: read it rather than the status.
        let answer = super::remote::block_on(invoke_call(self.daemon.url(), &token, &path, event))?;
        match (answer["result"].as_str(), answer["error"]["kind"].as_str()) {
            (Some(result), _) => {
                let _ = writeln!(out, "{result}");
                Ok(())
            }
            (None, Some(kind)) => Err(CliError::new(
                outcome_code(kind),
                format!(
                    "{kind}: {}",
                    answer["error"]["message"].as_str().unwrap_or("")
                ),
            )),
            (None, None) => {
                super::output::json(out, &answer);
                Ok(())
            }
        }
    }
}

/// `POST /v1/agents/{name}/invoke`: the outcome, whatever its status; a
/// refusal (unknown agent, busy, draining) as an error.
async fn invoke_call(base: &str, token: &str, path: &str, event: Value) -> Result<Value, CliError> {
    let body = zeroize::Zeroizing::new(event.to_string());
    let (status, value) =
        super::remote::remote_answer(base, token, Method::POST, path, Some(body)).await?;
    // An outcome names its agent; a refusal is `{"error": {"code", …}}`.
    if status.is_success() || value.get("agent").is_some() {
        return Ok(value);
    }
    Err(super::remote::refusal(status, &value))
}
