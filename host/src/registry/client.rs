//! A small OCI Distribution client for `clawcage push` and `pull`: blobs
//! with the portable POST-then-PUT upload, manifests by tag or digest, and
//! signatures as referrers. Everything read back is checked against its
//! digest before it is used or written out.

use std::time::Duration;

use reqwest::{Method, StatusCode, header};
use serde_json::Value;

use super::blobs::Digest;
use super::layout::{self, MANIFEST_TYPE};
use super::signing::{self, PublisherKey, Signature};

/// A registry, with the token to present.
pub struct RegistryClient {
    base: String,
    token: zeroize::Zeroizing<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// What a push stored.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The component manifest's digest.
    pub digest: Digest,
    /// The signature referrer's digest, when signed.
    pub signature: Option<Digest>,
}

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry could not be reached.
    #[error("{what}: {message}")]
    Unreachable {
        /// What was being done.
        what: String,
        /// Why (never the URL's path).
        message: String,
    },
    /// The registry answered with an error.
    #[error("{what}: {status}: {code} {message}")]
    Refused {
        /// What was being done.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The OCI error code (`MANIFEST_UNKNOWN`, `DENIED`, …).
        code: String,
        /// Its message.
        message: String,
    },
    /// The input, or what the registry sent, is not right: a digest that
    /// does not match, something that is not a component.
    #[error("{0}")]
    Invalid(String),
}

impl From<&str> for ClientError {
    fn from(message: &str) -> Self {
        Self::Invalid(message.to_string())
    }
}

impl From<String> for ClientError {
    fn from(message: String) -> Self {
        Self::Invalid(message)
    }
}

/// What a pull fetched.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The manifest's digest.
    pub digest: Digest,
    /// The component.
    pub component: Vec<u8>,
    /// The signatures attached to it that verify over its digest (whether
    /// their keys are trusted is for the caller to say).
    pub signatures: Vec<Signature>,
}

