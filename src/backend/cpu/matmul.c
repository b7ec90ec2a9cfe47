/* matmul.c: y[r][o] = dot(W[o], x[r]) on the CPU, for one weight or several sharing x.
 *
 *   x: [n_rows][n_in] f32, W: [n_out][n_in] (any dtype with a kiln_dot_fn), y: [n_rows][n_out]
 *
 * Work split: the output columns of all the weights of a call (e.g. Wq, Wk, Wv) form one
 * column space, cut into one contiguous range per thread (plus the few leftover columns in
 * small tasks); threads claim tasks as they get free, so a thread that is late (descheduled on
 * a busy machine) only costs the tasks it actually took: the caller runs the rest. Measured at
 * 2 threads: one range per thread decodes 1.2-1.5x faster than 4 or 8 tasks per thread, and
 * 10 % faster than 75-90 % in big ranges + small balancing tasks (each range is one long
 * contiguous stream for the hardware prefetcher; every claim moves a cache line).
 * Inside a task, for the columns [o0, o1) it covers in each weight, the loop is
 *   for each chunk of those columns (~32 KB of weights; the whole range for 1 row)
 *     for each group of <= 4 (6) rows of x      (6 x n_in floats: stays in L1)
 *       for o in the chunk: one kiln_dot_fn call (the first group prefetching the weights)
 * so for decode each weight row streams from memory exactly once per step (I4), later row
 * groups read it from L1, and the x group is re-used from L1 by every weight row of the chunk. Each output element
 * is exactly one dot call on one weight row and one x row, whose result does not depend on
 * the group size, so y is bit-identical whatever the thread count, the task split and the
 * batch composition (I5/I6).
 * Prefill (>= 32 rows, quant types with a kiln_deq_fn, c->panel set): the panel path instead
 * (mm_task_panel): per panel of the task's weight rows, dequantized once into the thread's f32
 * scratch, a 4 x 6 register tile runs one accumulator phase at a time (rows longer than
 * PHASE_MIN_N: phase-major panel and x, the phase loop outside the tile loop); each element
 * has the dot kernel's bits (test_cpu_batch), so the same invariance holds.
 * kiln_cpu_matmul_swiglu fuses the FFN's gate and up products with SwiGLU: a task computes
 * gate and up for its columns of a row group, then silu(gate) * up in place
 * (kiln_cpu_silu_mul_row of the ISA, as kiln_cpu_swiglu).
 * FP8 weights (F8_E4M3 with a kiln_quant, format/tensor.h, the math spelled out there): the
 * ISA's dot_f8 kernel (E4M3 codes, unscaled) per output, per block_in group with block scales,
 * times (s_a * s_w); with quantized activations (W8A8) each task first rounds its x group to
 * E4M3 values (kiln_fp8_act_q: per token, or per token and group, or the static input scale)
 * into the thread's scratch (c->panel, free on this path), so every task derives the same
 * activation values and a row's result is still independent of the batch and the split.
 * Small products run on the calling thread (a pool wake-up would cost more than the work).
 * No allocation. */
#include "backend/cpu/dot_internal.h"
#include "backend/cpu/prefetch.h"
#include "backend/cpu/qgemm.h"
#include "backend/cpu/qpack.h"
#include <math.h>
#include <string.h>
#include "util/error.h"
#include "util/fp8.h"

#define SERIAL_MACS (1u << 16) /* below this many multiply-adds: no threads */
#define MIN_TASK_COLS 16
#define MAX_PARTS 4
#define MAX_TASKS 256
/* the panel path: its register tile (weight rows x activation rows), and the longest rows it
 * takes (longer: x group + streaming weight rows overflow L1, and the dot path was faster,
 * 92 against 76 GMAC/s on one core at n_in = 1536) */
#define TILE_W 4
#define TILE_X 6
#define PANEL_MAX_N 4096
#define PHASE_MIN_N 1024
#define PANEL_TARGET_FLOATS (64u * 1024u) /* 256 KB of f32 weights per panel (L2); 2 threads,
                                           * 4 x 6 tile: 128 KB 190 / 173 GMAC/s (576- / 1536-wide
                                           * rows), 192 KB 205 / 205, 256 KB 206 / 213, 384 KB
                                           * 205 / 213 */

