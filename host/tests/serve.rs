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

/// Starts `clawcage serve` on a free loopback port; answers the process,
/// its stderr (read by a thread all along, so the daemon never
/// blocks on a full pipe; joined once it exits) and its URL.
fn serve(
    state: &Path,
    args: &[&std::ffi::OsStr],
) -> (
    std::process::Child,
    std::thread::JoinHandle<Vec<String>>,
    String,
) {
    let mut daemon = Command::new(CLAWCAGE)
        .env("CLAWCAGE_LOG", "debug,clawcage::guest=off")
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(daemon.stderr.take().unwrap());
    let mut early = Vec::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(address) = line.trim().strip_prefix("clawcage daemon listening on ") {
            let url = address.to_string();
            let rest = std::thread::spawn(move || {
                early.extend(stderr.lines().map_while(Result::ok));
                early
            });
            return (daemon, rest, url);
        }
        early.push(std::mem::take(&mut line));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    panic!("the daemon did not start: {early:?}");
}

/// Runs a `clawcage` command; panics with its output unless it succeeds.
fn clawcage(args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(CLAWCAGE).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{args:?}: {text}");
    text
}

/// `clawcage agent list` against the daemon at `url`.
fn agents(state: &Path, url: &str) -> String {
    clawcage(&[
        "agent".as_ref(),
        "--remote".as_ref(),
        url.as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "list".as_ref(),
    ])
}

fn stop(mut daemon: std::process::Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(daemon.wait().unwrap().success());
}

