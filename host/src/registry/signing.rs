//! Publisher signatures (Ed25519, ring) and the operator's trust policy.
//!
//! A publisher signs a manifest's digest *for a repository and version*.
//! The signed message is domain-separated and names all three:
//!
//! ```text
//! clawcage-manifest-signature-v2
//! repository=acme/triage
//! version=1.2.0
//! digest=sha256:…
//! ```
//!
//! so a signature made for anything else cannot be replayed as one over a
//! manifest, and a signed build cannot be relabelled: pushing the bytes of
//! a signed `acme/triage@1.0.0` as `1.3.0`, or into `acme/other`, yields a
//! manifest whose signature names another version or repository, which a
//! deployment of `acme/triage@1.3.0` or `acme/other@…` refuses. (A
//! deployment by digest pins the bytes itself, so any version's signature
//! for that repository serves.) Keys travel as hex: the private key as its PKCS#8 document (a
//! file only its owner can read), the public key as its 32 raw bytes.
//!
//! A signature travels as an OCI 1.1 *referrer*: a separate manifest of
//! artifact type [`SIGNATURE_TYPE`] whose `subject` is the signed manifest
//! and whose one layer is the [`Signature`] as JSON. A referrer, not an
//! annotation, because an annotation inside the manifest would change the
//! very digest it signs; and referrers can be added later (a second
//! publisher countersigning) without touching the component's manifest,
//! and are listed by the standard `GET /v2/<name>/referrers/<digest>`
//! (`oras discover` shows them).
//!
//! The trust policy maps a namespace (a repository's first path component,
//! `acme` in `acme/triage`) to the public keys trusted to publish there. A
//! manifest is deployable when one of its signatures verifies under one of
//! those keys; unsigned, or signed only by others, it is refused, unless
//! the operator set `allow_unsigned` for that namespace.

use std::collections::BTreeMap;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::blobs::Digest;
use crate::secret::Secret;

/// The artifact type (and layer media type) of a signature.
pub const SIGNATURE_TYPE: &str = "application/vnd.clawcage.signature.v1+json";
/// The OCI empty config's media type, for artifacts without a config.
pub(crate) const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The OCI empty config's bytes.
pub(crate) const EMPTY_CONFIG: &[u8] = b"{}";
/// The annotation on a signature referrer naming the signer's public key.
pub const SIGNER_ANNOTATION: &str = "dev.clawcage.signature.public-key";

/// Largest signature blob read.
pub(crate) const MAX_SIGNATURE_BYTES: u64 = 4096;
/// Most signatures on one manifest considered at deployment.
pub const MAX_SIGNATURES: usize = 64;

/// The trust policy's file in the state directory.
pub(crate) const TRUST_FILE: &str = "trust.toml";

/// The first line of every signed message.
const CONTEXT: &str = "clawcage-manifest-signature-v2";

/// The signed message. Repository names and tags have no newlines (they
/// are checked before signing and before verifying), so it is unambiguous.
fn message(repository: &str, version: &str, digest: &Digest) -> Vec<u8> {
    format!("{CONTEXT}\nrepository={repository}\nversion={version}\ndigest={digest}").into_bytes()
}

/// A publisher's key pair.
pub struct PublisherKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherKey")
            .field("public", &self.public_hex())
            .finish_non_exhaustive()
    }
}

impl PublisherKey {
    /// A fresh key pair, and its PKCS#8 document (hex) to store.
    pub fn generate() -> Result<(Self, Secret), String> {
        let rng = ring::rand::SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "the OS random number generator failed".to_string())?;
        let pkcs8 = Secret::from(hex::encode(document.as_ref()));
        let key = Self::from_pkcs8_hex(&pkcs8)?;
        Ok((key, pkcs8))
    }

    /// A key pair from its stored PKCS#8 document (hex).
    pub(crate) fn from_pkcs8_hex(text: &Secret) -> Result<Self, String> {
        let bytes = zeroize::Zeroizing::new(
            hex::decode(text.expose_str().unwrap_or_default().trim())
                .map_err(|_| "the private key is not hex".to_string())?,
        );
        let pair = Ed25519KeyPair::from_pkcs8(&bytes)
            .map_err(|_| "the private key is not an Ed25519 PKCS#8 document".to_string())?;
        Ok(Self { pair })
    }

    /// The public key, hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    /// Signs the manifest `digest` as `repository` at `version`.
    pub fn sign(
        &self,
        repository: &str,
        version: &str,
        digest: &Digest,
    ) -> Result<Signature, String> {
        check_names(repository, version)?;
        Ok(Signature {
            public_key: self.public_hex(),
            signature: hex::encode(
                self.pair
                    .sign(&message(repository, version, digest))
                    .as_ref(),
            ),
            repository: repository.to_string(),
            version: version.to_string(),
        })
    }
}

