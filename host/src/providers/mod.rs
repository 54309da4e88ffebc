//! Model providers: the wire formats of Anthropic's Messages API and
//! OpenAI's Chat Completions (and compatible servers), an HTTP client built
//! on rustls with ring, and the bound-model backend that ties a binding to
//! a provider, a vault key, the usage ledger and the leak guard.

pub mod anthropic;
pub mod assemble;
pub mod binding;
mod call;
mod exchange;
pub mod http;
pub mod mock;
pub mod model;
pub mod openai;
pub mod replay;
pub mod rules;
pub mod sse;
mod stream;
pub mod target;

use std::path::Path;
use std::sync::Arc;

use crate::bindings::inference::{ContentPart, StopReason};
use crate::error::LoadError;
use crate::inference::ModelBindings;
use crate::manifest::Manifest;
use binding::Services;
use model::BoundModel;
use replay::{Cassette, ReplayModel};

/// A non-streamed answer, decoded from either wire format.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The model id the provider reports (empty when it reports none).
    pub model: String,
    /// The generated content.
    pub content: Vec<ContentPart>,
    /// Why generation stopped.
    pub stop_reason: StopReason,
    /// The token counts, when the provider reported input and output.
    pub usage: Option<assemble::UsageUpdate>,
}

/// The `error.message` of a provider's error body (Anthropic and OpenAI
/// both put it there), if it has one.
pub(crate) fn error_message(body: &serde_json::Value) -> Option<String> {
    body.pointer("/error/message")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

/// A string field of a provider's JSON object, or empty when absent.
fn str_field(value: &serde_json::Value, field: &str) -> String {
    value
        .get(field)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Whether a provider answers offline, from the manifest or a file (no
/// key, no network, no usage recorded): `replay` and `mock`.
pub(crate) fn is_offline(provider: &str) -> bool {
    matches!(provider, "replay" | "mock")
}

/// The model bindings a manifest asks for, each checked now (provider
/// rules, URL policy, time limits, keys, prices for a budget): live models
/// through `services`' vault and ledger, or replayed from a cassette. The
/// cage composes them with the tools; the providers build them.
pub(crate) fn bind(
    manifest: &Manifest,
    base_dir: &Path,
    services: Option<&Arc<Services>>,
) -> Result<Arc<ModelBindings>, LoadError> {
    let mut bindings = ModelBindings::new();
    for (name, spec) in &manifest.models {
        if !spec.replies.is_empty() && spec.provider != "mock" {
            return Err(LoadError::Manifest(format!(
                "models.{name}.replies are for the mock provider only"
            )));
        }
        if spec.provider == "mock" {
            if spec.key.is_some()
                || spec.base_url.is_some()
                || spec.cassette.is_some()
                || !spec.fallbacks.is_empty()
                || spec.timeouts != crate::manifest::ModelTimeouts::default()
                || spec.dialect.is_some()
                || spec.allow_http
            {
                return Err(LoadError::Manifest(format!(
                    "models.{name}: the mock provider answers from its replies; key, base_url, cassette, fallbacks, timeouts, dialect and allow_http do not apply to it"
                )));
            }
            mock::validate(name, &spec.replies).map_err(LoadError::Manifest)?;
            bindings.insert(
                name.clone(),
                Arc::new(mock::MockModel {
                    model: spec.model.clone(),
                    replies: spec.replies.clone(),
                }),
            );
            continue;
        }
        if spec.provider == "replay" {
            if !spec.fallbacks.is_empty()
                || spec.timeouts != crate::manifest::ModelTimeouts::default()
                || spec.dialect.is_some()
                || spec.allow_http
            {
                return Err(LoadError::Manifest(format!(
                    "models.{name}: the replay provider answers from its cassette; fallbacks, timeouts, dialect and allow_http do not apply to it"
                )));
            }
            let Some(path) = &spec.cassette else {
                return Err(LoadError::Manifest(format!(
                    "models.{name}.cassette is required for the replay provider"
                )));
            };
            let cassette = Cassette::load(&base_dir.join(path)).map_err(LoadError::Manifest)?;
            bindings.insert(
                name.clone(),
                Arc::new(ReplayModel {
                    binding: name.clone(),
                    model: spec.model.clone(),
                    cassette: Arc::new(cassette),
                }),
            );
            continue;
        }
        let Some(services) = services else {
            return Err(LoadError::Unsupported(format!(
                "models.{name} uses {}; that needs a state directory with the key vault (`clawcage init`, then --state-dir)",
                spec.provider
            )));
        };
        let model = BoundModel::from_manifest(
            &manifest.name,
            name,
            spec,
            &manifest.budget,
            manifest.limits.deadline(),
            services,
        )
        .map_err(LoadError::Manifest)?;
        bindings.insert(name.clone(), Arc::new(model));
    }
    Ok(Arc::new(bindings))
}
