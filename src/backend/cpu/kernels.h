/* kernels.h: the CPU backend's ops (the numerical reference for every other backend).
 *
 * Rules that every op keeps:
 *   - f32 arithmetic and f32 accumulation; weights (f32/f16/bf16, GGUF quants) are read in
 *     place and converted in registers, never expanded to a full f32 copy (prefill expands a
 *     panel of rows at a time into per-thread scratch, the same values);
 *   - a row's result does not depend on how many rows are computed together, nor on the thread
 *     count (fixed reduction order per output element), so ragged batches are bit-exact;
 *   - the ISA (scalar / AVX2 / AVX-512 on x86-64, scalar / NEON on aarch64) is chosen at run time;
 *     cpu.isa (KILN_CPU_ISA) forces one. Paths agree within 1e-5 relative; each path is
 *     deterministic.
 */
#ifndef KILN_CPU_KERNELS_H
#define KILN_CPU_KERNELS_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "kiln.h"
#include "format/dtype.h"
#include "model/model.h"
#include "util/threads.h"

/* The levels of both architectures in one list (a build has the scalar level and its own
 * architecture's: x86-64 AVX2 / AVX512, aarch64 NEON); kiln_isa_best is the highest supported. */
typedef enum kiln_isa { KILN_ISA_SCALAR = 0, KILN_ISA_AVX2, KILN_ISA_AVX512, KILN_ISA_NEON, KILN_ISA_COUNT } kiln_isa;

const char *kiln_isa_name(kiln_isa isa);
/* Best ISA this CPU supports. */
kiln_isa kiln_isa_best(void);
int kiln_isa_supported(kiln_isa isa);
/* The ISA to use: want (kiln_cpu_options.isa: "scalar", "avx2", "avx512" or "neon", any case) if
 * supported, else (NULL or "") the best. An unknown or unsupported name is an error whose
 * message names the option and its variable (KILN_CPU_ISA). */
int kiln_isa_select(const char *want, kiln_isa *isa, kiln_error *err);

/* Per-backend context the ops run in. panel: optional per-thread scratch for the prefill
 * matmul path (thread t owns panel + t * panel_floats); NULL: that path is not used.
 * xperm: optional scratch for x in the long-row prefill path (rows * n_in <= xperm_floats). */
struct kiln_cpu_packs;
typedef struct kiln_cpu_ctx {
    kiln_isa isa;
    kiln_pool *pool;
    float *panel;
    size_t panel_floats;
    float *xperm;
    size_t xperm_floats;
    int act_q8;       /* 1: quantized weights of the qgemm types run W x A8 (qgemm.h): activations
                       * quantized to 8 bits per 32-element block, integer dot products; xperm
                       * then holds the quantized rows and panel the per-thread offsets */
    int amx;          /* 1: those products of 16+ rows on AMX-INT8 tiles (kiln_cpu_qgemm_lookup_amx) */
    const struct kiln_cpu_packs *packs; /* act_q8: weights packed for the W x A8 kernels
                       * (qpack.h), or NULL; matmul runs the packed kernel on those (with amx:
                       * products of fewer than 16 rows) */
    int panel_min_rows; /* f32 activations, quantized weights: products of at least this many
                       * rows (>= 2) dequantize panels once for all rows instead of running the
                       * dot kernels (the same bits); 0 = KILN_CPU_PANEL_MIN_ROWS */
} kiln_cpu_ctx;
#define KILN_CPU_PANEL_MIN_ROWS 32
/* act_q8 when cpu.act is unset. 0: on the default model the 8-bit activations move the logits
 * by 2-4e-2 relative L2 from the f32 reference (tests/py/test_gguf_logits.py bounds 1e-3 and
 * asks top-1 agreement), so W x A8 is opt-in until that bound is revisited */
#define KILN_CPU_ACT_Q8_DEFAULT 0

/* Dot-product kernel for one weight row of dtype dt against nr f32 activation rows, 1 <= nr <=
 * kiln_cpu_dot_max_rows(dt, isa) (4, or 6 for the quant types on AVX-512):
 *   out[r * ldo] = sum_i W[i] * x[r * ldx + i],  i in [0, n)
 * The per-element arithmetic is the same whatever nr is. */
