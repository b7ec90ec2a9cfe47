#!/usr/bin/env bash
# fuzz.sh: build and run kiln's libFuzzer targets (tests/fuzz/fuzz_*.c, issue 21).
#
#   scripts/fuzz.sh --ci               build, then run every target FUZZ_SECONDS (default 60) on a
#                                      temporary copy of its seed corpus (the repo is never
#                                      written); fails on any crash, leak, timeout or UBSan report
#   scripts/fuzz.sh TARGET [SECONDS]   a longer run of one target (default 600 s) that adds the new
#                                      interesting inputs to tests/fuzz/corpus/TARGET/
#   scripts/fuzz.sh --list             the targets
#
# Targets: safetensors (header), shard_index (model.safetensors.index.json), hf_config
# (config.json), params_json (params.json), gguf (reader, GGUF vocab, GGUF model), tokenizer_json,
# tekken, tokenize (encode/decode of arbitrary bytes), chat (rendering arbitrary message lists,
# tool-call parsing), openai (request parser), sse (SSE chunks and responses).
#
# The build (build-fuzz/, Debian's clang; clang and libclang-rt-14-dev are installed with apt-get
# as root or through sudo when missing) is cmake -DKILN_FUZZ=ON: every layer compiled with
# -fsanitize=fuzzer-no-link,address,undefined, the targets linked with -fsanitize=fuzzer. The
# default build is untouched. A crash leaves its input in build-fuzz/artifacts/TARGET/: fix it,
# then copy the input to tests/fuzz/regressions/fuzz_TARGET/ (tests/c/test_fuzz_regressions.c
# replays every file there, and the corpora, in the normal CTest run, without clang).
# Environment: FUZZ_SECONDS (per target, --ci), FUZZ_MAX_LEN (default 65536 bytes per input),
# FUZZ_BUILD (default build-fuzz), JOBS (build jobs, default 2).
# Cost of --ci: the build (about 40 s on 2 cores from scratch) + 12 targets x FUZZ_SECONDS, so
# about 12 minutes with the default 60 s (measured: 274 s in all with FUZZ_SECONDS=20).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FUZZ_BUILD:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-60}
MAX_LEN=${FUZZ_MAX_LEN:-65536}
JOBS=${JOBS:-2}

all_targets() { for f in tests/fuzz/fuzz_*.c; do basename "$f" .c; done; }

mode=ci target="" secs=""
case "${1:-}" in
--ci) mode=ci ;;
--list) all_targets | sed 's/^fuzz_//'; exit 0 ;;
-h|--help|"") sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; [ -n "${1:-}" ] && exit 0; exit 2 ;;
-*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
*) mode=one; target="fuzz_${1#fuzz_}"; secs=${2:-600}
   [ -f "tests/fuzz/$target.c" ] || { echo "fuzz.sh: no target $1 (scripts/fuzz.sh --list)" >&2; exit 2; } ;;
esac

# clang with libFuzzer and the sanitizer runtimes
if ! command -v clang >/dev/null || ! dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q "install ok installed"; then
    echo "fuzz.sh: installing clang and libclang-rt-14-dev" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
fi

t0=$(date +%s)
cmake -S . -B "$BUILD" -DCMAKE_C_COMPILER=clang -DKILN_FUZZ=ON -DKILN_CUDA=OFF \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
if ! cmake --build "$BUILD" --target kiln_fuzz -j"$JOBS" >"$BUILD/fuzz-build.log" 2>&1; then
    tail -40 "$BUILD/fuzz-build.log" >&2
    echo "fuzz.sh: the build failed (log: $BUILD/fuzz-build.log)" >&2
    exit 1
fi
echo "fuzz.sh: built the targets in $(( $(date +%s) - t0 )) s" >&2

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
tmp=$(mktemp -d /tmp/kiln_fuzzsh_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
rows=()
fail=0

# run one target: $1 target, $2 seconds, $3 corpus folder written to, $4.. read-only seed folders
run_target() {
    local t=$1 s=$2 out=$3; shift 3
    local art="$BUILD/artifacts/$t/" log="$tmp/$t.log"
    mkdir -p "$art" "$out"
    local st=ok
    if ! "$BUILD/$t" -max_total_time="$s" -max_len="$MAX_LEN" -timeout=25 -rss_limit_mb=2048 \
         -print_final_stats=1 -artifact_prefix="$art" "$out" "$@" >"$log" 2>&1; then
        st=FAIL
        fail=1
        echo "fuzz.sh: $t failed; the report (artifacts in $art):" >&2
        grep -E -A40 "ERROR: |runtime error|SUMMARY|Test unit written" "$log" | head -80 >&2 || tail -40 "$log" >&2
    fi
    local runs rate cov0 cov1
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    rate=$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    cov0=$(grep -Eo '#[0-9]+[[:space:]]+INITED cov: [0-9]+' "$log" | grep -Eo '[0-9]+$' | head -1 || true)
    cov1=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+$' || true)
    local newcov="?"
    [ -n "$cov0" ] && [ -n "$cov1" ] && newcov="+$((cov1 - cov0)) (cov $cov1)"
    rows+=("$(printf '%-20s %10s %9s %-18s %s' "$t" "$runs" "$rate" "$newcov" "$st")")
}

if [ "$mode" = ci ]; then
    for t in $(all_targets); do
        run_target "$t" "$SECONDS_EACH" "$tmp/corpus/$t" "tests/fuzz/corpus/$t"
    done
else
    run_target "$target" "$secs" "tests/fuzz/corpus/$target"
fi

printf '\n%-20s %10s %9s %-18s %s\n' target runs execs/s "new coverage" status
for r in "${rows[@]}"; do echo "$r"; done
echo "fuzz.sh: $(( $(date +%s) - t0 )) s in all"
exit $fail
