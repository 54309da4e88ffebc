//! Publisher and operator commands for the component registry:
//! `keygen`, `push`, `pull` and `trust`.

use std::io::Write;
use std::path::PathBuf;

use super::failure::CliError;
use super::output::{OutputArgs, Table};
use super::remote::{DaemonArgs, block_on};
use crate::daemon::trust::TrustChange;
use crate::registry::client::RegistryClient;
use crate::registry::signing::{PublisherKey, TRUST_FILE, TrustPolicy};
use crate::secret::Secret;

/// `clawcage keygen`: creates a publisher's Ed25519 key pair.
#[derive(Debug, clap::Args)]
pub struct KeygenCommand {
    /// Where to write the pair: `<out>.key` (private, mode 0600) and
    /// `<out>.pub` (the public key, hex, for operators to trust).
    #[arg(long, default_value = "publisher")]
    pub out: PathBuf,
}

impl KeygenCommand {
    /// Runs the command.
    pub fn run(&self, out: &mut dyn Write) -> Result<(), CliError> {
        let private = self.out.with_extension("key");
        let public = self.out.with_extension("pub");
        if private.exists() {
            return Err(CliError::new(
                super::exit::REFUSED,
                format!("{} exists; refusing to overwrite a key", private.display()),
            ));
        }
        let (key, pkcs8) = PublisherKey::generate()?;
        crate::fsutil::write_atomically(
            &private,
            pkcs8.expose_str().unwrap_or_default().as_bytes(),
        )
        .map_err(|e| format!("{}: {e}", private.display()))?;
        std::fs::write(&public, format!("{}\n", key.public_hex()))
            .map_err(|e| format!("{}: {e}", public.display()))?;
        let _ = writeln!(
            out,
            "private key: {}\npublic key:  {} ({})",
            private.display(),
            public.display(),
            key.public_hex()
        );
        Ok(())
    }
}

fn load_key(path: &std::path::Path) -> Result<PublisherKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    PublisherKey::from_pkcs8_hex(&Secret::from(text))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `clawcage push`: uploads a component to a registry in the Wasm OCI
/// layout, signed with a publisher key.
#[derive(Debug, clap::Args)]
pub struct PushCommand {
    /// The component (`.wasm`).
    pub component: PathBuf,
    /// The repository, `namespace/name`.
    #[arg(long)]
    pub name: String,
    /// The version (a semver tag, immutable once pushed).
    #[arg(long)]
    pub version: String,
    /// The publisher's private key (`clawcage keygen`); omit only for a
    /// namespace whose operator allows unsigned components.
    #[arg(long)]
    pub sign: Option<PathBuf>,
    /// The registry (the daemon) and a token.
    #[command(flatten)]
    pub remote: DaemonArgs,
}

impl PushCommand {
    /// Runs the command.
    pub fn run(&self, out: &mut dyn Write) -> Result<(), CliError> {
        let component =
            crate::fsutil::read_bounded(&self.component, crate::limits::MAX_COMPONENT_BYTES)
                .map_err(|e| e.to_string())?;
        let key = self.sign.as_deref().map(load_key).transpose()?;
        let client = RegistryClient::new(self.remote.url(), &self.remote.token()?)?;
        let pushed = block_on(async {
            client
                .push_component(&self.name, &self.version, &component, key.as_ref())
                .await
                .map(|pushed| match pushed.signature {
                    Some(signature) => format!("{}, signed ({signature})", pushed.digest),
                    None => format!("{}, unsigned", pushed.digest),
                })
        })?;
        let _ = writeln!(out, "pushed {}@{} {pushed}", self.name, self.version);
        Ok(())
    }
}

/// `clawcage sign`: signs a version already in the registry (pushed by any
/// client) and attaches the signature as a referrer.
#[derive(Debug, clap::Args)]
pub struct SignCommand {
    /// `namespace/name@version`.
    pub reference: String,
    /// The publisher's private key (`clawcage keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// The manifest digest you mean to sign (`clawcage push` prints it):
    /// refused if the version points elsewhere, say at something another
    /// token holder pushed. Required, so nobody signs blind.
    #[arg(long)]
    pub digest: String,
    /// The registry (the daemon) and a token.
    #[command(flatten)]
    pub remote: DaemonArgs,
}

