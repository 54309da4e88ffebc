//! The key vault: provider API keys and tool credentials, encrypted at rest
//! with ring.
//!
//! Scheme (version 1):
//! - a 256-bit master key, from `CLAWCAGE_MASTER_KEY` (64 hex digits) or the
//!   state directory's `master.key` (mode 0600, created by `clawcage init`);
//! - per key id, a data key derived with HKDF-SHA256 from the master key
//!   (`info` = "clawcage vault key v1" and the id);
//! - AES-256-GCM with a fresh random 96-bit nonce for every encryption, and
//!   associated data binding the ciphertext to its id and provider, so a
//!   ciphertext copied into another row does not decrypt;
//! - a check row sealed with the master key, so a wrong master key is
//!   reported as such before anything is touched;
//! - revocation deletes the ciphertext (with SQLite's `secure_delete` on);
//! - fingerprints are an HMAC of the secret under a derived key: they tell
//!   keys apart and reveal nothing.
//!
//! Decrypted secrets live in [`Secret`]s, which zeroize on drop; callers
//! fetch a key for each request, so a rotation or revocation takes effect at
//! the very next call, in this process or any other using the same state.

use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::OptionalExtension;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::db::{Database, DbError, now_unix};
use crate::secret::Secret;

/// The environment variable that may hold the master key.
pub(crate) const MASTER_KEY_ENV: &str = "CLAWCAGE_MASTER_KEY";
/// The master key file's name in the state directory.
pub(crate) const MASTER_KEY_FILE: &str = "master.key";
/// Longest key id.
pub(crate) const MAX_KEY_ID_BYTES: usize = 64;
/// Shortest secret the vault stores at all; each provider's own minimum
/// ([`crate::leak::SecretKind::min_bytes`]) is usually higher.
pub(crate) const MIN_SECRET_BYTES: usize = 16;
/// Largest secret the vault stores.
pub(crate) const MAX_SECRET_BYTES: usize = 16 * 1024;
/// How long after a rotation answers are still checked for a key's old
/// value: longer than any event may run.
pub(crate) const PREVIOUS_KEY_GRACE_SECS: i64 = 2 * 3600;

/// Providers (and tool credential kinds) a key may belong to.
pub(crate) const PROVIDERS: &[&str] = &[
    "anthropic",
    "openai",
    "openai-compatible",
    "github",
    "slack",
    "notion",
    "http",
    "webhook",
];

const CHECK_PLAINTEXT: &[u8] = b"clawcage vault check v1";

/// Why a vault operation failed. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No master key was found.
    #[error(
        "no master key: set {MASTER_KEY_ENV} or run `clawcage init` to create {MASTER_KEY_FILE}"
    )]
    NoMasterKey,
    /// The master key is malformed.
    #[error("the master key must be 64 hex digits (256 bits): {0}")]
    BadMasterKey(String),
    /// The master key does not open this vault.
    #[error("the master key does not match this vault; nothing was changed")]
    WrongMasterKey,
    /// The master key file is readable by others.
    #[error("{0} must be readable by its owner only (chmod 600)")]
    MasterKeyExposed(String),
    /// No key has this id.
    #[error("no key {0:?}")]
    UnknownKey(String),
    /// The key was revoked.
    #[error("key {0:?} was revoked")]
    Revoked(String),
    /// A key with this id exists already.
    #[error("key {0:?} exists already; use `key rotate` to change its value")]
    Exists(String),
    /// A revoked key still holds this id.
    #[error("key {0:?} was revoked; `clawcage key delete {0}` frees its id")]
    RevokedExists(String),
    /// Only a revoked key can be deleted.
    #[error("key {0:?} is active: revoke it first (`clawcage key revoke {0}`)")]
    Active(String),
    /// A stored row failed to decrypt: tampered with, or moved.
    #[error("key {0:?} failed to decrypt: the row was tampered with or moved; nothing was changed")]
    Tampered(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for VaultError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(DbError::Sqlite(e))
    }
}

