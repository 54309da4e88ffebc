//! `clawcage audit`: verifies or exports the audit log, local or on a
//! running daemon.

use std::io::Write;
use std::sync::Arc;

use reqwest::Method;
use serde_json::Value;

use super::failure::{CliError, exit};
use super::remote::DaemonArgs;

/// `clawcage audit`: checks or exports the audit log.
#[derive(Debug, clap::Args)]
pub struct AuditCommand {
    /// The log: the local state directory's, or a daemon's (`--remote`).
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: AuditAction,
}

/// Audit subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditAction {
    /// Recomputes the hash chain; fails naming the first edited, deleted or
    /// moved record, or why the log stopped.
    Verify,
    /// Writes every record as JSON Lines.
    Export,
}

/// Records per request of a remote export.
const PAGE: usize = 1000;

/// Exit code of a log that does not verify: the records on disk are not
/// what was written.
const TAMPERED: u8 = exit::REFUSED;

impl AuditCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), CliError> {
        if self.daemon.is_remote() {
            return self.run_remote(out);
        }
        let db = Arc::new(crate::db::Database::open(&self.daemon.state.dir()?)?);
        let audit = crate::audit::AuditLog::new(db);
        let result = match self.action {
            AuditAction::Verify => audit
                .verify()
                .map_err(|e| CliError::from(e.to_string()))
                .and_then(|v| report(out, v.records, &v.head, v.problem.as_deref())),
            AuditAction::Export => (|| {
                let mut after = 0;
                loop {
                    let records = audit.read(after, 1000).map_err(|e| e.to_string())?;
                    let Some(last) = records.last() else { break };
                    after = last.seq;
                    for record in &records {
                        let _ =
                            writeln!(out, "{}", serde_json::to_string(record).unwrap_or_default());
                    }
                }
                Ok(())
            })(),
        };
        audit.close();
        result
    }

    fn run_remote(self, out: &mut dyn Write) -> Result<(), CliError> {
        match self.action {
            AuditAction::Verify => {
                let v = self.daemon.call(Method::GET, "/v1/audit/verify", None)?;
                report(
                    out,
                    v["records"].as_u64().unwrap_or(0),
                    v["head"].as_str().unwrap_or(""),
                    v["problem"].as_str(),
                )
            }
            AuditAction::Export => {
                let mut after = 0;
                loop {
                    let page = self.daemon.call(
                        Method::GET,
                        &format!("/v1/audit?after={after}&limit={PAGE}"),
                        None,
                    )?;
                    let records = page["records"].as_array().cloned().unwrap_or_default();
                    for record in &records {
                        let _ = writeln!(out, "{}", Value::to_string(record));
                    }
                    // Each request is itself a record: a short page is the
                    // end as of now, or the export would never finish.
                    match records.last().and_then(|r| r["seq"].as_i64()) {
                        Some(last) if records.len() == PAGE => after = last,
                        _ => break,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Prints a verification; a problem is a failure: an edited chain, or
/// (exit code 10) a chain that stopped growing.
fn report(
    out: &mut dyn Write,
    records: u64,
    head: &str,
    problem: Option<&str>,
) -> Result<(), CliError> {
    if let Some(problem) = problem {
        if problem.starts_with("appends stopped") {
            return Err(CliError::new(
                exit::HOST,
                format!("the audit log is intact but {problem}"),
            ));
        }
        return Err(CliError::new(
            TAMPERED,
            format!(
                "the audit log was tampered with: {problem} ({records} records verified before it)"
            ),
        ));
    }
    let _ = writeln!(out, "ok: {records} records, head {head}");
    Ok(())
}
