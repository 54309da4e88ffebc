//! Token roles on a running daemon: a viewer token reads everything an
//! admin reads and changes nothing, on the admin API and the registry, and
//! every refusal is on the record.

use reqwest::Method;
use serde_json::{Value, json};

use crate::daemon::start;
use crate::registry::{digest, push_component};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_token_reads_everything_and_changes_nothing() {
    let daemon = start().await;
    let hello = std::fs::read(clawcage_tests::HELLO).unwrap();
    let (status, _, message) = push_component(&daemon, "1.0.0", &hello).await;
    assert_eq!(status, 201, "{message}");
    let (status, created) = daemon
        .call(
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "auditor", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["scope"], "viewer");
    let viewer = created["token"].as_str().unwrap().to_string();
    // A role and namespaces together are refused.
    let (status, _) = daemon
        .call(
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "odd", "role": "viewer", "publish": ["acme"]})),
        )
        .await;
    assert_eq!(status, 400);
    let as_viewer = |method: Method, path: &str| {
        daemon
            .http
            .request(method, format!("{}{path}", daemon.url))
            .bearer_auth(&viewer)
    };
    for path in [
        "/v1/agents",
        "/v1/keys",
        "/v1/tokens",
        "/v1/usage",
        "/v1/invocations",
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/trust",
        "/v1/registry/usage",
        "/v2/acme/pushed/tags/list",
        "/v2/acme/pushed/manifests/1.0.0",
    ] {
        let response = as_viewer(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
    }
    let blob = format!("/v2/acme/pushed/blobs/{}", digest(&hello));
    assert_eq!(
        as_viewer(Method::GET, &blob).send().await.unwrap().status(),
        200
    );
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/keys",
            json!({"id": "k", "provider": "anthropic", "secret": "sk-x"}),
        ),
        (
            Method::POST,
            "/v1/agents/hello/invoke",
            json!({"kind": "greet"}),
        ),
        (
            Method::PUT,
            "/v1/agents/hello",
            json!({"manifest": "name = \"hello\""}),
        ),
        (Method::POST, "/v1/registry/gc", json!({})),
        (Method::POST, "/v1/tokens", json!({"name": "mine"})),
        (Method::DELETE, "/v1/tokens/auditor", json!({})),
        (
            Method::POST,
            "/v1/trust",
            json!({"change": "allow-unsigned", "namespace": "acme"}),
        ),
    ] {
        let response = as_viewer(method.clone(), path)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            (status.as_u16(), answer["error"]["code"].as_str()),
            (403, Some("read-only")),
            "{method} {path}: {answer}"
        );
    }
    for (method, path) in [
        (Method::POST, "/v2/acme/pushed/blobs/uploads/".to_string()),
        (
            Method::DELETE,
            "/v2/acme/pushed/manifests/1.0.0".to_string(),
        ),
        (Method::DELETE, blob.clone()),
    ] {
        let response = as_viewer(method.clone(), &path).send().await.unwrap();
        assert_eq!(response.status(), 403, "{method} {path}");
    }
    // Nothing changed, and the refusals are on the record under its name.
    let (_, tokens) = daemon.call(Method::GET, "/v1/tokens", None).await;
    let roles: Vec<(&str, &str)> = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["role"].as_str().unwrap()))
        .collect();
    assert!(roles.contains(&("auditor", "viewer")), "{roles:?}");
    assert!(!roles.iter().any(|(name, _)| *name == "mine"));
    let (_, keys) = daemon.call(Method::GET, "/v1/keys", None).await;
    assert_eq!(keys["keys"], json!([]));
    assert_eq!(
        daemon
            .v2(Method::GET, "acme/pushed/manifests/1.0.0")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (_, audit) = daemon.call(Method::GET, "/v1/audit?limit=1000", None).await;
    let refused = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event"]["actor"] == "auditor" && r["event"]["allowed"] == false)
        .count();
    assert!(refused >= 10, "{refused} refusals on the record");
    // Never the secret it tried to add.
    assert!(!audit.to_string().contains("sk-x"));
}
