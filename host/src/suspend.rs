//! Suspensions: a model binding or tool grant that returned its own
//! credential to the guest is suspended for that agent until an operator
//! resumes it.
//!
//! Why suspend rather than only fail the call: a guest that can make a
//! model or a tool echo text of its choosing learns from each blocked call
//! that its text held a window of the credential. Suspension turns that
//! oracle into one answer per operator action (see [`crate::leak`]).
//!
//! The set is kept in memory and written through to the `suspensions`
//! table, so it survives a restart. The process that holds the state
//! directory's lock (the daemon, or one `clawcage run`) is the only one that
//! changes it, so the memory copy is authoritative while it runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::db::{Database, DbError, now_unix};

/// What was suspended: a model binding or a tool grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// A model binding (`[models.NAME]`).
    Model,
    /// A tool grant (`[tools.NAME]`).
    Tool,
}

impl Capability {
    /// Its name in the table, the API and audit records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Tool => "tool",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "model" => Some(Self::Model),
            "tool" => Some(Self::Tool),
            _ => None,
        }
    }
}

/// One suspension, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suspension {
    /// The agent.
    pub agent: String,
    /// Binding or grant.
    pub capability: Capability,
    /// The binding's or tool's name.
    pub name: String,
    /// Unix seconds.
    pub since: i64,
    /// The event during which the leak was blocked.
    pub event_id: Option<String>,
    /// Which view of the text held the credential.
    pub view: String,
    /// The vault key that came back. Every binding or grant of the agent
    /// that sends it is suspended too (a second binding naming the same key
    /// is no way around the suspension), and resuming may require it to be
    /// rotated first.
    pub key_id: Option<String>,
}

type SuspensionKey = (String, Capability, String);

/// The suspensions of one state directory.
pub struct Suspensions {
    db: Option<Arc<Database>>,
    current: Mutex<BTreeMap<SuspensionKey, Suspension>>,
}

impl std::fmt::Debug for Suspensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suspensions").finish_non_exhaustive()
    }
}

