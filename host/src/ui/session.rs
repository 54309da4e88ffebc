//! Browser sessions of the dashboard: an API token exchanged for a random
//! session id in an HttpOnly, SameSite=Strict cookie.
//!
//! Only a SHA-256 of each session id is kept, in memory; a session ends on
//! sign-out, after [`IDLE`] without a request, [`ABSOLUTE`] after sign-in,
//! when the daemon restarts, or as soon as the token it was opened with is
//! revoked. Each carries its own CSRF token, which every form that changes
//! state sends back. One token keeps at most [`MAX_SESSIONS_PER_TOKEN`]
//! (signing in again ends its oldest), and at most [`MAX_SESSIONS`] live in
//! all (past that, sign-in is refused, never another token's session
//! ended).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;

use crate::daemon::auth::Scope;

/// A session unused this long ends.
pub(crate) const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, used or not.
pub(crate) const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions at once.
pub(crate) const MAX_SESSIONS: usize = 1_024;
/// Most sessions of one token at once: signing in again past it ends that
/// token's oldest, never another's.
pub(crate) const MAX_SESSIONS_PER_TOKEN: usize = 16;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The token's name: the actor of everything done in the session.
    pub actor: String,
    /// The token's scope: admin, or viewer (reads only).
    pub scope: Scope,
    /// The CSRF token forms carry.
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

impl Session {
    /// Whether this session may change state.
    pub(crate) fn may_change(&self) -> bool {
        matches!(self.scope, Scope::Admin)
    }
}

/// The live sessions.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

fn hash(id: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, id.as_bytes()).as_ref())
}

impl Sessions {
    /// Opens a session; answers its id (for the cookie only).
    pub(crate) fn open(&self, actor: &str, scope: Scope) -> Option<String> {
        let id = random_hex()?;
        let now = Instant::now();
        let session = Session {
            actor: actor.to_string(),
            scope,
            csrf: random_hex()?,
            created: now,
            last_seen: now,
        };
        let mut sessions = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| Self::alive(s, now));
        let oldest_of = |sessions: &HashMap<String, Session>, actor: Option<&str>| {
            sessions
                .iter()
                .filter(|(_, s)| actor.is_none_or(|a| s.actor == a))
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        };
        let own = sessions.values().filter(|s| s.actor == actor).count();
        if own >= MAX_SESSIONS_PER_TOKEN
            && let Some(oldest) = oldest_of(&sessions, Some(actor))
        {
            sessions.remove(&oldest);
        } else if sessions.len() >= MAX_SESSIONS {
            // Full with other tokens' sessions (at most 16 each): refuse
            // rather than end someone else's.
            return None;
        }
        sessions.insert(hash(&id), session);
        Some(id)
    }

    fn alive(session: &Session, now: Instant) -> bool {
        now.duration_since(session.last_seen) < IDLE
            && now.duration_since(session.created) < ABSOLUTE
    }

    /// The live session of cookie value `id`, marked used.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut sessions = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        let key = hash(id);
        let session = sessions.get_mut(&key)?;
        if !Self::alive(session, now) {
            sessions.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Ends the session of cookie value `id`.
    pub(crate) fn close(&self, id: &str) {
        self.by_hash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&hash(id));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_token_signing_in_again_ends_only_its_own_oldest_session() {
        let sessions = Sessions::default();
        let admin = sessions.open("admin", Scope::Admin).unwrap();
        let first = sessions.open("viewer", Scope::Viewer).unwrap();
        for _ in 0..MAX_SESSIONS_PER_TOKEN {
            sessions.open("viewer", Scope::Viewer).unwrap();
        }
        assert!(sessions.get(&first).is_none(), "the viewer's oldest ended");
        assert!(sessions.get(&admin).is_some(), "the admin's session stayed");
        assert!(sessions.get("not a session").is_none());
        sessions.close(&admin);
        assert!(sessions.get(&admin).is_none());
    }
}
