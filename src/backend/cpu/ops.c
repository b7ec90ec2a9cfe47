/* ops.c: the CPU backend's element-wise and row-wise ops: RMSNorm, RoPE, SwiGLU, softmax.
 *
 * These are O(n) per row next to the O(n^2) matmuls, so they are portable C (the compiler
 * may vectorise the independent-lane loops; without -ffast-math that never changes a bit)
 * and give the same bits on every ISA. Reductions use 16 f32 partial sums (element i ->
 * s[i % 16]) folded by a halving tree, the same order every time. Row-parallel ops use the
 * pool only when a call is large enough to pay for the wake-up; a row's result never depends
 * on the thread count.
 *
 * RoPE precision: angles are pos * theta^(-2i/hd) with inv_freq, the angle, sin and cos and
 * the rotation itself in double, rounded once to f32. HF transformers (LlamaRotaryEmbedding /
 * MistralRotaryEmbedding) instead computes inv_freq = 1 / theta^(arange(0, hd, 2) / hd) in
 * float32 and freqs = inv_freq * pos in float32, then cos/sin in float32: at pos ~1e5 its
 * angles carry absolute errors up to ~1e-2 rad (f32 spacing near 1e5 is 0.0078), so kiln
 * deliberately differs from HF by that much at long contexts and agrees to ~1e-6 relative at
 * short ones (pos < ~1000). kiln is the accurate one; the tests check it against a long
 * double reference at positions up to 131072 with theta 1e4 and 1e9. */
#include <math.h>
#include "backend/cpu/dot_internal.h"

#define PAR_MIN_ELEMS (1 << 16) /* fewer elements per call: stay on the calling thread */
#define ROPE_CHUNK 64           /* frequency pairs per stack chunk (no allocation, any head_dim) */

static inline int split_lo(int n, int ith, int nth) { return (int)((int64_t)n * ith / nth); }

static void run_rows(kiln_cpu_ctx *c, int64_t elems, kiln_pool_fn fn, void *job) {
    if (c && c->pool && kiln_pool_size(c->pool) > 1 && elems >= PAR_MIN_ELEMS)
        kiln_pool_run(c->pool, fn, job);
    else
        fn(job, 0, 1);
}

/* ---- residual add ------------------------------------------------------------------------ */

typedef struct { float *x; const float *y; int64_t n; } add_job;

static void add_run(void *ctx, int ith, int nth) {
    const add_job *j = ctx;
    for (int64_t i = j->n * ith / nth; i < j->n * (ith + 1) / nth; i++) j->x[i] += j->y[i];
}

void kiln_cpu_add(kiln_cpu_ctx *c, float *x, const float *y, int64_t n) {
    if (n <= 0) return;
    add_job j = {x, y, n};
    run_rows(c, n, add_run, &j);
}

/* ---- RMSNorm ---------------------------------------------------------------------------- */

typedef struct { float *out; const float *x, *w; int n_rows, n; float eps; } rms_job;

static float sum_squares(const float *x, int n) {
    float s[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) s[j] += x[i + j] * x[i + j];
    for (; i < n; i++) s[i & 15] += x[i] * x[i];
    for (int h = 8; h >= 1; h >>= 1)
        for (int j = 0; j < h; j++) s[j] += s[j + h];
    return s[0];
}

static void rms_run(void *ctx, int ith, int nth) {
    const rms_job *j = ctx;
    for (int r = split_lo(j->n_rows, ith, nth); r < split_lo(j->n_rows, ith + 1, nth); r++) {
        const float *x = j->x + (size_t)r * j->n;
        float *o = j->out + (size_t)r * j->n;
        /* HF LlamaRMSNorm in f32: x * rsqrt(mean(x^2) + eps), then weight * that */
        float mean = sum_squares(x, j->n) / (float)j->n;
        float inv = 1.0f / sqrtf(mean + j->eps);
        for (int i = 0; i < j->n; i++) o[i] = j->w[i] * (x[i] * inv);
    }
}

void kiln_cpu_rmsnorm(kiln_cpu_ctx *c, float *out, const float *x, const float *w, int n_rows, int n,
                      float eps) {
    if (n_rows <= 0 || n <= 0) return;
    rms_job j = {out, x, w, n_rows, n, eps};
    run_rows(c, (int64_t)n_rows * n, rms_run, &j);
}

/* ---- RoPE ------------------------------------------------------------------------------- */

void kiln_cpu_rope(float *x, const int32_t *pos, int n_rows, int n_heads, int head_dim,
                   double theta, kiln_rope_style style) {
    const int half = head_dim / 2;
    double inv[ROPE_CHUNK], cs[ROPE_CHUNK], sn[ROPE_CHUNK];
    for (int i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
        int cnt = half - i0 < ROPE_CHUNK ? half - i0 : ROPE_CHUNK;
        for (int k = 0; k < cnt; k++) /* theta^(-2i/hd) == 1 / theta^((2i)/hd), as HF writes it */
            inv[k] = 1.0 / pow(theta, (double)(2 * (i0 + k)) / (double)head_dim);
        for (int r = 0; r < n_rows; r++) {
            double p = (double)pos[r];
            for (int k = 0; k < cnt; k++) {
                double a = p * inv[k];
                cs[k] = cos(a);
                sn[k] = sin(a);
            }
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((size_t)r * n_heads + h) * head_dim;
                if (style == KILN_ROPE_INTERLEAVED) {
                    for (int k = 0; k < cnt; k++) {
                        int i = i0 + k;
                        double a = v[2 * i], b = v[2 * i + 1];
                        v[2 * i] = (float)(a * cs[k] - b * sn[k]);
                        v[2 * i + 1] = (float)(b * cs[k] + a * sn[k]);
                    }
                } else {
                    for (int k = 0; k < cnt; k++) {
                        int i = i0 + k;
                        double a = v[i], b = v[i + half];
                        v[i] = (float)(a * cs[k] - b * sn[k]);
                        v[i + half] = (float)(b * cs[k] + a * sn[k]);
                    }
                }
            }
        }
    }
}

