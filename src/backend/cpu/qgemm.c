/* qgemm.c: the W x A8 product's common part (qgemm.h): activation quantization (one C
 * function for every ISA, so a row's q and dx are the same bits everywhere), the ISA lookup,
 * and the scalar reference kernel (qgemm.h's arithmetic written out; the SIMD kernels give
 * its bits). Compiled as ISO C: no FMA contraction, fmaf where the arithmetic has an fma. */
#include "backend/cpu/qgemm.h"
#include "backend/cpu/attention.h"
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include "format/quant.h"
#include "util/fp16.h"

#define KILN_Q8_BLK 32

static inline float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return kiln_f16_to_f32(h);
}

size_t kiln_q8act_bytes(int n_rows, int n) {
    size_t nb = (size_t)(n / KILN_Q8_BLK), q = ((size_t)n_rows * (size_t)n + 63) / 64 * 64;
    size_t rt = ((size_t)n_rows + 15) / 16 * 16; /* the tile-major copies' rows */
    return q + ((size_t)n_rows + rt) * nb * (2 * sizeof(float) + sizeof(int32_t)) + (size_t)n_rows * nb * 2 * sizeof(int32_t);
}

void kiln_q8act_init(kiln_q8act *a, void *mem, int n_rows, int n) {
    a->n = n;
    a->nb = n / KILN_Q8_BLK;
    a->n_rows = n_rows;
    a->q = mem;
    a->dx = (float *)(void *)((uint8_t *)mem + ((size_t)n_rows * (size_t)n + 63) / 64 * 64);
    a->sdx = a->dx + (size_t)n_rows * a->nb;
    a->qsum = (int32_t *)(void *)(a->sdx + (size_t)n_rows * a->nb);
    size_t rt = ((size_t)n_rows + 15) / 16 * 16;
    a->tdx = (float *)(void *)(a->qsum + (size_t)n_rows * a->nb);
    a->tsdx = a->tdx + rt * (size_t)a->nb;
    a->tqsum = (int32_t *)(void *)(a->tsdx + rt * (size_t)a->nb);
    a->qs16 = a->tqsum + rt * (size_t)a->nb;
}

void kiln_q8act_sums16(kiln_q8act *a, int r0, int r1) {
    for (int r = r0; r < r1; r++) {
        const int8_t *q = a->q + (size_t)r * a->n;
        int32_t *s = a->qs16 + (size_t)r * 2 * a->nb;
        for (int h = 0; h < 2 * a->nb; h++) {
            int32_t v = 0;
            for (int i = 0; i < 16; i++) v += q[16 * h + i];
            s[h] = v;
        }
    }
}

void kiln_q8act_tile(kiln_q8act *a, int r0, int r1) {
    const int nb = a->nb;
    for (int r = r0; r < r1; r++)
        for (int b = 0; b < nb; b++) {
            const size_t src = (size_t)r * nb + b, dst = ((size_t)(r / 16) * nb + b) * 16 + (size_t)(r % 16);
            a->tdx[dst] = a->dx[src];
            a->tsdx[dst] = a->sdx[src];
            a->tqsum[dst] = a->qsum[src];
        }
}

/* round half to even for |v| < 2^22: adding 1.5 * 2^23 leaves the integer part in the
 * mantissa's last bits (exact IEEE f32 arithmetic, no library call, same bits on every ISA) */
#define KILN_RNE_MAGIC 12582912.0f

void kiln_q8act_quantize(kiln_q8act *a, const float *x, size_t ldx, int r0, int r1) {
    const int nb = a->nb;
    for (int r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * ldx;
        int8_t *q = a->q + (size_t)r * a->n;
        for (int b = 0; b < nb; b++) {
            const float *xb = xr + KILN_Q8_BLK * b;
            float amax = 0.0f;
            for (int i = 0; i < KILN_Q8_BLK; i++) {
                float v = xb[i] < 0 ? -xb[i] : xb[i];
                amax = v > amax ? v : amax;
            }
            float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
            int s = 0;
            for (int i = 0; i < KILN_Q8_BLK; i++) {
                float v = (xb[i] * id + KILN_RNE_MAGIC) - KILN_RNE_MAGIC;
                int qi = (int)v;
                qi = qi > 127 ? 127 : qi < -127 ? -127 : qi;
                q[KILN_Q8_BLK * b + i] = (int8_t)qi;
                s += qi;
            }
            a->dx[(size_t)r * nb + b] = d;
            a->qsum[(size_t)r * nb + b] = s;
            a->sdx[(size_t)r * nb + b] = d * (float)s;
        }
    }
}

