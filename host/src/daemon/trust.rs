//! The trust policy (`trust.toml`) applied to agents deployed from the
//! registry: at start, at every deployment, and whenever the file changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Daemon;
use super::agents::{Deployed, ORIGIN_FILE, deployment_record};

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
    pub fn enforce_trust(&self) -> (Vec<String>, Vec<String>) {
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
    pub fn trust_policy_path(&self) -> PathBuf {
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
