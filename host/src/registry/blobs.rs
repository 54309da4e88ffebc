//! Content-addressed blob storage for the registry, with the OCI
//! Distribution upload protocol's sessions underneath it.
//!
//! Layout under the registry's directory (mode 0700):
//! - `blobs/sha256/<hex>`: one file per blob, named by its digest, written
//!   once and never changed;
//! - `uploads/<session>`: an upload in progress;
//! - `links/<repository>/<hex>`: that the repository holds the blob (see
//!   [`BlobStore::link`]).
//!
//! An upload's bytes are hashed as they arrive (the running SHA-256 lives
//! with the session), appended at the exact offset the client claims, and
//! bounded in size. Finishing checks the digest the client names against
//! the one computed while streaming, then renames the file into place, so
//! a blob is either whole and verified or absent: a wrong digest, a
//! truncated upload or a cancelled session leaves nothing behind.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::digest::{Context, SHA256};

/// Largest blob accepted.
pub(crate) const DEFAULT_MAX_BLOB_BYTES: u64 = 64 << 20;
/// Uploads idle longer than this are dropped.
pub(crate) const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Most uploads in progress at once.
pub(crate) const MAX_UPLOADS: usize = 256;
/// Most uploads in progress at once for one token, so one publisher cannot
/// take every slot from the others.
pub(crate) const MAX_UPLOADS_PER_OWNER: usize = 16;

/// A failed blob operation, with the OCI Distribution error code it maps to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// No such blob (`BLOB_UNKNOWN`).
    #[error("blob unknown to registry")]
    Unknown,
    /// No such upload session (`BLOB_UPLOAD_UNKNOWN`).
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    /// The digest is malformed or does not match the content
    /// (`DIGEST_INVALID`).
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    /// A chunk does not start where the upload ends (HTTP 416).
    #[error("the chunk starts at {claimed}, but the upload has {actual} bytes")]
    RangeInvalid {
        /// Where the client said the chunk starts.
        claimed: u64,
        /// How many bytes the upload holds.
        actual: u64,
    },
    /// Larger than allowed (`SIZE_INVALID`).
    #[error("the blob is larger than {0} bytes")]
    TooLarge(u64),
    /// Too many uploads at once (`TOOMANYREQUESTS`).
    #[error("too many uploads in progress")]
    TooManyUploads,
    /// A bad repository name (`NAME_INVALID`).
    #[error("{0}")]
    NameInvalid(String),
    /// The disk failed.
    #[error("storage: {0}")]
    Io(String),
}

impl BlobError {
    /// The OCI Distribution error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unknown => "BLOB_UNKNOWN",
            Self::UploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid(_) => "DIGEST_INVALID",
            Self::RangeInvalid { .. } => "BLOB_UPLOAD_INVALID",
            Self::TooLarge(_) => "SIZE_INVALID",
            Self::TooManyUploads => "TOOMANYREQUESTS",
            Self::NameInvalid(_) => "NAME_INVALID",
            Self::Io(_) => "UNKNOWN",
        }
    }
}

fn io(e: std::io::Error) -> BlobError {
    BlobError::Io(e.to_string())
}

/// A parsed `sha256:<64 lower-case hex>` digest. Other algorithms are
/// refused: sha256 is what every client sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

