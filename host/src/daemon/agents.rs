//! The deployed agents: loaded from the state directory, listed, shown and
//! removed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use tokio::sync::Semaphore;

use super::{Daemon, DaemonError, random_id};
use crate::Agent;
use crate::audit::AuditEvent;
use crate::manifest::Manifest;

/// The file in a deployed agent's directory recording its registry origin.
pub(super) const ORIGIN_FILE: &str = "origin.json";

/// Where a deployed component came from in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Origin {
    /// `repository@sha256:…`.
    pub reference: String,
    /// The reference as asked for (`acme/triage@1.2.0`).
    pub requested: String,
    /// The trusted signer's public key (hex), if signed.
    pub signer: Option<String>,
}

/// The audit record of a change to a loaded agent: what it runs, its
/// grants by name, and where its component came from.
pub(super) fn deployment_record(
    change: &str,
    name: &str,
    deployed: &Deployed,
    actor: &str,
    reason: Option<String>,
) -> AuditEvent {
    let origin = deployed.origin.as_ref();
    AuditEvent::Deployment {
        change: change.into(),
        agent: name.to_string(),
        sha256: Some(deployed.agent.sha256().to_string()),
        tools: deployed.manifest.tools.keys().cloned().collect(),
        models: deployed.manifest.models.keys().cloned().collect(),
        actor: actor.to_string(),
        source: origin.map(|o| o.reference.clone()),
        signer: origin.and_then(|o| o.signer.clone()),
        reason,
    }
}

/// The audit record of a deployment that was refused.
pub(super) fn refused_record(
    name: &str,
    actor: &str,
    source: Option<String>,
    reason: String,
) -> AuditEvent {
    AuditEvent::Deployment {
        change: "refused".into(),
        agent: name.to_string(),
        sha256: None,
        tools: vec![],
        models: vec![],
        actor: actor.to_string(),
        source,
        signer: None,
        reason: Some(reason),
    }
}

/// A deployed agent.
pub struct Deployed {
    /// The loaded agent.
    pub agent: Agent,
    /// Its manifest, as in effect: as deployed, with the operator's
    /// binding overrides applied.
    pub manifest: Manifest,
    /// Its manifest as deployed.
    pub declared: Manifest,
    /// The operator's binding overrides in effect.
    pub overrides: Vec<super::overrides::BindingOverride>,
    /// Where its component came from, when from the registry.
    pub origin: Option<Origin>,
    pub(super) slots: Semaphore,
    pub(super) queued: AtomicUsize,
}

impl Deployed {
    /// Events waiting for a slot.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// A deployment's summary.
#[derive(Debug, Clone, Serialize)]
pub struct AgentInfo {
    /// The name.
    pub name: String,
    /// The component's sha256.
    pub sha256: String,
    /// Model bindings.
    pub models: Vec<String>,
    /// Tools granted.
    pub tools: Vec<String>,
    /// Triggers, as `source` or `source:detail`.
    pub triggers: Vec<String>,
    /// Events waiting.
    pub queued: usize,
    /// The registry reference it was deployed from (pinned to the manifest
    /// digest), and the trusted signer, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Set when an operator paused it: it takes no event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<super::pause::Pause>,
}

/// One deployed agent in detail.
#[derive(Debug, Clone, Serialize)]
pub struct AgentDetail {
    /// What the agent list says.
    #[serde(flatten)]
    pub info: AgentInfo,
    /// The manifest as deployed.
    pub manifest: Manifest,
    /// Its suspended bindings and grants.
    pub suspensions: Vec<crate::suspend::Suspension>,
    /// The operator's binding overrides, beside the manifest's values.
    pub overrides: Vec<OverrideView>,
    /// Where it stands against its budget (`manifest.budget`) now.
    pub spend: crate::ledger::Standing,
}

/// An override beside what the manifest says.
#[derive(Debug, Clone, Serialize)]
pub struct OverrideView {
    /// The override.
    #[serde(flatten)]
    pub over: super::overrides::BindingOverride,
    /// The manifest's model for the binding.
    pub manifest_model: String,
    /// The manifest's key for the binding.
    pub manifest_key: Option<String>,
}

impl Daemon {
    pub(super) fn load_deployed(&self) -> Result<(), String> {
        let dir = self.agents_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        let policy = self.trust_policy();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !path.join("agent.toml").is_file() {
                continue;
            }
            let loaded = self
                .load_from(&path)
                .and_then(|deployed| self.still_trusted(&deployed, &policy).map(|()| deployed));
            match loaded {
                Ok(deployed) => {
                    tracing::info!(agent = %name, "loaded deployed agent");
                    self.write_agents().insert(name, Arc::new(deployed));
                }
                Err(e) => {
                    tracing::error!(agent = %name, error = %e, "cannot load deployed agent");
                    self.audit.append(refused_record(&name, "startup", None, e));
                }
            }
        }
        Ok(())
    }

