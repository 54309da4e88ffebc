#!/usr/bin/env bash
# Builds everything and runs the sample agents through `clawcage run`.
# Needs only rustup and cargo; installs the wasm32-wasip2 target if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2
cargo build --release --locked --manifest-path sample-agents/Cargo.toml --target wasm32-wasip2 -p hello -p triage
cargo build --release --locked -p clawcage-host

clawcage=target/release/clawcage
echo "== hello"
"$clawcage" run sample-agents/hello/agent.toml --event sample-agents/hello/event.json
echo "== triage (no model or tool granted yet: it says what it is missing)"
"$clawcage" run sample-agents/triage/agent.toml --event sample-agents/triage/event.json
