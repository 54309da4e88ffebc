//! The CNCF "Wasm OCI Artifact" layout, as ClawCage pushes and checks it.
//!
//! A component is one OCI image manifest with:
//! - a config blob of media type [`CONFIG_TYPE`]: `architecture: "wasm"`,
//!   `os: "wasip2"`, `layerDigests`, and `component.imports`/`exports`,
//!   the component's top-level import and export names;
//! - exactly one layer of media type [`LAYER_TYPE`]: the component itself.
//!
//! The registry checks a pushed config against the layer it describes: the
//! architecture and os must be right, and when the config lists imports,
//! exports or layer digests, they must be the layer's. Clients that write
//! a bare config (`oras` with a hand-written one) are accepted, since the
//! layer itself is what gets validated and compiled.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::blobs::Digest;

/// The config's media type.
pub const CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The layer's media type.
pub const LAYER_TYPE: &str = "application/wasm";
/// The OCI image manifest media type.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// What a component's config says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInterfaces {
    /// Top-level import names (`wasi:cli/environment@0.2.6`, …), sorted.
    #[serde(default)]
    pub imports: Vec<String>,
    /// Top-level export names (`clawcage:agent/handler@0.2.0`), sorted.
    #[serde(default)]
    pub exports: Vec<String>,
    /// The world it targets, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The config blob of a Wasm OCI artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// When it was built (RFC 3339), if the client says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip2` for components.
    pub os: String,
    /// The layers' digests.
    #[serde(default)]
    pub layer_digests: Vec<String>,
    /// The component's interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentInterfaces>,
}

/// The world every ClawCage agent targets.
pub(crate) const AGENT_WORLD: &str = "clawcage:agent/agent";

/// Reads a component's top-level imports and exports (not those of the
/// modules and components nested inside it). Does not validate it: the
/// engine does that when it compiles.
pub(crate) fn interfaces(bytes: &[u8]) -> Result<ComponentInterfaces, String> {
    use wasmparser::{Parser, Payload};
    let mut imports = BTreeSet::new();
    let mut exports = BTreeSet::new();
    // Each module or component, the outer one included, starts with a
    // `Version` payload and ends with an `End`; depth 1 is the outer one.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a well-formed component: {e}"))? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != wasmparser::Encoding::Component {
                    return Err("it is a core wasm module, not a component".into());
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    let import = import.map_err(|e| e.to_string())?;
                    imports.insert(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    let export = export.map_err(|e| e.to_string())?;
                    exports.insert(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(ComponentInterfaces {
        imports: imports.into_iter().collect(),
        exports: exports.into_iter().collect(),
        target: Some(AGENT_WORLD.to_string()),
    })
}

/// The config ClawCage pushes for `component`. It has no `created` time, so
/// the same component always gives the same manifest and digest: pushing a
/// version again is an idempotent retry, not an attempt to move the tag.
pub fn config_for(component: &[u8]) -> Result<WasmConfig, String> {
    Ok(WasmConfig {
        created: None,
        architecture: "wasm".into(),
        os: "wasip2".into(),
        layer_digests: vec![Digest::of(component).to_string()],
        component: Some(interfaces(component)?),
    })
}

/// An OCI descriptor.
pub(crate) fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": Digest::of(bytes).to_string(),
        "size": bytes.len(),
    })
}

/// The image manifest for a component and its config.
pub fn manifest_for(config: &[u8], component: &[u8]) -> Vec<u8> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": CONFIG_TYPE,
        "config": descriptor(CONFIG_TYPE, config),
        "layers": [descriptor(LAYER_TYPE, component)],
    });
    serde_json::to_vec(&manifest).unwrap_or_default()
}

/// Checks a pushed config against its layer; the error says what is wrong.
pub(crate) fn check_config(config: &[u8], layer: &[u8]) -> Result<(), String> {
    let config: WasmConfig = serde_json::from_slice(config)
        .map_err(|e| format!("the config is not a Wasm OCI config: {e}"))?;
    if config.architecture != "wasm" || config.os != "wasip2" {
        return Err(format!(
            "the config says architecture {:?} and os {:?}; a component is \"wasm\" and \"wasip2\"",
            config.architecture, config.os
        ));
    }
    let digest = Digest::of(layer).to_string();
    if !config.layer_digests.is_empty() && config.layer_digests != [digest.clone()] {
        return Err(format!(
            "the config's layerDigests {:?} are not the layer's [{digest:?}]",
            config.layer_digests
        ));
    }
    if let Some(claimed) = &config.component {
        let actual = interfaces(layer)?;
        let sorted = |names: &[String]| names.iter().cloned().collect::<BTreeSet<_>>();
        for (what, claimed, actual) in [
            ("imports", &claimed.imports, &actual.imports),
            ("exports", &claimed.exports, &actual.exports),
        ] {
            if sorted(claimed) != sorted(actual) {
                return Err(format!(
                    "the config's component.{what} {claimed:?} are not the component's {actual:?}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_the_outer_components_only() {
        let component = wat::parse_str(
            r#"(component
                 (import "wasi:http/outgoing-handler@0.2.6" (instance))
                 (component $inner
                   (import "inner:only/thing" (instance))
                 )
               )"#,
        )
        .unwrap();
        let found = interfaces(&component).unwrap();
        assert_eq!(found.imports, ["wasi:http/outgoing-handler@0.2.6"]);
        assert!(found.exports.is_empty());
        assert!(
            interfaces(&wat::parse_str("(module)").unwrap())
                .unwrap_err()
                .contains("core wasm module")
        );
        assert!(interfaces(b"\0asm\x0d\0\x01\0garbage").is_err());
    }

    #[test]
    fn configs_must_describe_their_layer() {
        let component = wat::parse_str(r#"(component (import "a:b/c" (instance)))"#).unwrap();
        let config = serde_json::to_vec(&config_for(&component).unwrap()).unwrap();
        check_config(&config, &component).unwrap();
        let other = wat::parse_str("(component)").unwrap();
        assert!(
            check_config(&config, &other)
                .unwrap_err()
                .contains("layerDigests")
        );
        let bare = br#"{"architecture":"wasm","os":"wasip2"}"#;
        check_config(bare, &other).unwrap();
        let lying =
            br#"{"architecture":"wasm","os":"wasip2","component":{"imports":[],"exports":[]}}"#;
        assert!(
            check_config(lying, &component)
                .unwrap_err()
                .contains("component.imports")
        );
        assert!(check_config(br#"{"architecture":"amd64","os":"linux"}"#, &other).is_err());
        assert!(check_config(b"not json", &other).is_err());
    }
}
