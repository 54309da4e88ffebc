//! The real `clawcage serve` process: it deploys at start, answers on a
//! loopback port, and on SIGTERM stops taking events, drains the ones in
//! flight, and exits cleanly.

#![allow(missing_docs, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../tests/guests.rs"]
mod guests;

const CLAWCAGE: &str = env!("CARGO_BIN_EXE_clawcage");

#[test]
fn sigterm_drains_events_in_flight_and_exits_cleanly() {
    let wasm = guests::build_guests(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let init = Command::new(CLAWCAGE)
        .args(["init", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let token = std::fs::read_to_string(state.join("admin.token")).unwrap();
    let manifest = dir.path().join("agent.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"worker\"\n[component]\npath = {:?}\n[limits]\ndeadline_ms = 20000\n",
            wasm.join("noop.wasm")
        ),
    )
    .unwrap();

    let hello = dir.path().join("hello.toml");
    std::fs::write(
        &hello,
        format!(
            "name = \"hello\"\n[component]\npath = {:?}\n",
            wasm.join("hello.wasm")
        ),
    )
    .unwrap();

    let mut daemon = Command::new(CLAWCAGE)
        .env("CLAWCAGE_LOG", "debug,clawcage::guest=off")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--drain-seconds",
            "20",
            "--state-dir",
        ])
        .arg(&state)
        .arg("--deploy")
        .arg(&manifest)
        .arg("--deploy")
        .arg(&hello)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(daemon.stderr.take().unwrap());
    let mut url = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(address) = line.trim().strip_prefix("clawcage daemon listening on ") {
            url = address.to_string();
            break;
        }
        line.clear();
    }
    assert!(!url.is_empty(), "the daemon did not start");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = clawcage::providers::http::client().unwrap();
    let invoke = |rounds: u64| {
        let request = http
            .post(format!("{url}/v1/agents/worker/invoke"))
            .bearer_auth(token.trim())
            .json(&serde_json::json!({"source": "test", "kind": "cpu", "payload": rounds}));
        async move { request.send().await }
    };
    // The host logs metadata, never an event's content or an answer.
    let greeted = runtime
        .block_on(
            http.post(format!("{url}/v1/agents/hello/invoke"))
                .bearer_auth(token.trim())
                .json(&serde_json::json!({"source": "test", "kind": "greet", "payload": {"name": "Zebediah"}}))
                .send(),
        )
        .unwrap();
    assert_eq!(
        runtime
            .block_on(greeted.json::<serde_json::Value>())
            .unwrap()["result"],
        "Hello, Zebediah!"
    );
    // A long event (seconds of CPU), then SIGTERM while it runs.
    let in_flight = runtime.spawn(invoke(1_500_000_000));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(200));
    // Draining: new events are refused, the one in flight finishes.
    let refused = runtime.block_on(invoke(1));
    match refused {
        Ok(response) => assert_eq!(response.status(), 503),
        Err(error) => assert!(error.is_connect(), "{error}"),
    }
    let finished = runtime.block_on(in_flight).unwrap().unwrap();
    assert_eq!(finished.status(), 200);
    let outcome: serde_json::Value = runtime.block_on(finished.json()).unwrap();
    assert!(
        outcome["result"].as_str().unwrap().parse::<u64>().is_ok(),
        "{outcome}"
    );
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let rest: Vec<String> = stderr.lines().map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("draining")), "{rest:?}");
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("invocation") && l.contains("hello")),
        "{rest:?}"
    );
    assert!(
        !rest
            .iter()
            .any(|l| l.contains("Zebediah") || l.contains(token.trim())),
        "{rest:?}"
    );
}