    pub(super) fn load_from(&self, dir: &Path) -> Result<Deployed, String> {
        let declared = Manifest::load(&dir.join("agent.toml")).map_err(|e| e.to_string())?;
        // The operator's assignments, over the manifest's: failing to read
        // them fails the load rather than run with what they replaced.
        let overrides = super::overrides::read(&self.db, &declared.name)
            .map_err(|e| format!("binding overrides: {e}"))?;
        let manifest = super::overrides::apply(declared.clone(), &overrides);
        let agent = self
            .cage
            .load_manifest(&manifest, dir)
            .map_err(|e| e.to_string())?;
        let origin = std::fs::read(dir.join(ORIGIN_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        Ok(Deployed {
            origin,
            declared,
            overrides,
            slots: Semaphore::new(manifest.concurrency.max_concurrent as usize),
            queued: AtomicUsize::new(0),
            agent,
            manifest,
        })
    }

    pub(super) fn read_agents(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Deployed>>> {
        self.agents.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write_agents(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Deployed>>> {
        self.agents.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A deployed agent.
    pub fn agent(&self, name: &str) -> Option<Arc<Deployed>> {
        self.read_agents().get(name).cloned()
    }

    /// Every deployed agent, in name order.
    pub fn list(&self) -> Vec<AgentInfo> {
        self.read_agents()
            .iter()
            .map(|(name, deployed)| self.info(name, deployed))
            .collect()
    }

    /// One agent in detail: what [`Daemon::list`] says, its manifest as
    /// deployed (bindings, fallbacks, tools and scopes, triggers, limits,
    /// budget; vault ids, never a secret) and its suspensions.
    pub(crate) fn show(&self, name: &str) -> Option<AgentDetail> {
        let agents = self.read_agents();
        let deployed = agents.get(name)?;
        let spend = self.services.ledger.standing(name).unwrap_or_else(|error| {
            tracing::warn!(agent = %name, %error, "cannot read the agent's spend");
            Default::default()
        });
        Some(AgentDetail {
            spend,
            info: self.info(name, deployed),
            manifest: deployed.manifest.clone(),
            overrides: deployed
                .overrides
                .iter()
                .filter_map(|o| {
                    let declared = deployed.declared.models.get(&o.binding)?;
                    Some(OverrideView {
                        over: o.clone(),
                        manifest_model: declared.model.clone(),
                        manifest_key: declared.key.clone(),
                    })
                })
                .collect(),
            suspensions: self
                .services
                .suspensions
                .list()
                .into_iter()
                .filter(|s| s.agent == name)
                .collect(),
        })
    }

    pub(super) fn info(&self, name: &str, deployed: &Deployed) -> AgentInfo {
        AgentInfo {
            paused: self.paused(name),
            name: name.to_string(),
            sha256: deployed.agent.sha256().to_string(),
            models: deployed.manifest.models.keys().cloned().collect(),
            tools: deployed.manifest.tools.keys().cloned().collect(),
            triggers: deployed
                .manifest
                .triggers
                .iter()
                .map(|t| match (&t.name, &t.cron) {
                    (Some(name), _) => format!("{}:{name}", t.source),
                    (_, Some(cron)) => format!("{}:{cron}", t.source),
                    _ => t.source.clone(),
                })
                .collect(),
            queued: deployed.queued(),
            origin: deployed.origin.clone(),
        }
    }

    /// Removes an agent; events in flight finish.
    pub fn remove(&self, name: &str, actor: &str) -> Result<(), DaemonError> {
        let _lifecycle = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        if self.agent(name).is_none() {
            return Err(DaemonError::UnknownAgent(name.to_string()));
        }
        // Out of the agents directory's view first (scans skip dot names),
        // so nothing can load it back even if deleting the files fails.
        let dir = self.agents_dir().join(name);
        let retired = self
            .agents_dir()
            .join(format!(".{name}.removed.{}", random_id("")));
        if dir.exists() {
            std::fs::rename(&dir, &retired).map_err(|e| DaemonError::host(dir.display(), e))?;
        }
        let Some(removed) = self.write_agents().remove(name) else {
            return Err(DaemonError::UnknownAgent(name.to_string()));
        };
        removed.slots.close();
        let _ = std::fs::remove_dir_all(&retired);
        // Its operator overrides went with it: a later agent of that name
        // starts from its own manifest.
        if let Err(e) = self.forget_pause(name) {
            tracing::error!(agent = %name, error = %e, "cannot clear a pause");
        }
        if let Err(e) = super::overrides::clear(&self.db, name, None) {
            tracing::error!(agent = %name, error = %e, "cannot clear binding overrides");
        }
        self.audit.append(AuditEvent::Deployment {
            change: "remove".into(),
            agent: name.to_string(),
            sha256: Some(removed.agent.sha256().to_string()),
            tools: vec![],
            models: vec![],
            actor: actor.to_string(),
            source: removed.origin.as_ref().map(|o| o.reference.clone()),
            signer: None,
            reason: None,
        });
        Ok(())
    }
}
