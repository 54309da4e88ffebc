//! The registry against the OCI distribution spec's conformance
//! categories (pull, push, content discovery, content management) and a
//! hostile publisher: raw HTTP where a client library would hide the
//! defect, deletion, garbage collection racing pushes, quotas, and the
//! audit records of uploads.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::daemon::{Running, start, start_with};
use crate::registry::{deploy_reference, digest, error_code, push_component, trust};

/// Reads one HTTP/1.1 response (headers and a `Content-Length` body) from
/// a connection that may stay open.
async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<(u16, String, String)> {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    while !buffer.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await {
            Ok(Ok(1)) => buffer.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buffer).to_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some((status, head, String::from_utf8_lossy(&body).into_owned()))
}

fn basic(token: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("publisher:{}", token.trim()))
}

/// Pushes `blob` to `repository` in one request; answers the response.
async fn post_blob(daemon: &Running, repository: &str, blob: &[u8]) -> reqwest::Response {
    daemon
        .v2(
            Method::POST,
            &format!("{repository}/blobs/uploads/?digest={}", digest(blob)),
        )
        .body(blob.to_vec())
        .send()
        .await
        .unwrap()
}

/// Pushes `blob` to `repository` in one request; answers the status.
async fn push_blob(daemon: &Running, repository: &str, blob: &[u8]) -> u16 {
    post_blob(daemon, repository, blob).await.status().as_u16()
}