/// A signature names a repository and a semantic version. Only versions:
/// they are immutable, so a signature for one always means the same bytes,
/// where one for a moving tag (`latest`) would stay valid for every build
/// the tag ever named, and let anyone who can push move it back.
fn check_names(repository: &str, version: &str) -> Result<(), String> {
    super::validate_repository(repository)?;
    super::manifests::validate_tag(version).map_err(|e| e.to_string())?;
    if !super::manifests::is_version(version) {
        return Err(format!(
            "{version:?} is not a version: sign semantic versions (1.2.0), which cannot move"
        ));
    }
    Ok(())
}

/// A signature attached to a manifest: who signed, for which repository and
/// version, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The signer's public key, hex.
    pub public_key: String,
    /// The signature, hex.
    pub signature: String,
    /// The repository it was signed for.
    pub repository: String,
    /// The version it was signed as.
    pub version: String,
}

impl Signature {
    /// The signature's layer blob.
    pub fn to_blob(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A signature from its layer blob.
    pub(crate) fn from_blob(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() as u64 > MAX_SIGNATURE_BYTES {
            return Err("a signature blob is larger than 4 KiB".into());
        }
        serde_json::from_slice(bytes).map_err(|e| format!("not a ClawCage signature: {e}"))
    }
}

/// The referrer manifest attaching `signature` (whose blob is
/// `signature_blob`) to the manifest `subject` (a descriptor: media type,
/// digest, size).
pub fn signature_manifest(
    subject: &serde_json::Value,
    signature: &Signature,
    signature_blob: &[u8],
) -> Vec<u8> {
    use super::layout::{MANIFEST_TYPE, descriptor};
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": SIGNATURE_TYPE,
        "config": descriptor(EMPTY_CONFIG_TYPE, EMPTY_CONFIG),
        "layers": [descriptor(SIGNATURE_TYPE, signature_blob)],
        "subject": subject,
        // No time: Ed25519 is deterministic, so signing again gives the
        // same referrer rather than a pile of copies.
        "annotations": {
            SIGNER_ANNOTATION: signature.public_key,
        },
    });
    serde_json::to_vec(&manifest).unwrap_or_default()
}

/// Verifies one signature over `digest`, for the repository and version it
/// names (whether those are the ones wanted is the caller's check).
pub fn verify(digest: &Digest, signature: &Signature) -> Result<(), String> {
    check_names(&signature.repository, &signature.version)?;
    let key = hex::decode(&signature.public_key).map_err(|_| "the public key is not hex")?;
    let sig = hex::decode(&signature.signature).map_err(|_| "the signature is not hex")?;
    UnparsedPublicKey::new(&ED25519, key)
        .verify(
            &message(&signature.repository, &signature.version, digest),
            &sig,
        )
        .map_err(|_| {
            format!(
                "the signature by {} does not verify",
                short(&signature.public_key)
            )
        })
}

/// The start of a key, for messages (by characters: keys come from
/// uploads and may be anything).
fn short(key: &str) -> String {
    key.chars().take(16).collect()
}

/// What the operator trusts in one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceTrust {
    /// Public keys (hex) trusted to publish here.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Deploy unsigned components from here. Default: no.
    #[serde(default)]
    pub allow_unsigned: bool,
}

/// The operator's trust policy, by namespace. Deny by default: a namespace
/// not listed trusts nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicy {
    /// Namespaces.
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceTrust>,
}