/* the SIMD kernels' transposed weights of one call's 16 columns: per block 8 x 64 bytes of
 * integers, 64 bytes of scales, 64 of offsets, and for Q6_K 3 x 64 bytes of sub-block scales
 * and offset corrections */
size_t kiln_qgemm_scratch_bytes(int n) { return (size_t)(n / KILN_Q8_BLK) * (8 * 64 + 5 * 64); }

static int blk_bytes(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_Q8_0: return 34;
    case KILN_DT_Q4_0: return 18;
    case KILN_DT_Q4_1: return 20;
    case KILN_DT_Q5_0: return 22;
    case KILN_DT_Q5_1: return 24;
    default: return 0;
    }
}

/* one block of dt -> its integers w[32] (offset applied), dw and mw (0 when none) */
static void unpack_block(kiln_dtype dt, const uint8_t *b, int w[32], float *dw, float *mw) {
    const uint8_t *qs;
    uint32_t qh = 0;
    int off = 0;
    *dw = h2f(b);
    *mw = 0.0f;
    switch (dt) {
    case KILN_DT_Q8_0:
        for (int i = 0; i < 32; i++) w[i] = (int8_t)b[2 + i];
        return;
    case KILN_DT_Q4_0: qs = b + 2; off = 8; break;
    case KILN_DT_Q4_1: qs = b + 4; *mw = h2f(b + 2); break;
    case KILN_DT_Q5_0:
        qs = b + 6;
        off = 16;
        qh = (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
        break;
    default: /* Q5_1 */
        qs = b + 8;
        *mw = h2f(b + 2);
        qh = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24;
        break;
    }
    for (int i = 0; i < 16; i++) {
        w[i] = ((qs[i] & 15) | (int)((qh >> i) & 1) << 4) - off;
        w[i + 16] = ((qs[i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4) - off;
    }
}

/* one K-quant super-block of dt (256 elements) -> its integers w[256] (Q6_K: q - 32), the 32-blocks'
 * dw[8] = d * sc and mw[8] = -(dmin * mn) (Q4_K / Q5_K: exact f32 products), or (Q6_K) d and
 * the 16-element sub-block scales sc16[16] */
static void unpack_kblock(kiln_dtype dt, const uint8_t *b, int w[256], float dw[8], float mw[8], int sc16[16]) {
    if (dt == KILN_DT_Q6_K) {
        const uint8_t *ql = b, *qh = b + 128;
        dw[0] = h2f(b + 208);
        for (int j = 0; j < 16; j++) sc16[j] = (int8_t)b[192 + j];
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++) {
                    int lo = ql[64 * h + l + 32 * (k & 1)], q = (k < 2 ? lo & 15 : lo >> 4) | ((qh[32 * h + l] >> (2 * k)) & 3) << 4;
                    w[128 * h + 32 * k + l] = q - 32;
                }
        return;
    }
    const float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *qh = b + 16, *qs = b + (dt == KILN_DT_Q5_K ? 48 : 16);
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        kiln_qk_scale_min(b + 4, j, &sc, &mn);
        dw[j] = d * (float)sc;
        mw[j] = -(dmin * (float)mn);
        for (int l = 0; l < 32; l++) {
            int q = j & 1 ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 15;
            if (dt == KILN_DT_Q5_K) q |= (qh[l] >> j & 1) << 4;
            w[32 * j + l] = q;
        }
    }
}

/* the K-quant reference (qgemm.h): per 32-block j of a super-block, Q4_K / Q5_K as Q4_1 with
 * dw = d * sc_j, mw = -(dmin * mn_j); Q6_K isum = sc_a * isum(first 16) + sc_b * isum(last 16)
 * (exact int32), acc = fma((float)isum, d * dx, acc) */
static void qgemm_scalar_k(kiln_dtype dt, const uint8_t *w, size_t ldw, int nc, const kiln_q8act *a, int r0, int r1,
                           float *y, size_t ldy) {
    const int nb = a->nb, bb = dt == KILN_DT_Q4_K ? 144 : dt == KILN_DT_Q5_K ? 176 : 210;
    for (int c = 0; c < nc; c++)
        for (int r = r0; r < r1; r++) {
            const int8_t *q = a->q + (size_t)r * a->n;
            const float *dx = a->dx + (size_t)r * nb, *sdx = a->sdx + (size_t)r * nb;
            const uint8_t *b = w + (size_t)c * ldw;
            float acc = 0.0f, macc = 0.0f;
            for (int k0 = 0; k0 < nb; k0 += 8, b += bb) {
                int wi[256], sc16[16];
                float dw[8], mw[8];
                unpack_kblock(dt, b, wi, dw, mw, sc16);
                for (int j = 0; j < 8; j++) {
                    const int k = k0 + j, *wj = wi + 32 * j;
                    const int8_t *qk = q + 32 * k;
                    int32_t s0 = 0, s1 = 0;
                    for (int i = 0; i < 16; i++) s0 += wj[i] * qk[i];
                    for (int i = 16; i < 32; i++) s1 += wj[i] * qk[i];
                    if (dt == KILN_DT_Q6_K) {
                        acc = fmaf((float)(sc16[2 * j] * s0 + sc16[2 * j + 1] * s1), dw[0] * dx[k], acc);
                    } else {
                        acc = fmaf((float)(s0 + s1), dw[j] * dx[k], acc);
                        macc = fmaf(mw[j], sdx[k], macc);
                    }
                }
            }
            y[(size_t)(r - r0) * ldy + c] = dt == KILN_DT_Q6_K ? acc : acc + macc;
        }
}

/* the reference: qgemm.h's arithmetic written out (fmaf: the fused operation, exactly) */
static void qgemm_scalar(kiln_dtype dt, const uint8_t *w, size_t ldw, int nc, const kiln_q8act *a, int r0, int r1,
                         float *y, size_t ldy, void *scratch) {
    (void)scratch;
    if (dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K || dt == KILN_DT_Q6_K) {
        qgemm_scalar_k(dt, w, ldw, nc, a, r0, r1, y, ldy);
        return;
    }
    const int nb = a->nb, bb = blk_bytes(dt), has_m = dt == KILN_DT_Q4_1 || dt == KILN_DT_Q5_1;
    for (int c = 0; c < nc; c++)
        for (int r = r0; r < r1; r++) {
            const int8_t *q = a->q + (size_t)r * a->n;
            const float *dx = a->dx + (size_t)r * nb, *sdx = a->sdx + (size_t)r * nb;
            const uint8_t *b = w + (size_t)c * ldw;
            float acc = 0.0f, macc = 0.0f;
            for (int k = 0; k < nb; k++, b += bb) {
                int wi[32];
                int32_t s = 0;
                float dw, mw;
                unpack_block(dt, b, wi, &dw, &mw);
                for (int i = 0; i < 32; i++) s += wi[i] * q[32 * k + i];
                acc = fmaf((float)s, dw * dx[k], acc);
                if (has_m) macc = fmaf(mw, sdx[k], macc);
            }
            y[(size_t)(r - r0) * ldy + c] = has_m ? acc + macc : acc;
        }
}

#define SCALAR_QGEMM(name, dt)                                                                   \
    static void name(const uint8_t *w, size_t ldw, int nc, const kiln_q8act *a, int r0, int r1, float *y, \
                     size_t ldy, void *scratch) {                                                 \
        qgemm_scalar(dt, w, ldw, nc, a, r0, r1, y, ldy, scratch);                                 \
    }
SCALAR_QGEMM(qg_q8_0, KILN_DT_Q8_0)
SCALAR_QGEMM(qg_q4_0, KILN_DT_Q4_0)
SCALAR_QGEMM(qg_q4_1, KILN_DT_Q4_1)
SCALAR_QGEMM(qg_q5_0, KILN_DT_Q5_0)
SCALAR_QGEMM(qg_q5_1, KILN_DT_Q5_1)
SCALAR_QGEMM(qg_q4_k, KILN_DT_Q4_K)
SCALAR_QGEMM(qg_q5_k, KILN_DT_Q5_K)
SCALAR_QGEMM(qg_q6_k, KILN_DT_Q6_K)

kiln_qgemm_fn kiln_qgemm_scalar(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_Q8_0: return qg_q8_0;
    case KILN_DT_Q4_0: return qg_q4_0;
    case KILN_DT_Q4_1: return qg_q4_1;
    case KILN_DT_Q5_0: return qg_q5_0;
    case KILN_DT_Q5_1: return qg_q5_1;
    case KILN_DT_Q4_K: return qg_q4_k;
    case KILN_DT_Q5_K: return qg_q5_k;
    case KILN_DT_Q6_K: return qg_q6_k;
    default: return NULL;
    }
}

