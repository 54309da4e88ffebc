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
/// The default quota of one namespace: 2 GiB of blobs.
pub(crate) const DEFAULT_NAMESPACE_QUOTA_BYTES: u64 = 2 << 30;
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
    #[error(
        "too many uploads in progress; finish or cancel one, or retry after the idle ones expire"
    )]
    TooManyUploads,
    /// A digest of an algorithm this registry does not store
    /// (`DIGEST_INVALID`; a read of one is `BLOB_UNKNOWN`).
    #[error("unsupported digest algorithm {0:?}: this registry stores sha256 only")]
    Unsupported(String),
    /// The namespace would pass its disk quota (`DENIED`).
    #[error(
        "namespace {namespace:?} is over its quota: {used} of {quota} bytes used; delete something and collect garbage, or ask the operator for more"
    )]
    QuotaExceeded {
        /// The namespace.
        namespace: String,
        /// Bytes it holds, with this upload.
        used: u64,
        /// Its quota.
        quota: u64,
    },
    /// The blob is what a deployed agent runs (`DENIED`).
    #[error("{0}")]
    InUse(String),
    /// Another request is writing this upload (HTTP 416).
    #[error("another request is writing this upload; send the next chunk when it is done")]
    UploadBusy,
    /// The request body broke off (`BLOB_UPLOAD_INVALID`); the upload is
    /// over.
    #[error("the body broke off: {0}; start the upload again")]
    BodyBroken(String),
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
            Self::DigestInvalid(_) | Self::Unsupported(_) => "DIGEST_INVALID",
            Self::QuotaExceeded { .. } | Self::InUse(_) => "DENIED",
            Self::RangeInvalid { .. } | Self::UploadBusy | Self::BodyBroken(_) => {
                "BLOB_UPLOAD_INVALID"
            }
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
    /// Parses a digest: `sha256:` and 64 lower-case hex digits. A
    /// well-formed digest of another algorithm (`sha512:…`) is
    /// [`BlobError::Unsupported`]; anything else is
    /// [`BlobError::DigestInvalid`].
    pub fn parse(text: &str) -> Result<Self, BlobError> {
        let Some(hex) = text.strip_prefix("sha256:") else {
            // The spec's grammar: algorithm ":" encoded.
            let algorithm = text.split_once(':').map(|(a, _)| a).filter(|a| {
                !a.is_empty()
                    && a.len() <= 32
                    && a.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b)
                    })
            });
            return Err(match algorithm {
                Some(algorithm) => BlobError::Unsupported(algorithm.to_string()),
                None => BlobError::DigestInvalid(format!(
                    "{:?} is not a digest (sha256:<64 hex digits>)",
                    crate::text::truncate_at_char_boundary(text, 100)
                )),
            });
        };
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(BlobError::DigestInvalid(format!(
                "{:?} is not sha256 followed by 64 lower-case hex digits",
                crate::text::truncate_at_char_boundary(text, 100)
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

/// A session: who started it, where, and its upload.
struct Session {
    /// A token's name. Only its owner may use a session.
    owner: String,
    /// The repository it was started in: used anywhere else, it is
    /// unknown (and its bytes count against this repository's namespace).
    repository: String,
    upload: Arc<Mutex<Upload>>,
}

/// Where a chunk sits in its blob, from `Content-Range`: its first byte
/// and, when given, its last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// The offset of the chunk's first byte.
    pub start: u64,
    /// The offset of its last byte, if the client said.
    pub end: Option<u64>,
}

/// The pieces of a request body, read as the store asks for them: `None`
/// at the end, an error if the client went away.
pub(crate) type Chunks<'c> = &'c mut dyn FnMut() -> Option<Result<bytes::Bytes, String>>;

/// The namespace of a repository: its first path component.
pub(crate) fn namespace_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

/// The blob store.
pub struct BlobStore {
    root: PathBuf,
    max_blob_bytes: u64,
    /// Most bytes of blobs one namespace may hold, if bounded.
    quota: Option<u64>,
    /// Bytes held per namespace, as last counted; dropped when a link
    /// changes, counted again when asked.
    usage: Mutex<HashMap<String, u64>>,
    /// Bumped by every recount, so a count made across a change is not
    /// kept.
    usage_generation: std::sync::atomic::AtomicU64,
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
    pub fn open(root: &Path, max_blob_bytes: u64, quota: Option<u64>) -> Result<Self, BlobError> {
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
            quota,
            usage: Mutex::new(HashMap::new()),
            usage_generation: std::sync::atomic::AtomicU64::new(0),
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
        self.session_in(session, owner).map(|(upload, _)| upload)
    }

    fn session_in(
        &self,
        session: &str,
        owner: &str,
    ) -> Result<(Arc<Mutex<Upload>>, String), BlobError> {
        self.lock()
            .get(session)
            .filter(|s| s.owner == owner)
            .map(|s| (s.upload.clone(), s.repository.clone()))
            .ok_or(BlobError::UploadUnknown)
    }

    /// Whether `session` is `owner`'s and was started in `repository`.
    pub(crate) fn check_session(
        &self,
        session: &str,
        owner: &str,
        repository: &str,
    ) -> Result<(), BlobError> {
        match self.session_in(session, owner) {
            Ok((_, started_in)) if started_in == repository => Ok(()),
            _ => Err(BlobError::UploadUnknown),
        }
    }

    /// The most bytes one namespace may hold, if bounded.
    pub fn quota(&self) -> Option<u64> {
        self.quota
    }

    /// Bytes `namespace` holds: each blob linked into any of its
    /// repositories, counted once, and its repositories' manifests.
    pub fn namespace_usage(&self, namespace: &str) -> u64 {
        let generation = self
            .usage_generation
            .load(std::sync::atomic::Ordering::Acquire);
        if let Some(used) = self
            .usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
        {
            return *used;
        }
        let mut digests = std::collections::HashSet::new();
        if let Ok(repositories) = fs::read_dir(self.root.join("links")) {
            for repository in repositories.flatten() {
                let name = repository.file_name().to_string_lossy().replace('+', "/");
                if namespace_of(&name) != namespace {
                    continue;
                }
                for link in fs::read_dir(repository.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    digests.insert(link.file_name());
                }
            }
        }
        let blobs: u64 = digests
            .iter()
            .filter_map(|hex| fs::metadata(self.root.join("blobs/sha256").join(hex)).ok())
            .map(|m| m.len())
            .sum();
        // Manifests count too: a manifest with no blobs is bytes on disk.
        let manifests: u64 = fs::read_dir(self.root.join("manifests"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                namespace_of(&e.file_name().to_string_lossy().replace('+', "/")) == namespace
            })
            .flat_map(|e| fs::read_dir(e.path()).into_iter().flatten().flatten())
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum();
        let used = blobs + manifests;
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        if self
            .usage_generation
            .load(std::sync::atomic::Ordering::Acquire)
            == generation
        {
            usage.insert(namespace.to_string(), used);
        }
        used
    }

    /// Refuses linking `digest` (`size` bytes) into `repository` when its
    /// namespace would pass its quota: the check at the end of an upload,
    /// which counts what concurrent uploads stored meanwhile.
    pub(crate) fn check_quota(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), BlobError> {
        let Some(quota) = self.quota else {
            return Ok(());
        };
        let namespace = namespace_of(repository);
        if self.namespace_holds(namespace, digest) {
            return Ok(());
        }
        let used = self.namespace_usage(namespace).saturating_add(size);
        if used > quota {
            return Err(BlobError::QuotaExceeded {
                namespace: namespace.to_string(),
                used,
                quota,
            });
        }
        Ok(())
    }

    /// Whether any repository of `namespace` links `digest`.
    pub(crate) fn namespace_holds(&self, namespace: &str, digest: &Digest) -> bool {
        fs::read_dir(self.root.join("links"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                namespace_of(&e.file_name().to_string_lossy().replace('+', "/")) == namespace
            })
            .any(|e| e.path().join(digest.hex()).is_file())
    }

    /// Every namespace that holds blobs, with its usage.
    pub fn usage_by_namespace(&self) -> Vec<(String, u64)> {
        let mut namespaces: Vec<String> = fs::read_dir(self.root.join("links"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().replace('+', "/"))
            .map(|name| namespace_of(&name).to_string())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        namespaces
            .into_iter()
            .map(|namespace| {
                let used = self.namespace_usage(&namespace);
                (namespace, used)
            })
            .collect()
    }

    /// Forgets the counted usage (links changed).
    pub(crate) fn recount(&self, namespace: Option<&str>) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        self.usage_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        match namespace {
            Some(namespace) => {
                usage.remove(namespace);
            }
            None => usage.clear(),
        }
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
        crate::fsutil::write_atomically(&path, b"").map_err(io)?;
        self.recount(Some(namespace_of(repository)));
        Ok(())
    }

    /// Removes `repository`'s link to `digest` (a blob `DELETE`); the blob
    /// itself goes at the next garbage collection if nothing else holds it.
    pub fn unlink(&self, repository: &str, digest: &Digest) -> Result<(), BlobError> {
        let path = self.link_path(repository, digest)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                self.recount(Some(namespace_of(repository)));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::Unknown),
            Err(e) => Err(io(e)),
        }
    }

    /// The directory of blobs, for the garbage collector.
    pub(crate) fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    /// The directory of links, for the garbage collector.
    pub(crate) fn link_dir(&self) -> PathBuf {
        self.root.join("links")
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

    /// Stores `bytes` whole (a monolithic upload for `owner` in
    /// `repository`), checking `digest`.
    pub fn put(
        &self,
        owner: &str,
        repository: &str,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<u64, BlobError> {
        let mut once = Some(bytes::Bytes::copy_from_slice(bytes));
        self.put_stream(owner, repository, digest, &mut || once.take().map(Ok))
    }

    /// Stores a body whole, as it streams in (a monolithic upload), checking
    /// `digest`. Returns the blob's size.
    pub(crate) fn put_stream(
        &self,
        owner: &str,
        repository: &str,
        digest: &Digest,
        chunks: Chunks<'_>,
    ) -> Result<u64, BlobError> {
        let session = self.start(owner, repository)?;
        let size = match self.append_stream(&session, owner, None, chunks) {
            Ok(size) => size,
            Err(e) => {
                self.discard(&session);
                return Err(e);
            }
        };
        self.finish(&session, owner, digest)?;
        Ok(size)
    }

    /// Starts an upload for `owner` (a token's name) in `repository`;
    /// returns its session id.
    pub fn start(&self, owner: &str, repository: &str) -> Result<String, BlobError> {
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
                repository: repository.to_string(),
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
        let range = offset.map(|start| ChunkRange { start, end: None });
        let mut once = Some(bytes::Bytes::copy_from_slice(bytes));
        self.append_stream(session, owner, range, &mut || once.take().map(Ok))
    }

    /// Appends a chunk as it streams in, hashing as it goes. With a
    /// `range`, the chunk must start where the upload ends (else
    /// [`BlobError::RangeInvalid`], and the upload is as it was) and, when
    /// the range names its end, be exactly that long. Only this session's
    /// bytes are read: the body is pulled after the session and range are
    /// checked, one piece at a time. Passing the size limit or the
    /// namespace's quota, a body that breaks off, a length that does not
    /// match the range or a failed write end the upload.
    pub(crate) fn append_stream(
        &self,
        session: &str,
        owner: &str,
        range: Option<ChunkRange>,
        chunks: Chunks<'_>,
    ) -> Result<u64, BlobError> {
        let (upload, repository) = self.session_in(session, owner)?;
        // One writer per upload: a second request does not queue (its body
        // unread, its thread parked) behind the first.
        let mut upload = match upload.try_lock() {
            Ok(upload) => upload,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(BlobError::UploadBusy),
        };
        if upload.closed {
            return Err(BlobError::UploadUnknown);
        }
        if let Some(range) = range
            && range.start != upload.size
        {
            return Err(BlobError::RangeInvalid {
                claimed: range.start,
                actual: upload.size,
            });
        }
        let namespace = namespace_of(&repository);
        let held = self.quota.map(|_| self.namespace_usage(namespace));
        let started_at = upload.size;
        let failed = |store: &Self, upload: std::sync::MutexGuard<'_, Upload>, e: BlobError| {
            drop(upload);
            store.discard(session);
            Err(e)
        };
        while let Some(chunk) = chunks() {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    return failed(self, upload, BlobError::BodyBroken(e));
                }
            };
            let size = upload.size + chunk.len() as u64;
            if size > self.max_blob_bytes {
                return failed(self, upload, BlobError::TooLarge(self.max_blob_bytes));
            }
            if let (Some(quota), Some(held)) = (self.quota, held)
                && held.saturating_add(size) > quota
            {
                let used = held.saturating_add(size);
                let namespace = namespace.to_string();
                return failed(
                    self,
                    upload,
                    BlobError::QuotaExceeded {
                        namespace,
                        used,
                        quota,
                    },
                );
            }
            // A failed write leaves the file's bytes unknown: the upload is over.
            if let Err(e) = upload.file.write_all(&chunk) {
                return failed(self, upload, io(e));
            }
            upload.hasher.update(&chunk);
            upload.size = size;
            upload.touched = Instant::now();
        }
        if let Some(ChunkRange {
            start,
            end: Some(end),
        }) = range
        {
            let received = upload.size - started_at;
            if end.checked_sub(start).and_then(|n| n.checked_add(1)) != Some(received) {
                let actual = upload.size;
                return failed(
                    self,
                    upload,
                    BlobError::RangeInvalid {
                        claimed: end,
                        actual,
                    },
                );
            }
        }
        Ok(upload.size)
    }

    /// Finishes an upload: the digest computed while streaming must be
    /// `digest`; then the file is synced and renamed into place. On any
    /// failure the upload is gone and no blob appears.
    pub fn finish(&self, session: &str, owner: &str, digest: &Digest) -> Result<(), BlobError> {
        let upload = self.session(session, owner)?;
        // A chunk still being written: busy, not waited for (the caller
        // may hold the registry's storing lock).
        let mut upload = match upload.try_lock() {
            Ok(upload) => upload,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(BlobError::UploadBusy),
        };
        if upload.closed {
            return Err(BlobError::UploadUnknown);
        }
        self.lock().remove(session);
        let path = self.upload_path(session);
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
            // Pushed again just now: young again for the garbage collector.
            if let Ok(file) = File::options().append(true).open(&target) {
                let _ = file.set_modified(std::time::SystemTime::now());
            }
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

    /// Ends a session after a refusal, whatever the caller's session id:
    /// an unknown or foreign one is left alone.
    pub(crate) fn close_after_refusal(&self, session: &str, owner: &str) {
        if self.session(session, owner).is_ok() {
            self.discard(session);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store(max: u64) -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("registry"), max, None).unwrap();
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
        let session = store.start("publisher", "acme/x").unwrap();
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
        let session = store.start("publisher", "acme/x").unwrap();
        store.append(&session, "publisher", None, b"hello").unwrap();
        let claimed = Digest::of(b"hellO");
        let err = store.finish(&session, "publisher", &claimed).unwrap_err();
        assert_eq!(err.code(), "DIGEST_INVALID");
        assert_eq!(store.size(&claimed).unwrap_err(), BlobError::Unknown);
        // Truncated: the digest of the whole, only part sent.
        let whole = Digest::of(b"hello world");
        let session = store.start("publisher", "acme/x").unwrap();
        store.append(&session, "publisher", None, b"hello").unwrap();
        assert!(store.finish(&session, "publisher", &whole).is_err());
        // Too large.
        let session = store.start("publisher", "acme/x").unwrap();
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
        let session = store.start("publisher", "acme/x").unwrap();
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
        let session = store.start("acme", "acme/x").unwrap();
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
            store.start("greedy", "acme/x").unwrap();
        }
        assert_eq!(
            store.start("greedy", "acme/x").unwrap_err(),
            BlobError::TooManyUploads
        );
        let other = store.start("publisher", "acme/x").unwrap();
        store.cancel(&other, "publisher").unwrap();
    }

    #[test]
    fn a_blob_altered_on_disk_is_healed_by_the_next_upload_and_an_intact_one_kept() {
        let (_dir, store) = store(1 << 20);
        let content = b"a component's bytes".to_vec();
        let digest = Digest::of(&content);
        store.put("publisher", "acme/x", &digest, &content).unwrap();
        let path = store.blob_path(&digest);
        use std::os::unix::fs::MetadataExt as _;
        let stored = fs::metadata(&path).unwrap();
        // Intact: an upload of the same bytes keeps the stored file (the
        // same inode), only made young again for the garbage collector.
        std::thread::sleep(Duration::from_millis(20));
        store.put("publisher", "acme/x", &digest, &content).unwrap();
        let again = fs::metadata(&path).unwrap();
        assert_eq!(again.ino(), stored.ino());
        assert!(again.modified().unwrap() > stored.modified().unwrap());
        // Altered: the verified upload replaces it.
        fs::write(&path, b"tampered").unwrap();
        store.put("publisher", "acme/x", &digest, &content).unwrap();
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
