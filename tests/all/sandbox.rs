//! Hostile and buggy guests: each case asserts the exact outcome, and that the
//! next invocation on the same host still succeeds.

use std::time::Duration;

use std::sync::Arc;

use clawcage::inference::ModelBindings;
use clawcage::limits::{
    MAX_CAPTURED_OUTPUT_BYTES, MAX_HOSTCALL_BYTES, MAX_LOG_LINES, MAX_RESOURCE_HANDLES,
    MAX_RESULT_BYTES,
};
use clawcage::log::LogStream;
use clawcage::{Agent, Invocation, InvokeError, LimitKind, Limits};
use clawcage_tests::{HOSTILE, ScriptedModel, event, load};

async fn run(agent: &Agent, kind: &str) -> Invocation {
    agent.invoke(event(kind)).await
}

/// The host carries on: a well-behaved event right after works.
async fn assert_host_unharmed(agent: &Agent) {
    let echo = agent
        .invoke(clawcage::Event::new(
            "test",
            "echo",
            serde_json::json!({"still": "alive"}),
        ))
        .await;
    assert_eq!(
        echo.outcome,
        Ok(r#"{"still":"alive"}"#.to_string()),
        "the next invocation failed: {echo:?}"
    );
}

fn hostile_with(limits: Limits) -> Agent {
    let mut agent = load(HOSTILE);
    agent.set_limits(limits).unwrap();
    agent
}

fn with_default_model(mut agent: Agent) -> Agent {
    agent.set_models(Arc::new(ModelBindings::from([(
        "default".to_string(),
        ScriptedModel::new() as _,
    )])));
    agent
}

#[tokio::test]
async fn infinite_loop_is_stopped_at_the_deadline() {
    let deadline = Duration::from_millis(300);
    let agent = hostile_with(Limits {
        deadline_ms: 300,
        ..Limits::default()
    });
    let invocation = run(&agent, "loop").await;
    assert_eq!(
        invocation.outcome,
        Err(InvokeError::LimitExceeded {
            limit: LimitKind::Deadline,
            detail: "300 ms".into()
        })
    );
    // Stopped within the deadline plus one epoch tick (10 ms), with room for
    // a busy CI machine to schedule the ticker thread late.
    assert!(
        invocation.elapsed >= deadline,
        "stopped early: {:?}",
        invocation.elapsed
    );
    assert!(
        invocation.elapsed < deadline + Duration::from_millis(10 + 240),
        "stopped late: {:?}",
        invocation.elapsed
    );
    assert_host_unharmed(&agent).await;
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let agent = hostile_with(Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    });
    let invocation = run(&agent, "memory-bomb").await;
    assert_eq!(
        invocation.outcome,
        Err(InvokeError::LimitExceeded {
            limit: LimitKind::Memory,
            detail: format!("{} bytes", 32 << 20)
        })
    );
    assert_host_unharmed(&agent).await;
}

#[tokio::test]
async fn refused_growth_is_an_error_the_guest_can_handle() {
    let agent = hostile_with(Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    });
    assert_eq!(
        run(&agent, "memory-try").await.outcome,
        Ok("allocation refused".into())
    );
}

#[tokio::test]
async fn deep_recursion_exhausts_the_stack() {
    let agent = load(HOSTILE);
    let invocation = run(&agent, "recursion").await;
    assert_eq!(
        invocation.outcome,
        Err(InvokeError::LimitExceeded {
            limit: LimitKind::Stack,
            detail: "call stack exhausted".into()
        })
    );
    assert_host_unharmed(&agent).await;
}

#[tokio::test]
async fn panic_is_a_crash_with_the_panic_message() {
    let agent = load(HOSTILE);
    let invocation = run(&agent, "panic").await;
    let Err(InvokeError::Crashed { reason }) = &invocation.outcome else {
        panic!("expected a crash, got {invocation:?}");
    };
    assert!(reason.contains("boom: the agent panicked"), "{reason}");
    assert!(
        reason.contains("src/lib.rs"),
        "the panic location is missing: {reason}"
    );
    assert!(
        invocation
            .logs
            .iter()
            .any(|l| l.stream == LogStream::Stderr && l.message.contains("boom")),
        "the panic output is not in the logs: {:?}",
        invocation.logs
    );
    assert_host_unharmed(&agent).await;
}

