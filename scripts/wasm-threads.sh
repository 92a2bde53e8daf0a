#!/usr/bin/env bash
# Cargo for the browser client's threaded build: wasm32 with WebAssembly threads (shared memory,
# atomics). The standard library must be rebuilt with atomics, which only nightly cargo does
# (-Z build-std, with nightly's rust-src: installed here when missing). Its own target directory,
# so that neither wasm32 build invalidates the other's cache.
#   scripts/wasm-threads.sh build            # used by scripts/build-web.sh
#   scripts/wasm-threads.sh clippy -- -D warnings
# Prints the built module's path for `build`.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:?usage: scripts/wasm-threads.sh build|clippy [cargo args]}
shift
rustup component list --toolchain nightly --installed | grep -q '^rust-src' ||
  rustup component add rust-src --toolchain nightly
# The linker makes the memory shared and imported, and exports what wasm-bindgen's thread start
# needs (each thread's TLS block).
flags="-C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals"
for a in --shared-memory --import-memory --max-memory=4294967296 --export=__wasm_init_tls \
  --export=__tls_size --export=__tls_align --export=__tls_base; do
  flags+=" -C link-arg=$a"
done
dir="${CARGO_TARGET_DIR:-target}/wasm-threads"
[ "$cmd" = build ] || dir+="-$cmd"
RUSTFLAGS="$flags" cargo +nightly "$cmd" --release --target wasm32-unknown-unknown \
  -p hlm-web-client -Z build-std=panic_abort,std --target-dir "$dir" "$@" >&2
[ "$cmd" != build ] || echo "$dir/wasm32-unknown-unknown/release/hlm_web_client.wasm"
