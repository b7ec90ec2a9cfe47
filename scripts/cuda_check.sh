#!/usr/bin/env bash
# cuda_check.sh: build and run every GPU test (tests/cuda) on a machine with an NVIDIA GPU.
#
#   scripts/cuda_check.sh          build with -DKILN_CUDA_TESTS=ON into build-cuda (or use
#                                  build-cuda/pack if it exists), run each tests/cuda program,
#                                  then a compute-sanitizer memcheck pass over the small ones
#   scripts/cuda_check.sh --pack   build here (needs nvcc, no GPU) and copy the test programs,
#                                  kiln with its CUDA backend module libkiln_cuda.so beside it, and
#                                  the non-CUDA shared libraries they need (libjansson, ...) into
#                                  build-cuda/pack, for machines without kiln's Debian -dev
#                                  packages: carry build-cuda/pack, then run this script there;
#                                  also the CUPTI trace library (scripts/cuda_trace.sh) as
#                                  pack/libkiln_cupti_trace.so with libcupti.so.* in pack/lib
#                                  (found through the library's RUNPATH $ORIGIN/lib, or
#                                  LD_LIBRARY_PATH=$PWD/build-cuda/pack/lib)
#   --archs VALUE                  build for KILN_CUDA_ARCHS=VALUE (CMakeLists.txt: default = sm_90,
#                                  release = sm_80 / 86 / 89 / 90a SASS + compute_90 PTX, every GPU
#                                  since Ampere; ptx = compute_80 PTX only, JIT on the card: the
#                                  test of the arch guards; or a CUDA_ARCHITECTURES list), with
#                                  --pack too; the module's kernels are checked against each
#                                  SASS architecture's limits by scripts/check_cuda_resources.sh
#   --target sm_86                 run the tests with KILN_CUDA_TARGET=sm_86: the backend sizes its
#                                  launches and picks its kernels for that architecture's limits
#                                  (sm_80, sm_86, sm_89, sm_90; not above the card)
#
# Fixtures: KILN_SHARED (default: .fixtures/ in the checkout if present, else ../shared), with
# models/mistral-tiny-random, models/mistral-tiny-random-f16, models/tinystories-656K,
# models/devstral-small-2505-shape. Logs go to $OUT (if set) else build-cuda/logs; a short table
# is printed last. Env: KILN_CUDA_MEMCHECK=0 skips the sanitizer pass; KILN_CUDA_TEST_TIMEOUT
# (seconds per test, default 240); KILN_TEST_SEED replays random inputs; KILN_CUDA_TRACE=1 adds
# the I1 profiler check (scripts/cuda_trace.sh --check over a dummy-weight kiln bench).
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
BUILD=${KILN_CUDA_BUILD:-build-cuda}
PACK=$BUILD/pack
LOGS=${OUT:-$BUILD/logs}
mkdir -p "$LOGS"
if [ -z "${KILN_SHARED:-}" ]; then
  if [ -d .fixtures ]; then export KILN_SHARED=$ROOT/.fixtures; else export KILN_SHARED=$ROOT/../shared; fi
fi
jobs=$(nproc 2>/dev/null || echo 4)

pack=0
archs=""
while [ $# -gt 0 ]; do
  case $1 in
    --pack) pack=1 ;;
    --archs) archs=${2:?--archs needs a value}; shift ;;
    --archs=*) archs=${1#--archs=} ;;
    --target) export KILN_CUDA_TARGET=${2:?--target needs a value (sm_80, sm_86, sm_89, sm_90)}; shift ;;
    --target=*) export KILN_CUDA_TARGET=${1#--target=} ;;
    *) echo "usage: scripts/cuda_check.sh [--pack] [--archs default|release|ptx|LIST] [--target sm_NN]"; exit 2 ;;
  esac
  shift
done

build() {
  echo "building into $BUILD${archs:+ for KILN_CUDA_ARCHS=$archs} (log: $LOGS/build.log)"
  { cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA_TESTS=ON ${archs:+-DKILN_CUDA_ARCHS=$archs} &&
    cmake --build "$BUILD" -j "$jobs"; } > "$LOGS/build.log" 2>&1
}

if [ "$pack" = 1 ]; then
  build || { tail -30 "$LOGS/build.log"; echo "build failed"; exit 1; }
  # the module's kernels against each SASS architecture's limits (static, no GPU needed)
  bash scripts/check_cuda_resources.sh "$BUILD/libkiln_cuda.so" > "$LOGS/check_cuda_resources.log" 2>&1
  rc=$?
  tail -8 "$LOGS/check_cuda_resources.log"
  [ $rc = 0 ] || [ $rc = 77 ] || { echo "resource check failed"; exit 1; }
  rm -rf "$PACK"; mkdir -p "$PACK/lib"
  cp "$BUILD"/test_cuda_* "$BUILD"/kiln "$BUILD"/libkiln_cuda.so "$PACK/"
  # every shared library but the C runtime and CUDA's own (the GPU machine has those); kiln
  # loads libkiln_cuda.so from its own folder for --backend cuda
  for b in "$PACK"/test_cuda_* "$PACK"/kiln "$PACK"/libkiln_cuda.so; do
    ldd "$b" | awk '/=> \// {print $3}' |
      grep -v -E 'libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libstdc\+\+|libgcc_s|libcublas|libcudart' || true
  done | sort -u | while read -r lib; do cp -L "$lib" "$PACK/lib/"; done
  # the CUPTI trace library and the libcupti it links (the GPU machine may have no CUPTI)
  if bash scripts/cuda_trace.sh --build "$PACK" >> "$LOGS/build.log" 2>&1; then
    ldd "$PACK/libkiln_cupti_trace.so" | awk '/libcupti/ && /=> \// {print $3}' | while read -r lib; do cp -L "$lib" "$PACK/lib/"; done
  else
    echo "warning: libkiln_cupti_trace.so not built (see $LOGS/build.log); the pack has no profiler trace"
  fi
  du -sh "$PACK"; ls "$PACK" "$PACK/lib"
  exit 0
