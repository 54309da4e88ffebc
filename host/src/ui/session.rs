//! Browser sessions of the dashboard: an API token exchanged for a random
//! session id in an HttpOnly, SameSite=Strict cookie.
//!
//! Only a SHA-256 of each session id is kept, in memory; a session ends on
//! sign-out, after [`IDLE`] without a request, [`ABSOLUTE`] after sign-in,
//! when the daemon restarts, or as soon as the token it was opened with is
//! revoked. Each carries its own CSRF token, which every form that changes
//! state sends back. At most [`MAX_SESSIONS`] live at once: signing in past
//! that ends the oldest.

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
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
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
