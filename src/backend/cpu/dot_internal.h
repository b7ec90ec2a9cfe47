/* dot_internal.h: private glue between the dot-product files of the CPU backend.
 *
 * One dispatch: every ISA has one const table of its kernels (kiln_cpu_kernels below), defined
 * in its dot file (dot.c: scalar, dot_avx2.c, dot_avx512.c, dot_neon.c; the quant entries
 * point into quant_dot*.c), and kiln_cpu_kernels_for() in dot.c is the only place that picks a
 * table by ISA; every kiln_cpu_*_lookup goes through it. The x86 ISA files are compiled with
 * their own -m flags, so a table is handed out only when kiln_isa_supported() says yes (NEON
 * is the aarch64 baseline: its files need no flag).
 *
 * Accumulation order, per ISA (fixed, so a row's result never depends on nr or threads):
 *   scalar : 16 partial sums, element i -> sum i % 16, then a halving tree (8,4,2,1);
 *   avx2   : 4 x 8-lane accumulators, i -> acc[(i / 8) % 4] lane i % 8, FMA; the tail (< 32)
 *            is zero-padded into one more 32-element step; sum (a0+a1)+(a2+a3), then lanes
 *            hi128+lo128, then a fixed shuffle tree;
 *   avx512 : 4 x 16-lane accumulators, i -> acc[(i / 16) % 4] lane i % 16, FMA; the tail uses
 *            masked (zeroing) loads; same reduction shape as avx2 after folding 512 -> 256;
 *   neon   : 4 x 4-lane accumulators, i -> acc[(i / 4) % 4] lane i % 4, FMA; the tail (< 16)
 *            zero-padded into one more 16-element step; sum (a0+a1)+(a2+a3), then lanes
 *            (l0+l2) + (l1+l3). */
#ifndef KILN_CPU_DOT_INTERNAL_H
#define KILN_CPU_DOT_INTERNAL_H
#include <string.h>
#include "backend/cpu/kernels.h"
#include "util/fp16.h"
#include "util/fp8.h"

#define KILN_DOT_MAX_NR 4

/* The zero-padded tail of a dot whose vector step takes L elements (avx2: 32, neon: 16): weight
 * elements i .. i + m - 1 (m < L) as f32 into wt[0 .. m), and of each of the nr x rows (stride
 * ldx) into xt[r L .. r L + m); the rest of wt[L] and xt[nr][L] zero. The ISA file then runs one
 * more step over wt / xt as f32 weights: zeros add nothing, so the order is the full steps'. */
static inline void kiln_dot_tail_stage(const void *w, kiln_dtype dt, int i, int m, const float *x, size_t ldx, int nr,
                                       float *wt, float *xt, int L) {
    memset(wt, 0, (size_t)L * sizeof *wt);
    memset(xt, 0, (size_t)KILN_DOT_MAX_NR * L * sizeof *xt);
    if (dt == KILN_DT_F32) {
        memcpy(wt, (const float *)w + i, (size_t)m * 4);
    } else if (dt == KILN_DT_F8_E4M3) {
        for (int j = 0; j < m; j++) wt[j] = kiln_e4m3_to_f32(((const uint8_t *)w)[i + j]);
    } else {
        const uint16_t *h = (const uint16_t *)w + i;
        for (int j = 0; j < m; j++) wt[j] = dt == KILN_DT_BF16 ? kiln_bf16_to_f32(h[j]) : kiln_f16_to_f32(h[j]);
    }
    for (int r = 0; r < nr; r++) memcpy(xt + (size_t)r * L, x + (size_t)r * ldx + i, (size_t)m * 4);
}

/* The kernels of one ISA. A NULL entry: none on this ISA (the caller falls back or refuses). */
typedef struct kiln_cpu_kernels {
    kiln_isa isa;
    kiln_dot_fn dot[KILN_DT_COUNT];            /* f32 / f16 / bf16 weight rows (dot*.c) */
    kiln_dot_fn (*quant_dot)(kiln_dtype dt);   /* GGUF quant weight rows (quant_dot*.c) */
    kiln_dotw_fn (*quant_dotw)(kiln_dtype dt); /* their decode form (several weight rows) */
    kiln_deq_fn (*quant_deq)(kiln_dtype dt);   /* their prefill pair with tile / tile_phase */
    kiln_tile_fn tile;
    kiln_tile_phase_fn tile_phase;
    kiln_axpy_fn axpy;
    kiln_attn_kernels attn;
    void (*silu_mul)(float *out, const float *g, const float *u, int n); /* kiln_cpu_silu_mul_row */
} kiln_cpu_kernels;

/* The table of isa, or NULL when it is not built in or this CPU lacks it. */
const kiln_cpu_kernels *kiln_cpu_kernels_for(kiln_isa isa);

extern const kiln_cpu_kernels kiln_cpu_kernels_scalar;
kiln_dot_fn kiln_quant_dot_scalar(kiln_dtype dt);
#ifdef KILN_X86
extern const kiln_cpu_kernels kiln_cpu_kernels_avx2, kiln_cpu_kernels_avx512;
kiln_dot_fn kiln_quant_dot_avx2(kiln_dtype dt);
kiln_dot_fn kiln_quant_dot_avx512(kiln_dtype dt);
kiln_dotw_fn kiln_quant_dotw_avx2(kiln_dtype dt);
kiln_dotw_fn kiln_quant_dotw_avx512(kiln_dtype dt);
kiln_deq_fn kiln_quant_deq_avx512(kiln_dtype dt);
void kiln_quant_tile_avx512(const float *w, int nw, const float *x, size_t ldx, int nx, int n, float *out, size_t ldo);
void kiln_quant_tile_phase_avx512(const float *w, int nw, const float *x, size_t ldx, int nx, int n, int a, float *buf,
                                  float *out, size_t ldo);
void kiln_cpu_axpy_avx2(float *restrict o, const float *restrict v, float a, int n);
void kiln_cpu_axpy_avx512(float *restrict o, const float *restrict v, float a, int n);
void kiln_cpu_attn_qk_avx2(const float *k, int nk, const float *q, int G, int hd, float *s, size_t lds);
void kiln_cpu_attn_pv_avx2(float *o, const float *p, const float *v, int nv, int hd);
void kiln_cpu_attn_softmax_avx2(float *x, int n, float scale);
void kiln_cpu_attn_qk_avx512(const float *k, int nk, const float *q, int G, int hd, float *s, size_t lds);
void kiln_cpu_attn_pv_avx512(float *o, const float *p, const float *v, int nv, int hd);
void kiln_cpu_attn_pvg_avx512(float *o, size_t ldo, const float *p, size_t ldp, int G, const float *v, int nv,
                              int hd);
void kiln_cpu_attn_softmax_avx512(float *x, int n, float scale);
void kiln_cpu_silu_mul_avx512(float *out, const float *g, const float *u, int n);
#endif
#ifdef KILN_ARM64
extern const kiln_cpu_kernels kiln_cpu_kernels_neon;
kiln_dot_fn kiln_quant_dot_neon(kiln_dtype dt);
kiln_dotw_fn kiln_quant_dotw_neon(kiln_dtype dt);
#endif

#endif