typedef void (*kiln_dot_fn)(const void *wrow, const float *x, size_t ldx, int nr, int n,
                            float *out, size_t ldo);
/* Several weight rows against one activation row (decode): out[k] = W[k] . x for k < nw, row
 * k at wrow + k * ldw bytes. Bit-identical, row by row, to the kiln_dot_fn of the same (dtype,
 * isa) with nr = 1; the rows are done one after the other, sharing only the call. */
typedef void (*kiln_dotw_fn)(const void *wrow, size_t ldw, int nw, const float *x, int n, float *out);
/* The kiln_dotw_fn matching kiln_cpu_dot_lookup_quant(dt, isa), or NULL (then use that). */
kiln_dotw_fn kiln_cpu_dotw_lookup_quant(kiln_dtype dt, kiln_isa isa);
/* Prefill pair (quant dtypes whose dot kernel on isa supports it, else NULL and *tile NULL):
 *   deq:  nw weight rows (ldw bytes apart) -> f32 out[nw][n], the values the dot kernel uses;
 *   tile: out[r * ldo + k] = W[k] . x[r * ldx ..] for k < nw, r < nx (nw <= 4 and nx <= 6, or
 *         nw <= 6 and nx <= 4), W f32
 *         [nw][n] from deq; bit-identical per element to the dot kernel of (dt, isa), any nr. */
typedef void (*kiln_deq_fn)(const void *w, size_t ldw, int nw, int n, int perm, float *out);
typedef void (*kiln_tile_fn)(const float *w, int nw, const float *x, size_t ldx, int nx, int n, float *out,
                             size_t ldo);
/*         perm (n a multiple of 64): rows "phase-major", vector j (16 floats) of a row at
 *         (j % 4) * n / 4 + 16 * (j / 4), for phase;
 *   phase: the tile's accumulator chain a (0..3: the vectors j = a mod 4) only, over
 *         phase-major W and x rows (deq's perm; x rows ldx floats apart); called for
 *         a = 0, 1, 2, 3 in order with the same buf (per tile: 2 * nw * nx 64-byte aligned
 *         vectors, 16 floats each), it writes out at a = 3, with the tile's bits. */
typedef void (*kiln_tile_phase_fn)(const float *w, int nw, const float *x, size_t ldx, int nx, int n, int a,
                                   float *buf, float *out, size_t ldo);
kiln_deq_fn kiln_cpu_deq_lookup_quant(kiln_dtype dt, kiln_isa isa, kiln_tile_fn *tile, kiln_tile_phase_fn *phase);
/* NULL when (dt, isa) has no kernel; a quant dtype without a kernel on isa falls back to a
 * lower ISA only when not in strict mode (the caller decides). */
kiln_dot_fn kiln_cpu_dot_lookup(kiln_dtype dt, kiln_isa isa);
int kiln_cpu_dot_max_rows(kiln_dtype dt, kiln_isa isa);
/* Implemented by the quantized-types file (quant_dot*.c): NULL where unsupported. */
kiln_dot_fn kiln_cpu_dot_lookup_quant(kiln_dtype dt, kiln_isa isa);

/* o[i] += a * v[i] for i < n (attention's P.V). No reduction: each element is one multiply-add
 * (fused on AVX2/AVX-512/NEON, separate in scalar), so the result never depends on batching. */
typedef void (*kiln_axpy_fn)(float *restrict o, const float *restrict v, float a, int n);
kiln_axpy_fn kiln_cpu_axpy_lookup(kiln_isa isa);

