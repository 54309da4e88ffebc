//! Manifests and tags: manifests stored byte for byte under their digest,
//! with their media type; tags that point at them. A semver tag, once
//! pushed, cannot be moved to another digest (pushing the same bytes again
//! is allowed, so retries are safe); other tags (`latest`) may move.
//!
//! Layout under the registry's directory:
//! - `manifests/<repository>/<hex>` and `<hex>.type`;
//! - `tags/<repository>/<tag>`: the digest the tag points at;
//! - `referrers/<repository>/<subject hex>/<hex>`: the descriptor of a
//!   manifest whose `subject` is that digest (a signature, say), for the
//!   OCI 1.1 referrers API;
//!
//! - `tags/<repository>/.retired/<tag>`: the digest a deleted version tag
//!   pointed at, so the version can never name other bytes;
//!
//! where `<repository>` has its `/` written as `+`.
//!
//! Repository names are checked against the OCI grammar before they become
//! paths ([`super::validate_repository`]), tags against the spec's
//! `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::blobs::Digest;

/// Largest manifest accepted.
pub(crate) const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// A failed manifest operation, with its OCI error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Bad repository name (`NAME_INVALID`).
    #[error("{0}")]
    NameInvalid(String),
    /// Bad tag or reference (`TAG_INVALID`).
    #[error("{0}")]
    TagInvalid(String),
    /// No such manifest (`MANIFEST_UNKNOWN`).
    #[error("manifest unknown")]
    Unknown,
    /// No such repository (`NAME_UNKNOWN`).
    #[error("repository name not known to registry")]
    NameUnknown,
    /// A version tag would move (`DENIED`).
    #[error("tag {tag} already points at {existing}; versions are immutable, push a new version")]
    Immutable {
        /// The tag.
        tag: String,
        /// Where it points.
        existing: String,
    },
    /// Too large (`SIZE_INVALID`).
    #[error("the manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    /// What a deployed agent runs (`DENIED`).
    #[error("{0}")]
    InUse(String),
    /// The disk failed.
    #[error("storage: {0}")]
    Io(String),
}

impl ManifestError {
    /// The OCI Distribution error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NameInvalid(_) => "NAME_INVALID",
            Self::TagInvalid(_) => "TAG_INVALID",
            Self::Unknown => "MANIFEST_UNKNOWN",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::Immutable { .. } | Self::InUse(_) => "DENIED",
            Self::TooLarge => "SIZE_INVALID",
            Self::Io(_) => "UNKNOWN",
        }
    }
}

fn io(e: std::io::Error) -> ManifestError {
    ManifestError::Io(e.to_string())
}

/// Checks a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(crate) fn validate_tag(tag: &str) -> Result<(), ManifestError> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::TagInvalid(format!("tag {tag:?} is invalid")))
    }
}

/// Whether a tag is a semantic version (`1.2.0`, `v1.2.0-rc.1`), which is
/// immutable once pushed.
pub(crate) fn is_version(tag: &str) -> bool {
    let core = tag.strip_prefix('v').unwrap_or(tag);
    let core = core.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A manifest as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    /// Its digest.
    pub digest: Digest,
    /// Its media type, as pushed.
    pub media_type: String,
    /// Its bytes, as pushed.
    pub bytes: Vec<u8>,
}

/// The manifest and tag store.
#[derive(Debug)]
pub struct ManifestStore {
    root: PathBuf,
    /// Serialises tag updates, so the immutability check and the write are
    /// one step.
    tags: Mutex<()>,
}

