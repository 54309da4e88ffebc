//! Deployments: bundles checked, written beside the other agents and swapped
//! in atomically, every change or refusal an audit record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::agents::{AgentInfo, ORIGIN_FILE, Origin, deployment_record, refused_record};
use super::{Daemon, DaemonError, random_id};
use crate::manifest::Manifest;

/// Largest component in a deployment.
pub const MAX_COMPONENT_BYTES: usize = crate::limits::MAX_COMPONENT_BYTES as usize;
/// Most extra files (cassettes) in a deployment, and their total size.
pub const MAX_BUNDLE_FILES: usize = 16;
/// Largest extra file.
pub const MAX_BUNDLE_FILE_BYTES: usize = 16 << 20;

/// What a deployment carries.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The manifest, as TOML. Its `component` is replaced by the bundle's,
    /// or resolved from the registry when it names `component.registry`.
    pub manifest: String,
    /// The component, base64; absent to deploy the manifest's
    /// `component.registry` reference from the daemon's registry.
    #[serde(default)]
    pub component: Option<String>,
    /// Files the manifest names (cassettes), by bare file name, as text.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

impl Bundle {
    /// A bundle from a manifest file: its component, and every cassette it
    /// names, read from beside it (paths become bare file names).
    pub fn from_manifest_file(path: &Path) -> Result<Self, String> {
        use base64::Engine as _;
        let mut manifest = Manifest::load(path).map_err(|e| e.to_string())?;
        let dir = path.parent().unwrap_or(Path::new("."));
        // A registry reference is resolved by the daemon; a path is uploaded.
        let component = match manifest.component.path.clone() {
            Some(component_path) => Some(
                crate::fsutil::read_bounded(
                    &dir.join(&component_path),
                    crate::limits::MAX_COMPONENT_BYTES,
                )
                .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let mut files = BTreeMap::new();
        let mut take = |cassette: &mut Option<PathBuf>| -> Result<(), String> {
            if let Some(file) = cassette.as_mut() {
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or("a cassette path has no file name")?
                    .to_string();
                if !files.contains_key(&name) {
                    let text = std::fs::read_to_string(dir.join(&*file))
                        .map_err(|e| format!("{}: {e}", file.display()))?;
                    files.insert(name.clone(), text);
                }
                *file = PathBuf::from(name);
            }
            Ok(())
        };
        for binding in manifest.models.values_mut() {
            take(&mut binding.cassette)?;
        }
        for grant in manifest.tools.values_mut() {
            take(&mut grant.cassette)?;
        }
        if component.is_some() {
            manifest.component.path = Some(PathBuf::from("component.wasm"));
        }
        Ok(Self {
            manifest: toml::to_string(&manifest).map_err(|e| e.to_string())?,
            component: component.map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
            files,
        })
    }

    /// Deploys the registry component `reference` instead of the manifest's
    /// own component.
    pub(crate) fn with_registry_component(mut self, reference: &str) -> Result<Self, String> {
        let mut manifest = Manifest::from_toml(&self.manifest).map_err(|e| e.to_string())?;
        manifest.component.path = None;
        manifest.component.registry = Some(reference.to_string());
        self.manifest = toml::to_string(&manifest).map_err(|e| e.to_string())?;
        self.component = None;
        Ok(self)
    }
}

/// Checks a bundle file name: a bare name, no path.
fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl Daemon {
    /// Deploys (or replaces) an agent from a bundle. The files are written
    /// to a fresh directory and loaded from there; only if that succeeds does
    /// the new version replace the old, for the next event.
    ///
    /// A bundle without a component deploys the manifest's
    /// `component.registry` reference from the daemon's registry, if the
    /// trust policy (`trust.toml` in the state directory, read at every
    /// deployment) allows it. A refused deployment is an audit record too.
    pub fn deploy(
        &self,
        name: &str,
        bundle: Bundle,
        actor: &str,
    ) -> Result<AgentInfo, DaemonError> {
        let _lifecycle = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        let mut source = None;
        let result = self
            .checked(name, &bundle, &mut source)
            .map_err(DaemonError::InvalidDeployment)
            .and_then(|(manifest, component, origin)| {
                self.install(name, manifest, &component, origin, &bundle.files, actor)
            });
        if let Err(reason) = &result {
            tracing::warn!(agent = %name, %actor, %reason, "deployment refused");
            self.audit
                .append(refused_record(name, actor, source, reason.to_string()));
        }
        result
    }

    /// Deploys registry component `reference` (`repository@version` or
    /// `repository@sha256:…`) to the deployed agent `name`, keeping its
    /// manifest as deployed (grants, limits, budget, triggers, cassettes)
    /// and its operator overrides. The trust policy decides, as for any
    /// deployment by reference.
    pub fn deploy_version(
        &self,
        name: &str,
        reference: &str,
        actor: &str,
    ) -> Result<AgentInfo, DaemonError> {
        crate::registry::parse_reference(reference).map_err(DaemonError::Invalid)?;
        if self.agent(name).is_none() {
            return Err(DaemonError::UnknownAgent(name.to_string()));
        }
        let dir = self.agents_dir().join(name);
        let mut manifest = Manifest::load(&dir.join("agent.toml"))
            .map_err(|e| DaemonError::host("agent.toml", e))?;
        let mut files = BTreeMap::new();
        let cassettes = manifest
            .models
            .values()
            .filter_map(|m| m.cassette.clone())
            .chain(manifest.tools.values().filter_map(|t| t.cassette.clone()));
        for cassette in cassettes {
            let file = cassette.to_string_lossy().to_string();
            let text = std::fs::read_to_string(dir.join(&file))
                .map_err(|e| DaemonError::host(&file, e))?;
            files.insert(file, text);
        }
        manifest.component.path = None;
        manifest.component.sha256 = None;
        manifest.component.registry = Some(reference.to_string());
        let bundle = Bundle {
            manifest: toml::to_string(&manifest).map_err(|e| DaemonError::host("agent.toml", e))?,
            component: None,
            files,
        };
        self.deploy(name, bundle, actor)
    }

    /// Checks a bundle: its manifest (named `name`, trigger secrets in the
    /// vault), its component (sent, or resolved from the registry under the
    /// trust policy) and its files. Answers the manifest as it will be
    /// written, the component and its origin.
    fn checked(
        &self,
        name: &str,
        bundle: &Bundle,
        source: &mut Option<String>,
    ) -> Result<(Manifest, Vec<u8>, Option<Origin>), String> {
        use base64::Engine as _;
        let mut manifest = Manifest::from_toml(&bundle.manifest).map_err(|e| e.to_string())?;
        if manifest.name != name {
            return Err(format!(
                "the manifest names agent {:?}, not {name:?}",
                manifest.name
            ));
        }
        self.check_trigger_secrets(&manifest)?;
        let mut origin = None;
        let component = match (&bundle.component, &manifest.component.registry) {
            (Some(_), Some(reference)) => {
                return Err(format!(
                    "the bundle carries a component and the manifest names component.registry = {reference:?}: send one"
                ));
            }
            (Some(encoded), None) => base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| format!("component: not base64: {e}"))?,
            (None, Some(reference)) => {
                *source = Some(reference.clone());
                let registry = self.registry().ok_or("this daemon has no registry")?;
                let policy = self.trust_policy()?;
                let resolved = registry.resolve(reference, &policy)?;
                *source = Some(resolved.pinned());
                origin = Some(Origin {
                    reference: resolved.pinned(),
                    requested: reference.clone(),
                    signer: resolved.signer.clone(),
                });
                // Pinned, so the copy under agents/ is checked at every load.
                if manifest.component.sha256.is_none() {
                    manifest.component.sha256 = Some(hex::encode(
                        ring::digest::digest(&ring::digest::SHA256, &resolved.component).as_ref(),
                    ));
                }
                resolved.component
            }
            (None, None) => {
                return Err(
                    "the bundle has no component and the manifest no component.registry".into(),
                );
            }
        };
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(format!(
                "component: larger than {MAX_COMPONENT_BYTES} bytes"
            ));
        }
        if bundle.files.len() > MAX_BUNDLE_FILES {
            return Err(format!("more than {MAX_BUNDLE_FILES} files"));
        }
        for (file, text) in &bundle.files {
            if !valid_file_name(file)
                || file == "agent.toml"
                || file == "component.wasm"
                || file == ORIGIN_FILE
            {
                return Err(format!("file name {file:?} must be a bare file name"));
            }
            if text.len() > MAX_BUNDLE_FILE_BYTES {
                return Err(format!(
                    "file {file:?}: larger than {MAX_BUNDLE_FILE_BYTES} bytes"
                ));
            }
        }
        manifest.component.path = Some(PathBuf::from("component.wasm"));
        manifest.component.registry = None;
        Ok((manifest, component, origin))
    }

