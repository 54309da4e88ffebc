//! The shared wasmtime [`Engine`]: component model, async, the pooling
//! allocator, epoch interruption driven by a ticker thread, optional fuel,
//! and an on-disk cache of precompiled components.

use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::LoadError;
use crate::limits::{MAX_INSTANCES, MAX_MEMORIES, MAX_MEMORY_BYTES, MAX_TABLES};

/// How often the epoch ticker advances the engine's epoch. A runaway guest is
/// stopped at most one tick after its deadline.
pub(crate) const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(10);
/// Bytes of each memory kept resident between instances by default. With
/// `PAGEMAP_SCAN` only the dirtied pages are reset, which more than halves
/// the per-event cost of a small agent (see the `floor` benchmark) for at
/// most this much resident memory per warm pool slot.
pub(crate) const DEFAULT_KEEP_RESIDENT: usize = 1 << 20;
/// Default number of agent instances that may be alive at once.
pub(crate) const DEFAULT_MAX_CONCURRENT_INSTANCES: u32 = 100;

/// The compile cache's default size cap.
pub(crate) const DEFAULT_CACHE_MAX_BYTES: u64 = 2 << 30;

/// Settings for a [`CageEngine`]. The defaults suit a daemon on a small
/// machine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Instances alive at once (one per running event); the pooling allocator
    /// reserves slots for this many up front. Default 100.
    pub max_concurrent_instances: u32,
    /// Epoch tick. Default 10 ms.
    pub epoch_tick: Duration,
    /// Whether fuel metering is compiled in. It costs some speed, so it is
    /// off unless an agent asks for a fuel limit. Default off.
    pub fuel: bool,
    /// Directory for precompiled components; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the cache keeps: past it, the artifacts used least
    /// recently are removed. Default 2 GiB (a JavaScript or Python agent
    /// compiles to about 35 MB).
    pub cache_max_bytes: u64,
    /// Use the pooling allocator (default) rather than on-demand allocation.
    pub pooling: bool,
    /// Bytes of each linear memory (and table) that the pool keeps resident
    /// between instances, resetting them in place instead of returning them
    /// to the kernel. Default 1 MiB.
    pub memory_keep_resident: usize,
    /// With `memory_keep_resident`, use Linux's `PAGEMAP_SCAN` to reset only
    /// the pages an instance dirtied. Default on (ignored where unsupported).
    pub pagemap_scan: bool,
    /// Return freed memory to the kernel in batches of this many slots
    /// rather than one `madvise` per instance. Default 1 (no batching).
    pub decommit_batch_size: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_concurrent_instances: DEFAULT_MAX_CONCURRENT_INSTANCES,
            epoch_tick: DEFAULT_EPOCH_TICK,
            fuel: false,
            cache_dir: None,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            pooling: true,
            memory_keep_resident: DEFAULT_KEEP_RESIDENT,
            pagemap_scan: true,
            decommit_batch_size: 1,
        }
    }
}

/// The engine every agent runs on, with its epoch ticker and compile cache.
#[derive(Clone)]
pub struct CageEngine {
    engine: Engine,
    options: EngineOptions,
    cache: Option<ComponentCache>,
}

