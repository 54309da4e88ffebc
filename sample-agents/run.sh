#!/usr/bin/env bash
# Builds everything and runs the sample agents through `clawcage run`.
# Needs only a Rust toolchain and a C compiler; installs the wasm32-wasip2
# target if missing. triage and report-writer run on their recorded
# cassettes (model and tools), offline. With ANTHROPIC_API_KEY set, triage
# also runs on Anthropic with that key, kept in the encrypted vault of a
# state directory under target/. Finally the daemon starts on its defaults,
# deploys the three agents, runs two events through its HTTP API, takes a
# signed push of hello into its registry and deploys it from there by
# version, drains on SIGTERM, and the audit log is verified.
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

# The daemon, on its embedded defaults: a state directory (vault, ledger,
# audit log, API token) under target/, loopback only.
export CLAWCAGE_STATE_DIR="$PWD/target/demo-state"
export CLAWCAGE_URL="http://${CLAWCAGE_LISTEN:-127.0.0.1:7878}"
"$clawcage" init
echo "== the daemon: deploy the three agents, invoke triage over HTTP"
"$clawcage" serve --listen "${CLAWCAGE_LISTEN:-127.0.0.1:7878}" \
  --deploy sample-agents/hello/agent.toml \
  --deploy sample-agents/triage/agent.toml \
  --deploy sample-agents/report-writer/agent.toml &
daemon=$!
trap 'kill -TERM "$daemon" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  "$clawcage" agent list >/dev/null 2>&1 && break
  kill -0 "$daemon" 2>/dev/null || { echo "the daemon did not start" >&2; exit 1; }
  sleep 0.1
done
"$clawcage" invoke triage --event sample-agents/triage/event.json
"$clawcage" invoke report-writer --event sample-agents/report-writer/event.json

echo "== the registry: a publisher signs and pushes hello; the operator trusts the key and deploys it by version"
publisher=target/demo-publisher
[ -f "$publisher.key" ] || "$clawcage" keygen --out "$publisher"
# The same bytes give the same manifest, so pushing 1.0.0 again is a retry.
"$clawcage" push sample-agents/target/wasm32-wasip2/release/hello.wasm \
  --name demo/hello --version 1.0.0 --sign "$publisher.key"
"$clawcage" trust add demo "$publisher.pub" >/dev/null
"$clawcage" agent deploy sample-agents/hello/agent.toml --component demo/hello@1.0.0
"$clawcage" invoke hello --event sample-agents/hello/event.json
kill -TERM "$daemon"
wait "$daemon"
trap - EXIT
# The daemon is gone: the rest works on the state directory itself.
unset CLAWCAGE_URL
"$clawcage" audit verify

if [ -n "${ANTHROPIC_API_KEY:-}" ]; then
  "$clawcage" key add anthropic-main --provider anthropic --from-env ANTHROPIC_API_KEY 2>/dev/null \
    || "$clawcage" key rotate anthropic-main --from-env ANTHROPIC_API_KEY
  echo "== triage (Anthropic, your key; no tools granted in agent.live.toml)"
  "$clawcage" run sample-agents/triage/agent.live.toml --event sample-agents/triage/event.json
  "$clawcage" usage --agent triage --since today
fi
