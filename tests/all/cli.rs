//! `clawcage run`, in process: results on stdout, logs on stderr, and one
//! exit code per kind of failure.

use std::path::{Path, PathBuf};

use clap::Parser;
use clawcage::cli::{Cli, Command, exit};
use clawcage_tests::{COMMAND_APP, HELLO, HOSTILE, cache_dir};

struct Output {
    code: u8,
    stdout: String,
    stderr: String,
}

async fn run(args: &[&str]) -> Output {
    let cache = cache_dir();
    let mut argv = vec!["clawcage", "run", "--cache-dir", cache.to_str().unwrap()];
    argv.extend_from_slice(args);
    let Command::Run(command) = Cli::try_parse_from(argv).expect("valid arguments").command else {
        unreachable!("the arguments name the run command");
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = command.run_with(&mut stdout, &mut stderr).await;
    Output {
        code,
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn manifest(dir: &Path, file: &str, component: &str, extra: &str) -> PathBuf {
    write(
        dir,
        file,
        &format!("name = \"fixture\"\n[component]\npath = {component:?}\n{extra}"),
    )
}

#[tokio::test]
async fn a_manifest_or_a_component_is_told_by_its_content_not_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let event = write(
        dir.path(),
        "event.json",
        r#"{"source":"cli","kind":"greet","payload":{"name":"Ada"}}"#,
    );
    // A manifest without `.toml`, and a component without `.wasm`.
    let agent = manifest(dir.path(), "agent.conf", HELLO, "");
    let component = dir.path().join("hello.bin");
    std::fs::copy(HELLO, &component).unwrap();
    for path in [&agent, &component] {
        let out = run(&[path.to_str().unwrap(), "--event", event.to_str().unwrap()]).await;
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, "Hello, Ada!\n"),
            "{}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn a_payload_and_kind_make_the_event_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let agent = manifest(dir.path(), "agent.toml", HELLO, "");
    let out = run(&[
        agent.to_str().unwrap(),
        "--payload",
        r#"{"name":"Lin"}"#,
        "--kind",
        "greet",
    ])
    .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "Hello, Lin!\n"),
        "{}",
        out.stderr
    );
    let bad = run(&[agent.to_str().unwrap(), "--payload", "{nope"]).await;
    assert_eq!(bad.code, exit::BAD_EVENT, "{}", bad.stderr);
}

#[tokio::test]
async fn runs_a_manifest_and_prints_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let agent = manifest(dir.path(), "agent.toml", HELLO, "");
    let event = write(
        dir.path(),
        "event.json",
        r#"{"source":"cli","kind":"greet","payload":{"name":"Grace"}}"#,
    );
    let out = run(&[agent.to_str().unwrap(), "--event", event.to_str().unwrap()]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "Hello, Grace!\n"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr,
        "[fixture INFO] greeting Grace for a greet event from cli\n"
    );
}

#[tokio::test]
async fn runs_a_bare_component_with_a_default_event() {
    let out = run(&[HELLO]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "Hello, world!\n"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn json_report_carries_outcome_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let event = write(
        dir.path(),
        "event.json",
        r#"{"source":"cli","kind":"fail"}"#,
    );
    let out = run(&[HOSTILE, "--event", event.to_str().unwrap(), "--json"]).await;
    assert_eq!(out.code, exit::AGENT_ERROR);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        report["error"],
        serde_json::json!({"kind": "agent", "message": "the agent says no"})
    );
    assert_eq!(report["ok"], serde_json::Value::Null);
}

#[tokio::test]
async fn each_failure_has_its_own_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let core_module = d.join("core.wasm");
    std::fs::write(&core_module, wat::parse_str("(module)").unwrap()).unwrap();
    let event = |name: &str, text: &str| write(d, name, text).to_str().unwrap().to_string();
    let kind = |kind: &str| {
        event(
            &format!("{kind}.json"),
            &format!(r#"{{"source":"cli","kind":"{kind}"}}"#),
        )
    };

    let cases: Vec<(Vec<String>, u8, &str)> = vec![
        (
            vec![d.join("missing.toml").display().to_string()],
            exit::MISSING_FILE,
            "cannot read",
        ),
        (
            vec![
                write(d, "bad.toml", "name = \"x\"\nsurprise = 1\n")
                    .display()
                    .to_string(),
            ],
            exit::BAD_MANIFEST,
            "unknown field `surprise`",
        ),
        (
            vec![core_module.display().to_string()],
            exit::NOT_A_COMPONENT,
            "core wasm module",
        ),
        (
            vec![COMMAND_APP.to_string()],
            exit::WRONG_WORLD,
            "clawcage:agent/handler",
        ),
        (
            vec![
                HELLO.to_string(),
                "--event".into(),
                event("bad.json", "{not json"),
            ],
            exit::BAD_EVENT,
            "not valid JSON",
        ),
        (
            vec![
                HELLO.to_string(),
                "--event".into(),
                event("empty-kind.json", r#"{"source":"cli","kind":""}"#),
            ],
            exit::BAD_EVENT,
            "kind must be",
        ),
        (
            vec![HOSTILE.to_string(), "--event".into(), kind("fail")],
            exit::AGENT_ERROR,
            "agent error: the agent says no",
        ),
        (
            vec![HOSTILE.to_string(), "--event".into(), kind("panic")],
            exit::CRASHED,
            "agent crashed: panicked at",
        ),
        (
            vec![
                manifest(d, "deadline.toml", HOSTILE, "[limits]\ndeadline_ms = 100\n")
                    .display()
                    .to_string(),
                "--event".into(),
                kind("loop"),
            ],
            exit::LIMIT,
            "deadline limit exceeded (100 ms)",
        ),
        (
            vec![
                manifest(
                    d,
                    "memory.toml",
                    HOSTILE,
                    "[limits]\nmemory_bytes = 8388608\n",
                )
                .display()
                .to_string(),
                "--event".into(),
                kind("memory-bomb"),
            ],
            exit::LIMIT,
            "memory limit exceeded (8388608 bytes)",
        ),
    ];
    for (args, code, message) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args).await;
        assert_eq!(out.code, code, "{args:?}: stderr {}", out.stderr);
        assert!(
            out.stderr.contains(message),
            "{args:?}: expected {message:?} in stderr {:?}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
    }
}