#[test]
fn a_publisher_key_no_longer_trusted_stops_its_agents_at_once_and_at_start() {
    let wasm = guests::build_guests(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = ["--state-dir".as_ref(), state.as_os_str()];
    clawcage(&[&["init".as_ref()][..], &state_arg].concat());
    let key = dir.path().join("acme");
    clawcage(&["keygen".as_ref(), "--out".as_ref(), key.as_os_str()]);
    let public = key.with_extension("pub");
    let trust = |action: &str| {
        clawcage(
            &[
                &[
                    "trust".as_ref(),
                    action.as_ref(),
                    "acme".as_ref(),
                    public.as_os_str(),
                ][..],
                &state_arg,
            ]
            .concat(),
        )
    };
    trust("add");
    let manifest = dir.path().join("greeter.toml");
    std::fs::write(
        &manifest,
        "name = \"greeter\"\n[component]\nregistry = \"acme/hello@1.0.0\"\n",
    )
    .unwrap();

    let (daemon, _, url) = serve(&state, &[]);
    let remote = [
        "--remote".as_ref(),
        url.as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ];
    let hello = wasm.join("hello.wasm");
    let private = key.with_extension("key");
    clawcage(
        &[
            &[
                "push".as_ref(),
                hello.as_os_str(),
                "--name".as_ref(),
                "acme/hello".as_ref(),
                "--version".as_ref(),
                "1.0.0".as_ref(),
                "--sign".as_ref(),
                private.as_os_str(),
            ][..],
            &remote,
        ]
        .concat(),
    );
    clawcage(
        &[
            &["agent".as_ref()][..],
            &remote,
            &["deploy".as_ref(), manifest.as_os_str()],
        ]
        .concat(),
    );
    assert!(agents(&state, &url).contains("greeter"));

    // The operator stops trusting the key while the daemon runs: the agent
    // it signed is unloaded within seconds; trusted again, it is back.
    let until = |wanted: bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while agents(&state, &url).contains("greeter") != wanted {
            assert!(Instant::now() < deadline, "greeter loaded: {}", !wanted);
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    trust("remove");
    until(false);
    trust("add");
    until(true);
    stop(daemon);

    // Removed while the daemon is down, the agent does not come back at
    // the next start.
    trust("remove");
    let (daemon, stderr, url) = serve(&state, &[]);
    let listed = agents(&state, &url);
    assert!(!listed.contains("greeter"), "{listed}");
    stop(daemon);
    let rest = stderr.join().unwrap().join("\n");
    assert!(
        rest.contains("cannot load deployed agent") && rest.contains("not trusted"),
        "{rest}"
    );

    // Trusted again, it is.
    trust("add");
    let (daemon, _, url) = serve(&state, &[]);
    let listed = agents(&state, &url);
    assert!(
        listed.contains("greeter") && listed.contains("acme/hello@sha256:"),
        "{listed}"
    );
    // Paused, it stays paused across a restart, until unpaused.
    let agent_command = |url: &str, action: &str| {
        clawcage(
            &[
                &["agent".as_ref(), "--remote".as_ref(), url.as_ref()][..],
                &state_arg,
                &[action.as_ref(), "greeter".as_ref()],
            ]
            .concat(),
        )
    };
    assert!(agent_command(&url, "pause").contains("greeter: paused"));
    stop(daemon);
    let (daemon, _, url) = serve(&state, &[]);
    assert!(
        agents(&state, &url).contains(" paused "),
        "{}",
        agents(&state, &url)
    );
    assert!(agent_command(&url, "unpause").contains("takes events again"));
    assert!(agents(&state, &url).contains(" running "));
    stop(daemon);
}

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

    let (mut daemon, stderr, url) = serve(
        &state,
        &[
            "--drain-seconds".as_ref(),
            "20".as_ref(),
            "--deploy".as_ref(),
            manifest.as_os_str(),
            "--deploy".as_ref(),
            hello.as_os_str(),
        ],
    );

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
    let rest = stderr.join().unwrap();
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

#[test]
fn a_busy_port_is_found_before_anything_is_deployed_and_names_are_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    clawcage(&["init".as_ref(), "--state-dir".as_ref(), state.as_os_str()]);
    // A manifest that would fail to deploy (no such component): with the
    // port busy, the daemon never gets that far.
    let manifest = dir.path().join("agent.toml");
    std::fs::write(
        &manifest,
        "name = \"never\"\n[component]\npath = \"missing.wasm\"\n",
    )
    .unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let output = Command::new(CLAWCAGE)
        .args(["serve", "--listen", &address, "--state-dir"])
        .arg(&state)
        .arg("--deploy")
        .arg(&manifest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
    assert!(!stderr.contains("missing.wasm"), "{stderr}");

    // A host name is resolved.
    let (daemon, _rest, url) = {
        let mut child = Command::new(CLAWCAGE)
            .args(["serve", "--listen", "localhost:0", "--state-dir"])
            .arg(&state)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let mut url = None;
        while stderr.read_line(&mut line).unwrap() > 0 {
            if let Some(address) = line.trim().strip_prefix("clawcage daemon listening on ") {
                url = Some(address.to_string());
                break;
            }
            line.clear();
        }
        (child, stderr, url)
    };
    assert!(
        url.is_some_and(|u| u.starts_with("http://127.0.0.1:") || u.starts_with("http://[::1]:"))
    );
    stop(daemon);
}

#[test]
fn an_unreachable_daemon_says_so_and_how_to_start_one() {
    // A port nothing listens on: bound, then closed.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = Command::new(CLAWCAGE)
        .args([
            "agent",
            "--remote",
            &format!("http://{address}"),
            "--token",
            "t",
            "list",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "no daemon answers at http://{address}: start one with `clawcage serve`"
        )),
        "{stderr}"
    );
}

#[test]
fn invoke_takes_a_payload_and_kind_or_an_event_on_stdin() {
    let wasm = guests::build_guests(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    clawcage(&["init".as_ref(), "--state-dir".as_ref(), state.as_os_str()]);
    let manifest = dir.path().join("hello.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"hello\"\n[component]\npath = {:?}\n",
            wasm.join("hello.wasm")
        ),
    )
    .unwrap();
    let (daemon, _rest, url) = serve(&state, &["--deploy".as_ref(), manifest.as_os_str()]);
    let base = |extra: &[&str]| {
        let mut command = Command::new(CLAWCAGE);
        command
            .args(["invoke", "--remote", &url, "--state-dir"])
            .arg(&state)
            .arg("hello")
            .args(extra);
        command
    };
    let output = base(&["--payload", r#"{"name":"Ada"}"#, "--kind", "greet"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Hello, Ada!\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut child = base(&["-e", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        br#"{"source":"cli","kind":"greet","payload":{"name":"Grace"}}"#,
    )
    .unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Hello, Grace!\n");

    // Both are in the list of recent invocations, newest first, and the
    // list holds no payload or result.
    let listed = clawcage(&[
        "invocations".as_ref(),
        "--remote".as_ref(),
        url.as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--agent".as_ref(),
        "hello".as_ref(),
        "--output".as_ref(),
        "json".as_ref(),
    ]);
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let rows = rows["invocations"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(
        rows.iter()
            .all(|r| r["outcome"] == "ok" && r["kind"] == "greet")
    );
    assert!(
        !listed.contains("Grace") && !listed.contains("Ada"),
        "{listed}"
    );
    let table = clawcage(&[
        "invocations".as_ref(),
        "--remote".as_ref(),
        url.as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    assert!(
        table.starts_with("STARTED") && table.lines().count() == 3,
        "{table}"
    );
    stop(daemon);
}

#[test]
fn version_and_shell_completions() {
    let version = clawcage(&["--version".as_ref()]);
    assert!(version.starts_with("clawcage "), "{version}");
    let bash = clawcage(&["completions".as_ref(), "bash".as_ref()]);
    assert!(
        bash.contains("_clawcage()") && bash.contains("invoke"),
        "{}",
        &bash[..200.min(bash.len())]
    );
    let zsh = clawcage(&["completions".as_ref(), "zsh".as_ref()]);
    assert!(
        zsh.starts_with("#compdef clawcage"),
        "{}",
        &zsh[..80.min(zsh.len())]
    );
}

/// Runs `clawcage` with `env`; answers its exit code, stdout and stderr.
fn exit_code(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(CLAWCAGE);
    command
        .args(args)
        .env_remove("CLAWCAGE_URL")
        .env_remove("CLAWCAGE_TOKEN")
        .env_remove("CLAWCAGE_STATE_DIR");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.stdin(Stdio::null()).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_admin_command_takes_the_daemon_the_same_way_and_exits_by_failure_class() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();

    // Not initialised: 11, for local and daemon commands alike.
    for args in [
        &["key", "list", "--state-dir", state_arg][..],
        &["usage", "--state-dir", state_arg],
        &["serve", "--listen", "127.0.0.1:0", "--state-dir", state_arg],
    ] {
        let (code, _, stderr) = exit_code(args, &[]);
        assert_eq!(code, 11, "{args:?}: {stderr}");
        assert!(stderr.contains("clawcage init"), "{args:?}: {stderr}");
    }
    clawcage(&["init".as_ref(), "--state-dir".as_ref(), state.as_os_str()]);
    // A key-id typo in a manifest is "not found" (12), not "bad manifest".
    let manifest = dir.path().join("typo.toml");
    std::fs::write(
        &manifest,
        "name = \"typo\"\n[component]\npath = \"x.wasm\"\n[models.default]\nprovider = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\nkey = \"anthropc\"\n",
    )
    .unwrap();
    let (code, _, stderr) = exit_code(
        &[
            "run",
            manifest.to_str().unwrap(),
            "--payload",
            "{}",
            "--state-dir",
            state_arg,
        ],
        &[],
    );
    assert_eq!(code, 12, "{stderr}");
    assert!(
        stderr.contains("\"anthropc\" is not in the vault"),
        "{stderr}"
    );
    // A value that does not parse is a usage error.
    let (code, _, stderr) = exit_code(
        &["usage", "--since", "2026-02-31", "--state-dir", state_arg],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");

    let (daemon, _rest, url) = serve(&state, &[]);
    let token = std::fs::read_to_string(state.join("admin.token")).unwrap();
    // The daemon from the environment, the token from the state directory;
    // the same flags before or after the subcommand.
    let env = [("CLAWCAGE_URL", url.as_str())];
    let with = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--state-dir", state_arg]);
        exit_code(&all, &env)
    };
    let (code, out, err) = with(&["token", "add", "ci"]);
    assert_eq!(code, 0, "{err}");
    let ci_token = out.trim().to_string();
    assert!(ci_token.starts_with("cc_"), "{out}");
    let (code, _, err) = with(&["token", "add", "watcher", "--viewer"]);
    assert_eq!(code, 0, "{err}");
    for args in [
        &["key", "list"][..],
        &["key", "--remote", &url, "list"],
        &["key", "list", "--remote", &url],
    ] {
        let (code, out, err) = with(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(out.trim(), "no keys", "{args:?}");
    }
    // The listings: a table with RFC 3339 times, or the API's JSON.
    let (code, table, err) = with(&["token", "list"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("CREATED"),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("watcher ") && l.contains("viewer")),
        "{table}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("ci ")
            && l.contains("admin")
            && l.contains("T")
            && l.contains("Z ")),
        "{table}"
    );
    let (code, json, _) = with(&["token", "list", "--output", "json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(json["tokens"].as_array().unwrap().len() >= 2, "{json}");
    let (code, _, err) = with(&["usage", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = with(&["audit", "verify"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ok: "), "{out}");
    // Registry upkeep: usage per namespace and a collection, through the
    // daemon.
    let (code, out, err) = with(&["registry", "usage"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "no namespace holds blobs");
    let (code, out, err) = with(&["registry", "gc", "--grace-secs", "0", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let collected: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(collected["blobs_removed"], 0, "{out}");
    let key = "ab".repeat(32);
    let (code, out, err) = with(&["trust", "add", "acme", &key]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acme") && out.contains(&key), "{out}");
    // Through the daemon: the change is on disk, and on the record with
    // the token's name as its actor.
    let policy = std::fs::read_to_string(state.join("trust.toml")).unwrap();
    assert!(policy.contains(&key), "{policy}");
    let (_, exported, _) = with(&["audit", "export"]);
    assert!(
        exported
            .lines()
            .any(|l| l.contains(r#""kind":"token""#) && l.contains(r#""change":"add""#)),
        "{exported}"
    );
    assert!(
        exported
            .lines()
            .any(|l| l.contains(r#""kind":"trust""#) && l.contains(r#""actor":"admin""#)),
        "{exported}"
    );

    // Failure classes against the daemon.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32);
    let cases: [Case<'_>; 6] = [
        (&["agent", "remove", "nobody"], &env, 12),
        (&["key", "revoke", "nothing"], &env, 12),
        (&["token", "add", "ci"], &env, 13),
        (&["agent", "list", "--token", "cc_wrong"], &env, 15),
        (&["trust", "remove", "other", &key], &env, 12),
        (
            &["agent", "list"],
            &[
                ("CLAWCAGE_URL", "http://127.0.0.1:9"),
                ("CLAWCAGE_TOKEN", token.trim()),
            ],
            14,
        ),
    ];
    for (args, env, expected) in cases {
        let mut all = args.to_vec();
        all.extend(["--state-dir", state_arg]);
        let (code, _, stderr) = exit_code(&all, env);
        assert_eq!(code, expected, "{args:?}: {stderr}");
    }
    // The token made through the API works, and is revoked through it.
    let (code, _, err) = exit_code(&["agent", "list", "--token", &ci_token], &env);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = with(&["token", "revoke", "ci"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = exit_code(&["agent", "list", "--token", &ci_token], &env);
    assert_eq!(code, 15);
    stop(daemon);
}
