//! `clawcage new` and `clawcage build`, followed as the README says, outside
//! the checkout: each template scaffolds a project that builds, runs on the
//! mock provider with no key and no network, and passes its own test; a
//! component without a handler is caught with a hint.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

const CLAWCAGE: &str = env!("CARGO_BIN_EXE_clawcage");

/// Runs a command in `dir`; answers its stdout, panicking with its output
/// unless it succeeds.
fn run(dir: &Path, program: &str, args: &[&str], target: &Path) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        // Compiled dependencies shared between the projects and runs, and
        // the compile cache of `clawcage build` and `run` kept beside them.
        .env("CARGO_TARGET_DIR", target)
        .env("XDG_CACHE_HOME", target.join("cache"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} in {}:\n{stdout}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn new_projects_build_run_on_the_mock_and_pass_their_tests() {
    let dir = tempfile::tempdir().unwrap();
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-check");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The tool loop with the SDK copied in, as where no checkout is.
    for (template, answer, sdk) in [
        ("hello", "Hello from the mock model!", None),
        ("tool-loop", "19 plus 23 is 42.", Some("--vendor-sdk")),
    ] {
        let name = format!("my-{template}");
        let mut args = vec!["new", &name, "--template", template];
        args.extend(sdk);
        let created = run(dir.path(), CLAWCAGE, &args, &target);
        assert!(created.contains("clawcage build"), "{created}");
        let project = dir.path().join(&name);
        assert_eq!(
            project.join("clawcage-sdk/Cargo.toml").is_file(),
            sdk.is_some()
        );
        let built = run(&project, CLAWCAGE, &["build"], &target);
        assert!(
            built.contains("a component of the clawcage:agent world"),
            "{built}"
        );
        let result = run(
            &project,
            CLAWCAGE,
            &["run", "agent.toml", "--event", "event.json"],
            &target,
        );
        assert_eq!(result.trim(), answer, "{template}");
        let tested = run(&project, &cargo, &["test", "--quiet"], &target);
        assert!(tested.contains("test result: ok"), "{tested}");
    }

    // The same name again is refused, and so is a bad one.
    let again = Command::new(CLAWCAGE)
        .args(["new", "my-hello"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    let bad = Command::new(CLAWCAGE)
        .args(["new", "My Agent"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));

    // Without `#[handler]`: it builds, and `clawcage build` says what is
    // missing.
    let project = dir.path().join("my-hello");
    let source = std::fs::read_to_string(project.join("src/lib.rs")).unwrap();
    std::fs::write(
        project.join("src/lib.rs"),
        source.replace("#[handler]\n", ""),
    )
    .unwrap();
    let forgot = Command::new(CLAWCAGE)
        .arg("build")
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&forgot.stderr);
    assert!(
        !forgot.status.success() && stderr.contains("did you forget `#[handler]`"),
        "{stderr}"
    );
}

/// Whether Node.js and npm run here; with `CLAWCAGE_REQUIRE_CLIENTS` set
/// (CI), their absence fails the test instead of skipping it.
fn node_available() -> bool {
    let runs = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let available = runs("node") && runs("npm");
    assert!(
        available || std::env::var_os("CLAWCAGE_REQUIRE_CLIENTS").is_none(),
        "JavaScript agents need node and npm"
    );
    if !available {
        eprintln!("skipped: node and npm are not installed");
    }
    available
}

/// Where compiled dependencies and the compile cache are shared.
fn target() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-check")
}

/// Scaffolds both templates in `lang` under `dir`, builds them, and checks
/// each answers its event on the mock; answers the projects.
fn scaffold_build_run(dir: &Path, lang: &str) -> Vec<std::path::PathBuf> {
    let target = target();
    let mut projects = Vec::new();
    for (template, answer) in [
        ("hello", "Hello from the mock model!"),
        ("tool-loop", "19 plus 23 is 42."),
    ] {
        let name = format!("{lang}-{template}");
        run(
            dir,
            CLAWCAGE,
            &["new", &name, "--lang", lang, "--template", template],
            &target,
        );
        let project = dir.join(&name);
        let built = run(&project, CLAWCAGE, &["build"], &target);
        assert!(
            built.contains("a component of the clawcage:agent world"),
            "{built}"
        );
        let result = run(
            &project,
            CLAWCAGE,
            &["run", "agent.toml", "--event", "event.json"],
            &target,
        );
        assert_eq!(result.trim(), answer, "{lang} {template}");
        projects.push(project);
    }
    projects
}

#[test]
fn javascript_projects_build_with_componentize_js_and_run_on_the_mock() {
    if !node_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for project in scaffold_build_run(dir.path(), "js") {
        let tested = run(&project, "npm", &["test", "--silent"], &target());
        assert!(tested.contains("# fail 0"), "{tested}");
    }
}

/// Whether python3 with venv and pip runs here; with
/// `CLAWCAGE_REQUIRE_CLIENTS` set (CI), its absence fails the test.
fn python_available() -> bool {
    let venv_works = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        venv_works || std::env::var_os("CLAWCAGE_REQUIRE_CLIENTS").is_none(),
        "Python agents need python3 with venv and pip"
    );
    if !venv_works {
        eprintln!("skipped: python3 has no venv or pip");
    }
    venv_works
}

