#!/usr/bin/env bash
# Two devices on one machine: the client (draft model, filter, harness) pinned to core 0, the
# verifier-server pinned to core 1 in a network namespace of its own, joined by the real shaped
# link of `hlm eval --link shaped` (veth + tc tbf each way + a relay adding the RTT). Runs
# LLM-only (the server streaming its own answer over the socket), U-HLM and ours, the hybrid
# ones with and without pipelined drafting, on the same HumanEval dev prompts (not the reported
# test split) at each RTT and link rate, and writes one table.
#
# With `--drafts "native chromium"` (the default), the hybrid methods also run with the draft
# model in headless Chromium (the npm package, WASM SIMD, one thread, pinned to core 0 with the
# browser's other processes): the same requests (`hlm eval --write-requests`), through a link
# of its own (`hlm link`), with the page's files served by a second verifier-server on core 0.
#
#   scripts/two-device.sh [--limit N] [--max-tokens N] [--rtts "5 50 150"] [--rates "1000 10000"]
#                         [--pipelines "off auto"] [--drafts "native chromium"] [--out target/two-device]
#
# Needs root (namespaces, tc) and two cores; the Chromium side needs the web package
# (scripts/build-web.sh) and web-client/tests' node modules. Writes {out}/{rtt}ms-{rate}kbit-{pipeline}/
# (each a complete `hlm eval` run folder, resumable), {out}/{rtt}ms-{rate}kbit-{pipeline}-chromium/
# (requests.jsonl, samples.jsonl: resumable), {out}/table.md and {out}/plot.svg;
# docs/benchmarks.md quotes a run.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=4 MAX_TOKENS=64 RTTS="5 50 150" RATES="1000 10000" PIPELINES="off auto" DRAFTS="native chromium"
OUT=target/two-device WWW_PORT=8094
while [ $# -gt 0 ]; do
  case "$1" in
    --limit) LIMIT=$2; shift 2 ;;
    --max-tokens) MAX_TOKENS=$2; shift 2 ;;
    --rtts) RTTS=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --pipelines) PIPELINES=$2; shift 2 ;;
    --drafts) DRAFTS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--limit N] [--max-tokens N] [--rtts \"5 50 150\"] [--rates \"1000 10000\"] [--pipelines \"off auto\"] [--drafts \"native chromium\"] [--out DIR]" >&2; exit 2 ;;
  esac
done
[ "$(nproc --all)" -ge 2 ] || { echo "needs two cores" >&2; exit 1; }
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
cargo build --release -p hlm-cli -p verifier-server --bin hlm --bin verifier-server
SERVER="$(pwd)/target/release/verifier-server"
HLM="$(pwd)/target/release/hlm"
PINNED="$OUT/verifier-on-core-1.sh"
printf '#!/bin/sh\nexec taskset -c 1 %s "$@"\n' "$SERVER" > "$PINNED"
chmod +x "$PINNED"
DRAFT_MODEL=qwen2.5-coder-0.5b-instruct-q4_k_m
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

# The native draft: `hlm eval` on core 0 runs every method over the shaped link it starts.
native() { # rtt rate pipeline
  local run="$OUT/$1ms-$2kbit-$3" methods="u-hlm,ours"
  [ -f "$run/results.json" ] && { echo "$run: done already"; return; }
  # The server alone has no drafting to pipeline: it runs once, with the plain loop.
  [ "$3" = off ] && methods="llm-only,$methods"
  echo "== native draft: RTT $1 ms, $2 kbit/s, pipelining $3 =="
  taskset -c 0 "$HLM" eval --limit "$LIMIT" --max-tokens "$MAX_TOKENS" \
    --split dev --no-bertscore --methods "$methods" --link shaped --link-rtt-ms "$1" \
    --link-rate-kbit "$2" --verifier-server "$PINNED" --pipeline "$3" --out "$run"
}

# The page's files (package, draft model) from a verifier-server on core 0, off the shaped link.
start_page_server() {
  [ -f www/pkg/index.js ] || { echo "www/pkg is missing: run scripts/build-web.sh" >&2; exit 1; }
  taskset -c 0 "$SERVER" --model "$DRAFT_MODEL" --draft-model "$DRAFT_MODEL" --www www \
    --listen "127.0.0.1:$WWW_PORT" > "$OUT/page-server.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$WWW_PORT/client-config.json" > /dev/null && return
    sleep 0.5
  done
  echo "the page server did not start: $OUT/page-server.log" >&2; exit 1
}

# The draft in Chromium on core 0, the same requests, through a link of its own (`hlm link`).
chromium() { # rtt rate pipeline
  local run="$OUT/$1ms-$2kbit-$3-chromium"
  mkdir -p "$run"
  "$HLM" eval --limit "$LIMIT" --max-tokens "$MAX_TOKENS" --split dev --methods u-hlm,ours \
    --pipeline "$3" --write-requests "$run/requests.jsonl"
  echo "== Chromium draft: RTT $1 ms, $2 kbit/s, pipelining $3 =="
  taskset -c 0 "$HLM" link --verifier-server "$PINNED" --link-rtt-ms "$1" --link-rate-kbit "$2" \
    --allowed-origin "http://127.0.0.1:$WWW_PORT" > "$run/link.json" 2> "$run/link.log" &
  local link=$!
  PIDS+=($link)
  until [ -s "$run/link.json" ]; do
    kill -0 "$link" 2>/dev/null || { echo "hlm link failed: $run/link.log" >&2; exit 1; }
    sleep 0.5
  done
  local url token
  url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$run/link.json")
  token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$run/link.json")
  (cd web-client/tests && taskset -c 0 node two-device.mjs --base "http://127.0.0.1:$WWW_PORT/" \
    --verifier "$url" --token "$token" --requests "$run/requests.jsonl" \
    --out "$run/samples.jsonl" --threads 1)
  kill -TERM "$link"
  wait "$link" || true
}

for rate in $RATES; do
  for rtt in $RTTS; do
    for pipe in $PIPELINES; do
      case " $DRAFTS " in *" native "*) native "$rtt" "$rate" "$pipe" ;; esac
    done
  done