impl std::fmt::Debug for CageEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CageEngine")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl CageEngine {
    /// Builds the engine and starts its epoch ticker. The ticker thread
    /// stops by itself once the last clone of the engine is dropped.
    pub fn new(options: EngineOptions) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(options.fuel);
        if options.pooling {
            let n = options.max_concurrent_instances.max(1);
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(n)
                // Every slot can hold the largest component an agent may be
                // (see `limits`), so one agent can never use up another's
                // share of core instances, memories or tables.
                .total_core_instances(n.saturating_mul(MAX_INSTANCES))
                .total_memories(n.saturating_mul(MAX_MEMORIES))
                .total_tables(n.saturating_mul(MAX_TABLES))
                .total_stacks(n)
                .max_core_instances_per_component(MAX_INSTANCES)
                .max_memories_per_component(MAX_MEMORIES)
                .max_tables_per_component(MAX_TABLES)
                .max_memory_size(MAX_MEMORY_BYTES as usize)
                .linear_memory_keep_resident(options.memory_keep_resident)
                .table_keep_resident(options.memory_keep_resident)
                .decommit_batch_size(options.decommit_batch_size.max(1))
                .pagemap_scan(if options.pagemap_scan {
                    Enabled::Auto
                } else {
                    Enabled::No
                });
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(LoadError::engine)?;
        start_epoch_ticker(&engine, options.epoch_tick);
        let cache = match &options.cache_dir {
            Some(dir) => {
                Some(ComponentCache::open(dir, &engine)?.with_max_bytes(options.cache_max_bytes))
            }
            None => None,
        };
        Ok(Self {
            engine,
            options,
            cache,
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The options the engine was built with.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Compiles `bytes` (a component whose sha256 is `sha256`), or loads the
    /// precompiled artifact from the cache when there is one.
    pub fn compile(
        &self,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<(Component, CacheOutcome), LoadError> {
        match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, bytes, sha256),
            None => Component::new(&self.engine, bytes)
                .map(|c| (c, CacheOutcome::Disabled))
                .map_err(LoadError::compile),
        }
    }
}

fn start_epoch_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("clawcage-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Whether a compile was served from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded a precompiled artifact; nothing was compiled.
    Hit,
    /// Compiled, and stored the artifact for next time.
    Miss,
    /// Compiled; no cache is configured.
    Disabled,
}

/// Precompiled components on disk, keyed by the component's sha256 and the
/// engine's compatibility hash (so a different wasmtime version or engine
/// configuration never loads an incompatible artifact).
///
/// The directory is created with mode 0700 and refused when others can write
/// to it: a precompiled artifact is native code that runs in this process.
#[derive(Debug, Clone)]
pub(crate) struct ComponentCache {
    dir: PathBuf,
    engine_hash: String,
    max_bytes: u64,
}

/// One precompiled artifact in a cache directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct CachedArtifact {
    /// The component's sha256.
    pub sha256: String,
    /// The engine compatibility hash it was compiled for.
    pub engine: String,
    /// Whether this engine (this build and configuration) can load it.
    pub current: bool,
    /// Its size.
    pub bytes: u64,
    /// When it was last loaded or stored (Unix seconds).
    pub last_used: i64,
    /// Its path.
    #[serde(skip)]
    pub path: PathBuf,
}

/// The artifacts in cache directory `dir`, least recently used first.
/// Files that are not artifacts are left out.
pub(crate) fn cached_artifacts(
    dir: &Path,
    current_engine: Option<&str>,
) -> std::io::Result<Vec<CachedArtifact>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((sha256, engine)) = name
            .strip_suffix(".cwasm")
            .and_then(|stem| stem.split_once('-'))
        else {
            continue;
        };
        let metadata = entry.metadata()?;
        if !metadata.is_file() {
            continue;
        }
        let last_used = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        out.push(CachedArtifact {
            sha256: sha256.to_string(),
            engine: engine.to_string(),
            current: current_engine == Some(engine),
            bytes: metadata.len(),
            last_used,
            path: entry.path(),
        });
    }
    out.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.sha256.cmp(&b.sha256)));
    Ok(out)
}

/// Removes the least recently used artifacts of `dir` until at most
/// `max_bytes` remain, never `keep`; returns what was removed.
pub(crate) fn evict(
    dir: &Path,
    max_bytes: u64,
    keep: Option<&Path>,
) -> std::io::Result<Vec<CachedArtifact>> {
    let artifacts = cached_artifacts(dir, None)?;
    let mut total: u64 = artifacts.iter().map(|a| a.bytes).sum();
    let mut removed = Vec::new();
    for artifact in artifacts {
        if total <= max_bytes {
            break;
        }
        if keep == Some(artifact.path.as_path()) {
            continue;
        }
        fs::remove_file(&artifact.path)?;
        total -= artifact.bytes;
        removed.push(artifact);
    }
    Ok(removed)
}