#[tokio::test]
async fn abort_is_a_crash() {
    let agent = load(HOSTILE);
    let invocation = run(&agent, "abort").await;
    let Err(InvokeError::Crashed { reason }) = &invocation.outcome else {
        panic!("expected a crash, got {invocation:?}");
    };
    assert!(reason.contains("unreachable"), "{reason}");
    assert_host_unharmed(&agent).await;
}

#[tokio::test]
async fn no_ambient_authority_env_args_files_sockets_stdin() {
    let _ = std::fs::remove_file("/tmp/clawcage-escape");
    let agent = load(HOSTILE);
    let invocation = run(&agent, "ambient").await;
    let report: serde_json::Value =
        serde_json::from_str(invocation.outcome.as_ref().expect("ambient ran")).unwrap();
    assert_eq!(report["env"], 0, "{report:#}");
    assert_eq!(report["args"], 0, "{report:#}");
    for denied in [
        "read_root",
        "read_passwd",
        "write_file",
        "tcp_connect",
        "dns",
        "udp_bind",
    ] {
        let value = report[denied].as_str().unwrap();
        assert!(value.starts_with("Err("), "{denied} was allowed: {value}");
    }
    assert_eq!(
        report["stdin_bytes"], "Ok(0)",
        "stdin is not empty: {report:#}"
    );
    assert!(
        !std::path::Path::new("/tmp/clawcage-escape").exists(),
        "the guest wrote a host file"
    );
    assert_host_unharmed(&agent).await;
}

#[tokio::test]
async fn log_flood_is_bounded() {
    let agent = load(HOSTILE);
    let invocation = run(&agent, "log-flood").await;
    assert_eq!(invocation.outcome, Ok("flooded".into()));
    assert_eq!(invocation.logs.len(), MAX_LOG_LINES);
    // Every line past the budget is counted: the 100 000 `log` lines, the
    // stdout lines that fit the capture buffer, and the notice of the
    // stdout bytes discarded beyond it.
    let stdout: String = (0..100_000)
        .map(|i| format!("stdout flood line {i}\n"))
        .collect();
    let captured_lines = stdout[..MAX_CAPTURED_OUTPUT_BYTES].lines().count() as u64;
    assert_eq!(
        invocation.logs_dropped,
        100_000 + captured_lines + 1 - MAX_LOG_LINES as u64
    );
    assert_host_unharmed(&agent).await;
}

#[tokio::test]
async fn huge_result_and_error_are_refused() {
    let agent = load(HOSTILE);
    for kind in ["huge-result", "huge-error"] {
        let invocation = run(&agent, kind).await;
        assert_eq!(
            invocation.outcome,
            Err(InvokeError::ResultTooLarge {
                size: 4 << 20,
                max: MAX_RESULT_BYTES
            }),
            "{kind}"
        );
    }
    assert_host_unharmed(&agent).await;
}

#[tokio::test]
async fn agent_error_is_reported() {
    let agent = load(HOSTILE);
    assert_eq!(
        run(&agent, "fail").await.outcome,
        Err(InvokeError::Agent {
            message: "the agent says no".into()
        })
    );
}

#[tokio::test]
async fn fuel_limit_stops_a_loop() {
    let cage = clawcage::Cage::new(clawcage::EngineOptions {
        fuel: true,
        ..clawcage_tests::test_options()
    })
    .unwrap();
    let mut agent = cage
        .load_component("hostile", &clawcage_tests::component_bytes(HOSTILE), None)
        .unwrap();
    agent
        .set_limits(Limits {
            fuel: Some(5_000_000),
            ..Limits::default()
        })
        .unwrap();
    let invocation = agent.invoke(event("loop")).await;
    assert_eq!(
        invocation.outcome,
        Err(InvokeError::LimitExceeded {
            limit: LimitKind::Fuel,
            detail: "5000000 units".into()
        })
    );
    assert_host_unharmed(&agent).await;
}

