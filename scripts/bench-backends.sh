#!/usr/bin/env bash
# Draft tok/s per backend, in one run on this machine: candle on the CPU and wgpu natively
# (`hlm bench --draft-backends`, with each GPU kernel's share of a token), then WASM SIMD and
# WebGPU in headless Chromium (web-client/tests/bench.mjs against a local verifier-server).
#   scripts/bench-backends.sh [draft model] [tokens]     (default: smollm2-135m-instruct-q4_1, 32)
# Needs scripts/setup-tools.sh and scripts/build-web.sh first. On a machine whose only adapters are
# software ones (lavapipe natively, SwiftShader in Chromium) the GPU figures show the backend's
# overhead and correctness, not GPU speed. Output: one JSON document per part, in target/bench-backends/.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-smollm2-135m-instruct-q4_1}
TOKENS=${2:-32}
OUT=target/bench-backends
mkdir -p "$OUT"
cargo build --release -p hlm-cli -p verifier-server

echo "== native: cpu, gpu ($MODEL, $TOKENS tokens) =="
./target/release/hlm bench --draft "$MODEL" --tokens "$TOKENS" --draft-backends cpu,gpu --backends-only \
  | tee "$OUT/native.json"

echo "== Chromium: wasm, webgpu =="
PORT=$((20000 + RANDOM % 20000))
./target/release/verifier-server --listen "127.0.0.1:$PORT" --www www \
  --model "$MODEL" --draft-model "$MODEL" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 1
done
(cd web-client/tests && node bench.mjs --base "http://127.0.0.1:$PORT/" --tokens "$TOKENS" --backends wasm,webgpu) \
  | tee "$OUT/browser.jsonl"
echo "results in $OUT/"
