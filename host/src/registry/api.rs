//! The OCI Distribution API (v2) routes, served by the daemon: blobs,
//! chunked and monolithic uploads, manifests by tag or digest, tag lists,
//! the spec's JSON errors, and publisher tokens over HTTP Basic (any user
//! name, the token as password) or Bearer, with a `WWW-Authenticate`
//! challenge so standard clients log in the usual way.
//!
//! Not yet: validation of pushed components against the `clawcage:agent`
//! world, precompilation, signatures, and deploying by reference.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};

use super::Registry;
use super::blobs::{BlobError, Digest};
use super::manifests::ManifestError;
use crate::daemon::Daemon;

/// An error in the spec's shape: `{"errors": [{"code", "message"}]}`.
struct OciError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl OciError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let body =
            json!({"errors": [{"code": self.code, "message": self.message, "detail": null}]});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"clawcage\""),
            );
        }
        response
    }
}

impl From<BlobError> for OciError {
    fn from(e: BlobError) -> Self {
        let status = match e {
            BlobError::Unknown | BlobError::UploadUnknown => StatusCode::NOT_FOUND,
            BlobError::RangeInvalid { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            BlobError::TooManyUploads => StatusCode::TOO_MANY_REQUESTS,
            BlobError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<ManifestError> for OciError {
    fn from(e: ManifestError) -> Self {
        let status = match e {
            ManifestError::Unknown | ManifestError::NameUnknown => StatusCode::NOT_FOUND,
            ManifestError::Immutable { .. } => StatusCode::FORBIDDEN,
            ManifestError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

/// The token in a Basic or Bearer `Authorization` header.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().to_string());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_string())
}

fn authenticate(daemon: &Daemon, headers: &HeaderMap) -> Result<String, OciError> {
    presented_token(headers)
        .and_then(|token| daemon.tokens.authenticate(&token))
        .ok_or_else(|| {
            OciError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required: a ClawCage API token as the password",
            )
        })
}

/// The routes, for merging into the daemon's router.
pub fn routes(daemon: Arc<Daemon>, max_blob_bytes: usize) -> Router {
    Router::new()
        .route("/v2/", get(root))
        .route("/v2/{*path}", any(dispatch))
        .layer(DefaultBodyLimit::max(max_blob_bytes + (1 << 20)))
        .with_state(daemon)
}

async fn root(State(daemon): State<Arc<Daemon>>, headers: HeaderMap) -> Response {
    match authenticate(&daemon, &headers) {
        Ok(_) => (StatusCode::OK, axum::Json(json!({}))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// What a `/v2/<path>` names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'p> {
    Tags(&'p str),
    Manifest(&'p str, &'p str),
    Uploads(&'p str, &'p str),
    Blob(&'p str, &'p str),
}

fn parse(path: &str) -> Option<Target<'_>> {
    if let Some(name) = path.strip_suffix("/tags/list") {
        return Some(Target::Tags(name));
    }
    if let Some((name, reference)) = path.rsplit_once("/manifests/") {
        return Some(Target::Manifest(name, reference));
    }
    if let Some(name) = path.strip_suffix("/blobs/uploads/") {
        return Some(Target::Uploads(name, ""));
    }
    if let Some((name, session)) = path.rsplit_once("/blobs/uploads/") {
        return Some(Target::Uploads(name, session));
    }
    if let Some((name, digest)) = path.rsplit_once("/blobs/") {
        return Some(Target::Blob(name, digest));
    }
    None
}

fn check_name(name: &str) -> Result<(), OciError> {
    super::validate_repository(name)
        .map_err(|e| OciError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", e))
}

fn with_headers(
    status: StatusCode,
    headers: &[(header::HeaderName, String)],
    body: Body,
) -> Response {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name, value);
    }
    response
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn dispatch(
    State(daemon): State<Arc<Daemon>>,
    Path(path): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = authenticate(&daemon, &headers) {
        return e.into_response();
    }
    let Some(registry) = daemon.registry() else {
        return OciError::new(StatusCode::NOT_FOUND, "UNSUPPORTED", "no registry").into_response();
    };
    // Compiling a pushed component takes a while: off the async workers.
    let checker = daemon.clone();
    let check = move |bytes: &[u8]| tokio::task::block_in_place(|| checker.check_component(bytes));
    let result = match parse(&path) {
        Some(target) => handle(registry, target, &method, &query, &headers, body, &check),
        None => Err(OciError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("no route /v2/{path}"),
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn handle(
    registry: &Registry,
    target: Target<'_>,
    method: &Method,
    query: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
    check: &dyn Fn(&[u8]) -> Result<String, String>,
) -> Result<Response, OciError> {
    let blob_location = |name: &str, digest: &Digest| format!("/v2/{name}/blobs/{digest}");
    match target {
        Target::Tags(name) => {
            check_name(name)?;
            let tags = registry.manifests.tags(name)?;
            Ok(axum::Json(json!({"name": name, "tags": tags})).into_response())
        }
        Target::Blob(name, digest) => {
            check_name(name)?;
            let digest = Digest::parse(digest)?;
            if *method != Method::GET && *method != Method::HEAD {
                return Err(OciError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "UNSUPPORTED",
                    "blobs are read with GET or HEAD",
                ));
            }
            let size = registry.blobs.size(&digest)?;
            let body = if *method == Method::GET {
                Body::from(registry.blobs.read(&digest)?)
            } else {
                Body::empty()
            };
            Ok(with_headers(
                StatusCode::OK,
                &[
                    (header::CONTENT_LENGTH, size.to_string()),
                    (header::CONTENT_TYPE, "application/octet-stream".into()),
                    (
                        header::HeaderName::from_static("docker-content-digest"),
                        digest.to_string(),
                    ),
                ],
                body,
            ))
        }
        Target::Uploads(name, session) => {
            check_name(name)?;
            let upload_location = |session: &str| format!("/v2/{name}/blobs/uploads/{session}");
            let accepted = |session: &str, size: u64| {
                with_headers(
                    StatusCode::ACCEPTED,
                    &[
                        (header::LOCATION, upload_location(session)),
                        (header::RANGE, format!("0-{}", size.saturating_sub(1))),
                        (
                            header::HeaderName::from_static("docker-upload-uuid"),
                            session.to_string(),
                        ),
                        (header::CONTENT_LENGTH, "0".into()),
                    ],
                    Body::empty(),
                )
            };
            let created = |digest: &Digest| {
                with_headers(
                    StatusCode::CREATED,
                    &[
                        (header::LOCATION, blob_location(name, digest)),
                        (
                            header::HeaderName::from_static("docker-content-digest"),
                            digest.to_string(),
                        ),
                        (header::CONTENT_LENGTH, "0".into()),
                    ],
                    Body::empty(),
                )
            };
            match (method.clone(), session) {
                // Start; monolithic when a digest comes along. A mount
                // request is answered as a plain upload (the spec allows it).
                (Method::POST, "") => {
                    if let Some(digest) = query.get("digest") {
                        let digest = Digest::parse(digest)?;
                        registry.blobs.put(&digest, &body)?;
                        return Ok(created(&digest));
                    }
                    let session = registry.blobs.start()?;
                    Ok(accepted(&session, 0))
                }
                (Method::PATCH, session) if !session.is_empty() => {
                    let offset = headers
                        .get(header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|range| {
                            range
                                .trim_start_matches("bytes ")
                                .split('-')
                                .next()?
                                .parse()
                                .ok()
                        });
                    let size = registry.blobs.append(session, offset, &body)?;
                    Ok(accepted(session, size))
                }
                (Method::PUT, session) if !session.is_empty() => {
                    let digest =
                        Digest::parse(query.get("digest").map(String::as_str).unwrap_or_default())?;
                    if !body.is_empty() {
                        registry.blobs.append(session, None, &body)?;
                    }
                    registry.blobs.finish(session, &digest)?;
                    Ok(created(&digest))
                }
                (Method::GET, session) if !session.is_empty() => {
                    let size = registry.blobs.upload_size(session)?;
                    let mut response = accepted(session, size);
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    Ok(response)
                }
                (Method::DELETE, session) if !session.is_empty() => {
                    registry.blobs.cancel(session)?;
                    Ok(StatusCode::NO_CONTENT.into_response())
                }
                _ => Err(OciError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "UNSUPPORTED",
                    "not an upload operation",
                )),
            }
        }
        Target::Manifest(name, reference) => {
            check_name(name)?;
            match method.clone() {
                Method::PUT => {
                    let media_type = headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
                        .to_string();
                    check_manifest(registry, &body, check)?;
                    let digest = registry
                        .manifests
                        .put(name, reference, &media_type, &body)?;
                    Ok(with_headers(
                        StatusCode::CREATED,
                        &[
                            (header::LOCATION, format!("/v2/{name}/manifests/{digest}")),
                            (
                                header::HeaderName::from_static("docker-content-digest"),
                                digest.to_string(),
                            ),
                            (header::CONTENT_LENGTH, "0".into()),
                        ],
                        Body::empty(),
                    ))
                }
                Method::GET | Method::HEAD => {
                    let stored = registry.manifests.get(name, reference)?;
                    let length = stored.bytes.len().to_string();
                    let body = if *method == Method::GET {
                        Body::from(stored.bytes)
                    } else {
                        Body::empty()
                    };
                    Ok(with_headers(
                        StatusCode::OK,
                        &[
                            (header::CONTENT_TYPE, stored.media_type),
                            (header::CONTENT_LENGTH, length),
                            (
                                header::HeaderName::from_static("docker-content-digest"),
                                stored.digest.to_string(),
                            ),
                        ],
                        body,
                    ))
                }
                _ => Err(OciError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "UNSUPPORTED",
                    "manifests are read with GET/HEAD and written with PUT",
                )),
            }
        }
    }
}

/// The CNCF Wasm OCI layout's config media type.
pub const WASM_CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Its layer media type.
pub const WASM_LAYER_TYPE: &str = "application/wasm";

/// A manifest must be a JSON object with `schemaVersion: 2` whose config
/// and layers name blobs the registry holds. A Wasm artifact (a wasm config
/// or a wasm layer) must follow the CNCF layout, one `application/wasm`
/// layer under a `wasm`/`wasip2` config, and the layer must be a component
/// of the `clawcage:agent` world, which is compiled now, so nothing outside
/// the world is ever stored as deployable and the first event does not
/// compile. Other artifacts (signatures, for example) are stored as they
/// are.
fn check_manifest(
    registry: &Registry,
    body: &[u8],
    check: &dyn Fn(&[u8]) -> Result<String, String>,
) -> Result<(), OciError> {
    let invalid = |m: String| OciError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", m);
    let manifest: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?;
    if manifest.get("schemaVersion") != Some(&json!(2)) {
        return Err(invalid("schemaVersion must be 2".into()));
    }
    let referenced = manifest.get("config").into_iter().chain(
        manifest
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten(),
    );
    for descriptor in referenced {
        let digest = descriptor
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("a descriptor has no digest".into()))?;
        let digest = Digest::parse(digest)?;
        if registry.blobs.size(&digest).is_err() {
            return Err(OciError::new(
                StatusCode::BAD_REQUEST,
                "MANIFEST_BLOB_UNKNOWN",
                format!("blob {digest} is not in the registry; push it first"),
            ));
        }
    }
    let media_type = |d: &Value| {
        d.get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let config_type = manifest.get("config").map(media_type).unwrap_or_default();
    let layers: Vec<&Value> = manifest
        .get("layers")
        .and_then(Value::as_array)
        .map(|l| l.iter().collect())
        .unwrap_or_default();
    let is_wasm =
        config_type == WASM_CONFIG_TYPE || layers.iter().any(|l| media_type(l) == WASM_LAYER_TYPE);
    if !is_wasm {
        return Ok(());
    }
    if config_type != WASM_CONFIG_TYPE {
        return Err(invalid(format!(
            "a Wasm artifact's config must be {WASM_CONFIG_TYPE}"
        )));
    }
    let [layer] = layers.as_slice() else {
        return Err(invalid(
            "a Wasm component artifact has exactly one layer".into(),
        ));
    };
    if media_type(layer) != WASM_LAYER_TYPE {
        return Err(invalid(format!("the layer must be {WASM_LAYER_TYPE}")));
    }
    let blob = |d: &Value| -> Result<Vec<u8>, OciError> {
        let digest = Digest::parse(d.get("digest").and_then(Value::as_str).unwrap_or_default())?;
        Ok(registry.blobs.read(&digest)?)
    };
    let config: Value = serde_json::from_slice(&blob(&manifest["config"])?)
        .map_err(|_| invalid("the config is not JSON".into()))?;
    if config.get("architecture") != Some(&json!("wasm"))
        || config.get("os") != Some(&json!("wasip2"))
    {
        return Err(invalid(
            "the config must say architecture \"wasm\" and os \"wasip2\"".into(),
        ));
    }
    check(&blob(layer)?).map_err(|e| invalid(format!("the layer is not a ClawCage agent: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_target() {
        assert_eq!(
            parse("acme/triage/tags/list"),
            Some(Target::Tags("acme/triage"))
        );
        assert_eq!(
            parse("acme/triage/manifests/1.0.0"),
            Some(Target::Manifest("acme/triage", "1.0.0"))
        );
        assert_eq!(
            parse("acme/triage/blobs/uploads/"),
            Some(Target::Uploads("acme/triage", ""))
        );
        assert_eq!(
            parse("acme/triage/blobs/uploads/abc"),
            Some(Target::Uploads("acme/triage", "abc"))
        );
        assert_eq!(
            parse("acme/triage/blobs/sha256:00"),
            Some(Target::Blob("acme/triage", "sha256:00"))
        );
        assert_eq!(parse("acme/triage"), None);
    }
}
