#!/usr/bin/env bash
# Builds the browser client: the engine to WebAssembly (SIMD128), once for one thread and once
# with threads (shared memory; nightly cargo rebuilds std with atomics), wasm-bindgen's JS glue, the npm
# package in web-client/js (tarball in target/npm/), and a copy served by the demo at www/pkg/.
#   scripts/build-web.sh
# Installs what it lacks: the wasm32 target (rustup) and wasm-bindgen-cli of the exact version the
# crate pins (cargo install; no wasm-opt: Debian's binaryen breaks the module).
set -euo pipefail
cd "$(dirname "$0")/.."

WB_VERSION=$(sed -n 's/^wasm-bindgen = "=\(.*\)"$/\1/p' web-client/Cargo.toml)
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WB_VERSION" ]; then
  echo "== installing wasm-bindgen-cli $WB_VERSION =="
  cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi

echo "== building the engine for wasm32 (release, +simd128) =="
cargo build --release --target wasm32-unknown-unknown -p hlm-web-client

echo "== building the engine for wasm32 with threads (nightly, std rebuilt with atomics) =="
threaded=$(scripts/wasm-threads.sh build)

echo "== wasm-bindgen =="
rm -rf web-client/js/wasm web-client/js/wasm-threads
wasm-bindgen --target web --out-dir web-client/js/wasm \
  "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/hlm_web_client.wasm"
wasm-bindgen --target web --out-dir web-client/js/wasm-threads "$threaded"

echo "== npm package =="
mkdir -p target/npm
(cd web-client/js && npm pack --silent --pack-destination ../../target/npm >/dev/null)
ls -l target/npm/*.tgz

# The demo page imports the package from /pkg/.
rm -rf www/pkg && mkdir -p www/pkg
cp -r web-client/js/index.js web-client/js/worker.js web-client/js/index.d.ts \
  web-client/js/types.generated.d.ts web-client/js/worker-messages.d.ts \
  web-client/js/package.json web-client/js/pool-worker.js web-client/js/wasm \
  web-client/js/wasm-threads www/pkg/
echo "built: web-client/js/wasm, target/npm/*.tgz, www/pkg"