#define DOT_CHUNK_BYTES (32u * 1024u) /* the f32 path's column chunk over several row groups (L1) */

typedef struct mm_part {
    kiln_dot_fn fn;
    kiln_dotw_fn fnw; /* the same kernel over consecutive weight rows (1 x row), or NULL */
    const uint8_t *w; /* [n_out][row_bytes] */
    size_t row_bytes;
    float *y;         /* [n_rows][n_out] */
    int n_out;
    int off;          /* first column of this part in the call's column space */
    kiln_deq_fn deq;  /* prefill: weight rows -> f32 panel (with tile), or NULL */
    kiln_tile_fn tile;
    kiln_tile_phase_fn phase;
    kiln_quant q;      /* FP8: the weight's scales and activation scheme (kind NONE otherwise) */
    kiln_qgemm_fn qg;  /* the W x A8 kernel of (dtype, isa) (qgemm.h), or NULL */
    const kiln_cpu_pack *pk; /* the weights packed for it (qpack.h, c->packs), or NULL */
} mm_part;

typedef struct mm_job {
    const float *x;   /* [n_rows][n_in] */
    int n_rows, n_in, n_parts;
    int swiglu;       /* parts 0, 1 = gate, up: part 0's y becomes silu(gate) * up */
    kiln_isa isa;     /* of kiln_cpu_silu_mul_row */
    int max_nr;       /* x rows per kernel call: the least kiln_cpu_dot_max_rows of the parts */
    int pw;           /* > 0: the panel path, pw weight rows per panel (a multiple of TILE_W) */
    int phased;       /* the panel path for long rows (phase-major panels, tile_phase) */
    const float *xperm; /* phased: x, phase-major, [n_rows][n_in] */
    float *panel;     /* per-thread scratch, panel_floats each */
    size_t panel_floats;
    int q8;           /* the W x A8 path: x quantized once into act, then qgemm tiles */
    int amx;          /* its kernels are the AMX ones, with 16+ rows: act's tile-major scales too */
    int sums16;       /* a part's packed kernel reads act's 16-element sums (kiln_q8act_sums16) */
    kiln_q8act act;
    kiln_q8act_quantize_fn quantize; /* the ISA's (same bits everywhere) */
    mm_part part[MAX_PARTS];
    int bound[MAX_TASKS + 1]; /* task t = columns [bound[t], bound[t+1]) of the column space */
} mm_job;

/* y[r][o] for r < nr, o in [o0, o1): one kernel call per weight row, or one for all of them
 * when nr == 1 and the dtype has a dotw kernel (the same arithmetic per element). */
static inline void dots(const mm_part *P, const float *x, size_t ldx, int nr, int n_in, int o0, int o1,
                        float *y, int pf) {
    size_t ldy = (size_t)P->n_out;
    if (nr == 1 && P->fnw) {
        P->fnw(P->w + (size_t)o0 * P->row_bytes, P->row_bytes, o1 - o0, x, n_in, y + o0);
        return;
    }
    for (int o = o0; o < o1; o++) {
        const uint8_t *wr = P->w + (size_t)o * P->row_bytes;
        if (pf) kiln_prefetch_ahead(wr, P->row_bytes); /* as the dotw kernels do (prefetch.h) */
        P->fn(wr, x, ldx, nr, n_in, y + o, ldy);
    }
}

/* FP8 (see the top of the file): y[r][o] for r < nr, o in [o0, o1). scratch: this thread's
 * [KILN_DOT_MAX_NR][groups] activation scales, then [KILN_DOT_MAX_NR][n_in] quantized x. */
