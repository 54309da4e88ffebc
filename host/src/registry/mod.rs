//! The component registry, served by the daemon over the OCI Distribution
//! API, from which agents are deployed by reference.
//!
//! - [`blobs`]: content-addressed blobs and the OCI Distribution upload
//!   sessions, digests verified while streaming, nothing partial left
//!   behind.
//! - [`manifests`]: manifests stored byte for byte with their media type,
//!   tags, and immutable version tags.
//! - [`validate_repository`]: repository names as the OCI Distribution spec
//!   allows them, which also rules out path tricks.
//!
//! - [`layout`]: the CNCF Wasm OCI artifact layout (config with the
//!   component's imports and exports, one `application/wasm` layer).
//! - [`api`]: the OCI Distribution v2 routes on the daemon, which validate
//!   and precompile every pushed component.
//! - [`signing`]: Ed25519 publisher keys, signatures attached as OCI
//!   referrers, and the operator's per-namespace trust policy.
//! - [`client`]: `clawcage push`/`pull`, a small OCI client.
//! - [`Registry::resolve`]: what a deployment by reference goes through:
//!   every digest on the way re-checked against the bytes on disk, and the
//!   trust policy.

pub mod api;
pub mod blobs;
mod body;
pub mod client;
pub mod gc;
pub mod layout;
pub mod manifests;
pub mod signing;

use std::path::Path;

use blobs::Digest;
use signing::{Signature, TrustPolicy};

/// Most repositories [`Registry::catalog`] lists.
pub const MAX_CATALOG_REPOSITORIES: usize = 500;
/// Most versions it lists per repository (the last ones in tag order).
pub const MAX_CATALOG_VERSIONS: usize = 100;

/// A repository as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RepositoryInfo {
    /// `namespace/name`.
    pub name: String,
    /// Its tags (the last [`MAX_CATALOG_VERSIONS`] in tag order).
    pub versions: Vec<VersionInfo>,
    /// Tags left out past the bound.
    pub more_versions: usize,
}

/// One tag of a repository.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionInfo {
    /// The tag.
    pub tag: String,
    /// The manifest it points at.
    pub digest: String,
    /// The public keys (hex) its signature referrers name. Named, not
    /// verified: a deployment verifies them against the trust policy.
    pub signers: Vec<String>,
}

/// A component found in the registry and allowed by the trust policy.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The repository.
    pub repository: String,
    /// The manifest's digest (what was signed).
    pub digest: Digest,
    /// The component's bytes, checked against the layer digest.
    pub component: Vec<u8>,
    /// The public key (hex) whose signature was trusted; `None` when the
    /// namespace allows unsigned components and none verified.
    pub signer: Option<String>,
}

impl Resolved {
    /// `repository@sha256:…`: the reference pinned to what was resolved.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }
}

/// Splits a reference into repository and tag or digest:
/// `acme/triage@1.2.0`, `acme/triage@sha256:<hex>` or `acme/triage:1.2.0`.
pub(crate) fn parse_reference(reference: &str) -> Result<(&str, &str), String> {
    let split = reference.split_once('@').or_else(|| {
        reference
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
    });
    let Some((repository, version)) = split else {
        return Err(format!(
            "{reference:?} is not a registry reference: write name@version or name@sha256:<hex>"
        ));
    };
    validate_repository(repository)?;
    if Digest::parse(version).is_err() {
        manifests::validate_tag(version).map_err(|e| e.to_string())?;
    }
    Ok((repository, version))
}

/// The registry's storage: blobs, manifests and tags, under
/// `registry/` in the state directory.
#[derive(Debug)]
pub struct Registry {
    /// Blobs and uploads.
    pub blobs: blobs::BlobStore,
    /// Manifests and tags.
    pub manifests: manifests::ManifestStore,
    /// Held exclusively by a garbage collection, shared by whatever stores
    /// a manifest or a blob (see [`gc`]).
    pub(crate) gc: std::sync::RwLock<()>,
    /// Manifest bodies being read.
    pub(crate) body_reads: body::BodyReads,
    /// Blob upload audit records per token, for their bound.
    pub(crate) upload_records: api::UploadRecords,
}

impl Registry {
    /// Opens (creating) the registry under `root`.
    pub fn open(root: &Path, max_blob_bytes: u64, quota: Option<u64>) -> Result<Self, String> {
        Ok(Self {
            blobs: blobs::BlobStore::open(root, max_blob_bytes, quota)
                .map_err(|e| e.to_string())?,
            manifests: manifests::ManifestStore::open(root).map_err(|e| e.to_string())?,
            gc: std::sync::RwLock::new(()),
            body_reads: body::BodyReads::default(),
            upload_records: api::UploadRecords::default(),
        })
    }

