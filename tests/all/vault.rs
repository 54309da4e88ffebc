//! `clawcage init` and `clawcage key …` against a real state directory.

use std::path::Path;

use clap::Parser;
use clawcage::cli::{Cli, Command};

const SECRET: &str = "sk-ant-api03-TESTKEY7dTJrg0Aq3X1P5JbDEmgsBvFWBzZOyFE8c6DqCs2HJu75NEhGl2DXeQ8a5VLSkNt5DDk1vzsjPfESnE8okLuhtAA";

fn clawcage(state: &Path, args: &[&str], stdin: &str) -> Result<String, String> {
    let mut argv = vec!["clawcage"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--state-dir", state.to_str().unwrap()]);
    let mut out = Vec::new();
    match Cli::try_parse_from(argv)
        .map_err(|e| e.to_string())?
        .command
    {
        Command::Init(init) => init.run(&mut out)?,
        Command::Key(key) => key.run(&mut stdin.as_bytes(), &mut out)?,
        Command::Usage(usage) => usage.run(&mut out)?,
        Command::Token(token) => token.run(&mut out)?,
        Command::Audit(audit) => audit.run(&mut out)?,
        Command::Cache(cache) => cache.run(&mut out)?,
        _ => unreachable!("not a state command"),
    }
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn keys_are_added_listed_rotated_and_revoked_without_ever_showing_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let init = clawcage(&state, &["init"], "").unwrap();
    assert!(init.contains("created master key"), "{init}");
    assert!(
        clawcage(&state, &["init"], "")
            .unwrap()
            .contains("already present")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("master.key")), 0o600);
    }

    let added = clawcage(
        &state,
        &["key", "add", "main", "--provider", "anthropic"],
        &format!("{SECRET}\n"),
    )
    .unwrap();
    assert!(added.starts_with("added main"), "{added}");
    let list = clawcage(&state, &["key", "list"], "").unwrap();
    assert!(
        list.contains("main") && list.contains("anthropic") && list.contains("active"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&clawcage(&state, &["key", "list", "--output", "json"], "").unwrap())
            .unwrap();
    let fingerprint = json["keys"][0]["fingerprint"].as_str().unwrap().to_string();

    let rotated = clawcage(&state, &["key", "rotate", "main"], "sk-ant-api03-ROTATEDoFw4CYxwUxYNYk9kStSGAEzPkT0vcSIy14XlfE732iMRNww0ZebbT3PDZN0mRyiI9L9QHYJD3WpMXcKX99cbz5AA\n").unwrap();
    assert!(rotated.contains("rotated"), "{rotated}");
    let json: serde_json::Value =
        serde_json::from_str(&clawcage(&state, &["key", "list", "-o", "json"], "").unwrap())
            .unwrap();
    assert_ne!(
        json["keys"][0]["fingerprint"].as_str().unwrap(),
        fingerprint,
        "rotation must change the fingerprint"
    );

    let revoked = clawcage(&state, &["key", "revoke", "main"], "").unwrap();
    assert!(revoked.contains("revoked"), "{revoked}");
    let err = clawcage(
        &state,
        &["key", "rotate", "main"],
        "sk-ant-api03-anothereTmLC5JB3w9QA0AIpozEsDxN2p4iCCasS0LuvOKMYIYfuGmqlFZt3ZKr22ilqdVzyLq4Nyp7H8xAPE2J5PL4eLAA\n",
    )
    .unwrap_err();
    assert_eq!(err, "key \"main\" was revoked");
    // The id is taken until the revoked key is deleted; then it can be
    // added again. An active key cannot be deleted.
    let err = clawcage(
        &state,
        &["key", "add", "main", "--provider", "anthropic"],
        &format!("{SECRET}\n"),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "key \"main\" was revoked; `clawcage key delete main` frees its id"
    );
    let deleted = clawcage(&state, &["key", "delete", "main"], "").unwrap();
    assert!(deleted.starts_with("deleted main"), "{deleted}");
    clawcage(
        &state,
        &["key", "add", "main", "--provider", "anthropic"],
        &format!("{SECRET}\n"),
    )
    .unwrap();
    let err = clawcage(&state, &["key", "delete", "main"], "").unwrap_err();
    assert!(err.contains("is active: revoke it first"), "{err}");

    // Each change made here is in the audit log (never the value), and the
    // chain verifies.
    let exported = clawcage(&state, &["audit", "export"], "").unwrap();
    let changes: Vec<(String, String)> = exported
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|record| record["event"]["kind"] == "key")
        .map(|record| {
            (
                record["event"]["change"].as_str().unwrap().to_string(),
                record["event"]["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("add", "cli"),
            ("rotate", "cli"),
            ("revoke", "cli"),
            ("delete", "cli"),
            ("add", "cli"),
        ]
        .map(|(c, a)| (c.to_string(), a.to_string()))
    );
    assert!(
        clawcage(&state, &["audit", "verify"], "")
            .unwrap()
            .starts_with("ok: 5 records")
    );

    // Nothing the CLI printed, and nothing in the state directory, holds a
    // key in plaintext.
    for output in [&init, &added, &list, &rotated, &revoked, &exported] {
        assert!(
            !output.contains("TESTKEY") && !output.contains("ROTATED"),
            "{output}"
        );
    }
    for entry in std::fs::read_dir(&state).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for needle in [&b"TESTKEY"[..], b"ROTATED"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let err = clawcage(&state, &["key", "list"], "").unwrap_err();
    assert!(err.contains("run `clawcage init` first"), "{err}");
    clawcage(&state, &["init"], "").unwrap();
    let err = clawcage(&state, &["key", "add", "k", "--provider", "nope"], "x").unwrap_err();
    assert!(err.contains("provider \"nope\" is not one of"), "{err}");
    let err = clawcage(
        &state,
        &["key", "add", "bad id", "--provider", "openai"],
        "x",
    )
    .unwrap_err();
    assert!(err.contains("key id"), "{err}");
    let err = clawcage(&state, &["key", "add", "k", "--provider", "openai"], "\n").unwrap_err();
    assert_eq!(err, "the key is empty");
    let err = clawcage(
        &state,
        &[
            "key",
            "add",
            "k",
            "--provider",
            "openai",
            "--from-env",
            "CLAWCAGE_TEST_UNSET_VAR",
        ],
        "",
    )
    .unwrap_err();
    assert!(err.contains("CLAWCAGE_TEST_UNSET_VAR is not set"), "{err}");
    // The value is never accepted on the command line.
    assert!(
        clawcage(
            &state,
            &["key", "add", "k", "--provider", "openai", "sk-on-argv"],
            ""
        )
        .is_err()
    );
}

#[test]
fn a_wrong_master_key_is_refused_and_destroys_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    clawcage(&state, &["init"], "").unwrap();
    clawcage(
        &state,
        &["key", "add", "main", "--provider", "openai"],
        SECRET,
    )
    .unwrap();
    let master = state.join("master.key");
    let original = std::fs::read(&master).unwrap();
    clawcage::fsutil::write_atomically(
        &master,
        clawcage::vault::MasterKey::generate().to_hex().as_bytes(),
    )
    .unwrap();
    let err = clawcage(&state, &["key", "list"], "").unwrap_err();
    assert_eq!(
        err,
        "the master key does not match this vault; nothing was changed"
    );
    clawcage::fsutil::write_atomically(&master, &original).unwrap();
    assert!(
        clawcage(&state, &["key", "list"], "")
            .unwrap()
            .contains("main")
    );

    // A key file others can read is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = clawcage(&state, &["key", "list"], "").unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
    }
}

