#!/usr/bin/env bash
# Builds the verifier with candle's CUDA backend (`--features cuda`) on a machine with no GPU and
# no system CUDA toolkit: the toolkit comes from NVIDIA's PyPI wheels (CUDA 13.0), unpacked into a
# cache, never installed into the system. See docs/cuda-build.md.
#
#   scripts/build-cuda.sh                 # fetch/unpack (once), check, then cargo build
#   HLM_CUDA_DRY_RUN=1 scripts/build-cuda.sh   # everything up to cargo, then print the environment
#   CUDA_COMPUTE_CAP=90 scripts/build-cuda.sh  # build for another GPU family (see the doc)
#
# Extra arguments go to cargo. Idempotent: cached wheels, unpacked trees and the libcuda stub are
# reused.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(uname -sm)" = "Linux x86_64" ] || { echo "build-cuda: only x86_64 Linux wheels are pinned" >&2; exit 1; }

# One CUDA release for every component (the pins of PyPI's `cuda-toolkit==13.0.3.0` meta-package).
# Why 13.0 and not 12.x: `nvidia-cuda-nvcc-cu12` (every 12.x release) ships only ptxas, not the
# nvcc driver, cicc, cudafe++ or fatbinary; the CUDA 13 wheels ship the whole compiler.
# Why 13.0 and not newer: the oldest CUDA 13 needs the oldest driver (R580+); cudarc 0.19 knows
# 13.0-13.3 (its build script panics on a version it does not list).
CUDA_MM=13.0
PINS=(
  nvidia-cuda-nvcc==13.0.88     # nvcc, ptxas, cudafe++, fatbinary, nvlink
  nvidia-cuda-crt==13.0.88      # include/crt/* (host_config.h, mma.h, ...) nvcc needs
  nvidia-nvvm==13.0.88          # nvvm/bin/cicc, libdevice
  nvidia-cuda-runtime==13.0.96  # cuda.h, cuda_runtime.h, cuda_fp16/bf16/fp8.h, libcudart.so.13
  nvidia-cuda-nvrtc==13.0.88    # libnvrtc.so.13 (cudarc links -lnvrtc)
  nvidia-cuda-cccl==13.0.85     # thrust/cub/libcu++ headers (candle-kernels' moe, reduce)
  nvidia-cublas==13.1.1.3       # libcublas.so.13, libcublasLt.so.13 (-lcublas -lcublasLt)
  nvidia-curand==10.4.0.35      # libcurand.so.10 (-lcurand)
)
CACHE="${HLM_CACHE_DIR:-$HOME/.cache/hybrid-llm}/cuda-$CUDA_MM"
WHEELS="$CACHE/wheels"
UNPACKED="$CACHE/unpacked"
mkdir -p "$WHEELS" "$UNPACKED"

# 1. Download the pinned wheels that are not cached yet (no dependencies, nothing installed).
for spec in "${PINS[@]}"; do
  name="${spec%%==*}" version="${spec##*==}"
  prefix="${name//-/_}-${version}-"
  if ! compgen -G "$WHEELS/${prefix}*.whl" >/dev/null; then
    echo "build-cuda: downloading $spec"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" "$spec"
  fi
done

