//! The OCI Distribution API (v2) routes, served by the daemon: blobs,
//! chunked and monolithic uploads, manifests by tag or digest, tag lists,
//! the spec's JSON errors, and publisher tokens over HTTP Basic (any user
//! name, the token as password) or Bearer, with a `WWW-Authenticate`
//! challenge so standard clients log in the usual way.
//!
//! A pushed component manifest is checked before it is stored: the CNCF
//! Wasm layout, the config against the layer, and the layer compiled as a
//! component of the `clawcage:agent` world (into the daemon's compile
//! cache, so its first deployment does not compile). A pushed signature
//! must verify over its subject. Every push, stored or refused, is an
//! audit record. The OCI 1.1 referrers API lists signatures, and
//! `/.well-known/wasm-pkg/registry.json` tells `wkg` where packages live.

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
use super::layout::{CONFIG_TYPE, LAYER_TYPE};
use super::manifests::ManifestError;
use super::signing::{self, Signature};
use crate::audit::AuditEvent;
use crate::daemon::Daemon;
use crate::daemon::auth::Scope;

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

fn authenticate(daemon: &Daemon, headers: &HeaderMap) -> Result<(String, Scope), OciError> {
    presented_token(headers)
        .and_then(|token| daemon.tokens.authenticate_scoped(&token))
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
        .route_layer(axum::middleware::from_fn_with_state(
            daemon.clone(),
            require_token,
        ))
        .layer(DefaultBodyLimit::max(
            max_blob_bytes.saturating_add(1 << 20),
        ))
        .route(
            "/.well-known/wasm-pkg/registry.json",
            get(wasm_pkg_metadata),
        )
        .with_state(daemon)
}

/// Where `wkg` finds packages: OCI, on this host, with no namespace
/// prefix, so package `acme:triage` is repository `acme/triage`.
async fn wasm_pkg_metadata(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("127.0.0.1:7878");
    axum::Json(json!({
        "preferredProtocol": "oci",
        "oci": {"registry": host, "namespacePrefix": ""},
    }))
    .into_response()
}

/// The version check: a client that got here presented a valid token.
async fn root() -> Response {
    (StatusCode::OK, axum::Json(json!({}))).into_response()
}

/// What a `/v2/<path>` names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'p> {
    Tags(&'p str),
    Referrers(&'p str, &'p str),
    Manifest(&'p str, &'p str),
    Uploads(&'p str, &'p str),
    Blob(&'p str, &'p str),
}

impl<'p> Target<'p> {
    /// The repository it is in.
    fn repository(&self) -> &'p str {
        match *self {
            Self::Tags(name)
            | Self::Referrers(name, _)
            | Self::Manifest(name, _)
            | Self::Uploads(name, _)
            | Self::Blob(name, _) => name,
        }
    }
}