#[test]
fn usage_reports_spend_per_agent_model_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    clawcage(&state, &["init"], "").unwrap();
    assert!(
        clawcage(&state, &["usage"], "")
            .unwrap()
            .starts_with("no usage since")
    );
    let ledger = clawcage::ledger::Ledger::new(std::sync::Arc::new(
        clawcage::db::Database::open(&state).unwrap(),
    ));
    for (agent, cost) in [("triage", 1_500), ("triage", 2_500), ("report", 90_000)] {
        ledger.record(&clawcage::ledger::UsageRecord {
            agent: agent.into(),
            binding: "default".into(),
            provider: "anthropic".into(),
            model: "claude-haiku-4-5".into(),
            key_id: Some("main".into()),
            input_tokens: 100,
            output_tokens: 20,
            cost_micros: cost,
            latency_ms: 3,
            outcome: "ok".into(),
            event_id: None,
            ..Default::default()
        });
    }
    ledger.flush().unwrap();
    let report = clawcage(
        &state,
        &["usage", "--agent", "triage", "--since", "today"],
        "",
    )
    .unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 2, "{report}");
    assert!(
        lines[1].starts_with("triage")
            && lines[1].contains("main")
            && lines[1].ends_with("0.004000"),
        "{report}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&clawcage(&state, &["usage", "--json"], "").unwrap()).unwrap();
    assert_eq!(json["usage"].as_array().unwrap().len(), 2);
    assert_eq!(json["usage"][1]["estimated_calls"], 0);
    // By day: the same rows, each with its UTC day.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let by_day: serde_json::Value = serde_json::from_str(
        &clawcage(&state, &["usage", "--by", "day", "-o", "json"], "").unwrap(),
    )
    .unwrap();
    assert!(
        by_day["usage"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["day"] == today.as_str()),
        "{by_day}"
    );
    let table = clawcage(&state, &["usage", "--by", "day"], "").unwrap();
    assert!(
        table.starts_with("DAY") && table.contains(&today),
        "{table}"
    );
    // A server that reported no counts: the estimate is marked.
    ledger.record(&clawcage::ledger::UsageRecord {
        agent: "local".into(),
        binding: "default".into(),
        provider: "openai-compatible".into(),
        model: "llama3".into(),
        input_tokens: 40,
        output_tokens: 9,
        estimated: true,
        outcome: "ok".into(),
        ..Default::default()
    });
    ledger.flush().unwrap();
    let report = clawcage(&state, &["usage", "--agent", "local"], "").unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert!(
        lines[1].contains("~40") && lines[1].contains("~9"),
        "{report}"
    );
    assert!(
        lines[2].starts_with("~ includes 1 call(s) the host counted itself"),
        "{report}"
    );
    assert!(
        clawcage(&state, &["usage", "--since", "last tuesday"], "")
            .unwrap_err()
            .contains("--since")
    );
}

