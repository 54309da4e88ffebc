//! Third-party OCI clients against the daemon's registry: `skopeo` (from
//! Debian) copies a component to an OCI layout directory and back, and
//! `oras` (oras-py, from PyPI) pushes and pulls one, and `wkg` (built from
//! its crate) pushes and pulls one over plain HTTP; all byte for byte.
//!
//! `.ci/run` installs both and sets `CLAWCAGE_REQUIRE_CLIENTS=1`, which
//! turns a missing client into a failure; elsewhere a missing client skips
//! its test with a message, so `cargo test` works on a bare machine.

use std::process::Command;

use clawcage::registry::client::RegistryClient;

use crate::daemon::{Running, start};

/// Whether `program --version` runs; panics when clients are required.
fn available(program: &str, args: &[&str]) -> bool {
    let found = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CLAWCAGE_REQUIRE_CLIENTS").is_none(),
            "{program} is required (CLAWCAGE_REQUIRE_CLIENTS is set) but does not run"
        );
        eprintln!("skipping: {program} is not installed (see .ci/run)");
    }
    found
}

/// Runs a command off the async workers; panics with its output on failure.
async fn run(mut command: Command) -> String {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    text
}

fn host(daemon: &Running) -> String {
    daemon.url.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_a_component_out_and_back_byte_for_byte() {
    if !available("skopeo", &["--version"]) {
        return;
    }
    let daemon = start().await;
    let client = RegistryClient::new(&daemon.url, daemon.token.trim()).unwrap();
    let hello = std::fs::read(clawcage_tests::HELLO).unwrap();
    let pushed = client
        .push_component("acme/hello", "1.0.0", &hello, None)
        .await
        .unwrap();
    let creds = format!("publisher:{}", daemon.token.trim());
    let layout = tempfile::tempdir().unwrap();
    let layout_ref = format!("oci:{}:hello", layout.path().display());

    let mut out = Command::new("skopeo");
    out.args(["copy", "--src-tls-verify=false", "--src-creds", &creds])
        .arg(format!("docker://{}/acme/hello:1.0.0", host(&daemon)))
        .arg(&layout_ref);
    run(out).await;
    let index = std::fs::read_to_string(layout.path().join("index.json")).unwrap();
    assert!(index.contains(&pushed.digest.to_string()), "{index}");

    let mut back = Command::new("skopeo");
    back.args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
    ])
    .arg(&layout_ref)
    .arg(format!("docker://{}/acme/copied:1.0.0", host(&daemon)));
    run(back).await;
    let copied = client.pull_component("acme/copied@1.0.0").await.unwrap();
    assert_eq!(copied.digest, pushed.digest);
    assert_eq!(copied.component, hello);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_pushes_and_pulls_a_component_byte_for_byte() {
    if !available("python3", &["-c", "import oras.client"]) {
        return;
    }
    let daemon = start().await;
    let work = tempfile::tempdir().unwrap();
    let component = work.path().join("agent.wasm");
    let hello = std::fs::read(clawcage_tests::HELLO).unwrap();
    std::fs::write(&component, &hello).unwrap();
    let config = work.path().join("config.json");
    std::fs::write(&config, br#"{"architecture":"wasm","os":"wasip2"}"#).unwrap();
    let pulled_dir = work.path().join("pulled");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/oras_round_trip.py");
    let mut oras = Command::new("python3");
    oras.arg(script)
        .arg(host(&daemon))
        .arg("acme/oras:1.0.0")
        .arg(&component)
        .arg(&config)
        .arg(&pulled_dir)
        .env("CLAWCAGE_TOKEN", daemon.token.trim());
    run(oras).await;
    assert_eq!(std::fs::read(pulled_dir.join("agent.wasm")).unwrap(), hello);
    // What oras pushed was checked and is a component our client reads.
    let client = RegistryClient::new(&daemon.url, daemon.token.trim()).unwrap();
    assert_eq!(
        client
            .pull_component("acme/oras@1.0.0")
            .await
            .unwrap()
            .component,
        hello
    );

    // oras cannot push what is not a ClawCage component.
    let core_module = work.path().join("module.wasm");
    std::fs::write(&core_module, wat::parse_str("(module)").unwrap()).unwrap();
    let mut refused = Command::new("python3");
    refused
        .arg(script)
        .arg(host(&daemon))
        .arg("acme/oras:2.0.0")
        .arg(&core_module)
        .arg(&config)
        .arg(work.path().join("never"))
        .env("CLAWCAGE_TOKEN", daemon.token.trim());
    let output = tokio::task::spawn_blocking(move || refused.output().unwrap())
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(
        daemon.audit_text().contains("core wasm module"),
        "the refusal is audited with its reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wkg_pushes_and_pulls_a_component_over_plain_http() {
    if !available("wkg", &["--version"]) {
        return;
    }
    let daemon = start().await;
    let hello = std::fs::read(clawcage_tests::HELLO).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("hello.wasm");
    std::fs::write(&component, &hello).unwrap();
    let reference = format!("{}/acme/wkg:1.0.0", host(&daemon));
    // wkg keeps a cache and a config under $HOME: give it its own.
    let wkg = |args: &[&str]| {
        let mut command = Command::new("wkg");
        command
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .args(args)
            .args(["--insecure", &host(&daemon)])
            .args(["-u", "publisher", "-p", daemon.token.trim()]);
        command
    };
    run(wkg(&[
        "oci",
        "push",
        &reference,
        component.to_str().unwrap(),
    ]))
    .await;
    // What wkg pushed was checked and is a component our client reads.
    let client = RegistryClient::new(&daemon.url, daemon.token.trim()).unwrap();
    let pulled = client.pull_component("acme/wkg@1.0.0").await.unwrap();
    assert_eq!(pulled.component, hello);
    let out = dir.path().join("pulled.wasm");
    run(wkg(&[
        "oci",
        "pull",
        &reference,
        "-o",
        out.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(std::fs::read(&out).unwrap(), hello);
}