#ifdef KILN_X86
#include <cpuid.h>
/* CPUID leaf 7: sub-leaf 0 ECX bit 11 = AVX512_VNNI, sub-leaf 1 EAX bit 4 = AVX-VNNI (the OS
 * saving the registers is already implied by the AVX2 / AVX-512 level being usable) */
int kiln_cpu_has_avx512vnni(void) {
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c >> 11 & 1);
}
int kiln_cpu_has_avxvnni(void) {
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 4 & 1);
}
#endif

#ifdef KILN_ARM64
#include <sys/auxv.h>
/* HWCAP_ASIMDDP (bit 20 of AT_HWCAP): the kernel's word on the dot-product extension */
int kiln_cpu_has_dotprod(void) { return (getauxval(AT_HWCAP) >> 20 & 1) != 0; }
#endif

#ifdef KILN_X86
/* the VNNI answers are facts of the CPU: asked once (CPUID traps on a VM, isa.c); returns
 * 1 + avx512vnni + 2 avxvnni */
static int vnni_bits(void) {
    static _Atomic int known; /* 0 unknown (an idempotent race) */
    int k = atomic_load_explicit(&known, memory_order_relaxed);
    if (!k) {
        k = 1 + kiln_cpu_has_avx512vnni() + 2 * kiln_cpu_has_avxvnni();
        atomic_store_explicit(&known, k, memory_order_relaxed);
    }
    return k;
}
#endif