#[test]
fn keys_shorter_or_plainer_than_their_provider_issues_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    clawcage(&state, &["init"], "").unwrap();
    let random = clawcage_tests::keys::random_chars;
    for (provider, value, needle) in [
        // Cut short when pasted.
        (
            "anthropic",
            format!("sk-ant-api03-{}", random(1, 60)),
            "real ones are at least 100",
        ),
        (
            "openai",
            format!("sk-proj-{}", random(2, 20)),
            "at least 40",
        ),
        ("github", format!("ghp_{}", random(3, 20)), "at least 40"),
        ("webhook", random(4, 31), "at least 32"),
        // Long enough, but nothing secret beyond the public parts.
        (
            "slack",
            format!("xoxb-111122223333-444455556666-{}", random(5, 10)),
            "beyond its public prefix",
        ),
        // Not random.
        ("http", "a".repeat(40), "fewer than 8 distinct"),
        (
            "openai",
            format!("sk-{}", "ab".repeat(30)),
            "fewer than 8 distinct",
        ),
    ] {
        let err = clawcage(
            &state,
            &["key", "add", "k", "--provider", provider],
            &format!("{value}\n"),
        )
        .unwrap_err();
        assert!(err.contains(needle), "{provider}: {err}");
    }
    // White space around a pasted key is dropped, and the operator told.
    let key = clawcage_tests::keys::openai(6);
    let added = clawcage(
        &state,
        &["key", "add", "k", "--provider", "openai"],
        &format!("  {key}\t\r\n"),
    )
    .unwrap();
    assert!(
        added.starts_with("note: removed 5 bytes of white space around the key"),
        "{added}"
    );
    let db = std::sync::Arc::new(clawcage::db::Database::open(&state).unwrap());
    let master = clawcage::vault::MasterKey::load(&state).unwrap();
    let vault = clawcage::vault::Vault::open(db, master).unwrap();
    assert_eq!(
        vault.secret("k", "openai").unwrap().expose_str(),
        Some(key.as_str())
    );
    // A final newline alone is no news.
    let quiet = clawcage(
        &state,
        &["key", "add", "k2", "--provider", "openai"],
        &format!("{}\n", clawcage_tests::keys::openai(7)),
    )
    .unwrap();
    assert!(quiet.starts_with("added k2"), "{quiet}");
}

#[tokio::test]
async fn run_and_serve_share_the_state_directorys_compile_cache_which_can_be_listed_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    clawcage(&state, &["init"], "").unwrap();
    // `run` with a state directory and no --cache-dir compiles into
    // `cache` in the state directory, where the daemon looks too.
    let argv = [
        "clawcage",
        "run",
        clawcage_tests::HELLO,
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let clawcage::cli::Command::Run(run) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let code = run.run_with(&mut Vec::new(), &mut Vec::new()).await;
    assert_eq!(code, 0);
    let cache = state.join("cache");
    let listed = clawcage(&state, &["cache", "list", "--output", "json"], "").unwrap();
    let artifacts: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        artifacts["artifacts"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    // An artifact unused for a week, beside it.
    let old = cache.join(format!(
        "{}-0123456789abcdef0123456789abcdef.cwasm",
        "a".repeat(64)
    ));
    std::fs::write(&old, b"old").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 86_400))
        .unwrap();
    let table = clawcage(&state, &["cache", "list"], "").unwrap();
    assert!(table.contains("2 artifact(s)"), "{table}");
    let cleaned = clawcage(&state, &["cache", "clean", "--unused-for", "7d"], "").unwrap();
    assert!(cleaned.starts_with("removed 1 artifact(s)"), "{cleaned}");
    assert!(!old.exists());
    let cleaned = clawcage(&state, &["cache", "clean"], "").unwrap();
    assert!(cleaned.starts_with("removed 1 artifact(s)"), "{cleaned}");
    assert!(
        clawcage(&state, &["cache", "list"], "")
            .unwrap()
            .contains("0 artifact(s)")
    );
}