static void dots_fp8(const mm_part *P, const float *x, size_t ldx, int nr, int n_in, int o0, int o1, float *y,
                     float *scratch) {
    const kiln_quant *q = &P->q;
    const size_t ldy = (size_t)P->n_out;
    const int bi = q->kind == KILN_SCALE_BLOCK ? q->block_in : n_in;
    const int ng = (n_in + bi - 1) / bi;
    float *sa = scratch, *xq = scratch + (size_t)KILN_DOT_MAX_NR * ng;
    const float *xa = x;
    size_t lda = ldx;
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < ng; g++) {
            const float *xr = x + (size_t)r * ldx + (size_t)g * bi;
            int len = n_in - g * bi < bi ? n_in - g * bi : bi;
            float s = 1.0f;
            if (q->act == KILN_ACT_STATIC) {
                s = q->input_scale[0];
            } else if (q->act == KILN_ACT_DYNAMIC) {
                float amax = 0.0f;
                for (int k = 0; k < len; k++) amax = fabsf(xr[k]) > amax ? fabsf(xr[k]) : amax;
                s = kiln_fp8_act_scale(amax);
            }
            sa[r * ng + g] = s;
            if (q->act != KILN_ACT_NONE)
                for (int k = 0; k < len; k++) xq[(size_t)r * n_in + (size_t)g * bi + k] = kiln_fp8_act_q(xr[k], s);
        }
    if (q->act != KILN_ACT_NONE) {
        xa = xq;
        lda = (size_t)n_in;
    }
    float t[KILN_DOT_MAX_NR];
    for (int o = o0; o < o1; o++) {
        const uint8_t *wr = P->w + (size_t)o * P->row_bytes;
        if (q->kind != KILN_SCALE_BLOCK) {
            float sw = q->kind == KILN_SCALE_CHANNEL ? q->scale[o] : q->scale[0];
            P->fn(wr, xa, lda, nr, n_in, t, 1);
            for (int r = 0; r < nr; r++) y[(size_t)r * ldy + o] = t[r] * (sa[r * ng] * sw);
        } else {
            float acc[KILN_DOT_MAX_NR] = {0};
            const float *sw = q->scale + (size_t)(o / q->block_out) * ng;
            for (int g = 0; g < ng; g++) {
                int len = n_in - g * bi < bi ? n_in - g * bi : bi;
                P->fn(wr + (size_t)g * bi, xa + (size_t)g * bi, lda, nr, len, t, 1);
                for (int r = 0; r < nr; r++) acc[r] += t[r] * (sa[r * ng + g] * sw[g]);
            }
            for (int r = 0; r < nr; r++) y[(size_t)r * ldy + o] = acc[r];
        }
    }
}

/* The panel path (prefill): for each panel of pw weight rows of the task's columns, the rows
 * are dequantized once into the thread's scratch (f32, the dot kernel's values), then every
 * group of TILE_X x rows runs the TILE_W x TILE_X f32 tile over the panel (panel: L2, x group: L1). */