/// The vault's master key. Zeroized on drop, never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .expect("the OS random number generator failed");
        Self(bytes)
    }

    /// Parses 64 hex digits (surrounding white space is ignored).
    pub(crate) fn from_hex(text: &str) -> Result<Self, VaultError> {
        let text = text.trim();
        let decoded = Zeroizing::new(
            hex::decode(text)
                .map_err(|_| VaultError::BadMasterKey("it is not hexadecimal".into()))?,
        );
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::BadMasterKey(format!("it has {} bytes", decoded.len())))?;
        Ok(Self(Zeroizing::new(bytes)))
    }

    /// The key as hex, for writing the key file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_ref()))
    }

    /// Loads the master key: `CLAWCAGE_MASTER_KEY` when set, otherwise the
    /// state directory's key file (which must be mode 0600).
    pub fn load(state_dir: &Path) -> Result<Self, VaultError> {
        if let Some(value) = std::env::var_os(MASTER_KEY_ENV) {
            let value = Zeroizing::new(
                value
                    .into_string()
                    .map_err(|_| VaultError::BadMasterKey("it is not UTF-8".into()))?,
            );
            return Self::from_hex(&value);
        }
        let path = state_dir.join(MASTER_KEY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VaultError::NoMasterKey);
            }
            Err(e) => {
                return Err(VaultError::Invalid(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                return Err(VaultError::MasterKeyExposed(path.display().to_string()));
            }
        }
        Self::from_hex(&text)
    }

    /// Creates the key file in `state_dir` with mode 0600 unless it exists
    /// (or the environment supplies the key). Returns whether it created one.
    pub(crate) fn create_file_if_missing(state_dir: &Path) -> Result<bool, VaultError> {
        let path = state_dir.join(MASTER_KEY_FILE);
        if std::env::var_os(MASTER_KEY_ENV).is_some() || path.exists() {
            return Ok(false);
        }
        let key = Self::generate();
        let mut text = key.to_hex();
        text.push('\n');
        crate::fsutil::write_atomically(&path, text.as_bytes())
            .map_err(|e| VaultError::Invalid(format!("cannot write {}: {e}", path.display())))?;
        Ok(true)
    }

    fn derive(&self, info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
        struct Len32;
        impl hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"clawcage vault v1").extract(self.0.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        prk.expand(info, Len32)
            .and_then(|okm| okm.fill(out.as_mut()))
            .expect("HKDF-SHA256 can always produce 32 bytes");
        out
    }

    fn aead_key(&self, info: &[&[u8]]) -> LessSafeKey {
        let bytes = self.derive(info);
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, bytes.as_ref()).expect("a 32-byte AES-256 key"),
        )
    }
}

/// One key's metadata, as `key list` shows it. Never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key's id.
    pub id: String,
    /// The provider it is for.
    pub provider: String,
    /// A short fingerprint that tells keys apart.
    pub fingerprint: String,
    /// When it was added (Unix seconds).
    pub created_at: i64,
    /// When its value last changed.
    pub rotated_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// The vault: a database and the master key that opens it.
#[derive(Debug)]
pub struct Vault {
    db: std::sync::Arc<Database>,
    master: MasterKey,
    rng: SystemRandom,
}

fn aad(id: &str, provider: &str) -> Vec<u8> {
    let mut aad = b"clawcage:key:v1\0".to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(provider.as_bytes());
    aad
}

/// Checks a key id: 1 to 64 bytes of `[A-Za-z0-9_.-]`.
pub(crate) fn validate_key_id(id: &str) -> Result<(), VaultError> {
    crate::text::validate_name("key id", id, MAX_KEY_ID_BYTES).map_err(VaultError::Invalid)
}