impl ManifestStore {
    /// A store under `root`.
    pub fn open(root: &Path) -> Result<Self, ManifestError> {
        for dir in ["manifests", "tags", "referrers"] {
            crate::fsutil::create_private_dir(&root.join(dir)).map_err(io)?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            tags: Mutex::new(()),
        })
    }

    fn repository_dir(&self, kind: &str, repository: &str) -> Result<PathBuf, ManifestError> {
        super::validate_repository(repository).map_err(ManifestError::NameInvalid)?;
        // One flat directory per repository (`acme/triage` → `acme+triage`;
        // `+` cannot occur in a name), so a repository's files never meet
        // another repository nested under its name.
        Ok(self.root.join(kind).join(repository.replace('/', "+")))
    }

    /// Stores a manifest and, when `reference` is a tag, points the tag at
    /// it. `reference` may also be the manifest's own digest.
    pub fn put(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge);
        }
        let digest = Digest::of(bytes);
        let tag = match Digest::parse(reference) {
            Ok(named) if named == digest => None,
            Ok(_) => {
                return Err(ManifestError::TagInvalid(format!(
                    "the manifest's digest is {digest}, not {reference}"
                )));
            }
            Err(_) => {
                validate_tag(reference)?;
                Some(reference)
            }
        };
        // Under the tag lock from the check to the end, so a refused push
        // stores nothing and two pushes of one version cannot both win.
        let _serial = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        let tag_path = match tag {
            Some(tag) => {
                let tags = self.repository_dir("tags", repository)?;
                let tag_path = tags.join(tag);
                let retired = tags.join(RETIRED).join(tag);
                if is_version(tag)
                    && let Ok(existing) =
                        fs::read_to_string(&tag_path).or_else(|_| fs::read_to_string(&retired))
                    && existing != digest.to_string()
                {
                    return Err(ManifestError::Immutable {
                        tag: tag.to_string(),
                        existing,
                    });
                }
                crate::fsutil::create_private_dir(&tags).map_err(io)?;
                Some(tag_path)
            }
            None => None,
        };
        let manifests = self.repository_dir("manifests", repository)?;
        crate::fsutil::create_private_dir(&manifests).map_err(io)?;
        let path = manifests.join(digest.hex());
        // The same digest is the same bytes: stored once, with the media
        // type it was first pushed with (rewritten only if the disk lost it).
        if fs::read(&path).ok().as_deref() != Some(bytes) {
            crate::fsutil::write_atomically(&path.with_extension("type"), media_type.as_bytes())
                .map_err(io)?;
            crate::fsutil::write_atomically(&path, bytes).map_err(io)?;
        }
        if let Some((subject, descriptor)) = referrer_descriptor(media_type, bytes, &digest) {
            let dir = self
                .repository_dir("referrers", repository)?
                .join(subject.hex());
            crate::fsutil::create_private_dir(&dir).map_err(io)?;
            crate::fsutil::write_atomically(&dir.join(digest.hex()), descriptor.as_bytes())
                .map_err(io)?;
        }
        if let Some(tag_path) = tag_path {
            crate::fsutil::write_atomically(&tag_path, digest.to_string().as_bytes())
                .map_err(io)?;
        }
        Ok(digest)
    }

    /// A manifest by tag or digest. A reference that is neither a valid
    /// tag nor a digest names nothing: [`ManifestError::Unknown`].
    pub fn get(&self, repository: &str, reference: &str) -> Result<StoredManifest, ManifestError> {
        let digest = match Digest::parse(reference) {
            Ok(digest) => digest,
            Err(_) => {
                validate_tag(reference).map_err(|_| ManifestError::Unknown)?;
                let tags = self.repository_dir("tags", repository)?;
                let text =
                    fs::read_to_string(tags.join(reference)).map_err(|_| ManifestError::Unknown)?;
                Digest::parse(text.trim()).map_err(|_| ManifestError::Unknown)?
            }
        };
        let path = self
            .repository_dir("manifests", repository)?
            .join(digest.hex());
        let bytes = fs::read(&path).map_err(|_| ManifestError::Unknown)?;
        let media_type = fs::read_to_string(path.with_extension("type"))
            .unwrap_or_else(|_| "application/vnd.oci.image.manifest.v1+json".into());
        Ok(StoredManifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// The descriptors of the manifests in `repository` whose `subject` is
    /// `subject`, in digest order, optionally only those of one artifact
    /// type.
    pub fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, ManifestError> {
        let dir = self
            .repository_dir("referrers", repository)?
            .join(subject.hex());
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with(".tmp-"))
            .collect();
        names.sort();
        let mut descriptors = Vec::new();
        for name in names {
            let Ok(text) = fs::read(dir.join(&name)) else {
                continue;
            };
            let Ok(descriptor) = serde_json::from_slice::<serde_json::Value>(&text) else {
                continue;
            };
            if artifact_type.is_none_or(|wanted| descriptor["artifactType"] == wanted) {
                descriptors.push(descriptor);
            }
        }
        Ok(descriptors)
    }

    /// Every repository with tags, sorted.
    pub fn repositories(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.root.join("tags")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|name| name.replace('+', "/"))
            .filter(|name| super::validate_repository(name).is_ok())
            .collect();
        names.sort();
        names
    }

    /// The digest a tag points at, without reading the manifest.
    pub fn tag_digest(&self, repository: &str, tag: &str) -> Result<Digest, ManifestError> {
        validate_tag(tag).map_err(|_| ManifestError::Unknown)?;
        let text = fs::read_to_string(self.repository_dir("tags", repository)?.join(tag))
            .map_err(|_| ManifestError::Unknown)?;
        Digest::parse(text.trim()).map_err(|_| ManifestError::Unknown)
    }

    /// A repository's tags, sorted.
    pub fn tags(&self, repository: &str) -> Result<Vec<String>, ManifestError> {
        let dir = self.repository_dir("tags", repository)?;
        let entries = fs::read_dir(&dir).map_err(|_| ManifestError::NameUnknown)?;
        let mut tags: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with(".tmp-"))
            .collect();
        tags.sort();
        Ok(tags)
    }
    /// Removes a tag (`DELETE` by tag). A version tag is retired, not
    /// forgotten: that version can only ever be pushed again with the same
    /// bytes.
    pub fn untag(&self, repository: &str, tag: &str) -> Result<Digest, ManifestError> {
        validate_tag(tag).map_err(|_| ManifestError::Unknown)?;
        let _serial = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        let tags = self.repository_dir("tags", repository)?;
        let path = tags.join(tag);
        let text = fs::read_to_string(&path).map_err(|_| ManifestError::Unknown)?;
        let digest = Digest::parse(text.trim()).map_err(|_| ManifestError::Unknown)?;
        if is_version(tag) {
            crate::fsutil::create_private_dir(&tags.join(RETIRED)).map_err(io)?;
            crate::fsutil::write_atomically(&tags.join(RETIRED).join(tag), text.as_bytes())
                .map_err(io)?;
        }
        fs::remove_file(&path).map_err(io)?;
        Ok(digest)
    }

    /// Deletes a manifest by digest: its tags (version tags retired), its
    /// entry in its subject's referrers, and every manifest that refers to
    /// it (its signatures follow it), depth first. Answers the digests
    /// deleted. `in_use` refuses a manifest a deployed agent runs.
    pub fn delete(
        &self,
        repository: &str,
        digest: &Digest,
        in_use: &dyn Fn(&Digest) -> bool,
    ) -> Result<Vec<Digest>, ManifestError> {
        let manifests = self.repository_dir("manifests", repository)?;
        if !manifests.join(digest.hex()).is_file() {
            return Err(ManifestError::Unknown);
        }
        let mut deleted = Vec::new();
        self.delete_one(repository, digest, in_use, 0, &mut deleted)?;
        Ok(deleted)
    }

    fn delete_one(
        &self,
        repository: &str,
        digest: &Digest,
        in_use: &dyn Fn(&Digest) -> bool,
        depth: usize,
        deleted: &mut Vec<Digest>,
    ) -> Result<(), ManifestError> {
        // Referrers of referrers: a chain this deep is an attack, not a
        // signature.
        if depth > 4 || deleted.len() > 10_000 {
            return Ok(());
        }
        if in_use(digest) {
            return Err(ManifestError::InUse(format!(
                "{repository}@{digest} is what a deployed agent runs: remove or redeploy the agent first"
            )));
        }
        // Its referrers first (signatures follow their subject).
        let referrers = self.repository_dir("referrers", repository)?;
        let own = referrers.join(digest.hex());
        let children: Vec<String> = fs::read_dir(&own)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with(".tmp-"))
            .collect();
        for child in children {
            if let Ok(child) = Digest::parse(&format!("sha256:{child}")) {
                self.delete_one(repository, &child, in_use, depth + 1, deleted)?;
            }
        }
        let _ = fs::remove_dir_all(&own);
        let manifests = self.repository_dir("manifests", repository)?;
        let path = manifests.join(digest.hex());
        let bytes = fs::read(&path).unwrap_or_default();
        let media_type = fs::read_to_string(path.with_extension("type")).unwrap_or_default();
        // Out of its subject's referrers.
        if let Some((subject, _)) = referrer_descriptor(&media_type, &bytes, digest) {
            let _ = fs::remove_file(referrers.join(subject.hex()).join(digest.hex()));
        }
        {
            let _serial = self.tags.lock().unwrap_or_else(|e| e.into_inner());
            let tags = self.repository_dir("tags", repository)?;
            let pointing = fs::read_dir(&tags)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter(|e| {
                    fs::read_to_string(e.path()).is_ok_and(|t| t.trim() == digest.to_string())
                });
            for entry in pointing {
                let tag = entry.file_name().to_string_lossy().to_string();
                if is_version(&tag) {
                    crate::fsutil::create_private_dir(&tags.join(RETIRED)).map_err(io)?;
                    crate::fsutil::write_atomically(
                        &tags.join(RETIRED).join(&tag),
                        digest.to_string().as_bytes(),
                    )
                    .map_err(io)?;
                }
                let _ = fs::remove_file(entry.path());
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let _ = fs::remove_file(path.with_extension("type"));
        deleted.push(digest.clone());
        Ok(())
    }

    /// Every stored manifest: repository, digest and bytes, for the garbage
    /// collector's mark.
    pub(crate) fn all(&self) -> Vec<(String, Digest, Vec<u8>)> {
        let mut out = Vec::new();
        let Ok(repositories) = fs::read_dir(self.root.join("manifests")) else {
            return out;
        };
        for repository in repositories.flatten() {
            let name = repository.file_name().to_string_lossy().replace('+', "/");
            for entry in fs::read_dir(repository.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let file = entry.file_name().to_string_lossy().to_string();
                if file.contains('.') {
                    continue;
                }
                if let (Ok(digest), Ok(bytes)) = (
                    Digest::parse(&format!("sha256:{file}")),
                    fs::read(entry.path()),
                ) {
                    out.push((name.clone(), digest, bytes));
                }
            }
        }
        out
    }
}