static void mm_task_panel(const mm_job *j, int v0, int v1, int thread) {
    float *pan = j->panel + (size_t)thread * j->panel_floats;
    const int n = j->n_in;
    const size_t ldx = (size_t)n;
    for (int p = 0; p < (j->swiglu ? 1 : j->n_parts); p++) {
        const mm_part *P = &j->part[p], *U = &j->part[1];
        int o0 = v0 > P->off ? v0 - P->off : 0;
        int o1 = v1 - P->off < P->n_out ? v1 - P->off : P->n_out;
        const size_t ldy = (size_t)P->n_out;
        for (int c0 = o0; c0 < o1; c0 += j->pw) {
            int nc = o1 - c0 < j->pw ? o1 - c0 : j->pw;
            float *pu = pan + (size_t)nc * n;
            int ph = j->phased && !j->swiglu;
            P->deq(P->w + (size_t)c0 * P->row_bytes, P->row_bytes, nc, n, ph, pan);
            if (j->swiglu) U->deq(U->w + (size_t)c0 * U->row_bytes, U->row_bytes, nc, n, 0, pu);
            if (ph) { /* long rows: one accumulator phase at a time, phase-major rows */
                float *buf = pan + (size_t)j->pw * n; /* [pw / TILE_W][2][TILE_W * TILE_X][16] */
                for (int g = 0; g < j->n_rows; g += TILE_X) {
                    int nx = j->n_rows - g < TILE_X ? j->n_rows - g : TILE_X;
                    const float *xp = j->xperm + (size_t)g * n;
                    for (int a = 0; a < 4; a++)
                        for (int k = 0; k < nc; k += TILE_W)
                            P->phase(pan + (size_t)k * n, nc - k < TILE_W ? nc - k : TILE_W, xp, ldx, nx, n, a,
                                     buf + (size_t)(k / TILE_W) * 2 * TILE_W * TILE_X * 16,
                                     P->y + (size_t)g * ldy + c0 + k, ldy);
                }
                continue;
            }
            for (int g = 0; g < j->n_rows; g += TILE_X) {
                int nx = j->n_rows - g < TILE_X ? j->n_rows - g : TILE_X;
                const float *xg = j->x + (size_t)g * ldx;
                float *yg = P->y + (size_t)g * ldy + c0;
                for (int k = 0; k < nc; k += TILE_W)
                    P->tile(pan + (size_t)k * n, nc - k < TILE_W ? nc - k : TILE_W, xg, ldx, nx, n, yg + k, ldy);
                if (j->swiglu) {
                    float *ug = U->y + (size_t)g * ldy + c0;
                    for (int k = 0; k < nc; k += TILE_W)
                        U->tile(pu + (size_t)k * n, nc - k < TILE_W ? nc - k : TILE_W, xg, ldx, nx, n, ug + k, ldy);
                    for (int r = 0; r < nx; r++)
                        kiln_cpu_silu_mul_row(j->isa, yg + (size_t)r * ldy, yg + (size_t)r * ldy, ug + (size_t)r * ldy, nc);
                }
            }
        }
    }
}

/* The W x A8 path (qgemm.h): per chunk of Q8_ROWS activation rows (their 8-bit values and
 * scales: L2), the task's columns 16 at a time (their transposed weights: the thread's
 * scratch, L1 / L2), each one qgemm call over the chunk's rows; a row's result depends on
 * nothing but that row (qgemm.h). */
#define Q8_ROWS 64
/* with AMX: the tile work per row is ~1/3 of the VNNI kernel's, so the weights' transposition
 * (per call) is amortized over more rows (their activations: 256 x n_in bytes, still L2) */
#define Q8_ROWS_AMX 256
static void mm_task_q8(const mm_job *j, int v0, int v1, int thread) {
    void *scratch = j->panel + (size_t)thread * j->panel_floats;
    const int rows = j->amx ? Q8_ROWS_AMX : Q8_ROWS;
    for (int r0 = 0; r0 < j->n_rows; r0 += rows) {
        int r1 = j->n_rows - r0 < rows ? j->n_rows : r0 + rows;
        int o0s = 0, o1s = 0;
        for (int p = 0; p < j->n_parts; p++) {
            const mm_part *P = &j->part[p];
            int o0 = v0 > P->off ? v0 - P->off : 0;
            int o1 = v1 - P->off < P->n_out ? v1 - P->off : P->n_out;
            if (o0 >= o1) continue;
            const size_t ldy = (size_t)P->n_out;
            if (P->pk && !j->amx) { /* packed groups of 16 rows: the columns [lo, hi) of group c / 16
                                     * (AMX tiles read the rows' own layout: the same bits) */
                for (int c = o0; c < o1;) {
                    int lo = c % 16, hi = o1 - (c - lo) < 16 ? o1 - (c - lo) : 16;
                    P->pk->fn(P->pk->wp + (size_t)(c / 16) * P->pk->group_bytes, lo, hi, &j->act, r0, r1,
                              P->y + (size_t)r0 * ldy + c, ldy, scratch);
                    c += hi - lo;
                }
            } else
            for (int c = o0; c < o1; c += KILN_QGEMM_COLS)
                P->qg(P->w + (size_t)c * P->row_bytes, P->row_bytes, o1 - c < KILN_QGEMM_COLS ? o1 - c : KILN_QGEMM_COLS,
                      &j->act, r0, r1, P->y + (size_t)r0 * ldy + c, ldy, scratch);
            o0s = o0;
            o1s = o1;
        }
        if (j->swiglu && o0s < o1s) {
            const size_t ldy = (size_t)j->part[0].n_out;
            for (int r = r0; r < r1; r++) {
                float *gr = j->part[0].y + (size_t)r * ldy;
                const float *ur = j->part[1].y + (size_t)r * ldy;
                kiln_cpu_silu_mul_row(j->isa, gr + o0s, gr + o0s, ur + o0s, o1s - o0s);
            }
        }
    }
}