    /// Writes the counts of suppressed blob upload records still pending
    /// (at shutdown).
    pub(crate) fn flush_upload_records(&self, audit: &crate::audit::AuditLog) {
        for (actor, suppressed) in self.upload_records.take_pending() {
            audit.append(crate::audit::AuditEvent::BlobUploadsSuppressed { actor, suppressed });
        }
    }

    /// Shared with other writers, exclusive of a garbage collection.
    pub(crate) fn storing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gc.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A blob, checked against its digest (the store is content-addressed,
    /// but the disk is not trusted to have kept it so).
    pub(crate) fn verified_blob(&self, digest: &Digest) -> Result<Vec<u8>, String> {
        let bytes = self
            .blobs
            .read(digest)
            .map_err(|_| format!("blob {digest} is missing"))?;
        if Digest::of(&bytes) != *digest {
            return Err(format!(
                "blob {digest} does not match its digest on disk: the registry's storage was altered"
            ));
        }
        Ok(bytes)
    }

    /// A manifest by reference, as JSON, checked against its digest.
    fn verified_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Digest, serde_json::Value), String> {
        let stored = self
            .manifests
            .get(repository, reference)
            .map_err(|e| format!("{repository}@{reference}: {e}"))?;
        if Digest::of(&stored.bytes) != stored.digest {
            return Err(format!(
                "manifest {} does not match its digest on disk: the registry's storage was altered",
                stored.digest
            ));
        }
        let manifest = serde_json::from_slice(&stored.bytes)
            .map_err(|e| format!("manifest {}: {e}", stored.digest))?;
        Ok((stored.digest, manifest))
    }

    /// The repositories, their tags, digests and named signers, bounded by
    /// [`MAX_CATALOG_REPOSITORIES`] and [`MAX_CATALOG_VERSIONS`].
    pub fn catalog(&self) -> Vec<RepositoryInfo> {
        self.manifests
            .repositories()
            .into_iter()
            .take(MAX_CATALOG_REPOSITORIES)
            .map(|name| {
                let tags = self.manifests.tags(&name).unwrap_or_default();
                let more_versions = tags.len().saturating_sub(MAX_CATALOG_VERSIONS);
                let versions = tags[more_versions..]
                    .iter()
                    .filter_map(|tag| {
                        let digest = self.manifests.tag_digest(&name, tag).ok()?;
                        let signers = self
                            .manifests
                            .referrers(&name, &digest, Some(signing::SIGNATURE_TYPE))
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|r| {
                                r["annotations"][signing::SIGNER_ANNOTATION]
                                    .as_str()
                                    .map(str::to_string)
                            })
                            .take(signing::MAX_SIGNATURES)
                            .collect();
                        Some(VersionInfo {
                            tag: tag.clone(),
                            digest: digest.to_string(),
                            signers,
                        })
                    })
                    .collect();
                RepositoryInfo {
                    name,
                    versions,
                    more_versions,
                }
            })
            .collect()
    }

    /// The signatures attached to `digest` in `repository` by keys `wanted`
    /// accepts (the keys the policy trusts there), at most
    /// [`signing::MAX_SIGNATURES`]. Choosing by key first means signatures
    /// by other keys, however many, cannot crowd out a trusted one. One that
    /// cannot be read is skipped (it could not verify anyway).
    pub fn signatures(
        &self,
        repository: &str,
        digest: &Digest,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Vec<Signature> {
        let referrers = self
            .manifests
            .referrers(repository, digest, Some(signing::SIGNATURE_TYPE))
            .unwrap_or_default()
            .into_iter()
            .filter(|r| {
                r["annotations"][signing::SIGNER_ANNOTATION]
                    .as_str()
                    .is_some_and(wanted)
            });
        let mut signatures = Vec::new();
        for referrer in referrers.take(signing::MAX_SIGNATURES) {
            let read = || -> Result<Signature, String> {
                let (_, manifest) = self.verified_manifest(
                    repository,
                    referrer["digest"].as_str().unwrap_or_default(),
                )?;
                if manifest["subject"]["digest"] != digest.to_string() {
                    return Err("the referrer's subject is another manifest".into());
                }
                let layer = Digest::parse(manifest["layers"][0]["digest"].as_str().unwrap_or(""))
                    .map_err(|e| e.to_string())?;
                if self.blobs.size(&layer).unwrap_or(u64::MAX) > signing::MAX_SIGNATURE_BYTES {
                    return Err("the signature blob is too large".into());
                }
                Signature::from_blob(&self.verified_blob(&layer)?)
            };
            match read() {
                Ok(signature) => signatures.push(signature),
                Err(e) => tracing::warn!(%repository, %digest, error = %e, "unreadable signature"),
            }
        }
        signatures
    }

    /// Resolves `reference` (`name@version`, `name@sha256:…`) to a
    /// component the trust policy allows. Every digest on the way is
    /// checked against the bytes: the manifest's, the layer's, the
    /// signatures'.
    pub(crate) fn resolve(
        &self,
        reference: &str,
        policy: &TrustPolicy,
    ) -> Result<Resolved, String> {
        let (repository, version) = parse_reference(reference)?;
        let (digest, manifest) = self.verified_manifest(repository, version)?;
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        let [layer] = layers.as_slice() else {
            return Err(format!("{reference} is not a component (one wasm layer)"));
        };
        if layer["mediaType"] != layout::LAYER_TYPE {
            return Err(format!(
                "{reference} is not a component: its layer is {}",
                layer["mediaType"]
            ));
        }
        let layer_digest =
            Digest::parse(layer["digest"].as_str().unwrap_or("")).map_err(|e| e.to_string())?;
        let signatures =
            self.signatures(repository, &digest, &|key| policy.trusts(repository, key));
        // Asked for by version, a signature must be for that version; by
        // digest, the digest itself pins the bytes.
        let asked_version = Digest::parse(version).is_err().then_some(version);
        let signer = policy
            .check(repository, asked_version, &digest, &signatures)
            .map_err(|refusal| {
                // Signed, but by none of the keys trusted here (not: signed
                // by a trusted key whose signature could not be read).
                let referrers = self
                    .manifests
                    .referrers(repository, &digest, Some(signing::SIGNATURE_TYPE))
                    .unwrap_or_default();
                let by_others = signatures.is_empty()
                    && !referrers.is_empty()
                    && referrers.iter().all(|r| {
                        !r["annotations"][signing::SIGNER_ANNOTATION]
                            .as_str()
                            .is_some_and(|key| policy.trusts(repository, key))
                    });
                if by_others {
                    let namespace = repository.split('/').next().unwrap_or_default();
                    format!(
                        "{repository}@{digest} is signed only by keys not trusted for namespace {namespace:?}"
                    )
                } else {
                    refusal
                }
            })?;
        let component = self.verified_blob(&layer_digest)?;
        Ok(Resolved {
            repository: repository.to_string(),
            digest,
            component,
            signer,
        })
    }
}