fn parse(path: &str) -> Option<Target<'_>> {
    if let Some(name) = path.strip_suffix("/tags/list") {
        return Some(Target::Tags(name));
    }
    if let Some((name, digest)) = path.rsplit_once("/referrers/") {
        return Some(Target::Referrers(name, digest));
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

/// Who is calling: a token's name and scope, set by [`require_token`].
#[derive(Debug, Clone)]
struct Caller(String, Scope);

/// Authenticates every `/v2/` request *before* its body is read, so an
/// anonymous client cannot make the daemon buffer an upload; a refused one
/// is an audit record, as on the admin API.
async fn require_token(
    State(daemon): State<Arc<Daemon>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match authenticate(&daemon, request.headers()) {
        Ok((actor, scope)) => {
            // Outside the token's namespaces: refused before the body is
            // read, too. (On the raw path: a first segment that is plainly
            // `acme` decodes to `acme`; any escape in it only fails this.)
            let raw = request.uri().path().trim_start_matches("/v2/").to_string();
            if let Some(target) = parse(&raw)
                && !scope.may_publish(target.repository())
            {
                return outside_namespaces(&daemon, actor, request.method(), target.repository());
            }
            request.extensions_mut().insert(Caller(actor, scope));
            next.run(request).await
        }
        Err(refusal) => {
            // Clients ask anonymously first to learn the challenge; a
            // request that presented credentials is the one worth a record.
            if request.headers().contains_key(header::AUTHORIZATION) {
                daemon.audit.append(AuditEvent::Admin {
                    actor: "unknown".into(),
                    action: format!("{} /v2/", request.method()),
                    allowed: false,
                });
            }
            refusal.into_response()
        }
    }
}

async fn dispatch(
    State(daemon): State<Arc<Daemon>>,
    axum::Extension(Caller(actor, scope)): axum::Extension<Caller>,
    Path(path): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(target) = parse(&path) else {
        return OciError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such route")
            .into_response();
    };
    let repository = target.repository();
    // A name is checked before it is logged, audited or compared.
    if let Err(e) = check_name(repository) {
        return e.into_response();
    }
    if !scope.may_publish(repository) {
        return outside_namespaces(&daemon, actor, &method, repository);
    }
    let push = match target {
        Target::Manifest(name, reference) if method == Method::PUT => {
            // Refused before it is parsed; parsed once.
            if body.len() > super::manifests::MAX_MANIFEST_BYTES {
                return OciError::from(ManifestError::TooLarge).into_response();
            }
            let parsed = serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string());
            let kind = parsed.as_ref().map_or("other", artifact_kind);
            Some((name.to_string(), reference.to_string(), kind, parsed))
        }
        _ => None,
    };
    let (push, manifest) = match push {
        Some((name, reference, kind, parsed)) => (Some((name, reference, kind)), Some(parsed)),
        None => (None, None),
    };
    // Disk I/O, hashing and compiling a pushed component: off the async
    // workers.
    let worker = daemon.clone();
    let owner = actor.clone();
    let result = tokio::task::spawn_blocking(move || {
        let Some(registry) = worker.registry() else {
            return Err(OciError::new(
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
                "no registry",
            ));
        };
        let check = |bytes: &[u8]| worker.check_component(bytes);
        let target = parse(&path)
            .ok_or_else(|| OciError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such route"))?;
        let request = Request {
            method: &method,
            query: &query,
            headers: &headers,
            owner: &owner,
            manifest: manifest.as_ref(),
        };
        handle(registry, target, &request, body, &check)
    })
    .await
    .unwrap_or_else(|e| {
        Err(OciError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("the registry failed: {e}"),
        ))
    });
    if let Some((repository, reference, artifact)) = push {
        let (digest, reason) = match &result {
            Ok(response) => (
                response
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                None,
            ),
            Err(e) => (None, Some(format!("{}: {}", e.code, e.message))),
        };
        if let Some(reason) = &reason {
            tracing::info!(%repository, %reference, %actor, %reason, "push refused");
        }
        daemon.audit.append(AuditEvent::Push {
            repository,
            reference,
            accepted: reason.is_none(),
            digest,
            artifact: artifact.into(),
            actor,
            reason,
        });
    }
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The manifest media types stored.
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// A pushed manifest's media type: its `mediaType` field, which the
/// `Content-Type` must agree with when both are given, else the header,
/// else OCI's; one of [`MANIFEST_TYPES`].
fn manifest_media_type(headers: &HeaderMap, manifest: &Value) -> Result<String, OciError> {
    let invalid = |m: String| OciError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", m);
    let header = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
        .filter(|v| MANIFEST_TYPES.contains(&v.as_str()));
    let field = manifest
        .get("mediaType")
        .and_then(Value::as_str)
        .map(str::to_string);
    let media_type = match (field, header) {
        (Some(field), Some(header)) if field != header => {
            return Err(invalid(format!(
                "the manifest says it is {field}, but was sent as {header}"
            )));
        }
        (Some(field), _) => field,
        (None, Some(header)) => header,
        (None, None) => MANIFEST_TYPES[0].to_string(),
    };
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(invalid(format!(
            "{media_type} is not a manifest media type"
        )));
    }
    Ok(media_type)
}

