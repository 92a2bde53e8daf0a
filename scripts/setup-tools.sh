#!/usr/bin/env bash
# Installs what a fresh machine lacks for the demo and the tests: Debian's nodejs/npm, curl,
# nginx, chromium (+ driver), the pinned playwright-core (which never downloads a browser), rustfmt and
# clippy, the wasm32 targets, and nightly's rust-src and clippy (the browser's threaded build). Used by scripts/quickstart.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v npm >/dev/null || need+=(nodejs npm)
command -v curl >/dev/null || need+=(curl)
[ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)
# ip and tc: the evaluation's real constrained link (network namespace, veth, tbf).
{ command -v ip && command -v tc; } >/dev/null || need+=(iproute2)
# /bin/kill (procps; minimal images lack it): the test that stops `hlm link` with SIGTERM.
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || need+=(procps)
# nginx: the load balancer in front of several verifiers (scripts/cluster.sh, the failover test).
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
# openssl: the wss:// test makes its own CA and server certificate.
command -v openssl >/dev/null || need+=(openssl)
# A software Vulkan device (lavapipe) for the wgpu backend's tests on a machine without a GPU.
compgen -G "/usr/share/vulkan/icd.d/lvp_icd.*.json" >/dev/null || need+=(mesa-vulkan-drivers)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
# playwright-core only drives the Debian Chromium: never let it download a browser.
(cd web-client/tests && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
rustup component add rustfmt clippy >/dev/null 2>&1 || true
for t in wasm32-unknown-unknown wasm32-wasip1; do  # the browser build; the kernels' wasm tests
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
# The browser's threaded build rebuilds std with atomics: nightly cargo and its standard library's
# source.
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
for c in rust-src clippy; do  # clippy: .ci/run lints the threaded build too
  rustup component list --toolchain nightly --installed | grep -q "^$c" || rustup component add "$c" --toolchain nightly
done
python3 -m pip --version >/dev/null