/* the AVX-512 one lives in the VNNI kernels' file (compiled with that flag): handed out where
 * those kernels are */
kiln_q8act_quantize_fn kiln_cpu_q8act_quantize_lookup(kiln_isa isa) {
#ifdef KILN_X86
    if (kiln_isa_supported(isa) && isa == KILN_ISA_AVX512 && ((vnni_bits() - 1) & 1)) return kiln_q8act_quantize_avx512;
    if (kiln_isa_supported(isa) && (isa == KILN_ISA_AVX512 || isa == KILN_ISA_AVX2)) return kiln_q8act_quantize_avx2;
#endif
    (void)isa;
    return kiln_q8act_quantize;
}

#if defined(KILN_X86) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
/* CPUID leaf 7 sub-leaf 0: EDX bit 24 AMX-TILE, bit 25 AMX-INT8; XCR0 bits 17-18 (XTILECFG,
 * XTILEDATA): the OS manages the tile state; then Linux 5.16+ gives it to a process that asks
 * (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA = 18), or the first tile instruction faults. */
static int amx_detect(void) {
    unsigned a, b, c, d;
    if (!kiln_isa_supported(KILN_ISA_AVX512) || !kiln_cpu_has_avx512vnni()) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d >> 24 & 1) || !(d >> 25 & 1)) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c >> 27 & 1)) return 0; /* OSXSAVE: xgetbv works */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return 0;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18) == 0;
}
int kiln_cpu_has_amx(void) {
    static _Atomic int known; /* 0 unknown, 1 no, 2 yes (the grant is idempotent) */
    int k = atomic_load_explicit(&known, memory_order_relaxed);
    if (!k) {
        k = 1 + amx_detect();
        atomic_store_explicit(&known, k, memory_order_relaxed);
    }
    return k == 2;
}
kiln_qgemm_fn kiln_cpu_qgemm_lookup_amx(kiln_dtype dt) { return kiln_cpu_has_amx() ? kiln_qgemm_amx(dt) : NULL; }
/* the tiles (kiln_cpu_has_amx: the grant), CPUID 7.0 EDX bit 22 AMX-BF16 and 7.1 EAX bit 5
 * AVX512-BF16 (the conversions of attention_amx.c) */
