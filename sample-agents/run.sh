#!/usr/bin/env bash
# Builds everything and runs the sample agents through `clawcage run`.
# Needs only a Rust toolchain and a C compiler; installs the wasm32-wasip2
# target if missing. triage and report-writer run on their recorded
# cassettes (model and tools), offline. With ANTHROPIC_API_KEY set, triage
# also runs on Anthropic with that key, kept in the encrypted vault of a
# state directory under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2
cargo build --release --locked --manifest-path sample-agents/Cargo.toml --target wasm32-wasip2 -p hello -p triage -p report-writer
cargo build --release --locked -p clawcage-host

clawcage=target/release/clawcage
echo "== hello"
"$clawcage" run sample-agents/hello/agent.toml --event sample-agents/hello/event.json

echo "== triage (recorded model, GitHub and Slack; offline)"
"$clawcage" run sample-agents/triage/agent.toml --event sample-agents/triage/event.json
echo "== report-writer (recorded model, GitHub and Notion; offline)"
"$clawcage" run sample-agents/report-writer/agent.toml --event sample-agents/report-writer/event.json

if [ -n "${ANTHROPIC_API_KEY:-}" ]; then
  export CLAWCAGE_STATE_DIR="$PWD/target/demo-state"
  "$clawcage" init
  "$clawcage" key add anthropic-main --provider anthropic --from-env ANTHROPIC_API_KEY 2>/dev/null \
    || "$clawcage" key rotate anthropic-main --from-env ANTHROPIC_API_KEY
  echo "== triage (Anthropic, your key; no tools granted in agent.live.toml)"
  "$clawcage" run sample-agents/triage/agent.live.toml --event sample-agents/triage/event.json
  "$clawcage" usage --agent triage --since today
fi