static void q8_quantize_rows(void *ctx, int ith, int nth) {
    mm_job *j = ctx;
    const int r0 = (int)((int64_t)j->n_rows * ith / nth), r1 = (int)((int64_t)j->n_rows * (ith + 1) / nth);
    j->quantize(&j->act, j->x, (size_t)j->n_in, r0, r1);
    if (j->amx) kiln_q8act_tile(&j->act, r0, r1); /* the AMX kernel's tile-major scales */
    if (j->sums16) kiln_q8act_sums16(&j->act, r0, r1);
}

static void mm_task(void *ctx, int task, int thread) {
    const mm_job *j = ctx;
    int v0 = j->bound[task], v1 = j->bound[task + 1];
    if (j->q8) {
        mm_task_q8(j, v0, v1, thread);
        return;
    }
    if (j->pw > 0) {
        mm_task_panel(j, v0, v1, thread);
        return;
    }
    const size_t ldx = (size_t)j->n_in;
    float *scratch = j->panel ? j->panel + (size_t)thread * j->panel_floats : NULL;
    for (int p = 0; p < (j->swiglu ? 1 : j->n_parts); p++) { /* the parts the range covers */
        const mm_part *P = &j->part[p], *U = &j->part[1];
        int o0 = v0 > P->off ? v0 - P->off : 0;
        int o1 = v1 - P->off < P->n_out ? v1 - P->off : P->n_out;
        if (o0 >= o1) continue;
        const size_t ldy = (size_t)P->n_out;
        /* more rows than one kernel call takes: the columns in chunks of ~DOT_CHUNK_BYTES of
         * weights, every row group over a chunk before the next (the chunk read from memory
         * once, then from L1), instead of every group streaming the whole range (the LM head's
         * 15 MB a thread, 3-4 times at batch 16) */
        int chunk = o1 - o0;
        if (j->n_rows > j->max_nr) {
            size_t rb = P->row_bytes > U->row_bytes || !j->swiglu ? P->row_bytes : U->row_bytes;
            chunk = (int)(DOT_CHUNK_BYTES / (rb * (j->swiglu ? 2 : 1)));
            if (chunk < MIN_TASK_COLS) chunk = MIN_TASK_COLS;
        }
        for (int c0 = o0; c0 < o1; c0 += chunk) {
            int c1 = o1 - c0 < chunk ? o1 : c0 + chunk;
            for (int g = 0; g < j->n_rows; g += j->max_nr) {
                int nr = j->n_rows - g < j->max_nr ? j->n_rows - g : j->max_nr, pf = g == 0;
                const float *xg = j->x + (size_t)g * ldx;
                if (P->q.kind != KILN_SCALE_NONE) dots_fp8(P, xg, ldx, nr, j->n_in, c0, c1, P->y + (size_t)g * ldy, scratch);
                else dots(P, xg, ldx, nr, j->n_in, c0, c1, P->y + (size_t)g * ldy, pf);
                if (j->swiglu) {
                    if (U->q.kind != KILN_SCALE_NONE) dots_fp8(U, xg, ldx, nr, j->n_in, c0, c1, U->y + (size_t)g * ldy, scratch);
                    else dots(U, xg, ldx, nr, j->n_in, c0, c1, U->y + (size_t)g * ldy, pf);
                    for (int r = 0; r < nr; r++) {
                        float *gr = P->y + (size_t)(g + r) * ldy;
                        const float *ur = U->y + (size_t)(g + r) * ldy;
                        kiln_cpu_silu_mul_row(j->isa, gr + c0, gr + c0, ur + c0, c1 - c0);
                    }
                }
            }
        }
    }
}