/// Where deleted version tags are remembered, inside a repository's tags.
const RETIRED: &str = ".retired";

/// When a manifest names a `subject`, that subject's digest and the
/// manifest's descriptor as the referrers API lists it: media type, digest,
/// size, artifact type (the manifest's, else its config's media type) and
/// annotations.
fn referrer_descriptor(
    media_type: &str,
    bytes: &[u8],
    digest: &Digest,
) -> Option<(Digest, String)> {
    let manifest: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let subject = Digest::parse(manifest.get("subject")?.get("digest")?.as_str()?).ok()?;
    let artifact_type = manifest
        .get("artifactType")
        .or_else(|| manifest.get("config")?.get("mediaType"))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let mut descriptor = serde_json::json!({
        "mediaType": media_type,
        "digest": digest.to_string(),
        "size": bytes.len(),
        "artifactType": artifact_type,
    });
    if let Some(annotations) = manifest.get("annotations").filter(|a| a.is_object()) {
        descriptor["annotations"] = annotations.clone();
    }
    Some((subject, descriptor.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

    #[test]
    fn manifests_round_trip_byte_for_byte_and_versions_are_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let store = ManifestStore::open(&dir.path().join("registry")).unwrap();
        let v1 = br#"{"schemaVersion":2, "layers":[]}"#;
        let v2 = br#"{"schemaVersion":2,"layers":[1]}"#;
        let digest = store.put("acme/triage", "1.2.0", OCI, v1).unwrap();
        let by_tag = store.get("acme/triage", "1.2.0").unwrap();
        assert_eq!(
            (by_tag.bytes.as_slice(), by_tag.media_type.as_str()),
            (&v1[..], OCI)
        );
        assert_eq!(
            store
                .get("acme/triage", &digest.to_string())
                .unwrap()
                .digest,
            digest
        );
        // The same bytes again are fine; other bytes under the version are not.
        store.put("acme/triage", "1.2.0", OCI, v1).unwrap();
        let err = store.put("acme/triage", "1.2.0", OCI, v2).unwrap_err();
        assert_eq!(err.code(), "DENIED");
        assert_eq!(store.get("acme/triage", "1.2.0").unwrap().digest, digest);
        // `latest` moves.
        store.put("acme/triage", "latest", OCI, v1).unwrap();
        let moved = store.put("acme/triage", "latest", OCI, v2).unwrap();
        assert_eq!(store.get("acme/triage", "latest").unwrap().digest, moved);
        assert_eq!(store.tags("acme/triage").unwrap(), ["1.2.0", "latest"]);
        // By digest: it must be the digest of the bytes.
        assert!(
            store
                .put("acme/triage", &moved.to_string(), OCI, v2)
                .is_ok()
        );
        assert_eq!(
            store
                .put("acme/triage", &digest.to_string(), OCI, v2)
                .unwrap_err()
                .code(),
            "TAG_INVALID"
        );
    }

    #[test]
    fn referrers_are_indexed_by_subject() {
        let dir = tempfile::tempdir().unwrap();
        let store = ManifestStore::open(&dir.path().join("registry")).unwrap();
        let subject = store.put("acme/triage", "1.0.0", OCI, b"{}").unwrap();
        let referrer = format!(
            r#"{{"schemaVersion":2,"artifactType":"application/x-sig","subject":{{"digest":"{subject}"}},"annotations":{{"k":"v"}}}}"#
        );
        let digest = Digest::of(referrer.as_bytes());
        store
            .put("acme/triage", &digest.to_string(), OCI, referrer.as_bytes())
            .unwrap();
        let listed = store.referrers("acme/triage", &subject, None).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["digest"], digest.to_string());
        assert_eq!(listed[0]["artifactType"], "application/x-sig");
        assert_eq!(listed[0]["annotations"]["k"], "v");
        assert_eq!(listed[0]["size"], referrer.len());
        assert!(
            store
                .referrers("acme/triage", &subject, Some("application/other"))
                .unwrap()
                .is_empty()
        );
        // Another repository's referrers are its own.
        assert!(
            store
                .referrers("acme/other", &subject, None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_names_and_references_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ManifestStore::open(&dir.path().join("registry")).unwrap();
        assert_eq!(
            store.put("../x", "1.0.0", OCI, b"{}").unwrap_err().code(),
            "NAME_INVALID"
        );
        assert_eq!(
            store
                .put("acme/x", "../../t", OCI, b"{}")
                .unwrap_err()
                .code(),
            "TAG_INVALID"
        );
        assert_eq!(
            store.get("acme/x", "1.0.0").unwrap_err().code(),
            "MANIFEST_UNKNOWN"
        );
        assert_eq!(store.tags("acme/none").unwrap_err().code(), "NAME_UNKNOWN");
        // A repository and one nested under its name keep apart.
        store.put("acme", "triage", OCI, b"{}").unwrap();
        store.put("acme/triage", "1.0.0", OCI, b"{ }").unwrap();
        assert_eq!(store.tags("acme").unwrap(), ["triage"]);
        assert_eq!(store.tags("acme/triage").unwrap(), ["1.0.0"]);
        assert!(
            is_version("1.2.0")
                && is_version("v1.2.0-rc.1")
                && !is_version("latest")
                && !is_version("1.2")
        );
    }
}
