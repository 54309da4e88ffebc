//! The component registry (issue 6), being built: so far its storage.
//!
//! - [`blobs`]: content-addressed blobs and the OCI Distribution upload
//!   sessions, digests verified while streaming, nothing partial left
//!   behind.
//! - [`manifests`]: manifests stored byte for byte with their media type,
//!   tags, and immutable version tags.
//! - [`validate_repository`]: repository names as the OCI Distribution spec
//!   allows them, which also rules out path tricks.
//!
//! - [`api`]: the OCI Distribution v2 routes on the daemon.
//! - [`signing`]: Ed25519 publisher keys, signatures over manifest digests,
//!   and the operator's per-namespace trust policy (not yet wired to
//!   deployment).
//!
//! Still to come: the Wasm OCI layout,
//! component validation and precompilation on push, Ed25519 signatures and
//! trusted publisher keys, and `clawcage push`/`pull`/`keygen`.

pub mod api;
pub mod blobs;
pub mod manifests;
pub mod signing;

use std::path::Path;

/// The registry's storage: blobs, manifests and tags, under
/// `registry/` in the state directory.
#[derive(Debug)]
pub struct Registry {
    /// Blobs and uploads.
    pub blobs: blobs::BlobStore,
    /// Manifests and tags.
    pub manifests: manifests::ManifestStore,
}

impl Registry {
    /// Opens (creating) the registry under `root`.
    pub fn open(root: &Path, max_blob_bytes: u64) -> Result<Self, String> {
        Ok(Self {
            blobs: blobs::BlobStore::open(root, max_blob_bytes).map_err(|e| e.to_string())?,
            manifests: manifests::ManifestStore::open(root).map_err(|e| e.to_string())?,
        })
    }
}

/// Longest repository name.
pub const MAX_REPOSITORY_BYTES: usize = 255;

/// Checks a repository name against the OCI Distribution spec's grammar:
/// `/`-separated path components of lower-case letters and digits, joined
/// inside a component by `.`, `_`, `__` or runs of `-`. So no `..`, no
/// empty segment, no upper case, and nothing a path could be tricked with.
pub fn validate_repository(name: &str) -> Result<(), String> {
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
