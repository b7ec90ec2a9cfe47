/* dot_internal.h: private glue between the dot-product files of the CPU backend.
 *
 * Each ISA file exposes one lookup returning its kiln_dot_fn for f32 / f16 / bf16 weights
 * (NULL for other dtypes); dot.c dispatches between them. The ISA files are compiled with
 * their own -m flags, so they are only called after kiln_isa_supported() said yes.
 *
 * Accumulation order, per ISA (fixed, so a row's result never depends on nr or threads):
 *   scalar : 16 partial sums, element i -> sum i % 16, then a halving tree (8,4,2,1);
 *   avx2   : 4 x 8-lane accumulators, i -> acc[(i / 8) % 4] lane i % 8, FMA; the tail (< 32)
 *            is zero-padded into one more 32-element step; sum (a0+a1)+(a2+a3), then lanes
 *            hi128+lo128, then a fixed shuffle tree;
 *   avx512 : 4 x 16-lane accumulators, i -> acc[(i / 16) % 4] lane i % 16, FMA; the tail uses
 *            masked (zeroing) loads; same reduction shape as avx2 after folding 512 -> 256. */
#ifndef KILN_CPU_DOT_INTERNAL_H
#define KILN_CPU_DOT_INTERNAL_H
#include "backend/cpu/kernels.h"

#define KILN_DOT_MAX_NR 4

kiln_dot_fn kiln_cpu_dot_scalar(kiln_dtype dt);
void kiln_cpu_axpy_scalar(float *restrict o, const float *restrict v, float a, int n);
#ifdef KILN_X86
kiln_dot_fn kiln_cpu_dot_avx2(kiln_dtype dt);
kiln_dot_fn kiln_cpu_dot_avx512(kiln_dtype dt);
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

#endif