done
case " $DRAFTS " in
  *" chromium "*)
    start_page_server
    for rate in $RATES; do
      for rtt in $RTTS; do
        for pipe in $PIPELINES; do chromium "$rtt" "$rate" "$pipe"; done
      done
    done ;;
esac

python3 - "$OUT" "$RTTS" "$RATES" "$PIPELINES" "$DRAFTS" > "$OUT/table.md" <<'PY'
import json, sys, os
from collections import defaultdict
out, rtts, rates, pipes, drafts = (sys.argv[1], sys.argv[2].split(), sys.argv[3].split(),
                                   sys.argv[4].split(), sys.argv[5].split())
bars = []  # (setting, series, tok/s, first token s) for plot.svg
print("| RTT ms | link kbit/s | draft on | method | pipelining | tok/s (real link) | × LLM-only | first token s | server busy ms / token | server passes / token | draft positions / token | draft ms / token | bytes up / token | bytes down / token | upload rate | text = native |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")

def native_samples(d):
    """Per method, the samples of a native run folder, in the fields the rows need."""
    per = defaultdict(list)
    for line in open(os.path.join(d, "samples.jsonl")):
        s = json.loads(line)
        per[s["method"]].append(dict(
            task=s["task"], ids=s["ids"], tokens=s["tokens"], wall=s["real_link_wall_s"],
            first=s.get("real_link_first_token_s"), busy_us=s.get("llm_compute_us"),
            passes=s["llm_forward_passes"], drafted=s["draft_forward_tokens"],
            draft_s=s.get("draft_time_s"), up=s["bytes_up"], down=s["bytes_down"], uploaded=s["uploaded"]))
    return per

