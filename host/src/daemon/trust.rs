//! The trust policy (`trust.toml`) applied to agents deployed from the
//! registry: at start, at every deployment, and whenever the file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::agents::{Deployed, ORIGIN_FILE, deployment_record};
use super::{Daemon, DaemonError};
use crate::audit::{AuditEvent, AuditLog};
use crate::registry::signing::TrustPolicy;

/// The trust policy, or why it could not be read.
pub(super) type PolicyRead = Result<crate::registry::signing::TrustPolicy, String>;

/// Enforces the trust policy whenever `trust.toml` changes, checking every
/// second, until the daemon drains ([`Daemon::enforce_trust`]).
pub async fn watch_trust(daemon: Arc<Daemon>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !daemon.is_shutting_down() {
        tick.tick().await;
        let watched = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || watched.enforce_trust()).await;
    }
}

impl Daemon {
    /// Applies the trust policy to agents deployed from the registry, if
    /// `trust.toml` changed since the last call: an agent whose publisher
    /// key is no longer trusted is unloaded (its events get 404 from now
    /// on; its files stay, so it comes back if the key is trusted again),
    /// and one that is trusted again is loaded. Answers the agents
    /// unloaded and loaded. [`watch_trust`] calls this every second.
    pub(crate) fn enforce_trust(&self) -> (Vec<String>, Vec<String>) {
        let _lifecycle = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = std::fs::read(self.trust_policy_path()).unwrap_or_default();
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
        {
            let mut seen = self.trust_seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == Some(fingerprint) {
                return (Vec::new(), Vec::new());
            }
            *seen = Some(fingerprint);
        }
        let policy = self.trust_policy();
        let (mut unloaded, mut loaded) = (Vec::new(), Vec::new());
        let Ok(entries) = std::fs::read_dir(self.agents_dir()) else {
            return (unloaded, loaded);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let dir = entry.path();
            if name.starts_with('.') || !dir.join(ORIGIN_FILE).is_file() {
                continue;
            }
            let current = self.agent(&name);
            let (change, result) = match &current {
                Some(deployed) => (
                    "unloaded",
                    self.still_trusted(deployed, &policy).map(|()| None),
                ),
                None => (
                    "loaded",
                    self.load_from(&dir).and_then(|deployed| {
                        self.still_trusted(&deployed, &policy)
                            .map(|()| Some(deployed))
                    }),
                ),
            };
            // Deploy and remove wait for this (the lifecycle lock), so the
            // map holds what was just checked.
            let (reason, deployed) = match (result, current) {
                // Still trusted and loaded, or still refused and not loaded.
                (Ok(None), _) | (Err(_), None) => continue,
                (Ok(Some(deployed)), _) => {
                    let deployed = Arc::new(deployed);
                    self.write_agents().insert(name.clone(), deployed.clone());
                    loaded.push(name.clone());
                    (None, deployed)
                }
                (Err(reason), Some(deployed)) => {
                    self.write_agents().remove(&name);
                    // Events still queued for it are refused.
                    deployed.slots.close();
                    unloaded.push(name.clone());
                    (Some(reason), deployed)
                }
            };
            tracing::warn!(agent = %name, change, reason = reason.as_deref().unwrap_or("trusted"), "trust policy changed");
            self.audit.append(deployment_record(
                change,
                &name,
                &deployed,
                "trust-policy",
                reason,
            ));
        }
        (unloaded, loaded)
    }

    /// An agent deployed from the registry is loaded again at start only
    /// if the trust policy still allows its component: a publisher key the
    /// operator has since removed stops the agents it signed at the next
    /// start (and every new deployment at once).
    pub(super) fn still_trusted(
        &self,
        deployed: &Deployed,
        policy: &PolicyRead,
    ) -> Result<(), String> {
        let Some(origin) = &deployed.origin else {
            return Ok(());
        };
        let policy = policy.as_ref().map_err(Clone::clone)?;
        let registry = self.registry().ok_or("this daemon has no registry")?;
        let resolved = registry.resolve(&origin.reference, policy)?;
        let sha256 =
            hex::encode(ring::digest::digest(&ring::digest::SHA256, &resolved.component).as_ref());
        if sha256 != deployed.agent.sha256() {
            return Err(format!(
                "its component is not the one {} holds",
                origin.reference
            ));
        }
        Ok(())
    }

    /// The trust policy's file.
    pub(crate) fn trust_policy_path(&self) -> PathBuf {
        self.options
            .state_dir
            .join(crate::registry::signing::TRUST_FILE)
    }

    /// The trust policy as it is on disk now, read once per pass over the
    /// agents (an error refuses every registry agent, not the others).
    pub(super) fn trust_policy(&self) -> PolicyRead {
        crate::registry::signing::TrustPolicy::load(&self.trust_policy_path())
    }
}