impl TrustPolicy {
    /// The policy in a TOML file; a missing file is the empty policy, which
    /// trusts nobody.
    /// The file must be the daemon user's own and writable by no one else:
    /// whoever can edit it decides what runs.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        match crate::fsutil::read_owned_file(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("{}: not UTF-8", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("trust policy {}: {e}", path.display())),
        }
    }

    /// Writes the policy to a TOML file (atomically).
    pub fn save(&self, path: &std::path::Path) -> Result<(), String> {
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        crate::fsutil::write_atomically(path, text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether `key` (hex) is trusted to publish `repository`.
    pub fn trusts(&self, repository: &str, key: &str) -> bool {
        let namespace = repository.split('/').next().unwrap_or_default();
        self.namespaces
            .get(namespace)
            .is_some_and(|trust| trust.keys.iter().any(|k| k.eq_ignore_ascii_case(key)))
    }

    /// Whether the manifest `digest` of `repository`, asked for as
    /// `version` (`None` when asked for by digest), with `signatures`, may be
    /// deployed: the trusted key that signed it, or `None` when the
    /// namespace allows unsigned components and no trusted signature
    /// verified. The error says why not.
    pub fn check(
        &self,
        repository: &str,
        version: Option<&str>,
        digest: &Digest,
        signatures: &[Signature],
    ) -> Result<Option<String>, String> {
        let namespace = repository.split('/').next().unwrap_or_default();
        let trust = self.namespaces.get(namespace).cloned().unwrap_or_default();
        if signatures.is_empty() {
            return if trust.allow_unsigned {
                Ok(None)
            } else {
                Err(format!(
                    "{repository}@{digest} is unsigned, and namespace {namespace:?} does not allow unsigned components"
                ))
            };
        }
        let mut reasons = Vec::new();
        for signature in signatures {
            if signature.repository != repository {
                reasons.push(format!(
                    "a signature by {} is for {:?}, not {repository:?}",
                    short(&signature.public_key),
                    signature.repository
                ));
                continue;
            }
            if let Some(version) = version
                && signature.version != version
            {
                reasons.push(format!(
                    "a signature by {} is for version {:?}, not {version:?}",
                    short(&signature.public_key),
                    signature.version
                ));
                continue;
            }
            if !self.trusts(repository, &signature.public_key) {
                reasons.push(format!(
                    "key {} is not trusted for namespace {namespace:?}",
                    short(&signature.public_key)
                ));
                continue;
            }
            match verify(digest, signature) {
                Ok(()) => return Ok(Some(signature.public_key.to_ascii_lowercase())),
                Err(reason) => reasons.push(reason),
            }
        }
        if trust.allow_unsigned {
            return Ok(None);
        }
        Err(format!(
            "no trusted signature on {repository}@{digest}: {}",
            reasons.join("; ")
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(keys: &[&str], allow_unsigned: bool) -> TrustPolicy {
        TrustPolicy {
            namespaces: BTreeMap::from([(
                "acme".to_string(),
                NamespaceTrust {
                    keys: keys.iter().map(|k| k.to_string()).collect(),
                    allow_unsigned,
                },
            )]),
        }
    }

    #[test]
    fn signatures_verify_only_for_trusted_keys_and_what_was_signed() {
        let (publisher, pkcs8) = PublisherKey::generate().unwrap();
        let reloaded = PublisherKey::from_pkcs8_hex(&pkcs8).unwrap();
        assert_eq!(reloaded.public_hex(), publisher.public_hex());
        let (stranger, _) = PublisherKey::generate().unwrap();
        let digest = Digest::of(b"manifest");
        let signed = publisher.sign("acme/triage", "1.2.0", &digest).unwrap();
        let trusted = policy(&[&publisher.public_hex()], false);
        let check = |repository: &str, version: Option<&str>, digest: &Digest, s: &[Signature]| {
            trusted.check(repository, version, digest, s)
        };
        let one = std::slice::from_ref(&signed);
        assert_eq!(
            check("acme/triage", Some("1.2.0"), &digest, one).unwrap(),
            Some(publisher.public_hex())
        );
        // By digest, the version asked for is the digest itself.
        assert!(check("acme/triage", None, &digest, one).is_ok());

        // A tampered component changes the manifest's digest.
        let other = Digest::of(b"manifest, tampered");
        assert!(check("acme/triage", Some("1.2.0"), &other, one).is_err());
        // The same signed manifest relabelled: another version, another
        // repository.
        assert!(
            check("acme/triage", Some("1.3.0"), &digest, one)
                .unwrap_err()
                .contains("not \"1.3.0\"")
        );
        assert!(
            check("acme/other", None, &digest, one)
                .unwrap_err()
                .contains("not \"acme/other\"")
        );
        // A signature whose claims were edited no longer verifies.
        let mut relabelled = signed.clone();
        relabelled.version = "1.3.0".into();
        assert!(
            check("acme/triage", Some("1.3.0"), &digest, &[relabelled])
                .unwrap_err()
                .contains("does not verify")
        );
        // A tampered signature.
        let mut forged = signed.clone();
        forged.signature.replace_range(
            0..2,
            if forged.signature.starts_with("00") {
                "01"
            } else {
                "00"
            },
        );
        assert!(
            check("acme/triage", Some("1.2.0"), &digest, &[forged])
                .unwrap_err()
                .contains("does not verify")
        );
        // An untrusted key, even with a valid signature.
        let by_stranger = stranger.sign("acme/triage", "1.2.0", &digest).unwrap();
        assert!(
            check("acme/triage", Some("1.2.0"), &digest, &[by_stranger])
                .unwrap_err()
                .contains("not trusted")
        );
        // Another namespace trusts nobody.
        let elsewhere = publisher.sign("other/triage", "1.2.0", &digest).unwrap();
        assert!(check("other/triage", Some("1.2.0"), &digest, &[elsewhere]).is_err());
        // Unsigned: refused unless allowed.
        assert!(
            check("acme/triage", Some("1.2.0"), &digest, &[])
                .unwrap_err()
                .contains("unsigned")
        );
        assert!(
            policy(&[], true)
                .check("acme/triage", None, &digest, &[])
                .is_ok()
        );
        // Names that could smuggle a line into the message are refused.
        assert!(publisher.sign("acme/triage", "1.2.0\nx", &digest).is_err());
        assert!(
            publisher
                .sign("acme/triage", &digest.to_string(), &digest)
                .is_err()
        );
    }
}
