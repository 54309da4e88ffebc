//! `clawcage key …`: provider keys and tool credentials in the vault, local
//! or on a running daemon. Every change is an audit record either way.

use std::io::{IsTerminal, Read, Write};

use reqwest::Method;
use serde_json::Value;
use zeroize::Zeroizing;

use super::failure::CliError;
use super::output::{OutputArgs, Table, rfc3339, rfc3339_field};
use super::remote::{DaemonArgs, segment};
use crate::secret::Secret;
use crate::vault::{KeyInfo, MAX_SECRET_BYTES};

/// `clawcage key …`: manage provider keys and tool credentials.
#[derive(Debug, clap::Args)]
pub struct KeyCommand {
    /// The vault: the local state directory's, or a daemon's (`--remote`).
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: KeyAction,
}

/// Key subcommands. Secrets are read from stdin or a named environment
/// variable, never from the command line, where other users can see them.
#[derive(Debug, clap::Subcommand)]
pub enum KeyAction {
    /// Add a key; its value is read from stdin (or `--from-env`).
    Add {
        /// The key's id, used in manifests (`key = "<id>"`).
        id: String,
        /// The provider: anthropic, openai, openai-compatible, github, slack, notion, http.
        #[arg(long)]
        provider: String,
        /// Read the value from this environment variable instead of stdin.
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
    },
    /// List keys: id, provider, fingerprint, dates. Never the value.
    List,
    /// Replace a key's value; takes effect at the next call, also in a
    /// running daemon.
    Rotate {
        /// The key's id.
        id: String,
        /// Read the value from this environment variable instead of stdin.
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
    },
    /// Revoke a key: its ciphertext is deleted and calls using it fail.
    Revoke {
        /// The key's id.
        id: String,
    },
    /// Forget a revoked key, so that its id can be added again.
    Delete {
        /// The key's id.
        id: String,
    },
}

/// Reads a secret; a note about white space dropped around it goes to
/// `out`, so the operator knows what was stored.
fn read_secret(
    from_env: Option<&str>,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<Secret, String> {
    let text = match from_env {
        Some(var) => Zeroizing::new(
            std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)"))?,
        ),
        None => {
            let mut bytes = Zeroizing::new(Vec::new());
            stdin
                .take(MAX_SECRET_BYTES as u64 + 2)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read the key from stdin: {e}"))?;
            Zeroizing::new(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| "the key is not UTF-8".to_string())?,
            )
        }
    };
    // Keys are never white space at either end: what is around a pasted
    // key (a newline, a stray space, a tab from a copied table cell) is
    // dropped, and the operator is told, so what is stored is exactly the
    // key the provider issued.
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the key is empty".into());
    }
    let dropped = text.len() - trimmed.len();
    let only_final_newline = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        == Some(trimmed);
    if dropped > 0 && !only_final_newline {
        let _ = writeln!(
            out,
            "note: removed {dropped} byte{} of white space around the key",
            if dropped == 1 { "" } else { "s" }
        );
    }
    Ok(Secret::from(trimmed.to_string()))
}

/// A key's state for people: active, rotated or revoked, with the time.
fn key_state(info: &Value) -> String {
    match (info["revoked_at"].as_i64(), info["rotated_at"].as_i64()) {
        (Some(at), _) => format!("revoked {}", rfc3339(at)),
        (None, Some(at)) => format!("rotated {}", rfc3339(at)),
        (None, None) => "active".into(),
    }
}

fn key_table(keys: &[Value]) -> Table {
    let mut table = Table::new(&["ID", "PROVIDER", "FINGERPRINT", "CREATED", "STATE"]);
    for info in keys {
        table.row(vec![
            info["id"].as_str().unwrap_or("").into(),
            info["provider"].as_str().unwrap_or("").into(),
            info["fingerprint"].as_str().unwrap_or("").into(),
            rfc3339_field(&info["created_at"]),
            key_state(info),
        ]);
    }
    table
}