#[test]
fn python_projects_build_with_componentize_py_and_run_on_the_mock() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = target();
    for project in scaffold_build_run(dir.path(), "python") {
        run(
            &project,
            "python3",
            &["-m", "unittest", "discover", "-s", "src"],
            &target,
        );
    }
    // A failing handler is the agent's error (exit 1), not a crash.
    let failed = Command::new(CLAWCAGE)
        .args([
            "run",
            "agent.toml",
            "--payload",
            "\"just text\"",
            "--kind",
            "ask",
        ])
        .current_dir(dir.path().join("python-hello"))
        .env("XDG_CACHE_HOME", target.join("cache"))
        .output()
        .unwrap();
    assert_eq!(
        failed.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
}

/// The repository's root.
fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds a sample with `clawcage build` where it is and runs it on the
/// event of the Rust sample whose cassette it replays; answers the report.
fn build_and_run_sample(sample: &str, event_of: &str) -> serde_json::Value {
    let target = target();
    let dir = repo().join("sample-agents").join(sample);
    let built = run(&dir, CLAWCAGE, &["build"], &target);
    assert!(
        built.contains("a component of the clawcage:agent world"),
        "{built}"
    );
    let event = format!("../{event_of}/event.json");
    let report = run(
        &dir,
        CLAWCAGE,
        &["run", "agent.toml", "--event", &event],
        &target,
    );
    serde_json::from_str(&report).unwrap_or_else(|e| panic!("{e}: {report}"))
}

#[test]
fn the_typescript_triage_sample_replays_the_rust_triage_cassette() {
    if !node_available() {
        return;
    }
    let target = target();
    let sdk = repo().join("guest-sdk/js");
    // The SDK's own tools (jco, for its types) come with a clean install
    // from its lock file.
    if !sdk
        .join("node_modules/@bytecodealliance/jco-transpile")
        .is_dir()
    {
        run(
            &sdk,
            "npm",
            &["ci", "--no-audit", "--no-fund", "--loglevel=error"],
            &target,
        );
    }
    // The shipped TypeScript declarations are what the WIT gives today.
    run(&sdk, "node", &["types.mjs", "--check"], &target);

    // The sample takes a copy of the SDK package (`install-links`): a
    // clean install from its lock file makes it the SDK as it is now.
    run(
        &repo().join("sample-agents/triage-js"),
        "npm",
        &["ci", "--no-audit", "--no-fund", "--loglevel=error"],
        &target,
    );
    // Request for request the same agent as the Rust triage: its cassette
    // answers every model and tool call, and the report is the same.
    let report = build_and_run_sample("triage-js", "triage");
    assert_eq!(
        report,
        serde_json::json!({
            "status": "triaged", "repo": "acme/support", "number": 42, "labels": ["bug"], "rounds": 2,
            "summary": "Labelled as a bug: saving with an empty title crashes the app.",
            "posted_to_slack": true, "failed_actions": [],
        })
    );

    // Outside the checkout, a TypeScript agent on the SDK by path: a type
    // error fails the build with the compiler's message.
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    let package = serde_json::json!({
        "name": "typed", "private": true, "type": "module",
        "dependencies": {"@clawcage/sdk": format!("file:{}", sdk.display())},
    });
    std::fs::write(project.join("package.json"), package.to_string()).unwrap();
    std::fs::write(
        project.join("agent.toml"),
        "name = \"typed\"\n[component]\npath = \"dist/typed.wasm\"\n",
    )
    .unwrap();
    std::fs::write(
        project.join("agent.ts"),
        "import { defineHandler, Model, user } from '@clawcage/sdk';\n\
         export const handler = defineHandler(() =>\n  \
         Model.open('default').complete({ messages: [user('hi')], maxTokens: 'many' }).text);\n",
    )
    .unwrap();
    let failed = Command::new(CLAWCAGE)
        .arg("build")
        .current_dir(project)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success() && stderr.contains("agent.ts(3,") && stderr.contains("TS2322"),
        "{stderr}"
    );
    assert!(!project.join("dist/typed.wasm").exists());
}

#[test]
fn the_python_report_writer_sample_replays_the_rust_report_writers_cassette() {
    if !python_available() {
        return;
    }
    // The venv holds a copy of the SDK package: make it the SDK as it is now.
    let dir = repo().join("sample-agents/report-writer-py");
    if dir.join(".venv/bin/pip").is_file() {
        run(
            &dir,
            ".venv/bin/pip",
            &[
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--force-reinstall",
                "../../guest-sdk/python",
            ],
            &target(),
        );
    }
    let report = build_and_run_sample("report-writer-py", "report-writer");
    assert_eq!(
        report,
        serde_json::json!({
            "status": "filed", "repo": "acme/support", "issues": 2,
            "page_id": "00000000-0000-0000-0000-00000000beef", "paragraphs": 3,
        })
    );
}

#[test]
fn the_pinned_javascript_tools_are_the_sdk_packages() {
    let package: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("guest-sdk/js/package.json")).unwrap(),
    )
    .unwrap();
    // What `clawcage new --lang js` pins is what the SDK package pins.
    let dir = tempfile::tempdir().unwrap();
    run(
        dir.path(),
        CLAWCAGE,
        &["new", "pins", "--lang", "js"],
        &target(),
    );
    let scaffolded: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("pins/package.json")).unwrap(),
    )
    .unwrap();
    for tool in [
        "@bytecodealliance/componentize-js",
        "@bytecodealliance/preview2-shim",
        "esbuild",
    ] {
        assert_eq!(
            scaffolded["dependencies"][tool], package["dependencies"][tool],
            "{tool}"
        );
    }
}