/* x row -> phase-major: vector q (16 floats) to (q % 4) n/4 + 16 (q / 4); rows split by ith */
static void xperm_rows(void *ctx, int ith, int nth) {
    mm_job *j = ctx;
    const int n = j->n_in;
    float *xp = (float *)j->xperm;
    for (int r = (int)((int64_t)j->n_rows * ith / nth); r < (int)((int64_t)j->n_rows * (ith + 1) / nth); r++)
        for (int q = 0; q < n / 16; q++)
            memcpy(xp + (size_t)r * n + (size_t)(q % 4) * (n / 4) + 16 * (q / 4), j->x + (size_t)r * n + 16 * q,
                   16 * sizeof(float));
}

static int check_weight(kiln_cpu_ctx *c, const kiln_tensor *w, int n_rows, mm_part *P, kiln_error *err) {
    if (!w) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: NULL weight");
    if (w->ndim != 2 || w->shape[0] <= 0 || w->shape[1] <= 0 || w->shape[0] > INT32_MAX ||
        w->shape[1] > INT32_MAX)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: weight %s must be a 2-D [n_out][n_in] matrix",
                        w->name);
    if (n_rows < 0) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s: n_rows %d < 0", w->name, n_rows);
    size_t row_bytes = kiln_dtype_row_bytes(w->dtype, w->shape[1]);
    if (row_bytes == 0)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s: %lld columns is not a whole number of %s blocks",
                        w->name, (long long)w->shape[1], kiln_dtype_name(w->dtype));
    if (!w->data || w->nbytes < row_bytes * (size_t)w->shape[0])
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s: data holds %zu bytes, [%lld][%lld] %s needs %zu",
                        w->name, w->nbytes, (long long)w->shape[0], (long long)w->shape[1],
                        kiln_dtype_name(w->dtype), row_bytes * (size_t)w->shape[0]);
    kiln_dot_fn fn = kiln_cpu_dot_lookup(w->dtype, c->isa);
    if (!fn)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "matmul: %s: no %s kernel for %s weights", w->name,
                        kiln_isa_name(c->isa), kiln_dtype_name(w->dtype));
    P->fn = fn;
    P->fnw = kiln_dtype_is_quant(w->dtype) && kiln_cpu_dot_lookup_quant(w->dtype, c->isa) == fn
                 ? kiln_cpu_dotw_lookup_quant(w->dtype, c->isa)
                 : NULL;
    P->deq = P->fnw ? kiln_cpu_deq_lookup_quant(w->dtype, c->isa, &P->tile, &P->phase) : NULL;
    P->qg = !c->act_q8 ? NULL : c->amx ? kiln_cpu_qgemm_lookup_amx(w->dtype) : kiln_cpu_qgemm_lookup(w->dtype, c->isa);
    P->pk = c->act_q8 ? kiln_cpu_packs_find(c->packs, w) : NULL;
    P->w = w->data;
    P->row_bytes = row_bytes;
    P->n_out = (int)w->shape[0];
    P->q = w->quant;
    if ((w->dtype == KILN_DT_F8_E4M3) != (w->quant.kind != KILN_SCALE_NONE))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "matmul: %s: %s weights with %s scales", w->name,
                        kiln_dtype_name(w->dtype), kiln_scale_kind_name(w->quant.kind));
    if (P->q.kind != KILN_SCALE_NONE) {
        const kiln_quant *q = &P->q;
        if (!q->scale || (q->kind == KILN_SCALE_BLOCK && (q->block_in <= 0 || q->block_out <= 0)) ||
            (q->act == KILN_ACT_STATIC && !q->input_scale) || (unsigned)q->act > KILN_ACT_STATIC)
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s: incomplete FP8 descriptor (%s scales, %s activations)",
                            w->name, kiln_scale_kind_name(q->kind), kiln_act_quant_name(q->act));
        int bi = q->kind == KILN_SCALE_BLOCK ? q->block_in : (int)w->shape[1];
        size_t need = (size_t)KILN_DOT_MAX_NR * ((size_t)w->shape[1] + (size_t)((w->shape[1] + bi - 1) / bi));
        if (!c->panel || c->panel_floats < need)
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s: FP8 needs %zu floats of per-thread scratch (has %zu)",
                            w->name, need, c->panel ? c->panel_floats : (size_t)0);
    }
    return KILN_OK;
}

