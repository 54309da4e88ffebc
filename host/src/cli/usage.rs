//! `clawcage usage`: spend per agent, provider, model and key, local or on a
//! running daemon.

use std::io::Write;

use reqwest::Method;
use serde_json::Value;

use super::failure::CliError;
use super::output::{OutputArgs, Table, rfc3339};
use super::remote::{DaemonArgs, segment};

/// `clawcage usage`: spend per agent, provider, model and key.
#[derive(Debug, clap::Args)]
pub struct UsageCommand {
    /// The ledger: the local state directory's, or a daemon's (`--remote`).
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Only this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// From when: `today`, `month` (default), a date (`YYYY-MM-DD`), a time
    /// ago (`7d`, `36h`, `90m`) or Unix seconds.
    #[arg(long, default_value = "month")]
    pub since: String,
    /// Split the rows by UTC day too.
    #[arg(long, value_enum, default_value = "model")]
    pub by: UsageGrouping,
}

/// How `clawcage usage` groups its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UsageGrouping {
    /// Per agent, provider, model and key.
    Model,
    /// The same, per UTC day.
    Day,
}

impl UsageCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), CliError> {
        let by_day = self.by == UsageGrouping::Day;
        // Checked here too, so a typo is a usage error even remotely.
        let since = crate::ledger::parse_since(&self.since, crate::db::now_unix())
            .map_err(CliError::usage)?;
        let rows: Vec<Value> = if self.daemon.is_remote() {
            let mut path = format!(
                "/v1/usage?since={since}&by={}",
                if by_day { "day" } else { "model" }
            );
            if let Some(agent) = &self.agent {
                path.push_str(&format!("&agent={}", segment(agent)));
            }
            let answer = self.daemon.call(Method::GET, &path, None)?;
            answer["usage"].as_array().cloned().unwrap_or_default()
        } else {
            let db = crate::db::Database::open(&self.daemon.state.dir()?)?;
            let rows = crate::ledger::Ledger::new(std::sync::Arc::new(db))
                .summary_by(self.agent.as_deref(), since, by_day)
                .map_err(|e| e.to_string())?;
            rows.iter()
                .map(|row| serde_json::to_value(row).unwrap_or_default())
                .collect()
        };
        if self.output.is_json() {
            super::output::json(out, &serde_json::json!({"since": since, "usage": rows}));
            return Ok(());
        }
        if rows.is_empty() {
            let _ = writeln!(out, "no usage since {}", rfc3339(since));
            return Ok(());
        }
        let mut header = vec![
            "AGENT",
            "PROVIDER",
            "MODEL",
            "KEY",
            "CALLS",
            "IN TOKENS",
            "CACHE READ",
            "CACHE WRITE",
            "OUT TOKENS",
            "COST USD",
        ];
        if by_day {
            header.insert(0, "DAY");
        }
        let mut table = Table::new(&header);
        let mut estimated = 0;
        for row in &rows {
            // `~` marks totals that include estimated counts.
            let estimated_calls = row["estimated_calls"].as_u64().unwrap_or(0);
            let mark = if estimated_calls > 0 { "~" } else { "" };
            estimated += estimated_calls;
            let mut cells = vec![
                row["agent"].as_str().unwrap_or("").to_string(),
                row["provider"].as_str().unwrap_or("").to_string(),
                row["model"].as_str().unwrap_or("").to_string(),
                row["key_id"].as_str().unwrap_or("-").to_string(),
                row["calls"].to_string(),
                format!("{mark}{}", row["input_tokens"]),
                row["cache_read_tokens"].to_string(),
                row["cache_write_tokens"].to_string(),
                format!("{mark}{}", row["output_tokens"]),
                format!(
                    "{mark}{:.6}",
                    row["cost_micros"].as_u64().unwrap_or(0) as f64 / 1e6
                ),
            ];
            if by_day {
                cells.insert(0, row["day"].as_str().unwrap_or("").to_string());
            }
            table.row(cells);
        }
        table.print(out, "");
        if estimated > 0 {
            let _ = writeln!(
                out,
                "~ includes {estimated} call(s) the host counted itself: upper bounds where the server reported no token counts, the worst case where a call failed after it may have run"
            );
        }
        Ok(())
    }
}