int kiln_cpu_has_amx_bf16(void) {
    unsigned a, b, c, d;
    if (!kiln_cpu_has_amx() || !__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d >> 22 & 1)) return 0;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 5 & 1);
}
#else
int kiln_cpu_has_amx(void) { return 0; }
int kiln_cpu_has_amx_bf16(void) { return 0; }
kiln_qgemm_fn kiln_cpu_qgemm_lookup_amx(kiln_dtype dt) {
    (void)dt;
    return NULL;
}
#endif

size_t kiln_qgemm_packed_bytes(kiln_dtype dt, int n) { return (size_t)16 * kiln_dtype_row_bytes(dt, n); }

int kiln_cpu_qgemm_lookup_packed(kiln_dtype dt, kiln_isa isa, kiln_qgemm_pack_fn *pack, kiln_qgemm_packed_fn *fn,
                                 int *sums16) {
    *pack = NULL;
    *fn = NULL;
    if (sums16) *sums16 = 0;
    if (!kiln_isa_supported(isa)) return 0;
#ifdef KILN_X86
    int k = vnni_bits();
    int vnni512 = (k - 1) & 1, vnni256 = (k - 1) >> 1 & 1;
    if (isa == KILN_ISA_AVX512 && vnni512) {
        /* its Q6_K rows take -32 x the activations' 16-element sums (qgemm_tile.inc, rows_packed_q6;
         * the 256-bit kernels multiply signed q - 32 and need none) */
        if (sums16) *sums16 = dt == KILN_DT_Q6_K;
        return kiln_qgemm_avx512_packed(dt, pack, fn);
    }
    if (isa == KILN_ISA_AVX512 || isa == KILN_ISA_AVX2)
        return vnni256 ? kiln_qgemm_avxvnni_packed(dt, pack, fn) : kiln_qgemm_avx2_packed(dt, pack, fn);
#endif
    (void)dt;
    return 0;
}

kiln_qgemm_fn kiln_cpu_qgemm_lookup(kiln_dtype dt, kiln_isa isa) {
    if (!kiln_isa_supported(isa)) return NULL;
#ifdef KILN_X86
    int k = vnni_bits();
    int vnni512 = (k - 1) & 1, vnni256 = (k - 1) >> 1 & 1;
    if (isa == KILN_ISA_AVX512 && vnni512) return kiln_qgemm_avx512(dt);
    if (isa == KILN_ISA_AVX512 || isa == KILN_ISA_AVX2) return vnni256 ? kiln_qgemm_avxvnni(dt) : kiln_qgemm_avx2(dt);
#endif
#ifdef KILN_ARM64
    if (isa == KILN_ISA_NEON) {
        static _Atomic int known_dp; /* 0 unknown, 1 no, 2 yes */
        int d = atomic_load_explicit(&known_dp, memory_order_relaxed);
        if (!d) {
            d = 1 + kiln_cpu_has_dotprod();
            atomic_store_explicit(&known_dp, d, memory_order_relaxed);
        }
        return d == 2 ? kiln_qgemm_neondot(dt) : kiln_qgemm_neon(dt);
    }
#endif
    return kiln_qgemm_scalar(dt);
}
