//! Garbage collection: blobs that no manifest names, their links, and the
//! compiled artifacts of the components among them.
//!
//! What is kept:
//! - every blob a stored manifest names (config and layers) and its
//!   repository links (a blob a repository let go of with `DELETE` goes,
//!   even if a manifest still names it);
//! - every component a deployed agent runs, whatever the registry says;
//! - every blob or link younger than the grace period, so the blobs of a
//!   push whose manifest has not arrived yet are never taken from it.
//!
//! A collection holds the registry's write lock; storing a manifest and
//! finishing an upload hold its read lock. So a manifest is either stored
//! before the mark (and its blobs are marked) or checked after the sweep
//! (and finds its blobs, or is refused with `MANIFEST_BLOB_UNKNOWN`): a
//! stored manifest never names a collected blob.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Registry;
use super::blobs::Digest;

/// How long a blob or link that no manifest names is kept: time for a
/// client to push the manifest after its blobs.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Collection {
    /// Manifests read for the mark.
    pub manifests: u64,
    /// Blobs removed.
    pub blobs_removed: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Repository links removed.
    pub links_removed: u64,
    /// Compiled artifacts removed.
    pub artifacts_removed: u64,
    /// Unnamed blobs and links kept because they are younger than the
    /// grace period.
    pub kept_young: u64,
}

fn older_than(path: &Path, cutoff: SystemTime) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|modified| modified < cutoff)
}

impl Registry {
    /// Collects garbage: see the module's documentation. `deployed` are the
    /// sha256 digests (hex) of the components deployed agents run;
    /// `cache_dir` is the compile cache, if any.
    pub fn collect(
        &self,
        deployed: &HashSet<String>,
        grace: Duration,
        cache_dir: Option<&Path>,
    ) -> Collection {
        let _exclusive = self.gc.write().unwrap_or_else(|e| e.into_inner());
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = Collection::default();
        // Mark: every blob a manifest names, per repository.
        let mut named_in: HashSet<(String, String)> = HashSet::new();
        for (repository, _, bytes) in self.manifests.all() {
            report.manifests += 1;
            let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let descriptors = manifest.get("config").into_iter().chain(
                manifest
                    .get("layers")
                    .and_then(serde_json::Value::as_array)
                    .into_iter()
                    .flatten(),
            );
            for descriptor in descriptors {
                if let Some(Ok(digest)) = descriptor
                    .get("digest")
                    .and_then(serde_json::Value::as_str)
                    .map(Digest::parse)
                {
                    named_in.insert((repository.clone(), digest.hex().to_string()));
                }
            }
        }
        // Links no manifest of their repository names.
        let mut linked: HashSet<String> = HashSet::new();
        for repository in fs::read_dir(self.blobs.link_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = repository.file_name().to_string_lossy().replace('+', "/");
            for link in fs::read_dir(repository.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let hex = link.file_name().to_string_lossy().to_string();
                if hex.starts_with(".tmp-") {
                    continue;
                }
                if named_in.contains(&(name.clone(), hex.clone())) || deployed.contains(&hex) {
                    linked.insert(hex);
                } else if !older_than(&link.path(), cutoff) {
                    report.kept_young += 1;
                    linked.insert(hex);
                } else if fs::remove_file(link.path()).is_ok() {
                    report.links_removed += 1;
                }
            }
        }
        // Blobs nothing names or links.
        let mut removed = HashSet::new();
        for blob in fs::read_dir(self.blobs.blob_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let hex = blob.file_name().to_string_lossy().to_string();
            // Kept only while a repository links it (or an agent runs it):
            // a blob its repository let go of (a blob DELETE) goes, even if
            // a manifest still names it, so a deleted blob never stays
            // on disk uncounted by any quota.
            if linked.contains(&hex) || deployed.contains(&hex) {
                continue;
            }
            if !older_than(&blob.path(), cutoff) {
                report.kept_young += 1;
                continue;
            }
            let size = blob.metadata().map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(blob.path()).is_ok() {
                report.blobs_removed += 1;
                report.bytes_freed += size;
                removed.insert(hex);
            }
        }
        // Their compiled artifacts.
        if let Some(dir) = cache_dir
            && let Ok(artifacts) = crate::engine::cached_artifacts(dir, None)
        {
            for artifact in artifacts {
                if removed.contains(&artifact.sha256) && fs::remove_file(&artifact.path).is_ok() {
                    report.artifacts_removed += 1;
                }
            }
        }
        self.blobs.recount(None);
        report
    }
}
