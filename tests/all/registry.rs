//! The registry's OCI Distribution routes on a running daemon: uploads
//! (monolithic and chunked), manifests byte for byte, tags, immutable
//! versions, publisher auth, and the spec's errors.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::daemon::{Running, start};

fn digest(bytes: &[u8]) -> String {
    clawcage::registry::blobs::Digest::of(bytes).to_string()
}

impl Running {
    fn v2(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        // Standard clients log in with Basic: any user, the token as password.
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("publisher:{}", self.token.trim()));
        self.http
            .request(method, format!("{}/v2/{path}", self.url))
            .header("authorization", format!("Basic {basic}"))
    }
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
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
    let tags: Value = daemon
        .v2(Method::GET, "acme/triage/tags/list")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
async fn push_component(daemon: &Running, tag: &str, layer: &[u8]) -> (u16, String, String) {
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
    let tags: Value = daemon
        .v2(reqwest::Method::GET, "acme/pushed/tags/list")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["1.0.0"]));
}