void kiln_cpu_rope_angles(double *cs, double *sn, const int32_t *pos, int n_rows, int head_dim, double theta) {
    const int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        double inv = 1.0 / pow(theta, (double)(2 * i) / (double)head_dim); /* as kiln_cpu_rope */
        for (int r = 0; r < n_rows; r++) {
            double a = (double)pos[r] * inv;
            cs[(size_t)r * half + i] = cos(a);
            sn[(size_t)r * half + i] = sin(a);
        }
    }
}

void kiln_cpu_rope_angles_inv(double *cs, double *sn, const int32_t *pos, int n_rows, int half, const double *inv,
                              double mscale) {
    for (int i = 0; i < half; i++)
        for (int r = 0; r < n_rows; r++) {
            double a = (double)pos[r] * inv[i];
            cs[(size_t)r * half + i] = cos(a) * mscale;
            sn[(size_t)r * half + i] = sin(a) * mscale;
        }
}

/* ---- biases ------------------------------------------------------------------------------ */

void kiln_cpu_add_bias(float *x, const float *b, int n_rows, int n) {
    for (int r = 0; r < n_rows; r++)
        for (int i = 0; i < n; i++) x[(size_t)r * n + i] += b[i];
}

typedef struct {
    float *x;
    const double *cs, *sn;
    int n_rows, n_heads, head_dim;
    kiln_rope_style style;
} rope_job;

static void rope_run(void *ctx, int ith, int nth) {
    const rope_job *j = ctx;
    const int half = j->head_dim / 2;
    for (int r = split_lo(j->n_rows, ith, nth); r < split_lo(j->n_rows, ith + 1, nth); r++) {
        const double *cs = j->cs + (size_t)r * half, *sn = j->sn + (size_t)r * half;
        for (int h = 0; h < j->n_heads; h++) {
            float *v = j->x + ((size_t)r * j->n_heads + h) * j->head_dim;
            if (j->style == KILN_ROPE_INTERLEAVED) {
                for (int i = 0; i < half; i++) {
                    double a = v[2 * i], b = v[2 * i + 1];
                    v[2 * i] = (float)(a * cs[i] - b * sn[i]);
                    v[2 * i + 1] = (float)(b * cs[i] + a * sn[i]);
                }
            } else {
                for (int i = 0; i < half; i++) {
                    double a = v[i], b = v[i + half];
                    v[i] = (float)(a * cs[i] - b * sn[i]);
                    v[i + half] = (float)(b * cs[i] + a * sn[i]);
                }
            }
        }
    }
}

void kiln_cpu_rope_apply(kiln_cpu_ctx *c, float *x, const double *cs, const double *sn, int n_rows, int n_heads,
                         int head_dim, kiln_rope_style style) {
    if (n_rows <= 0) return;
    rope_job j = {x, cs, sn, n_rows, n_heads, head_dim, style};
    run_rows(c, (int64_t)n_rows * n_heads * head_dim, rope_run, &j);
}

/* ---- SwiGLU ----------------------------------------------------------------------------- */

/* kiln_cpu_silu_mul_row: in dot.c, through the ISA's kernel table */

typedef struct { float *out; const float *g, *u; int64_t n; kiln_isa isa; } swiglu_job;

static void swiglu_run(void *ctx, int ith, int nth) {
    const swiglu_job *j = ctx;
    int64_t lo = j->n * ith / nth, hi = j->n * (ith + 1) / nth;
    for (int64_t i = lo; i < hi; i += 1 << 20) {
        int m = hi - i < (1 << 20) ? (int)(hi - i) : 1 << 20;
        kiln_cpu_silu_mul_row(j->isa, j->out + i, j->g + i, j->u + i, m);
    }
}

void kiln_cpu_swiglu(kiln_cpu_ctx *c, float *out, const float *gate, const float *up, int n_rows, int n) {
    if (n_rows <= 0 || n <= 0) return;
    /* c may be NULL (single-threaded use, e.g. reference checks): the best ISA then */
    swiglu_job j = {out, gate, up, (int64_t)n_rows * n, c ? c->isa : kiln_isa_best()};
    run_rows(c, j.n, swiglu_run, &j);
}

/* ---- softmax ---------------------------------------------------------------------------- */

void kiln_cpu_softmax(float *x, int n) {
    if (n <= 0) return;
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float s[16] = {0};
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s[i & 15] += x[i];
    }
    for (int h = 8; h >= 1; h >>= 1)
        for (int j = 0; j < h; j++) s[j] += s[j + h];
    for (int i = 0; i < n; i++) x[i] /= s[0];
}