/* Attention kernels of one ISA. Over a run of nk consecutive KV rows (contiguous, [nk][hd]),
 * G query heads:
 *   qk: s[i * lds + j] = k_j . q_i   (q: [G][hd]) in an order fixed per (ISA, hd) that depends
 *       on nothing but k_j and q_i: not on nk, G, or where the run starts (scalar, and
 *       head_dims other than 64: the f32 dot kernel of the ISA; AVX-512 at hd 64: lane l of 16
 *       is fma(k[48+l]q[48+l], fma(.., fma(.., k[l]q[l]))), then the halving tree l + l+8,
 *       l + l+4, l + l+2, l + l+1, 16 keys reduced together; AVX2 at hd 64: the same with 8
 *       lanes, an fma chain of 8 and a tree of 3 levels, 8 keys together; NEON at any hd that
 *       is a multiple of 4 (others: its dot kernel): lane l of 4 is the fma chain over
 *       k[4c+l]q[4c+l], c = 0 .. hd/4-1 in order from 0, then (l0 + l1) + (l2 + l3), 4 keys
 *       reduced together)
 *   pv: o[d] = fma(p[j], v_j[d], o[d]) for j in order (same bits as nv axpy calls)
 * and softmax: x[j] = softmax(scale * x)[j], j < n, with an order fixed for a given n (scalar:
 * expf and a sequential sum; AVX2 / AVX-512 / NEON: a vector exp of about 1 ulp and 8 / 16 / 4
 * partial sums). */
typedef void (*kiln_attn_qk_fn)(const float *k, int nk, const float *q, int G, int hd, float *s, size_t lds);
typedef void (*kiln_attn_pv_fn)(float *o, const float *p, const float *v, int nv, int hd);
typedef void (*kiln_attn_softmax_fn)(float *x, int n, float scale);
/* pvg: pv for G heads over the same values (o_i = o + i * ldo, p_i = p + i * ldp), per head
 * the bits of pv; NULL: call pv per head. */
typedef void (*kiln_attn_pvg_fn)(float *o, size_t ldo, const float *p, size_t ldp, int G, const float *v, int nv,
                                 int hd);
/* widen: dst[i] = the f32 value of the 16-bit src[i] (bf16 != 0: bfloat16, else IEEE half),
 * exact (a 16-bit KV pool's runs, widened before qk / pv) */
typedef void (*kiln_attn_widen_fn)(const uint16_t *src, float *dst, int n, int bf16);
/* narrow: dst[i] = src[i] rounded to nearest even in f16 (bf16 != 0: bfloat16), the bits of
 * kiln_f32_to_f16 / kiln_f32_to_bf16 for every non-NaN input (a 16-bit KV pool's writes) */
typedef void (*kiln_attn_narrow_fn)(const float *src, uint16_t *dst, int n, int bf16);
/* qk16 / pvg16: qk and pvg reading f16 / bf16 keys / values directly (widened in registers):
 * the bits of widen then qk / pvg, at head_dim <= 256; NULL (or a larger head): the caller
 * widens each run first */
typedef void (*kiln_attn_qk16_fn)(const uint16_t *k, int bf16, int nk, const float *q, int G, int hd, float *s,
                                  size_t lds);
typedef void (*kiln_attn_pvg16_fn)(float *o, size_t ldo, const float *p, size_t ldp, int G, const uint16_t *v, int bf16,
                                   int nv, int hd);
typedef struct kiln_attn_kernels {
    kiln_attn_qk_fn qk;
    kiln_attn_pv_fn pv;
    kiln_attn_softmax_fn softmax;
    kiln_attn_pvg_fn pvg;
    kiln_attn_widen_fn widen;
    kiln_attn_narrow_fn narrow;
    kiln_attn_qk16_fn qk16;
    kiln_attn_pvg16_fn pvg16;
} kiln_attn_kernels;
/* 0, or -1 where isa is not supported. */
int kiln_cpu_attn_lookup(kiln_isa isa, kiln_attn_kernels *k);


/* y[r][o] = sum_i x[r][i] * W[o][i]
 *   x: [n_rows][n_in] f32 (row stride n_in), W: tensor [n_out][n_in], y: [n_rows][n_out].
 * Threads split the output columns; each element is one kiln_dot_fn call (same order always),
 * or with >= 3 rows and c->panel the prefill tile (kiln_deq_fn / kiln_tile_fn), same bits.
 * No allocation. (dtype, c->isa) without a kernel is KILN_ERR_UNSUPPORTED: no silent fallback
 * (a quant ISA fallback is the caller's choice, made at load time via kiln_cpu_dot_lookup). */
