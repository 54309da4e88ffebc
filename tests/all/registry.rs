//! The registry's OCI Distribution routes on a running daemon: uploads
//! (monolithic and chunked), manifests byte for byte, tags, immutable
//! versions, publisher auth, and the spec's errors.

use base64::Engine as _;
use clawcage::registry::blobs::Digest;
use clawcage::registry::client::RegistryClient;
use clawcage::registry::layout;
use clawcage::registry::signing::{self, NamespaceTrust, PublisherKey, TrustPolicy};
use serde_json::{Value, json};

use crate::daemon::{Running, start};

pub(crate) fn digest(bytes: &[u8]) -> String {
    clawcage::registry::blobs::Digest::of(bytes).to_string()
}

impl Running {
    /// A GET on the registry, as JSON.
    pub(crate) async fn v2_json(&self, path: &str) -> Value {
        let response = self.v2(reqwest::Method::GET, path).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// A GET on the registry, as bytes.
    async fn v2_bytes(&self, path: &str) -> Vec<u8> {
        let response = self.v2(reqwest::Method::GET, path).send().await.unwrap();
        response.bytes().await.unwrap().to_vec()
    }

    pub(crate) fn v2(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        // Standard clients log in with Basic: any user, the token as password.
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("publisher:{}", self.token.trim()));
        self.http
            .request(method, format!("{}/v2/{path}", self.url))
            .header("authorization", format!("Basic {basic}"))
    }
}

/// Sends a request line as it is, over a plain socket, so that nothing
/// normalises its path; answers the status and body.
async fn raw_request(daemon: &Running, request_line: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = daemon.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "{request_line} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        daemon.token.trim()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

pub(crate) async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["errors"][0]["code"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_and_manifests_round_trip_with_the_specs_errors() {
    let daemon = start().await;
    use reqwest::Method;
    // Unauthenticated: 401 with a Basic challenge.
    let anonymous = daemon
        .http
        .get(format!("{}/v2/", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"clawcage\""
    );
    assert_eq!(
        daemon.v2(Method::GET, "").send().await.unwrap().status(),
        200
    );

    // Monolithic upload of the config.
    let config = br#"{"architecture":"wasm","os":"wasip2"}"#;
    let pushed = daemon
        .v2(
            Method::POST,
            &format!("acme/triage/blobs/uploads/?digest={}", digest(config)),
        )
        .body(config.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    assert_eq!(
        pushed.headers()["docker-content-digest"],
        digest(config).as_str()
    );

    // Chunked upload of the layer.
    let layer = std::fs::read(clawcage_tests::HELLO).unwrap();
    let started = daemon
        .v2(Method::POST, "acme/triage/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_string();
    let session = location.rsplit('/').next().unwrap().to_string();
    let cut = layer.len() / 2;
    let (first, rest) = layer.split_at(cut);
    let patched = daemon
        .v2(
            Method::PATCH,
            &format!("acme/triage/blobs/uploads/{session}"),
        )
        .header("content-range", format!("0-{}", cut - 1))
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 202);
    assert_eq!(
        patched.headers()["range"].to_str().unwrap(),
        format!("0-{}", cut - 1)
    );
    let out_of_order = daemon
        .v2(
            Method::PATCH,
            &format!("acme/triage/blobs/uploads/{session}"),
        )
        .header("content-range", "5-10")
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(out_of_order.status(), 416);
    let finished = daemon
        .v2(
            Method::PUT,
            &format!(
                "acme/triage/blobs/uploads/{session}?digest={}",
                digest(&layer)
            ),
        )
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), 201);
    let fetched = daemon
        .v2(
            Method::GET,
            &format!("acme/triage/blobs/{}", digest(&layer)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), layer.as_slice());

    // A manifest, stored and served byte for byte.
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": digest(config), "size": config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": digest(&layer), "size": layer.len()}]
    }))
    .unwrap();
    let media_type = "application/vnd.oci.image.manifest.v1+json";
    let put = daemon
        .v2(Method::PUT, "acme/triage/manifests/1.2.0")
        .header("content-type", media_type)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(
        put.headers()["docker-content-digest"],
        digest(&manifest).as_str()
    );
    let got = daemon
        .v2(Method::GET, "acme/triage/manifests/1.2.0")
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["content-type"], media_type);
    assert_eq!(got.bytes().await.unwrap().as_ref(), manifest.as_slice());
    let by_digest = daemon
        .v2(
            Method::HEAD,
            &format!("acme/triage/manifests/{}", digest(&manifest)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(by_digest.status(), 200);
    let tags: Value = daemon.v2_json("acme/triage/tags/list").await;
    assert_eq!(tags, json!({"name": "acme/triage", "tags": ["1.2.0"]}));

    // The spec's errors.
    let mut moved = manifest.clone();
    moved.push(b'\n');
    for (request, expected) in [
        (
            daemon
                .v2(Method::PUT, "acme/triage/manifests/1.2.0")
                .body(moved),
            (403, "DENIED"),
        ),
        (
            daemon.v2(
                Method::GET,
                &format!("acme/triage/blobs/{}", digest(b"nothing")),
            ),
            (404, "BLOB_UNKNOWN"),
        ),
        (
            daemon
                .v2(
                    Method::POST,
                    &format!("acme/triage/blobs/uploads/?digest={}", digest(b"other")),
                )
                .body("this"),
            (400, "DIGEST_INVALID"),
        ),
        (
            daemon.v2(Method::GET, "Acme//x/tags/list"),
            (400, "NAME_INVALID"),
        ),
        (
            daemon
                .v2(Method::PATCH, "acme/triage/blobs/uploads/nosuchsession")
                .body("x"),
            (404, "BLOB_UPLOAD_UNKNOWN"),
        ),
        (
            daemon.v2(Method::GET, "acme/triage/manifests/9.9.9"),
            (404, "MANIFEST_UNKNOWN"),
        ),
        (
            daemon
                .v2(Method::PUT, "acme/triage/manifests/2.0.0")
                .body("not json"),
            (400, "MANIFEST_INVALID"),
        ),
        (
            daemon.v2(Method::PUT, "acme/triage/manifests/2.0.0").body(
                json!({"schemaVersion": 2, "layers": [{"digest": digest(b"absent")}]}).to_string(),
            ),
            (400, "MANIFEST_BLOB_UNKNOWN"),
        ),
        (
            daemon
                .v2(Method::PUT, "acme/triage/manifests/2.0.0")
                .body(format!(
                    r#"{{"schemaVersion":2,"pad":"{}"}}"#,
                    "x".repeat(5 << 20)
                )),
            (413, "SIZE_INVALID"),
        ),
    ] {
        let (status, code) = error_code(request.send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), expected);
    }
    // Nothing partial is left behind by the failed uploads.
    let uploads = daemon.state.join("registry/uploads");
    assert_eq!(std::fs::read_dir(uploads).unwrap().count(), 0);
}