#[tokio::test]
async fn invalid_events_are_refused_before_the_guest_runs() {
    let agent = load(HOSTILE);
    let invocation = agent
        .invoke(clawcage::Event::new("test", "", serde_json::json!({})))
        .await;
    assert!(
        matches!(invocation.outcome, Err(InvokeError::InvalidEvent { .. })),
        "{invocation:?}"
    );
    assert!(invocation.logs.is_empty());
}

#[tokio::test]
async fn a_looping_agent_does_not_starve_another() {
    // A single-threaded executor: the epoch callback yields to it at every
    // tick, so both the runaway agent and a well-behaved one make progress.
    // Three seconds: long enough that five polite calls finish first even
    // on a loaded two-core machine running the whole suite.
    let looping = std::sync::Arc::new(hostile_with(Limits {
        deadline_ms: 3_000,
        ..Limits::default()
    }));
    let spinning = tokio::spawn({
        let looping = looping.clone();
        async move { looping.invoke(event("loop")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let polite = load(HOSTILE);
    for _ in 0..5 {
        assert_host_unharmed(&polite).await;
    }
    assert!(
        !spinning.is_finished(),
        "the looping agent should still be running"
    );
    let looped = spinning.await.unwrap();
    assert!(matches!(
        looped.outcome,
        Err(InvokeError::LimitExceeded {
            limit: LimitKind::Deadline,
            ..
        })
    ));
}

#[tokio::test]
async fn exit_is_a_crash_not_a_host_error() {
    // WASI 0.2's `exit` carries only success or failure, so `exit(3)` arrives
    // as status 1.
    let agent = load(HOSTILE);
    let invocation = run(&agent, "exit").await;
    assert_eq!(
        invocation.outcome,
        Err(InvokeError::Crashed {
            reason: "the agent called exit(1)".into()
        })
    );
    assert_host_unharmed(&agent).await;
}

#[tokio::test]
async fn hoarding_handles_hits_the_handle_limit() {
    let agent = load(HOSTILE);
    let invocation = run(&agent, "handles").await;
    assert_eq!(
        invocation.outcome,
        Err(InvokeError::LimitExceeded {
            limit: LimitKind::Handles,
            detail: format!("{MAX_RESOURCE_HANDLES} at once")
        })
    );
    assert_host_unharmed(&agent).await;
}

#[tokio::test]
async fn a_request_bigger_than_a_host_call_may_carry_is_stopped_while_copying() {
    let agent = with_default_model(load(HOSTILE));
    let invocation = run(&agent, "big-request").await;
    assert_eq!(
        invocation.outcome,
        Err(InvokeError::LimitExceeded {
            limit: LimitKind::Transfer,
            detail: format!("{MAX_HOSTCALL_BYTES} bytes per call")
        })
    );
    assert_host_unharmed(&agent).await;
}

#[tokio::test]
async fn open_models_are_capped_with_an_error_value() {
    let agent = with_default_model(load(HOSTILE));
    let invocation = run(&agent, "many-models").await;
    assert_eq!(
        invocation.outcome,
        Ok(format!(
            "{MAX} open, then: invalid request: more than {MAX} models and streams open at once",
            MAX = clawcage::inference::MAX_OPEN_HANDLES
        ))
    );
}

#[test]
fn limits_are_checked_when_set() {
    let mut agent = load(HOSTILE);
    let err = agent
        .set_limits(Limits {
            deadline_ms: u64::MAX,
            ..Limits::default()
        })
        .unwrap_err();
    assert!(err.contains("deadline_ms"), "{err}");
    let err = agent
        .set_limits(Limits {
            fuel: Some(10),
            ..Limits::default()
        })
        .unwrap_err();
    assert!(err.contains("fuel metering"), "{err}");
}