impl ComponentCache {
    /// Opens (creating if needed) the cache at `dir` for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, LoadError> {
        crate::fsutil::create_private_dir(dir)
            .map_err(|e| LoadError::Cache(format!("{}: {e}", dir.display())))?;
        let mut hasher = Sha256Hasher(ring::digest::Context::new(&ring::digest::SHA256));
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hex::encode(&hasher.0.finish().as_ref()[..16]);
        Ok(Self {
            dir: dir.to_path_buf(),
            engine_hash,
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
        })
    }

    /// This cache with a size cap of `max_bytes`.
    pub(crate) fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    fn artifact_path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.cwasm", self.engine_hash))
    }

    /// Loads the artifact for `sha256`, or compiles `bytes` and stores it.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<(Component, CacheOutcome), LoadError> {
        let path = self.artifact_path(sha256);
        match self.load_artifact(engine, &path) {
            Ok(Some(component)) => {
                // Mark it used, for least-recently-used eviction.
                let touched = fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                if let Err(e) = touched {
                    tracing::debug!(path = %path.display(), error = %e, "could not mark a cached component used");
                }
                return Ok((component, CacheOutcome::Hit));
            }
            Ok(None) => {}
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "discarding unusable precompiled component");
                let _ = fs::remove_file(&path);
            }
        }
        let artifact = engine
            .precompile_component(bytes)
            .map_err(LoadError::compile)?;
        if let Err(e) = crate::fsutil::write_atomically(&path, &artifact) {
            tracing::warn!(path = %path.display(), error = %e, "could not store precompiled component");
        }
        match evict(&self.dir, self.max_bytes, Some(&path)) {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(
                    removed = removed.len(),
                    freed_bytes = removed.iter().map(|a| a.bytes).sum::<u64>(),
                    "evicted least recently used precompiled components"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not evict precompiled components")
            }
        }
        #[allow(unsafe_code)]
        // SAFETY: the bytes were produced by `precompile_component` on this
        // very engine a moment ago.
        let component =
            unsafe { Component::deserialize(engine, &artifact) }.map_err(LoadError::compile)?;
        Ok((component, CacheOutcome::Miss))
    }
}

impl ComponentCache {
    /// Loads a cached artifact if there is one. Only a regular file that this
    /// user owns and no one else can write is trusted.
    fn load_artifact(&self, engine: &Engine, path: &Path) -> Result<Option<Component>, String> {
        match fs::symlink_metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
        crate::fsutil::check_owned_file(path).map_err(|e| e.to_string())?;
        let bytes = fs::read(path).map_err(|e| e.to_string())?;
        // SAFETY: `deserialize` trusts the bytes to be an artifact that this
        // engine configuration produced. Only this cache writes into the
        // directory (0700, owned by us, checked when opened), the file was
        // just checked to be ours and not writable by others, its name binds
        // the component's sha256 and the engine's compatibility hash, and
        // wasmtime itself checks the artifact's header and version.
        #[allow(unsafe_code)]
        let component =
            unsafe { Component::deserialize(engine, &bytes) }.map_err(|e| format!("{e:#}"))?;
        Ok(Some(component))
    }
}

struct Sha256Hasher(ring::digest::Context);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn artifact(dir: &Path, sha: &str, engine: &str, bytes: usize, age_secs: u64) -> PathBuf {
        let path = dir.join(format!("{sha}-{engine}.cwasm"));
        fs::write(&path, vec![0u8; bytes]).unwrap();
        let when = std::time::SystemTime::now() - Duration::from_secs(age_secs);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        path
    }

    #[test]
    fn the_least_recently_used_artifacts_go_first_until_the_cache_fits() {
        let dir = tempfile::tempdir().unwrap();
        artifact(dir.path(), "aaa", "e1", 100, 300);
        artifact(dir.path(), "bbb", "e1", 100, 200);
        let newest = artifact(dir.path(), "ccc", "e2", 100, 10);
        fs::write(dir.path().join("notes.txt"), "not an artifact").unwrap();

        let listed = cached_artifacts(dir.path(), Some("e1")).unwrap();
        let order: Vec<(&str, bool)> = listed
            .iter()
            .map(|a| (a.sha256.as_str(), a.current))
            .collect();
        assert_eq!(order, [("aaa", true), ("bbb", true), ("ccc", false)]);

        let removed = evict(dir.path(), 150, None).unwrap();
        let removed: Vec<&str> = removed.iter().map(|a| a.sha256.as_str()).collect();
        assert_eq!(removed, ["aaa", "bbb"]);
        assert!(newest.exists());
        // The artifact just stored is kept even when it alone is too big.
        assert!(evict(dir.path(), 0, Some(&newest)).unwrap().is_empty());
        assert!(dir.path().join("notes.txt").exists());
    }
}