/// Whether a manifest is a ClawCage signature: by its artifact type, or,
/// lacking one, by its config's media type (which is what the referrers API
/// then lists it as).
fn is_signature(manifest: &Value) -> bool {
    let artifact_type = manifest
        .get("artifactType")
        .or_else(|| manifest.get("config")?.get("mediaType"));
    artifact_type == Some(&json!(signing::SIGNATURE_TYPE))
}

/// The refusal of a request outside the token's namespaces, on the record.
fn outside_namespaces(
    daemon: &Daemon,
    actor: String,
    method: &Method,
    repository: &str,
) -> Response {
    // Only a valid name is logged; anything else is shown as its length.
    let shown = if super::validate_repository(repository).is_ok() {
        repository.to_string()
    } else {
        format!("<invalid name, {} bytes>", repository.len())
    };
    tracing::info!(repository = %shown, %actor, "registry access outside the token's namespaces");
    daemon.audit.append(AuditEvent::Admin {
        actor,
        action: format!("{method} /v2/{shown}"),
        allowed: false,
    });
    OciError::new(
        StatusCode::FORBIDDEN,
        "DENIED",
        format!("this token may not publish to {shown}: it is limited to its namespaces"),
    )
    .into_response()
}

/// What a pushed manifest claims to be, for the audit record.
fn artifact_kind(manifest: &Value) -> &'static str {
    if is_signature(manifest) {
        "signature"
    } else if manifest["config"]["mediaType"] == CONFIG_TYPE
        || manifest["layers"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["mediaType"] == LAYER_TYPE))
    {
        "component"
    } else {
        "other"
    }
}

/// What [`handle`] needs of a request besides its target and body.
struct Request<'r> {
    method: &'r Method,
    query: &'r std::collections::HashMap<String, String>,
    headers: &'r HeaderMap,
    /// The token's name: uploads are counted per token.
    owner: &'r str,
    /// A pushed manifest, parsed (or why it is not JSON).
    manifest: Option<&'r Result<Value, String>>,
}

/// Routes a request to the handler of its OCI distribution endpoint.
fn handle(
    registry: &Registry,
    target: Target<'_>,
    request: &Request<'_>,
    body: Bytes,
    check: &dyn Fn(&[u8]) -> Result<String, String>,
) -> Result<Response, OciError> {
    let method = request.method.clone();
    match (target, method) {
        (Target::Tags(name), Method::GET | Method::HEAD) => list_tags(registry, name),
        (Target::Referrers(name, digest), Method::GET | Method::HEAD) => {
            list_referrers(registry, name, digest, request)
        }
        (Target::Blob(name, digest), method @ (Method::GET | Method::HEAD)) => {
            read_blob(registry, name, digest, method == Method::GET)
        }
        (Target::Blob(..), _) => Err(unsupported("blobs are read with GET or HEAD")),
        (Target::Uploads(name, ""), Method::POST) => start_upload(registry, name, request, &body),
        (Target::Uploads(_, ""), _) => Err(unsupported("uploads start with POST")),
        (Target::Uploads(name, session), Method::PATCH) => {
            append_upload(registry, name, session, request, &body)
        }
        (Target::Uploads(name, session), Method::PUT) => {
            finish_upload(registry, name, session, request, &body)
        }
        (Target::Uploads(name, session), Method::GET) => {
            upload_status(registry, name, session, request)
        }
        (Target::Uploads(_, session), Method::DELETE) => {
            registry.blobs.cancel(session, request.owner)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Target::Uploads(..), _) => Err(unsupported("not an upload operation")),
        (Target::Manifest(name, reference), Method::PUT) => {
            put_manifest(registry, name, reference, request, &body, check)
        }
        (Target::Manifest(name, reference), method @ (Method::GET | Method::HEAD)) => {
            read_manifest(registry, name, reference, method == Method::GET)
        }
        (Target::Manifest(..), _) => Err(unsupported(
            "manifests are read with GET/HEAD and written with PUT",
        )),
        (Target::Tags(..) | Target::Referrers(..), _) => {
            Err(unsupported("tags and referrers are read with GET"))
        }
    }
}

fn unsupported(message: &'static str) -> OciError {
    OciError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message)
}