static int run(kiln_cpu_ctx *c, mm_job *j, float *const *y, const kiln_tensor *const *w, kiln_error *err) {
    if (!c) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: NULL context");
    j->isa = c->isa;
    if (j->n_parts < 1 || j->n_parts > MAX_PARTS)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %d weights in one call", j->n_parts);
    int64_t total_cols = 0;
    j->max_nr = 1 << 20;
    for (int p = 0; p < j->n_parts; p++) {
        int rc = check_weight(c, w[p], j->n_rows, &j->part[p], err);
        if (rc) return rc;
        int mr = kiln_cpu_dot_max_rows(w[p]->dtype, c->isa);
        if (mr < j->max_nr) j->max_nr = mr;
        if (w[p]->shape[1] != w[0]->shape[1])
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s has %lld inputs, %s %lld", w[p]->name,
                            (long long)w[p]->shape[1], w[0]->name, (long long)w[0]->shape[1]);
        if (j->swiglu && w[p]->shape[0] != w[0]->shape[0])
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: gate %s and up %s differ in outputs",
                            w[0]->name, w[p]->name);
        j->part[p].y = y[p];
        j->part[p].off = j->swiglu ? 0 : (int)total_cols;
        total_cols += j->part[p].n_out;
    }
    if (j->n_rows == 0) return KILN_OK;
    if (!j->x) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s: NULL input", w[0]->name);
    for (int p = 0; p < j->n_parts; p++)
        if (!y[p]) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s: NULL output", w[p]->name);
    j->n_in = (int)w[0]->shape[1];
    if (j->swiglu) total_cols = j->part[0].n_out;
    /* the W x A8 path: every part has a qgemm kernel (then it is taken whatever n_rows is, so
     * a row's bits do not depend on the batch), the activations fit c->xperm (sized for the
     * step's rows at the widest n_in) and the offsets the per-thread scratch */
    j->q8 = c->act_q8 && c->xperm && c->panel &&
            kiln_q8act_bytes(j->n_rows, j->n_in) <= c->xperm_floats * sizeof(float) &&
            kiln_qgemm_scratch_bytes(j->n_in) <= c->panel_floats * sizeof(float);
    for (int p = 0; p < j->n_parts; p++) j->q8 &= j->part[p].qg != NULL && j->part[p].q.kind == KILN_SCALE_NONE;
    if (j->q8) {
        kiln_q8act_init(&j->act, c->xperm, j->n_rows, j->n_in);
        j->quantize = kiln_cpu_q8act_quantize_lookup(c->isa);
        j->panel = c->panel;
        j->panel_floats = c->panel_floats;
        j->amx = c->amx && j->n_rows >= 16;
        j->sums16 = 0;
        for (int p = 0; p < j->n_parts; p++) j->sums16 |= j->part[p].pk != NULL && j->part[p].pk->sums16;
        if (c->pool && kiln_pool_size(c->pool) > 1 && (int64_t)j->n_rows * j->n_in >= 16384)
            kiln_pool_run(c->pool, q8_quantize_rows, j);
        else
            q8_quantize_rows(j, 0, 1);
    }
    /* the panel path: from panel_min_rows rows (KILN_CPU_PANEL_MIN_ROWS: below, dequantizing
     * every panel costs more than the dot kernels lose: measured at batch 4/8/16 decode), every
     * part has it, scratch for >= 2 rows (x2 for SwiGLU) */
    j->pw = 0;
    int pmin = c->panel_min_rows > 0 ? c->panel_min_rows : KILN_CPU_PANEL_MIN_ROWS;
    if (pmin < 2) pmin = 2;
    if (!j->q8 && j->n_rows >= pmin && c->panel && j->n_in <= PANEL_MAX_N) {
        int ok = 1;
        for (int p = 0; p < j->n_parts; p++) ok &= j->part[p].deq != NULL;
        size_t per = (size_t)j->n_in * (j->swiglu ? 2 : 1);
        /* the panel, then (long rows) x's group and the phase buffers (2 * TILE_X * 16 floats
         * per weight row) */
        j->phased = j->n_in > PHASE_MIN_N && j->n_in % 64 == 0 && !j->swiglu && c->xperm &&
                    (size_t)j->n_rows * j->n_in <= c->xperm_floats;
        size_t fit = c->panel_floats / (per + (j->phased ? 2 * TILE_X * 16 : 0));
        size_t want = PANEL_TARGET_FLOATS / per;
        if (want < fit) fit = want;
        fit -= fit % TILE_W;
        if (ok && fit >= TILE_W) {
            j->pw = fit > 4096 ? 4096 : (int)fit;
            j->panel = c->panel;
            j->panel_floats = c->panel_floats;
            if (j->phased) { /* x -> phase-major once per call, rows split between the threads */
                j->xperm = c->xperm;
                if (c->pool && kiln_pool_size(c->pool) > 1) kiln_pool_run(c->pool, xperm_rows, j);
                else xperm_rows(j, 0, 1);
            }
        } else {
            j->phased = 0;
        }
    }

    if (!j->pw) { /* the FP8 path's per-thread scratch (the panel path is not taken with FP8 parts) */
        j->panel = c->panel;
        j->panel_floats = c->panel_floats;
    }
    int nth = c->pool ? kiln_pool_size(c->pool) : 1;
    double macs = (double)j->n_rows * (double)total_cols * j->n_in * (j->swiglu ? 2 : 1);
    int serial = nth <= 1 || macs < SERIAL_MACS;
    if (total_cols > INT32_MAX)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s: %lld output columns", w[0]->name,
                        (long long)total_cols);
    /* One contiguous range of the column space per thread (a multiple of MIN_TASK_COLS), the
     * few columns left over in MIN_TASK_COLS tasks. */
    int n_tasks = 0, T = (int)total_cols;
    j->bound[0] = 0;
    if (serial) {
        j->bound[++n_tasks] = T;
    } else {
        if (nth > MAX_TASKS / 2) nth = MAX_TASKS / 2;
        int big = T / nth / MIN_TASK_COLS * MIN_TASK_COLS;
        for (int t = 0; t < nth && big > 0; t++, n_tasks++) j->bound[n_tasks + 1] = j->bound[n_tasks] + big;
        for (int v = j->bound[n_tasks]; v < T; n_tasks++) { /* < nth * MIN_TASK_COLS columns */
            v = v + MIN_TASK_COLS < T ? v + MIN_TASK_COLS : T;
            j->bound[n_tasks + 1] = v;
        }
    }
    if (serial)
        for (int t = 0; t < n_tasks; t++) mm_task(j, t, 0);
    else
        kiln_pool_run_tasks(c->pool, n_tasks, mm_task, j);
    return KILN_OK;
}

int kiln_cpu_matmul(kiln_cpu_ctx *c, float *y, const float *x, int n_rows, const kiln_tensor *w,
                    kiln_error *err) {
    mm_job j = {.x = x, .n_rows = n_rows, .n_parts = 1};
    return run(c, &j, &y, &w, err);
}

int kiln_cpu_matmul_multi(kiln_cpu_ctx *c, int n, float *const *y, const float *x, int n_rows,
                          const kiln_tensor *const *w, kiln_error *err) {
    mm_job j = {.x = x, .n_rows = n_rows, .n_parts = n};
    return run(c, &j, y, w, err);
}

int kiln_cpu_matmul_swiglu(kiln_cpu_ctx *c, float *out, float *up, const float *x, int n_rows,
                           const kiln_tensor *w_gate, const kiln_tensor *w_up, kiln_error *err) {
    mm_job j = {.x = x, .n_rows = n_rows, .n_parts = 2, .swiglu = 1};
    float *y[2] = {out, up};
    const kiln_tensor *w[2] = {w_gate, w_up};
    return run(c, &j, y, w, err);
}
