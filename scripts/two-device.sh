#!/usr/bin/env bash
# Two devices on one machine: the client (draft model, filter, harness) pinned to core 0, the
# verifier-server pinned to core 1 in a network namespace of its own, joined by the real shaped
# link of `hlm eval --link shaped` (veth + tc tbf each way + a relay adding the RTT). Runs
# LLM-only (the server streaming its own answer over the socket), U-HLM and ours, the hybrid
# ones with and without pipelined drafting, on the same HumanEval dev prompts (not the reported
# test split) at each RTT and link rate, and writes one table.
#
#   scripts/two-device.sh [--limit N] [--max-tokens N] [--rtts "5 50 150"] [--rates "1000 10000"]
#                         [--pipelines "off auto"] [--out target/two-device]
#
# Needs root (namespaces, tc) and two cores. Writes {out}/{rtt}ms-{rate}kbit-{pipeline}/ (each a
# complete `hlm eval` run folder, resumable), {out}/table.md and {out}/plot.svg;
# docs/benchmarks.md quotes a run.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=4 MAX_TOKENS=64 RTTS="5 50 150" RATES="1000 10000" PIPELINES="off auto" OUT=target/two-device
while [ $# -gt 0 ]; do
  case "$1" in
    --limit) LIMIT=$2; shift 2 ;;
    --max-tokens) MAX_TOKENS=$2; shift 2 ;;
    --rtts) RTTS=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --pipelines) PIPELINES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--limit N] [--max-tokens N] [--rtts \"5 50 150\"] [--rates \"1000 10000\"] [--pipelines \"off auto\"] [--out DIR]" >&2; exit 2 ;;
  esac
done
[ "$(nproc --all)" -ge 2 ] || { echo "needs two cores" >&2; exit 1; }
mkdir -p "$OUT"
cargo build --release -p hlm-cli -p verifier-server --bin hlm --bin verifier-server
SERVER="$(pwd)/target/release/verifier-server"
PINNED="$OUT/verifier-on-core-1.sh"
printf '#!/bin/sh\nexec taskset -c 1 %s "$@"\n' "$SERVER" > "$PINNED"
chmod +x "$PINNED"

for rate in $RATES; do
  for rtt in $RTTS; do
    for pipe in $PIPELINES; do
      run="$OUT/${rtt}ms-${rate}kbit-$pipe"
      [ -f "$run/results.json" ] && { echo "$run: done already"; continue; }
      # The server alone has no drafting to pipeline: it runs once, with the plain loop.
      methods="u-hlm,ours"
      [ "$pipe" = off ] && methods="llm-only,$methods"
      echo "== RTT $rtt ms, $rate kbit/s, pipelining $pipe =="
      taskset -c 0 ./target/release/hlm eval --limit "$LIMIT" --max-tokens "$MAX_TOKENS" \
        --split dev --no-bertscore --methods "$methods" --link shaped --link-rtt-ms "$rtt" \
        --link-rate-kbit "$rate" --verifier-server "$PINNED" --pipeline "$pipe" --out "$run"
    done
  done
done

python3 - "$OUT" "$RTTS" "$RATES" "$PIPELINES" > "$OUT/table.md" <<'PY'
import json, sys, os
from collections import defaultdict
out, rtts, rates, pipes = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
bars = []  # (setting, series, tok/s, first token s) for plot.svg
print("| RTT ms | link kbit/s | method | pipelining | tok/s (real link) | × LLM-only | first token s | server busy ms / token | server passes / token | draft positions / token | bytes up / token | bytes down / token | upload rate |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
def load(d):
    r = json.load(open(os.path.join(d, "results.json")))
    per = defaultdict(list)
    for line in open(os.path.join(d, "samples.jsonl")):
        s = json.loads(line)
        per[s["method"]].append(s)
    return {row["method"]: row for row in r["rows"]}, per

for rate in rates:
    for rtt in rtts:
        runs = [(p, os.path.join(out, f"{rtt}ms-{rate}kbit-{p}")) for p in pipes]
        runs = [(p, d) for p, d in runs if os.path.exists(os.path.join(d, "results.json"))]
        loaded = [(p, *load(d)) for p, d in runs]
        base = next((rows["llm-only"].get("throughput_real_link_tok_s")
                     for _, rows, _ in loaded if "llm-only" in rows), None)
        for pipe, rows, per in loaded:
            for m, row in rows.items():
                ss = per[m]
                tok_s = row.get("throughput_real_link_tok_s") or float("nan")
                ratio = f"{tok_s / base:.2f}" if base else "–"
                ttft = [s["real_link_first_token_s"] for s in ss if s.get("real_link_first_token_s") is not None]
                ttft = f"{sum(ttft) / len(ttft):.2f}" if ttft else "–"
                tokens = sum(s["tokens"] for s in ss)
                busy = [s.get("llm_compute_us") for s in ss]
                busy = f"{sum(busy) / 1000 / tokens:.1f}" if tokens and all(b is not None for b in busy) else "–"
                shown = "–" if m == "llm-only" else pipe
                drafted = f"{sum(s['draft_forward_tokens'] for s in ss) / tokens:.2f}" if tokens else "–"
                series = m if m == "llm-only" else f"{m}, pipelining {pipe}"
                bars.append((f"{rtt} ms, {rate} kbit/s", series, tok_s, ttft))
                print(f"| {rtt} | {rate} | {m} | {shown} | {tok_s:.2f} | {ratio} | {ttft} | {busy} | "
                      f"{row['llm_passes_per_token']['value']:.2f} | {drafted} | {row['bytes_up_per_token']:.1f} | "
                      f"{row['bytes_down_per_token']:.1f} | {row['upload_rate']['value']:.2f} |")

def plot(bars, path):
    """Grouped bars, one group per setting: tokens/s (left panel) and first-token time (right)."""
    settings = list(dict.fromkeys(b[0] for b in bars))
    series = list(dict.fromkeys(b[1] for b in bars))
    colours = ["#444", "#9ecae1", "#3182bd", "#fdae6b", "#e6550d", "#74c476", "#31a354"]
    value = {(b[0], b[1]): b for b in bars}
    bw, gap, top, h = 14, 30, 40, 220
    group_w = bw * len(series) + gap
    panel_w = 60 + group_w * len(settings)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * panel_w + 40}" '
           f'height="{top + h + 60 + 18 * len(series)}" font-family="sans-serif" font-size="11">']
    for k, (title, idx) in enumerate([("tokens/s over the real link", 2), ("first token, s", 3)]):
        x0 = 50 + k * (panel_w + 20)
        vals = [float(b[idx]) for b in bars if b[idx] not in ("–", None)]
        vmax = max(vals) * 1.1 if vals else 1
        svg.append(f'<text x="{x0}" y="20" font-size="13">{title}</text>')
        svg.append(f'<line x1="{x0}" y1="{top + h}" x2="{x0 + panel_w - 50}" y2="{top + h}" stroke="#000"/>')
        for t in range(5):
            v = vmax * t / 4
            y = top + h - h * t / 4
            svg.append(f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end">{v:.1f}</text>')
        for i, st in enumerate(settings):
            gx = x0 + 10 + i * group_w
            for j, se in enumerate(series):
                b = value.get((st, se))
                if not b or b[idx] in ("–", None):
                    continue
                v = float(b[idx])
                bh = h * v / vmax
                svg.append(f'<rect x="{gx + j * bw}" y="{top + h - bh:.1f}" width="{bw - 2}" '
                           f'height="{bh:.1f}" fill="{colours[j % len(colours)]}"/>')
            svg.append(f'<text x="{gx}" y="{top + h + 15}">{st}</text>')
    for j, se in enumerate(series):
        y = top + h + 40 + 18 * j
        svg.append(f'<rect x="50" y="{y - 10}" width="12" height="12" fill="{colours[j % len(colours)]}"/>')
        svg.append(f'<text x="68" y="{y}">{se}</text>')
    svg.append("</svg>")
    open(path, "w").write("\n".join(svg) + "\n")

plot(bars, os.path.join(out, "plot.svg"))
PY
cat "$OUT/table.md"