impl Suspensions {
    /// Loads the suspensions stored in `db`.
    pub fn open(db: Arc<Database>) -> Result<Self, DbError> {
        let mut current = BTreeMap::new();
        {
            let conn = db.lock();
            let mut statement = conn.prepare(
                "SELECT agent, kind, name, since, event_id, view, key_id FROM suspensions ORDER BY since",
            )?;
            let rows = statement.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })?;
            for row in rows {
                let (agent, kind, name, since, event_id, view, key_id) = row?;
                let Some(capability) = Capability::parse(&kind) else {
                    continue;
                };
                current.insert(
                    (agent.clone(), capability, name.clone()),
                    Suspension {
                        agent,
                        capability,
                        name,
                        since,
                        event_id,
                        view,
                        key_id,
                    },
                );
            }
        }
        Ok(Self {
            db: Some(db),
            current: Mutex::new(current),
        })
    }

    /// Suspensions kept in memory only (for tests and embedders without a
    /// state directory).
    pub(crate) fn in_memory() -> Self {
        Self {
            db: None,
            current: Mutex::new(BTreeMap::new()),
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, BTreeMap<SuspensionKey, Suspension>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `name`, which sends the vault key `key_id`, is suspended for
    /// `agent`: by its own suspension, or by one of the same key.
    pub fn is_suspended(
        &self,
        agent: &str,
        capability: Capability,
        name: &str,
        key_id: Option<&str>,
    ) -> bool {
        let current = self.current();
        !current.is_empty()
            && current
                .range((agent.to_string(), Capability::Model, String::new())..)
                .take_while(|((a, _, _), _)| a == agent)
                .any(|((_, c, n), s)| {
                    (*c == capability && n == name)
                        || (key_id.is_some() && s.key_id.as_deref() == key_id)
                })
    }

    /// Suspends `name` for `agent`. The memory copy changes even if the
    /// write fails: containment must not depend on the disk.
    pub fn suspend(&self, suspension: Suspension) -> Result<(), DbError> {
        let key = (
            suspension.agent.clone(),
            suspension.capability,
            suspension.name.clone(),
        );
        let stored = suspension.clone();
        self.current().entry(key).or_insert(suspension);
        if let Some(db) = &self.db {
            db.lock().execute(
                "INSERT INTO suspensions (agent, kind, name, since, event_id, view, key_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                rusqlite::params![
                    stored.agent,
                    stored.capability.name(),
                    stored.name,
                    stored.since,
                    stored.event_id,
                    stored.view,
                    stored.key_id
                ],
            )?;
        }
        Ok(())
    }

    /// The suspensions `resume` with these arguments would lift.
    pub(crate) fn matching(
        &self,
        agent: &str,
        only: Option<(Capability, &str)>,
    ) -> Vec<Suspension> {
        self.current()
            .values()
            .filter(|s| {
                s.agent == agent && only.is_none_or(|(c, n)| c == s.capability && n == s.name)
            })
            .cloned()
            .collect()
    }

    /// Resumes `agent`'s suspended bindings and grants: all of them, or only
    /// those of one capability and name. Returns what was resumed.
    pub fn resume(
        &self,
        agent: &str,
        only: Option<(Capability, &str)>,
    ) -> Result<Vec<Suspension>, DbError> {
        let mut current = self.current();
        let chosen: Vec<SuspensionKey> = current
            .keys()
            .filter(|(a, capability, name)| {
                a == agent && only.is_none_or(|(c, n)| c == *capability && n == name)
            })
            .cloned()
            .collect();
        if let Some(db) = &self.db {
            let conn = db.lock();
            for (agent, capability, name) in &chosen {
                conn.execute(
                    "DELETE FROM suspensions WHERE agent = ?1 AND kind = ?2 AND name = ?3",
                    rusqlite::params![agent, capability.name(), name],
                )?;
            }
        }
        Ok(chosen
            .iter()
            .filter_map(|key| current.remove(key))
            .collect())
    }

    /// Every suspension, oldest first.
    pub fn list(&self) -> Vec<Suspension> {
        let mut all: Vec<Suspension> = self.current().values().cloned().collect();
        all.sort_by_key(|s| s.since);
        all
    }
}

/// A suspension starting now.
pub fn now(
    agent: &str,
    capability: Capability,
    name: &str,
    key_id: Option<&str>,
    event_id: Option<&str>,
    view: &str,
) -> Suspension {
    Suspension {
        agent: agent.to_string(),
        capability,
        name: name.to_string(),
        since: now_unix(),
        event_id: event_id.map(str::to_string),
        view: view.to_string(),
        key_id: key_id.map(str::to_string),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn suspensions_survive_a_reopen_and_resume_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(&dir.path().join("s")).unwrap());
        let store = Suspensions::open(db.clone()).unwrap();
        store
            .suspend(now(
                "a",
                Capability::Model,
                "default",
                Some("main"),
                Some("evt"),
                "raw",
            ))
            .unwrap();
        store
            .suspend(now("a", Capability::Tool, "github", None, None, "base64"))
            .unwrap();
        assert!(store.is_suspended("a", Capability::Model, "default", Some("main")));
        assert!(!store.is_suspended("b", Capability::Model, "default", Some("main")));
        // Another binding of the agent that sends the same key.
        assert!(store.is_suspended("a", Capability::Model, "fast", Some("main")));
        assert!(!store.is_suspended("a", Capability::Model, "fast", Some("other")));
        assert!(!store.is_suspended("a", Capability::Model, "fast", None));
        let again = Suspensions::open(db.clone()).unwrap();
        assert_eq!(again.list().len(), 2);
        let resumed = again
            .resume("a", Some((Capability::Tool, "github")))
            .unwrap();
        assert_eq!(resumed.len(), 1);
        assert!(!again.is_suspended("a", Capability::Tool, "github", None));
        assert!(again.is_suspended("a", Capability::Model, "default", None));
        assert_eq!(again.resume("a", None).unwrap().len(), 1);
        assert!(Suspensions::open(db).unwrap().list().is_empty());
    }
}