/// One change to the trust policy, made with `clawcage trust` or
/// `POST /v1/trust`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) enum TrustChange {
    /// Trust a publisher key (64 hex digits) for a namespace.
    Add {
        /// The namespace (`acme` for `acme/triage`).
        namespace: String,
        /// The public key, hex.
        key: String,
    },
    /// Stop trusting a key.
    Remove {
        /// The namespace.
        namespace: String,
        /// The public key, hex.
        key: String,
    },
    /// Allow unsigned components from a namespace.
    AllowUnsigned {
        /// The namespace.
        namespace: String,
    },
    /// Stop allowing them.
    DenyUnsigned {
        /// The namespace.
        namespace: String,
    },
}

impl TrustChange {
    /// Its name in the audit record.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Add { .. } => "add",
            Self::Remove { .. } => "remove",
            Self::AllowUnsigned { .. } => "allow-unsigned",
            Self::DenyUnsigned { .. } => "deny-unsigned",
        }
    }

    pub(crate) fn namespace(&self) -> &str {
        match self {
            Self::Add { namespace, .. }
            | Self::Remove { namespace, .. }
            | Self::AllowUnsigned { namespace }
            | Self::DenyUnsigned { namespace } => namespace,
        }
    }

    /// Makes the change to `policy`; the key is stored in lower case.
    fn apply(&self, policy: &mut TrustPolicy) -> Result<(), DaemonError> {
        let namespace = self.namespace();
        if namespace.contains('/') || crate::registry::validate_repository(namespace).is_err() {
            return Err(DaemonError::Invalid(format!(
                "{namespace:?} is not a namespace (the first part of acme/triage)"
            )));
        }
        match self {
            Self::Add { key, .. } => {
                let key = public_key_hex(key)?;
                let trust = policy.namespaces.entry(namespace.to_string()).or_default();
                if !trust.keys.contains(&key) {
                    trust.keys.push(key);
                }
            }
            Self::Remove { key, .. } => {
                let key = public_key_hex(key)?;
                let trust = policy.namespaces.get_mut(namespace).ok_or_else(|| {
                    DaemonError::NotFound(format!("namespace {namespace:?} trusts no key"))
                })?;
                let before = trust.keys.len();
                trust.keys.retain(|k| !k.eq_ignore_ascii_case(&key));
                if trust.keys.len() == before {
                    return Err(DaemonError::NotFound(format!(
                        "namespace {namespace:?} does not trust {key}"
                    )));
                }
            }
            Self::AllowUnsigned { .. } | Self::DenyUnsigned { .. } => {
                policy
                    .namespaces
                    .entry(namespace.to_string())
                    .or_default()
                    .allow_unsigned = matches!(self, Self::AllowUnsigned { .. });
            }
        }
        Ok(())
    }
}

/// An Ed25519 public key as 64 lower-case hex digits.
fn public_key_hex(key: &str) -> Result<String, DaemonError> {
    let key = key.trim().to_ascii_lowercase();
    match hex::decode(&key) {
        Ok(bytes) if bytes.len() == 32 => Ok(key),
        _ => Err(DaemonError::Invalid(format!(
            "{key:?} is not an Ed25519 public key (64 hex digits)"
        ))),
    }
}

/// Makes `change` to the trust policy at `path` and records it in `audit`
/// as done by `actor`; answers the policy as saved. A daemon applies it
/// within a second ([`watch_trust`]), and at every deployment.
pub(crate) fn change_trust(
    path: &Path,
    change: &TrustChange,
    audit: &AuditLog,
    actor: &str,
) -> Result<TrustPolicy, DaemonError> {
    let mut policy = TrustPolicy::load(path).map_err(DaemonError::Host)?;
    change.apply(&mut policy)?;
    policy.save(path).map_err(DaemonError::Host)?;
    audit.append(AuditEvent::Trust {
        change: change.name().into(),
        namespace: change.namespace().to_string(),
        key: match change {
            TrustChange::Add { key, .. } | TrustChange::Remove { key, .. } => {
                Some(key.trim().to_ascii_lowercase())
            }
            _ => None,
        },
        actor: actor.to_string(),
    });
    audit
        .flush()
        .map_err(|e| DaemonError::host("the trust change was made but not audited", e))?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_changes_check_their_namespace_and_key() {
        let mut policy = TrustPolicy::default();
        let key = "AB".repeat(32);
        TrustChange::Add {
            namespace: "acme".into(),
            key: key.clone(),
        }
        .apply(&mut policy)
        .unwrap();
        assert_eq!(policy.namespaces["acme"].keys, vec!["ab".repeat(32)]);
        let refused = [
            TrustChange::Add {
                namespace: "acme/triage".into(),
                key: key.clone(),
            },
            TrustChange::Add {
                namespace: "acme".into(),
                key: "00".into(),
            },
        ];
        for change in refused {
            assert!(matches!(
                change.apply(&mut policy),
                Err(DaemonError::Invalid(_))
            ));
        }
        let missing = TrustChange::Remove {
            namespace: "other".into(),
            key,
        };
        assert!(matches!(
            missing.apply(&mut policy),
            Err(DaemonError::NotFound(_))
        ));
    }
}