impl KeyCommand {
    /// Runs the command, reading secrets from `stdin`.
    pub fn run(self, stdin: &mut dyn Read, out: &mut dyn Write) -> Result<(), CliError> {
        let (done, answer) = if self.daemon.is_remote() {
            self.run_remote(stdin, out)?
        } else {
            self.run_local(stdin, out)?
        };
        if self.output.is_json() {
            super::output::json(out, &answer);
            return Ok(());
        }
        match done {
            None => key_table(answer["keys"].as_array().map_or(&[], Vec::as_slice))
                .print(out, "no keys"),
            Some(done) => {
                let info = answer
                    .get("key")
                    .or(answer.get("deleted"))
                    .unwrap_or(&answer);
                let _ = writeln!(
                    out,
                    "{done} {} ({}, {}), {}",
                    info["id"].as_str().unwrap_or(""),
                    info["provider"].as_str().unwrap_or(""),
                    info["fingerprint"].as_str().unwrap_or(""),
                    key_state(info)
                );
            }
        }
        Ok(())
    }

    /// Runs the command on the local vault; answers what was done (none for
    /// a listing) and the API's answer for it, so both paths print alike.
    fn run_local(
        &self,
        stdin: &mut dyn Read,
        out: &mut dyn Write,
    ) -> Result<(Option<&'static str>, Value), CliError> {
        let (vault, audit) = self.daemon.state.open_vault_and_audit()?;
        let prompt = |from_env: &Option<String>| {
            if from_env.is_none() && std::io::stdin().is_terminal() {
                eprintln!("paste the key, then press Enter and Ctrl-D:");
            }
        };
        let (change, done, info): (&str, &str, KeyInfo) = match &self.action {
            KeyAction::List => {
                let keys = vault.list()?;
                return Ok((None, serde_json::json!({"keys": keys})));
            }
            KeyAction::Add {
                id,
                provider,
                from_env,
            } => {
                prompt(from_env);
                let secret = read_secret(from_env.as_deref(), stdin, out)?;
                ("add", "added", vault.add(id, provider, &secret)?)
            }
            KeyAction::Rotate { id, from_env } => {
                prompt(from_env);
                let secret = read_secret(from_env.as_deref(), stdin, out)?;
                ("rotate", "rotated", vault.rotate(id, &secret)?)
            }
            KeyAction::Revoke { id } => ("revoke", "revoked", vault.revoke(id)?),
            KeyAction::Delete { id } => ("delete", "deleted", vault.delete(id)?),
        };
        audit.append(crate::audit::AuditEvent::Key {
            change: change.into(),
            key_id: info.id.clone(),
            provider: info.provider.clone(),
            actor: "cli".into(),
        });
        // The change is made; its record must be too, or the operator hears
        // of it.
        audit.flush().map_err(|e| {
            format!("the key change was made but its audit record was not written: {e}")
        })?;
        Ok((Some(done), serde_json::json!({ "key": info })))
    }

    /// Runs the command against a daemon's API.
    fn run_remote(
        &self,
        stdin: &mut dyn Read,
        out: &mut dyn Write,
    ) -> Result<(Option<&'static str>, Value), CliError> {
        // The secret goes only into the request body.
        let with_secret =
            |fields: Vec<(&str, &str)>, secret: &Secret| -> Result<Zeroizing<String>, String> {
                let mut map = serde_json::Map::new();
                for (name, value) in fields {
                    map.insert(name.into(), value.into());
                }
                map.insert(
                    "secret".into(),
                    secret.expose_str().ok_or("the key is not UTF-8")?.into(),
                );
                Ok(Zeroizing::new(Value::Object(map).to_string()))
            };
        let (done, method, path, body) = match &self.action {
            KeyAction::Add {
                id,
                provider,
                from_env,
            } => {
                let secret = read_secret(from_env.as_deref(), stdin, out)?;
                let body = with_secret(vec![("id", id), ("provider", provider)], &secret)?;
                (
                    Some("added"),
                    Method::POST,
                    "/v1/keys".to_string(),
                    Some(body),
                )
            }
            KeyAction::Rotate { id, from_env } => {
                let secret = read_secret(from_env.as_deref(), stdin, out)?;
                (
                    Some("rotated"),
                    Method::POST,
                    format!("/v1/keys/{}/rotate", segment(id)),
                    Some(with_secret(vec![], &secret)?),
                )
            }
            KeyAction::Revoke { id } => (
                Some("revoked"),
                Method::DELETE,
                format!("/v1/keys/{}", segment(id)),
                None,
            ),
            KeyAction::Delete { id } => (
                Some("deleted"),
                Method::POST,
                format!("/v1/keys/{}/delete", segment(id)),
                None,
            ),
            KeyAction::List => (None, Method::GET, "/v1/keys".to_string(), None),
        };
        let answer = self.daemon.call_with(method, &path, body)?;
        Ok((done, answer))
    }
}
