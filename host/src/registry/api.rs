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
use super::body::{Tracked, has_body, pull, refuse_unread};
use super::layout::{CONFIG_TYPE, LAYER_TYPE};
use super::manifests::{self, ManifestError};
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

/// Seconds a client told `429` waits before trying again.
const RETRY_AFTER_SECS: u64 = 30;

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
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

impl From<BlobError> for OciError {
    fn from(e: BlobError) -> Self {
        let status = match e {
            BlobError::Unknown | BlobError::UploadUnknown => StatusCode::NOT_FOUND,
            BlobError::RangeInvalid { .. } | BlobError::UploadBusy => {
                StatusCode::RANGE_NOT_SATISFIABLE
            }
            BlobError::TooManyUploads => StatusCode::TOO_MANY_REQUESTS,
            BlobError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BlobError::QuotaExceeded { .. } | BlobError::InUse(_) => StatusCode::FORBIDDEN,
            BlobError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            BlobError::BodyBroken(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<ManifestError> for OciError {
    fn from(e: ManifestError) -> Self {
        let status = match e {
            ManifestError::Unknown | ManifestError::NameUnknown => StatusCode::NOT_FOUND,
            ManifestError::Immutable { .. } | ManifestError::InUse(_) => StatusCode::FORBIDDEN,
            ManifestError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
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
///
/// No body limit is set here: a manifest is read whole up to
/// [`super::manifests::MAX_MANIFEST_BYTES`], an upload streams to disk as
/// the blob store asks for it (bounded by the blob size limit and the
/// namespace's quota), and any other body is never read.
pub fn routes(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v2/", get(root))
        .route("/v2/{*path}", any(dispatch))
        .route_layer(axum::middleware::from_fn_with_state(
            daemon.clone(),
            require_token,
        ))
        .layer(DefaultBodyLimit::disable())
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
/// is an audit record, as on the admin API. Any response to a request
/// whose body was not read to its end says `Connection: close`.
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
                && !scope.may_access(target.repository(), request.method())
            {
                let refusal =
                    outside_namespaces(&daemon, actor, request.method(), target.repository());
                return refuse_unread(request, refusal).await;
            }
            request.extensions_mut().insert(Caller(actor, scope));
            let finished = Arc::new(std::sync::atomic::AtomicBool::new(!has_body(
                request.headers(),
            )));
            let request = request.map(|inner| {
                Body::new(Tracked {
                    inner,
                    finished: finished.clone(),
                })
            });
            let mut response = next.run(request).await;
            if !finished.load(std::sync::atomic::Ordering::Acquire) {
                response.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            response
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
            refuse_unread(request, refusal.into_response()).await
        }
    }
}

/// Reads a manifest body whole, bounded in size and in how many are read
/// at once.
async fn read_manifest_body(
    registry: &Registry,
    actor: &str,
    body: Body,
) -> Result<Bytes, OciError> {
    let Some(_slot) = registry.body_reads.enter(actor) else {
        return Err(OciError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOOMANYREQUESTS",
            "too many manifests being pushed at once",
        ));
    };
    let mut body = body;
    let mut read = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx))
            .await
    {
        let frame = frame.map_err(|e| {
            OciError::new(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                format!("the body broke off: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > super::manifests::MAX_MANIFEST_BYTES {
                return Err(ManifestError::TooLarge.into());
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(read))
}

async fn dispatch(
    State(daemon): State<Arc<Daemon>>,
    axum::Extension(Caller(actor, scope)): axum::Extension<Caller>,
    Path(path): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
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
    if !scope.may_access(repository, &method) {
        return outside_namespaces(&daemon, actor, &method, repository);
    }
    let Some(registry) = daemon.registry() else {
        return OciError::new(StatusCode::NOT_FOUND, "UNSUPPORTED", "no registry").into_response();
    };
    // A manifest is read whole (bounded) and parsed once; an upload's body
    // is pulled by the blob store as it writes; no other body is read.
    let mut push = None;
    let mut manifest = None;
    let mut body = Some(body);
    if let Target::Manifest(name, reference) = target
        && method == Method::PUT
    {
        let bytes =
            match read_manifest_body(registry, &actor, body.take().unwrap_or_default()).await {
                Ok(bytes) => bytes,
                Err(e) => return e.into_response(),
            };
        let parsed = serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string());
        let kind = parsed.as_ref().map_or("other", artifact_kind);
        push = Some((name.to_string(), reference.to_string(), kind));
        manifest = Some((parsed, bytes));
    }
    let streamed = matches!(target, Target::Uploads(..))
        && matches!(method, Method::PATCH | Method::PUT | Method::POST);
    let body = if streamed { body.take() } else { None };
    // Disk I/O, hashing and compiling a pushed component: off the async
    // workers. The body is pulled from there.
    let worker = daemon.clone();
    let owner = actor.clone();
    let runtime = tokio::runtime::Handle::current();
    let deletion = match target {
        Target::Manifest(name, reference) if method == Method::DELETE => Some((
            name.to_string(),
            if Digest::parse(reference).is_ok() {
                "manifest"
            } else {
                "tag"
            },
            reference.to_string(),
        )),
        Target::Blob(name, digest) if method == Method::DELETE => {
            Some((name.to_string(), "blob", digest.to_string()))
        }
        _ => None,
    };
    let result = tokio::task::spawn_blocking(move || {
        let Some(registry) = worker.registry() else {
            return Err(OciError::new(
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
                "no registry",
            ));
        };
        let check = |bytes: &[u8]| worker.check_component(bytes);
        let in_use = in_use(&worker);
        let target = parse(&path)
            .ok_or_else(|| OciError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such route"))?;
        let mut body = body;
        let mut chunks = || body.as_mut().and_then(|body| pull(&runtime, body));
        let request = Request {
            method: &method,
            query: &query,
            headers: &headers,
            owner: &owner,
            scope: &scope,
            manifest: manifest.as_ref(),
            in_use: &in_use,
        };
        let answer = handle(registry, target, &request, &mut chunks, &check);
        if let Ok((_, Some(stored))) = &answer {
            audit_blob_upload(&worker, registry, stored, &owner);
        }
        answer.map(|(response, _)| response)
    })
    .await
    .unwrap_or_else(|e| {
        Err(OciError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("the registry failed: {e}"),
        ))
    });
    if let (Some((repository, what, reference)), Ok(_)) = (deletion, &result) {
        daemon.audit.append(AuditEvent::RegistryDelete {
            repository,
            what: what.into(),
            reference,
            actor: actor.clone(),
        });
    }
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
        format!(
            "this token may not {} {shown}: a publisher token is limited to its namespaces, a viewer token only reads",
            if *method == Method::GET || *method == Method::HEAD { "read" } else { "write to" }
        ),
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

/// What deployed agents run: never deleted or collected.
#[derive(Debug, Default, Clone)]
pub struct InUse {
    /// The sha256 (hex) of every deployed component.
    pub components: std::collections::HashSet<String>,
    /// Every deployed manifest, as `repository@sha256:…`.
    pub manifests: std::collections::HashSet<String>,
}

/// What the deployed agents of `daemon` run.
pub(crate) fn in_use(daemon: &Daemon) -> InUse {
    let mut in_use = InUse::default();
    for agent in daemon.list() {
        in_use.components.insert(agent.sha256);
        if let Some(origin) = agent.origin {
            in_use.manifests.insert(origin.reference);
        }
    }
    in_use
}

/// Blob upload records one token writes per window; past that they are
/// counted, and the count is written when its next window opens.
const BLOB_RECORDS_PER_WINDOW: u32 = 1_000;
const BLOB_RECORD_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// Per token: when its window opened, records written in it, records
/// suppressed.
#[derive(Debug, Default)]
pub(crate) struct UploadRecords {
    per_token: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u32, u64)>>,
}

impl UploadRecords {
    /// The suppressed counts not yet written, per token; taken.
    pub(crate) fn take_pending(&self) -> Vec<(String, u64)> {
        self.per_token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .filter(|(_, entry)| entry.2 > 0)
            .map(|(actor, entry)| (actor.clone(), std::mem::take(&mut entry.2)))
            .collect()
    }
}

/// The audit record of a stored blob, within its token's bound.
fn audit_blob_upload(daemon: &Daemon, registry: &Registry, stored: &StoredBlob, actor: &str) {
    let (write, suppressed_before) = {
        let mut per_token = registry
            .upload_records
            .per_token
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let entry = per_token
            .entry(actor.to_string())
            .or_insert((std::time::Instant::now(), 0, 0));
        let mut suppressed_before = 0;
        if entry.0.elapsed() >= BLOB_RECORD_WINDOW {
            suppressed_before = entry.2;
            *entry = (std::time::Instant::now(), 0, 0);
        }
        let write = entry.1 < BLOB_RECORDS_PER_WINDOW;
        if write {
            entry.1 += 1;
        } else if entry.2 == 0 && entry.1 == BLOB_RECORDS_PER_WINDOW {
            // The first suppressed record is written as a count at once, so
            // the log shows the bound was reached even if the rest is lost.
            entry.1 += 1;
            suppressed_before += 1;
        } else {
            entry.2 += 1;
        }
        (write, suppressed_before)
    };
    if suppressed_before > 0 {
        daemon.audit.append(AuditEvent::BlobUploadsSuppressed {
            actor: actor.to_string(),
            suppressed: suppressed_before,
        });
    }
    if write {
        daemon.audit.append(AuditEvent::BlobUpload {
            repository: stored.repository.clone(),
            digest: stored.digest.to_string(),
            size: stored.size,
            actor: actor.to_string(),
        });
    }
}

/// A blob stored by an upload, for its audit record.
pub(crate) struct StoredBlob {
    /// The repository.
    pub repository: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

/// What [`handle`] needs of a request besides its target and body.
struct Request<'r> {
    method: &'r Method,
    query: &'r std::collections::HashMap<String, String>,
    headers: &'r HeaderMap,
    /// The token's name: uploads are counted per token.
    owner: &'r str,
    /// The token's scope: a mount reads only from where it may publish.
    scope: &'r Scope,
    /// A pushed manifest, parsed (or why it is not JSON), and its bytes.
    manifest: Option<&'r (Result<Value, String>, Bytes)>,
    /// What deployed agents run.
    in_use: &'r InUse,
}

/// A handler's answer, and the blob it stored, if any.
type Answer = Result<(Response, Option<StoredBlob>), OciError>;

fn plain(response: Result<Response, OciError>) -> Answer {
    response.map(|r| (r, None))
}

/// Routes a request to the handler of its OCI distribution endpoint. The
/// method is matched before anything in the path is parsed, so an
/// unsupported method is `405` whatever else is wrong.
fn handle(
    registry: &Registry,
    target: Target<'_>,
    request: &Request<'_>,
    body: super::blobs::Chunks<'_>,
    check: &dyn Fn(&[u8]) -> Result<String, String>,
) -> Answer {
    let method = request.method.clone();
    match (target, method) {
        (Target::Tags(name), Method::GET | Method::HEAD) => {
            plain(list_tags(registry, name, request))
        }
        (Target::Referrers(name, digest), Method::GET | Method::HEAD) => {
            plain(list_referrers(registry, name, digest, request))
        }
        (Target::Blob(name, digest), method @ (Method::GET | Method::HEAD)) => plain(read_blob(
            registry,
            name,
            digest,
            method == Method::GET,
            request,
        )),
        (Target::Blob(name, digest), Method::DELETE) => {
            plain(delete_blob(registry, name, digest, request))
        }
        (Target::Blob(..), _) => Err(unsupported(
            "blobs are read with GET or HEAD and removed with DELETE",
        )),
        (Target::Uploads(name, ""), Method::POST) => start_upload(registry, name, request, body),
        (Target::Uploads(_, ""), _) => Err(unsupported("uploads start with POST")),
        (Target::Uploads(name, session), Method::PATCH) => {
            plain(append_upload(registry, name, session, request, body))
        }
        (Target::Uploads(name, session), Method::PUT) => {
            finish_upload(registry, name, session, request, body)
        }
        (Target::Uploads(name, session), Method::GET) => {
            plain(upload_status(registry, name, session, request))
        }
        (Target::Uploads(name, session), Method::DELETE) => {
            registry.blobs.check_session(session, request.owner, name)?;
            registry.blobs.cancel(session, request.owner)?;
            plain(Ok(StatusCode::NO_CONTENT.into_response()))
        }
        (Target::Uploads(..), _) => Err(unsupported("not an upload operation")),
        (Target::Manifest(name, reference), Method::PUT) => {
            plain(put_manifest(registry, name, reference, request, check))
        }
        (Target::Manifest(name, reference), method @ (Method::GET | Method::HEAD)) => plain(
            read_manifest(registry, name, reference, method == Method::GET),
        ),
        (Target::Manifest(name, reference), Method::DELETE) => {
            plain(delete_manifest(registry, name, reference, request))
        }
        (Target::Manifest(..), _) => Err(unsupported(
            "manifests are read with GET/HEAD, written with PUT and removed with DELETE",
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

/// Most tags one page lists when the client does not say.
const MAX_TAGS_PER_PAGE: usize = 1_000;

/// `GET /v2/<name>/tags/list[?n=&last=]`: tags in byte order, after `last`
/// (exclusive), at most `n` (at most [`MAX_TAGS_PER_PAGE`]), with a
/// `Link` to the next page when there is more. `n=0` is an empty list.
fn list_tags(registry: &Registry, name: &str, request: &Request<'_>) -> Result<Response, OciError> {
    let n = match request.query.get("n") {
        None => MAX_TAGS_PER_PAGE,
        Some(n) => n.parse::<usize>().map_err(|_| {
            OciError::new(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                "n must be a number of tags",
            )
        })?,
    }
    .min(MAX_TAGS_PER_PAGE);
    let last = request.query.get("last").map(String::as_str);
    let tags = registry.manifests.tags(name)?;
    let after: Vec<&String> = tags
        .iter()
        .filter(|tag| last.is_none_or(|last| tag.as_str() > last))
        .collect();
    let page: Vec<&String> = after.iter().take(n).copied().collect();
    let mut response = axum::Json(json!({"name": name, "tags": page})).into_response();
    if n > 0
        && after.len() > page.len()
        && let Some(last) = page.last()
        && let Ok(link) = header::HeaderValue::from_str(&format!(
            "</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\""
        ))
    {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
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

/// A digest in a blob's path: one of another algorithm names no blob here.
fn blob_digest(digest: &str) -> Result<Digest, OciError> {
    Digest::parse(digest).map_err(|e| match e {
        BlobError::Unsupported(_) => OciError::from(BlobError::Unknown),
        e => e.into(),
    })
}

/// A single `Range: bytes=…` of a blob of `size` bytes: its first and last
/// byte, clamped to the blob; `Err` when it cannot be satisfied; `None`
/// when there is no range (or several, answered whole, as RFC 9110 allows).
fn byte_range(headers: &HeaderMap, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = headers.get(header::RANGE)?.to_str().ok()?.trim();
    let spec = spec.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let parse = |text: &str| text.trim().parse::<u64>().ok();
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        // The last n bytes.
        (true, false) => match parse(last) {
            Some(0) | None => Err(()),
            Some(n) => Ok((size.saturating_sub(n), size.saturating_sub(1))),
        },
        (false, true) => match parse(first) {
            Some(start) if start < size => Ok((start, size - 1)),
            _ => Err(()),
        },
        (false, false) => match (parse(first), parse(last)) {
            (Some(start), Some(end)) if start <= end && start < size => {
                Ok((start, end.min(size - 1)))
            }
            _ => Err(()),
        },
        (true, true) => Err(()),
    };
    Some(range.and_then(|r| if size == 0 { Err(()) } else { Ok(r) }))
}

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`, streamed from one open file: a
/// 64 MiB blob is never held in memory. One `Range` is answered `206`.
fn read_blob(
    registry: &Registry,
    name: &str,
    digest: &str,
    with_body: bool,
    request: &Request<'_>,
) -> Result<Response, OciError> {
    use std::io::{Seek, SeekFrom};
    let digest = blob_digest(digest)?;
    if !registry.blobs.is_linked(name, &digest) {
        return Err(BlobError::Unknown.into());
    }
    let (mut file, size) = registry.blobs.open_blob(&digest)?;
    let (status, start, length, range) = match byte_range(request.headers, size) {
        None => (StatusCode::OK, 0, size, None),
        Some(Ok((first, last))) => (
            StatusCode::PARTIAL_CONTENT,
            first,
            last - first + 1,
            Some(format!("bytes {first}-{last}/{size}")),
        ),
        Some(Err(())) => {
            let mut response = OciError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                format!("the blob has {size} bytes; that range is not in it"),
            )
            .into_response();
            if let Ok(value) = header::HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let body = if with_body {
        file.seek(SeekFrom::Start(start))
            .map_err(|e| BlobError::Io(e.to_string()))?;
        Body::from_stream(tokio_util::io::ReaderStream::new(
            tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), length),
        ))
    } else {
        Body::empty()
    };
    let mut headers = vec![
        (header::CONTENT_LENGTH, length.to_string()),
        (header::CONTENT_TYPE, "application/octet-stream".into()),
        (header::ACCEPT_RANGES, "bytes".into()),
        digest_header(&digest),
    ];
    if let Some(range) = range {
        headers.push((header::CONTENT_RANGE, range));
    }
    Ok(with_headers(status, &headers, body))
}

/// `DELETE /v2/<name>/blobs/<digest>`: the repository lets go of the blob
/// (`202`); the bytes go at the next garbage collection when nothing else
/// holds them. The component a deployed agent runs is not let go of.
fn delete_blob(
    registry: &Registry,
    name: &str,
    digest: &str,
    request: &Request<'_>,
) -> Result<Response, OciError> {
    let digest = blob_digest(digest)?;
    if request.in_use.components.contains(digest.hex()) {
        return Err(BlobError::InUse(format!(
            "{digest} is the component of a deployed agent: remove or redeploy the agent first"
        ))
        .into());
    }
    let _storing = registry.storing();
    registry.blobs.unlink(name, &digest)?;
    Ok(with_headers(
        StatusCode::ACCEPTED,
        &[(header::CONTENT_LENGTH, "0".into())],
        Body::empty(),
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

/// Links a blob just stored, unless a garbage collection is running (it
/// holds the lock until it is done, then the link is made).
fn link_stored(registry: &Registry, name: &str, digest: &Digest) -> Result<(), OciError> {
    let _storing = registry.storing();
    // The blob may have been collected between its upload and this link
    // only if it was older than the grace period: then it is gone, say so.
    registry.blobs.size(digest)?;
    registry.blobs.link(name, digest)?;
    Ok(())
}

/// `POST /v2/<name>/blobs/uploads/`: starts an upload, or stores the body
/// at once when a digest comes along (monolithic), or mounts a blob from
/// another repository the token may publish to (`?mount=&from=`, `201`);
/// a mount that cannot be made is answered as a plain upload (`202`), as
/// the spec says.
fn start_upload(
    registry: &Registry,
    name: &str,
    request: &Request<'_>,
    body: super::blobs::Chunks<'_>,
) -> Answer {
    if let Some(digest) = request.query.get("digest") {
        let digest = Digest::parse(digest)?;
        // The body streams in without the storing lock: a slow client
        // never holds up a collection, nor everyone behind it.
        let session = registry.blobs.start(request.owner, name)?;
        let size = match registry
            .blobs
            .append_stream(&session, request.owner, None, body)
        {
            Ok(size) => size,
            Err(e) => {
                registry.blobs.close_after_refusal(&session, request.owner);
                return Err(e.into());
            }
        };
        {
            let _storing = registry.storing();
            let stored = registry
                .blobs
                .finish(&session, request.owner, &digest)
                .and_then(|()| registry.blobs.check_quota(name, &digest, size))
                .and_then(|()| registry.blobs.link(name, &digest));
            if let Err(e) = stored {
                registry.blobs.close_after_refusal(&session, request.owner);
                return Err(e.into());
            }
        }
        let stored = StoredBlob {
            repository: name.to_string(),
            digest: digest.clone(),
            size,
        };
        return Ok((blob_created(name, &digest), Some(stored)));
    }
    if let (Some(mount), Some(from)) = (request.query.get("mount"), request.query.get("from"))
        && let Ok(digest) = Digest::parse(mount)
        && super::validate_repository(from).is_ok()
        && request.scope.may_read(from)
        && registry.blobs.is_linked(from, &digest)
    {
        let size = registry.blobs.size(&digest)?;
        let namespace = super::blobs::namespace_of(name);
        // Bytes the namespace holds already cost nothing more.
        if let Some(quota) = registry.blobs.quota()
            && !registry.blobs.namespace_holds(namespace, &digest)
        {
            let used = registry
                .blobs
                .namespace_usage(namespace)
                .saturating_add(size);
            if used > quota {
                return Err(BlobError::QuotaExceeded {
                    namespace: namespace.to_string(),
                    used,
                    quota,
                }
                .into());
            }
        }
        link_stored(registry, name, &digest)?;
        return Ok((blob_created(name, &digest), None));
    }
    let session = registry.blobs.start(request.owner, name)?;
    Ok((upload_accepted(name, &session, 0), None))
}

/// A `Content-Range` of a chunk: `<start>-<end>`, with or without a
/// `bytes ` or `bytes=` prefix. Anything else is refused (`416`), not
/// ignored: a range the registry cannot read must not turn its order check
/// off.
fn chunk_range(headers: &HeaderMap) -> Result<Option<super::blobs::ChunkRange>, OciError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let invalid = || {
        OciError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            "Content-Range must be <start>-<end>, the chunk's first and last byte",
        )
    };
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let text = text
        .strip_prefix("bytes=")
        .or_else(|| text.strip_prefix("bytes "))
        .unwrap_or(text);
    let (start, end) = text.split_once('-').ok_or_else(invalid)?;
    let number = |t: &str| {
        (!t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u64>().ok())
            .flatten()
    };
    let (Some(start), Some(end)) = (number(start), number(end)) else {
        return Err(invalid());
    };
    if end < start {
        return Err(invalid());
    }
    // A declared length must agree with the range, before a byte is read.
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        && Some(length) != (end - start).checked_add(1)
    {
        return Err(invalid());
    }
    Ok(Some(super::blobs::ChunkRange {
        start,
        end: Some(end),
    }))
}

/// `PATCH /v2/<name>/blobs/uploads/<session>`: one chunk, at the offset
/// its `Content-Range` names, streamed to disk.
fn append_upload(
    registry: &Registry,
    name: &str,
    session: &str,
    request: &Request<'_>,
    body: super::blobs::Chunks<'_>,
) -> Result<Response, OciError> {
    registry.blobs.check_session(session, request.owner, name)?;
    let range = chunk_range(request.headers)?;
    let size = registry
        .blobs
        .append_stream(session, request.owner, range, body)?;
    Ok(upload_accepted(name, session, size))
}

/// `PUT /v2/<name>/blobs/uploads/<session>?digest=`: the last chunk, if
/// any (at the offset its `Content-Range` names: out of order is `416` and
/// the upload stays), then the digest checked and the blob linked. Any
/// other refusal ends the session, so refused closings never pile up
/// against the token's upload limit.
fn finish_upload(
    registry: &Registry,
    name: &str,
    session: &str,
    request: &Request<'_>,
    body: super::blobs::Chunks<'_>,
) -> Answer {
    registry.blobs.check_session(session, request.owner, name)?;
    let range = chunk_range(request.headers)?;
    let mut finish = || -> Result<(Digest, u64), OciError> {
        let digest = Digest::parse(
            request
                .query
                .get("digest")
                .map(String::as_str)
                .unwrap_or_default(),
        )?;
        let size = registry
            .blobs
            .append_stream(session, request.owner, range, body)?;
        let _storing = registry.storing();
        registry.blobs.finish(session, request.owner, &digest)?;
        registry.blobs.check_quota(name, &digest, size)?;
        registry.blobs.link(name, &digest)?;
        Ok((digest, size))
    };
    match finish() {
        Ok((digest, size)) => {
            let stored = StoredBlob {
                repository: name.to_string(),
                digest: digest.clone(),
                size,
            };
            Ok((blob_created(name, &digest), Some(stored)))
        }
        // Out of order: the client may send the chunk again, where it goes.
        Err(e) if e.status == StatusCode::RANGE_NOT_SATISFIABLE => Err(e),
        Err(e) => {
            registry.blobs.close_after_refusal(session, request.owner);
            Err(e)
        }
    }
}

/// `GET /v2/<name>/blobs/uploads/<session>`: how much was received.
fn upload_status(
    registry: &Registry,
    name: &str,
    session: &str,
    request: &Request<'_>,
) -> Result<Response, OciError> {
    registry.blobs.check_session(session, request.owner, name)?;
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
    check: &dyn Fn(&[u8]) -> Result<String, String>,
) -> Result<Response, OciError> {
    let invalid =
        |message: String| OciError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", message);
    let (parsed, body) = request
        .manifest
        .ok_or_else(|| invalid("no manifest".into()))?;
    let manifest = parsed
        .as_ref()
        .map_err(|e| invalid(format!("not JSON: {e}")))?;
    let media_type = manifest_media_type(request.headers, manifest)?;
    // From the check of its blobs to its storing, no collection runs.
    let _storing = registry.storing();
    let subject = check_manifest(registry, name, manifest, check)?;
    // Manifests count against the namespace's quota too.
    let namespace = super::blobs::namespace_of(name);
    if let Some(quota) = registry.blobs.quota() {
        let used = registry
            .blobs
            .namespace_usage(namespace)
            .saturating_add(body.len() as u64);
        let known = registry
            .manifests
            .get(name, &Digest::of(body).to_string())
            .is_ok();
        if used > quota && !known {
            return Err(BlobError::QuotaExceeded {
                namespace: namespace.to_string(),
                used,
                quota,
            }
            .into());
        }
    }
    let digest = registry.manifests.put(name, reference, &media_type, body)?;
    registry.blobs.recount(Some(namespace));
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

/// `DELETE /v2/<name>/manifests/<reference>`: by digest, the manifest, its
/// tags and the manifests that refer to it (its signatures); by tag, only
/// the tag. A version tag is retired, never to name other bytes. What a
/// deployed agent runs is refused.
fn delete_manifest(
    registry: &Registry,
    name: &str,
    reference: &str,
    request: &Request<'_>,
) -> Result<Response, OciError> {
    let _storing = registry.storing();
    match Digest::parse(reference) {
        Ok(digest) => {
            // What deployed agents run here, and what refers to it (their
            // signatures, which a restart or a trust change checks again).
            let mut protected = std::collections::HashSet::new();
            for reference in &request.in_use.manifests {
                if let Some((repository, pinned)) = reference.split_once('@')
                    && repository == name
                    && let Ok(pinned) = Digest::parse(pinned)
                {
                    for referrer in registry
                        .manifests
                        .referrers(name, &pinned, None)
                        .unwrap_or_default()
                    {
                        if let Some(Ok(d)) = referrer["digest"].as_str().map(Digest::parse) {
                            protected.insert(d);
                        }
                    }
                    protected.insert(pinned);
                }
            }
            let in_use = |d: &Digest| protected.contains(d);
            registry.manifests.delete(name, &digest, &in_use)?;
        }
        Err(BlobError::Unsupported(_)) => return Err(ManifestError::Unknown.into()),
        Err(_) => {
            let digest = registry.manifests.get(name, reference)?.digest;
            if request
                .in_use
                .manifests
                .contains(&format!("{name}@{digest}"))
                && manifests::is_version(reference)
            {
                return Err(ManifestError::InUse(format!(
                    "{name}@{reference} is what a deployed agent runs: remove or redeploy the agent first"
                ))
                .into());
            }
            registry.manifests.untag(name, reference)?;
        }
    }
    registry
        .blobs
        .recount(Some(super::blobs::namespace_of(name)));
    Ok(with_headers(
        StatusCode::ACCEPTED,
        &[(header::CONTENT_LENGTH, "0".into())],
        Body::empty(),
    ))
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