fi

if [ -d "$PACK" ]; then
  BIN=$PACK
  export LD_LIBRARY_PATH="$ROOT/$PACK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "using prebuilt test programs in $PACK"
else
  BIN=$BUILD
  if ! build; then
    tail -30 "$LOGS/build.log"
    echo "build failed: if kiln's Debian -dev packages are missing here, run scripts/cuda_check.sh --pack"
    echo "on the build machine and carry $PACK"
    exit 1
  fi
fi

{ nvidia-smi -L 2>&1; nvcc --version 2>&1 | tail -1; echo "KILN_SHARED=$KILN_SHARED";
  echo "KILN_CUDA_TARGET=${KILN_CUDA_TARGET:-card}"; } > "$LOGS/env.log"
cuobjdump --dump-resource-usage "$BIN/test_cuda_step" > "$LOGS/resource_usage.log" 2>&1 || true

timeout_s=${KILN_CUDA_TEST_TIMEOUT:-240}
rows=()
fails=0
run_one() { # name command...
  local name=$1; shift
  local log="$LOGS/$name.log" t0 t1 rc st
  t0=$(date +%s.%N)
  timeout "$timeout_s" "$@" > "$log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  case $rc in 0) st=PASS ;; 77) st=SKIP ;; 124|137) st=TIMEOUT ;; *) st="FAIL($rc)" ;; esac
  [ "$st" = PASS ] || [ "$st" = SKIP ] || fails=$((fails + 1))
  local summary
  summary=$(grep -E 'passed, .* failed|SKIP|ERROR SUMMARY' "$log" | tail -1)
  rows+=("$(printf '%-34s %-12s %7.1fs  %s' "$name" "$st" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$summary")")
  echo "${rows[-1]}"
}

for t in "$BIN"/test_cuda_*; do
  name=$(basename "$t")
  [ "$name" = test_cuda_sync_lint ] && continue # CPU-only, runs in CI
  run_one "$name" "$t"
done
run_one check_cuda_sync bash scripts/check_cuda_sync.sh
[ -f "$BIN/libkiln_cuda.so" ] && run_one check_cuda_resources bash scripts/check_cuda_resources.sh "$BIN/libkiln_cuda.so"

# I1 seen by a profiler: every kiln_step NVTX range makes exactly one synchronising CUDA call
if [ "${KILN_CUDA_TRACE:-0}" = 1 ]; then
  trace_lib=$BIN/libkiln_cupti_trace.so
  [ -e "$trace_lib" ] || bash scripts/cuda_trace.sh --build "$BIN" >> "$LOGS/build.log" 2>&1
  run_one cuda_trace_i1 bash scripts/cuda_trace.sh --check --lib "$trace_lib" --out "$LOGS/trace" -- \
    "$BIN/kiln" bench --backend cuda --load-format dummy --model "$KILN_SHARED/models/mistral-tiny-random/config.json" \
    --batch 1,4 --prompt-len 64 --decode-steps 8 --warmup 0 --repeat 1
fi

if [ "${KILN_CUDA_MEMCHECK:-1}" != 0 ] && command -v compute-sanitizer > /dev/null; then
  for name in test_cuda_attention test_cuda_rope_kv test_cuda_rmsnorm test_cuda_swiglu test_cuda_step test_cuda_qlinear; do
    [ -x "$BIN/$name" ] || continue
    run_one "memcheck:$name" compute-sanitizer --tool memcheck --error-exitcode 3 "$BIN/$name"
  done
  # the MoE kernels on random inputs (the model-level cases are too slow under the sanitizer)
  [ -x "$BIN/test_cuda_moe" ] && run_one "memcheck:test_cuda_moe" env KILN_TEST_MOE_KERNELS_ONLY=1 \
    compute-sanitizer --tool memcheck --error-exitcode 3 "$BIN/test_cuda_moe"
fi

echo
echo "== kiln cuda_check: $(head -1 "$LOGS/env.log")"
printf '%-34s %-12s %8s  %s\n' test status time summary
for r in "${rows[@]}"; do echo "$r"; done
echo "failures: $fails  (logs: $LOGS)"
grep -h '^FAIL' "$LOGS"/*.log 2>/dev/null | head -20
[ "$fails" = 0 ]