fn digest_header(digest: &Digest) -> (header::HeaderName, String) {
    (
        header::HeaderName::from_static("docker-content-digest"),
        digest.to_string(),
    )
}

/// `GET /v2/<name>/tags/list`.
fn list_tags(registry: &Registry, name: &str) -> Result<Response, OciError> {
    let tags = registry.manifests.tags(name)?;
    Ok(axum::Json(json!({"name": name, "tags": tags})).into_response())
}

/// `GET /v2/<name>/referrers/<digest>[?artifactType=]`: an image index of
/// the manifests whose subject is `digest`.
fn list_referrers(
    registry: &Registry,
    name: &str,
    digest: &str,
    request: &Request<'_>,
) -> Result<Response, OciError> {
    let digest = Digest::parse(digest)?;
    let filter = request.query.get("artifactType").map(String::as_str);
    let manifests = registry.manifests.referrers(name, &digest, filter)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let mut response = with_headers(
        StatusCode::OK,
        &[(
            header::CONTENT_TYPE,
            "application/vnd.oci.image.index.v1+json".into(),
        )],
        Body::from(index.to_string()),
    );
    if filter.is_some() {
        response.headers_mut().insert(
            "oci-filters-applied",
            header::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(response)
}

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`, streamed from one open file: a
/// 64 MiB blob is never held in memory.
fn read_blob(
    registry: &Registry,
    name: &str,
    digest: &str,
    with_body: bool,
) -> Result<Response, OciError> {
    let digest = Digest::parse(digest)?;
    if !registry.blobs.is_linked(name, &digest) {
        return Err(BlobError::Unknown.into());
    }
    let (file, size) = registry.blobs.open_blob(&digest)?;
    let body = if with_body {
        Body::from_stream(tokio_util::io::ReaderStream::new(
            tokio::fs::File::from_std(file),
        ))
    } else {
        Body::empty()
    };
    Ok(with_headers(
        StatusCode::OK,
        &[
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CONTENT_TYPE, "application/octet-stream".into()),
            digest_header(&digest),
        ],
        body,
    ))
}

/// 202 for an upload in progress: where to send the rest, and what was
/// received.
fn upload_accepted(name: &str, session: &str, size: u64) -> Response {
    with_headers(
        StatusCode::ACCEPTED,
        &[
            (
                header::LOCATION,
                format!("/v2/{name}/blobs/uploads/{session}"),
            ),
            (header::RANGE, format!("0-{}", size.saturating_sub(1))),
            (
                header::HeaderName::from_static("docker-upload-uuid"),
                session.to_string(),
            ),
            (header::CONTENT_LENGTH, "0".into()),
        ],
        Body::empty(),
    )
}

/// 201 for a blob stored and linked to the repository.
fn blob_created(name: &str, digest: &Digest) -> Response {
    with_headers(
        StatusCode::CREATED,
        &[
            (header::LOCATION, format!("/v2/{name}/blobs/{digest}")),
            digest_header(digest),
            (header::CONTENT_LENGTH, "0".into()),
        ],
        Body::empty(),
    )
}

/// `POST /v2/<name>/blobs/uploads/`: starts an upload, or stores the body
/// at once when a digest comes along (monolithic). A mount request is
/// answered as a plain upload, as the spec allows.
fn start_upload(
    registry: &Registry,
    name: &str,
    request: &Request<'_>,
    body: &[u8],
) -> Result<Response, OciError> {
    if let Some(digest) = request.query.get("digest") {
        let digest = Digest::parse(digest)?;
        registry.blobs.put(request.owner, &digest, body)?;
        registry.blobs.link(name, &digest)?;
        return Ok(blob_created(name, &digest));
    }
    let session = registry.blobs.start(request.owner)?;
    Ok(upload_accepted(name, &session, 0))
}

/// `PATCH /v2/<name>/blobs/uploads/<session>`: one chunk, at the offset
/// its `Content-Range` names.
fn append_upload(
    registry: &Registry,
    name: &str,
    session: &str,
    request: &Request<'_>,
    body: &[u8],
) -> Result<Response, OciError> {
    let offset = request
        .headers
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
    let size = registry
        .blobs
        .append(session, request.owner, offset, body)?;
    Ok(upload_accepted(name, session, size))
}

/// `PUT /v2/<name>/blobs/uploads/<session>?digest=`: the last chunk, if
/// any, then the digest checked and the blob linked.
fn finish_upload(
    registry: &Registry,
    name: &str,
    session: &str,
    request: &Request<'_>,
    body: &[u8],
) -> Result<Response, OciError> {
    let digest = Digest::parse(
        request
            .query
            .get("digest")
            .map(String::as_str)
            .unwrap_or_default(),
    )?;
    if !body.is_empty() {
        registry.blobs.append(session, request.owner, None, body)?;
    }
    registry.blobs.finish(session, request.owner, &digest)?;
    registry.blobs.link(name, &digest)?;
    Ok(blob_created(name, &digest))
}

/// `GET /v2/<name>/blobs/uploads/<session>`: how much was received.
fn upload_status(
    registry: &Registry,
    name: &str,
    session: &str,
    request: &Request<'_>,
) -> Result<Response, OciError> {
    let size = registry.blobs.upload_size(session, request.owner)?;
    let mut response = upload_accepted(name, session, size);
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// `PUT /v2/<name>/manifests/<reference>`: checked ([`check_manifest`]),
/// stored, and tagged when the reference is a tag.
fn put_manifest(
    registry: &Registry,
    name: &str,
    reference: &str,
    request: &Request<'_>,
    body: &[u8],
    check: &dyn Fn(&[u8]) -> Result<String, String>,
) -> Result<Response, OciError> {
    let invalid =
        |message: String| OciError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", message);
    let manifest = request
        .manifest
        .ok_or_else(|| invalid("no manifest".into()))?
        .as_ref()
        .map_err(|e| invalid(format!("not JSON: {e}")))?;
    let media_type = manifest_media_type(request.headers, manifest)?;
    let subject = check_manifest(registry, name, manifest, check)?;
    let digest = registry.manifests.put(name, reference, &media_type, body)?;
    let mut headers = vec![
        (header::LOCATION, format!("/v2/{name}/manifests/{digest}")),
        digest_header(&digest),
        (header::CONTENT_LENGTH, "0".into()),
    ];
    // Tells the client this registry indexes referrers.
    if let Some(subject) = subject {
        headers.push((
            header::HeaderName::from_static("oci-subject"),
            subject.to_string(),
        ));
    }
    Ok(with_headers(StatusCode::CREATED, &headers, Body::empty()))
}

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`.
fn read_manifest(
    registry: &Registry,
    name: &str,
    reference: &str,
    with_body: bool,
) -> Result<Response, OciError> {
    let stored = registry.manifests.get(name, reference)?;
    let length = stored.bytes.len().to_string();
    let body = if with_body {
        Body::from(stored.bytes)
    } else {
        Body::empty()
    };
    Ok(with_headers(
        StatusCode::OK,
        &[
            (header::CONTENT_TYPE, stored.media_type),
            (header::CONTENT_LENGTH, length),
            digest_header(&stored.digest),
        ],
        body,
    ))
}

/// A manifest must be a JSON object with `schemaVersion: 2` whose config
/// and layers name blobs the registry holds. Then, by what it is:
/// - a Wasm artifact (a wasm config or a wasm layer) must follow the CNCF
///   layout, its config must describe its layer
///   ([`super::layout::check_config`]), and the layer must be a component
///   of the `clawcage:agent` world, which is compiled now, so nothing
///   outside the world is ever stored as deployable and the first
///   deployment does not compile;
/// - a ClawCage signature must have a `subject` and one signature layer
///   that verifies over the subject's digest (whether its key is trusted
///   is the operator's call, at deployment);
/// - anything else is stored as it is.
///
/// Answers the manifest's `subject`, if it has one.
fn check_manifest(
    registry: &Registry,
    repository: &str,
    manifest: &Value,
    check: &dyn Fn(&[u8]) -> Result<String, String>,
) -> Result<Option<Digest>, OciError> {
    let invalid = |m: String| OciError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", m);
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
        if !registry.blobs.is_linked(repository, &digest) {
            return Err(OciError::new(
                StatusCode::BAD_REQUEST,
                "MANIFEST_BLOB_UNKNOWN",
                format!("blob {digest} is not in {repository}; push it first"),
            ));
        }
    }
    let subject = match manifest.get("subject") {
        None => None,
        Some(subject) => Some(Digest::parse(
            subject.get("digest").and_then(Value::as_str).unwrap_or(""),
        )?),
    };
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
    let blob = |d: &Value| -> Result<Vec<u8>, OciError> {
        let digest = Digest::parse(d.get("digest").and_then(Value::as_str).unwrap_or_default())?;
        registry
            .verified_blob(&digest)
            .map_err(|e| OciError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e))
    };
    if is_signature(manifest) {
        let (Some(subject), [layer]) = (&subject, layers.as_slice()) else {
            return Err(invalid(
                "a signature has a subject and exactly one layer".into(),
            ));
        };
        if media_type(layer) != signing::SIGNATURE_TYPE {
            return Err(invalid(format!(
                "a signature's layer must be {}",
                signing::SIGNATURE_TYPE
            )));
        }
        let size = Digest::parse(layer.get("digest").and_then(Value::as_str).unwrap_or(""))
            .ok()
            .and_then(|d| registry.blobs.size(&d).ok())
            .unwrap_or(u64::MAX);
        if size > signing::MAX_SIGNATURE_BYTES {
            return Err(invalid("a signature blob is larger than 4 KiB".into()));
        }
        let signature = Signature::from_blob(&blob(layer)?).map_err(invalid)?;
        // The annotation is what deployments choose signatures by.
        if manifest["annotations"][signing::SIGNER_ANNOTATION] != json!(signature.public_key) {
            return Err(invalid(format!(
                "a signature's {} annotation must be its public key",
                signing::SIGNER_ANNOTATION
            )));
        }
        if signature.repository != repository {
            return Err(invalid(format!(
                "the signature is for {:?}, not {repository:?}",
                signature.repository
            )));
        }
        signing::verify(subject, &signature)
            .map_err(|e| invalid(format!("{e} over its subject {subject}")))?;
        return Ok(Some(subject.clone()));
    }
    let is_wasm = config_type == CONFIG_TYPE || layers.iter().any(|l| media_type(l) == LAYER_TYPE);
    if !is_wasm {
        return Ok(subject);
    }
    if config_type != CONFIG_TYPE {
        return Err(invalid(format!(
            "a Wasm artifact's config must be {CONFIG_TYPE}"
        )));
    }
    let [layer] = layers.as_slice() else {
        return Err(invalid(
            "a Wasm component artifact has exactly one layer".into(),
        ));
    };
    if media_type(layer) != LAYER_TYPE {
        return Err(invalid(format!("the layer must be {LAYER_TYPE}")));
    }
    let component = blob(layer)?;
    super::layout::check_config(&blob(&manifest["config"])?, &component).map_err(invalid)?;
    check(&component).map_err(|e| invalid(format!("the layer is not a ClawCage agent: {e}")))?;
    Ok(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_target() {
        for (path, target) in [
            ("acme/triage/tags/list", Target::Tags("acme/triage")),
            (
                "acme/triage/manifests/1.0.0",
                Target::Manifest("acme/triage", "1.0.0"),
            ),
            (
                "acme/triage/blobs/uploads/",
                Target::Uploads("acme/triage", ""),
            ),
            (
                "acme/triage/blobs/uploads/abc",
                Target::Uploads("acme/triage", "abc"),
            ),
            (
                "acme/triage/blobs/sha256:00",
                Target::Blob("acme/triage", "sha256:00"),
            ),
            (
                "acme/triage/referrers/sha256:00",
                Target::Referrers("acme/triage", "sha256:00"),
            ),
        ] {
            assert_eq!(parse(path), Some(target), "{path}");
        }
        assert_eq!(parse("acme/triage"), None);
    }
}
