//! API tokens: several named bearer tokens, stored as SHA-256 hashes,
//! compared in constant time, revocable.
//!
//! An admin token opens every route. A publisher token opens only the
//! registry (`/v2/`), and only for the namespaces it was created for: a
//! publisher can push `acme/*` components, never deploy them, read keys or
//! push to another publisher's namespace. A viewer token reads everything
//! an admin reads (`GET` and `HEAD` on `/v1` and `/v2/`) and changes
//! nothing.
//!
//! A token is `cc_` followed by 64 hex digits (256 random bits), so a hash
//! without salt is safe: there is nothing to guess. It is shown once, when
//! created, and never stored.

use std::sync::Arc;

use ring::rand::SecureRandom;

use crate::db::{Database, DbError, now_unix};
use crate::secret::Secret;

/// The prefix of every token, so scanners can recognise a leaked one.
pub(crate) const TOKEN_PREFIX: &str = "cc_";

/// A token's public facts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// `admin`, `publish` or `viewer`.
    pub role: String,
    /// For a publisher token, the namespaces it may publish to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
}

/// Why a token was not created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A name or namespace that is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken.
    #[error("a token named {0:?} exists; revoke it or pick another name")]
    Exists(String),
    /// No active token has that name.
    #[error("no active token named {0:?}")]
    Unknown(String),
    /// The database (or the random number generator) failed.
    #[error("{0}")]
    Storage(String),
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    Admin,
    /// The registry, in these namespaces (`*`: any).
    Publish(Vec<String>),
    /// Every read, no change.
    Viewer,
}

impl Scope {
    /// `admin`, `viewer` or `publish:<namespaces>`, for records and
    /// listings.
    pub fn label(&self) -> String {
        match self {
            Self::Admin => "admin".into(),
            Self::Viewer => "viewer".into(),
            Self::Publish(namespaces) => format!("publish:{}", namespaces.join(",")),
        }
    }

    /// The role stored for it.
    fn role(&self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Viewer => "viewer",
            Self::Publish(_) => "publish",
        }
    }

    /// Whether a token of this scope may write to the registry repository
    /// `repository`.
    pub(crate) fn may_publish(&self, repository: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Viewer => false,
            Self::Publish(namespaces) => {
                let namespace = repository.split('/').next().unwrap_or_default();
                namespaces.iter().any(|n| n == "*" || n == namespace)
            }
        }
    }

    /// Whether a token of this scope may read the registry repository
    /// `repository`.
    pub(crate) fn may_read(&self, repository: &str) -> bool {
        matches!(self, Self::Viewer) || self.may_publish(repository)
    }

    /// Whether `method` on `repository` is allowed: reads need
    /// [`Scope::may_read`], anything else [`Scope::may_publish`].
    pub(crate) fn may_access(&self, repository: &str, method: &axum::http::Method) -> bool {
        if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
            self.may_read(repository)
        } else {
            self.may_publish(repository)
        }
    }

    fn from_row(role: &str, namespaces: Option<String>) -> Self {
        match (role, namespaces) {
            ("viewer", _) => Self::Viewer,
            (_, None) => Self::Admin,
            (_, Some(list)) => Self::Publish(
                list.split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
        }
    }
}

/// Active tokens' names and hashes, the state they were read at, and when
/// that state was last confirmed.
type TokenCache = Option<((i64, u64), std::time::Instant, Arc<[ActiveToken]>)>;

