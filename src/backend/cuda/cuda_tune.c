/* cuda_tune.c: cuBLASLt algorithms measured at load (kiln_cuda_options.gemm_tune).
 *
 * cuBLASLt's heuristic ranks algorithms by a model, not by the card: for some shapes its first
 * choice is not its fastest. At create, after the weights are on the device and before the
 * graphs are captured, every projection (QKV, O, gate|up, down, LM head) is timed at each row
 * count a step may give cuBLASLt: the decode graphs' buckets (powers of two), the piecewise
 * graphs' (multiples of PIECE_ROWS) and powers of two up to the step budget and the budget
 * itself (prefill chunks). Each timing runs the GEMM over the layers' own matrices in turn
 * (enough of them that L2 holds none: a step reads each once), on activations of the dummy
 * formula. Steps then use the pick through kiln_cuda_gemm_run (gemm.c). */
#include <stddef.h>
#include <string.h>
#include <time.h>
#include "backend/cuda/cuda_backend_internal.h"
#include "util/log.h"

#define TUNE_PASS_BYTES ((size_t)256 << 20) /* weights a timing pass reads at least (H200 L2: 60 MB) */
#define TUNE_MAX_ROWS 64                    /* row counts a projection is timed at, at most */

/* the row counts steps give a projection sized for max_rows, ascending */
static int tune_rows(const cuda_backend *c, int max_rows, int *rows) {
    int n = 0;
    for (int r = 1; r <= max_rows && n < TUNE_MAX_ROWS; r *= 2) rows[n++] = r;
    for (int b = 5; b < c->n_piece_buckets && n < TUNE_MAX_ROWS; b++) {
        int r = PIECE_ROWS * (b - 3);
        if (r <= max_rows && (r & (r - 1))) rows[n++] = r;
    }
    if (n < TUNE_MAX_ROWS && (max_rows & (max_rows - 1))) rows[n++] = max_rows;
    for (int i = 1; i < n; i++) /* insertion sort: a few dozen values */
        for (int j = i; j > 0 && rows[j - 1] > rows[j]; j--) {
            int t = rows[j];
            rows[j] = rows[j - 1];
            rows[j - 1] = t;
        }
    return n;
}

typedef struct tune_shape {
    const char *name;
    kiln_cuda_gemm *g;
    const cuda_mat *m0; /* layer 0's matrix (or the LM head) */
    size_t m_off;       /* offset of the matrix in cuda_layer, or (size_t)-1 for the LM head */
} tune_shape;

/* One projection at one row count: returns the tuning record's fields through *t (zeroed when
 * nothing was tuned: another kernel runs those rows, or no scratch fits). */
static int tune_one(cuda_backend *c, const tune_shape *s, int T, int cands, kiln_cuda_gemm_tuning *t, kiln_error *err) {
    memset(t, 0, sizeof *t);
    kiln_cuda_gemm *g = s->g;
    int route = kiln_cuda_linear_lt_route(c, g, s->m0, T);
    if (route == LT_NONE) return KILN_OK;
    const kiln_config *mc = &c->m->cfg;
    size_t T_ = (size_t)T, D = (size_t)mc->dim, F = (size_t)mc->hidden_dim, V = (size_t)mc->vocab_size;
    size_t qd = (size_t)mc->n_heads * mc->head_dim, kvd = (size_t)mc->n_kv_heads * mc->head_dim;
    size_t Tm = (size_t)c->cfg.max_tokens, LR = (size_t)c->max_lrows, a = dt_size(c->adt);
    /* x: [T][K] in g's input type; y: [T][N] in g->ydt; any scratch large enough (overwritten
     * by every step anyway) */
    size_t xb = T_ * (size_t)g->K * dt_size(g->wdt), yb = T_ * (size_t)g->N * dt_size(g->ydt);
    void *x = NULL, *y = NULL;
    struct { void *p; size_t n; } xs[] = {
        {c->act, Tm * F * a}, {c->att, Tm * qd * a}, {c->xn, Tm * D * a}, {c->xf, LR * D * dt_size(c->hdt)},
        {c->xq8, c->fp8_a8 ? Tm * (D > qd ? (D > F ? D : F) : (qd > F ? qd : F)) : 0}};
    struct { void *p; size_t n; } ys[] = {{c->gu, Tm * 2 * F * 4}, {c->qkv, Tm * (qd + 2 * kvd) * 4},
                                          {c->logits_d, LR * V * 4}};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0] && !x; i++)
        if (xs[i].p && xs[i].n >= xb) x = xs[i].p;
    for (size_t i = 0; i < sizeof ys / sizeof ys[0] && !y; i++)
        if (ys[i].p && ys[i].n >= yb) y = ys[i].p;
    if (!x || !y) {
        KILN_DEBUG("cuda: GEMM tuning: no scratch for %s at %d rows; the heuristic's choice", s->name, T);
        return KILN_OK;
    }
    cudaError_t e = g->wdt == KILN_DT_F8_E4M3
                        ? kiln_cuda_dummy_fill_fp8((uint8_t *)x, (int64_t)(T_ * g->K), 7, 0, g->K, 1.0f, c->st)
                        : kiln_cuda_dummy_fill(x, g->wdt, (int64_t)(T_ * g->K), 7, 0, g->K, c->st);
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "kiln_cuda_dummy_fill (GEMM tuning)", __FILE__, __LINE__);
    /* the weights: each layer's matrix in turn until a pass reads TUNE_PASS_BYTES, or the one
     * dequantization buffer */
    const void *w[256];
    int nw = 0;
    if (route == LT_DEQUANT) {
        w[nw++] = c->wdq;
    } else if (s->m_off == (size_t)-1) {
        w[nw++] = s->m0->w;
    } else {
        size_t per = (size_t)g->N * g->K * dt_size(g->wdt), got = 0;
        for (int l = 0; l < mc->n_layers && nw < 256 && (nw == 0 || got < TUNE_PASS_BYTES); l++) {
            const cuda_mat *m = (const cuda_mat *)((const char *)&c->layers[l] + s->m_off);
            w[nw++] = m->w;
            got += per;
        }
    }
    int rc = kiln_cuda_gemm_tune(&c->gctx, g, T, cands, y, x, w, nw, c->st, &c->syncs, t, err);
    if (rc) kiln_err_prefix(err, "cuda GEMM tuning: ");
    return rc;
}