/// Starts an upload in `repository`; answers its location (a path under
/// `/v2/`).
async fn start_upload(daemon: &Running, repository: &str) -> String {
    let response = daemon
        .v2(Method::POST, &format!("{repository}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.headers()["location"]
        .to_str()
        .unwrap()
        .trim_start_matches("/v2/")
        .to_string()
}

/// Pushes a plain OCI image manifest of `blobs` as `reference`.
async fn push_manifest(
    daemon: &Running,
    repository: &str,
    reference: &str,
    blobs: &[&[u8]],
    subject: Option<&str>,
) -> (u16, String) {
    for blob in blobs {
        assert_eq!(push_blob(daemon, repository, blob).await, 201);
    }
    let descriptor = |b: &[u8]| json!({"mediaType": "application/octet-stream", "digest": digest(b), "size": b.len()});
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor(blobs[0]),
        "layers": blobs[1..].iter().map(|b| descriptor(b)).collect::<Vec<_>>(),
    });
    if let Some(subject) = subject {
        manifest["subject"] = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 1});
        manifest["artifactType"] = json!("application/vnd.example.note");
    }
    let response = daemon
        .v2(Method::PUT, &format!("{repository}/manifests/{reference}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let digest = response
        .headers()
        .get("docker-content-digest")
        .map(|d| d.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, digest)
}

async fn status_of(daemon: &Running, method: Method, path: &str) -> u16 {
    daemon
        .v2(method, path)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_leaves_the_connection_usable_or_says_it_closes() {
    let daemon = start().await;
    let host = daemon.url.trim_start_matches("http://").to_string();
    let token = daemon.token.trim().to_string();
    // (credentials, path, body length): no credentials (401), another
    // namespace (403), and an unknown route after the check (404).
    for (authorization, path, length) in [
        (String::new(), "/v2/acme/x/blobs/uploads/s", 10),
        (String::new(), "/v2/acme/x/blobs/uploads/s", 200_000),
        (
            format!("Authorization: Basic {}\r\n", basic(&token)),
            "/v2/acme/x/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
            10,
        ),
    ] {
        let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {host}\r\n{authorization}Content-Length: {length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // The body arrives after the headers, as a client streaming it sends it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = stream.write_all(&vec![b'x'; length]).await;
        let (status, headers, _) = read_response(&mut stream).await.expect("a response");
        assert!(matches!(status, 401 | 404 | 405), "{status} {headers}");
        if headers.contains("connection: close") {
            // Said so: the client knows not to reuse it.
            continue;
        }
        // Not said: the connection must carry the next request.
        let next = format!(
            "GET /v2/ HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {}\r\n\r\n",
            basic(&token)
        );
        stream.write_all(next.as_bytes()).await.unwrap();
        let (status, _, _) = read_response(&mut stream)
            .await
            .unwrap_or_else(|| panic!("the connection broke after a {status} without saying so"));
        assert_eq!(status, 200);
    }
    // A token outside its namespace, with a large body: refused, and says
    // it closes.
    let publisher = daemon
        .daemon
        .tokens
        .create_scoped(
            "acme-only",
            &clawcage::daemon::auth::Scope::Publish(vec!["acme".into()]),
        )
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "PATCH /v2/other/x/blobs/uploads/s HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Length: 1000000\r\n\r\n",
        publisher.expose_str().unwrap()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (status, headers, _) = read_response(&mut stream).await.unwrap();
    assert_eq!(status, 403);
    assert!(headers.contains("connection: close"), "{headers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_follow_the_specs_ranges_and_refusals_end_their_sessions() {
    let daemon = start().await;
    let blob: Vec<u8> = (0..42u8).collect();
    // Out of order on the closing PUT: 416, and the upload survives.
    let at = start_upload(&daemon, "acme/x").await;
    let first = daemon
        .v2(Method::PATCH, &at)
        .header("content-range", "0-21")
        .body(blob[..22].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    assert_eq!(first.headers()["range"], "0-21");
    let skipped = daemon
        .v2(Method::PUT, &format!("{at}?digest={}", digest(&blob)))
        .header("content-range", "30-49")
        .body(blob[22..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(skipped).await,
        (416, "BLOB_UPLOAD_INVALID".into())
    );
    let closed = daemon
        .v2(Method::PUT, &format!("{at}?digest={}", digest(&blob)))
        .header("content-range", "22-41")
        .body(blob[22..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 201);
    assert_eq!(
        daemon
            .v2_bytes_of(&format!("acme/x/blobs/{}", digest(&blob)))
            .await,
        blob
    );

    // A range whose end disagrees with the body, a `bytes=` form, and one
    // that cannot be read: each refused, none skips the order check.
    let at = start_upload(&daemon, "acme/x").await;
    for (range, body, expected) in [
        ("0-29", &blob[..20], 416),
        ("bytes=20-29", &blob[..10], 416),
        ("zero to nine", &blob[..10], 416),
        ("bytes=0-9", &blob[..10], 202),
    ] {
        let response = daemon
            .v2(Method::PATCH, &at)
            .header("content-range", range)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{range}");
    }

    // Garbage digests on the closing PUT end their sessions: twenty of
    // them do not lock the token out.
    for bad in [
        "sha512:".to_string() + &"a".repeat(128),
        "sha256:".to_string() + &"A".repeat(64),
        "md5:d41d8cd98f00b204e9800998ecf8427e".into(),
        String::new(),
    ]
    .iter()
    .cycle()
    .take(20)
    {
        let at = start_upload(&daemon, "acme/x").await;
        let response = daemon
            .v2(Method::PUT, &format!("{at}?digest={bad}"))
            .body(b"bytes".to_vec())
            .send()
            .await
            .unwrap();
        let (status, code) = error_code(response).await;
        assert_eq!((status, code.as_str()), (400, "DIGEST_INVALID"), "{bad}");
        assert_eq!(
            status_of(&daemon, Method::GET, &at).await,
            404,
            "{bad}: the session stayed"
        );
    }
    assert_eq!(push_blob(&daemon, "acme/x", b"still pushing").await, 201);
    // An unsupported algorithm is named as such.
    let at = start_upload(&daemon, "acme/x").await;
    let response = daemon
        .v2(
            Method::PUT,
            &format!("{at}?digest=sha512:{}", "a".repeat(128)),
        )
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("unsupported digest algorithm \"sha512\""),
        "{message}"
    );
    assert!(!message.contains("did not match"), "{message}");

    // Past the per-token limit: 429 with Retry-After.
    let mut sessions = Vec::new();
    let refused = loop {
        let response = daemon
            .v2(Method::POST, "acme/x/blobs/uploads/")
            .send()
            .await
            .unwrap();
        if response.status() != 202 {
            break response;
        }
        sessions.push(response);
        assert!(sessions.len() <= 16);
    };
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));

    // The method is checked before the digest: 405 for a POST to a blob,
    // whatever its algorithm; a sha512 blob is unknown (404), not invalid.
    let sha512 = format!("acme/x/blobs/sha512:{}", "a".repeat(128));
    assert_eq!(status_of(&daemon, Method::POST, &sha512).await, 405);
    assert_eq!(status_of(&daemon, Method::GET, &sha512).await, 404);
    assert_eq!(status_of(&daemon, Method::DELETE, &sha512).await, 404);
    // An invalid tag names no manifest.
    for method in [Method::GET, Method::HEAD] {
        let response = daemon
            .v2(method.clone(), "acme/x/manifests/.INVALID_MANIFEST_NAME")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method}");
    }
}

impl Running {
    async fn v2_bytes_of(&self, path: &str) -> Vec<u8> {
        let response = self.v2(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.bytes().await.unwrap().to_vec()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_page_with_links_and_blobs_answer_ranges() {
    let daemon = start().await;
    let config = b"{}".to_vec();
    for tag in ["a", "b", "c", "d", "e"] {
        let (status, _) = push_manifest(&daemon, "acme/paged", tag, &[&config], None).await;
        assert_eq!(status, 201);
    }
    let page = daemon
        .v2(Method::GET, "acme/paged/tags/list?n=2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.headers()["link"],
        "</v2/acme/paged/tags/list?n=2&last=b>; rel=\"next\""
    );
    let body: Value = page.json().await.unwrap();
    assert_eq!(body["tags"], json!(["a", "b"]));
    let rest: Value = daemon.v2_json("acme/paged/tags/list?n=2&last=b").await;
    assert_eq!(rest["tags"], json!(["c", "d"]));
    let end = daemon
        .v2(Method::GET, "acme/paged/tags/list?n=2&last=d")
        .send()
        .await
        .unwrap();
    assert!(end.headers().get("link").is_none());
    assert_eq!(end.json::<Value>().await.unwrap()["tags"], json!(["e"]));
    let none = daemon
        .v2(Method::GET, "acme/paged/tags/list?n=0")
        .send()
        .await
        .unwrap();
    assert!(none.headers().get("link").is_none());
    assert_eq!(none.json::<Value>().await.unwrap()["tags"], json!([]));
    let after: Value = daemon.v2_json("acme/paged/tags/list?last=c").await;
    assert_eq!(after["tags"], json!(["d", "e"]));

    // Ranges of a 2048-byte blob.
    let blob: Vec<u8> = (0..2048u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(push_blob(&daemon, "acme/paged", &blob).await, 201);
    let path = format!("acme/paged/blobs/{}", digest(&blob));
    for (range, expected) in [
        ("bytes=500-1499", Some((500, 1499))),
        ("bytes=500-", Some((500, 2047))),
        ("bytes=-500", Some((1548, 2047))),
        ("bytes=2000-5000", Some((2000, 2047))),
        ("bytes=500-0", None),
        ("bytes=5000-10000", None),
    ] {
        let response = daemon
            .v2(Method::GET, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        match expected {
            Some((first, last)) => {
                assert_eq!(response.status(), 206, "{range}");
                assert_eq!(
                    response.headers()["content-range"],
                    format!("bytes {first}-{last}/2048").as_str()
                );
                let bytes = response.bytes().await.unwrap();
                assert_eq!(&bytes[..], &blob[first..=last], "{range}");
            }
            None => {
                assert_eq!(response.status(), 416, "{range}");
                assert_eq!(response.headers()["content-range"], "bytes */2048");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_follows_the_spec_and_spares_what_is_deployed() {
    let daemon = start().await;
    let (config, layer) = (b"{\"c\":1}".to_vec(), b"layer one".to_vec());
    let (status, subject) =
        push_manifest(&daemon, "acme/del", "latest", &[&config, &layer], None).await;
    assert_eq!(status, 201);
    let (status, _) = push_manifest(&daemon, "acme/del", "v1.0.0", &[&config, &layer], None).await;
    assert_eq!(status, 201);
    // A referrer of it (a signature would be one).
    let note = b"a note".to_vec();
    let (status, referrer) =
        push_manifest(&daemon, "acme/del", "note", &[&note], Some(&subject)).await;
    assert_eq!(status, 201);
    let referrers: Value = daemon
        .v2_json(&format!("acme/del/referrers/{subject}"))
        .await;
    assert_eq!(referrers["manifests"].as_array().unwrap().len(), 1);

    // By tag: only the tag.
    assert_eq!(
        status_of(&daemon, Method::DELETE, "acme/del/manifests/latest").await,
        202
    );
    assert_eq!(
        status_of(&daemon, Method::GET, "acme/del/manifests/latest").await,
        404
    );
    assert_eq!(
        status_of(
            &daemon,
            Method::GET,
            &format!("acme/del/manifests/{subject}")
        )
        .await,
        200
    );
    // By digest: the manifest, its tags and its referrers.
    assert_eq!(
        status_of(
            &daemon,
            Method::DELETE,
            &format!("acme/del/manifests/{subject}")
        )
        .await,
        202
    );
    for gone in [
        format!("acme/del/manifests/{subject}"),
        "acme/del/manifests/v1.0.0".into(),
        format!("acme/del/manifests/{referrer}"),
    ] {
        assert_eq!(status_of(&daemon, Method::GET, &gone).await, 404, "{gone}");
    }
    let tags: Value = daemon.v2_json("acme/del/tags/list").await;
    // The referrer's own tag went with it.
    assert_eq!(tags["tags"], json!([]));
    let referrers: Value = daemon
        .v2_json(&format!("acme/del/referrers/{subject}"))
        .await;
    assert_eq!(referrers["manifests"], json!([]));
    // A deleted version stays retired: other bytes cannot take its name.
    let other = b"other layer".to_vec();
    let (status, _) = push_manifest(&daemon, "acme/del", "v1.0.0", &[&config, &other], None).await;
    assert_eq!(status, 403);
    // Blob DELETE: 202, then unknown here.
    let blob_path = format!("acme/del/blobs/{}", digest(&layer));
    assert_eq!(status_of(&daemon, Method::DELETE, &blob_path).await, 202);
    assert_eq!(status_of(&daemon, Method::GET, &blob_path).await, 404);
    assert_eq!(status_of(&daemon, Method::DELETE, &blob_path).await, 404);

    // What a deployed agent runs cannot be deleted, by digest, version or blob.
    trust(&daemon, "acme", &[], true);
    let hello = std::fs::read(clawcage_tests::HELLO).unwrap();
    let (status, _, message) = push_component(&daemon, "1.0.0", &hello).await;
    assert_eq!(status, 201, "{message}");
    let (status, body) = deploy_reference(&daemon, "hello", "acme/pushed@1.0.0").await;
    assert_eq!(status, 200, "{body}");
    let pinned = body["deployed"]["origin"]["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest_digest = pinned.split('@').nth(1).unwrap();
    for path in [
        format!("acme/pushed/manifests/{manifest_digest}"),
        "acme/pushed/manifests/1.0.0".into(),
        format!("acme/pushed/blobs/{}", digest(&hello)),
    ] {
        let response = daemon.v2(Method::DELETE, &path).send().await.unwrap();
        assert_eq!(error_code(response).await, (403, "DENIED".into()), "{path}");
    }
    // Nor what refers to it (its signatures are checked again at every
    // restart and trust change).
    let (status, note_digest) = push_manifest(
        &daemon,
        "acme/pushed",
        "note",
        &[b"a note on the deployed one"],
        Some(manifest_digest),
    )
    .await;
    assert_eq!(status, 201);
    let response = daemon
        .v2(
            Method::DELETE,
            &format!("acme/pushed/manifests/{note_digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (403, "DENIED".into()));
    // The deletions are on the record.
    let (_, audit) = daemon.call(Method::GET, "/v1/audit?limit=1000", None).await;
    let deletions: Vec<&Value> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event"]["kind"] == "registry_delete")
        .collect();
    assert_eq!(deletions.len(), 3, "{deletions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_never_takes_a_blob_from_a_racing_push_or_a_deployed_agent() {
    // A compile cache of its own: this test removes artifacts from it.
    let daemon = start_with(|options| {
        options.engine.cache_dir = Some(options.state_dir.join("own-cache"));
    })
    .await;
    // An orphan: uploaded, never named by a manifest; and a component that
    // is deployed and then deleted from the registry's view.
    let orphan = b"nobody names me".to_vec();
    assert_eq!(push_blob(&daemon, "acme/gc", &orphan).await, 201);
    trust(&daemon, "acme", &[], true);
    let hello = std::fs::read(clawcage_tests::HELLO).unwrap();
    let (status, _, message) = push_component(&daemon, "1.0.0", &hello).await;
    assert_eq!(status, 201, "{message}");
    let (status, body) = deploy_reference(&daemon, "hello", "acme/pushed@1.0.0").await;
    assert_eq!(status, 200, "{body}");
    let cache = daemon.daemon.options().engine.cache_dir.clone().unwrap();
    let compiled = |sha: &str| {
        walk(&cache)
            .iter()
            .any(|p| p.to_string_lossy().contains(sha))
    };
    let hello_sha = digest(&hello).trim_start_matches("sha256:").to_string();
    assert!(compiled(&hello_sha), "the pushed component was compiled");

    // With a grace period nothing young is taken.
    let (status, kept) = daemon.call(Method::POST, "/v1/registry/gc", None).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["blobs_removed"], 0);
    assert!(kept["kept_young"].as_u64().unwrap() >= 1);
    // Without one, the orphan goes; the deployed component stays.
    let (_, collected) = daemon
        .call(Method::POST, "/v1/registry/gc?grace_secs=0", None)
        .await;
    assert_eq!(collected["blobs_removed"], 1, "{collected}");
    assert_eq!(
        status_of(
            &daemon,
            Method::GET,
            &format!("acme/gc/blobs/{}", digest(&orphan))
        )
        .await,
        404
    );
    assert_eq!(
        daemon
            .v2_bytes_of(&format!("acme/pushed/blobs/{}", digest(&hello)))
            .await,
        hello
    );
    assert!(compiled(&hello_sha));

    // A component pushed, compiled, then deleted: its layer and its
    // compiled artifact go; the config its sibling still names stays.
    let noop = std::fs::read(clawcage_tests::NOOP).unwrap();
    let (status, _, message) = push_component(&daemon, "2.0.0", &noop).await;
    assert_eq!(status, 201, "{message}");
    let noop_sha = digest(&noop).trim_start_matches("sha256:").to_string();
    assert!(compiled(&noop_sha));
    let head = daemon
        .v2(Method::HEAD, "acme/pushed/manifests/2.0.0")
        .send()
        .await
        .unwrap();
    let noop_manifest = head.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        status_of(
            &daemon,
            Method::DELETE,
            &format!("acme/pushed/manifests/{noop_manifest}")
        )
        .await,
        202
    );
    let manifest: Value = daemon.v2_json("acme/pushed/manifests/1.0.0").await;
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let (_, collected) = daemon
        .call(Method::POST, "/v1/registry/gc?grace_secs=0", None)
        .await;
    assert_eq!(collected["blobs_removed"], 1, "{collected}");
    assert_eq!(collected["artifacts_removed"], 1, "{collected}");
    assert!(!compiled(&noop_sha));
    assert!(compiled(&hello_sha));
    assert_eq!(
        status_of(&daemon, Method::GET, &format!("acme/pushed/blobs/{config}")).await,
        200
    );

    // Pushes racing collections with no grace: every manifest stored names
    // blobs that are there; a push either completes or is refused.
    let collector = {
        let url = daemon.url.clone();
        let token = daemon.token.trim().to_string();
        tokio::spawn(async move {
            let http = clawcage::providers::http::client().unwrap();
            let mut runs = 0;
            for _ in 0..40 {
                let response = http
                    .post(format!("{url}/v1/registry/gc?grace_secs=0"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                runs += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            runs
        })
    };
    let mut stored = Vec::new();
    let mut refused = 0;
    for i in 0..40u32 {
        let config = format!("{{\"n\":{i}}}").into_bytes();
        let layer = format!("layer {i}").into_bytes();
        let (status, manifest) = push_manifest(
            &daemon,
            "acme/race",
            &format!("t{i}"),
            &[&config, &layer],
            None,
        )
        .await;
        match status {
            201 => stored.push((manifest, config, layer)),
            400 => refused += 1,
            other => panic!("push {i}: {other}"),
        }
    }
    assert_eq!(collector.await.unwrap(), 40);
    assert!(!stored.is_empty());
    for (manifest, config, layer) in &stored {
        assert_eq!(
            status_of(
                &daemon,
                Method::GET,
                &format!("acme/race/manifests/{manifest}")
            )
            .await,
            200
        );
        for blob in [config, layer] {
            assert_eq!(
                daemon
                    .v2_bytes_of(&format!("acme/race/blobs/{}", digest(blob)))
                    .await,
                *blob
            );
        }
    }
    eprintln!("racing pushes: {} stored, {refused} refused", stored.len());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_keep_to_their_quota_and_uploads_are_on_the_record() {
    let daemon = start_with(|options| options.registry_quota_bytes = Some(10_000)).await;
    let six = vec![6u8; 6_000];
    assert_eq!(push_blob(&daemon, "acme/q", &six).await, 201);
    // The same bytes in another repository of the namespace, mounted:
    // counted once.
    let mounted = daemon
        .v2(
            Method::POST,
            &format!(
                "acme/other/blobs/uploads/?mount={}&from=acme/q",
                digest(&six)
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(mounted.status(), 201, "{:?}", mounted.headers());
    assert_eq!(
        mounted.headers()["location"],
        format!("/v2/acme/other/blobs/{}", digest(&six)).as_str()
    );
    let five = vec![5u8; 5_000];
    let response = post_blob(&daemon, "acme/q", &five).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("quota")
    );
    // Another namespace has its own.
    let other = post_blob(&daemon, "other/q", &five).await;
    assert_eq!(other.status(), 201, "{}", other.text().await.unwrap());
    let (status, usage) = daemon.call(Method::GET, "/v1/registry/usage", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        usage["namespaces"],
        json!([
            {"namespace": "acme", "bytes": 6000, "quota_bytes": 10000},
            {"namespace": "other", "bytes": 5000, "quota_bytes": 10000},
        ])
    );
    // Deleting and collecting frees the namespace.
    for repository in ["acme/q", "acme/other"] {
        assert_eq!(
            status_of(
                &daemon,
                Method::DELETE,
                &format!("{repository}/blobs/{}", digest(&six))
            )
            .await,
            202
        );
    }
    let again = post_blob(&daemon, "acme/q", &five).await;
    assert_eq!(again.status(), 201, "{}", again.text().await.unwrap());

    // Manifests count: padding a manifest past the quota is refused.
    let padded = serde_json::json!({"schemaVersion": 2, "pad": "x".repeat(9_000)}).to_string();
    let response = daemon
        .v2(Method::PUT, "acme/q/manifests/padded")
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(padded)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (403, "DENIED".into()));
    // A blob its repository let go of is collected even when a manifest
    // still names it: it never stays on disk uncounted.
    let (status, _) = push_manifest(&daemon, "other/q", "named", &[&five], None).await;
    assert_eq!(status, 201);
    assert_eq!(
        status_of(
            &daemon,
            Method::DELETE,
            &format!("other/q/blobs/{}", digest(&five))
        )
        .await,
        202
    );
    let (_, collected) = daemon
        .call(Method::POST, "/v1/registry/gc?grace_secs=0", None)
        .await;
    assert!(
        collected["blobs_removed"].as_u64().unwrap() >= 1,
        "{collected}"
    );

    // Every stored blob is an audit record: repository, digest, size, token.
    let (_, audit) = daemon.call(Method::GET, "/v1/audit?limit=1000", None).await;
    let uploads: Vec<&Value> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["event"])
        .filter(|e| e["kind"] == "blob_upload")
        .collect();
    assert_eq!(uploads.len(), 4, "{uploads:?}");
    assert_eq!(uploads[0]["repository"], "acme/q");
    assert_eq!(uploads[0]["digest"], digest(&six));
    assert_eq!(uploads[0]["size"], 6000);
    assert!(uploads[0]["actor"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suites_discovery_and_push_edges() {
    let daemon = start().await;
    let config = b"{\"edge\":true}".to_vec();
    assert_eq!(push_blob(&daemon, "acme/edge", &config).await, 201);
    // A manifest with no mediaType field and no layers, as the suite's
    // "emptylayer": stored, typed by its Content-Type.
    let empty = json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [],
    });
    let response = daemon
        .v2(Method::PUT, "acme/edge/manifests/emptylayer")
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(empty.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.headers().contains_key("location"));
    // A referrer whose subject is not pushed (yet): accepted, and says so.
    let missing = digest(b"not pushed");
    let (status, referrer) =
        push_manifest(&daemon, "acme/edge", "early", &[&config], Some(&missing)).await;
    assert_eq!(status, 201);
    let listed = daemon
        .v2(Method::GET, &format!("acme/edge/referrers/{missing}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index: Value = listed.json().await.unwrap();
    assert_eq!(index["manifests"][0]["digest"], referrer);
    // Referrers of a digest nothing refers to: an empty index.
    let none = daemon
        .v2(
            Method::GET,
            &format!("acme/edge/referrers/{}", digest(b"hello world")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 200);
    assert_eq!(
        none.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(none.json::<Value>().await.unwrap()["manifests"], json!([]));
    // A mount with no `from`, or of a blob the source does not hold: a
    // plain upload.
    for query in [
        format!("mount={}", digest(&config)),
        format!("mount={}&from=acme/nothing", digest(&config)),
    ] {
        let response = daemon
            .v2(
                Method::POST,
                &format!("acme/mounted/blobs/uploads/?{query}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{query}");
        assert!(
            response.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("/v2/acme/mounted/blobs/uploads/")
        );
    }
    // A publisher cannot mount from a namespace it may not publish to.
    let publisher = daemon
        .daemon
        .tokens
        .create_scoped(
            "other-only",
            &clawcage::daemon::auth::Scope::Publish(vec!["other".into()]),
        )
        .unwrap();
    let response = daemon
        .http
        .post(format!(
            "{}/v2/other/stolen/blobs/uploads/?mount={}&from=acme/edge",
            daemon.url,
            digest(&config)
        ))
        .bearer_auth(publisher.expose_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let stolen = daemon
        .http
        .get(format!(
            "{}/v2/other/stolen/blobs/{}",
            daemon.url,
            digest(&config)
        ))
        .bearer_auth(publisher.expose_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_holds_up_no_collection_and_no_other_push() {
    let daemon = start().await;
    let host = daemon.url.trim_start_matches("http://").to_string();
    let blob = vec![1u8; 1 << 20];
    // A publisher that sends a monolithic upload's headers and a trickle.
    let mut slow = tokio::net::TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "POST /v2/acme/slow/blobs/uploads/?digest={} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {}\r\nContent-Length: {}\r\n\r\n",
        digest(&blob),
        basic(&daemon.token),
        blob.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&blob[..1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A collection, then another publisher's push, go through meanwhile.
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(10),
        daemon.call(Method::POST, "/v1/registry/gc?grace_secs=0", None),
    )
    .await
    .expect("the collection waited for a slow upload");
    assert_eq!(status, 200);
    let config = b"{}".to_vec();
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(10),
        push_manifest(&daemon, "acme/fast", "1", &[&config], None),
    )
    .await
    .expect("a push waited for a slow upload");
    assert_eq!(status, 201);
    // The slow one finishes in the end, and is stored.
    slow.write_all(&blob[1000..]).await.unwrap();
    let (status, _, _) = read_response(&mut slow).await.unwrap();
    assert_eq!(status, 201);
    // A range whose end overflows is refused, not a crash.
    let at = start_upload(&daemon, "acme/slow").await;
    let response = daemon
        .v2(Method::PATCH, &at)
        .header("content-range", "0-18446744073709551615")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 416);
}
