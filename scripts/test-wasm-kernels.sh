#!/usr/bin/env bash
# The kernels' tests built for WebAssembly with SIMD128 (wasm32-wasip1) and run under Node's WASI:
# the browser's kernels checked against the portable reference, as the native ones are.
# SIMD128 is on for that target in .cargo/config.toml. Needs the wasm32-wasip1 target (scripts/setup-tools.sh) and Node 18 or later.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $PWD/scripts/wasi-run.mjs"
exec cargo test --release --target wasm32-wasip1 -p hlm-kernels --test kernels "$@"