impl Vault {
    /// Opens the vault in `db` with `master`, proving the master key against
    /// the check row (creating it on first use).
    pub fn open(db: std::sync::Arc<Database>, master: MasterKey) -> Result<Self, VaultError> {
        let vault = Self {
            db,
            master,
            rng: SystemRandom::new(),
        };
        let check_key = vault.master.aead_key(&[b"check"]);
        let conn = vault.db.lock();
        let row: Option<(Vec<u8>, Vec<u8>)> = conn
            .query_row(
                "SELECT nonce, ciphertext FROM vault_check WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            Some((nonce, mut ciphertext)) => {
                let nonce = Nonce::try_assume_unique_for_key(&nonce)
                    .map_err(|_| VaultError::WrongMasterKey)?;
                match check_key.open_in_place(nonce, Aad::from(b"check"), &mut ciphertext) {
                    Ok(plain) if plain == CHECK_PLAINTEXT => {}
                    _ => return Err(VaultError::WrongMasterKey),
                }
            }
            None => {
                let (nonce, ciphertext) = vault.seal(&check_key, b"check", CHECK_PLAINTEXT)?;
                conn.execute(
                    "INSERT INTO vault_check (id, nonce, ciphertext, created_at) VALUES (1, ?1, ?2, ?3)",
                    rusqlite::params![nonce, ciphertext, now_unix()],
                )?;
            }
        }
        drop(conn);
        Ok(vault)
    }

    fn seal(
        &self,
        key: &LessSafeKey,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| VaultError::Invalid("the OS random number generator failed".into()))?;
        let mut buffer = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buffer,
        )
        .map_err(|_| VaultError::Invalid("encryption failed".into()))?;
        Ok((nonce.to_vec(), buffer))
    }

    fn fingerprint(&self, secret: &Secret) -> String {
        let key = self.master.derive(&[b"fingerprint"]);
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_ref()),
            secret.expose(),
        );
        hex::encode(&tag.as_ref()[..6])
    }

    /// Checks a secret for its provider: no longer than the vault holds,
    /// and as long and as random as the provider issues them (see
    /// [`crate::leak::check_quality`]).
    fn validate_secret(provider: &str, secret: &Secret) -> Result<(), VaultError> {
        if secret.len() < MIN_SECRET_BYTES || secret.len() > MAX_SECRET_BYTES {
            return Err(VaultError::Invalid(format!(
                "a secret must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"
            )));
        }
        crate::leak::check_quality(crate::leak::SecretKind::of_provider(provider), secret)
            .map_err(VaultError::Invalid)
    }

    /// Adds a key. Fails if the id exists (even revoked: ids are not reused,
    /// so audit records stay unambiguous).
    pub fn add(&self, id: &str, provider: &str, secret: &Secret) -> Result<KeyInfo, VaultError> {
        validate_key_id(id)?;
        if !PROVIDERS.contains(&provider) {
            return Err(VaultError::Invalid(format!(
                "provider {provider:?} is not one of {}",
                PROVIDERS.join(", ")
            )));
        }
        Self::validate_secret(provider, secret)?;
        let key = self.master.aead_key(&[b"key", id.as_bytes()]);
        let (nonce, ciphertext) = self.seal(&key, &aad(id, provider), secret.expose())?;
        let fingerprint = self.fingerprint(secret);
        let now = now_unix();
        let inserted = self.db.lock().execute(
            "INSERT INTO keys (id, provider, fingerprint, nonce, ciphertext, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO NOTHING",
            rusqlite::params![id, provider, fingerprint, nonce, ciphertext, now],
        )?;
        if inserted == 0 {
            return Err(match self.info(id) {
                Ok(existing) if existing.revoked_at.is_some() => {
                    VaultError::RevokedExists(id.to_string())
                }
                _ => VaultError::Exists(id.to_string()),
            });
        }
        Ok(KeyInfo {
            id: id.into(),
            provider: provider.into(),
            fingerprint,
            created_at: now,
            rotated_at: None,
            revoked_at: None,
        })
    }

    /// Replaces a key's value. The next call that fetches it uses the new one.
    pub fn rotate(&self, id: &str, secret: &Secret) -> Result<KeyInfo, VaultError> {
        let info = self.info(id)?;
        Self::validate_secret(&info.provider, secret)?;
        if info.revoked_at.is_some() {
            return Err(VaultError::Revoked(id.into()));
        }
        let key = self.master.aead_key(&[b"key", id.as_bytes()]);
        let (nonce, ciphertext) = self.seal(&key, &aad(id, &info.provider), secret.expose())?;
        let fingerprint = self.fingerprint(secret);
        let now = now_unix();
        let updated = self.db.lock().execute(
            "UPDATE keys SET previous_nonce = nonce, previous_ciphertext = ciphertext,
                 nonce = ?2, ciphertext = ?3, fingerprint = ?4, rotated_at = ?5
             WHERE id = ?1 AND revoked_at IS NULL",
            rusqlite::params![id, nonce, ciphertext, fingerprint, now],
        )?;
        if updated == 0 {
            return Err(VaultError::Revoked(id.into()));
        }
        Ok(KeyInfo {
            fingerprint,
            rotated_at: Some(now),
            ..info
        })
    }

    /// Revokes a key: its ciphertext is deleted (and overwritten on disk);
    /// calls that need it fail from now on.
    pub fn revoke(&self, id: &str) -> Result<KeyInfo, VaultError> {
        let info = self.info(id)?;
        if info.revoked_at.is_some() {
            return Err(VaultError::Revoked(id.into()));
        }
        let now = now_unix();
        let conn = self.db.lock();
        conn.execute(
            "UPDATE keys SET nonce = NULL, ciphertext = NULL, previous_nonce = NULL,
                 previous_ciphertext = NULL, revoked_at = ?2 WHERE id = ?1",
            rusqlite::params![id, now],
        )?;
        // Push the change out of the write-ahead log into the main file, whose
        // freed pages `secure_delete` zeroes.
        let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
        drop(conn);
        Ok(KeyInfo {
            revoked_at: Some(now),
            ..info
        })
    }

    /// Forgets a revoked key, so that its id can be used again. An active
    /// key must be revoked first: deleting is never the way a key stops
    /// working.
    pub fn delete(&self, id: &str) -> Result<KeyInfo, VaultError> {
        let info = self.info(id)?;
        if info.revoked_at.is_none() {
            return Err(VaultError::Active(id.into()));
        }
        self.db.lock().execute(
            "DELETE FROM keys WHERE id = ?1 AND revoked_at IS NOT NULL",
            [id],
        )?;
        Ok(info)
    }

    /// Metadata of one key.
    pub fn info(&self, id: &str) -> Result<KeyInfo, VaultError> {
        self.db
            .read()
            .query_row(
                "SELECT id, provider, fingerprint, created_at, rotated_at, revoked_at FROM keys WHERE id = ?1",
                [id],
                key_info,
            )
            .optional()?
            .ok_or_else(|| VaultError::UnknownKey(id.into()))
    }

    /// Metadata of every key, by id.
    pub fn list(&self) -> Result<Vec<KeyInfo>, VaultError> {
        let conn = self.db.read();
        let mut statement =
            conn.prepare("SELECT id, provider, fingerprint, created_at, rotated_at, revoked_at FROM keys ORDER BY id")?;
        let keys = statement
            .query_map([], key_info)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keys)
    }

    /// Decrypts a key for one use. `provider` must match the key's own: a
    /// key added for one provider is never sent to another.
    pub fn secret(&self, id: &str, provider: &str) -> Result<Secret, VaultError> {
        self.secret_and_previous(id, provider)
            .map(|(secret, _)| secret)
    }

    /// The key's value before its last rotation, if it was rotated and not
    /// revoked since. Never sent anywhere.
    #[cfg(test)]
    pub(crate) fn previous_secret(
        &self,
        id: &str,
        provider: &str,
    ) -> Result<Option<Secret>, VaultError> {
        match self.secret_and_previous(id, provider) {
            Ok((_, previous)) => Ok(previous),
            // Revocation wipes the previous value with the current one.
            Err(VaultError::Revoked(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// The key for one use, and its value before its last rotation (a call
    /// still in flight may carry that one, so answers are checked for it
    /// too), in one read.
    pub(crate) fn secret_and_previous(
        &self,
        id: &str,
        provider: &str,
    ) -> Result<(Secret, Option<Secret>), VaultError> {
        // The read connection: a model or tool call never waits for a batch
        // of records being committed.
        let row: Option<(StoredKey, Option<i64>)> = self
            .db
            .read()
            .prepare_cached(
                "SELECT provider, nonce, ciphertext, previous_nonce, previous_ciphertext, rotated_at FROM keys WHERE id = ?1",
            )?
            .query_row([id], |r| {
                Ok((
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
                    r.get::<_, Option<i64>>(5)?,
                ))
            })
            .optional()?;
        let Some((
            (stored_provider, nonce, ciphertext, previous_nonce, previous_ciphertext),
            rotated_at,
        )) = row
        else {
            return Err(VaultError::UnknownKey(id.into()));
        };
        if stored_provider != provider {
            return Err(VaultError::Invalid(format!(
                "key {id:?} belongs to provider {stored_provider:?}, not {provider:?}"
            )));
        }
        let (Some(nonce), Some(ciphertext)) = (nonce, ciphertext) else {
            return Err(VaultError::Revoked(id.into()));
        };
        let current = self.open_sealed(id, provider, &nonce, ciphertext)?;
        // Only calls in flight at the rotation can carry the old value;
        // after the grace it is an unrelated secret, not checked for.
        let in_grace = rotated_at.is_some_and(|at| now_unix() - at <= PREVIOUS_KEY_GRACE_SECS);
        let previous = match (previous_nonce, previous_ciphertext) {
            (Some(nonce), Some(ciphertext)) if in_grace => {
                Some(self.open_sealed(id, provider, &nonce, ciphertext)?)
            }
            _ => None,
        };
        Ok((current, previous))
    }

    fn open_sealed(
        &self,
        id: &str,
        provider: &str,
        nonce: &[u8],
        ciphertext: Vec<u8>,
    ) -> Result<Secret, VaultError> {
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Tampered(id.into()))?;
        let key = self.master.aead_key(&[b"key", id.as_bytes()]);
        let mut buffer = Zeroizing::new(ciphertext);
        let plain = key
            .open_in_place(nonce, Aad::from(aad(id, provider)), buffer.as_mut())
            .map_err(|_| VaultError::Tampered(id.into()))?;
        Ok(Secret::new(plain.to_vec()))
    }
}

/// A key's provider, nonce and ciphertext (`NULL` once revoked), and the
/// nonce and ciphertext of its value before the last rotation.
type StoredKey = (
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

fn key_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyInfo> {
    Ok(KeyInfo {
        id: row.get(0)?,
        provider: row.get(1)?,
        fingerprint: row.get(2)?,
        created_at: row.get(3)?,
        rotated_at: row.get(4)?,
        revoked_at: row.get(5)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const KEY: &str = "sk-ant-api03-THIS-IS-A-TEST-KEY-U8JZpDE0iGXlD6gNCFbaEPFjbD0kH8Oool8DklZDOCj2ISaJiHkTj0rLGlkoMXGjtEkDnNfribAA";

    fn vault_at(dir: &Path, master: &MasterKey) -> Result<Vault, VaultError> {
        let db = Arc::new(Database::create(dir)?);
        Vault::open(db, MasterKey::from_hex(&master.to_hex()).unwrap())
    }

    #[test]
    fn add_fetch_rotate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let vault = vault_at(dir.path(), &master).unwrap();
        let added = vault
            .add("main", "anthropic", &Secret::from(KEY.to_string()))
            .unwrap();
        assert_eq!(added.fingerprint.len(), 12);
        assert_eq!(
            vault.secret("main", "anthropic").unwrap().expose_str(),
            Some(KEY)
        );

        let new_key = "sk-ant-api03-xUdl7dXTPyLsxPFkThf4VucSmEHgaKwVJ7faC9qEwjky40UVsWmflzdE1F8ResqEDusTpkr0cStY4qWB8dWKnHfDNxSIvAA";
        let rotated = vault
            .rotate("main", &Secret::from(new_key.to_string()))
            .unwrap();
        assert_ne!(rotated.fingerprint, added.fingerprint);
        assert_eq!(
            vault.secret("main", "anthropic").unwrap().expose_str(),
            Some(
                "sk-ant-api03-xUdl7dXTPyLsxPFkThf4VucSmEHgaKwVJ7faC9qEwjky40UVsWmflzdE1F8ResqEDusTpkr0cStY4qWB8dWKnHfDNxSIvAA"
            )
        );

        // The value before the rotation is kept, sealed, to check answers
        // against; revocation wipes it with the current one.
        assert_eq!(
            vault
                .previous_secret("main", "anthropic")
                .unwrap()
                .unwrap()
                .expose_str(),
            Some(KEY)
        );
        vault.revoke("main").unwrap();
        assert!(matches!(
            vault.secret("main", "anthropic"),
            Err(VaultError::Revoked(_))
        ));
        assert!(
            vault
                .previous_secret("main", "anthropic")
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            vault.rotate("main", &Secret::from(new_key.to_string())),
            Err(VaultError::Revoked(_))
        ));
        assert!(matches!(
            vault.add("main", "anthropic", &Secret::from(new_key.to_string())),
            Err(VaultError::RevokedExists(_))
        ));
        vault.delete("main").unwrap();
        vault
            .add("main", "anthropic", &Secret::from(new_key.to_string()))
            .unwrap();
        assert!(matches!(vault.delete("main"), Err(VaultError::Active(_))));
        assert!(matches!(
            vault.add("short", "anthropic", &Secret::from("x".repeat(20))),
            Err(VaultError::Invalid(_))
        ));
        // Added again after the revoked key was deleted: active.
        assert!(vault.list().unwrap()[0].revoked_at.is_none());
    }

    #[test]
    fn a_key_is_only_given_out_for_its_own_provider() {
        let dir = tempfile::tempdir().unwrap();
        let vault = vault_at(dir.path(), &MasterKey::generate()).unwrap();
        vault
            .add("main", "anthropic", &Secret::from(KEY.to_string()))
            .unwrap();
        let err = vault.secret("main", "openai").unwrap_err();
        assert!(
            err.to_string()
                .contains("belongs to provider \"anthropic\""),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_master_key_is_refused_and_destroys_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        vault_at(dir.path(), &master)
            .unwrap()
            .add("main", "openai", &Secret::from(KEY.to_string()))
            .unwrap();
        let err = vault_at(dir.path(), &MasterKey::generate()).unwrap_err();
        assert!(matches!(err, VaultError::WrongMasterKey), "{err}");
        assert_eq!(
            vault_at(dir.path(), &master)
                .unwrap()
                .secret("main", "openai")
                .unwrap()
                .expose_str(),
            Some(KEY)
        );
    }

    #[test]
    fn tampered_or_moved_ciphertext_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let vault = vault_at(dir.path(), &master).unwrap();
        vault
            .add(
                "a",
                "openai",
                &Secret::from(
                    "sk-aaaa-PZZ63fFKcZjR4I0b3jRtaWr4Y9OJFLJOqOAf1lLQSAJaiXnk".to_string(),
                ),
            )
            .unwrap();
        vault
            .add(
                "b",
                "openai",
                &Secret::from(
                    "sk-bbbb-U8Is2g8nprvDd53x83rzjZZZZGeoZDMENcKHVmDGAkJiG8Xn".to_string(),
                ),
            )
            .unwrap();
        // Move a's ciphertext into b's row.
        vault
            .db
            .lock()
            .execute_batch("UPDATE keys SET nonce = (SELECT nonce FROM keys WHERE id = 'a'), ciphertext = (SELECT ciphertext FROM keys WHERE id = 'a') WHERE id = 'b'")
            .unwrap();
        assert!(matches!(
            vault.secret("b", "openai"),
            Err(VaultError::Tampered(_))
        ));
        // Flip one bit of a's ciphertext.
        vault.db.lock().execute_batch("UPDATE keys SET ciphertext = CAST(zeroblob(length(ciphertext)) AS BLOB) WHERE id = 'a'").unwrap();
        assert!(matches!(
            vault.secret("a", "openai"),
            Err(VaultError::Tampered(_))
        ));
    }

    #[test]
    fn the_database_never_holds_a_key_in_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let vault = vault_at(dir.path(), &master).unwrap();
        vault
            .add("main", "anthropic", &Secret::from(KEY.to_string()))
            .unwrap();
        vault
            .rotate("main", &Secret::from(format!("{KEY}-rotated")))
            .unwrap();
        vault
            .add(
                "other",
                "openai",
                &Secret::from(
                    "sk-proj-OTHERKEY-987654321BE3NnYJoQ9WmXeHH2fdeeTFJGvVvQe1sKhBN88hX"
                        .to_string(),
                ),
            )
            .unwrap();
        vault.revoke("other").unwrap();
        drop(vault);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            for needle in [KEY.as_bytes(), b"OTHERKEY-987654321", b"THIS-IS-A-TEST-KEY"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} contains a key in plaintext",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn secrets_never_print() {
        let master = MasterKey::generate();
        assert_eq!(format!("{master:?}"), "MasterKey([redacted])");
        let err = VaultError::Tampered("main".into());
        assert!(!err.to_string().contains("sk-"));
    }

    #[test]
    fn master_key_parsing() {
        assert!(matches!(
            MasterKey::from_hex("zz"),
            Err(VaultError::BadMasterKey(_))
        ));
        assert!(matches!(
            MasterKey::from_hex("00ff"),
            Err(VaultError::BadMasterKey(_))
        ));
        let key = MasterKey::generate();
        assert_eq!(
            MasterKey::from_hex(&format!(" {}\n", &*key.to_hex()))
                .unwrap()
                .to_hex(),
            key.to_hex()
        );
    }
}