/// Longest repository name.
pub(crate) const MAX_REPOSITORY_BYTES: usize = 255;

/// Checks a repository name against the OCI Distribution spec's grammar:
/// `/`-separated path components of lower-case letters and digits, joined
/// inside a component by `.`, `_`, `__` or runs of `-`. So no `..`, no
/// empty segment, no upper case, and nothing a path could be tricked with.
pub(crate) fn validate_repository(name: &str) -> Result<(), String> {
    let invalid = || {
        format!(
            "repository name {name:?} is invalid (NAME_INVALID): use lower-case path components like acme/triage"
        )
    };
    if name.is_empty() || name.len() > MAX_REPOSITORY_BYTES {
        return Err(invalid());
    }
    for component in name.split('/') {
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err(invalid());
        }
        let mut index = 0;
        while index < bytes.len() {
            let b = bytes[index];
            if alnum(b) {
                index += 1;
                continue;
            }
            // A separator: `.`, `_`, `__` or a run of `-`, between alnums.
            let run = bytes[index..].iter().take_while(|&&c| c == b).count();
            let allowed = match b {
                b'.' => run == 1,
                b'_' => run <= 2,
                b'-' => true,
                _ => false,
            };
            if !allowed {
                return Err(invalid());
            }
            index += run;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_spec() {
        for good in [
            "acme/triage",
            "a",
            "acme/agents/report-writer",
            "a__b",
            "a.b-c---d",
            "x9/y_z",
        ] {
            assert!(validate_repository(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "../etc",
            "acme/../x",
            "acme//triage",
            "/acme",
            "acme/",
            "Acme/triage",
            "acme/tri age",
            "acme/.hidden",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "acme\\x",
            "a%2fb",
        ] {
            assert!(validate_repository(bad).is_err(), "{bad}");
        }
        assert!(validate_repository(&"a".repeat(256)).is_err());
    }
}
