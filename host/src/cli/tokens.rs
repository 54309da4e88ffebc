//! `clawcage token`: the daemon's API tokens, local or through a running
//! daemon. Values are shown once, at creation; every change is an audit
//! record.

use std::io::Write;
use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};

use super::failure::CliError;
use super::output::{OutputArgs, Table, rfc3339, rfc3339_field};
use super::remote::{DaemonArgs, segment};
use crate::daemon::auth::{Scope, Tokens};

/// `clawcage token`: API tokens for the daemon.
#[derive(Debug, clap::Args)]
pub struct TokenCommand {
    /// The tokens: the local state directory's, or a daemon's (`--remote`).
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: TokenAction,
}

/// Token subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenAction {
    /// Creates a token and prints it (the only time it is shown). An admin
    /// token unless `--publish` or `--viewer` is given.
    Add {
        /// Its name.
        name: String,
        /// Make a publisher token: it may only push to and pull from the
        /// registry, in these namespaces (repeat; `*` for all).
        #[arg(long = "publish", value_name = "NAMESPACE", conflicts_with = "viewer")]
        publish: Vec<String>,
        /// Make a viewer token: it reads everything an admin reads (the
        /// API's `GET`s, registry pulls) and changes nothing.
        #[arg(long)]
        viewer: bool,
    },
    /// Lists tokens (names and dates, never values).
    List,
    /// Revokes a token.
    Revoke {
        /// Its name.
        name: String,
    },
}

impl TokenCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), CliError> {
        let answer = if self.daemon.is_remote() {
            self.run_remote()?
        } else {
            self.run_local()?
        };
        if self.output.is_json() {
            super::output::json(out, &answer);
            return Ok(());
        }
        match &self.action {
            TokenAction::Add { .. } => {
                let _ = writeln!(out, "{}", answer["token"].as_str().unwrap_or(""));
            }
            TokenAction::Revoke { name } => {
                let _ = writeln!(out, "revoked {name}");
            }
            TokenAction::List => {
                let mut table = Table::new(&["NAME", "SCOPE", "CREATED", "STATE"]);
                for token in answer["tokens"].as_array().into_iter().flatten() {
                    table.row(vec![
                        token["name"].as_str().unwrap_or("").into(),
                        token["publish"].as_array().map_or_else(
                            || token["role"].as_str().unwrap_or("admin").into(),
                            |n| {
                                let names: Vec<&str> = n.iter().filter_map(Value::as_str).collect();
                                format!("publish {}", names.join(","))
                            },
                        ),
                        rfc3339_field(&token["created_at"]),
                        token["revoked_at"]
                            .as_i64()
                            .map_or("active".into(), |at| format!("revoked {}", rfc3339(at))),
                    ]);
                }
                table.print(out, "no tokens");
            }
        }
        Ok(())
    }

    fn run_local(&self) -> Result<Value, CliError> {
        let db = Arc::new(crate::db::Database::open(&self.daemon.state.dir()?)?);
        let tokens = Tokens::new(db.clone());
        let record = |change: &str, name: &str, scope: String| -> Result<(), CliError> {
            let audit = crate::audit::AuditLog::new(db.clone());
            audit.append(crate::audit::AuditEvent::Token {
                change: change.into(),
                name: name.to_string(),
                scope,
                actor: "cli".into(),
            });
            audit.flush().map_err(|e| {
                CliError::from(format!(
                    "the token change was made but its audit record was not written: {e}"
                ))
            })
        };
        match &self.action {
            TokenAction::Add {
                name,
                publish,
                viewer,
            } => {
                let scope = if *viewer {
                    Scope::Viewer
                } else if publish.is_empty() {
                    Scope::Admin
                } else {
                    Scope::Publish(publish.clone())
                };
                let token = tokens.create_scoped(name, &scope)?;
                record("add", name, scope.label())?;
                Ok(json!({"name": name, "scope": scope.label(), "token": token.expose_str()}))
            }
            TokenAction::List => Ok(json!({"tokens": tokens.list()?})),
            TokenAction::Revoke { name } => {
                tokens.revoke(name)?;
                record("revoke", name, String::new())?;
                Ok(json!({"revoked": name}))
            }
        }
    }

    fn run_remote(&self) -> Result<Value, CliError> {
        match &self.action {
            TokenAction::Add {
                name,
                publish,
                viewer,
            } => {
                let mut body = json!({"name": name, "publish": publish});
                if *viewer {
                    body["role"] = json!("viewer");
                }
                self.daemon.call_with(
                    Method::POST,
                    "/v1/tokens",
                    Some(zeroize::Zeroizing::new(body.to_string())),
                )
            }
            TokenAction::List => self.daemon.call(Method::GET, "/v1/tokens", None),
            TokenAction::Revoke { name } => self.daemon.call(
                Method::DELETE,
                &format!("/v1/tokens/{}", segment(name)),
                None,
            ),
        }
    }
}