impl Digest {
    /// Parses a digest.
    pub fn parse(text: &str) -> Result<Self, BlobError> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| BlobError::DigestInvalid(format!("{text:?} is not sha256:<hex>")))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(BlobError::DigestInvalid(format!(
                "{text:?} is not sha256 followed by 64 lower-case hex digits"
            )));
        }
        Ok(Self(hex.to_string()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(ring::digest::digest(&SHA256, bytes).as_ref()))
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// An upload in progress.
struct Upload {
    file: File,
    hasher: Context,
    size: u64,
    touched: Instant,
    /// Finished or discarded: a chunk that was waiting for the lock must
    /// not write into a file that is now a stored blob, or gone.
    closed: bool,
}

/// A session: who started it, and its upload.
struct Session {
    /// A token's name. Only its owner may use a session.
    owner: String,
    upload: Arc<Mutex<Upload>>,
}

/// The blob store.
pub struct BlobStore {
    root: PathBuf,
    max_blob_bytes: u64,
    /// Sessions. The map's lock is held only to find or change an entry;
    /// writing and hashing a chunk holds that upload's own lock, so one slow
    /// upload does not stall the others.
    uploads: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl BlobStore {
    /// A store under `root` (created 0700), dropping uploads left by an
    /// earlier process.
    pub fn open(root: &Path, max_blob_bytes: u64) -> Result<Self, BlobError> {
        for dir in ["blobs/sha256", "uploads", "links"] {
            crate::fsutil::create_private_dir(&root.join(dir)).map_err(io)?;
        }
        if let Ok(entries) = fs::read_dir(root.join("uploads")) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            max_blob_bytes,
            uploads: Mutex::new(HashMap::new()),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn upload_path(&self, session: &str) -> PathBuf {
        self.root.join("uploads").join(session)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `owner`'s session; another token's is as unknown as a made-up one.
    fn session(&self, session: &str, owner: &str) -> Result<Arc<Mutex<Upload>>, BlobError> {
        self.lock()
            .get(session)
            .filter(|s| s.owner == owner)
            .map(|s| s.upload.clone())
            .ok_or(BlobError::UploadUnknown)
    }

    /// Ends a session: closes its upload and removes its file.
    fn discard(&self, session: &str) {
        let removed = self.lock().remove(session);
        if let Some(removed) = removed {
            removed
                .upload
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .closed = true;
        }
        let _ = fs::remove_file(self.upload_path(session));
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64, BlobError> {
        fs::metadata(self.blob_path(digest))
            .map(|m| m.len())
            .map_err(|_| BlobError::Unknown)
    }

    fn link_path(&self, repository: &str, digest: &Digest) -> Result<PathBuf, BlobError> {
        super::validate_repository(repository).map_err(BlobError::NameInvalid)?;
        Ok(self
            .root
            .join("links")
            .join(repository.replace('/', "+"))
            .join(digest.hex()))
    }

    /// Records that `repository` holds the blob `digest`. Blobs are stored
    /// once, whoever pushes them; a repository sees (and its manifests may
    /// name) only the blobs pushed to it, so a publisher can neither read
    /// another namespace's blobs nor learn that they exist.
    pub fn link(&self, repository: &str, digest: &Digest) -> Result<(), BlobError> {
        let path = self.link_path(repository, digest)?;
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dir(dir).map_err(io)?;
        }
        crate::fsutil::write_atomically(&path, b"").map_err(io)
    }

    /// Whether `repository` holds the blob `digest` (and the store has it).
    pub(crate) fn is_linked(&self, repository: &str, digest: &Digest) -> bool {
        self.link_path(repository, digest)
            .is_ok_and(|path| path.is_file())
            && self.blob_path(digest).is_file()
    }

    /// A stored blob, opened for reading, and its size.
    pub(crate) fn open_blob(&self, digest: &Digest) -> Result<(File, u64), BlobError> {
        let file = File::open(self.blob_path(digest)).map_err(|_| BlobError::Unknown)?;
        let size = file.metadata().map_err(io)?.len();
        Ok((file, size))
    }

    /// A stored blob's bytes.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        fs::read(self.blob_path(digest)).map_err(|_| BlobError::Unknown)
    }

    /// Stores `bytes` whole (a monolithic upload for `owner`), checking
    /// `digest`.
    pub fn put(&self, owner: &str, digest: &Digest, bytes: &[u8]) -> Result<(), BlobError> {
        let session = self.start(owner)?;
        self.append(&session, owner, None, bytes)?;
        self.finish(&session, owner, digest)
    }

    /// Starts an upload for `owner` (a token's name); returns its session
    /// id.
    pub fn start(&self, owner: &str) -> Result<String, BlobError> {
        let mut uploads = self.lock();
        uploads.retain(|session, entry| {
            // An upload busy writing is not idle.
            let idle = |u: &Upload| u.touched.elapsed() >= UPLOAD_IDLE_TIMEOUT;
            let expired = match entry.upload.try_lock() {
                Ok(upload) => idle(&upload),
                Err(std::sync::TryLockError::WouldBlock) => false,
                Err(std::sync::TryLockError::Poisoned(upload)) => idle(&upload.into_inner()),
            };
            if expired {
                let _ = fs::remove_file(self.root.join("uploads").join(session));
            }
            !expired
        });
        let owned = uploads.values().filter(|s| s.owner == owner).count();
        if uploads.len() >= MAX_UPLOADS || owned >= MAX_UPLOADS_PER_OWNER {
            return Err(BlobError::TooManyUploads);
        }
        let mut bytes = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| BlobError::Io("the OS random number generator failed".into()))?;
        let session = hex::encode(bytes);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(self.upload_path(&session)).map_err(io)?;
        uploads.insert(
            session.clone(),
            Session {
                owner: owner.to_string(),
                upload: Arc::new(Mutex::new(Upload {
                    file,
                    hasher: Context::new(&SHA256),
                    size: 0,
                    touched: Instant::now(),
                    closed: false,
                })),
            },
        );
        Ok(session)
    }

    /// How many bytes an upload holds.
    pub(crate) fn upload_size(&self, session: &str, owner: &str) -> Result<u64, BlobError> {
        let upload = self.session(session, owner)?;
        let size = upload.lock().unwrap_or_else(|e| e.into_inner()).size;
        Ok(size)
    }

    /// Appends a chunk. `offset`, when the client sends one
    /// (`Content-Range`), must be where the upload ends. Returns the new
    /// size. A chunk that would pass the size limit cancels the upload.
    pub fn append(
        &self,
        session: &str,
        owner: &str,
        offset: Option<u64>,
        bytes: &[u8],
    ) -> Result<u64, BlobError> {
        let upload = self.session(session, owner)?;
        let mut upload = upload.lock().unwrap_or_else(|e| e.into_inner());
        if upload.closed {
            return Err(BlobError::UploadUnknown);
        }
        if let Some(claimed) = offset
            && claimed != upload.size
        {
            return Err(BlobError::RangeInvalid {
                claimed,
                actual: upload.size,
            });
        }
        let size = upload.size + bytes.len() as u64;
        if size > self.max_blob_bytes {
            drop(upload);
            self.discard(session);
            return Err(BlobError::TooLarge(self.max_blob_bytes));
        }
        // A failed write leaves the file's bytes unknown: the upload is over.
        if let Err(e) = upload.file.write_all(bytes) {
            drop(upload);
            self.discard(session);
            return Err(io(e));
        }
        upload.hasher.update(bytes);
        upload.size = size;
        upload.touched = Instant::now();
        Ok(size)
    }

    /// Finishes an upload: the digest computed while streaming must be
    /// `digest`; then the file is synced and renamed into place. On any
    /// failure the upload is gone and no blob appears.
    pub fn finish(&self, session: &str, owner: &str, digest: &Digest) -> Result<(), BlobError> {
        let upload = {
            let mut sessions = self.lock();
            if sessions.get(session).is_none_or(|s| s.owner != owner) {
                return Err(BlobError::UploadUnknown);
            }
            sessions
                .remove(session)
                .map(|s| s.upload)
                .ok_or(BlobError::UploadUnknown)?
        };
        let path = self.upload_path(session);
        // A chunk still being written finishes first; one still waiting
        // finds the upload closed.
        let mut upload = upload.lock().unwrap_or_else(|e| e.into_inner());
        if upload.closed {
            return Err(BlobError::UploadUnknown);
        }
        upload.closed = true;
        let hasher = std::mem::replace(&mut upload.hasher, Context::new(&SHA256));
        let computed = hex::encode(hasher.finish().as_ref());
        if computed != digest.hex() {
            let _ = fs::remove_file(&path);
            return Err(BlobError::DigestInvalid(format!(
                "the content is sha256:{computed}, not {digest}"
            )));
        }
        let on_disk = upload.file.sync_all().and_then(|()| upload.file.metadata());
        if on_disk.as_ref().map(|m| m.len()).ok() != Some(upload.size) {
            let _ = fs::remove_file(&path);
            return Err(BlobError::Io(
                "the upload's file is not the bytes received".into(),
            ));
        }
        // A blob that is already stored, intact, is kept; one that does not
        // match its digest any more is replaced by the verified upload.
        let target = self.blob_path(digest);
        if fs::read(&target).is_ok_and(|stored| Digest::of(&stored) == *digest) {
            let _ = fs::remove_file(&path);
            return Ok(());
        }
        if let Err(e) = fs::rename(&path, &target) {
            let _ = fs::remove_file(&path);
            return Err(io(e));
        }
        Ok(())
    }

    /// Cancels an upload.
    pub(crate) fn cancel(&self, session: &str, owner: &str) -> Result<(), BlobError> {
        self.session(session, owner)?;
        self.discard(session);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store(max: u64) -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("registry"), max).unwrap();
        (dir, store)
    }

    fn uploads_left(store: &BlobStore) -> usize {
        fs::read_dir(store.root.join("uploads")).unwrap().count()
    }

    #[test]
    fn chunked_uploads_are_verified_while_streaming() {
        let (_dir, store) = store(1 << 20);
        let content = b"\0asm component bytes".repeat(100);
        let digest = Digest::of(&content);
        let session = store.start("publisher").unwrap();
        let (first, rest) = content.split_at(700);
        assert_eq!(
            store.append(&session, "publisher", Some(0), first).unwrap(),
            700
        );
        assert_eq!(
            store
                .append(&session, "publisher", Some(5), rest)
                .unwrap_err(),
            BlobError::RangeInvalid {
                claimed: 5,
                actual: 700
            }
        );
        store
            .append(&session, "publisher", Some(700), rest)
            .unwrap();
        assert_eq!(
            store.upload_size(&session, "publisher").unwrap(),
            content.len() as u64
        );
        store.finish(&session, "publisher", &digest).unwrap();
        assert_eq!(store.read(&digest).unwrap(), content);
        assert_eq!(store.size(&digest).unwrap(), content.len() as u64);
        assert_eq!(uploads_left(&store), 0);
        // The session is gone once finished.
        assert_eq!(
            store.finish(&session, "publisher", &digest).unwrap_err(),
            BlobError::UploadUnknown
        );
    }

    #[test]
    fn bad_uploads_leave_nothing_behind() {
        let (_dir, store) = store(1024);
        // Wrong digest.
        let session = store.start("publisher").unwrap();
        store.append(&session, "publisher", None, b"hello").unwrap();
        let claimed = Digest::of(b"hellO");
        let err = store.finish(&session, "publisher", &claimed).unwrap_err();
        assert_eq!(err.code(), "DIGEST_INVALID");
        assert_eq!(store.size(&claimed).unwrap_err(), BlobError::Unknown);
        // Truncated: the digest of the whole, only part sent.
        let whole = Digest::of(b"hello world");
        let session = store.start("publisher").unwrap();
        store.append(&session, "publisher", None, b"hello").unwrap();
        assert!(store.finish(&session, "publisher", &whole).is_err());
        // Too large.
        let session = store.start("publisher").unwrap();
        assert_eq!(
            store
                .append(&session, "publisher", None, &[0; 2048])
                .unwrap_err()
                .code(),
            "SIZE_INVALID"
        );
        assert_eq!(
            store.upload_size(&session, "publisher").unwrap_err(),
            BlobError::UploadUnknown
        );
        // Cancelled, and unknown sessions.
        let session = store.start("publisher").unwrap();
        store.cancel(&session, "publisher").unwrap();
        assert_eq!(
            store
                .append("nope", "publisher", None, b"x")
                .unwrap_err()
                .code(),
            "BLOB_UPLOAD_UNKNOWN"
        );
        assert_eq!(uploads_left(&store), 0);
        assert_eq!(
            fs::read_dir(store.root.join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn sessions_are_their_owners_and_closed_once_finished() {
        let (_dir, store) = store(1 << 20);
        let session = store.start("acme").unwrap();
        store.append(&session, "acme", None, b"mine").unwrap();
        for refused in [
            store.append(&session, "other", None, b"x").unwrap_err(),
            store
                .finish(&session, "other", &Digest::of(b"mine"))
                .unwrap_err(),
            store.cancel(&session, "other").unwrap_err(),
        ] {
            assert_eq!(refused, BlobError::UploadUnknown);
        }
        store
            .finish(&session, "acme", &Digest::of(b"mine"))
            .unwrap();
        // Finished: nothing more can be written to it, the stored blob
        // is untouched.
        assert_eq!(
            store.append(&session, "acme", None, b"late").unwrap_err(),
            BlobError::UploadUnknown
        );
        assert_eq!(store.read(&Digest::of(b"mine")).unwrap(), b"mine");
    }

    #[test]
    fn one_owner_cannot_take_every_upload_slot() {
        let (_dir, store) = store(1 << 20);
        for _ in 0..MAX_UPLOADS_PER_OWNER {
            store.start("greedy").unwrap();
        }
        assert_eq!(
            store.start("greedy").unwrap_err(),
            BlobError::TooManyUploads
        );
        let other = store.start("publisher").unwrap();
        store.cancel(&other, "publisher").unwrap();
    }

    #[test]
    fn a_blob_altered_on_disk_is_healed_by_the_next_upload_and_an_intact_one_kept() {
        let (_dir, store) = store(1 << 20);
        let content = b"a component's bytes".to_vec();
        let digest = Digest::of(&content);
        store.put("publisher", &digest, &content).unwrap();
        let path = store.blob_path(&digest);
        let stored = fs::metadata(&path).unwrap().modified().unwrap();
        // Intact: an upload of the same bytes leaves the stored file alone.
        store.put("publisher", &digest, &content).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), stored);
        // Altered: the verified upload replaces it.
        fs::write(&path, b"tampered").unwrap();
        store.put("publisher", &digest, &content).unwrap();
        assert_eq!(store.read(&digest).unwrap(), content);
        assert_eq!(uploads_left(&store), 0);
    }

    #[test]
    fn digests_are_parsed_strictly() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().to_string(), good);
        for bad in [
            "sha512:abc".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:../../{}", "a".repeat(58)),
            "sha256:".to_string(),
        ] {
            assert_eq!(
                Digest::parse(&bad).unwrap_err().code(),
                "DIGEST_INVALID",
                "{bad}"
            );
        }
    }
}
