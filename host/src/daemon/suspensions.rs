//! Bindings and grants suspended after a blocked leak, and their resumption.

use super::{Daemon, DaemonError};
use crate::audit::AuditEvent;
use crate::suspend::{Capability, Suspension};

impl Daemon {
    /// Every binding and grant suspended after a blocked leak.
    pub fn suspensions(&self) -> Vec<Suspension> {
        self.services.suspensions.list()
    }

    /// Resumes `agent`'s suspended bindings and grants (all, or the one
    /// named), each an audit record. Returns what was resumed.
    ///
    /// A key that came back in an answer must have been rotated (or
    /// revoked) since, unless `force`: whoever made it come back learned
    /// something of it, and a guest guessing at it would otherwise get
    /// another answer with its knowledge intact.
    pub fn resume(
        &self,
        agent: &str,
        only: Option<(Capability, &str)>,
        force: bool,
        actor: &str,
    ) -> Result<Vec<Suspension>, DaemonError> {
        if !force {
            for suspension in self.services.suspensions.matching(agent, only) {
                let Some(key_id) = &suspension.key_id else {
                    continue;
                };
                let changed = match self.services.vault.info(key_id) {
                    Ok(info) => {
                        info.revoked_at.is_some()
                            || info.rotated_at.is_some_and(|at| at >= suspension.since)
                    }
                    // A key that is gone cannot be sent again.
                    Err(crate::vault::VaultError::UnknownKey(_)) => true,
                    Err(e) => return Err(DaemonError::host("the suspension store", e)),
                };
                if !changed {
                    return Err(DaemonError::NotRotated(format!(
                        "key {key_id:?} came back in an answer to {} {:?} and has not been rotated since; rotate it (`clawcage key rotate {key_id}`), or resume with --force",
                        suspension.capability.name(),
                        suspension.name
                    )));
                }
            }
        }
        let resumed = self
            .services
            .suspensions
            .resume(agent, only)
            .map_err(|e| DaemonError::host("the suspension store", e))?;
        for suspension in &resumed {
            self.audit.append(AuditEvent::Resumed {
                agent: suspension.agent.clone(),
                capability: suspension.capability.name().to_string(),
                name: suspension.name.clone(),
                actor: actor.to_string(),
            });
        }
        Ok(resumed)
    }
}
