#!/usr/bin/env bash
# Our decode speed and forward cost against llama.cpp's, side by side in one run on this machine:
# the same GGUF files, the same thread count, alternating rounds (machines here are shared and
# noisy: compare within a run). llama.cpp is built from the source that the PyPI sdist of
# llama-cpp-python vendors (no other download), with -march=native as its own build does.
#
#   scripts/bench-llama.sh [--threads N] [--tokens N] [--rounds N]
#
# Writes target/bench-llama/{results.jsonl,table.md}; docs/benchmarks.md quotes a run.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2 TOKENS=64 ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --tokens) TOKENS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "usage: $0 [--threads N] [--tokens N] [--rounds N]" >&2; exit 2 ;;
  esac
done
VERSION=0.3.36   # llama-cpp-python; its vendor/llama.cpp is what gets built
CACHE="${HLM_CACHE_DIR:-$HOME/.cache/hybrid-llm}"
LLAMA="$CACHE/llama.cpp-py$VERSION"
MODELS="$CACHE/models"
OUT=target/bench-llama
mkdir -p "$OUT" "$LLAMA"

# 1. llama-bench, built once into the cache.
if [ ! -x "$LLAMA/build/bin/llama-bench" ]; then
  command -v cmake >/dev/null || {
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake
  }
  if ! compgen -G "$LLAMA/llama_cpp_python-$VERSION.tar.gz" >/dev/null; then
    python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$LLAMA" "llama-cpp-python==$VERSION"
  fi
  rm -rf "$LLAMA/src" && mkdir -p "$LLAMA/src"
  tar -xzf "$LLAMA/llama_cpp_python-$VERSION.tar.gz" -C "$LLAMA/src"
  SRC="$LLAMA/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
  cmake -S "$SRC" -B "$LLAMA/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DBUILD_SHARED_LIBS=OFF >"$OUT/cmake.log"
  cmake --build "$LLAMA/build" --target llama-bench -j "$(nproc)" >>"$OUT/cmake.log"
fi
BENCH="$LLAMA/build/bin/llama-bench"

# 2. Ours.
cargo build --release -q -p hlm-cli
HLM=./target/release/hlm
DRAFT=qwen2.5-coder-0.5b-instruct-q4_k_m
VERIFIER=qwen2.5-coder-1.5b-instruct-q4_k_m
$HLM fetch "$DRAFT" "$VERIFIER" >/dev/null

# 3. Alternating rounds. llama-bench: -n gives decode tok/s from an empty context, -p k the
#    time of one forward over k prompt tokens; hlm bench: decode after a 47-token prompt, and a
#    forward over k tokens on top of it.
: >"$OUT/results.jsonl"
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round/$ROUNDS =="
  for model in "$DRAFT" "$VERIFIER"; do
    "$BENCH" -m "$MODELS/$model.gguf" -t "$THREADS" -p 0 -n "$TOKENS" -r 1 -o jsonl 2>/dev/null \
      | sed "s/^/{\"round\":$round,\"who\":\"llama.cpp\",\"model\":\"$model\",\"row\":/; s/\$/}/" >>"$OUT/results.jsonl"
  done
  "$BENCH" -m "$MODELS/$VERIFIER.gguf" -t "$THREADS" -p 1,2,4,8,16 -n 0 -r 2 -o jsonl 2>/dev/null \
    | sed "s/^/{\"round\":$round,\"who\":\"llama.cpp\",\"model\":\"$VERIFIER\",\"row\":/; s/\$/}/" >>"$OUT/results.jsonl"
  RAYON_NUM_THREADS=$THREADS CANDLE_NUM_THREADS=$THREADS $HLM bench --no-e2e --tokens "$TOKENS" \
    --bandwidth 2>/dev/null | tail -1 \
    | sed "s/^/{\"round\":$round,\"who\":\"hlm\",\"row\":/; s/\$/}/" >>"$OUT/results.jsonl"
  # The same with candle's own quantised products (what ran before hlm-kernels).
  HLM_KERNELS=candle RAYON_NUM_THREADS=$THREADS CANDLE_NUM_THREADS=$THREADS $HLM bench --no-e2e \
    --tokens "$TOKENS" 2>/dev/null | tail -1 \
    | sed "s/^/{\"round\":$round,\"who\":\"hlm-candle\",\"row\":/; s/\$/}/" >>"$OUT/results.jsonl"
done

# 4. One table: medians over the rounds.
python3 - "$OUT/results.jsonl" "$THREADS" "$TOKENS" >"$OUT/table.md" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
threads, tokens = sys.argv[2], sys.argv[3]
med = statistics.median
def llama(model, n_prompt, n_gen):
    return [r["row"]["avg_ts"] for r in rows if r["who"] == "llama.cpp" and r["model"] == model
            and r["row"]["n_prompt"] == n_prompt and r["row"]["n_gen"] == n_gen]
ours = [r["row"] for r in rows if r["who"] == "hlm"]
cand = [r["row"] for r in rows if r["who"] == "hlm-candle"]
out = [f"Threads: {threads}; decode over {tokens} tokens; medians of {len(ours)} alternating rounds.", ""]
bw = [o.get("read_bandwidth_gbs") for o in ours if o.get("read_bandwidth_gbs")]
if bw:
    out += [f"Memory read bandwidth (all cores, 1 GiB): {med(bw):.1f} GB/s. Kernels: {ours[0].get('kernels')}.", ""]
out += ["| model | llama.cpp tok/s | ours tok/s | ours / llama.cpp | ours: weights read | ours with candle's kernels |", "|---|---|---|---|---|---|"]
for key, model in [("draft", "qwen2.5-coder-0.5b-instruct-q4_k_m"), ("verifier", "qwen2.5-coder-1.5b-instruct-q4_k_m")]:
    l = med(llama(model, 0, int(tokens)))
    o = med([x[f"{key}_tok_s"] for x in ours])
    g = med([x[f"{key}_weights_gbs"] for x in ours])
    c = med([x[f"{key}_tok_s"] for x in cand]) if cand else float("nan")
    out.append(f"| {model} | {l:.1f} | {o:.1f} | {o / l:.2f} | {g:.1f} GB/s | {c:.1f} ({c / l:.2f}) |")
out += ["", "Forward over k new tokens (1.5B), ms, and its ratio to k = 1:", "",
        "| k | llama.cpp ms | ratio | ours ms | ratio | candle's kernels ms | ratio |", "|---|---|---|---|---|---|---|"]
l1 = None
for k in [1, 2, 4, 8, 16]:
    lms = 1000 * k / med(llama("qwen2.5-coder-1.5b-instruct-q4_k_m", k, 0))
    oms = med([x["verifier_forward"][str(k)]["ms"] for x in ours])
    cms = med([x["verifier_forward"][str(k)]["ms"] for x in cand]) if cand else float("nan")
    if k == 1:
        l1, o1, c1 = lms, oms, cms
    out.append(f"| {k} | {lms:.1f} | {lms / l1:.2f} | {oms:.1f} | {oms / o1:.2f} | {cms:.1f} | {cms / c1:.2f} |")
print("\n".join(out))
PY
cat "$OUT/table.md"
