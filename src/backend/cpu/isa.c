/* isa.c: which SIMD instruction set the CPU backend runs on.
 *
 * Detection on x86-64 uses __builtin_cpu_supports (libgcc also checks that the OS saves the
 * wide registers, via XGETBV). The levels:
 *   KILN_ISA_AVX2   = avx2 + fma + f16c                                        (x86-64 builds)
 *   KILN_ISA_AVX512 = avx512f + avx512bw + avx512vl + avx512dq (and the AVX2 level)
 *   KILN_ISA_NEON   = Advanced SIMD (ARMv8-A), with its f16 <-> f32 conversions and fused
 *                     multiply-add: architectural on aarch64, always there  (aarch64 builds)
 * Other builds have only the portable scalar path. The dot-product extension (sdot) is not a
 * level: the W x A8 kernels ask HWCAP_ASIMDDP themselves (qgemm.c).
 * The backend option cpu.isa (env KILN_CPU_ISA in the kiln command) = scalar|avx2|avx512|neon
 * (case-insensitive) forces a level; NULL or empty counts as unset, an unknown or unsupported
 * one is an error, never silently replaced. */
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include "backend/cpu/kernels.h"
#include "util/error.h"
#ifdef KILN_X86
#include <cpuid.h>

/* F16C straight from CPUID leaf 1 (ECX bit 29): clang before 16 refuses "f16c" as a
 * __builtin_cpu_supports feature name, and the fuzz build (scripts/fuzz.sh) uses Debian's
 * clang 14. AVX2 being usable already implies the OS saves the YMM registers F16C uses. */
static int isa_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

const char *kiln_isa_name(kiln_isa isa) {
    switch (isa) {
    case KILN_ISA_SCALAR: return "scalar";
    case KILN_ISA_AVX2: return "avx2";
    case KILN_ISA_AVX512: return "avx512";
    case KILN_ISA_NEON: return "neon";
    default: return "?";
    }
}

static int isa_detect(kiln_isa isa) {
    switch (isa) {
    case KILN_ISA_SCALAR: return 1;
#ifdef KILN_X86
    case KILN_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && isa_has_f16c();
    case KILN_ISA_AVX512:
        __builtin_cpu_init();
        return isa_detect(KILN_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq");
#endif
#ifdef KILN_ARM64
    /* architectural: the AArch64 ABI, and the compiler's code for any float, assume it */
    case KILN_ISA_NEON: return 1;
#endif
    default: return 0;
    }
}

/* The answer is a fact of the CPU, so it is detected once per level and kept: CPUID (behind
 * isa_has_f16c) traps to the hypervisor on a virtual machine, tens of microseconds, and the
 * kernel lookups (kiln_cpu_kernels_for) ask on every matmul and row op. Measured on the
 * 2-core VM: 40 % of a stories260K decode's CPU time was this CPUID (docs/perf-notes.md).
 * The cache is one immutable hardware property per level (0 unknown, 1 no, 2 yes), written
 * idempotently: a race only detects twice. */
int kiln_isa_supported(kiln_isa isa) {
    static _Atomic int known[KILN_ISA_COUNT];
    if ((unsigned)isa >= KILN_ISA_COUNT) return 0;
    int k = atomic_load_explicit(&known[isa], memory_order_relaxed);
    if (k == 0) {
        k = isa_detect(isa) ? 2 : 1;
        atomic_store_explicit(&known[isa], k, memory_order_relaxed);
    }
    return k == 2;
}

kiln_isa kiln_isa_best(void) {
    for (int i = KILN_ISA_COUNT - 1; i > KILN_ISA_SCALAR; i--)
        if (kiln_isa_supported((kiln_isa)i)) return (kiln_isa)i;
    return KILN_ISA_SCALAR;
}

static const char *isa_requirements(kiln_isa isa) {
    switch (isa) {
    case KILN_ISA_AVX2: return "avx2, fma and f16c";
    case KILN_ISA_AVX512: return "avx512f, avx512bw, avx512vl and avx512dq";
    case KILN_ISA_NEON: return "Advanced SIMD (an aarch64 CPU)";
    default: return "nothing";
    }
}

/* The architecture a level belongs to, and this build's: a level of another architecture has
 * no kernels here whatever the CPU. */
static const char *isa_arch(kiln_isa isa) {
    return isa == KILN_ISA_NEON ? "aarch64" : isa == KILN_ISA_SCALAR ? "any" : "x86-64";
}
static const char *build_arch(void) {
#if defined(KILN_X86)
    return "x86-64";
#elif defined(KILN_ARM64)
    return "aarch64";
#else
    return "portable (scalar only)";
#endif
}

int kiln_isa_select(const char *v, kiln_isa *isa, kiln_error *err) {
    kiln_isa best = kiln_isa_best();
    *isa = best;
    if (!v || !*v) return KILN_OK;
    int want = -1;
    for (int i = 0; i < KILN_ISA_COUNT; i++)
        if (strcasecmp(v, kiln_isa_name((kiln_isa)i)) == 0) want = i;
    if (want < 0)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                        "cpu.isa (KILN_CPU_ISA) = %s: unknown instruction set (expected scalar, avx2, avx512 or neon)",
                        v);
    if (!kiln_isa_supported((kiln_isa)want)) {
        if (strcmp(isa_arch((kiln_isa)want), build_arch()) != 0)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                            "cpu.isa (KILN_CPU_ISA) = %s: a level of %s CPUs, and this build is for %s "
                            "(best available here: %s)",
                            v, isa_arch((kiln_isa)want), build_arch(), kiln_isa_name(best));
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "cpu.isa (KILN_CPU_ISA) = %s: this CPU lacks %s (best available here: %s)", v,
                        isa_requirements((kiln_isa)want), kiln_isa_name(best));
    }
    *isa = (kiln_isa)want;
    return KILN_OK;
}
