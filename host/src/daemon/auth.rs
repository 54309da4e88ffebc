//! API tokens: several named bearer tokens, stored as SHA-256 hashes,
//! compared in constant time, revocable.
//!
//! A token is `cc_` followed by 64 hex digits (256 random bits), so a hash
//! without salt is safe: there is nothing to guess. It is shown once, when
//! created, and never stored.

use std::sync::Arc;

use ring::rand::SecureRandom;

use crate::db::{Database, DbError, now_unix};
use crate::secret::Secret;

/// The prefix of every token, so scanners can recognise a leaked one.
pub const TOKEN_PREFIX: &str = "cc_";

/// A token's public facts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// Active tokens' names and hashes, the state they were read at, and when
/// that state was last confirmed.
type TokenCache = Option<((i64, u64), std::time::Instant, Vec<(String, String)>)>;

/// How long a confirmed cache is trusted without asking SQLite whether
/// another process changed the tokens. Changes made through this store
/// (the daemon's own API) take effect at once; `clawcage token revoke` from
/// another process within this long.
const RECHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// The token store.
#[derive(Debug, Clone)]
pub struct Tokens {
    db: Arc<Database>,
    /// Bumped by every change made through this store.
    generation: Arc<std::sync::atomic::AtomicU64>,
    cache: Arc<std::sync::Mutex<TokenCache>>,
}

fn hash(token: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

impl Tokens {
    /// The tokens in `db`.
    pub fn new(db: Arc<Database>) -> Self {
        Self {
            db,
            generation: Arc::default(),
            cache: Arc::default(),
        }
    }

    fn changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The active tokens, re-read only when they may have changed (here, or
    /// in another process: SQLite's `data_version` moves then).
    fn active(&self) -> Option<Vec<(String, String)>> {
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(((_, cached_generation), confirmed, tokens)) = cache.as_ref()
            && *cached_generation == generation
            && confirmed.elapsed() < RECHECK
        {
            return Some(tokens.clone());
        }
        let conn = self.db.lock();
        let data_version: i64 = conn
            .prepare_cached("PRAGMA data_version")
            .ok()?
            .query_row([], |r| r.get(0))
            .ok()?;
        let version = (data_version, generation);
        if let Some((cached, confirmed, tokens)) = cache.as_mut()
            && *cached == version
        {
            *confirmed = std::time::Instant::now();
            return Some(tokens.clone());
        }
        let mut statement = conn
            .prepare_cached("SELECT name, token_hash FROM api_tokens WHERE revoked_at IS NULL")
            .ok()?;
        let tokens: Vec<(String, String)> = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .ok()?
            .filter_map(Result::ok)
            .collect();
        *cache = Some((version, std::time::Instant::now(), tokens.clone()));
        Some(tokens)
    }

    /// Creates a token named `name` and returns it: the only time it is
    /// visible.
    pub fn create(&self, name: &str) -> Result<Secret, String> {
        crate::inference::validate_name("token name", name, 64)?;
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| "the OS random number generator failed".to_string())?;
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        let inserted = self
            .db
            .lock()
            .execute(
                "INSERT INTO api_tokens (name, token_hash, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                rusqlite::params![name, hash(&token), now_unix()],
            )
            .map_err(|e| e.to_string())?;
        if inserted == 0 {
            return Err(format!(
                "a token named {name:?} exists; revoke it or pick another name"
            ));
        }
        Ok(Secret::from(token))
    }

    /// Revokes a token; requests with it fail from now on.
    pub fn revoke(&self, name: &str) -> Result<(), String> {
        let updated = self
            .db
            .lock()
            .execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                rusqlite::params![name, now_unix()],
            )
            .map_err(|e| e.to_string())?;
        if updated == 0 {
            return Err(format!("no active token named {name:?}"));
        }
        self.changed();
        Ok(())
    }

    /// Every token's public facts.
    pub fn list(&self) -> Result<Vec<TokenInfo>, DbError> {
        let conn = self.db.lock();
        let mut statement =
            conn.prepare("SELECT name, created_at, revoked_at FROM api_tokens ORDER BY name")?;
        let rows = statement
            .query_map([], |r| {
                Ok(TokenInfo {
                    name: r.get(0)?,
                    created_at: r.get(1)?,
                    revoked_at: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The name of the active token `presented` is, if any. Every active
    /// token's hash is compared, in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<String> {
        let presented = hash(presented);
        let rows = self.active()?;
        let mut found = None;
        for (name, stored) in rows {
            if constant_time_eq(stored.as_bytes(), presented.as_bytes()) {
                found = Some(name);
            }
        }
        found
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_until_revoked() {
        let tokens = Tokens::new(Arc::new(Database::in_memory().unwrap()));
        let admin = tokens.create("admin").unwrap();
        let ci = tokens.create("ci").unwrap();
        assert!(tokens.create("ci").is_err());
        let admin = admin.expose_str().unwrap().to_string();
        assert!(admin.starts_with(TOKEN_PREFIX) && admin.len() == 67);
        assert_eq!(tokens.authenticate(&admin).as_deref(), Some("admin"));
        assert_eq!(
            tokens.authenticate(ci.expose_str().unwrap()).as_deref(),
            Some("ci")
        );
        assert_eq!(tokens.authenticate("cc_wrong"), None);
        tokens.revoke("admin").unwrap();
        assert_eq!(tokens.authenticate(&admin), None);
        assert_eq!(tokens.list().unwrap().len(), 2);
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }
}