impl SignCommand {
    /// Runs the command.
    pub fn run(&self, out: &mut dyn Write) -> Result<(), CliError> {
        let key = load_key(&self.key)?;
        let client = RegistryClient::new(self.remote.url(), &self.remote.token()?)?;
        let expected =
            crate::registry::blobs::Digest::parse(&self.digest).map_err(|e| e.to_string())?;
        let (digest, signature) = block_on(async {
            client
                .sign_reference(&self.reference, &expected, &key)
                .await
        })?;
        let _ = writeln!(
            out,
            "signed {} ({digest}) with {}: {signature}",
            self.reference,
            key.public_hex()
        );
        Ok(())
    }
}

/// `clawcage pull`: downloads a component, checking every digest, and
/// names the keys whose signatures verify.
#[derive(Debug, clap::Args)]
pub struct PullCommand {
    /// `namespace/name@version` or `namespace/name@sha256:<hex>`.
    pub reference: String,
    /// Where to write the component.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Refuse unless signed by this public key (hex, or a `.pub` file).
    #[arg(long)]
    pub verify_key: Option<String>,
    /// The registry (the daemon) and a token.
    #[command(flatten)]
    pub remote: DaemonArgs,
}

impl PullCommand {
    /// Runs the command.
    pub fn run(&self, out: &mut dyn Write) -> Result<(), CliError> {
        let client = RegistryClient::new(self.remote.url(), &self.remote.token()?)?;
        let pulled = block_on(async { client.pull_component(&self.reference).await })?;
        if let Some(key) = &self.verify_key {
            let key = public_key_arg(key)?;
            if !pulled
                .signatures
                .iter()
                .any(|s| s.public_key.eq_ignore_ascii_case(&key))
            {
                return Err(CliError::new(
                    super::exit::REFUSED,
                    format!(
                        "{} (digest {}) is not signed by {key}",
                        self.reference, pulled.digest
                    ),
                ));
            }
        }
        crate::fsutil::write_atomically(&self.output, &pulled.component)
            .map_err(|e| format!("{}: {e}", self.output.display()))?;
        let signers: Vec<&str> = pulled
            .signatures
            .iter()
            .map(|s| s.public_key.as_str())
            .collect();
        let _ = writeln!(
            out,
            "pulled {} ({}, {} bytes) to {}; signed by: {}",
            self.reference,
            pulled.digest,
            pulled.component.len(),
            self.output.display(),
            if signers.is_empty() {
                "nobody".to_string()
            } else {
                signers.join(", ")
            }
        );
        Ok(())
    }
}

/// A public key given as hex or as a `.pub` file.
fn public_key_arg(arg: &str) -> Result<String, String> {
    let text = if std::path::Path::new(arg).is_file() {
        std::fs::read_to_string(arg).map_err(|e| format!("{arg}: {e}"))?
    } else {
        arg.to_string()
    };
    let key = text.trim().to_ascii_lowercase();
    match hex::decode(&key) {
        Ok(bytes) if bytes.len() == 32 => Ok(key),
        _ => Err(format!(
            "{arg:?} is not an Ed25519 public key (64 hex digits, or a .pub file)"
        )),
    }
}

/// `clawcage trust`: the operator's trusted publisher keys, per namespace
/// (`trust.toml` in the state directory; read at every deployment, and
/// applied to running agents within a second of a change). Local, or on a
/// running daemon with `--remote`.
#[derive(Debug, clap::Args)]
pub struct TrustCommand {
    /// The policy: the local state directory's, or a daemon's (`--remote`).
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: TrustAction,
}

/// Trust subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TrustAction {
    /// Trusts a publisher key for a namespace.
    Add {
        /// The namespace (`acme` for `acme/triage`).
        namespace: String,
        /// The public key: hex, or a `.pub` file from `clawcage keygen`.
        key: String,
    },
    /// Stops trusting a key.
    Remove {
        /// The namespace.
        namespace: String,
        /// The public key: hex, or a `.pub` file.
        key: String,
    },
    /// Allows (or, with `--deny`, stops allowing) unsigned components
    /// from a namespace. Off by default.
    AllowUnsigned {
        /// The namespace.
        namespace: String,
        /// Deny unsigned components again.
        #[arg(long)]
        deny: bool,
    },
    /// Prints the policy.
    List,
}