impl RegistryClient {
    /// A client of the registry at `base` (`http://127.0.0.1:7878`).
    pub fn new(base: &str, token: &str) -> Result<Self, ClientError> {
        let http = crate::outbound::client_builder(crate::outbound::DEFAULT_CONNECT_TIMEOUT)?
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token: zeroize::Zeroizing::new(token.to_string()),
            http,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&*self.token)
    }

    /// An upload location as a path on this registry. An absolute location
    /// elsewhere is refused: the token goes to this registry only.
    fn same_origin(&self, location: &str) -> Result<String, ClientError> {
        if location.starts_with('/') {
            return Ok(location.to_string());
        }
        match location.strip_prefix(&self.base) {
            Some(path) if path.starts_with('/') => Ok(path.to_string()),
            _ => Err(format!(
                "the registry sent the upload elsewhere ({location}); not sending the token there"
            )
            .into()),
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            what: what.to_string(),
            message: if e.is_connect() {
                "no registry answers there (is `clawcage serve` running?)".into()
            } else {
                crate::outbound::error_kind(&e).into()
            },
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let error = &body["errors"][0];
        Err(ClientError::Refused {
            what: what.to_string(),
            status: status.as_u16(),
            code: error["code"].as_str().unwrap_or("").to_string(),
            message: error["message"]
                .as_str()
                .unwrap_or("the registry refused")
                .to_string(),
        })
    }

    /// Uploads a blob unless the registry has it.
    pub async fn push_blob(&self, repository: &str, bytes: &[u8]) -> Result<Digest, ClientError> {
        let digest = Digest::of(bytes);
        let exists = self
            .request(Method::HEAD, &format!("/v2/{repository}/blobs/{digest}"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if exists {
            return Ok(digest);
        }
        let started = self
            .send(
                self.request(Method::POST, &format!("/v2/{repository}/blobs/uploads/")),
                "starting an upload",
            )
            .await?;
        let location = started
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or("the registry gave no upload location")?
            .to_string();
        let location = self.same_origin(&location)?;
        let separator = if location.contains('?') { '&' } else { '?' };
        self.send(
            self.request(
                Method::PUT,
                &format!("{location}{separator}digest={digest}"),
            )
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes.to_vec()),
            &format!("uploading {digest}"),
        )
        .await?;
        Ok(digest)
    }

    /// Stores a manifest under a tag or its digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, ClientError> {
        self.send(
            self.request(
                Method::PUT,
                &format!("/v2/{repository}/manifests/{reference}"),
            )
            .header(header::CONTENT_TYPE, media_type)
            .body(bytes.to_vec()),
            &format!("pushing {repository}:{reference}"),
        )
        .await?;
        Ok(Digest::of(bytes))
    }

    /// A manifest by tag or digest, checked against the digest the
    /// registry names (and the one asked for).
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Digest, Value), ClientError> {
        let response = self
            .send(
                self.request(
                    Method::GET,
                    &format!("/v2/{repository}/manifests/{reference}"),
                )
                .header(
                    header::ACCEPT,
                    format!("{MANIFEST_TYPE}, application/vnd.oci.image.index.v1+json"),
                ),
                &format!("{repository}@{reference}"),
            )
            .await?;
        let named = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        let digest = Digest::of(&bytes);
        let expected = Digest::parse(reference)
            .ok()
            .or_else(|| named.as_deref().and_then(|named| Digest::parse(named).ok()));
        if expected.is_some_and(|expected| expected != digest) {
            return Err(format!(
                "{repository}@{reference}: the manifest's bytes do not match its digest"
            )
            .into());
        }
        let manifest = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok((digest, manifest))
    }

    /// A blob, checked against its digest.
    pub async fn blob(&self, repository: &str, digest: &Digest) -> Result<Vec<u8>, ClientError> {
        let response = self
            .send(
                self.request(Method::GET, &format!("/v2/{repository}/blobs/{digest}")),
                &format!("blob {digest}"),
            )
            .await?;
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        if Digest::of(&bytes) != *digest {
            return Err(format!("blob {digest}: the bytes do not match the digest").into());
        }
        Ok(bytes.to_vec())
    }

    /// Pushes a component as `repository:version` in the Wasm OCI layout,
    /// and, with a key, its signature as a referrer.
    pub async fn push_component(
        &self,
        repository: &str,
        version: &str,
        component: &[u8],
        key: Option<&PublisherKey>,
    ) -> Result<Pushed, ClientError> {
        super::validate_repository(repository)?;
        super::manifests::validate_tag(version).map_err(|e| e.to_string())?;
        if key.is_some() && !super::manifests::is_version(version) {
            return Err(format!(
                "{version:?} is not a version: only semantic versions (1.2.0) are signed"
            )
            .into());
        }
        let config =
            serde_json::to_vec(&layout::config_for(component)?).map_err(|e| e.to_string())?;
        self.push_blob(repository, &config).await?;
        self.push_blob(repository, component).await?;
        let manifest = layout::manifest_for(&config, component);
        let digest = self
            .put_manifest(repository, version, MANIFEST_TYPE, &manifest)
            .await?;
        let signature = match key {
            Some(key) => Some(
                self.sign(repository, version, &digest, manifest.len(), key)
                    .await?,
            ),
            None => None,
        };
        Ok(Pushed { digest, signature })
    }

    /// Signs the manifest `digest` (of `size` bytes) as `repository` at
    /// `version` and attaches the signature as a referrer.
    pub async fn sign(
        &self,
        repository: &str,
        version: &str,
        digest: &Digest,
        size: usize,
        key: &PublisherKey,
    ) -> Result<Digest, ClientError> {
        let signature = key.sign(repository, version, digest)?;
        let blob = signature.to_blob();
        self.push_blob(repository, signing::EMPTY_CONFIG).await?;
        self.push_blob(repository, &blob).await?;
        let subject = serde_json::json!({
            "mediaType": MANIFEST_TYPE,
            "digest": digest.to_string(),
            "size": size,
        });
        let manifest = signing::signature_manifest(&subject, &signature, &blob);
        let referrer = Digest::of(&manifest);
        self.put_manifest(repository, &referrer.to_string(), MANIFEST_TYPE, &manifest)
            .await
    }

    /// Signs the manifest that version `reference` (`name@version`) points
    /// at, whoever pushed it, only if that is `expected` (so a publisher
    /// never signs what someone else put under the tag). Answers the signed
    /// digest and the signature's.
    pub(crate) async fn sign_reference(
        &self,
        reference: &str,
        expected: &Digest,
        key: &PublisherKey,
    ) -> Result<(Digest, Digest), ClientError> {
        let (repository, version) = super::parse_reference(reference)?;
        if Digest::parse(version).is_ok() {
            return Err(format!(
                "{reference}: sign a version (name@1.2.0); pass the digest you expect with --digest"
            )
            .into());
        }
        let (digest, _) = self.manifest(repository, version).await?;
        if *expected != digest {
            return Err(
                format!("{reference} is {digest}, not the {expected} you meant to sign").into(),
            );
        }
        let bytes_len = self.manifest_len(repository, &digest).await?;
        let signature = self
            .sign(repository, version, &digest, bytes_len, key)
            .await?;
        Ok((digest, signature))
    }

    async fn manifest_len(&self, repository: &str, digest: &Digest) -> Result<usize, ClientError> {
        let response = self
            .send(
                self.request(
                    Method::HEAD,
                    &format!("/v2/{repository}/manifests/{digest}"),
                ),
                &format!("{repository}@{digest}"),
            )
            .await?;
        response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ClientError::Invalid("the registry did not give the manifest's size".into())
            })
    }

    /// Pulls the component at `reference` (`name@version`,
    /// `name@sha256:…`), and the signatures on it that verify.
    pub async fn pull_component(&self, reference: &str) -> Result<Pulled, ClientError> {
        let (repository, version) = super::parse_reference(reference)?;
        let (digest, manifest) = self.manifest(repository, version).await?;
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        let layer = match layers.as_slice() {
            [layer] if layer["mediaType"] == layout::LAYER_TYPE => layer,
            _ => return Err(format!("{reference} is not a component (one wasm layer)").into()),
        };
        let layer_digest =
            Digest::parse(layer["digest"].as_str().unwrap_or("")).map_err(|e| e.to_string())?;
        let component = self.blob(repository, &layer_digest).await?;
        let mut signatures = Vec::new();
        let index = self
            .send(
                self.request(
                    Method::GET,
                    &format!(
                        "/v2/{repository}/referrers/{digest}?artifactType={}",
                        // `+` in a query means a space.
                        signing::SIGNATURE_TYPE.replace('+', "%2B")
                    ),
                ),
                "listing signatures",
            )
            .await?
            .json::<Value>()
            .await
            .map_err(|e| e.to_string())?;
        for referrer in index["manifests"].as_array().into_iter().flatten() {
            let Some(referrer) = referrer["digest"].as_str() else {
                continue;
            };
            let (_, signature_manifest) = self.manifest(repository, referrer).await?;
            if signature_manifest["subject"]["digest"] != digest.to_string() {
                continue;
            }
            let Ok(blob_digest) = Digest::parse(
                signature_manifest["layers"][0]["digest"]
                    .as_str()
                    .unwrap_or(""),
            ) else {
                continue;
            };
            let Ok(signature) = Signature::from_blob(&self.blob(repository, &blob_digest).await?)
            else {
                continue;
            };
            if signing::verify(&digest, &signature).is_ok() {
                signatures.push(signature);
            }
        }
        Ok(Pulled {
            digest,
            component,
            signatures,
        })
    }
}