# 2. Unpack each wheel once (keeping the executable bits, which Python's zipfile drops). All CUDA 13
#    wheels share one prefix, nvidia/cu13/{bin,include,lib,nvvm}: a CUDA_ROOT-like tree as is.
for whl in "$WHEELS"/*.whl; do
  marker="$UNPACKED/.done-$(basename "$whl")"
  [ -e "$marker" ] && continue
  echo "build-cuda: unpacking $(basename "$whl")"
  nice python3 - "$whl" "$UNPACKED" <<'EOF'
import os, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if ".dist-info/" in info.filename:
            continue
        path = z.extract(info, dest)
        mode = (info.external_attr >> 16) & 0o777
        if mode and not info.is_dir():
            os.chmod(path, mode)
EOF
  touch "$marker"
done
ROOT="$UNPACKED/nvidia/cu13"
ln -sfn "unpacked/nvidia/cu13" "$CACHE/cuda"   # a stable name for humans; the env uses $ROOT
[ -x "$ROOT/bin/nvcc" ] || { echo "build-cuda: $ROOT/bin/nvcc missing" >&2; exit 1; }

# 3. The unversioned names the linker looks for (-lcudart -> libcudart.so); wheels ship only
#    libcudart.so.13 and the like.
for l in cudart cublas cublasLt curand nvrtc; do
  real=$(cd "$ROOT/lib" && ls "lib$l.so."[0-9]* 2>/dev/null | head -1)
  [ -n "$real" ] || { echo "build-cuda: lib$l.so.* missing in $ROOT/lib" >&2; exit 1; }
  ln -sfn "$real" "$ROOT/lib/lib$l.so"
done

# 4. A link-time stub of the driver library. cudarc is built with `dynamic-linking`, so the binary
#    links -lcuda; libcuda comes with the NVIDIA driver, and no PyPI wheel ships a stub. This one
#    defines every cu* function cuda.h declares (all API-version spellings) with SONAME
#    libcuda.so.1, so the binary records NEEDED libcuda.so.1 and the real driver's library is what
#    loads at run time. It lives only in lib/stubs (never on LD_LIBRARY_PATH).
STUB="$ROOT/lib/stubs/libcuda.so"
if [ ! -e "$STUB" ]; then
  echo "build-cuda: generating $STUB"
  mkdir -p "$ROOT/lib/stubs"
  tmp=$(mktemp -d)
  for def in "" -D__CUDA_API_VERSION_INTERNAL -DCUDA_API_PER_THREAD_DEFAULT_STREAM; do
    echo '#include <cuda.h>' | gcc -E -P $def -I"$ROOT/include" -x c -
  done | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d '( \t' > "$tmp/syms"
  # cudaProfiler.h is not in the runtime wheel; cudarc's driver bindings declare these three.
  printf '%s\n' cuProfilerInitialize cuProfilerStart cuProfilerStop >> "$tmp/syms"
  sort -u "$tmp/syms" | sed 's/.*/void &(void) {}/' > "$tmp/stub.c"
  gcc -shared -fPIC -nostdlib -Wl,-soname,libcuda.so.1 -o "$STUB" "$tmp/stub.c"
  rm -rf "$tmp"
fi

# 5. The environment the build scripts read.
# nvcc on PATH: cudarc's build script runs `nvcc --version` (feature cuda-version-from-build-system,
# which candle enables) to pick its CUDA 13.0 bindings; cudaforge also finds nvcc there.
export PATH="$ROOT/bin:$PATH"
# cudaforge (candle-kernels' build script) takes $NVCC before PATH: pin it so a stray system nvcc
# can never be mixed in. It derives include/ from nvcc's location ($ROOT/include).
export NVCC="$ROOT/bin/nvcc"
# cudarc's link search (-L) comes from CUDA_HOME/CUDA_PATH/CUDA_ROOT/CUDA_TOOLKIT_ROOT_DIR, every one
# that is set: $ROOT/lib (libcudart/cublas/cublasLt/curand/nvrtc) and $ROOT/lib/stubs (libcuda).
export CUDA_ROOT="$ROOT" CUDA_HOME="$ROOT"
unset CUDA_PATH CUDA_TOOLKIT_ROOT_DIR CUDNN_LIB   # another toolkit's paths would be searched too
# No GPU to ask: cudaforge reads CUDA_COMPUTE_CAP before trying nvidia-smi, and fails without
# either. 80 = Ampere A100 (PTX also JITs on newer GPUs; the statically compiled quantized-matmul
# kernels, libmoe.a, are sm_80 machine code, so they run on sm_80/86/87/89 only).
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
  CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ' || true)
  CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
