#!/usr/bin/env bash
# test_arm.sh: the CPU kernel tests on aarch64, cross-built with Debian's gcc-aarch64-linux-gnu
# and run under qemu-aarch64 (user mode): correctness of the NEON paths, not their speed (the
# NEON ISA level of the dense / quant dot, axpy and attention kernels, dot_neon.c and
# quant_dot_neon.c, checked against the scalar kernels by test_cpu_kernels and the tests that
# loop over ISAs; the W x A8 kernels qgemm_neon*.c by test_cpu_qgemm).
#   - builds build-arm/: every source of src/util, src/format and src/backend/cpu that compiles
#     without third-party -dev libraries (no arm64 jansson / pcre2 / openssl here; the x86
#     files are left out, the NEON ones are in) into one static library, then each test of
#     TESTS against it (the linker takes only the objects a test needs);
#   - runs each under `qemu-aarch64 -cpu max` (NEON + the dot-product extension: the sdot
#     kernels) and `-cpu cortex-a57` (ARMv8.0 NEON, no dotprod: the plain NEON kernels, and
#     the NEON level on the oldest ARMv8 core), the second only where the test has a
#     NEON-specific path (QEMU_CPUS below).
# Installs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user with apt-get (as root or
# through sudo) when missing. Prints each run's time; exit 1 when any test failed.
# ARM_TESTS="test_cpu_qgemm" limits the tests; ARM_CC overrides the compiler.
set -uo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
CC=${ARM_CC:-aarch64-linux-gnu-gcc}
# (test_quantize: Debian 12's aarch64 gcc 12 stops with an internal compiler error on it)
TESTS=${ARM_TESTS:-test_cpu_kernels test_cpu_qgemm test_cpu_ops test_cpu_attention test_fp8 test_threads test_gguf}
OUT=build-arm

need=()
command -v "$CC" >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
    echo "test_arm.sh: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null || exit 1
fi
SYSROOT=/usr/aarch64-linux-gnu

CFLAGS=(-std=c11 -O2 -D_GNU_SOURCE -DKILN_ARM64=1 -Wall -Wextra -Wno-unused-parameter -fno-math-errno
        -Iinclude -Isrc -Itests/c)
mkdir -p "$OUT/obj"
srcs=$(ls src/util/*.c src/format/*.c src/backend/cpu/*.c | grep -v -E '_(avx2|avx512|avxvnni)\.c$')
objs=() skipped=()
pids=()
for s in $srcs; do
    o="$OUT/obj/$(echo "$s" | tr / _).o"
    flags=()
    case "$s" in
    *_neondot.c) flags=(-march=armv8.2-a+dotprod) ;;
    */dot_neon.c | */quant_dot_neon.c) flags=(-fno-schedule-insns) ;; # as CMakeLists.txt: no spills
    esac
    # third-party headers are absent for aarch64: such a file does not compile and is left out
    if [ ! -f "$o" ] || [ "$s" -nt "$o" ] || [ -n "$(find src tests/c -name '*.h' -newer "$o" -o -name '*.inc' -newer "$o" | head -1)" ]; then
        if "$CC" "${CFLAGS[@]}" "${flags[@]}" -c "$s" -o "$o" 2>"$o.err"; then :; else rm -f "$o"; fi
    fi
    if [ -f "$o" ]; then objs+=("$o"); else skipped+=("$s"); fi
done
echo "test_arm.sh: $CC, ${#objs[@]} objects; left out (third-party headers): ${skipped[*]:-none}"
rm -f "$OUT/libkiln_arm.a"
aarch64-linux-gnu-ar rcs "$OUT/libkiln_arm.a" "${objs[@]}" || exit 1

declare -A QEMU_CPUS=([test_cpu_qgemm]="max cortex-a57" [test_cpu_kernels]="max cortex-a57")
fail=0
printf '%-22s %-12s %-6s %6s\n' test cpu result seconds
for t in $TESTS; do
    if ! "$CC" "${CFLAGS[@]}" "tests/c/$t.c" "$OUT/libkiln_arm.a" -lm -lpthread -o "$OUT/$t" 2>"$OUT/$t.err"; then
        echo "test_arm.sh: $t does not build for aarch64:"; cat "$OUT/$t.err"; fail=1; continue
    fi
    for cpu in ${QEMU_CPUS[$t]:-max}; do
        s=$(date +%s.%N)
        KILN_SHARED="${KILN_SHARED:-$PWD/../shared}" qemu-aarch64 -cpu "$cpu" -L "$SYSROOT" "$OUT/$t" >"$OUT/$t.$cpu.log" 2>&1
        rc=$?
        res=ok
        [ $rc -eq 77 ] && res=skip
        [ $rc -ne 0 ] && [ $rc -ne 77 ] && res=FAIL && fail=1
        printf '%-22s %-12s %-6s %6.1f\n' "$t" "$cpu" "$res" "$(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN{print b - a}')"
        [ "$res" = FAIL ] && tail -20 "$OUT/$t.$cpu.log"
        grep -h '^kernels:' "$OUT/$t.$cpu.log" | sed 's/^/    /'
    done
done
echo "test_arm.sh: $([ $fail -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - t0 )) s"
exit $fail
