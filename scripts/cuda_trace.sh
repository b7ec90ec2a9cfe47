#!/usr/bin/env bash
# cuda_trace.sh: run a kiln command under the CUPTI trace library (tools/cuda_trace) and check
# invariant I1 from a profiler's point of view: each engine step (NVTX range "kiln_step") makes
# exactly one synchronising CUDA call.
#
#   scripts/cuda_trace.sh --build [DIR]         build DIR/libkiln_cupti_trace.so (default build-cuda);
#                                               needs gcc, the CUDA headers and libcupti, no GPU
#   scripts/cuda_trace.sh [--check] [--lib SO] [--out DIR] -- CMD [ARGS...]
#                                               run CMD with CUDA_INJECTION64_PATH=SO; the library
#                                               prints the summary to stderr at exit and writes
#                                               DIR/kiln_trace_summary.txt + DIR/kiln_trace.json
#                                               (Chrome trace: open in ui.perfetto.dev)
#   scripts/cuda_trace.sh --selftest            build against a fake CUPTI (tools/cuda_trace/
#                                               fake_cupti.c) and check the recorder end to end
#
# --check: exit 1 unless the summary says "check: OK" (every step exactly one synchronising call,
# at least one step) and steps came from kiln_step ranges (KILN_TRACE_ALLOW_FALLBACK=1 accepts the
# fallback of intervals between cudaStreamSynchronize calls). The command's own failure fails too.
# SO defaults to build-cuda/pack/libkiln_cupti_trace.so, else build-cuda/libkiln_cupti_trace.so
# (built on demand). DIR defaults to $OUT if set, else build-cuda/trace.
# Machines without libcupti: scripts/cuda_check.sh --pack copies libcupti.so.* into
# build-cuda/pack/lib, which the library finds through its RUNPATH ($ORIGIN/lib); if a loader
# still misses it: LD_LIBRARY_PATH=$PWD/build-cuda/pack/lib.
set -u
cd "$(dirname "$0")/.." || exit 2
CUDA=${CUDA_HOME:-/usr/local/cuda}

build_lib() { # DIR
    local dir=$1 libdir="" d
    mkdir -p "$dir" || return 1
    for d in "$CUDA/lib64" "$CUDA/lib" "$CUDA/extras/CUPTI/lib64" "$CUDA/targets/x86_64-linux/lib"; do
        if [ -e "$d/libcupti.so" ]; then libdir=$d; break; fi
    done
    if [ -z "$libdir" ]; then echo "cuda_trace: no libcupti.so under $CUDA (set CUDA_HOME)" >&2; return 1; fi
    gcc -std=c11 -O2 -fPIC -shared -fvisibility=hidden -Wall -Wextra \
        -I"$CUDA/include" -I"$CUDA/extras/CUPTI/include" -Itools/cuda_trace \
        tools/cuda_trace/kiln_cupti_trace.c tools/cuda_trace/trace_account.c \
        -L"$libdir" -lcupti -lpthread -Wl,-rpath,"\$ORIGIN/lib:\$ORIGIN:$libdir" \
        -o "$dir/libkiln_cupti_trace.so" || return 1
    echo "cuda_trace: built $dir/libkiln_cupti_trace.so (libcupti from $libdir)"
}

