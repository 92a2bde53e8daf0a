#!/usr/bin/env bash
# Two devices on one machine: the client (draft model, filter, harness) pinned to core 0, the
# verifier-server pinned to core 1 in a network namespace of its own, joined by the real shaped
# link of `hlm eval --link shaped` (veth + tc tbf each way + a relay adding the RTT). Runs
# LLM-only (the server streaming its own answer over the socket), U-HLM and ours on the same
# HumanEval dev prompts (problems 0-19, not the reported test split) at each RTT and link rate, and writes one table.
#
#   scripts/two-device.sh [--limit N] [--max-tokens N] [--rtts "5 50 150"] [--rates "1000 10000"]
#
# Needs root (namespaces, tc) and two cores. Writes target/two-device/{rtt}ms-{rate}kbit/ (each a
# complete `hlm eval` run folder) and target/two-device/table.md; docs/benchmarks.md quotes a run.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=4 MAX_TOKENS=64 RTTS="5 50 150" RATES="1000 10000"
METHODS="llm-only,u-hlm,ours"
while [ $# -gt 0 ]; do
  case "$1" in
    --limit) LIMIT=$2; shift 2 ;;
    --max-tokens) MAX_TOKENS=$2; shift 2 ;;
    --rtts) RTTS=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    *) echo "usage: $0 [--limit N] [--max-tokens N] [--rtts \"5 50 150\"] [--rates \"1000 10000\"]" >&2; exit 2 ;;
  esac
done
[ "$(nproc --all)" -ge 2 ] || { echo "needs two cores" >&2; exit 1; }
OUT=target/two-device
mkdir -p "$OUT"
cargo build --release -p hlm-cli -p verifier-server --bin hlm --bin verifier-server
SERVER="$(pwd)/target/release/verifier-server"
PINNED="$OUT/verifier-on-core-1.sh"
printf '#!/bin/sh\nexec taskset -c 1 %s "$@"\n' "$SERVER" > "$PINNED"
chmod +x "$PINNED"

for rate in $RATES; do
  for rtt in $RTTS; do
    run="$OUT/${rtt}ms-${rate}kbit"
    [ -f "$run/results.json" ] && { echo "$run: done already"; continue; }
    echo "== RTT $rtt ms, $rate kbit/s =="
    taskset -c 0 ./target/release/hlm eval --limit "$LIMIT" --max-tokens "$MAX_TOKENS" \
      --split dev --no-bertscore --methods "$METHODS" --link shaped --link-rtt-ms "$rtt" \
      --link-rate-kbit "$rate" --verifier-server "$PINNED" --out "$run"
  done
done

python3 - "$OUT" "$RTTS" "$RATES" > "$OUT/table.md" <<'PY'
import json, sys, os
from collections import defaultdict
out, rtts, rates = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
print("| RTT ms | link kbit/s | method | tok/s (real link) | × LLM-only | first token s | server busy ms / token | server passes / token | bytes up / token | bytes down / token | upload rate |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for rate in rates:
    for rtt in rtts:
        d = os.path.join(out, f"{rtt}ms-{rate}kbit")
        if not os.path.exists(os.path.join(d, "results.json")):
            continue
        r = json.load(open(os.path.join(d, "results.json")))
        per = defaultdict(list)
        for line in open(os.path.join(d, "samples.jsonl")):
            s = json.loads(line)
            per[s["method"]].append(s)
        rows = {row["method"]: row for row in r["rows"]}
        base = (rows.get("llm-only") or {}).get("throughput_real_link_tok_s")
        for m, row in rows.items():
            ss = per[m]
            tok_s = row.get("throughput_real_link_tok_s") or float("nan")
            ratio = f"{tok_s / base:.2f}" if base else "–"
            ttft = [s["real_link_first_token_s"] for s in ss if s.get("real_link_first_token_s") is not None]
            ttft = f"{sum(ttft) / len(ttft):.2f}" if ttft else "–"
            tokens = sum(s["tokens"] for s in ss)
            busy = [s.get("llm_compute_us") for s in ss]
            busy = f"{sum(busy) / 1000 / tokens:.1f}" if tokens and all(b is not None for b in busy) else "–"
            print(f"| {rtt} | {rate} | {m} | {tok_s:.2f} | {ratio} | {ttft} | {busy} | "
                  f"{row['llm_passes_per_token']['value']:.2f} | {row['bytes_up_per_token']:.1f} | "
                  f"{row['bytes_down_per_token']:.1f} | {row['upload_rate']['value']:.2f} |")
PY
cat "$OUT/table.md"
