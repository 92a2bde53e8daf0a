#!/usr/bin/env bash
# The kernels' tests built for WebAssembly (wasm32-wasip1) and run under Node's WASI: the browser's
# kernels checked against the portable reference, as the native ones are. Twice: with SIMD128 (on
# for that target in .cargo/config.toml), then with relaxed SIMD too (its own target dir, so that
# neither build invalidates the other's cache) in Debian's Chromium. In between, the core's unit
# tests under Node (its exponentials, which the uncertainty's bounds rely on, have a SIMD128 path).
# Needs the wasm32-wasip1 target and Chromium with playwright-core (scripts/setup-tools.sh), and
# Node 18 or later.
set -euo pipefail
cd "$(dirname "$0")/.."
run="node --no-warnings"
export CARGO_TARGET_WASM32_WASIP1_RUNNER="$run $PWD/scripts/wasi-run.mjs"
cargo test --release --target wasm32-wasip1 -p hlm-kernels --test kernels "$@"

echo "== the core's sampling and uncertainty (SIMD128 exponentials), under Node =="
cargo test --release --target wasm32-wasip1 -p hlm-core --lib

echo "== the same kernels with relaxed SIMD (+relaxed-simd), in Chromium =="
# In a Chromium page, not Node: Node 20 has relaxed SIMD behind a flag only, and its relaxed dot
# product is wrong (scripts/wasi-run.mjs).
CARGO_TARGET_WASM32_WASIP1_RUNNER="$run $PWD/scripts/wasi-run.mjs --chromium" \
  RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" \
  cargo test --release --target wasm32-wasip1 -p hlm-kernels --test kernels \
  --target-dir "${CARGO_TARGET_DIR:-target}/wasm-relaxed" "$@"