selftest() {
    local dir=build-cuda/trace-selftest
    mkdir -p "$dir/lib" || return 1
    gcc -std=c11 -O2 -fPIC -shared -Wall -Wextra -Werror -I"$CUDA/include" tools/cuda_trace/fake_cupti.c \
        -Wl,-soname,libcupti.so.13 -o "$dir/lib/libcupti.so.13" &&
    gcc -std=c11 -O2 -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror -I"$CUDA/include" -Itools/cuda_trace \
        tools/cuda_trace/kiln_cupti_trace.c tools/cuda_trace/trace_account.c "$dir/lib/libcupti.so.13" -lpthread \
        -Wl,-rpath,'$ORIGIN/lib' -o "$dir/libkiln_cupti_trace.so" &&
    gcc -std=c11 -O2 -Wall -Wextra -Werror -I"$CUDA/include" -DFAKE_CUPTI_DRIVER tools/cuda_trace/fake_cupti.c \
        "$dir/lib/libcupti.so.13" -ldl -Wl,-rpath,'$ORIGIN/lib' -o "$dir/fake_app" || return 1
    local rc=0 mode
    for mode in good extra nonvtx; do
        KILN_TRACE_OUT="$dir/$mode.json" KILN_TRACE_SUMMARY="$dir/$mode.txt" \
            "$dir/fake_app" "$PWD/$dir/libkiln_cupti_trace.so" "$mode" > "$dir/$mode.log" 2>&1
        if [ "$mode" = good ]; then
            grep -q "check: OK" "$dir/$mode.txt" && grep -q "3 steps (NVTX kiln_step" "$dir/$mode.txt" &&
                python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$dir/$mode.json" || {
                echo "selftest FAIL: clean run not OK"; cat "$dir/$mode.log"; rc=1; }
        elif [ "$mode" = extra ]; then
            grep -q "check: FAIL" "$dir/$mode.txt" || { echo "selftest FAIL: extra sync not caught"; cat "$dir/$mode.log"; rc=1; }
        else # no NVTX: 3 stream syncs give 2 fallback intervals, flagged as FALLBACK
            grep -q "2 steps (FALLBACK: " "$dir/$mode.txt" && grep -q "check: OK" "$dir/$mode.txt" || {
                echo "selftest FAIL: fallback steps"; cat "$dir/$mode.log"; rc=1; }
        fi
    done
    [ $rc = 0 ] && { cat "$dir/good.txt"; echo "cuda_trace selftest: OK (fake CUPTI; logs in $dir)"; }
    return $rc
}

check=0 lib="" out=""
while [ $# -gt 0 ]; do
    case $1 in
    --build) build_lib "${2:-build-cuda}"; exit $? ;;
    --selftest) selftest; exit $? ;;
    --check) check=1; shift ;;
    --lib) lib=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) break ;;
    esac
done
[ $# -gt 0 ] || { echo "usage: scripts/cuda_trace.sh [--check] [--lib SO] [--out DIR] -- CMD [ARGS...]" >&2; exit 2; }
if [ -z "$lib" ]; then
    for c in build-cuda/pack/libkiln_cupti_trace.so build-cuda/libkiln_cupti_trace.so; do
        [ -e "$c" ] && { lib=$c; break; }
    done
    [ -n "$lib" ] || { build_lib build-cuda || exit 1; lib=build-cuda/libkiln_cupti_trace.so; }
fi
lib=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")
out=${out:-${OUT:-build-cuda/trace}}
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
rm -f "$out/kiln_trace_summary.txt"
libdir=$(dirname "$lib")/lib
[ -d "$libdir" ] && export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "cuda_trace: CUDA_INJECTION64_PATH=$lib $*" >&2
CUDA_INJECTION64_PATH=$lib KILN_TRACE_OUT=$out/kiln_trace.json KILN_TRACE_SUMMARY=$out/kiln_trace_summary.txt "$@"
rc=$?
sum=$out/kiln_trace_summary.txt
if [ ! -s "$sum" ]; then
    echo "cuda_trace: no summary in $sum: the library did not run (not loaded by libcuda, CUPTI failed, or the" >&2
    echo "  program never initialised CUDA / exited without atexit handlers)" >&2
    exit 1
fi
echo "cuda_trace: summary $sum, trace $out/kiln_trace.json" >&2
[ $rc = 0 ] || { echo "cuda_trace: the command failed (exit $rc)" >&2; exit $rc; }
if [ $check = 1 ]; then
    if grep -q "FALLBACK" "$sum" && [ "${KILN_TRACE_ALLOW_FALLBACK:-0}" != 1 ]; then
        echo "cuda_trace: --check FAIL: no kiln_step NVTX ranges (see the summary's first lines)" >&2
        exit 1
    fi
    grep -q "^check: OK" "$sum" || { echo "cuda_trace: --check FAIL: $(grep '^check:' "$sum")" >&2; exit 1; }
    echo "cuda_trace: --check OK: $(grep '^check:' "$sum")" >&2
fi
exit 0
