#!/usr/bin/env bash
# The draft model in the browser against native decode, side by side in one run on this machine:
# the page (www/bench.html in headless Chromium, driven by web-client/tests/bench.mjs) on one
# thread (the single-thread build) and on two (the threaded build; verifier-server makes the page
# cross-origin isolated), cold (downloading the model) and warm (from Cache Storage), and
# `hlm bench --no-e2e` natively with 1 and 2 threads, in alternating rounds (machines here are
# shared and noisy: compare within a run).
#
#   scripts/bench-browser.sh [--rounds N] [--tokens N] [--port P]
#   scripts/bench-browser.sh --pairs N [--tokens N] [--port P]
#
# The page's figure is decode in mode `never` (the draft model's forward and the loop's own work
# per token, the uncertainty's passes included); the native one is the bare forward. Needs the
# browser build (scripts/build-web.sh, run here if www/pkg is missing) and Chromium with
# playwright-core (scripts/setup-tools.sh). Writes target/bench-browser/{results.jsonl,table.md};
# docs/benchmarks.md quotes runs. The tables come from scripts/browser-bench-table.py.
#
# --pairs N alternates instead at the finest grain: the page stays loaded and decodes, then native
# decodes as many tokens on as many threads (`hlm bench --draft-backends cpu`: the drafter the
# loop uses, uncertainty included, like the page's figure), N times per thread count; each pair's
# two halves run seconds apart, so the machine's slow minutes fall on both. Writes
# target/bench-browser/{pairs.jsonl,pairs.md}: every pair's ratio and their median.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=2 TOKENS=64 PORT=8093 PAIRS=
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --tokens) TOKENS=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --pairs) PAIRS=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N | --pairs N] [--tokens N] [--port P]" >&2; exit 2 ;;
  esac
done
OUT=target/bench-browser
mkdir -p "$OUT"
DRAFT=qwen2.5-coder-0.5b-instruct-q4_k_m
VERIFIER=qwen2.5-coder-1.5b-instruct-q4_k_m

cargo build --release -q -p hlm-cli -p verifier-server
[ -f www/pkg/index.js ] || scripts/build-web.sh >&2
[ -d web-client/tests/node_modules/playwright-core ] ||
  (cd web-client/tests && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
HLM=./target/release/hlm
$HLM fetch "$DRAFT" "$VERIFIER" >/dev/null

./target/release/verifier-server --listen "127.0.0.1:$PORT" --www www \
  --model "$VERIFIER" --draft-model "$DRAFT" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
BASE="http://127.0.0.1:$PORT/"
for _ in $(seq 1 180); do
  node -e "fetch('${BASE}health').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))" && break
  kill -0 $SERVER 2>/dev/null || { cat "$OUT/server.log" >&2; exit 1; }
  sleep 1
done
if [ -n "$PAIRS" ]; then
  hlm_path="$(pwd)/target/release/hlm"
  (cd web-client/tests && node bench.mjs --base "$BASE" --tokens "$TOKENS" --threads 1,2 \
    --pairs "$PAIRS" --hlm "$hlm_path") | grep '^{' | tee "$OUT/pairs.jsonl"
  scripts/browser-bench-table.py pairs "$OUT/pairs.jsonl" "$TOKENS" >"$OUT/pairs.md"
  cat "$OUT/pairs.md"
  exit 0
fi

: >"$OUT/results.jsonl"
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round/$ROUNDS =="
  (cd web-client/tests && node bench.mjs --base "$BASE" --tokens "$TOKENS" --threads 1,2) |
    grep '^{' | sed "s/^/{\"round\":$round,\"who\":\"page\",\"row\":/; s/\$/}/" >>"$OUT/results.jsonl"
  for threads in 2 1; do
    RAYON_NUM_THREADS=$threads CANDLE_NUM_THREADS=$threads $HLM bench --no-e2e --tokens "$TOKENS" \
      2>/dev/null | tail -1 |
      sed "s/^/{\"round\":$round,\"who\":\"native\",\"threads\":$threads,\"row\":/; s/\$/}/" \
        >>"$OUT/results.jsonl"
  done
done

# One table: each round's figures and the page ÷ native ratios (goal: ≥ 0.5 ×), memory after load.
scripts/browser-bench-table.py rounds "$OUT/results.jsonl" "$TOKENS" >"$OUT/table.md"
cat "$OUT/table.md"