int kiln_cuda_tune_gemms(cuda_backend *c, int cands, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    tune_shape shapes[5];
    int ns = 0;
    shapes[ns++] = (tune_shape){"qkv", &c->g_qkv, &c->layers[0].qkv, offsetof(cuda_layer, qkv)};
    shapes[ns++] = (tune_shape){"o", &c->g_o, &c->layers[0].o, offsetof(cuda_layer, o)};
    if (mc->n_experts == 0) { /* MoE layers run their experts elsewhere (cuda_moe.c) */
        shapes[ns++] = (tune_shape){"gate|up", &c->g_gu, &c->layers[0].gu, offsetof(cuda_layer, gu)};
        shapes[ns++] = (tune_shape){"down", &c->g_d, &c->layers[0].d, offsetof(cuda_layer, d)};
    }
    shapes[ns++] = (tune_shape){"lm head", &c->g_lm, &c->lm, (size_t)-1};
    /* the dequantization scratch holds the dummy formula's values, not stale bytes */
    if (c->wdq) {
        cudaError_t e = kiln_cuda_dummy_fill(c->wdq, KILN_DT_BF16, (int64_t)(c->wdq_bytes / 2), 7, 1, 4096, c->st);
        if (e != cudaSuccess) return kiln_cuda_error(err, e, "kiln_cuda_dummy_fill (GEMM tuning)", __FILE__, __LINE__);
    }
    int n_timed = 0, n_better = 0;
    double first = 0.0, best = 0.0;
    for (int i = 0; i < ns; i++) {
        int rows[TUNE_MAX_ROWS], nr = tune_rows(c, shapes[i].g->max_rows, rows);
        for (int j = 0; j < nr; j++) {
            kiln_cuda_gemm_tuning t;
            int rc = tune_one(c, &shapes[i], rows[j], cands, &t, err);
            if (rc) return rc;
            if (!t.timed) continue;
            n_timed++;
            n_better += t.pick != 0;
            first += t.first_s;
            best += t.best_s;
            KILN_DEBUG("cuda: GEMM tuning: %-7s %6d x %-6d %5d rows: heuristic's first %9.1f us, kept #%d of %d "
                       "%9.1f us (%.3fx)",
                       shapes[i].name, shapes[i].g->N, shapes[i].g->K, rows[j], t.first_s * 1e6, t.pick, t.candidates,
                       t.best_s * 1e6, t.first_s / t.best_s);
        }
    }
    int rc = kiln_cuda_stream_sync(&c->syncs, c->st, err);
    if (rc) return rc;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    KILN_INFO("cuda: GEMM tuning: %d products x row counts timed in %.2f s; %d run another algorithm than "
              "cuBLASLt's first (one of each: %.1f -> %.1f us)",
              n_timed, s, n_better, first * 1e6, best * 1e6);
    return KILN_OK;
}
