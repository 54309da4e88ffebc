//! Paused agents: an operator stops an agent taking events — from the API,
//! a webhook or its schedule — without removing it, and resumes it later.
//!
//! The set is kept in memory (checked on every event without touching the
//! database) and written through to the `paused_agents` table, so a pause
//! survives a restart. Only the admin API and the dashboard change it;
//! nothing an agent can call reaches it. Every pause and resume is an audit
//! record.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Daemon, DaemonError};
use crate::audit::AuditEvent;
use crate::db::{Database, DbError, now_unix};

/// Why an agent is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    /// Who paused it (a token's name).
    pub by: String,
    /// When, in Unix seconds.
    pub since: i64,
}

/// Reads every pause.
pub(super) fn load(db: &Database) -> Result<BTreeMap<String, Pause>, DbError> {
    let conn = db.lock();
    let mut statement = conn.prepare("SELECT agent, paused_by, paused_at FROM paused_agents")?;
    let rows = statement
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Pause {
                    by: r.get(1)?,
                    since: r.get(2)?,
                },
            ))
        })?
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    Ok(rows)
}

impl Daemon {
    fn pauses(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Pause>> {
        self.paused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `agent` is paused, and by whom.
    pub fn paused(&self, agent: &str) -> Option<Pause> {
        self.pauses().get(agent).cloned()
    }

    /// Refuses an event for a paused agent.
    pub(super) fn check_not_paused(&self, agent: &str) -> Result<(), DaemonError> {
        match self.pauses().get(agent) {
            Some(pause) => Err(DaemonError::Paused {
                agent: agent.to_string(),
                by: pause.by.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Pauses `agent`: its next events are refused until it is resumed.
    /// Events already running finish. Pausing a paused agent changes
    /// nothing (and is not recorded again).
    pub fn pause(&self, agent: &str, actor: &str) -> Result<Pause, DaemonError> {
        let _lifecycle = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        if self.agent(agent).is_none() {
            return Err(DaemonError::UnknownAgent(agent.to_string()));
        }
        if let Some(pause) = self.paused(agent) {
            return Ok(pause);
        }
        let pause = Pause {
            by: actor.to_string(),
            since: now_unix(),
        };
        self.db
            .lock()
            .execute(
                "INSERT OR REPLACE INTO paused_agents (agent, paused_by, paused_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![agent, pause.by, pause.since],
            )
            .map_err(|e| DaemonError::host("paused agents", e))?;
        self.pauses().insert(agent.to_string(), pause.clone());
        self.audit.append(AuditEvent::Pause {
            agent: agent.to_string(),
            change: "pause".into(),
            actor: actor.to_string(),
        });
        tracing::info!(%agent, %actor, "agent paused");
        Ok(pause)
    }

    /// Resumes a paused agent: it takes events again. Answers whether it
    /// was paused.
    pub fn unpause(&self, agent: &str, actor: &str) -> Result<bool, DaemonError> {
        let _lifecycle = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        if self.agent(agent).is_none() {
            return Err(DaemonError::UnknownAgent(agent.to_string()));
        }
        if self.paused(agent).is_none() {
            return Ok(false);
        }
        self.forget_pause(agent)?;
        self.audit.append(AuditEvent::Pause {
            agent: agent.to_string(),
            change: "resume".into(),
            actor: actor.to_string(),
        });
        tracing::info!(%agent, %actor, "agent resumed");
        Ok(true)
    }

    /// Drops `agent`'s pause, in the table first (a pause that could not be
    /// deleted stays in effect).
    pub(super) fn forget_pause(&self, agent: &str) -> Result<(), DaemonError> {
        self.db
            .lock()
            .execute("DELETE FROM paused_agents WHERE agent = ?1", [agent])
            .map_err(|e| DaemonError::host("paused agents", e))?;
        self.pauses().remove(agent);
        Ok(())
    }
}
