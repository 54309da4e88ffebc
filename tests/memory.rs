//! 100 invocations in a row must not grow the host's memory beyond what the
//! instance pool itself keeps. This measures the whole process's resident
//! set, so it runs in a test binary of its own.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use clawcage_tests::{HOSTILE, event, load};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("reading /proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test]
async fn a_hundred_invocations_do_not_grow_host_memory() {
    let agent = load(HOSTILE);
    // Warm up: the first invocations fault in the pool's slots, the
    // allocator's arenas and tokio's.
    for _ in 0..20 {
        assert!(agent.invoke(event("noop")).await.outcome.is_ok());
    }
    let before = resident_bytes();
    for i in 0..100 {
        // A mix of outcomes, including ones that unwind through traps and
        // a guest that fills 16 MiB of its memory.
        let kind = ["noop", "panic", "memory-bomb", "huge-result", "log-flood"][i % 5];
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