def chromium_samples(d):
    """The same for a Chromium run folder (the engine's own summary of each generation)."""
    per = defaultdict(list)
    for line in open(os.path.join(d, "samples.jsonl")):
        s = json.loads(line)
        m = s["summary"]
        per[s["method"]].append(dict(
            task=s["task"], ids=m["ids"], tokens=m["tokens"], wall=m["wall_time_s"],
            first=s.get("first_token_s"), busy_us=m["llm_compute_us"],
            passes=m["llm_forward_passes"], drafted=m["draft_forward_tokens"],
            draft_s=m["draft_time_s"], up=m["bytes_up"], down=m["bytes_down"], uploaded=m["uploaded"]))
    return per

def row(ss):
    """Sums over a method's samples, per token as the harness's report computes them."""
    tokens = sum(s["tokens"] for s in ss) or 1
    first = [s["first"] for s in ss if s["first"] is not None]
    busy = [s["busy_us"] for s in ss]
    draft = [s["draft_s"] for s in ss]
    return dict(
        tok_s=tokens / sum(s["wall"] for s in ss),
        first=sum(first) / len(first) if first else None,
        busy=sum(busy) / 1000 / tokens if all(b is not None for b in busy) else None,
        passes=sum(s["passes"] for s in ss) / tokens,
        drafted=sum(s["drafted"] for s in ss) / tokens,
        draft_ms=sum(draft) * 1000 / tokens if all(d is not None for d in draft) else None,
        up=sum(s["up"] for s in ss) / tokens, down=sum(s["down"] for s in ss) / tokens,
        upload=sum(s["uploaded"] for s in ss) / tokens)

fmt = lambda v, f: "–" if v is None else format(v, f)
for rate in rates:
    for rtt in rtts:
        setting = f"{rtt} ms, {rate} kbit/s"
        runs = []  # (draft, pipeline, per-method samples)
        for pipe in pipes:
            d = os.path.join(out, f"{rtt}ms-{rate}kbit-{pipe}")
            if "native" in drafts and os.path.exists(os.path.join(d, "samples.jsonl")):
                runs.append(("native", pipe, native_samples(d)))
        for pipe in pipes:
            d = os.path.join(out, f"{rtt}ms-{rate}kbit-{pipe}-chromium")
            if "chromium" in drafts and os.path.exists(os.path.join(d, "samples.jsonl")):
                runs.append(("Chromium", pipe, chromium_samples(d)))
        native_ids = {(p, m, s["task"]): s["ids"] for dr, p, per in runs if dr == "native"
                      for m, ss in per.items() for s in ss}
        base = next((row(per["llm-only"])["tok_s"] for _, _, per in runs if "llm-only" in per), None)
        for draft, pipe, per in runs:
            for m, ss in per.items():
                r = row(ss)
                ratio = f"{r['tok_s'] / base:.2f}" if base else "–"
                shown = "–" if m == "llm-only" else pipe
                same = [native_ids.get((pipe, m, s["task"])) == s["ids"] for s in ss
                        if (pipe, m, s["task"]) in native_ids]
                same = f"{sum(same)}/{len(same)}" if draft != "native" and same else "–"
                series = m if m == "llm-only" else f"{m}, {'' if draft == 'native' else 'Chromium, '}pipelining {pipe}"
                bars.append((setting, series, r["tok_s"], fmt(r["first"], ".2f")))
                print(f"| {rtt} | {rate} | {draft if m != 'llm-only' else '–'} | {m} | {shown} | "
                      f"{r['tok_s']:.2f} | {ratio} | {fmt(r['first'], '.2f')} | {fmt(r['busy'], '.1f')} | "
                      f"{r['passes']:.2f} | {r['drafted']:.2f} | {fmt(r['draft_ms'], '.0f')} | {r['up']:.1f} | {r['down']:.1f} | "
                      f"{r['upload']:.2f} | {same} |")

def plot(bars, path):
    """Grouped bars, one group per setting: tokens/s (left panel) and first-token time (right)."""
    settings = list(dict.fromkeys(b[0] for b in bars))
    series = list(dict.fromkeys(b[1] for b in bars))
    colours = ["#444", "#9ecae1", "#3182bd", "#fdae6b", "#e6550d", "#c6dbef", "#6baed6", "#fdd0a2", "#fd8d3c"]
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
