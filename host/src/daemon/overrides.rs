//! Operator overrides of model bindings: the model and the key an
//! operator assigns to one binding of a deployed agent, over what its
//! manifest says (the product's "assign a model and a key to each agent").
//!
//! An override is kept in the daemon's database, applied whenever the
//! agent is loaded (at start and at every deployment), and takes effect
//! for the agent's next call: setting one reloads the agent from its
//! deployed files, and refuses the override if the agent would not load
//! with it (an unknown key, a key of another provider). Only the admin API
//! writes overrides; nothing a guest can reach does. Each change is an
//! audit record.

use serde::Serialize;

use crate::db::{Database, DbError, now_unix};
use crate::manifest::Manifest;

/// One binding's override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindingOverride {
    /// The binding's name.
    pub binding: String,
    /// The model assigned, if the operator changed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The vault key assigned, if the operator changed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Who set it (a token name).
    pub set_by: String,
    /// When, in Unix seconds.
    pub set_at: i64,
}

/// An agent's overrides, by binding name.
pub(crate) fn read(db: &Database, agent: &str) -> Result<Vec<BindingOverride>, DbError> {
    let conn = db.read();
    let mut statement = conn.prepare_cached(
        "SELECT binding, model, key, set_by, set_at FROM binding_overrides WHERE agent = ?1 ORDER BY binding",
    )?;
    let rows = statement
        .query_map([agent], |r| {
            Ok(BindingOverride {
                binding: r.get(0)?,
                model: r.get(1)?,
                key: r.get(2)?,
                set_by: r.get(3)?,
                set_at: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Stores an override (replacing the binding's previous one).
pub(crate) fn write(
    db: &Database,
    agent: &str,
    binding: &str,
    model: Option<&str>,
    key: Option<&str>,
    actor: &str,
) -> Result<(), DbError> {
    db.lock().execute(
        "INSERT INTO binding_overrides (agent, binding, model, key, set_by, set_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (agent, binding) DO UPDATE SET model = ?3, key = ?4, set_by = ?5, set_at = ?6",
        rusqlite::params![agent, binding, model, key, actor, now_unix()],
    )?;
    Ok(())
}

/// Removes a binding's override; answers whether there was one.
pub(crate) fn clear(db: &Database, agent: &str, binding: Option<&str>) -> Result<bool, DbError> {
    let removed = db.lock().execute(
        "DELETE FROM binding_overrides WHERE agent = ?1 AND (?2 IS NULL OR binding = ?2)",
        rusqlite::params![agent, binding],
    )?;
    Ok(removed > 0)
}

/// `manifest` with `overrides` applied. An override of a binding the
/// manifest no longer has (a redeployment dropped it) is skipped.
pub(crate) fn apply(mut manifest: Manifest, overrides: &[BindingOverride]) -> Manifest {
    for o in overrides {
        if let Some(binding) = manifest.models.get_mut(&o.binding) {
            if let Some(model) = &o.model {
                binding.model = model.clone();
            }
            if let Some(key) = &o.key {
                binding.key = Some(key.clone());
            }
        }
    }
    manifest
}

/// A model id or key id an operator may assign: printable, bounded.
pub(crate) fn check_value(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {:?} is not a valid id (1 to 128 letters, digits or - . _ : / @)",
            crate::text::truncate_at_char_boundary(value, 64)
        ))
    }
}

impl super::Daemon {
    /// Assigns `model` and/or `key` to `agent`'s model binding `binding`,
    /// over its manifest, for its next call. Refused, and nothing kept, if
    /// the agent would not load with it.
    pub fn set_binding(
        &self,
        agent: &str,
        binding: &str,
        model: Option<&str>,
        key: Option<&str>,
        actor: &str,
    ) -> Result<super::AgentDetail, super::DaemonError> {
        use super::DaemonError;
        if model.is_none() && key.is_none() {
            return Err(DaemonError::Invalid(
                "give a model, a key, or both; to go back to the manifest's, clear the override"
                    .into(),
            ));
        }
        for (what, value) in [("model", model), ("key", key)] {
            if let Some(value) = value {
                check_value(what, value).map_err(DaemonError::Invalid)?;
            }
        }
        let _lifecycle = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        let deployed = self
            .agent(agent)
            .ok_or_else(|| DaemonError::UnknownAgent(agent.to_string()))?;
        if !deployed.declared.models.contains_key(binding) {
            return Err(DaemonError::NotFound(format!(
                "agent {agent:?} has no model binding {binding:?}"
            )));
        }
        let previous = read(&self.db, agent)
            .map_err(|e| DaemonError::host("binding overrides", e))?
            .into_iter()
            .find(|o| o.binding == binding);
        write(&self.db, agent, binding, model, key, actor)
            .map_err(|e| DaemonError::host("binding overrides", e))?;
        if let Err(e) = self.reload(agent) {
            // Back to what was in effect.
            let restored = match &previous {
                Some(p) => write(
                    &self.db,
                    agent,
                    binding,
                    p.model.as_deref(),
                    p.key.as_deref(),
                    &p.set_by,
                ),
                None => clear(&self.db, agent, Some(binding)).map(drop),
            };
            if let Err(restore) = restored {
                tracing::error!(%agent, %binding, error = %restore, "cannot restore a binding override");
            }
            return Err(DaemonError::Invalid(format!(
                "agent {agent:?} does not load with that assignment: {e}"
            )));
        }
        self.audit
            .append(crate::audit::AuditEvent::BindingOverride {
                agent: agent.to_string(),
                binding: binding.to_string(),
                change: "set".into(),
                model: model.map(str::to_string),
                key: key.map(str::to_string),
                actor: actor.to_string(),
            });
        self.show(agent)
            .ok_or_else(|| DaemonError::UnknownAgent(agent.to_string()))
    }

    /// Clears the override of `agent`'s binding `binding`: the manifest's
    /// model and key again, for the next call.
    pub fn clear_binding(
        &self,
        agent: &str,
        binding: &str,
        actor: &str,
    ) -> Result<super::AgentDetail, super::DaemonError> {
        use super::DaemonError;
        let _lifecycle = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        if self.agent(agent).is_none() {
            return Err(DaemonError::UnknownAgent(agent.to_string()));
        }
        let previous = read(&self.db, agent)
            .map_err(|e| DaemonError::host("binding overrides", e))?
            .into_iter()
            .find(|o| o.binding == binding)
            .ok_or_else(|| {
                DaemonError::NotFound(format!(
                    "agent {agent:?} has no override of binding {binding:?}"
                ))
            })?;
        clear(&self.db, agent, Some(binding))
            .map_err(|e| DaemonError::host("binding overrides", e))?;
        if let Err(e) = self.reload(agent) {
            // Keep what runs and what is stored the same.
            if let Err(restore) = write(
                &self.db,
                agent,
                binding,
                previous.model.as_deref(),
                previous.key.as_deref(),
                &previous.set_by,
            ) {
                tracing::error!(%agent, %binding, error = %restore, "cannot restore a binding override");
            }
            return Err(DaemonError::Invalid(format!(
                "agent {agent:?} does not load with its manifest's binding {binding:?}: {e}"
            )));
        }
        self.audit
            .append(crate::audit::AuditEvent::BindingOverride {
                agent: agent.to_string(),
                binding: binding.to_string(),
                change: "clear".into(),
                model: None,
                key: None,
                actor: actor.to_string(),
            });
        self.show(agent)
            .ok_or_else(|| DaemonError::UnknownAgent(agent.to_string()))
    }

    /// Loads `agent` again from its deployed files (with the overrides in
    /// the database) and swaps it in for the next event. The caller holds
    /// the lifecycle lock.
    fn reload(&self, agent: &str) -> Result<(), String> {
        let deployed = self.load_from(&self.agents_dir().join(agent))?;
        self.write_agents()
            .insert(agent.to_string(), std::sync::Arc::new(deployed));
        Ok(())
    }
}