/// An active token's name, hash and scope.
type ActiveToken = (String, String, Scope);

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
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
    fn active(&self) -> Option<Arc<[ActiveToken]>> {
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(((_, cached_generation), confirmed, tokens)) = cache.as_ref()
            && *cached_generation == generation
            && confirmed.elapsed() < RECHECK
        {
            return Some(tokens.clone());
        }
        // The read connection: a token check never waits for a batch of
        // records being committed.
        let conn = self.db.read();
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
            .prepare_cached(
                "SELECT name, token_hash, publish_namespaces, role FROM api_tokens WHERE revoked_at IS NULL",
            )
            .ok()?;
        let tokens: Arc<[ActiveToken]> = statement
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    Scope::from_row(&r.get::<_, String>(3)?, r.get(2)?),
                ))
            })
            .ok()?
            .filter_map(Result::ok)
            .collect();
        *cache = Some((version, std::time::Instant::now(), tokens.clone()));
        Some(tokens)
    }

    /// Creates an admin token named `name` and returns it: the only time it
    /// is visible.
    pub fn create(&self, name: &str) -> Result<Secret, TokenError> {
        self.create_scoped(name, &Scope::Admin)
    }

    /// Creates a token of `scope`; see [`Tokens::create`].
    pub fn create_scoped(&self, name: &str, scope: &Scope) -> Result<Secret, TokenError> {
        crate::text::validate_name("token name", name, 64).map_err(TokenError::Invalid)?;
        let namespaces = match scope {
            Scope::Admin | Scope::Viewer => None,
            Scope::Publish(namespaces) => {
                if namespaces.is_empty() {
                    return Err(TokenError::Invalid(
                        "a publisher token needs at least one namespace".into(),
                    ));
                }
                for namespace in namespaces {
                    let valid = namespace == "*"
                        || (!namespace.contains('/')
                            && crate::registry::validate_repository(namespace).is_ok());
                    if !valid {
                        return Err(TokenError::Invalid(format!(
                            "{namespace:?} is not a namespace (like acme, or * for all)"
                        )));
                    }
                }
                Some(namespaces.join(","))
            }
        };
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| TokenError::Storage("the OS random number generator failed".into()))?;
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        let inserted = self
            .db
            .lock()
            .execute(
                "INSERT INTO api_tokens (name, token_hash, created_at, publish_namespaces, role) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
                rusqlite::params![name, hash(&token), now_unix(), namespaces, scope.role()],
            )
            .map_err(|e| TokenError::Storage(e.to_string()))?;
        if inserted == 0 {
            return Err(TokenError::Exists(name.to_string()));
        }
        self.changed();
        Ok(Secret::from(token))
    }

    /// Revokes a token; requests with it fail from now on.
    pub fn revoke(&self, name: &str) -> Result<(), TokenError> {
        let updated = self
            .db
            .lock()
            .execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                rusqlite::params![name, now_unix()],
            )
            .map_err(|e| TokenError::Storage(e.to_string()))?;
        if updated == 0 {
            return Err(TokenError::Unknown(name.to_string()));
        }
        self.changed();
        Ok(())
    }

    /// Every token's public facts.
    pub fn list(&self) -> Result<Vec<TokenInfo>, DbError> {
        let conn = self.db.lock();
        let mut statement = conn.prepare(
            "SELECT name, created_at, revoked_at, publish_namespaces, role FROM api_tokens ORDER BY name",
        )?;
        let rows = statement
            .query_map([], |r| {
                let scope = Scope::from_row(&r.get::<_, String>(4)?, r.get(3)?);
                Ok(TokenInfo {
                    name: r.get(0)?,
                    created_at: r.get(1)?,
                    revoked_at: r.get(2)?,
                    role: scope.role().to_string(),
                    publish: match scope {
                        Scope::Admin | Scope::Viewer => None,
                        Scope::Publish(namespaces) => Some(namespaces),
                    },
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The name of the active *admin* token `presented` is, if any: the
    /// admin API's check. Publisher tokens are not let in.
    pub fn authenticate(&self, presented: &str) -> Option<String> {
        match self.authenticate_scoped(presented)? {
            (name, Scope::Admin) => Some(name),
            (_, Scope::Publish(_) | Scope::Viewer) => None,
        }
    }

    /// The scope of the active token named `name`, if it is active: a
    /// browser session lives only as long as the token it was opened with.
    pub(crate) fn active_scope(&self, name: &str) -> Option<Scope> {
        self.active()?
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, scope)| scope.clone())
    }

    /// The name and scope of the active token `presented` is, if any.
    /// Every active token's hash is compared, in constant time.
    pub(crate) fn authenticate_scoped(&self, presented: &str) -> Option<(String, Scope)> {
        let presented = hash(presented);
        let rows = self.active()?;
        let mut found = None;
        for (name, stored, scope) in rows.iter() {
            if constant_time_eq(stored.as_bytes(), presented.as_bytes()) {
                found = Some((name.clone(), scope.clone()));
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
        // A publisher token is not an admin token, and publishes only to
        // its namespaces.
        let acme = tokens
            .create_scoped("acme", &Scope::Publish(vec!["acme".into()]))
            .unwrap();
        let acme = acme.expose_str().unwrap();
        assert_eq!(tokens.authenticate(acme), None);
        let (name, scope) = tokens.authenticate_scoped(acme).unwrap();
        assert_eq!(name, "acme");
        assert!(scope.may_publish("acme/triage") && !scope.may_publish("other/triage"));
        assert!(!scope.may_publish("acmex/triage"));
        assert!(Scope::Admin.may_publish("other/triage"));
        for bad in [vec![], vec!["../x".to_string()], vec!["a/b".to_string()]] {
            assert!(tokens.create_scoped("bad", &Scope::Publish(bad)).is_err());
        }
        tokens.revoke("admin").unwrap();
        assert_eq!(tokens.authenticate(&admin), None);
        assert_eq!(tokens.list().unwrap().len(), 3);
        assert_eq!(
            tokens.list().unwrap()[0].publish,
            Some(vec!["acme".to_string()])
        );
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }
}
