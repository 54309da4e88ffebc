//! Misusing `#[handler]` is a compile error that points at the author's
//! code, with a message that says what to write instead.

use std::path::Path;
use std::process::Command;

use clawcage_tests::REPO_ROOT;

/// (case, source of the agent, expected message, the source line the error
/// must point at)
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "async_fn",
        "#[clawcage_sdk::handler]\nasync fn handle(e: clawcage_sdk::Event) -> clawcage_sdk::Result<()> { Ok(()) }\n",
        "the handler must be a plain `fn`",
        "async fn handle",
    ),
    (
        "two_args",
        "#[clawcage_sdk::handler]\nfn handle(e: clawcage_sdk::Event, extra: u32) -> clawcage_sdk::Result<()> { Ok(()) }\n",
        "the handler takes exactly one argument",
        "fn handle(e: clawcage_sdk::Event, extra: u32)",
    ),
    (
        "no_result",
        "#[clawcage_sdk::handler]\nfn handle(e: clawcage_sdk::Event) {}\n",
        "the handler must return a `Result`",
        "fn handle(e: clawcage_sdk::Event) {}",
    ),
    (
        "returns_string",
        "#[clawcage_sdk::handler]\nfn handle(e: clawcage_sdk::Event) -> String { e.kind }\n",
        "the handler must return a `Result`, not `String`",
        "String",
    ),
    (
        "returns_a_struct",
        "struct Report;\n#[clawcage_sdk::handler]\nfn handle(e: clawcage_sdk::Event) -> clawcage_sdk::Result<Report> { Ok(Report) }\n",
        "a handler cannot return `Report`",
        "Report>",
    ),
    (
        "generic",
        "#[clawcage_sdk::handler]\nfn handle<T>(e: clawcage_sdk::Event) -> clawcage_sdk::Result<()> { Ok(()) }\n",
        "the handler cannot be generic",
        "fn handle<T>",
    ),
    (
        "arguments",
        "#[clawcage_sdk::handler(fast)]\nfn handle(e: clawcage_sdk::Event) -> clawcage_sdk::Result<()> { Ok(()) }\n",
        "#[handler] takes no arguments",
        "#[clawcage_sdk::handler(fast)]",
    ),
];

#[test]
fn handler_misuse_is_a_compile_error_at_the_users_code() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sdk = Path::new(REPO_ROOT).join("guest-sdk");
    let members: Vec<String> = CASES.iter().map(|(name, ..)| format!("{name:?}")).collect();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[workspace]\nresolver = \"3\"\nmembers = [{}]\n",
            members.join(", ")
        ),
    )
    .unwrap();
    for (name, source, ..) in CASES {
        std::fs::create_dir_all(root.join(name).join("src")).unwrap();
        std::fs::write(
            root.join(name).join("Cargo.toml"),
            format!(
                "[package]\nname = \"{}\"\nversion = \"0.0.0\"\nedition = \"2024\"\n[lib]\ncrate-type = [\"cdylib\"]\n\
                 [dependencies]\nclawcage-sdk = {{ path = {:?} }}\n",
                name.replace('_', "-"),
                sdk.display().to_string()
            ),
        )
        .unwrap();
        std::fs::write(root.join(name).join("src/lib.rs"), source).unwrap();
    }
    // The guest workspace's lock file pins the dependencies' versions.
    std::fs::copy(
        Path::new(REPO_ROOT).join("sample-agents/Cargo.lock"),
        root.join("Cargo.lock"),
    )
    .unwrap();
    // Share compiled dependencies with the guest build.
    let target_dir = Path::new(REPO_ROOT).join("target").join("guests-check");
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "check",
            "--workspace",
            "--keep-going",
            "--target=wasm32-wasip2",
            "--message-format=json",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("running cargo check");
    assert!(
        !output.status.success(),
        "every case should fail to compile"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let diagnostics: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-message" && m["message"]["level"] == "error")
        .collect();

    for (name, source, expected, at) in CASES {
        let crate_name = name.replace('_', "-");
        let found = diagnostics.iter().find(|d| {
            d["target"]["name"].as_str().map(|n| n.replace('_', "-")) == Some(crate_name.clone())
                && d["message"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(expected))
        });
        let Some(diagnostic) = found else {
            panic!(
                "{name}: no error containing {expected:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let span = &diagnostic["message"]["spans"][0];
        assert_eq!(
            span["file_name"],
            format!("{name}/src/lib.rs"),
            "{name}: the error points outside the user's code: {span}"
        );
        let line = span["line_start"].as_u64().unwrap() as usize;
        let text = source.lines().nth(line - 1).unwrap();
        assert!(
            text.contains(at),
            "{name}: the error points at line {line} ({text:?}), expected the line with {at:?}"
        );
    }
}
