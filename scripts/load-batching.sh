#!/usr/bin/env bash
# The verifier under load with and without batching rounds across sessions, in one run:
# `hlm-loadtest` against the real verifier-server (SmolLM2-135M), for each session count the
# server with --batch-rounds 1 (one round per forward pass) and then with batching, alternating.
#
#   scripts/load-batching.sh [--secs N] [--sessions "1 16 64"] [--batch N]
#
# Writes target/load-batching/{S}-sessions-batch-{B}.json and table.md; docs/benchmarks.md
# quotes a run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=180 SESSIONS="1 16 64" BATCH=32
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS=$2; shift 2 ;;
    --sessions) SESSIONS=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    *) echo "usage: $0 [--secs N] [--sessions \"1 16 64\"] [--batch N]" >&2; exit 2 ;;
  esac
done
OUT=target/load-batching
mkdir -p "$OUT"
cargo build --release -p verifier-server --bin verifier-server --bin hlm-loadtest

table="$OUT/table.md"
{
  echo "| sessions | batching | rounds/s | verified tok/s | forward tok/s | p50 ms | p90 ms | p99 ms | peak RSS MiB | errors |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} > "$table"
for s in $SESSIONS; do
  for b in 1 "$BATCH"; do
    json="$OUT/$s-sessions-batch-$b.json"
    ./target/release/hlm-loadtest --sessions "$s" --secs "$SECS" --batch-rounds "$b" --json "$json" >/dev/null
    python3 - "$json" "$s" "$b" >> "$table" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
label = "off (1 round per forward)" if sys.argv[3] == "1" else f"on (up to {sys.argv[3]} rounds)"
print(f"| {sys.argv[2]} | {label} | {r['rounds_per_s']:.1f} | {r['tokens_verified_per_s']:.1f} | "
      f"{r['forward_tokens_per_s']:.1f} | {r['latency_p50_ms']:.0f} | {r['latency_p90_ms']:.0f} | "
      f"{r['latency_p99_ms']:.0f} | {r['rss_peak_mib'] or float('nan'):.0f} | {r['errors']} |")
PY
    tail -1 "$table"
  done
done
echo
cat "$table"