int kiln_cpu_matmul(kiln_cpu_ctx *c, float *y, const float *x, int n_rows, const kiln_tensor *w,
                    kiln_error *err);

/* The same product for n (<= 4) weights of equal n_in sharing x (e.g. Wq, Wk, Wv): one pool
 * job; y[i] = x W[i]^T, each element bit-identical to a kiln_cpu_matmul of W[i] alone. */
int kiln_cpu_matmul_multi(kiln_cpu_ctx *c, int n, float *const *y, const float *x, int n_rows,
                          const kiln_tensor *const *w, kiln_error *err);
/* The FFN's first half in one pool job: out[r][i] = silu(x Wg^T)[r][i] * (x Wu^T)[r][i]
 * (kiln_cpu_silu_mul of the two products); up: [n_rows][n_out] scratch. Bit-identical to two
 * kiln_cpu_matmul calls followed by kiln_cpu_swiglu. */
int kiln_cpu_matmul_swiglu(kiln_cpu_ctx *c, float *out, float *up, const float *x, int n_rows,
                           const kiln_tensor *w_gate, const kiln_tensor *w_up, kiln_error *err);

/* silu(g) * u, as torch's silu: the one expression both SwiGLU paths use. */
static inline float kiln_cpu_silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }
/* out[i] = silu(g[i]) * u[i], i < n, as every SwiGLU of the ISA computes it (scalar, AVX2:
 * kiln_cpu_silu_mul; AVX-512: the same expression over a vector exp of about 1 ulp); each
 * element's bits depend only on g[i], u[i] and the ISA. out may alias g. */
void kiln_cpu_silu_mul_row(kiln_isa isa, float *out, const float *g, const float *u, int n);

/* x[i] += y[i], i < n (the residual adds; threads split the range). */
void kiln_cpu_add(kiln_cpu_ctx *c, float *x, const float *y, int64_t n);

/* out[r] = x[r] * w / sqrt(mean(x[r]^2) + eps), n_rows rows of n. out may alias x. */
void kiln_cpu_rmsnorm(kiln_cpu_ctx *c, float *out, const float *x, const float *w, int n_rows, int n,
                      float eps);

/* RoPE in place on x: [n_rows][n_heads][head_dim] with positions pos[n_rows].
 * Angles: pos * theta^(-2i/head_dim), computed in double precision, sin/cos in double.
 * (HF computes inv_freq and the angle in float32: kiln is more accurate and differs from HF
 * by up to ~1e-2 rad at positions ~1e5; see ops.c.) */
void kiln_cpu_rope(float *x, const int32_t *pos, int n_rows, int n_heads, int head_dim,
                   double theta, kiln_rope_style style);

/* kiln_cpu_rope in two halves, the same bits: the angles' cos / sin once per step,
 * cs, sn: [n_rows][head_dim / 2] (double), then applied to q and k (threads split rows). */
void kiln_cpu_rope_angles(double *cs, double *sn, const int32_t *pos, int n_rows, int head_dim, double theta);
void kiln_cpu_rope_apply(kiln_cpu_ctx *c, float *x, const double *cs, const double *sn, int n_rows, int n_heads,
                         int head_dim, kiln_rope_style style);
/* The angles from a model's inverse frequencies inv[half] (kiln_rope_inv_freq: RoPE scaling),
 * cos and sin times mscale (YaRN's attention factor; 1 otherwise). With the default inv and
 * mscale 1 the same bits as kiln_cpu_rope_angles. */
void kiln_cpu_rope_angles_inv(double *cs, double *sn, const int32_t *pos, int n_rows, int half, const double *inv,
                              double mscale);
/* x[r][i] += b[i] (projection biases), n_rows rows of n. */
void kiln_cpu_add_bias(float *x, const float *b, int n_rows, int n);

/* out[r][i] = silu(gate[r][i]) * up[r][i]; out may alias gate. */
void kiln_cpu_swiglu(kiln_cpu_ctx *c, float *out, const float *gate, const float *up, int n_rows, int n);

/* Numerically stable in-place softmax of n values. */
void kiln_cpu_softmax(float *x, int n);

#endif