fi
export CUDA_COMPUTE_CAP
# cudaforge compiles kernels in parallel (rayon); one at a time on this 2-core machine.
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-1}"
# NVCC_CCBIN is passed through if set (cudaforge then adds -ccbin and -allow-unsupported-compiler);
# unset, nvcc uses the g++ on PATH (Debian 12's g++-12, which CUDA 13.0 supports).
# A target dir of its own, so this build never invalidates the main (CPU) one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/cuda"

# 6. Checks that fail in seconds rather than deep into a long cargo build.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# The same parse as cudarc's build script: the 4th line's "release X.Y".
release=$(nvcc --version | sed -n 4p | awk -F', ' '{print $2}' | awk '{print $2}')
[ "$release" = "$CUDA_MM" ] || { echo "build-cuda: nvcc reports '$release', expected $CUDA_MM" >&2; exit 1; }
# The arch spelling cudaforge uses (an "a" suffix from 90, "f" from 120).
cap=$CUDA_COMPUTE_CAP; sfx=""; [ "$cap" -ge 90 ] && sfx=a; [ "$cap" -ge 120 ] && sfx=f
printf '#include <cuda_runtime.h>\n#include <cuda_bf16.h>\n#include <cuda_fp8.h>\n#include <cuda/std/limits>\nextern "C" __global__ void k(float *x) { x[threadIdx.x] *= 2.0f; }\n' > "$tmp/t.cu"
nvcc --ptx -gencode="arch=compute_${cap}${sfx},code=sm_${cap}${sfx}" -std=c++17 -o "$tmp/t.ptx" "$tmp/t.cu"
grep -q '\.entry k' "$tmp/t.ptx" || { echo "build-cuda: PTX test compile produced no kernel" >&2; exit 1; }
# The final link's CUDA part, as rustc will do it (-z now like Rust's full RELRO).
cat > "$tmp/l.c" <<'EOF'
int cuInit(unsigned); int cublasCreate_v2(void **); int cublasLtCreate(void **);
int curandCreateGenerator(void **, int); int nvrtcVersion(int *, int *); int cudaGetDeviceCount(int *);
int main(void) { void *h; int a, b; return cuInit(0) + cublasCreate_v2(&h) + cublasLtCreate(&h)
  + curandCreateGenerator(&h, 100) + nvrtcVersion(&a, &b) + cudaGetDeviceCount(&a); }
EOF
gcc -o "$tmp/l" "$tmp/l.c" -L"$ROOT/lib" -L"$ROOT/lib/stubs" \
  -lcuda -lnvrtc -lcurand -lcublas -lcublasLt -lcudart -Wl,-z,now
readelf -d "$tmp/l" | grep -q 'NEEDED.*\[libcuda\.so\.1\]' || { echo "build-cuda: stub link test failed" >&2; exit 1; }

CMD=(cargo build --release -p verifier-server --features cuda "$@")
if [ -n "${HLM_CUDA_DRY_RUN:-}" ]; then
  echo "build-cuda: dry run; checks passed (nvcc $release, PTX for sm_${cap}${sfx}, stub link OK)"
  echo "CUDA toolkit:      $ROOT ($(du -sh "$UNPACKED" | cut -f1) unpacked, wheels $(du -sh "$WHEELS" | cut -f1))"
  for v in PATH NVCC CUDA_ROOT CUDA_HOME CUDA_COMPUTE_CAP CUDAFORGE_THREADS NVCC_CCBIN CARGO_TARGET_DIR; do
    printf '%-18s %s\n' "$v=" "${!v:-(unset)}"
  done
  echo "would run:         ${CMD[*]} 2>&1 | tee target/cuda-build.log"
  echo "to run the binary: LD_LIBRARY_PATH=$ROOT/lib (+ the NVIDIA driver's libcuda.so.1)"
  exit 0
fi

mkdir -p target
echo "build-cuda: ${CMD[*]} (CUDA $CUDA_MM, sm_${cap}${sfx}, log: target/cuda-build.log)"
"${CMD[@]}" 2>&1 | tee target/cuda-build.log
echo "build-cuda: built $CARGO_TARGET_DIR/release/verifier-server; run it with LD_LIBRARY_PATH=$ROOT/lib"
