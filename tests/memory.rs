//! 100 invocations in a row must not grow the host's memory beyond what the
//! instance pool itself keeps. This measures the whole process's resident
//! set, so it runs in a test binary of its own.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use clawcage_tests::{HOSTILE, event, load};

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

const MIX: [&str; 5] = ["noop", "panic", "memory-bomb", "huge-result", "log-flood"];

#[tokio::test]
async fn a_hundred_invocations_do_not_grow_host_memory() {
    let agent = load(HOSTILE);
    // Warm up with the same mix: the first invocations fault in the pool's
    // slots and the allocator's arenas for results of every size.
    for kind in MIX.iter().cycle().take(20) {
        agent.invoke(event(kind)).await;
    }
    let before = resident_bytes();
    for i in 0..100 {
        // A mix of outcomes, including traps and a guest that fills its whole
        // 64 MiB memory.
        let kind = MIX[i % MIX.len()];
        let invocation = agent.invoke(event(kind)).await;
        assert_eq!(
            invocation.outcome.is_ok(),
            kind == "noop" || kind == "log-flood",
            "{kind}: {invocation:?}"
        );
    }
    let after = resident_bytes();
    let growth = after.saturating_sub(before);
    assert!(
        growth < 8 << 20,
        "resident memory grew by {} KiB over 100 invocations ({} -> {} KiB)",
        growth / 1024,
        before / 1024,
        after / 1024
    );
}