impl TrustCommand {
    /// Runs the command.
    pub fn run(&self, out: &mut dyn Write) -> Result<(), CliError> {
        let change = match &self.action {
            TrustAction::Add { namespace, key } => Some(TrustChange::Add {
                namespace: namespace.clone(),
                key: public_key_arg(key).map_err(CliError::usage)?,
            }),
            TrustAction::Remove { namespace, key } => Some(TrustChange::Remove {
                namespace: namespace.clone(),
                key: public_key_arg(key).map_err(CliError::usage)?,
            }),
            TrustAction::AllowUnsigned { namespace, deny } => Some(if *deny {
                TrustChange::DenyUnsigned {
                    namespace: namespace.clone(),
                }
            } else {
                TrustChange::AllowUnsigned {
                    namespace: namespace.clone(),
                }
            }),
            TrustAction::List => None,
        };
        let policy: TrustPolicy = if self.daemon.is_remote() {
            let answer = match &change {
                Some(change) => self.daemon.call(
                    reqwest::Method::POST,
                    "/v1/trust",
                    Some(serde_json::to_value(change).map_err(|e| e.to_string())?),
                )?,
                None => self.daemon.call(reqwest::Method::GET, "/v1/trust", None)?,
            };
            serde_json::from_value(answer["trust"].clone())
                .map_err(|e| format!("the daemon's trust policy: {e}"))?
        } else {
            let dir = self.daemon.state.dir()?;
            let path = dir.join(TRUST_FILE);
            match &change {
                Some(change) => {
                    // On the record, like every other change to what may run.
                    let db = crate::db::Database::open(&dir)?;
                    let audit = crate::audit::AuditLog::new(std::sync::Arc::new(db));
                    let policy = crate::daemon::trust::change_trust(&path, change, &audit, "cli");
                    audit.close();
                    policy?
                }
                None => TrustPolicy::load(&path)?,
            }
        };
        if self.output.is_json() {
            super::output::json(out, &serde_json::json!({ "trust": policy }));
            return Ok(());
        }
        let mut table = Table::new(&["NAMESPACE", "UNSIGNED", "TRUSTED KEYS"]);
        for (namespace, trust) in &policy.namespaces {
            table.row(vec![
                namespace.clone(),
                if trust.allow_unsigned {
                    "allowed"
                } else {
                    "refused"
                }
                .into(),
                if trust.keys.is_empty() {
                    "-".into()
                } else {
                    trust.keys.join(" ")
                },
            ]);
        }
        table.print(
            out,
            "no namespace is trusted: every registry deployment is refused",
        );
        Ok(())
    }
}

/// `clawcage registry`: the upkeep of a running daemon's registry.
#[derive(Debug, clap::Args)]
pub struct RegistryCommand {
    /// The daemon.
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: RegistryAction,
}

/// Registry subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RegistryAction {
    /// Bytes of blobs each namespace holds, and its quota.
    Usage,
    /// Removes blobs no manifest names (and their compiled artifacts);
    /// never what a deployed agent runs.
    Gc {
        /// Keep unnamed blobs younger than this many seconds, so pushes in
        /// progress keep theirs (default: an hour).
        #[arg(long)]
        grace_secs: Option<u64>,
    },
}

impl RegistryCommand {
    /// Runs the command.
    pub fn run(&self, out: &mut dyn Write) -> Result<(), CliError> {
        match &self.action {
            RegistryAction::Usage => {
                let value = self
                    .daemon
                    .call(reqwest::Method::GET, "/v1/registry/usage", None)?;
                if self.output.is_json() {
                    super::output::json(out, &value);
                    return Ok(());
                }
                let mut table = Table::new(&["NAMESPACE", "BYTES", "QUOTA"]);
                for row in value["namespaces"].as_array().into_iter().flatten() {
                    table.row(vec![
                        row["namespace"].as_str().unwrap_or("").into(),
                        row["bytes"].to_string(),
                        row["quota_bytes"]
                            .as_u64()
                            .map_or_else(|| "none".into(), |q| q.to_string()),
                    ]);
                }
                table.print(out, "no namespace holds blobs");
            }
            RegistryAction::Gc { grace_secs } => {
                let path = match grace_secs {
                    Some(secs) => format!("/v1/registry/gc?grace_secs={secs}"),
                    None => "/v1/registry/gc".into(),
                };
                let value = self.daemon.call(reqwest::Method::POST, &path, None)?;
                if self.output.is_json() {
                    super::output::json(out, &value);
                    return Ok(());
                }
                let _ = writeln!(
                    out,
                    "removed {} blob(s), {} bytes, {} link(s), {} compiled artifact(s); kept {} young",
                    value["blobs_removed"],
                    value["bytes_freed"],
                    value["links_removed"],
                    value["artifacts_removed"],
                    value["kept_young"]
                );
            }
        }
        Ok(())
    }
}