    /// Writes a checked deployment to a fresh directory, loads it from
    /// there, and only then swaps it in for the next event. A component
    /// that does not load is the deployment's fault; a file that cannot be
    /// written is the host's.
    fn install(
        &self,
        name: &str,
        manifest: Manifest,
        component: &[u8],
        origin: Option<Origin>,
        files: &BTreeMap<String, String>,
        actor: &str,
    ) -> Result<AgentInfo, DaemonError> {
        let agents_dir = self.agents_dir();
        crate::fsutil::create_private_dir(&agents_dir)
            .map_err(|e| DaemonError::host(agents_dir.display(), e))?;
        let staging = agents_dir.join(format!(".{name}.{}", random_id("")));
        let written = (|| -> Result<(), DaemonError> {
            crate::fsutil::create_private_dir(&staging)
                .map_err(|e| DaemonError::host(staging.display(), e))?;
            let toml =
                toml::to_string(&manifest).map_err(|e| DaemonError::host("agent.toml", e))?;
            let write = |file: &str, bytes: &[u8]| {
                crate::fsutil::write_atomically(&staging.join(file), bytes)
                    .map_err(|e| DaemonError::host(staging.join(file).display(), e))
            };
            write("agent.toml", toml.as_bytes())?;
            write("component.wasm", component)?;
            if let Some(origin) = &origin {
                let json =
                    serde_json::to_vec(origin).map_err(|e| DaemonError::host(ORIGIN_FILE, e))?;
                write(ORIGIN_FILE, &json)?;
            }
            for (file, text) in files {
                write(file, text.as_bytes())?;
            }
            Ok(())
        })();
        let loaded = written.and_then(|()| {
            self.load_from(&staging)
                .map_err(DaemonError::InvalidDeployment)
        });
        let deployed = match loaded {
            Ok(deployed) => deployed,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        // Swap directories: the old version's files go away once the new
        // one is in place.
        let target = agents_dir.join(name);
        let retired = agents_dir.join(format!(".{name}.old.{}", random_id("")));
        let had_old = target.exists();
        if had_old && let Err(e) = std::fs::rename(&target, &retired) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(DaemonError::host(target.display(), e));
        }
        if let Err(e) = std::fs::rename(&staging, &target) {
            if had_old {
                let _ = std::fs::rename(&retired, &target);
            }
            let _ = std::fs::remove_dir_all(&staging);
            return Err(DaemonError::host(target.display(), e));
        }
        let _ = std::fs::remove_dir_all(&retired);
        // The loaded agent read its files from the staging path, which no
        // longer exists; everything it needs is already in memory.
        // (`deployed.origin` is the `origin` written with it.)
        self.audit
            .append(deployment_record("deploy", name, &deployed, actor, None));
        self.write_agents()
            .insert(name.to_string(), Arc::new(deployed));
        self.list()
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| DaemonError::UnknownAgent(name.to_string()))
    }

    /// Every trigger's signing secret is a live webhook secret in the vault:
    /// otherwise the agent would deploy and every delivery fail as "bad
    /// signature".
    pub(super) fn check_trigger_secrets(&self, manifest: &Manifest) -> Result<(), String> {
        for (index, trigger) in manifest.triggers.iter().enumerate() {
            let Some(id) = &trigger.secret else { continue };
            let at = format!("triggers[{index}].secret {id:?}");
            match self.services.vault.info(id) {
                Ok(info) if info.revoked_at.is_some() => {
                    return Err(format!("{at} was revoked; add a new signing secret"));
                }
                Ok(info) if info.provider != "webhook" => {
                    return Err(format!(
                        "{at} is a {} key, not a webhook signing secret",
                        info.provider
                    ));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "{at} is not in the vault: add it first with `clawcage key add {id} --provider webhook`"
                    ));
                }
            }
        }
        Ok(())
    }
}