/// Pushes `layer` with a Wasm config and answers the manifest PUT's status
/// and error code.
pub(crate) async fn push_component(
    daemon: &Running,
    tag: &str,
    layer: &[u8],
) -> (u16, String, String) {
    use reqwest::Method;
    let config = br#"{"architecture":"wasm","os":"wasip2","layerDigests":[]}"#;
    for blob in [&config[..], layer] {
        let pushed = daemon
            .v2(
                Method::POST,
                &format!("acme/pushed/blobs/uploads/?digest={}", digest(blob)),
            )
            .body(blob.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(pushed.status(), 201);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": digest(config), "size": config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": digest(layer), "size": layer.len()}]
    });
    let response = daemon
        .v2(Method::PUT, &format!("acme/pushed/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["errors"][0]["code"].as_str().unwrap_or("").to_string(),
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_components_of_the_clawcage_world_are_accepted() {
    let daemon = start().await;
    let (status, _, message) = push_component(
        &daemon,
        "1.0.0",
        &std::fs::read(clawcage_tests::HELLO).unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{message}");
    let core_module = wat::parse_str("(module)").unwrap();
    let command = std::fs::read(clawcage_tests::COMMAND_APP).unwrap();
    for (layer, needle) in [
        (core_module, "core wasm module"),
        (command, "handler"),
        (b"definitely not wasm".to_vec(), "magic number"),
    ] {
        let (status, code, message) = push_component(&daemon, "2.0.0", &layer).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "MANIFEST_INVALID"),
            "{message}"
        );
        assert!(message.to_lowercase().contains(needle), "{message}");
    }
    let tags: Value = daemon.v2_json("acme/pushed/tags/list").await;
    assert_eq!(tags["tags"], json!(["1.0.0"]));
}

/// Deploys agent `name` from registry `reference` through the API.
pub(crate) async fn deploy_reference(
    daemon: &Running,
    name: &str,
    reference: &str,
) -> (u16, Value) {
    let manifest = format!("name = {name:?}\n[component]\nregistry = {reference:?}\n");
    daemon
        .call(
            reqwest::Method::PUT,
            &format!("/v1/agents/{name}"),
            Some(json!({"manifest": manifest})),
        )
        .await
}

/// Deploys `reference` as agent `name`, expecting a refusal; answers why.
async fn refused(daemon: &Running, name: &str, reference: &str) -> String {
    let (status, body) = deploy_reference(daemon, name, reference).await;
    assert_eq!(status, 400, "{reference} was deployed: {body}");
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn registry_client(daemon: &Running) -> RegistryClient {
    RegistryClient::new(&daemon.url, daemon.token.trim()).unwrap()
}

pub(crate) fn trust(
    daemon: &Running,
    namespace: &str,
    keys: &[&PublisherKey],
    allow_unsigned: bool,
) {
    let mut policy = TrustPolicy::default();
    policy.namespaces.insert(
        namespace.to_string(),
        NamespaceTrust {
            keys: keys.iter().map(|k| k.public_hex()).collect(),
            allow_unsigned,
        },
    );
    policy.save(&daemon.state.join("trust.toml")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_components_round_trip_and_deploy_by_reference() {
    let daemon = start().await;
    let client = registry_client(&daemon);
    let hello = std::fs::read(clawcage_tests::HELLO).unwrap();
    let (publisher, _) = PublisherKey::generate().unwrap();
    let pushed = client
        .push_component("acme/hello", "1.0.0", &hello, Some(&publisher))
        .await
        .unwrap();

    // Pulled back byte for byte, with the publisher's signature.
    let pulled = client.pull_component("acme/hello@1.0.0").await.unwrap();
    assert_eq!(pulled.component, hello);
    assert_eq!(pulled.digest, pushed.digest);
    assert_eq!(pulled.signatures.len(), 1);
    assert_eq!(pulled.signatures[0].public_key, publisher.public_hex());

    // The config follows the CNCF layout and names the component's
    // imports and exports.
    let (_, manifest) = client.manifest("acme/hello", "1.0.0").await.unwrap();
    assert_eq!(manifest["config"]["mediaType"], layout::CONFIG_TYPE);
    assert_eq!(manifest["layers"][0]["mediaType"], layout::LAYER_TYPE);
    let config_digest = Digest::parse(manifest["config"]["digest"].as_str().unwrap()).unwrap();
    let config: Value =
        serde_json::from_slice(&client.blob("acme/hello", &config_digest).await.unwrap()).unwrap();
    assert_eq!(
        (config["architecture"].as_str(), config["os"].as_str()),
        (Some("wasm"), Some("wasip2"))
    );
    let exports = config["component"]["exports"].as_array().unwrap();
    assert!(
        exports
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("clawcage:agent/handler")),
        "{config}"
    );
    let imports = config["component"]["imports"].as_array().unwrap();
    assert!(
        imports.iter().all(|i| {
            let i = i.as_str().unwrap();
            i.starts_with("clawcage:agent/") || i.starts_with("wasi:")
        }),
        "{config}"
    );

    // The referrers API lists the signature.
    let referrers: Value = daemon
        .v2_json(&format!("acme/hello/referrers/{}", pushed.digest))
        .await;
    assert_eq!(
        referrers["manifests"][0]["artifactType"],
        signing::SIGNATURE_TYPE
    );
    assert_eq!(
        referrers["manifests"][0]["digest"],
        pushed.signature.unwrap().to_string()
    );

    // Nothing is trusted yet: refused.
    let message = refused(&daemon, "greeter", "acme/hello@1.0.0").await;
    assert!(message.contains("not trusted"), "{message}");

    // Trusted: deployed by version, and it runs.
    trust(&daemon, "acme", &[&publisher], false);
    let (status, deployed) = deploy_reference(&daemon, "greeter", "acme/hello@1.0.0").await;
    assert_eq!(status, 200, "{deployed}");
    assert_eq!(
        deployed["deployed"]["origin"]["signer"],
        publisher.public_hex()
    );
    assert_eq!(
        deployed["deployed"]["origin"]["reference"],
        format!("acme/hello@{}", pushed.digest)
    );
    let (status, answer) = daemon
        .invoke(
            "greeter",
            json!({"source": "test", "kind": "greet", "payload": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(
        (status, answer["result"].as_str()),
        (200, Some("Hello, Ada!")),
        "{answer}"
    );
    // And by digest.
    let by_digest = format!("acme/hello@{}", pushed.digest);
    assert_eq!(
        deploy_reference(&daemon, "greeter", &by_digest).await.0,
        200
    );

    // Every push, refusal and deployment is on the record.
    let audit = daemon.audit_text();
    assert!(
        audit.contains(r#""kind":"push""#) && audit.contains(r#""artifact":"signature""#),
        "{audit}"
    );
    assert!(audit.contains(r#""change":"refused""#));
    assert!(audit.contains(&format!(r#""signer":"{}""#, publisher.public_hex())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_unsigned_and_tampered_components_are_never_deployed() {
    let daemon = start().await;
    let client = registry_client(&daemon);
    let hello = std::fs::read(clawcage_tests::HELLO).unwrap();
    let (publisher, _) = PublisherKey::generate().unwrap();
    let (stranger, _) = PublisherKey::generate().unwrap();
    trust(&daemon, "acme", &[&publisher], false);

    // Unsigned; signed by a key the operator does not trust; signed by the
    // trusted key, but in a namespace it is not trusted for.
    for (agent, repository, key, needle) in [
        ("plain", "acme/plain", None, "unsigned"),
        ("strange", "acme/strange", Some(&stranger), "not trusted"),
        ("other", "other/hello", Some(&publisher), "not trusted"),
    ] {
        client
            .push_component(repository, "1.0.0", &hello, key)
            .await
            .unwrap();
        let message = refused(&daemon, agent, &format!("{repository}@1.0.0")).await;
        assert!(message.contains(needle), "{repository}: {message}");
    }

    // A tampered signature is refused at push...
    let pushed = client
        .push_component("acme/signed", "1.0.0", &hello, Some(&publisher))
        .await
        .unwrap();
    let forged = publisher
        .sign("acme/signed", "1.0.0", &Digest::of(b"some other manifest"))
        .unwrap();
    let forged_blob = forged.to_blob();
    client.push_blob("acme/signed", &forged_blob).await.unwrap();
    let subject =
        json!({"mediaType": layout::MANIFEST_TYPE, "digest": pushed.digest.to_string(), "size": 1});
    let forged_manifest = signing::signature_manifest(&subject, &forged, &forged_blob);
    let err = client
        .put_manifest(
            "acme/signed",
            &Digest::of(&forged_manifest).to_string(),
            layout::MANIFEST_TYPE,
            &forged_manifest,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("MANIFEST_INVALID") && err.contains("does not verify"),
        "{err}"
    );
    // ...and one altered on the registry's disk no longer counts.
    assert_eq!(
        deploy_reference(&daemon, "signed", "acme/signed@1.0.0")
            .await
            .0,
        200
    );
    let signature_layer = {
        let index: Value = daemon
            .v2_json(&format!("acme/signed/referrers/{}", pushed.digest))
            .await;
        let referrer = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let (_, manifest) = client.manifest("acme/signed", &referrer).await.unwrap();
        Digest::parse(manifest["layers"][0]["digest"].as_str().unwrap()).unwrap()
    };
    let blobs = daemon.state.join("registry/blobs/sha256");
    std::fs::write(blobs.join(signature_layer.hex()), forged.to_blob()).unwrap();
    let message = refused(&daemon, "signed", "acme/signed@1.0.0").await;
    assert!(message.contains("unsigned"), "{message}");

    // The operator may allow unsigned components for a namespace.
    trust(&daemon, "acme", &[&publisher], true);
    assert_eq!(
        deploy_reference(&daemon, "plain", "acme/plain@1.0.0")
            .await
            .0,
        200
    );

    // Bad references never reach the disk.
    for bad in [
        "acme/../x@1.0.0",
        "Acme/hello@1.0.0",
        "acme/hello",
        "acme/hello@sha256:zz",
    ] {
        let message = refused(&daemon, "bad", bad).await;
        assert!(!message.is_empty(), "{bad}");
    }

    // A tampered component: the layer's bytes on disk replaced by another
    // valid component.
    // (Its own key, so its signature is not the one altered above.)
    let (second, _) = PublisherKey::generate().unwrap();
    trust(&daemon, "acme", &[&publisher, &second], true);
    let pushed = client
        .push_component("acme/victim", "1.0.0", &hello, Some(&second))
        .await
        .unwrap();
    let (_, manifest) = client
        .manifest("acme/victim", &pushed.digest.to_string())
        .await
        .unwrap();
    let layer = Digest::parse(manifest["layers"][0]["digest"].as_str().unwrap()).unwrap();
    let other = std::fs::read(clawcage_tests::HOSTILE).unwrap();
    std::fs::write(blobs.join(layer.hex()), &other).unwrap();
    let message = refused(&daemon, "victim", "acme/victim@1.0.0").await;
    assert!(message.contains("does not match its digest"), "{message}");
    assert!(
        daemon
            .call(reqwest::Method::GET, "/v1/agents", None)
            .await
            .1
            .to_string()
            .find("victim")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_outside_the_world_or_with_lying_configs_are_refused() {
    let daemon = start().await;
    // A component importing wasi:http, which the cage does not offer.
    let http_import = wat::parse_str(
        r#"(component
             (import "wasi:http/outgoing-handler@0.2.6" (instance))
           )"#,
    )
    .unwrap();
    let (status, code, message) = push_component(&daemon, "3.0.0", &http_import).await;
    assert_eq!(
        (status, code.as_str()),
        (400, "MANIFEST_INVALID"),
        "{message}"
    );
    assert!(message.contains("wasi:http/outgoing-handler"), "{message}");

    // A config that misstates the component's imports.
    let client = registry_client(&daemon);
    let hello = std::fs::read(clawcage_tests::HELLO).unwrap();
    let mut config = layout::config_for(&hello).unwrap();
    config
        .component
        .as_mut()
        .unwrap()
        .imports
        .retain(|i| !i.starts_with("wasi:"));
    let config = serde_json::to_vec(&config).unwrap();
    client.push_blob("acme/liar", &config).await.unwrap();
    client.push_blob("acme/liar", &hello).await.unwrap();
    let err = client
        .put_manifest(
            "acme/liar",
            "1.0.0",
            layout::MANIFEST_TYPE,
            &layout::manifest_for(&config, &hello),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("MANIFEST_INVALID") && err.contains("component.imports"),
        "{err}"
    );

    // A config for another platform.
    let wasip1 = br#"{"architecture":"wasm","os":"wasip1"}"#;
    client.push_blob("acme/liar", wasip1).await.unwrap();
    let err = client
        .put_manifest(
            "acme/liar",
            "1.0.1",
            layout::MANIFEST_TYPE,
            &layout::manifest_for(wasip1, &hello),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wasip1"), "{err}");

    // Refusals are audited with their reason.
    let audit = daemon.audit_text();
    assert!(
        audit.contains(r#""accepted":false"#) && audit.contains("MANIFEST_INVALID"),
        "{audit}"
    );
    // wkg finds the registry.
    let metadata: Value = daemon
        .http
        .get(format!("{}/.well-known/wasm-pkg/registry.json", daemon.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["preferredProtocol"], "oci");
    assert_eq!(
        metadata["oci"]["registry"],
        daemon.url.trim_start_matches("http://")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_tokens_reach_only_their_namespaces_and_never_the_admin_api() {
    use clawcage::daemon::auth::Scope;
    let daemon = start().await;
    let token = daemon
        .daemon
        .tokens
        .create_scoped("acme-ci", &Scope::Publish(vec!["acme".into()]))
        .unwrap();
    let token = token.expose_str().unwrap();
    let publisher = RegistryClient::new(&daemon.url, token).unwrap();
    let hello = std::fs::read(clawcage_tests::HELLO).unwrap();
    publisher
        .push_component("acme/hello", "1.0.0", &hello, None)
        .await
        .unwrap();
    assert_eq!(
        publisher
            .pull_component("acme/hello@1.0.0")
            .await
            .unwrap()
            .component,
        hello
    );
    // Another namespace: refused before anything is stored.
    let err = publisher
        .push_component("other/hello", "1.0.0", &hello, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("403") && err.contains("DENIED"), "{err}");
    let other = daemon
        .v2(reqwest::Method::GET, "other/hello/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "nothing was pushed to other/hello");
    // Another namespace's blobs can be neither read nor named by digest.
    let secret = std::fs::read(clawcage_tests::NOOP).unwrap();
    registry_client(&daemon)
        .push_component("other/secret", "1.0.0", &secret, None)
        .await
        .unwrap();
    let err = publisher
        .blob("acme/hello", &Digest::of(&secret))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("BLOB_UNKNOWN"), "{err}");
    let config = br#"{"architecture":"wasm","os":"wasip2"}"#;
    publisher.push_blob("acme/hello", config).await.unwrap();
    let err = publisher
        .put_manifest(
            "acme/hello",
            "2.0.0",
            layout::MANIFEST_TYPE,
            &layout::manifest_for(config, &secret),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("MANIFEST_BLOB_UNKNOWN"), "{err}");
    // The admin API does not take a publisher token.
    let agents = daemon
        .http
        .get(format!("{}/v1/agents", daemon.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(agents.status(), 401);
    assert!(daemon.audit_text().contains(r#""actor":"acme-ci""#));
}

/// Runs a `clawcage` command line in-process, off the async workers (the
/// client commands start their own runtime); answers its output.
fn clawcage(args: &[&str]) -> Result<String, String> {
    use clawcage::cli::Command;
    let mut argv = vec!["clawcage"];
    argv.extend_from_slice(args);
    let cli =
        <clawcage::cli::Cli as clap::Parser>::try_parse_from(argv).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::task::block_in_place(|| match cli.command {
        Command::Keygen(c) => c.run(&mut out),
        Command::Push(c) => c.run(&mut out),
        Command::Sign(c) => c.run(&mut out),
        Command::Pull(c) => c.run(&mut out),
        Command::Trust(c) => c.run(&mut out),
        Command::Agent(c) => c.run(&mut out),
        _ => Err("not a registry command".into()),
    })?;
    Ok(String::from_utf8(out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_flow_works_from_the_command_line() {
    let daemon = start().await;
    let work = tempfile::tempdir().unwrap();
    let at = |name: &str| work.path().join(name).display().to_string();
    let state = daemon.state.display().to_string();
    let remote = ["--remote", &daemon.url, "--token", daemon.token.trim()];
    // `agent` takes the daemon's address before its subcommand.
    let with_remote = |args: &[&str]| {
        let mut all = args.to_vec();
        let at = if args[0] == "agent" { 1 } else { all.len() };
        all.splice(at..at, remote);
        clawcage(&all)
    };

    let generated = clawcage(&["keygen", "--out", &at("acme")]).unwrap();
    assert!(generated.contains("acme.pub"), "{generated}");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(at("acme.key")).unwrap().permissions(),
    );
    assert_eq!(key_mode & 0o077, 0, "the private key is the owner's only");
    assert!(
        clawcage(&["keygen", "--out", &at("acme")])
            .unwrap_err()
            .contains("exists")
    );

    let pushed = with_remote(&[
        "push",
        clawcage_tests::HELLO,
        "--name",
        "acme/hello",
        "--version",
        "1.2.0",
        "--sign",
        &at("acme.key"),
    ])
    .unwrap();
    assert!(pushed.contains("signed"), "{pushed}");
    // Another version's bytes under the same tag: refused.
    let moved = with_remote(&[
        "push",
        clawcage_tests::NOOP,
        "--name",
        "acme/hello",
        "--version",
        "1.2.0",
    ])
    .unwrap_err();
    assert!(moved.contains("DENIED"), "{moved}");

    let public = at("acme.pub");
    let pull_verified = |reference: &str, out: &str| {
        with_remote(&["pull", reference, "-o", out, "--verify-key", &public])
    };
    let pulled = pull_verified("acme/hello@1.2.0", &at("pulled.wasm")).unwrap();
    assert!(pulled.contains("signed by"), "{pulled}");
    assert_eq!(
        std::fs::read(at("pulled.wasm")).unwrap(),
        std::fs::read(clawcage_tests::HELLO).unwrap()
    );
    // A version signed by nobody is not "verified"...
    let noop = ["--name", "acme/noop", "--version", "1.0.0"];
    with_remote(&[&["push", clawcage_tests::NOOP][..], &noop].concat()).unwrap();
    let unverified = pull_verified("acme/noop@1.0.0", &at("noop.wasm")).unwrap_err();
    assert!(unverified.contains("not signed by"), "{unverified}");
    // ...until the publisher signs it where it is, checking it is the
    // manifest they meant.
    let key = at("acme.key");
    let sign =
        |digest: &str| with_remote(&["sign", "acme/noop@1.0.0", "--key", &key, "--digest", digest]);
    let elsewhere = sign(&digest(b"some other manifest")).unwrap_err();
    assert!(elsewhere.contains("not the"), "{elsewhere}");
    let noop_manifest = clawcage::registry::layout::manifest_for(
        &serde_json::to_vec(
            &layout::config_for(&std::fs::read(clawcage_tests::NOOP).unwrap()).unwrap(),
        )
        .unwrap(),
        &std::fs::read(clawcage_tests::NOOP).unwrap(),
    );
    sign(&digest(&noop_manifest)).unwrap();
    pull_verified("acme/noop@1.0.0", &at("noop.wasm")).unwrap();

    // The operator trusts the key and deploys by reference.
    let manifest = work.path().join("agent.toml");
    std::fs::write(
        &manifest,
        "name = \"greeter\"\n[component]\nregistry = \"acme/hello@1.2.0\"\n",
    )
    .unwrap();
    let manifest = manifest.display().to_string();
    let refused = with_remote(&["agent", "deploy", &manifest]).unwrap_err();
    assert!(refused.contains("not trusted"), "{refused}");
    let policy = clawcage(&[
        "trust",
        "add",
        "acme",
        &at("acme.pub"),
        "--state-dir",
        &state,
    ])
    .unwrap();
    assert!(
        policy.starts_with("NAMESPACE") && policy.contains("\nacme  "),
        "{policy}"
    );
    let deployed = with_remote(&["agent", "deploy", &manifest]).unwrap();
    assert!(deployed.contains("acme/hello@sha256:"), "{deployed}");
    // --component overrides the manifest's component.
    let deployed = with_remote(&[
        "agent",
        "deploy",
        &manifest,
        "--component",
        "acme/noop@1.0.0",
    ])
    .unwrap();
    assert!(deployed.contains("acme/noop@sha256:"), "{deployed}");
    let listed = with_remote(&["agent", "list"]).unwrap();
    assert!(listed.contains("acme/noop@sha256:"), "{listed}");
    assert!(
        clawcage(&[
            "trust",
            "add",
            "../x",
            &at("acme.pub"),
            "--state-dir",
            &state
        ])
        .is_err()
    );
    assert!(clawcage(&["trust", "add", "acme", "not-a-key", "--state-dir", &state]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_uploads_get_the_specs_errors_and_leave_nothing_behind() {
    use reqwest::Method;
    let daemon = crate::daemon::start_with(|options| options.max_blob_bytes = 4096).await;
    let start_upload = || async {
        let started = daemon
            .v2(Method::POST, "acme/x/blobs/uploads/")
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202);
        started.headers()["location"].to_str().unwrap().to_string()
    };
    let at = |location: &str| location.trim_start_matches("/v2/").to_string();

    // Oversized, in one request.
    let big = vec![7u8; 8192];
    let response = daemon
        .v2(
            Method::POST,
            &format!("acme/x/blobs/uploads/?digest={}", digest(&big)),
        )
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let (status, code) = error_code(response).await;
    assert_eq!((status, code.as_str()), (413, "SIZE_INVALID"));
    // Oversized, in chunks each under the limit.
    let location = start_upload().await;
    let first = daemon
        .v2(Method::PATCH, &at(&location))
        .header("content-range", "0-3071")
        .body(big[..3072].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    let second = daemon
        .v2(Method::PATCH, &at(&location))
        .header("content-range", "3072-6143")
        .body(big[3072..6144].to_vec())
        .send()
        .await
        .unwrap();
    let (status, code) = error_code(second).await;
    assert_eq!((status, code.as_str()), (413, "SIZE_INVALID"));

    // Truncated: half the bytes, the whole's digest.
    let whole = b"the whole blob, of which only half arrives".to_vec();
    let location = start_upload().await;
    daemon
        .v2(Method::PATCH, &at(&location))
        .body(whole[..20].to_vec())
        .send()
        .await
        .unwrap();
    let finish = daemon
        .v2(
            Method::PUT,
            &format!("{}?digest={}", at(&location), digest(&whole)),
        )
        .send()
        .await
        .unwrap();
    let (status, code) = error_code(finish).await;
    assert_eq!((status, code.as_str()), (400, "DIGEST_INVALID"));
    let head = daemon
        .v2(Method::HEAD, &format!("acme/x/blobs/{}", digest(&whole)))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);

    // A chunk out of order.
    let location = start_upload().await;
    let skipped = daemon
        .v2(Method::PATCH, &at(&location))
        .header("content-range", "100-199")
        .body(vec![0u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(skipped.status(), 416);

    // Unknown sessions, session ids that try to be paths, and names with
    // path tricks, sent raw so no client normalises them away.
    for (request, expected) in [
        (
            "PUT /v2/acme/x/blobs/uploads/nosuchsession?digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            "PATCH /v2/acme/x/blobs/uploads/../../../blobs",
            "BLOB_UPLOAD_UNKNOWN",
        ),
        ("GET /v2/acme/x/blobs/uploads/..", "BLOB_UPLOAD_UNKNOWN"),
        ("GET /v2/acme/../x/tags/list", "NAME_INVALID"),
        ("GET /v2/../../etc/tags/list", "NAME_INVALID"),
        ("GET /v2/acme/%2E%2E/x/tags/list", "NAME_INVALID"),
        ("GET /v2/acme//x/tags/list", "NAME_INVALID"),
        ("GET /v2/ACME/x/tags/list", "NAME_INVALID"),
        ("GET /v2/acme/.x/manifests/1.0.0", "NAME_INVALID"),
        // Not a tag, so it names no manifest (the spec: 404).
        (
            "GET /v2/acme/x/manifests/..%2F..%2Fsecret",
            "MANIFEST_UNKNOWN",
        ),
    ] {
        let (status, body) = raw_request(&daemon, request).await;
        assert!(
            matches!(status, 400 | 404) && body.contains(expected),
            "{request}: {status} {body}"
        );
    }

    // Malformed manifests.
    for manifest in [
        json!({"schemaVersion": 1}).to_string(),
        json!({"schemaVersion": 2, "config": {"mediaType": "x"}}).to_string(),
        json!({"schemaVersion": 2, "config": {"digest": "md5:abc"}}).to_string(),
        "[".to_string(),
        json!({"schemaVersion": 2, "artifactType": signing::SIGNATURE_TYPE, "layers": []})
            .to_string(),
    ] {
        let response = daemon
            .v2(Method::PUT, "acme/x/manifests/1.0.0")
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        let (status, code) = error_code(response).await;
        assert_eq!(status, 400, "{manifest}");
        assert!(
            ["MANIFEST_INVALID", "DIGEST_INVALID"].contains(&code.as_str()),
            "{manifest}: {code}"
        );
    }
    // Nothing partial anywhere, nothing stored, and the daemon still serves.
    let blobs = std::fs::read_dir(daemon.state.join("registry/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
    assert_eq!(
        daemon.v2(Method::GET, "").send().await.unwrap().status(),
        200
    );
    let tags = daemon
        .v2(Method::GET, "acme/x/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_builds_cannot_be_relabelled_as_another_version_or_repository() {
    let daemon = start().await;
    let client = registry_client(&daemon);
    let (publisher, _) = PublisherKey::generate().unwrap();
    trust(&daemon, "acme", &[&publisher], false);
    // 1.0.0 is signed; the publisher's key stays offline after that.
    let old = std::fs::read(clawcage_tests::HELLO).unwrap();
    let signed = client
        .push_component("acme/triage", "1.0.0", &old, Some(&publisher))
        .await
        .unwrap();
    let stored = daemon
        .v2_bytes(&format!("acme/triage/manifests/{}", signed.digest))
        .await;

    // A token holder without the key pushes the old signed manifest as
    // 1.3.0 (a rollback) and as latest: the signature names 1.0.0.
    for tag in ["1.3.0", "latest"] {
        client
            .put_manifest("acme/triage", tag, layout::MANIFEST_TYPE, &stored)
            .await
            .unwrap();
        let message = refused(&daemon, "triage", &format!("acme/triage@{tag}")).await;
        assert!(message.contains(&format!("not {tag:?}")), "{message}");
    }
    // By version 1.0.0, or by its digest, it deploys.
    assert_eq!(
        deploy_reference(&daemon, "triage", "acme/triage@1.0.0")
            .await
            .0,
        200
    );
    let pinned = format!("acme/triage@{}", signed.digest);
    assert_eq!(deploy_reference(&daemon, "triage", &pinned).await.0, 200);

    // Copied into another repository, every blob, the manifest and the
    // signature: the signature is refused there, and the copy does not
    // deploy.
    let copy = |repository: &'static str, value: &Value| {
        let digest = Digest::parse(value["digest"].as_str().unwrap()).unwrap();
        let client = &client;
        async move {
            let bytes = client.blob("acme/triage", &digest).await.unwrap();
            client.push_blob(repository, &bytes).await.unwrap();
        }
    };
    let manifest: Value = serde_json::from_slice(&stored).unwrap();
    copy("acme/other", &manifest["config"]).await;
    copy("acme/other", &manifest["layers"][0]).await;
    client
        .put_manifest("acme/other", "1.0.0", layout::MANIFEST_TYPE, &stored)
        .await
        .unwrap();
    let index: Value = daemon
        .v2_json(&format!("acme/triage/referrers/{}", signed.digest))
        .await;
    let referrer = index["manifests"][0]["digest"].as_str().unwrap();
    let signature_manifest = daemon
        .v2_bytes(&format!("acme/triage/manifests/{referrer}"))
        .await;
    let signature: Value = serde_json::from_slice(&signature_manifest).unwrap();
    copy("acme/other", &signature["config"]).await;
    copy("acme/other", &signature["layers"][0]).await;
    let err = client
        .put_manifest(
            "acme/other",
            referrer,
            layout::MANIFEST_TYPE,
            &signature_manifest,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not \"acme/other\""), "{err}");
    let message = refused(&daemon, "other", "acme/other@1.0.0").await;
    assert!(message.contains("unsigned"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_by_other_keys_cannot_crowd_out_the_trusted_one() {
    let daemon = start().await;
    let client = registry_client(&daemon);
    let (publisher, _) = PublisherKey::generate().unwrap();
    trust(&daemon, "acme", &[&publisher], false);
    let hello = std::fs::read(clawcage_tests::HELLO).unwrap();
    let pushed = client
        .push_component("acme/hello", "1.0.0", &hello, Some(&publisher))
        .await
        .unwrap();
    let size = daemon
        .v2_bytes(&format!("acme/hello/manifests/{}", pushed.digest))
        .await
        .len();
    // More genuine signatures by an untrusted key than a deployment reads,
    // each for another version so each is a distinct referrer.
    let (flooder, _) = PublisherKey::generate().unwrap();
    for patch in 0..=signing::MAX_SIGNATURES {
        client
            .sign(
                "acme/hello",
                &format!("9.9.{patch}"),
                &pushed.digest,
                size,
                &flooder,
            )
            .await
            .unwrap();
    }
    let index = daemon
        .v2_json(&format!("acme/hello/referrers/{}", pushed.digest))
        .await;
    assert!(index["manifests"].as_array().unwrap().len() > signing::MAX_SIGNATURES);
    assert_eq!(
        deploy_reference(&daemon, "hello", "acme/hello@1.0.0")
            .await
            .0,
        200
    );
    // A signature whose annotation names another key than the one that
    // signed is refused at push.
    let honest = flooder.sign("acme/hello", "1.0.0", &pushed.digest).unwrap();
    let blob = honest.to_blob();
    client.push_blob("acme/hello", &blob).await.unwrap();
    let subject = json!({"mediaType": layout::MANIFEST_TYPE, "digest": pushed.digest.to_string(), "size": size});
    let mut lying: Value =
        serde_json::from_slice(&signing::signature_manifest(&subject, &honest, &blob)).unwrap();
    lying["annotations"][signing::SIGNER_ANNOTATION] = json!(publisher.public_hex());
    let lying = serde_json::to_vec(&lying).unwrap();
    let err = client
        .put_manifest("acme/hello", &digest(&lying), layout::MANIFEST_TYPE, &lying)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("annotation"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_component_is_compiled_on_push_and_not_at_deployment() {
    // A daemon with a compile cache of its own, empty.
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("cache");
    let own_cache = cache_dir.clone();
    let daemon = crate::daemon::start_with(move |options| {
        options.engine.cache_dir = Some(own_cache);
    })
    .await;
    let cached = || std::fs::read_dir(&cache_dir).map_or(0, |d| d.count());
    assert_eq!(cached(), 0);
    let hello = std::fs::read(clawcage_tests::HELLO).unwrap();
    registry_client(&daemon)
        .push_component("acme/fresh", "1.0.0", &hello, None)
        .await
        .unwrap();
    assert!(
        cached() > 0,
        "the push compiled the component into the cache"
    );
    trust(&daemon, "acme", &[], true);
    assert_eq!(
        deploy_reference(&daemon, "fresh", "acme/fresh@1.0.0")
            .await
            .0,
        200
    );
    let deployed = daemon.daemon.agent("fresh").unwrap();
    assert_eq!(
        deployed.agent.cache_outcome(),
        clawcage::CacheOutcome::Hit,
        "the deployment loaded the precompiled artifact"
    );
}
